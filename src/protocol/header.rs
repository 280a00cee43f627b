//! Reading just enough of a request to route it, without decoding the body.

use kafka_protocol::messages::ApiKey;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PeekError {
    #[error("frame of {0} bytes is too short for a request header")]
    TooShort(usize),
    #[error("unknown API key {api_key} (correlation id {correlation_id})")]
    UnknownApiKey { api_key: i16, correlation_id: i32 },
    #[error("{api:?} v{version} request header is malformed: {reason}")]
    MalformedHeader {
        api: ApiKey,
        version: i16,
        reason: &'static str,
    },
    #[error("{api:?} v{version} request body is malformed: {reason}")]
    MalformedBody {
        api: ApiKey,
        version: i16,
        reason: &'static str,
    },
}

/// The routing facts of one request frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestHeaderPeek {
    pub api_key: ApiKey,
    pub api_version: i16,
    pub correlation_id: i32,
    /// Offset of the request body within the frame payload.
    pub body_offset: usize,
}

/// A cursor over a byte slice that reports running out instead of panicking.
struct Cursor<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn new(bytes: &'a [u8], pos: usize) -> Self {
        Cursor { bytes, pos }
    }

    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let end = self.pos.checked_add(n)?;
        let slice = self.bytes.get(self.pos..end)?;
        self.pos = end;
        Some(slice)
    }

    fn i16(&mut self) -> Option<i16> {
        self.take(2).map(|b| i16::from_be_bytes([b[0], b[1]]))
    }

    fn i32(&mut self) -> Option<i32> {
        self.take(4)
            .map(|b| i32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn unsigned_varint(&mut self) -> Option<u32> {
        let mut value: u32 = 0;
        for shift in (0..35).step_by(7) {
            let byte = *self.take(1)?.first()?;
            value |= u32::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return Some(value);
            }
        }
        None
    }

    /// Classic nullable string: i16 length, -1 for null.
    fn skip_nullable_string(&mut self) -> Option<()> {
        let len = self.i16()?;
        if len >= 0 {
            self.take(len as usize)?;
        } else if len != -1 {
            return None;
        }
        Some(())
    }

    /// Compact (nullable) string: unsigned varint length + 1, 0 for null.
    fn skip_compact_string(&mut self) -> Option<()> {
        let len_plus_one = self.unsigned_varint()?;
        if len_plus_one > 0 {
            self.take(len_plus_one as usize - 1)?;
        }
        Some(())
    }

    fn skip_tagged_fields(&mut self) -> Option<()> {
        let count = self.unsigned_varint()?;
        for _ in 0..count {
            self.unsigned_varint()?;
            let size = self.unsigned_varint()?;
            self.take(size as usize)?;
        }
        Some(())
    }
}

/// Reads api key, version and correlation id and finds where the body starts.
pub fn peek_request(payload: &[u8]) -> Result<RequestHeaderPeek, PeekError> {
    let mut cursor = Cursor::new(payload, 0);
    let (Some(api_key), Some(api_version), Some(correlation_id)) =
        (cursor.i16(), cursor.i16(), cursor.i32())
    else {
        return Err(PeekError::TooShort(payload.len()));
    };
    let api = ApiKey::try_from(api_key).map_err(|_| PeekError::UnknownApiKey {
        api_key,
        correlation_id,
    })?;
    let malformed = |reason| PeekError::MalformedHeader {
        api,
        version: api_version,
        reason,
    };
    let header_version = api.request_header_version(api_version);
    if header_version >= 1 {
        cursor
            .skip_nullable_string()
            .ok_or_else(|| malformed("client id runs past the frame"))?;
    }
    if header_version >= 2 {
        cursor
            .skip_tagged_fields()
            .ok_or_else(|| malformed("tagged fields run past the frame"))?;
    }
    Ok(RequestHeaderPeek {
        api_key: api,
        api_version,
        correlation_id,
        body_offset: cursor.pos,
    })
}

/// The correlation id of a response frame payload.
pub fn peek_response_correlation_id(payload: &[u8]) -> Option<i32> {
    Cursor::new(payload, 0).i32()
}

/// The `acks` of a Produce request: 0 means the broker sends no response.
pub fn produce_acks(payload: &[u8], header: &RequestHeaderPeek) -> Result<i16, PeekError> {
    produce_acks_at(payload, header).map(|(acks, _)| acks)
}

/// `acks` and its position in the payload (so it can be patched in place).
pub fn produce_acks_at(
    payload: &[u8],
    header: &RequestHeaderPeek,
) -> Result<(i16, usize), PeekError> {
    let mut cursor = Cursor::new(payload, header.body_offset);
    let version = header.api_version;
    let malformed = |reason| PeekError::MalformedBody {
        api: ApiKey::Produce,
        version,
        reason,
    };
    if version >= 9 {
        cursor
            .skip_compact_string()
            .ok_or_else(|| malformed("transactional id runs past the frame"))?;
    } else if version >= 3 {
        cursor
            .skip_nullable_string()
            .ok_or_else(|| malformed("transactional id runs past the frame"))?;
    }
    let at = cursor.pos;
    let acks = cursor.i16().ok_or_else(|| malformed("no acks field"))?;
    Ok((acks, at))
}

/// `max_wait_ms` of a Fetch request: how long the broker may hold it.
pub fn fetch_max_wait_ms(payload: &[u8], header: &RequestHeaderPeek) -> Result<i32, PeekError> {
    let mut cursor = Cursor::new(payload, header.body_offset);
    let malformed = |reason| PeekError::MalformedBody {
        api: ApiKey::Fetch,
        version: header.api_version,
        reason,
    };
    if header.api_version <= 14 {
        cursor.i32().ok_or_else(|| malformed("no replica id"))?;
    }
    cursor.i32().ok_or_else(|| malformed("no max_wait_ms"))
}

/// `rebalance_timeout_ms` of a JoinGroup request (v0 has only the session
/// timeout, which then bounds the join).
pub fn join_group_wait_ms(payload: &[u8], header: &RequestHeaderPeek) -> Result<i32, PeekError> {
    let mut cursor = Cursor::new(payload, header.body_offset);
    let malformed = |reason| PeekError::MalformedBody {
        api: ApiKey::JoinGroup,
        version: header.api_version,
        reason,
    };
    let skipped = if header.api_version >= 6 {
        cursor.skip_compact_string()
    } else {
        cursor.skip_nullable_string()
    };
    skipped.ok_or_else(|| malformed("group id runs past the frame"))?;
    let session_timeout = cursor
        .i32()
        .ok_or_else(|| malformed("no session timeout"))?;
    if header.api_version == 0 {
        return Ok(session_timeout);
    }
    cursor
        .i32()
        .ok_or_else(|| malformed("no rebalance timeout"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::BytesMut;
    use kafka_protocol::messages::{ProduceRequest, RequestHeader};
    use kafka_protocol::protocol::{encode_request_header_into_buffer, Encodable, StrBytes};
    use proptest::prelude::*;

    fn encode_request<M: Encodable>(
        api: ApiKey,
        version: i16,
        correlation_id: i32,
        client_id: Option<&str>,
        body: &M,
    ) -> Vec<u8> {
        let header = RequestHeader::default()
            .with_request_api_key(api as i16)
            .with_request_api_version(version)
            .with_correlation_id(correlation_id)
            .with_client_id(client_id.map(|s| StrBytes::from_string(s.to_owned())));
        let mut buf = BytesMut::new();
        encode_request_header_into_buffer(&mut buf, &header).unwrap();
        body.encode(&mut buf, version).unwrap();
        buf.to_vec()
    }

    #[test]
    fn produce_acks_are_found_in_every_version() {
        for version in 3..=13 {
            for acks in [-1i16, 0, 1] {
                for txn in [None, Some("txn-1")] {
                    let body = ProduceRequest::default()
                        .with_acks(acks)
                        .with_transactional_id(txn.map(|t| StrBytes::from_string(t.into()).into()));
                    let payload =
                        encode_request(ApiKey::Produce, version, 7, Some("client"), &body);
                    let header = peek_request(&payload).unwrap();
                    assert_eq!(header.api_key, ApiKey::Produce);
                    assert_eq!(header.correlation_id, 7);
                    assert_eq!(produce_acks(&payload, &header).unwrap(), acks, "v{version}");
                }
            }
        }
    }

    #[test]
    fn fetch_max_wait_is_found() {
        use kafka_protocol::messages::FetchRequest;
        for version in 4..=12 {
            let body = FetchRequest::default().with_max_wait_ms(4321);
            let payload = encode_request(ApiKey::Fetch, version, 1, None, &body);
            let header = peek_request(&payload).unwrap();
            assert_eq!(fetch_max_wait_ms(&payload, &header).unwrap(), 4321);
        }
    }

    #[test]
    fn join_group_wait_is_found() {
        use kafka_protocol::messages::JoinGroupRequest;
        for version in 0..=9 {
            let body = JoinGroupRequest::default()
                .with_group_id(StrBytes::from_static_str("g").into())
                .with_session_timeout_ms(6000)
                .with_rebalance_timeout_ms(300_000);
            let payload = encode_request(ApiKey::JoinGroup, version, 1, Some("c"), &body);
            let header = peek_request(&payload).unwrap();
            let expected = if version == 0 { 6000 } else { 300_000 };
            assert_eq!(join_group_wait_ms(&payload, &header).unwrap(), expected);
        }
    }

    #[test]
    fn unknown_api_key_keeps_correlation_id() {
        let payload = [0x03, 0xe7, 0, 0, 0, 0, 0, 42];
        assert_eq!(
            peek_request(&payload),
            Err(PeekError::UnknownApiKey {
                api_key: 999,
                correlation_id: 42
            })
        );
    }

    #[test]
    fn client_id_past_the_frame_is_malformed() {
        let payload = [0, 3, 0, 1, 0, 0, 0, 1, 0x10, 0x00, b'a'];
        assert!(matches!(
            peek_request(&payload),
            Err(PeekError::MalformedHeader { .. })
        ));
    }

    proptest! {
        #[test]
        fn peek_never_panics(data in proptest::collection::vec(any::<u8>(), 0..64)) {
            if let Ok(header) = peek_request(&data) {
                prop_assert!(header.body_offset <= data.len());
                let _ = produce_acks(&data, &header);
                let _ = fetch_max_wait_ms(&data, &header);
                let _ = join_group_wait_ms(&data, &header);
            }
        }

        #[test]
        fn peek_agrees_with_the_protocol_crate(
            version in 4i16..=12, correlation_id in any::<i32>(), client in proptest::option::of("[a-z]{0,20}")
        ) {
            let payload = encode_request(ApiKey::Metadata, version, correlation_id, client.as_deref(),
                &kafka_protocol::messages::MetadataRequest::default());
            let header = peek_request(&payload).unwrap();
            let mut buf = bytes::Bytes::from(payload.clone());
            let decoded = kafka_protocol::protocol::decode_request_header_from_buffer(&mut buf).unwrap();
            prop_assert_eq!(header.correlation_id, decoded.correlation_id);
            prop_assert_eq!(header.api_version, decoded.request_api_version);
            prop_assert_eq!(header.body_offset, payload.len() - buf.len());
        }
    }
}

//! Reading just enough of a request to route it: api key, version,
//! correlation id and where the body starts.

use kafka_protocol::messages::ApiKey;

use super::reader::Cursor;

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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::test_frames::encode_request;
    use proptest::prelude::*;

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

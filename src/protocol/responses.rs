//! Response bodies walked for the one or two facts switchyard needs from
//! them; `payload` starts at the response header.

use super::reader::Cursor;

/// Error code, producer id and epoch of an InitProducerId response;
/// `payload` starts at the response header.
pub fn init_producer_id_response(payload: &[u8], version: i16) -> Option<(i16, i64, i16)> {
    let mut c = Cursor::new(payload, 4); // correlation id
    if version >= 2 {
        c.skip_tagged_fields()?;
    }
    c.i32()?; // throttle time
    let error = c.i16()?;
    let id = i64::from_be_bytes(c.take(8)?.try_into().ok()?);
    let epoch = c.i16()?;
    Some((error, id, epoch))
}

/// The member id a JoinGroup response hands out, walked (brokers differ in
/// which strings they leave null). `payload` starts at the response header.
pub fn join_group_response_member(payload: &[u8], version: i16) -> Option<String> {
    let flexible = version >= 6;
    let mut c = Cursor::new(payload, 4); // correlation id
    if flexible {
        c.skip_tagged_fields()?;
    }
    if version >= 2 {
        c.i32()?; // throttle time
    }
    c.i16()?; // error code
    c.i32()?; // generation id
    let string = |c: &mut Cursor<'_>| c.string(flexible).map(|s| s.is_some());
    if version >= 7 {
        string(&mut c)?; // protocol type
    }
    string(&mut c)?; // protocol name
    string(&mut c)?; // leader
    if version >= 9 {
        c.i8()?; // skip assignment
    }
    let member = c.string(flexible)??;
    Some(String::from_utf8_lossy(member).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::BytesMut;
    use kafka_protocol::messages::ApiKey;
    use kafka_protocol::protocol::{Encodable, StrBytes};

    #[test]
    fn join_group_answers_name_their_member_in_every_version() {
        use kafka_protocol::messages::{JoinGroupResponse, ResponseHeader};
        for version in 0..=9 {
            let header = ResponseHeader::default().with_correlation_id(3);
            let body = JoinGroupResponse::default()
                .with_member_id(StrBytes::from_static_str("m-42"))
                .with_leader(StrBytes::from_static_str("m-1"));
            let mut buf = BytesMut::new();
            header
                .encode(&mut buf, ApiKey::JoinGroup.response_header_version(version))
                .unwrap();
            body.encode(&mut buf, version).unwrap();
            assert_eq!(
                join_group_response_member(&buf, version).as_deref(),
                Some("m-42"),
                "v{version}"
            );
            assert_eq!(
                join_group_response_member(&buf[..buf.len() / 2], version),
                None
            );
        }
        // A null protocol name (seen from librdkafka's mock broker) is fine.
        let mut raw = vec![0, 0, 0, 3, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
        raw.extend_from_slice(&(-1i16).to_be_bytes()); // protocol name: null
        raw.extend_from_slice(&1i16.to_be_bytes());
        raw.push(b'l');
        raw.extend_from_slice(&2i16.to_be_bytes());
        raw.extend_from_slice(b"me");
        assert_eq!(join_group_response_member(&raw, 5).as_deref(), Some("me"));
    }
}

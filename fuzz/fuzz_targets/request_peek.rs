#![no_main]

//! `peek_request` and the body peeks on arbitrary request payloads: never a
//! panic, and the body offset stays inside the payload.

use libfuzzer_sys::fuzz_target;
use switchyard::protocol::header::{peek_request, peek_response_correlation_id};
use switchyard::protocol::requests::{
    fetch_max_wait_ms, join_group_wait_ms, produce_acks, produce_acks_at,
};

fuzz_target!(|data: &[u8]| {
    let _ = peek_response_correlation_id(data);
    let Ok(header) = peek_request(data) else {
        return;
    };
    assert!(header.body_offset <= data.len());
    assert!(header.body_offset >= 8);
    assert_eq!(
        header.correlation_id,
        i32::from_be_bytes([data[4], data[5], data[6], data[7]])
    );
    let acks = produce_acks(data, &header);
    // The offset is used to patch acks in place: it must point at the value.
    match produce_acks_at(data, &header) {
        Ok((value, at)) => {
            assert!(at >= header.body_offset && at + 2 <= data.len());
            assert_eq!(value, i16::from_be_bytes([data[at], data[at + 1]]));
            assert_eq!(acks.ok(), Some(value));
        }
        Err(e) => assert_eq!(acks.err(), Some(e)),
    }
    let _ = fetch_max_wait_ms(data, &header);
    let _ = join_group_wait_ms(data, &header);
});

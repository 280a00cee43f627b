#![no_main]

//! The leader-epoch walkers on arbitrary requests and answers: never a
//! panic, and every position they return lies inside the payload (epochs
//! are patched in place there).

use libfuzzer_sys::fuzz_target;
use switchyard::protocol::epochs;
use switchyard::protocol::header::peek_request;

fuzz_target!(|data: &[u8]| {
    let inside = |at: usize, size: usize| assert!(at + size <= data.len(), "{at} out of bounds");
    if let Ok(header) = peek_request(data) {
        for e in epochs::fetch_request(data, &header).unwrap_or_default() {
            inside(e.at, 4);
        }
        for e in epochs::list_offsets_request(data, &header).unwrap_or_default() {
            inside(e.at, 4);
        }
        for v in epochs::offset_for_leader_epoch_request(data, &header).unwrap_or_default() {
            inside(v.current_at, 4);
            inside(v.leader_epoch_at, 4);
        }
        for c in epochs::offset_commit_request(data, &header).unwrap_or_default() {
            inside(c.offset_at, 8);
            inside(c.epoch_at, 4);
        }
    }
    let version = data.first().map_or(0, |b| i16::from(*b % 16));
    for positions in [
        epochs::fetch_response(data, version),
        epochs::list_offsets_response(data, version),
        epochs::offset_for_leader_epoch_response(data, version),
        epochs::offset_fetch_response(data, version),
    ]
    .into_iter()
    .flatten()
    {
        for at in positions {
            inside(at, 4);
        }
    }
});

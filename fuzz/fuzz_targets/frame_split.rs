#![no_main]

//! Arbitrary bytes, cut at a fuzzer-chosen point into two chunks, through
//! `FrameCodec`: it must never panic, and every frame it returns must be
//! whole, its payload as long as its prefix says.

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use switchyard::protocol::frame::{Frame, FrameCodec, LENGTH_PREFIX};
use tokio_util::codec::Decoder;

const MAX: usize = 4096;

fn check(frame: &Frame) {
    let wire = frame.wire_bytes();
    assert!(wire.len() >= LENGTH_PREFIX);
    let declared = u32::from_be_bytes([wire[0], wire[1], wire[2], wire[3]]) as usize;
    assert_eq!(frame.payload().len(), declared);
    assert_eq!(frame.wire_len(), LENGTH_PREFIX + declared);
    assert!(declared <= MAX);
}

fuzz_target!(|data: &[u8]| {
    let Some((&cut, data)) = data.split_first() else {
        return;
    };
    let cut = (cut as usize * data.len() / 255).min(data.len());
    let (first, second) = data.split_at(cut);
    let mut codec = FrameCodec::new(MAX);
    let mut buf = BytesMut::new();
    let mut consumed = 0;
    for chunk in [first, second] {
        buf.extend_from_slice(chunk);
        loop {
            match codec.decode(&mut buf) {
                Ok(Some(frame)) => {
                    check(&frame);
                    consumed += frame.wire_len();
                }
                Ok(None) => break,
                Err(_) => return,
            }
        }
    }
    loop {
        match codec.decode_eof(&mut buf) {
            Ok(Some(frame)) => {
                check(&frame);
                consumed += frame.wire_len();
            }
            Ok(None) => break,
            Err(_) => return,
        }
    }
    // A clean end means every input byte went into some frame.
    assert_eq!(consumed, data.len());
    assert!(buf.is_empty());
});

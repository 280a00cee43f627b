//! Kafka framing: a 4-byte big-endian length, then that many bytes.
//!
//! A frame is kept whole, length prefix included, so that a request the proxy
//! does not need to change goes upstream as the very bytes that came in.

use bytes::{Buf, Bytes, BytesMut};
use tokio_util::codec::Decoder;

pub const LENGTH_PREFIX: usize = 4;

#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error("frame length {len} exceeds the maximum of {max} bytes")]
    TooLarge { len: u32, max: usize },
    #[error("frame length {0} is negative")]
    Negative(i32),
    #[error("connection closed in the middle of a frame ({have} of {want} bytes received)")]
    Truncated { have: usize, want: usize },
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// One whole frame: length prefix plus payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    bytes: Bytes,
}

impl Frame {
    /// Wraps a payload, writing the length prefix in front of it.
    pub fn from_payload(payload: &[u8]) -> Frame {
        let mut bytes = BytesMut::with_capacity(LENGTH_PREFIX + payload.len());
        bytes.extend_from_slice(&(payload.len() as u32).to_be_bytes());
        bytes.extend_from_slice(payload);
        Frame {
            bytes: bytes.freeze(),
        }
    }

    /// The frame as it travels: length prefix and payload.
    pub fn wire_bytes(&self) -> &Bytes {
        &self.bytes
    }

    /// Everything after the length prefix.
    pub fn payload(&self) -> &[u8] {
        &self.bytes[LENGTH_PREFIX..]
    }

    pub fn payload_bytes(&self) -> Bytes {
        self.bytes.slice(LENGTH_PREFIX..)
    }

    pub fn wire_len(&self) -> usize {
        self.bytes.len()
    }
}

/// Splits a byte stream into frames, refusing any longer than `max_frame_bytes`
/// before buffering it.
#[derive(Debug, Clone)]
pub struct FrameCodec {
    max_frame_bytes: usize,
}

impl FrameCodec {
    pub fn new(max_frame_bytes: usize) -> FrameCodec {
        FrameCodec { max_frame_bytes }
    }
}

impl Decoder for FrameCodec {
    type Item = Frame;
    type Error = FrameError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Frame>, FrameError> {
        if src.len() < LENGTH_PREFIX {
            return Ok(None);
        }
        let declared = i32::from_be_bytes([src[0], src[1], src[2], src[3]]);
        if declared < 0 {
            return Err(FrameError::Negative(declared));
        }
        let len = declared as usize;
        if len > self.max_frame_bytes {
            return Err(FrameError::TooLarge {
                len: declared as u32,
                max: self.max_frame_bytes,
            });
        }
        let total = LENGTH_PREFIX + len;
        if src.len() < total {
            src.reserve(total - src.len());
            return Ok(None);
        }
        Ok(Some(Frame {
            bytes: src.split_to(total).freeze(),
        }))
    }

    fn decode_eof(&mut self, src: &mut BytesMut) -> Result<Option<Frame>, FrameError> {
        match self.decode(src)? {
            Some(frame) => Ok(Some(frame)),
            None if src.is_empty() => Ok(None),
            None => {
                let want = if src.len() >= LENGTH_PREFIX {
                    LENGTH_PREFIX + (&src[..LENGTH_PREFIX]).get_u32() as usize
                } else {
                    LENGTH_PREFIX
                };
                let have = src.len();
                src.clear();
                Err(FrameError::Truncated { have, want })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn split_all(codec: &mut FrameCodec, chunks: &[Vec<u8>]) -> Result<Vec<Frame>, FrameError> {
        let mut buf = BytesMut::new();
        let mut out = Vec::new();
        for chunk in chunks {
            buf.extend_from_slice(chunk);
            while let Some(frame) = codec.decode(&mut buf)? {
                out.push(frame);
            }
        }
        while let Some(frame) = codec.decode_eof(&mut buf)? {
            out.push(frame);
        }
        Ok(out)
    }

    #[test]
    fn oversized_length_is_refused_before_buffering() {
        let mut codec = FrameCodec::new(1024);
        let mut buf = BytesMut::from(&(2048u32).to_be_bytes()[..]);
        let err = codec.decode(&mut buf).unwrap_err();
        assert!(matches!(
            err,
            FrameError::TooLarge {
                len: 2048,
                max: 1024
            }
        ));
        assert!(err.to_string().contains("2048"));
    }

    #[test]
    fn negative_length_is_refused() {
        let mut codec = FrameCodec::new(1024);
        let mut buf = BytesMut::from(&(-5i32).to_be_bytes()[..]);
        assert!(matches!(
            codec.decode(&mut buf),
            Err(FrameError::Negative(-5))
        ));
    }

    #[test]
    fn truncated_frame_at_eof_is_an_error() {
        let mut codec = FrameCodec::new(1024);
        let mut buf = BytesMut::new();
        buf.extend_from_slice(&10u32.to_be_bytes());
        buf.extend_from_slice(b"abc");
        assert_eq!(codec.decode(&mut buf).unwrap(), None);
        let err = codec.decode_eof(&mut buf).unwrap_err();
        assert!(matches!(err, FrameError::Truncated { have: 7, want: 14 }));
    }

    proptest! {
        #[test]
        fn any_chunking_yields_the_same_frames(
            payloads in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..300), 0..20),
            cuts in proptest::collection::vec(1usize..64, 1..50),
        ) {
            let mut stream = Vec::new();
            for p in &payloads {
                stream.extend_from_slice(Frame::from_payload(p).wire_bytes());
            }
            let mut chunks = Vec::new();
            let mut rest = &stream[..];
            let mut i = 0;
            while !rest.is_empty() {
                let n = cuts[i % cuts.len()].min(rest.len());
                chunks.push(rest[..n].to_vec());
                rest = &rest[n..];
                i += 1;
            }
            let frames = split_all(&mut FrameCodec::new(4096), &chunks).unwrap();
            prop_assert_eq!(frames.len(), payloads.len());
            for (frame, payload) in frames.iter().zip(&payloads) {
                prop_assert_eq!(frame.payload(), &payload[..]);
            }
        }

        #[test]
        fn arbitrary_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..2000)) {
            let _ = split_all(&mut FrameCodec::new(512), &[data]);
        }
    }
}

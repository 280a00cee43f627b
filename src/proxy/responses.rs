//! Reading upstream responses. A response the proxy does not need to look
//! into is passed to the client as it arrives once it is large, so a
//! multi-megabyte Fetch answer does not wait to be read whole before its
//! first byte goes out.

use std::io;

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufWriter};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};

use crate::protocol::frame::{Frame, FrameCodec, LENGTH_PREFIX};
use tokio_util::codec::Decoder;

/// Responses at least this large are streamed when nothing must be rewritten.
const STREAM_ABOVE: usize = 256 * 1024;
const READ_CHUNK: usize = 64 * 1024;

pub(super) enum Next {
    /// The whole response, to inspect and pass on.
    Frame(Frame),
    /// Already written to the client (this many bytes).
    Streamed(usize),
}

#[derive(Debug)]
pub(super) enum ReadError {
    Closed,
    Upstream(String),
    CorrelationMismatch { expected: i32, answered: i32 },
    Client(io::Error),
}

pub(super) struct ResponseReader {
    inner: OwnedReadHalf,
    buf: BytesMut,
    codec: FrameCodec,
}

impl ResponseReader {
    pub(super) fn new(inner: OwnedReadHalf) -> ResponseReader {
        ResponseReader {
            inner,
            buf: BytesMut::with_capacity(READ_CHUNK),
            codec: FrameCodec::new(i32::MAX as usize),
        }
    }

    async fn read_more(&mut self) -> Result<(), ReadError> {
        self.buf.reserve(READ_CHUNK);
        match self.inner.read_buf(&mut self.buf).await {
            Ok(0) => Err(ReadError::Closed),
            Ok(_) => Ok(()),
            Err(e) => Err(ReadError::Upstream(e.to_string())),
        }
    }

    /// The next response. With `expected` set, its correlation id is checked;
    /// with `may_stream`, a large one is written straight to `client`.
    /// `client` is `None` once the client has gone: answers are then read
    /// (and never streamed) only to finish the work they carry.
    pub(super) async fn next(
        &mut self,
        mut client: Option<&mut BufWriter<OwnedWriteHalf>>,
        expected: Option<i32>,
        may_stream: bool,
    ) -> Result<Next, ReadError> {
        if self.complete_frame_len().is_none() {
            if let Some(client) = client.as_mut() {
                // About to wait: the client gets what it is already owed.
                client.flush().await.map_err(ReadError::Client)?;
            }
        }
        while self.buf.len() < LENGTH_PREFIX + 4 {
            self.read_more().await?;
        }
        let declared = i32::from_be_bytes([self.buf[0], self.buf[1], self.buf[2], self.buf[3]]);
        let answered = i32::from_be_bytes([self.buf[4], self.buf[5], self.buf[6], self.buf[7]]);
        if declared < 4 {
            return Err(ReadError::Upstream(format!(
                "response frame length {declared}"
            )));
        }
        if let Some(expected) = expected {
            if answered != expected {
                return Err(ReadError::CorrelationMismatch { expected, answered });
            }
        }
        let total = LENGTH_PREFIX + declared as usize;
        if let Some(client) = client.filter(|_| may_stream) {
            if total >= STREAM_ABOVE && self.buf.len() < total {
                return self.stream(client, total).await;
            }
        }
        loop {
            match self.codec.decode(&mut self.buf) {
                Ok(Some(frame)) => return Ok(Next::Frame(frame)),
                Ok(None) => self.read_more().await?,
                Err(e) => return Err(ReadError::Upstream(e.to_string())),
            }
        }
    }

    async fn stream(
        &mut self,
        client: &mut BufWriter<OwnedWriteHalf>,
        total: usize,
    ) -> Result<Next, ReadError> {
        let mut remaining = total;
        loop {
            let take = remaining.min(self.buf.len());
            client
                .write_all(&self.buf[..take])
                .await
                .map_err(ReadError::Client)?;
            self.buf.advance(take);
            remaining -= take;
            if remaining == 0 {
                return Ok(Next::Streamed(total));
            }
            self.read_more().await?;
        }
    }

    /// Reads until a whole response is buffered. Safe to abandon: bytes
    /// read stay in the buffer.
    pub(super) async fn fill_frame(&mut self) -> Result<(), ReadError> {
        while self.complete_frame_len().is_none() {
            self.read_more().await?;
        }
        Ok(())
    }

    fn complete_frame_len(&self) -> Option<usize> {
        let prefix = self.buf.get(..LENGTH_PREFIX)?;
        let total = LENGTH_PREFIX
            + u32::from_be_bytes([prefix[0], prefix[1], prefix[2], prefix[3]]) as usize;
        (self.buf.len() >= total).then_some(total)
    }
}

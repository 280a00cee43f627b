//! Bytes on the wire: framing, header peek, the version table.

pub mod batch;
pub mod epochs;
pub mod errors;
pub mod frame;
pub mod header;
pub(crate) mod reader;
pub mod requests;
pub mod responses;
pub mod shapes;
#[cfg(test)]
mod test_frames;
pub mod versions;

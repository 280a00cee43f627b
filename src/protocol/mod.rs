//! Bytes on the wire: framing, header peek, the version table.

pub mod frame;
pub mod batch;
pub mod header;
pub mod versions;

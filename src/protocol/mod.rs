//! Bytes on the wire: framing, header peek, the version table.

pub mod batch;
pub mod epochs;
pub mod errors;
pub mod frame;
pub mod header;
pub mod versions;

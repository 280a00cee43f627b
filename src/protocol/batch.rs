//! Record batches (magic v2) without decompression: walk them, read their
//! headers, restamp producer fields and recompute the CRC-32C.
//!
//! Layout of the header (offsets in bytes):
//! ```text
//!  0 base_offset i64        21 attributes i16          43 producer_id i64
//!  8 batch_length i32       23 last_offset_delta i32   51 producer_epoch i16
//! 12 partition_leader_epoch 27 first_timestamp i64     53 base_sequence i32
//! 16 magic i8               35 max_timestamp i64       57 records_count i32
//! 17 crc u32 (over 21..end)
//! ```

use bytes::{Bytes, BytesMut};

pub const HEADER_LEN: usize = 61;
const LOG_OVERHEAD: usize = 12;
const CRC_OFFSET: usize = 17;
const ATTRIBUTES_OFFSET: usize = 21;
const PRODUCER_ID_OFFSET: usize = 43;
const PRODUCER_EPOCH_OFFSET: usize = 51;
const BASE_SEQUENCE_OFFSET: usize = 53;

const TRANSACTIONAL: i16 = 0x10;
const CONTROL: i16 = 0x20;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BatchError {
    #[error("record batch at byte {at} is truncated")]
    Truncated { at: usize },
    #[error("record batch at byte {at} has magic {magic}; only v2 batches can be mirrored")]
    OldMagic { at: usize, magic: i8 },
    #[error("record batch at byte {at} declares length {len}")]
    BadLength { at: usize, len: i32 },
    #[error("record batch at byte {at} fails its CRC check")]
    BadCrc { at: usize },
}

/// The header fields of one batch that the mirror needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchHeader {
    pub base_offset: i64,
    pub last_offset_delta: i32,
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub base_sequence: i32,
    pub records_count: i32,
    pub attributes: i16,
}

impl BatchHeader {
    pub fn is_transactional(&self) -> bool {
        self.attributes & TRANSACTIONAL != 0
    }

    pub fn is_control(&self) -> bool {
        self.attributes & CONTROL != 0
    }

    pub fn is_idempotent(&self) -> bool {
        self.producer_id >= 0
    }

    /// Offsets the batch occupies once appended.
    pub fn offset_count(&self) -> i64 {
        i64::from(self.last_offset_delta) + 1
    }
}

fn i16_at(b: &[u8], at: usize) -> i16 {
    i16::from_be_bytes([b[at], b[at + 1]])
}

fn i32_at(b: &[u8], at: usize) -> i32 {
    i32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn i64_at(b: &[u8], at: usize) -> i64 {
    let mut x = [0u8; 8];
    x.copy_from_slice(&b[at..at + 8]);
    i64::from_be_bytes(x)
}

pub fn read_header(batch: &[u8]) -> Result<BatchHeader, BatchError> {
    if batch.len() < HEADER_LEN {
        return Err(BatchError::Truncated { at: 0 });
    }
    Ok(BatchHeader {
        base_offset: i64_at(batch, 0),
        last_offset_delta: i32_at(batch, 23),
        producer_id: i64_at(batch, PRODUCER_ID_OFFSET),
        producer_epoch: i16_at(batch, PRODUCER_EPOCH_OFFSET),
        base_sequence: i32_at(batch, BASE_SEQUENCE_OFFSET),
        records_count: i32_at(batch, 57),
        attributes: i16_at(batch, ATTRIBUTES_OFFSET),
    })
}

/// Splits a `records` field into its batches (zero-copy slices), checking
/// lengths, magic and CRC.
pub fn split_batches(records: &Bytes) -> Result<Vec<Bytes>, BatchError> {
    let mut out = Vec::new();
    let mut at = 0;
    while at < records.len() {
        let rest = &records[at..];
        if rest.len() < LOG_OVERHEAD {
            return Err(BatchError::Truncated { at });
        }
        let len = i32_at(rest, 8);
        if len < (HEADER_LEN - LOG_OVERHEAD) as i32 {
            return Err(BatchError::BadLength { at, len });
        }
        let total = LOG_OVERHEAD + len as usize;
        if rest.len() < total {
            return Err(BatchError::Truncated { at });
        }
        let magic = rest[16] as i8;
        if magic != 2 {
            return Err(BatchError::OldMagic { at, magic });
        }
        let stored = u32::from_be_bytes([rest[17], rest[18], rest[19], rest[20]]);
        if crc32c::crc32c(&rest[ATTRIBUTES_OFFSET..total]) != stored {
            return Err(BatchError::BadCrc { at });
        }
        out.push(records.slice(at..at + total));
        at += total;
    }
    Ok(out)
}

/// A copy of `batch` written under another producer identity. `sequence`
/// replaces the base sequence when given (batches of a non-idempotent
/// producer get the mirror's own sequence). The CRC is recomputed; records
/// are untouched.
pub fn restamp(
    batch: &[u8],
    producer_id: i64,
    producer_epoch: i16,
    sequence: Option<i32>,
) -> Bytes {
    let mut out = BytesMut::from(batch);
    out[PRODUCER_ID_OFFSET..PRODUCER_ID_OFFSET + 8].copy_from_slice(&producer_id.to_be_bytes());
    out[PRODUCER_EPOCH_OFFSET..PRODUCER_EPOCH_OFFSET + 2]
        .copy_from_slice(&producer_epoch.to_be_bytes());
    if let Some(sequence) = sequence {
        out[BASE_SEQUENCE_OFFSET..BASE_SEQUENCE_OFFSET + 4]
            .copy_from_slice(&sequence.to_be_bytes());
    }
    let crc = crc32c::crc32c(&out[ATTRIBUTES_OFFSET..]);
    out[CRC_OFFSET..CRC_OFFSET + 4].copy_from_slice(&crc.to_be_bytes());
    out.freeze()
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::records::{
        Compression, Record, RecordBatchDecoder, RecordBatchEncoder, RecordEncodeOptions,
        TimestampType,
    };
    use proptest::prelude::*;

    fn encode(records: &[Record], compression: Compression) -> Bytes {
        let mut buf = BytesMut::new();
        RecordBatchEncoder::encode(
            &mut buf,
            records,
            &RecordEncodeOptions {
                version: 2,
                compression,
            },
        )
        .unwrap();
        buf.freeze()
    }

    fn record(i: i64, producer_id: i64, sequence: i32) -> Record {
        Record {
            transactional: false,
            control: false,
            partition_leader_epoch: 0,
            producer_id,
            producer_epoch: if producer_id >= 0 { 3 } else { -1 },
            timestamp_type: TimestampType::Creation,
            offset: i,
            sequence: if producer_id >= 0 {
                sequence + i as i32
            } else {
                -1
            },
            timestamp: 1_700_000_000_000 + i,
            key: Some(Bytes::from(format!("key-{i}"))),
            value: Some(Bytes::from(format!("value-{i}"))),
            headers: Default::default(),
            delete_horizon: false,
        }
    }

    #[test]
    fn restamped_batch_keeps_records_and_passes_crc() {
        let records: Vec<Record> = (0..5).map(|i| record(i, 42, 10)).collect();
        let batch = encode(&records, Compression::Lz4);
        let split = split_batches(&batch).unwrap();
        assert_eq!(split.len(), 1);
        let header = read_header(&split[0]).unwrap();
        assert_eq!(
            (
                header.producer_id,
                header.producer_epoch,
                header.base_sequence
            ),
            (42, 3, 10)
        );
        assert_eq!(header.records_count, 5);

        let stamped = restamp(&split[0], 7000, 1, None);
        assert_eq!(split_batches(&stamped).unwrap().len(), 1, "CRC holds");
        let h = read_header(&stamped).unwrap();
        assert_eq!(
            (h.producer_id, h.producer_epoch, h.base_sequence),
            (7000, 1, 10)
        );
        let mut copy = stamped.clone();
        let decoded = RecordBatchDecoder::decode(&mut copy).unwrap();
        assert_eq!(decoded.records.len(), 5);
        for (before, after) in records.iter().zip(&decoded.records) {
            assert_eq!(before.key, after.key);
            assert_eq!(before.value, after.value);
            assert_eq!(before.timestamp, after.timestamp);
        }
    }

    #[test]
    fn non_idempotent_batch_gets_a_sequence() {
        let encoded = encode(&[record(0, -1, 0)], Compression::None);
        let batch = split_batches(&encoded).unwrap().remove(0);
        let header = read_header(&batch).unwrap();
        assert!(!header.is_idempotent());
        let stamped = restamp(&batch, 9, 0, Some(100));
        let h = read_header(&stamped).unwrap();
        assert_eq!((h.producer_id, h.base_sequence), (9, 100));
        assert!(split_batches(&stamped).is_ok());
    }

    #[test]
    fn corruption_and_old_magic_are_named() {
        let batch = encode(&[record(0, 1, 0)], Compression::None);
        let mut bad = BytesMut::from(&batch[..]);
        let last = bad.len() - 1;
        bad[last] ^= 0xff;
        assert_eq!(
            split_batches(&bad.freeze()),
            Err(BatchError::BadCrc { at: 0 })
        );
        let mut old = BytesMut::from(&batch[..]);
        old[16] = 1;
        assert!(matches!(
            split_batches(&old.freeze()),
            Err(BatchError::OldMagic { .. })
        ));
        assert!(matches!(
            split_batches(&batch.slice(..30)),
            Err(BatchError::Truncated { .. })
        ));
    }

    proptest! {
        #[test]
        fn walker_never_panics(data in proptest::collection::vec(any::<u8>(), 0..400)) {
            let _ = split_batches(&Bytes::from(data));
        }

        #[test]
        fn several_batches_split_back(counts in proptest::collection::vec(1i64..6, 1..5)) {
            let mut all = BytesMut::new();
            for (n, count) in counts.iter().enumerate() {
                let records: Vec<Record> = (0..*count).map(|i| record(i, n as i64, 0)).collect();
                all.extend_from_slice(&encode(&records, Compression::None));
            }
            let split = split_batches(&all.freeze()).unwrap();
            prop_assert_eq!(split.len(), counts.len());
            for (batch, count) in split.iter().zip(&counts) {
                prop_assert_eq!(i64::from(read_header(batch).unwrap().records_count), *count);
            }
        }
    }
}

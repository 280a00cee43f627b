//! What a cluster stores, read straight from it (not through the proxy),
//! and looked up by content: the clusters on either side of a flip agree
//! on what each partition holds and in which order, not necessarily on
//! offsets.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use rdkafka::consumer::Consumer;
use rdkafka::message::{Headers, Message};

use super::workload::{consumer_config, parse_value};

/// One record as a cluster stores it, everything a consumer can compare.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredRecord {
    pub offset: i64,
    pub key: Option<Vec<u8>>,
    pub value: Option<Vec<u8>>,
    pub headers: Vec<(String, Option<Vec<u8>>)>,
    pub timestamp: Option<i64>,
}

/// A topic's records as one cluster stores them, looked up by what they
/// hold (key and sequence number) rather than by offset.
#[derive(Debug, Default)]
pub struct StoredIndex {
    records: HashMap<(i32, String, u64), StoredCopies>,
}

#[derive(Debug, Clone, Copy)]
struct StoredCopies {
    /// Index of the first copy among its partition's records.
    first: usize,
    count: usize,
}

impl StoredIndex {
    /// Records whose value is not one the workload writes are left out.
    pub fn of(stored: &BTreeMap<i32, Vec<StoredRecord>>) -> StoredIndex {
        let mut records = HashMap::new();
        for (&partition, partition_records) in stored {
            for (index, record) in partition_records.iter().enumerate() {
                let Some((key, seq)) = record.value.as_deref().and_then(parse_value) else {
                    continue;
                };
                records
                    .entry((partition, key, seq))
                    .and_modify(|c: &mut StoredCopies| c.count += 1)
                    .or_insert(StoredCopies {
                        first: index,
                        count: 1,
                    });
            }
        }
        StoredIndex { records }
    }

    /// Where the first copy of (key, seq) sits among its partition's
    /// records.
    pub fn position(&self, partition: i32, key: &str, seq: u64) -> Option<usize> {
        self.records
            .get(&(partition, key.to_owned(), seq))
            .map(|c| c.first)
    }

    /// How many copies of (key, seq) the partition holds.
    pub fn copies(&self, partition: i32, key: &str, seq: u64) -> usize {
        self.records
            .get(&(partition, key.to_owned(), seq))
            .map_or(0, |c| c.count)
    }
}

/// Reads every record of `topic` straight from a cluster (not through the
/// proxy), per partition, up to each partition's high watermark.
pub fn read_cluster(
    bootstrap: &str,
    topic: &str,
    partitions: i32,
) -> anyhow::Result<BTreeMap<i32, Vec<StoredRecord>>> {
    read_cluster_as(bootstrap, "direct-reader", topic, partitions)
}

/// `read_cluster` with the group id of the caller's choosing. The reader
/// assigns itself partitions and never commits, so the group is named in
/// coordinator lookups only; on a cluster that is not the caller's own, it
/// should be a group the caller owns anyway.
pub fn read_cluster_as(
    bootstrap: &str,
    group: &str,
    topic: &str,
    partitions: i32,
) -> anyhow::Result<BTreeMap<i32, Vec<StoredRecord>>> {
    use rdkafka::consumer::BaseConsumer;
    use rdkafka::{Offset, TopicPartitionList};
    let consumer: BaseConsumer = consumer_config(bootstrap, group)
        .set("enable.partition.eof", "false")
        .create()?;
    let mut out = BTreeMap::new();
    let mut assignment = TopicPartitionList::new();
    let mut ends = BTreeMap::new();
    for partition in 0..partitions {
        let (_, high) = consumer.fetch_watermarks(topic, partition, Duration::from_secs(10))?;
        ends.insert(partition, high);
        out.insert(partition, Vec::new());
        assignment.add_partition_offset(topic, partition, Offset::Beginning)?;
    }
    consumer.assign(&assignment)?;
    let deadline = Instant::now() + Duration::from_secs(60);
    let done = |out: &BTreeMap<i32, Vec<StoredRecord>>| {
        ends.iter().all(|(p, high)| {
            out[p]
                .last()
                .map_or(*high == 0, |r: &StoredRecord| r.offset + 1 >= *high)
        })
    };
    while !done(&out) {
        anyhow::ensure!(
            Instant::now() < deadline,
            "could not read {topic} up to its end"
        );
        let Some(message) = consumer.poll(Duration::from_millis(200)) else {
            continue;
        };
        let message = message?;
        let headers = message
            .headers()
            .map(|h| {
                h.iter()
                    .map(|h| (h.key.to_owned(), h.value.map(<[u8]>::to_vec)))
                    .collect()
            })
            .unwrap_or_default();
        let Some(records) = out.get_mut(&message.partition()) else {
            anyhow::bail!("{topic}-{} was not assigned", message.partition());
        };
        records.push(StoredRecord {
            offset: message.offset(),
            key: message.key().map(<[u8]>::to_vec),
            value: message.payload().map(<[u8]>::to_vec),
            headers,
            timestamp: message.timestamp().to_millis(),
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::demo::workload::record_value;

    fn stored(offset: i64, key: &str, seq: u64) -> StoredRecord {
        StoredRecord {
            offset,
            key: Some(key.as_bytes().to_vec()),
            value: Some(record_value(key, seq).into_bytes()),
            headers: Vec::new(),
            timestamp: None,
        }
    }

    #[test]
    fn records_are_found_by_content_whatever_their_offsets() {
        let mut partition = vec![stored(40, "k", 0), stored(41, "k", 1), stored(44, "k", 1)];
        partition.push(StoredRecord {
            value: Some(b"not the workload's".to_vec()),
            ..stored(45, "k", 2)
        });
        let index = StoredIndex::of(&[(3, partition)].into());
        assert_eq!(index.position(3, "k", 0), Some(0));
        assert_eq!(index.position(3, "k", 1), Some(1), "the first copy");
        assert_eq!(index.copies(3, "k", 1), 2);
        assert_eq!(index.position(3, "k", 2), None, "unreadable value");
        assert_eq!(index.position(0, "k", 0), None, "another partition");
        assert_eq!(index.copies(0, "k", 0), 0);
    }
}

//! Checks and steps shared by the real-Kafka tests: reading a cluster
//! straight (retried while a new leader's high watermark catches up), a
//! group's committed offsets, admin calls that must succeed, and the
//! integrity checks a user would run on two clusters.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use serde_json::Value;

use super::kafka::KafkaCluster;
use super::{http_post, read_cluster, wait_until, workload, RecordRef, StoredRecord};

/// Every record of `topic` read straight from `cluster`, retried for up to
/// 30 s: right after leaders moved, a new leader may answer
/// OFFSET_NOT_AVAILABLE until its high watermark has caught up.
pub fn read_all(
    cluster: &KafkaCluster,
    topic: &str,
    partitions: i32,
) -> BTreeMap<i32, Vec<StoredRecord>> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match read_cluster(&cluster.bootstrap(), topic, partitions) {
            Ok(stored) => return stored,
            Err(e) if Instant::now() < deadline => {
                eprintln!("reading {topic} again: {e:#}");
                std::thread::sleep(Duration::from_millis(300));
            }
            Err(e) => panic!("cannot read {topic}: {e:#}"),
        }
    }
}

/// Each partition's log end offset, read straight from the cluster.
pub fn end_offsets(cluster: &KafkaCluster, topic: &str, partitions: i32) -> Vec<i64> {
    read_all(cluster, topic, partitions)
        .values()
        .map(|r| r.last().map_or(0, |r| r.offset + 1))
        .collect()
}

/// A group's committed offsets, read straight from the cluster.
pub async fn committed_offsets(cluster: &KafkaCluster, group: &str) -> HashMap<(String, i32), i64> {
    let client = switchyard::mirror::client::ClusterClient::new(
        switchyard::config::ClusterName::A,
        cluster.bootstrap().split(',').map(str::to_owned).collect(),
        Duration::from_secs(10),
    );
    client.committed_offsets(group).await.unwrap_or_default()
}

/// Waits (bounded) until `group` has committed `ends` (one offset per
/// partition of `topic`) in `cluster`.
pub async fn wait_for_commits(cluster: &KafkaCluster, group: &str, topic: &str, ends: &[i64]) {
    wait_until(
        Duration::from_secs(90),
        &format!("group {group} to commit {topic} up to {ends:?}"),
        || async move {
            let committed = committed_offsets(cluster, group).await;
            ends.iter()
                .enumerate()
                .all(|(p, end)| committed.get(&(topic.to_owned(), p as i32)) == Some(end))
        },
    )
    .await;
}

/// Once switchyard's mirror lag is 0: `topic` read from both clusters,
/// B holding each of `live` once as `assert_b_mirrors_a` says
/// (`at_least_once` names, by key, the producers that are not idempotent).
pub async fn assert_mirrored_once(
    admin: SocketAddr,
    (a, b): (&KafkaCluster, &KafkaCluster),
    topic: &str,
    partitions: i32,
    live: &[RecordRef],
    at_least_once: impl Fn(&str) -> bool,
) {
    super::wait_for_mirror_lag_zero(admin).await;
    let mirrored = assert_b_mirrors_a(
        &read_all(a, topic, partitions),
        &read_all(b, topic, partitions),
        topic,
        live,
        at_least_once,
    );
    eprintln!("{topic}: {mirrored:?}");
    assert_eq!(mirrored.distinct, live.len(), "{topic}: live records in B");
}

/// POSTs /flip or /rollback as an operator would under load: a refusal
/// whose every reason is records still on their way to the other cluster
/// (a consumer committed a record the mirror is still writing) is asked
/// again, for up to 30 s; any other refusal is returned at once. The
/// answer and how many refusals came first.
pub async fn move_when_mirrored(admin: SocketAddr, path: &str) -> (u16, Value, usize) {
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut refused = 0;
    loop {
        let (status, json) = post(admin, path, "").await;
        let in_flight = json["outcome"] == "refused"
            && json["reasons"].as_array().is_some_and(|reasons| {
                !reasons.is_empty()
                    && reasons.iter().all(|r| {
                        let r = r.as_str().unwrap_or_default();
                        r.contains("is beyond the last mirrored record")
                            || r.contains("records not yet in cluster")
                    })
            });
        if !in_flight || Instant::now() >= deadline {
            return (status, json, refused);
        }
        refused += 1;
        eprintln!("{path} refused while records are in flight; asking again: {json}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// POSTs to the admin API and returns the JSON answer, which must be a 200.
pub async fn post_ok(admin: SocketAddr, path: &str, body: &str) -> Value {
    let (status, json) = post(admin, path, body).await;
    assert_eq!(status, 200, "{path}: {json:#}");
    json
}

/// POSTs to the admin API: the status and the JSON answer.
pub async fn post(admin: SocketAddr, path: &str, body: &str) -> (u16, Value) {
    let (status, text) = http_post(admin, path, body).await;
    let json = serde_json::from_str(&text).unwrap_or_else(|_| panic!("{path} answered {text}"));
    (status, json)
}

/// "key#seq" of a record value.
pub fn record_id(value: &[u8]) -> String {
    String::from_utf8_lossy(value)
        .split('#')
        .take(2)
        .collect::<Vec<_>>()
        .join("#")
}

/// Records among `wanted` that a partition holds more than once:
/// "key#seq" at which offsets.
pub fn stored_twice(
    records: &[StoredRecord],
    wanted: &HashSet<Vec<u8>>,
) -> Vec<(String, Vec<i64>)> {
    let mut at: HashMap<&Vec<u8>, Vec<i64>> = HashMap::new();
    for r in records {
        if let Some(v) = r.value.as_ref().filter(|v| wanted.contains(*v)) {
            at.entry(v).or_default().push(r.offset);
        }
    }
    let mut twice: Vec<(String, Vec<i64>)> = at
        .into_iter()
        .filter(|(_, offsets)| offsets.len() > 1)
        .map(|(v, offsets)| (record_id(v), offsets))
        .collect();
    twice.sort();
    twice
}

/// What B holds of the live records.
#[derive(Debug)]
pub struct Mirrored {
    /// Live records B holds, each counted once.
    pub distinct: usize,
    /// Records of non-idempotent producers that A stores twice: their
    /// client resent a batch whose answer it lost.
    pub retried_twice: usize,
    /// Of those copies, the ones A stored without acknowledging them, so
    /// B lacks them.
    pub unacknowledged_copies: usize,
}

/// Each live record B holds, in B's per-partition order, must be what A
/// holds in the same order; every acknowledged one in B. A record is stored
/// twice only when its producer is not idempotent (`at_least_once` says so
/// by key): Kafka's at-least-once for a client that resends a batch whose
/// answer it lost. B then lacks the copy A never acknowledged (a proxy
/// mirrors acknowledged writes), and holds both when A acknowledged both.
pub fn assert_b_mirrors_a(
    in_a: &BTreeMap<i32, Vec<StoredRecord>>,
    in_b: &BTreeMap<i32, Vec<StoredRecord>>,
    topic: &str,
    live: &[RecordRef],
    at_least_once: impl Fn(&str) -> bool,
) -> Mirrored {
    let live_values: HashSet<Vec<u8>> = live
        .iter()
        .map(|r| workload::record_value(&r.key, r.seq).into_bytes())
        .collect();
    let mut mirrored = Mirrored {
        distinct: 0,
        retried_twice: 0,
        unacknowledged_copies: 0,
    };
    for (p, records_a) in in_a {
        let empty = Vec::new();
        let records_b = in_b.get(p).unwrap_or(&empty);
        let values = |records: &Vec<StoredRecord>| -> Vec<Vec<u8>> {
            records
                .iter()
                .filter_map(|r| r.value.clone())
                .filter(|v| live_values.contains(v))
                .collect()
        };
        let (from_a, from_b) = (values(records_a), values(records_b));
        let mut retried = Vec::new();
        for (name, records) in [("A", records_a), ("B", records_b)] {
            let (resent, twice): (Vec<_>, Vec<_>) = stored_twice(records, &live_values)
                .into_iter()
                .partition(|(id, _)| at_least_once(id.split('#').next().unwrap_or_default()));
            if name == "A" {
                mirrored.retried_twice += resent.len();
                if !resent.is_empty() {
                    eprintln!("{topic}-{p}: non-idempotent records A stores twice: {resent:?}");
                }
                retried = resent;
            }
            if twice.is_empty() {
                continue;
            }
            // Where the other cluster holds them, and where the producer
            // was told each landed.
            let other = if name == "A" { records_b } else { records_a };
            let elsewhere: Vec<(String, Vec<i64>)> = twice
                .iter()
                .map(|(id, _)| {
                    let at = other
                        .iter()
                        .filter(|r| r.value.as_deref().map(record_id).as_deref() == Some(id))
                        .map(|r| r.offset)
                        .collect();
                    (id.clone(), at)
                })
                .collect();
            let acked: Vec<&RecordRef> = live
                .iter()
                .filter(|r| {
                    twice
                        .iter()
                        .any(|(id, _)| *id == format!("{}#{}", r.key, r.seq))
                })
                .collect();
            panic!(
                "{topic}-{p}: {name} stores records of an idempotent producer twice: {twice:?}; \
                 the other cluster holds them at {elsewhere:?}; acknowledged as {acked:?}"
            );
        }
        // B holds A's records in A's order, but for copies A stored and
        // never acknowledged (the answer was lost, the client resent): the
        // proxy mirrors what A acknowledged, so B holds only the resent one.
        let mut b_next = from_b.iter().peekable();
        let mut unacknowledged = Vec::new();
        for v in &from_a {
            if b_next.peek() == Some(&v) {
                b_next.next();
            } else {
                unacknowledged.push(record_id(v));
            }
        }
        let b_extra: Vec<String> = b_next.map(|v| record_id(v)).collect();
        let not_resent: Vec<&String> = unacknowledged
            .iter()
            .filter(|id| !retried.iter().any(|(r, _)| r == *id))
            .collect();
        assert!(
            b_extra.is_empty() && not_resent.is_empty(),
            "{topic}-{p}: A and B differ in content or order ({} live records in A, {} in B): \
             A's order leaves B's {b_extra:?} unmatched; A holds {not_resent:?} where B does not",
            from_a.len(),
            from_b.len()
        );
        mirrored.unacknowledged_copies += unacknowledged.len();
        mirrored.distinct += from_b.iter().collect::<HashSet<_>>().len();
    }
    let stored: HashSet<&Vec<u8>> = in_b
        .values()
        .flatten()
        .filter_map(|r| r.value.as_ref())
        .collect();
    for r in live {
        let value = workload::record_value(&r.key, r.seq).into_bytes();
        assert!(
            stored.contains(&value),
            "{}#{} acknowledged but not in B",
            r.key,
            r.seq
        );
    }
    mirrored
}

//! What the demo found: the integrity report, its verdict and how it is printed.

use std::collections::HashMap;

use serde::Serialize;

use super::workload::{self, IntegrityReport, RecordRef, StoredIndex};
use super::{PAUSE, ROUND};

#[derive(Debug, Serialize)]
pub struct DemoReport {
    pub clusters: ClusterKind,
    pub topic: String,
    pub group: String,
    /// Records the producers were asked to send, all of them together.
    pub records: usize,
    pub producers: usize,
    /// Records acknowledged before the flip started, while it ran, and
    /// after it finished.
    pub acknowledged_before_flip: usize,
    pub acknowledged_during_flip: usize,
    pub acknowledged_after_flip: usize,
    pub flip: crate::cutover::flip::FlipReport,
    /// The cluster clients were served by at the end.
    pub ended_on: crate::config::ClusterName,
    /// How long producers waited for acknowledgements: over the whole run,
    /// while clients were connecting, for records waiting at some moment
    /// between the flip's start and the producers' recovery, and for the
    /// rest.
    pub ack_wait: workload::AckStalls,
    /// Milliseconds from the flip's end until every producer had a record
    /// sent after the flip acknowledged.
    pub recovered_ms: f64,
    pub mirror: MirrorCheck,
    /// Seconds from the first record sent to the last acknowledged.
    pub traffic_seconds: f64,
    /// Seconds the consumer needed after the last acknowledgement to have
    /// read everything.
    pub consume_tail_seconds: f64,
    pub brokers_seen_by_clients: Vec<String>,
    pub real_brokers_leaked: usize,
    pub integrity: IntegrityReport,
    /// The duplicates, by cause: the same stored record read again (the
    /// group moved before committing it), and a second copy of a record
    /// stored at another offset (a client retried a write that had
    /// landed).
    pub duplicates: Duplicates,
    /// What the demo created on existing clusters and could not delete.
    pub left_behind: Vec<String>,
}

/// Where the demo ran.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum ClusterKind {
    /// Two librdkafka mock clusters in this process.
    InProcess,
    /// Two clusters the user named, reached over the network.
    Existing,
}

#[derive(Debug, Default, Serialize)]
pub struct Duplicates {
    pub read_again: usize,
    pub stored_twice: usize,
}

impl Duplicates {
    /// Splits the duplicates by where they were read: a second read at the
    /// same partition and offset is the same copy read again. Right only
    /// when every record was read from clusters that agree on offsets.
    pub fn of(consumed: &[RecordRef]) -> Duplicates {
        let mut positions = std::collections::HashSet::new();
        let mut copies: HashMap<(&str, u64), usize> = HashMap::new();
        let mut duplicates = Duplicates::default();
        for r in consumed {
            if !positions.insert((r.partition, r.offset)) {
                duplicates.read_again += 1;
            } else {
                let n = copies.entry((r.key.as_str(), r.seq)).or_insert(0);
                *n += 1;
                if *n > 1 {
                    duplicates.stored_twice += 1;
                }
            }
        }
        duplicates
    }

    /// Splits the duplicates by how many copies of each record its
    /// partition holds in `stored`. For a group that moved between clusters
    /// whose offsets for the same record differ, where `of` would take a
    /// record read again for a second copy.
    pub fn by_stored_copies(consumed: &[RecordRef], stored: &StoredIndex) -> Duplicates {
        let mut reads: HashMap<(i32, &str, u64), usize> = HashMap::new();
        for r in consumed {
            *reads
                .entry((r.partition, r.key.as_str(), r.seq))
                .or_default() += 1;
        }
        let mut duplicates = Duplicates::default();
        for ((partition, key, seq), reads) in reads {
            // The group reads every copy its partition holds; reads beyond
            // the copies are a copy read again.
            let copies = stored.copies(partition, key, seq).clamp(1, reads);
            duplicates.stored_twice += copies - 1;
            duplicates.read_again += reads - copies;
        }
        duplicates
    }
}

impl DemoReport {
    /// Why the demo failed; empty when it passed. Duplicates are not among
    /// the reasons: a consumer group re-reads what it had read but not yet
    /// committed when it moves (at-least-once), a write the client retried
    /// after it had landed is stored twice by the in-process cluster, and
    /// the report counts both. Leaving a topic or group behind on someone's
    /// clusters is.
    pub fn failures(&self) -> Vec<String> {
        use crate::cutover::flip::Outcome;
        let i = &self.integrity;
        let mut failures = Vec::new();
        if i.lost > 0 {
            failures.push(format!(
                "{} acknowledged records were never consumed",
                i.lost
            ));
        }
        if i.order_violations > 0 {
            failures.push(format!(
                "{} records consumed out of order",
                i.order_violations
            ));
        }
        if i.acknowledged < self.records {
            failures.push(format!(
                "{} of {} records were not acknowledged",
                self.records - i.acknowledged,
                self.records
            ));
        }
        if self.flip.outcome != Outcome::Flipped {
            failures.push(format!(
                "the flip did not happen ({:?}): {}",
                self.flip.outcome,
                self.flip.reasons.join("; ")
            ));
        } else if self.acknowledged_after_flip == 0 {
            failures.push("no record was acknowledged after the flip".into());
        }
        if self.ended_on != self.flip.to {
            failures.push(format!("clients ended on cluster {}", self.ended_on));
        }
        if !self.mirror.identical {
            failures.push("cluster B does not hold exactly what cluster A holds".into());
        }
        if self.real_brokers_leaked > 0 {
            failures.push(format!(
                "clients saw {} real broker addresses",
                self.real_brokers_leaked
            ));
        }
        for thing in &self.left_behind {
            failures.push(format!("left behind: {thing}"));
        }
        failures
    }

    pub fn passed(&self) -> bool {
        self.failures().is_empty()
    }
}

/// What the two clusters hold at the end, read straight from each.
#[derive(Debug, Default, Serialize)]
pub struct MirrorCheck {
    pub records_in_a: usize,
    pub records_in_b: usize,
    /// Records written to A by clients and mirrored into B.
    pub written_to_a: usize,
    /// Records written to B by clients (after the flip) and mirrored back
    /// into A.
    pub written_to_b: usize,
    /// Both clusters hold the same records byte-equal in the same order,
    /// and every record's offset in one maps to its offset in the other
    /// through the mirror that copied it.
    pub identical: bool,
}

pub fn print_report(report: &DemoReport) {
    let i = &report.integrity;
    let f = &report.flip;
    let w = &report.ack_wait;
    let m = &report.mirror;
    println!();
    println!("integrity report");
    println!(
        "  traffic               {} idempotent producers ({}-record rounds, {} ms apart), \
         consumer group {}, sync mirroring",
        report.producers,
        ROUND,
        PAUSE.as_millis(),
        report.group
    );
    println!("  records produced      {}", report.records);
    println!(
        "  acknowledged          {} ({} before the flip, {} during it, {} after it)",
        i.acknowledged,
        report.acknowledged_before_flip,
        report.acknowledged_during_flip,
        report.acknowledged_after_flip
    );
    println!("  consumed              {}", i.consumed);
    println!("  lost                  {}", i.lost);
    println!(
        "  duplicates            {} ({} read again after the group moved, {} stored twice)",
        i.duplicates, report.duplicates.read_again, report.duplicates.stored_twice
    );
    if report.duplicates.stored_twice > 0 {
        match report.clusters {
            ClusterKind::InProcess => println!(
                "    stored twice        a client retried a write that had landed; the in-process \
                 cluster does not deduplicate idempotent producers"
            ),
            ClusterKind::Existing => println!(
                "    stored twice        a client retried a write that had landed, and the \
                 cluster kept both copies"
            ),
        }
    }
    println!(
        "  order violations      {} (per key {}, per partition {})",
        i.order_violations, i.key_order_violations, i.partition_order_violations
    );
    let outcome = match f.outcome {
        crate::cutover::flip::Outcome::Flipped => "flipped",
        crate::cutover::flip::Outcome::Refused => "REFUSED",
        crate::cutover::flip::Outcome::Aborted => "ABORTED",
    };
    println!(
        "  flip                  {outcome} {} -> {} in {} ms (Produce and joins held {} ms)",
        f.from, f.to, f.duration_ms, f.fenced_ms
    );
    if !f.steps.is_empty() {
        let steps: Vec<String> = f
            .steps
            .iter()
            .map(|s| format!("{} {} ms", s.step, s.ms))
            .collect();
        println!("    steps               {}", steps.join(", "));
    }
    for reason in &f.reasons {
        println!("    reason              {reason}");
    }
    println!(
        "  producers recovered   {:.0} ms after the flip ended (each had a record sent after \
         it acknowledged)",
        report.recovered_ms
    );
    let stats = |s: &workload::AckStats| {
        format!(
            "max {:.0} ms, p99 {:.0} ms, p50 {:.1} ms over {} records",
            s.max_ms, s.p99_ms, s.p50_ms, s.records
        )
    };
    println!("  producer ack wait     {}", stats(&w.all));
    println!(
        "    in the flip         {} (waiting between the flip's start and the producers' \
         recovery)",
        stats(&w.during)
    );
    println!("    the rest            {}", stats(&w.outside));
    println!(
        "    warm-up             {} (first round of each producer, while connecting)",
        stats(&w.warm_up)
    );
    println!("  clients ended on      cluster {}", report.ended_on);
    println!(
        "  records in A / B      {} / {} ({} written to A and mirrored to B, {} written to B \
         and mirrored back to A)",
        m.records_in_a, m.records_in_b, m.written_to_a, m.written_to_b
    );
    println!(
        "  B identical to A      {} (byte-equal, same order, every offset translated)",
        if m.identical { "yes" } else { "NO" }
    );
    println!(
        "  traffic time          {:.2} s (consumer done {:.2} s after the last acknowledgement)",
        report.traffic_seconds, report.consume_tail_seconds
    );
    println!(
        "  brokers clients saw   {} (real brokers among them: {})",
        report.brokers_seen_by_clients.join(", "),
        report.real_brokers_leaked
    );
    for thing in &report.left_behind {
        println!("  left behind           {thing}");
    }
    let failures = report.failures();
    if failures.is_empty() {
        println!("  verdict               PASS");
    } else {
        println!("  verdict               FAIL");
        for failure in failures {
            println!("    {failure}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ClusterName;
    use crate::cutover::flip::{Direction, FlipReport, Outcome};

    fn passing() -> DemoReport {
        DemoReport {
            clusters: ClusterKind::InProcess,
            topic: "orders".into(),
            group: "demo-group".into(),
            records: 100,
            producers: 2,
            acknowledged_before_flip: 50,
            acknowledged_during_flip: 0,
            acknowledged_after_flip: 50,
            flip: FlipReport {
                direction: Direction::Flip,
                from: ClusterName::A,
                to: ClusterName::B,
                outcome: Outcome::Flipped,
                forced: false,
                reasons: Vec::new(),
                steps: Vec::new(),
                groups: Vec::new(),
                duration_ms: 100,
                fenced_ms: 90,
            },
            ended_on: ClusterName::B,
            ack_wait: Default::default(),
            recovered_ms: 0.0,
            mirror: MirrorCheck {
                identical: true,
                ..MirrorCheck::default()
            },
            traffic_seconds: 1.0,
            consume_tail_seconds: 0.1,
            brokers_seen_by_clients: Vec::new(),
            real_brokers_leaked: 0,
            duplicates: Duplicates {
                read_again: 4,
                stored_twice: 0,
            },
            integrity: IntegrityReport {
                acknowledged: 100,
                consumed: 104,
                duplicates: 4,
                ..IntegrityReport::default()
            },
            left_behind: Vec::new(),
        }
    }

    /// A partition as a cluster stores it: (key, seq) at consecutive
    /// offsets from `first_offset`.
    fn stored(
        partition: i32,
        first_offset: i64,
        records: &[(&str, u64)],
    ) -> std::collections::BTreeMap<i32, Vec<workload::StoredRecord>> {
        let records = records
            .iter()
            .zip(first_offset..)
            .map(|(&(key, seq), offset)| workload::StoredRecord {
                offset,
                key: Some(key.as_bytes().to_vec()),
                value: Some(workload::record_value(key, seq).into_bytes()),
                headers: Vec::new(),
                timestamp: None,
            })
            .collect();
        [(partition, records)].into()
    }

    fn r(key: &str, seq: u64, partition: i32, offset: i64) -> RecordRef {
        RecordRef {
            key: key.into(),
            seq,
            partition,
            offset,
        }
    }

    #[test]
    fn duplicates_are_told_apart_by_the_copies_stored() {
        let in_b = StoredIndex::of(&stored(0, 0, &[("k", 0), ("k", 1), ("k", 1), ("k", 2)]));
        let consumed = [
            r("k", 0, 0, 0),
            r("k", 1, 0, 1),
            r("k", 1, 0, 1), // the same record read again
            r("k", 1, 0, 2), // the second copy
            r("k", 2, 0, 3),
        ];
        let d = Duplicates::by_stored_copies(&consumed, &in_b);
        assert_eq!((d.read_again, d.stored_twice), (1, 1));
        let d = Duplicates::of(&consumed);
        assert_eq!((d.read_again, d.stored_twice), (1, 1), "offsets agree here");
    }

    #[test]
    fn a_record_read_again_from_the_other_cluster_is_read_again_not_stored_twice() {
        // A's log had started earlier: the record read at offset 1 in A
        // before the group moved is at offset 0 in B, where it was read
        // again because the commit had not landed.
        let in_b = StoredIndex::of(&stored(0, 0, &[("k", 0), ("k", 1)]));
        let consumed = [r("k", 0, 0, 1), r("k", 0, 0, 0), r("k", 1, 0, 1)];
        let d = Duplicates::by_stored_copies(&consumed, &in_b);
        assert_eq!((d.read_again, d.stored_twice), (1, 0));
    }

    #[test]
    fn leaving_a_topic_behind_fails_the_demo() {
        let mut report = passing();
        report.clusters = ClusterKind::Existing;
        report.left_behind = vec!["topic switchyard-demo-1 in B (timed out)".into()];
        let failures = report.failures();
        assert_eq!(failures.len(), 1, "{failures:?}");
        assert!(failures[0].contains("switchyard-demo-1 in B"));
    }

    #[test]
    fn duplicates_alone_pass_loss_reordering_or_no_flip_fail() {
        let report = passing();
        assert!(report.passed(), "{:?}", report.failures());

        let mut lost = passing();
        lost.integrity.lost = 1;
        assert!(!lost.passed());

        let mut reordered = passing();
        reordered.integrity.order_violations = 1;
        assert!(!reordered.passed());

        let mut refused = passing();
        refused.flip.outcome = Outcome::Refused;
        refused.ended_on = ClusterName::A;
        let failures = refused.failures();
        assert_eq!(failures.len(), 2, "{failures:?}");
        assert!(failures[0].contains("flip did not happen"));
    }
}

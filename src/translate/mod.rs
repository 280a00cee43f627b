//! Offset translation: per partition, the segments `(a_start, b_start, len)`
//! that the mirror has proven hold the same records in both clusters.
//!
//! "a" is the cluster a record was first written to, "b" the mirror. A
//! lookup never moves a reader forward past a record it has not seen: an
//! offset inside a gap translates to the start of the next segment, and an
//! offset before the first mirrored record is not translatable.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{self, BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::Serialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Segment {
    pub a_start: i64,
    pub b_start: i64,
    pub len: i64,
}

impl Segment {
    fn a_end(&self) -> i64 {
        self.a_start + self.len
    }
    fn b_end(&self) -> i64 {
        self.b_start + self.len
    }
}

/// The segments of one partition, sorted by `a_start`, adjacent ones merged.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PartitionSegments {
    segments: Vec<Segment>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Translated {
    /// The same record, or (inside a gap) the next mirrored record.
    Offset(i64),
    /// Before the first mirrored record: nothing to translate to.
    BeforeFirst,
    /// At or past the last mirrored record: the end of the mirrored range.
    End(i64),
}

impl PartitionSegments {
    pub fn add(&mut self, segment: Segment) {
        if segment.len <= 0 {
            return;
        }
        let at = self
            .segments
            .partition_point(|s| s.a_start <= segment.a_start);
        if at > 0 && segment.a_start < self.segments[at - 1].a_end() {
            return; // already known: a retried batch
        }
        self.segments.insert(at, segment);
        let continues = |left: &Segment, right: &Segment| {
            left.a_end() == right.a_start && left.b_end() == right.b_start
        };
        if at + 1 < self.segments.len() && continues(&self.segments[at], &self.segments[at + 1]) {
            self.segments[at].len += self.segments[at + 1].len;
            self.segments.remove(at + 1);
        }
        if at > 0 && continues(&self.segments[at - 1], &self.segments[at]) {
            self.segments[at - 1].len += self.segments[at].len;
            self.segments.remove(at);
        }
    }

    /// Whether `offset` (in "a") is covered by a mirrored segment.
    pub fn contains_a(&self, offset: i64) -> bool {
        let at = self.segments.partition_point(|s| s.a_start <= offset);
        at > 0 && offset < self.segments[at - 1].a_end()
    }

    pub fn segments(&self) -> &[Segment] {
        &self.segments
    }

    pub fn first_a(&self) -> Option<i64> {
        self.segments.first().map(|s| s.a_start)
    }

    pub fn end_a(&self) -> Option<i64> {
        self.segments.last().map(Segment::a_end)
    }

    /// Whether `offset` (in "b") is covered by a mirrored segment.
    pub fn contains_b(&self, offset: i64) -> bool {
        self.segments
            .iter()
            .any(|s| s.b_start <= offset && offset < s.b_end())
    }

    /// Whether every offset of `from..to` (in "b") is covered.
    pub fn covers_b(&self, from: i64, to: i64) -> bool {
        let mut by_b: Vec<&Segment> = self.segments.iter().collect();
        by_b.sort_by_key(|s| s.b_start);
        let mut next = from;
        for s in by_b {
            if next >= to {
                break;
            }
            if s.b_start <= next && next < s.b_end() {
                next = s.b_end();
            }
        }
        next >= to
    }

    /// One past the last mirrored offset in "b".
    pub fn end_b(&self) -> Option<i64> {
        self.segments.iter().map(Segment::b_end).max()
    }

    pub fn a_to_b(&self, offset: i64) -> Translated {
        translate(&self.segments, offset, |s| (s.a_start, s.b_start))
    }

    pub fn b_to_a(&self, offset: i64) -> Translated {
        let mut by_b = self.segments.clone();
        by_b.sort_by_key(|s| s.b_start);
        translate(&by_b, offset, |s| (s.b_start, s.a_start))
    }
}

fn translate(sorted: &[Segment], offset: i64, key: impl Fn(&Segment) -> (i64, i64)) -> Translated {
    let Some(first) = sorted.first() else {
        return Translated::BeforeFirst;
    };
    if offset < key(first).0 {
        return Translated::BeforeFirst;
    }
    let at = sorted.partition_point(|s| key(s).0 <= offset);
    let segment = &sorted[at - 1];
    let (from, to) = key(segment);
    if offset < from + segment.len {
        return Translated::Offset(to + (offset - from));
    }
    match sorted.get(at) {
        Some(next) => Translated::Offset(key(next).1),
        None => Translated::End(to + segment.len),
    }
}

/// Every partition's segments, persisted in an append-only log.
pub struct TranslationTable {
    partitions: Mutex<BTreeMap<(String, i32), PartitionSegments>>,
    log: Mutex<Option<File>>,
    path: PathBuf,
}

impl TranslationTable {
    /// Opens (or creates) the log in `dir`, replaying what it holds.
    pub fn open(dir: &Path, name: &str) -> io::Result<TranslationTable> {
        let path = dir.join(name);
        let mut partitions: BTreeMap<(String, i32), PartitionSegments> = BTreeMap::new();
        if let Ok(file) = File::open(&path) {
            for line in BufReader::new(file).lines() {
                let line = line?;
                let fields: Vec<&str> = line.split('\t').collect();
                // A torn last line (crash mid-write) is skipped.
                let [topic, partition, a, b, len] = fields[..] else {
                    continue;
                };
                let (Ok(partition), Ok(a_start), Ok(b_start), Ok(len)) =
                    (partition.parse(), a.parse(), b.parse(), len.parse())
                else {
                    continue;
                };
                partitions
                    .entry((topic.to_owned(), partition))
                    .or_default()
                    .add(Segment {
                        a_start,
                        b_start,
                        len,
                    });
            }
        }
        let mut file = OpenOptions::new().create(true).append(true).open(&path)?;
        // A torn last line must not swallow the next one.
        let ends_cleanly = std::fs::read(&path).map(|b| b.last().is_none_or(|&c| c == b'\n'))?;
        if !ends_cleanly {
            file.write_all(b"\n")?;
        }
        Ok(TranslationTable {
            partitions: Mutex::new(partitions),
            log: Mutex::new(Some(file)),
            path,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn add(&self, topic: &str, partition: i32, segment: Segment) -> io::Result<()> {
        self.partitions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry((topic.to_owned(), partition))
            .or_default()
            .add(segment);
        let mut log = self.log.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(file) = log.as_mut() {
            // One write per line, so a crash leaves at most one torn line.
            let line = format!(
                "{topic}\t{partition}\t{}\t{}\t{}\n",
                segment.a_start, segment.b_start, segment.len
            );
            file.write_all(line.as_bytes())?;
        }
        Ok(())
    }

    /// Makes every added segment durable.
    pub fn sync(&self) -> io::Result<()> {
        let log = self.log.lock().unwrap_or_else(|p| p.into_inner());
        match log.as_ref() {
            Some(file) => file.sync_data(),
            None => Ok(()),
        }
    }

    pub fn partition(&self, topic: &str, partition: i32) -> Option<PartitionSegments> {
        self.partitions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&(topic.to_owned(), partition))
            .cloned()
    }

    pub fn snapshot(&self) -> BTreeMap<(String, i32), PartitionSegments> {
        self.partitions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn seg(a_start: i64, b_start: i64, len: i64) -> Segment {
        Segment {
            a_start,
            b_start,
            len,
        }
    }

    #[test]
    fn coverage_in_b() {
        let mut p = PartitionSegments::default();
        p.add(Segment {
            a_start: 0,
            b_start: 10,
            len: 5,
        });
        p.add(Segment {
            a_start: 7,
            b_start: 15,
            len: 5,
        });
        assert!(p.covers_b(10, 20));
        assert!(p.covers_b(12, 13));
        assert!(!p.covers_b(9, 12));
        assert!(!p.covers_b(18, 21));
        assert!(p.contains_b(19) && !p.contains_b(20) && !p.contains_b(9));
    }

    #[test]
    fn adjacent_segments_merge_and_lookups_go_both_ways() {
        let mut p = PartitionSegments::default();
        p.add(seg(100, 0, 10));
        p.add(seg(110, 10, 5));
        p.add(seg(120, 15, 5)); // A gap 115..120 (records not via the proxy)
        assert_eq!(p.segments(), &[seg(100, 0, 15), seg(120, 15, 5)]);
        assert_eq!(p.a_to_b(99), Translated::BeforeFirst);
        assert_eq!(p.a_to_b(100), Translated::Offset(0));
        assert_eq!(p.a_to_b(114), Translated::Offset(14));
        assert_eq!(
            p.a_to_b(117),
            Translated::Offset(15),
            "gap: next mirrored record"
        );
        assert_eq!(p.a_to_b(124), Translated::Offset(19));
        assert_eq!(p.a_to_b(125), Translated::End(20));
        assert_eq!(p.b_to_a(14), Translated::Offset(114));
        assert_eq!(p.b_to_a(15), Translated::Offset(120));
        assert_eq!(p.b_to_a(20), Translated::End(125));
    }

    #[test]
    fn a_retried_batch_adds_nothing() {
        let mut p = PartitionSegments::default();
        p.add(seg(0, 0, 3));
        p.add(seg(0, 0, 3));
        p.add(seg(3, 3, 2));
        p.add(seg(3, 3, 2));
        assert_eq!(p.segments(), &[seg(0, 0, 5)]);
    }

    #[test]
    fn table_survives_reopening() {
        let dir = tempfile::tempdir().unwrap();
        {
            let table = TranslationTable::open(dir.path(), "t.log").unwrap();
            table.add("orders", 2, seg(10, 0, 4)).unwrap();
            table.add("orders", 2, seg(14, 4, 4)).unwrap();
            table.add("orders", 3, seg(0, 7, 1)).unwrap();
            table.sync().unwrap();
        }
        // A torn line at the end is ignored.
        std::fs::OpenOptions::new()
            .append(true)
            .open(dir.path().join("t.log"))
            .unwrap()
            .write_all(b"orders\t2\t18")
            .unwrap();
        let table = TranslationTable::open(dir.path(), "t.log").unwrap();
        assert_eq!(
            table.partition("orders", 2).unwrap().segments(),
            &[seg(10, 0, 8)]
        );
        assert_eq!(
            table.partition("orders", 3).unwrap().a_to_b(0),
            Translated::Offset(7)
        );
    }

    proptest! {
        #[test]
        fn translation_is_monotonic_and_never_skips_forward(
            lens in proptest::collection::vec((1i64..20, 0i64..5), 1..30),
            probe in 0i64..1000,
        ) {
            let mut p = PartitionSegments::default();
            let (mut a, mut b) = (50i64, 0i64);
            let mut added = Vec::new();
            for (len, gap) in lens {
                a += gap; // records in A that never reached B
                p.add(seg(a, b, len));
                added.push(seg(a, b, len));
                a += len;
                b += len;
            }
            // Every mirrored record maps to itself in B and back.
            for s in &added {
                for i in 0..s.len {
                    prop_assert_eq!(p.a_to_b(s.a_start + i), Translated::Offset(s.b_start + i));
                    prop_assert_eq!(p.b_to_a(s.b_start + i), Translated::Offset(s.a_start + i));
                }
            }
            // Translation never lands past the record the offset names.
            if let (Translated::Offset(x), Translated::Offset(y)) = (p.a_to_b(probe), p.a_to_b(probe + 1)) {
                prop_assert!(x <= y);
            }
        }
    }
}

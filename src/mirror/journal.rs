//! The async mirror's journal: batches the primary acknowledged are made
//! durable here before the client hears so, and replayed after a restart
//! until the mirror cluster has them.
//!
//! One append-only file of entries `[len u32][crc32c u32][payload]`; the
//! payload is `[topic_len u16][topic][partition i32][a_base i64]
//! [batches u32]([len u32][batch])*`. Appends are group-committed (one fsync
//! for all appends waiting). When every entry written has been mirrored and
//! the file is large, it is emptied. A torn tail (crash mid-append) ends the
//! replay; nothing after it was acknowledged.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use bytes::{Buf, BufMut, Bytes, BytesMut};
use tokio::sync::{mpsc, oneshot};

const TRUNCATE_ABOVE: u64 = 4 * 1024 * 1024;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JournalEntry {
    pub topic: String,
    pub partition: i32,
    pub a_base: i64,
    pub batches: Vec<Bytes>,
}

impl JournalEntry {
    fn encode(&self) -> Bytes {
        let mut payload = BytesMut::new();
        payload.put_u16(self.topic.len() as u16);
        payload.put_slice(self.topic.as_bytes());
        payload.put_i32(self.partition);
        payload.put_i64(self.a_base);
        payload.put_u32(self.batches.len() as u32);
        for batch in &self.batches {
            payload.put_u32(batch.len() as u32);
            payload.put_slice(batch);
        }
        let mut out = BytesMut::with_capacity(8 + payload.len());
        out.put_u32(payload.len() as u32);
        out.put_u32(crc32c::crc32c(&payload));
        out.put_slice(&payload);
        out.freeze()
    }

    fn decode(mut payload: Bytes) -> Option<JournalEntry> {
        if payload.remaining() < 2 {
            return None;
        }
        let topic_len = payload.get_u16() as usize;
        if payload.remaining() < topic_len + 16 {
            return None;
        }
        let topic = String::from_utf8(payload.split_to(topic_len).to_vec()).ok()?;
        let partition = payload.get_i32();
        let a_base = payload.get_i64();
        let count = payload.get_u32() as usize;
        let mut batches = Vec::with_capacity(count.min(1024));
        for _ in 0..count {
            if payload.remaining() < 4 {
                return None;
            }
            let len = payload.get_u32() as usize;
            if payload.remaining() < len {
                return None;
            }
            batches.push(payload.split_to(len));
        }
        Some(JournalEntry {
            topic,
            partition,
            a_base,
            batches,
        })
    }
}

/// Reads every whole entry of a journal file.
pub fn replay(path: &Path) -> io::Result<Vec<JournalEntry>> {
    replay_with_length(path).map(|(entries, _)| entries)
}

/// The whole entries and the length of the file they fill.
fn replay_with_length(path: &Path) -> io::Result<(Vec<JournalEntry>, u64)> {
    let mut data = Vec::new();
    match File::open(path) {
        Ok(mut file) => {
            file.read_to_end(&mut data)?;
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok((Vec::new(), 0)),
        Err(e) => return Err(e),
    }
    let mut data = Bytes::from(data);
    let mut entries = Vec::new();
    let mut valid = 0u64;
    while data.remaining() >= 8 {
        let len = u32::from_be_bytes([data[0], data[1], data[2], data[3]]) as usize;
        let crc = u32::from_be_bytes([data[4], data[5], data[6], data[7]]);
        if data.remaining() < 8 + len {
            break;
        }
        let payload = data.slice(8..8 + len);
        if crc32c::crc32c(&payload) != crc {
            break;
        }
        let Some(entry) = JournalEntry::decode(payload) else {
            break;
        };
        entries.push(entry);
        data.advance(8 + len);
        valid += (8 + len) as u64;
    }
    Ok((entries, valid))
}

enum Op {
    Append(Bytes, oneshot::Sender<io::Result<()>>),
    Mirrored,
}

/// Handle to the journal writer task.
#[derive(Clone)]
pub struct Journal {
    ops: mpsc::UnboundedSender<Op>,
    path: PathBuf,
}

impl Journal {
    /// Opens the journal for appending; `outstanding` entries (replayed and
    /// not yet mirrored) keep it from being emptied.
    pub fn open(path: &Path, outstanding: usize) -> io::Result<Journal> {
        let file = OpenOptions::new().create(true).append(true).open(path)?;
        // Cut a torn or corrupt tail, so entries appended from now on are
        // not hidden behind it at the next replay.
        let (_, valid) = replay_with_length(path)?;
        if file.metadata()?.len() > valid {
            tracing::warn!(path = %path.display(), valid, "cutting a torn tail off the mirror journal");
            file.set_len(valid)?;
            file.sync_all()?;
        }
        let (ops, rx) = mpsc::unbounded_channel();
        // A thread of its own: fsync blocks, and must not hold up the
        // runtime threads that serve client connections.
        let writer_path = path.to_owned();
        std::thread::Builder::new()
            .name("mirror-journal".into())
            .spawn(move || write_loop(file, rx, outstanding, writer_path))?;
        Ok(Journal {
            ops,
            path: path.to_owned(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends an entry; resolves once it is on disk.
    pub async fn append(&self, entry: &JournalEntry) -> io::Result<()> {
        let (tx, rx) = oneshot::channel();
        self.ops
            .send(Op::Append(entry.encode(), tx))
            .map_err(|_| io::Error::other("journal writer stopped"))?;
        rx.await
            .unwrap_or_else(|_| Err(io::Error::other("journal writer stopped")))
    }

    /// Tells the journal that one appended entry reached the mirror cluster.
    pub fn mirrored(&self) {
        let _ = self.ops.send(Op::Mirrored);
    }
}

fn write_loop(
    mut file: File,
    mut ops: mpsc::UnboundedReceiver<Op>,
    mut outstanding: usize,
    path: PathBuf,
) {
    while let Some(first) = ops.blocking_recv() {
        let mut waiting = Vec::new();
        let mut pending = vec![first];
        while let Ok(op) = ops.try_recv() {
            pending.push(op);
        }
        let mut failed: Option<io::Error> = None;
        let length_before = file.metadata().map(|m| m.len()).ok();
        for op in pending {
            match op {
                Op::Append(bytes, done) => {
                    if failed.is_none() {
                        if let Err(e) = file.write_all(&bytes) {
                            failed = Some(e);
                        }
                    }
                    outstanding += 1;
                    waiting.push(done);
                }
                Op::Mirrored => outstanding = outstanding.saturating_sub(1),
            }
        }
        if !waiting.is_empty() && failed.is_none() {
            if let Err(e) = file.sync_data() {
                failed = Some(e);
            }
        }
        if failed.is_some() {
            // Nothing of a failed group was acknowledged: remove what it
            // may have left, so later entries do not sit behind garbage.
            if let Some(length) = length_before {
                let _ = file.set_len(length);
            }
        }
        for done in waiting {
            let _ = done.send(match &failed {
                None => Ok(()),
                Some(e) => Err(io::Error::new(e.kind(), e.to_string())),
            });
        }
        if outstanding == 0 && file.metadata().map(|m| m.len()).unwrap_or(0) > TRUNCATE_ABOVE {
            match file.set_len(0).and_then(|_| file.sync_all()) {
                Ok(()) => tracing::debug!(path = %path.display(), "mirror journal emptied"),
                Err(e) => {
                    tracing::error!(path = %path.display(), error = %e, "cannot empty the mirror journal")
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(n: i64) -> JournalEntry {
        JournalEntry {
            topic: "orders".into(),
            partition: (n % 3) as i32,
            a_base: n * 10,
            batches: vec![
                Bytes::from(vec![n as u8; 70]),
                Bytes::from_static(b"second"),
            ],
        }
    }

    #[tokio::test]
    async fn appended_entries_replay_and_a_torn_tail_is_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("journal");
        let journal = Journal::open(&path, 0).unwrap();
        for n in 0..20 {
            journal.append(&entry(n)).await.unwrap();
        }
        let mut file = OpenOptions::new().append(true).open(&path).unwrap();
        let torn = entry(99).encode();
        file.write_all(&torn[..torn.len() - 3]).unwrap();
        let replayed = replay(&path).unwrap();
        assert_eq!(replayed, (0..20).map(entry).collect::<Vec<_>>());
        drop(journal);
        // Reopening cuts the torn tail: later appends replay too.
        let journal = Journal::open(&path, 0).unwrap();
        journal.append(&entry(20)).await.unwrap();
        assert_eq!(
            replay(&path).unwrap(),
            (0..21).map(entry).collect::<Vec<_>>()
        );
    }

    #[test]
    fn a_corrupt_entry_ends_the_replay() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("journal");
        let mut bytes = entry(1).encode().to_vec();
        bytes.extend_from_slice(&entry(2).encode());
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        std::fs::write(&path, bytes).unwrap();
        assert_eq!(replay(&path).unwrap(), vec![entry(1)]);
    }
}

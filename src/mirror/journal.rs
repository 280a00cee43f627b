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
    let mut entries = Vec::new();
    scan(path, |_, entry| entries.push(entry))?;
    Ok(entries)
}

/// The entry that starts at `at` (a position `append` returned), read
/// back when its batches were let go from memory.
pub fn read_at(path: &Path, at: u64) -> io::Result<JournalEntry> {
    use std::io::{Seek, SeekFrom};
    let mut file = File::open(path)?;
    file.seek(SeekFrom::Start(at))?;
    let mut head = [0u8; 8];
    file.read_exact(&mut head)?;
    let len = u32::from_be_bytes([head[0], head[1], head[2], head[3]]) as u64;
    let crc = u32::from_be_bytes([head[4], head[5], head[6], head[7]]);
    let corrupt = || {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("mirror journal {}: no whole entry at {at}", path.display()),
        )
    };
    if at + 8 + len > file.metadata()?.len() {
        return Err(corrupt());
    }
    let mut payload = vec![0u8; len as usize];
    file.read_exact(&mut payload)?;
    if crc32c::crc32c(&payload) != crc {
        return Err(corrupt());
    }
    JournalEntry::decode(Bytes::from(payload)).ok_or_else(corrupt)
}

/// Hands every whole entry, with the position it starts at, to `visit`,
/// one at a time (a journal may be far larger than memory); returns the
/// length the whole entries fill. A torn or corrupt entry ends the scan.
pub fn scan(path: &Path, mut visit: impl FnMut(u64, JournalEntry)) -> io::Result<u64> {
    let file = match File::open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(e),
    };
    let length = file.metadata()?.len();
    let mut reader = io::BufReader::new(file);
    let mut valid = 0u64;
    let mut head = [0u8; 8];
    while length - valid >= 8 {
        reader.read_exact(&mut head)?;
        let len = u32::from_be_bytes([head[0], head[1], head[2], head[3]]) as u64;
        let crc = u32::from_be_bytes([head[4], head[5], head[6], head[7]]);
        if length - valid - 8 < len {
            break;
        }
        let mut payload = vec![0u8; len as usize];
        reader.read_exact(&mut payload)?;
        if crc32c::crc32c(&payload) != crc {
            break;
        }
        let Some(entry) = JournalEntry::decode(Bytes::from(payload)) else {
            break;
        };
        visit(valid, entry);
        valid += 8 + len;
    }
    Ok(valid)
}

enum Op {
    Append(Bytes, oneshot::Sender<io::Result<u64>>),
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
        let valid = scan(path, |_, _| {})?;
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

    /// Appends an entry; resolves once it is on disk, with the position it
    /// starts at (for `read_at`).
    pub async fn append(&self, entry: &JournalEntry) -> io::Result<u64> {
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
        if length_before.is_none() {
            // Without the length, no entry's position could be told.
            failed = Some(io::Error::other("cannot read the mirror journal's length"));
        }
        let mut position = length_before.unwrap_or(0);
        for op in pending {
            match op {
                Op::Append(bytes, done) => {
                    if failed.is_none() {
                        if let Err(e) = file.write_all(&bytes) {
                            failed = Some(e);
                        }
                    }
                    outstanding += 1;
                    waiting.push((position, done));
                    position += bytes.len() as u64;
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
        for (at, done) in waiting {
            let _ = done.send(match &failed {
                None => Ok(at),
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

    #[tokio::test]
    async fn an_entry_is_read_back_where_its_append_said_it_starts() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("journal");
        let journal = Journal::open(&path, 0).unwrap();
        // Appended concurrently: one group commit, positions still exact.
        let appends = (0..12).map(|n| {
            let journal = journal.clone();
            async move { journal.append(&entry(n)).await.unwrap() }
        });
        let positions = futures_join_all(appends).await;
        for (n, at) in positions.iter().enumerate() {
            assert_eq!(read_at(&path, *at).unwrap(), entry(n as i64));
        }
        let mut replayed = Vec::new();
        scan(&path, |at, _| replayed.push(at)).unwrap();
        let mut sorted = positions.clone();
        sorted.sort();
        assert_eq!(replayed, sorted);
        // A position inside an entry is refused, not misread.
        assert!(read_at(&path, positions[0] + 1).is_err());
        assert!(read_at(&path, 1 << 40).is_err());
    }

    async fn futures_join_all<F: std::future::Future<Output = u64> + Send + 'static>(
        futures: impl Iterator<Item = F>,
    ) -> Vec<u64> {
        let handles: Vec<_> = futures.map(tokio::spawn).collect();
        let mut out = Vec::new();
        for h in handles {
            out.push(h.await.unwrap());
        }
        out
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

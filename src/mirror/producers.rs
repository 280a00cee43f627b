//! The producer-id map: which mirror-cluster producer id stands for each
//! client producer, and where each client producer's sequences started on
//! each partition. Persisted, so that after a restart a batch written again
//! carries the same producer id and sequence and the mirror cluster
//! recognises it as a duplicate.
//!
//! The mirror's own producer id for non-idempotent batches is not persisted:
//! its sequences advance with every batch, and a fresh id after a restart is
//! simpler than keeping them durable.
//!
//! A mapping is per client producer id, not per (id, epoch): idempotent
//! producers bump their epoch themselves (Java and librdkafka do, without
//! asking the broker, after UNKNOWN_PRODUCER_ID, OUT_OF_ORDER_SEQUENCE or an
//! expired batch) and start their sequences again at 0. The mirror id then
//! moves to the same higher epoch, which the target accepts with sequence 0,
//! so a bumped producer is never left unmapped.

use std::collections::HashMap;
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

use crate::state::{StateDir, StateError};

type ClientProducer = (i64, i16);

#[derive(Debug, Default, Serialize, Deserialize)]
struct ProducerFile {
    mapped: Vec<MappedProducer>,
    first_sequences: Vec<FirstSequence>,
}

#[derive(Debug, Serialize, Deserialize)]
struct MappedProducer {
    client_id: i64,
    client_epoch: i16,
    mirror_id: i64,
    mirror_epoch: i16,
}

#[derive(Debug, Serialize, Deserialize)]
struct FirstSequence {
    client_id: i64,
    client_epoch: i16,
    topic: String,
    partition: i32,
    sequence: i32,
}

/// The mirror producer standing for a client producer id: `mirror` at
/// `mirror_epoch` stands for the client's `client_epoch`, and each later
/// client epoch for the mirror epoch as far above.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Mapping {
    client_epoch: i16,
    mirror: i64,
    mirror_epoch: i16,
}

impl Mapping {
    fn mirror_for(&self, client_epoch: i16) -> Option<(i64, i16)> {
        let epoch =
            i32::from(self.mirror_epoch) + i32::from(client_epoch) - i32::from(self.client_epoch);
        let epoch = i16::try_from(epoch).ok().filter(|e| *e >= 0)?;
        Some((self.mirror, epoch))
    }

    fn client_for(&self, mirror_epoch: i16) -> Option<i16> {
        let epoch =
            i32::from(self.client_epoch) + i32::from(mirror_epoch) - i32::from(self.mirror_epoch);
        i16::try_from(epoch).ok().filter(|e| *e >= 0)
    }
}

#[derive(Default)]
struct Maps {
    /// By client producer id.
    mapped: HashMap<i64, Mapping>,
    first: HashMap<(ClientProducer, String, i32), i32>,
}

pub struct ProducerMap {
    state: StateDir,
    file: String,
    maps: Mutex<Maps>,
}

/// The file holding the map of mirroring from `source` into `target`.
pub fn file_name(source: crate::config::ClusterName, target: crate::config::ClusterName) -> String {
    format!("mirror-producers-{source}-to-{target}.json")
}

impl ProducerMap {
    pub fn open(state: StateDir, file: String) -> Result<ProducerMap, StateError> {
        let stored: ProducerFile = state.load(&file)?.unwrap_or_default();
        let mut maps = Maps::default();
        for m in stored.mapped {
            maps.mapped.insert(
                m.client_id,
                Mapping {
                    client_epoch: m.client_epoch,
                    mirror: m.mirror_id,
                    mirror_epoch: m.mirror_epoch,
                },
            );
        }
        for f in stored.first_sequences {
            maps.first.insert(
                ((f.client_id, f.client_epoch), f.topic, f.partition),
                f.sequence,
            );
        }
        Ok(ProducerMap {
            state,
            file,
            maps: Mutex::new(maps),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Maps> {
        self.maps.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn persist(&self, maps: &Maps) {
        let file = ProducerFile {
            mapped: maps
                .mapped
                .iter()
                .map(|(&client_id, m)| MappedProducer {
                    client_id,
                    client_epoch: m.client_epoch,
                    mirror_id: m.mirror,
                    mirror_epoch: m.mirror_epoch,
                })
                .collect(),
            first_sequences: maps
                .first
                .iter()
                .map(
                    |(((client_id, client_epoch), topic, partition), &sequence)| FirstSequence {
                        client_id: *client_id,
                        client_epoch: *client_epoch,
                        topic: topic.clone(),
                        partition: *partition,
                        sequence,
                    },
                )
                .collect(),
        };
        if let Err(e) = self.state.store(&self.file, &file) {
            tracing::error!(error = %e, "cannot persist the producer-id map");
        }
    }

    /// The mirror producer (id, epoch) standing for a client's (id, epoch),
    /// whatever epoch the client has bumped to since it was mapped.
    pub fn mapped(&self, client: ClientProducer) -> Option<(i64, i16)> {
        self.lock().mapped.get(&client.0)?.mirror_for(client.1)
    }

    pub fn insert(&self, client: ClientProducer, mirror: (i64, i16)) {
        let mut maps = self.lock();
        maps.mapped.insert(
            client.0,
            Mapping {
                client_epoch: client.1,
                mirror: mirror.0,
                mirror_epoch: mirror.1,
            },
        );
        self.persist(&maps);
    }

    /// Forgets a client producer's mapping (every epoch) and where its
    /// sequences started.
    pub fn remove(&self, client: ClientProducer) {
        let mut maps = self.lock();
        maps.mapped.remove(&client.0);
        maps.first.retain(|(key, _, _), _| key.0 != client.0);
        self.persist(&maps);
    }

    /// Where `client`'s sequences start on this partition; `candidate` (the
    /// sequence of the first batch seen) when not known yet.
    pub fn first_sequence(
        &self,
        client: ClientProducer,
        topic: &str,
        partition: i32,
        candidate: i32,
    ) -> i32 {
        let mut maps = self.lock();
        let key = (client, topic.to_owned(), partition);
        if let Some(&first) = maps.first.get(&key) {
            return first;
        }
        maps.first.insert(key, candidate);
        self.persist(&maps);
        candidate
    }

    /// The client producer a mirror producer stands for: the inverse of
    /// [`ProducerMap::mapped`].
    pub fn client_for(&self, mirror: (i64, i16)) -> Option<ClientProducer> {
        self.lock()
            .mapped
            .iter()
            .find(|(_, m)| m.mirror == mirror.0)
            .and_then(|(&client, m)| Some((client, m.client_for(mirror.1)?)))
    }

    /// Whether a client producer with this id (any epoch) is mapped.
    pub fn has_client_id(&self, id: i64) -> bool {
        self.lock().mapped.contains_key(&id)
    }

    /// Where `client`'s sequences started on this partition, if known.
    pub fn known_first_sequence(
        &self,
        client: ClientProducer,
        topic: &str,
        partition: i32,
    ) -> Option<i32> {
        self.lock()
            .first
            .get(&(client, topic.to_owned(), partition))
            .copied()
    }

    pub fn len(&self) -> usize {
        self.lock().mapped.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mappings_and_first_sequences_survive_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let open =
            || ProducerMap::open(StateDir::open(dir.path()).unwrap(), "p.json".into()).unwrap();
        {
            let map = open();
            map.insert((7, 0), (9000, 0));
            assert_eq!(map.first_sequence((7, 0), "orders", 1, 40), 40);
            assert_eq!(map.first_sequence((7, 0), "orders", 1, 99), 40);
        }
        let map = open();
        assert_eq!(map.mapped((7, 0)), Some((9000, 0)));
        assert_eq!(map.first_sequence((7, 0), "orders", 1, 5), 40);
        map.remove((7, 0));
        let map = open();
        assert_eq!(map.mapped((7, 0)), None);
        assert_eq!(map.first_sequence((7, 0), "orders", 1, 5), 5);
    }

    #[test]
    fn a_producer_that_bumps_its_own_epoch_stays_mapped() {
        let dir = tempfile::tempdir().unwrap();
        let map = ProducerMap::open(StateDir::open(dir.path()).unwrap(), "p.json".into()).unwrap();
        map.insert((7, 3), (9000, 0));
        assert_eq!(map.mapped((7, 3)), Some((9000, 0)));
        assert_eq!(map.mapped((7, 4)), Some((9000, 1)), "bumped once");
        assert_eq!(map.mapped((7, 6)), Some((9000, 3)));
        assert_eq!(
            map.mapped((7, 2)),
            None,
            "an epoch below the mapping has no mirror epoch"
        );
        assert_eq!(map.client_for((9000, 1)), Some((7, 4)));
        // Sequences restart at 0 in the new epoch.
        assert_eq!(map.first_sequence((7, 3), "t", 0, 120), 120);
        assert_eq!(map.first_sequence((7, 4), "t", 0, 0), 0);
        map.remove((7, 4));
        assert_eq!(map.mapped((7, 3)), None, "forgotten for every epoch");
    }
}

//! Topic ids as clients see them. A topic's copy in B has another id than
//! in A, and clients that track topic ids take a changed id for a topic
//! deleted and created again (franz-go then refuses commits with
//! UNKNOWN_TOPIC_ID and may fail every record it holds). So each topic has
//! one presented id whichever cluster serves it: the id of the first
//! cluster it was seen in. Only a topic really created again in a cluster
//! (a new real id there) gets a new presented id.

use std::collections::HashMap;
use std::sync::Mutex;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::config::ClusterName;
use crate::state::{StateDir, StateError};

const FILE: &str = "topic-ids.json";

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Entry {
    presented: Uuid,
    a: Option<Uuid>,
    b: Option<Uuid>,
}

impl Entry {
    fn real(&mut self, cluster: ClusterName) -> &mut Option<Uuid> {
        match cluster {
            ClusterName::A => &mut self.a,
            ClusterName::B => &mut self.b,
        }
    }
}

pub(super) struct TopicIds {
    state: StateDir,
    by_name: Mutex<HashMap<String, Entry>>,
    /// Changed since last written (written by `persist`, not on the
    /// answer path).
    dirty: std::sync::atomic::AtomicBool,
}

impl TopicIds {
    pub(super) fn open(state: StateDir) -> Result<TopicIds, StateError> {
        let by_name = state.load(FILE)?.unwrap_or_default();
        Ok(TopicIds {
            state,
            by_name: Mutex::new(by_name),
            dirty: std::sync::atomic::AtomicBool::new(false),
        })
    }

    /// The id clients see for `topic`, whose real id in `cluster` is `real`.
    pub(super) fn presented(&self, cluster: ClusterName, topic: &str, real: Uuid) -> Uuid {
        if real.is_nil() {
            return real;
        }
        let mut by_name = self.by_name.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(entry) = by_name.get_mut(topic) {
            match *entry.real(cluster) {
                Some(known) if known == real => return entry.presented,
                None => {
                    // The same topic in the other cluster.
                    *entry.real(cluster) = Some(real);
                }
                Some(_) => {
                    // Created again in this cluster: a new topic.
                    *entry = Entry {
                        presented: real,
                        ..Entry::default()
                    };
                    *entry.real(cluster) = Some(real);
                }
            }
        } else {
            let mut entry = Entry {
                presented: real,
                ..Entry::default()
            };
            *entry.real(cluster) = Some(real);
            by_name.insert(topic.to_owned(), entry);
        }
        self.dirty.store(true, std::sync::atomic::Ordering::Release);
        by_name[topic].presented
    }

    /// Writes the ids down when they changed.
    pub(super) fn persist(&self) {
        if !self.dirty.swap(false, std::sync::atomic::Ordering::AcqRel) {
            return;
        }
        let snapshot = self
            .by_name
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        if let Err(e) = self.state.store(FILE, &snapshot) {
            self.dirty.store(true, std::sync::atomic::Ordering::Release);
            tracing::error!(error = %e, "cannot persist presented topic ids");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_topic_keeps_its_id_across_clusters_and_restarts_and_a_recreated_one_changes() {
        let dir = tempfile::tempdir().unwrap();
        let open = || TopicIds::open(StateDir::open(dir.path()).unwrap()).unwrap();
        let ids = open();
        let (in_a, in_b) = (Uuid::from_u128(1), Uuid::from_u128(2));
        assert_eq!(ids.presented(ClusterName::A, "orders", in_a), in_a);
        assert_eq!(ids.presented(ClusterName::B, "orders", in_b), in_a);
        ids.persist();
        let ids = open();
        assert_eq!(ids.presented(ClusterName::B, "orders", in_b), in_a);
        assert_eq!(ids.presented(ClusterName::A, "orders", in_a), in_a);
        let recreated = Uuid::from_u128(3);
        assert_eq!(
            ids.presented(ClusterName::A, "orders", recreated),
            recreated
        );
        assert_eq!(
            ids.presented(ClusterName::A, "nil", Uuid::nil()),
            Uuid::nil()
        );
    }
}

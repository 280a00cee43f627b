//! Producer ids across clusters. Both clusters allocate idempotent producer
//! ids from 0, so the same number means different producers in A and B: a
//! batch carrying an id that A issued, written to B as it is, can be taken
//! by B for one of its own producers' batches (and answered with a cached
//! offset, silently dropped). switchyard notes which ids each cluster
//! issued to clients, and a batch written to one cluster under an id the
//! other issued is always restamped with the id that stands for it there,
//! mapped on the spot when the mirror had not mapped it yet.

use std::collections::BTreeSet;
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

use super::Shared;
use crate::config::ClusterName;
use crate::protocol::batch;
use crate::protocol::frame::Frame;
use crate::protocol::header::RequestHeaderPeek;
use crate::protocol::requests;
use crate::state::{StateDir, StateError};

const FILE: &str = "producer-ids-issued.json";

#[derive(Debug, Default, Serialize, Deserialize)]
struct Stored {
    a: BTreeSet<i64>,
    b: BTreeSet<i64>,
}

impl Stored {
    fn of(&mut self, cluster: ClusterName) -> &mut BTreeSet<i64> {
        match cluster {
            ClusterName::A => &mut self.a,
            ClusterName::B => &mut self.b,
        }
    }
}

/// Producer ids each cluster handed to clients through switchyard.
pub struct IssuedProducerIds {
    state: StateDir,
    ids: Mutex<Stored>,
}

impl IssuedProducerIds {
    pub fn open(state: StateDir) -> Result<IssuedProducerIds, StateError> {
        let ids = state.load(FILE)?.unwrap_or_default();
        Ok(IssuedProducerIds {
            state,
            ids: Mutex::new(ids),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Stored> {
        self.ids.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn note(&self, cluster: ClusterName, id: i64) {
        if id < 0 {
            return;
        }
        let mut ids = self.lock();
        if ids.of(cluster).insert(id) {
            if let Err(e) = self.state.store(FILE, &*ids) {
                tracing::error!(error = %e, "cannot persist issued producer ids");
            }
        }
    }

    pub fn issued_by(&self, cluster: ClusterName, id: i64) -> bool {
        self.lock().of(cluster).contains(&id)
    }

    pub fn any(&self, cluster: ClusterName) -> bool {
        !self.lock().of(cluster).is_empty()
    }
}

/// Idempotent producers of a Produce request to `cluster` whose ids the
/// other cluster issued and that nothing stands for in `cluster` yet.
pub(super) fn unmapped_foreign(
    shared: &Shared,
    cluster: ClusterName,
    frame: &Frame,
    header: &RequestHeaderPeek,
) -> Vec<(i64, i16)> {
    let other = cluster.other();
    if !shared.issued.any(other) {
        return Vec::new();
    }
    let Some(map) = shared.mirror_from(other).map(|m| m.producer_map()) else {
        return Vec::new();
    };
    let Ok(body) = requests::walk_produce(frame.payload(), header) else {
        return Vec::new(); // classify reports it
    };
    let payload = frame.payload_bytes();
    let mut out = Vec::new();
    for range in body.partitions.iter().filter_map(|p| p.records.clone()) {
        let Ok(batches) = batch::split_batches(&payload.slice(range)) else {
            continue;
        };
        for raw in batches {
            let Ok(h) = batch::read_header(&raw) else {
                continue;
            };
            let key = (h.producer_id, h.producer_epoch);
            if h.is_idempotent()
                && !h.is_transactional()
                && shared.issued.issued_by(other, h.producer_id)
                && map.mapped(key).is_none()
                && !out.contains(&key)
            {
                out.push(key);
            }
        }
    }
    out
}

/// Gives each producer an id of `cluster` to stand for it there.
pub(super) async fn map_foreign(
    shared: &Shared,
    cluster: ClusterName,
    producers: &[(i64, i16)],
) -> Result<(), String> {
    let other = cluster.other();
    let mirror = shared
        .mirror_from(other)
        .ok_or("no second cluster is configured")?;
    for &key in producers {
        if mirror.producer_map().mapped(key).is_some() {
            continue;
        }
        let (id, epoch) = mirror
            .client()
            .init_producer_id()
            .await
            .map_err(|e| e.to_string())?;
        tracing::info!(%cluster, client = ?key, mapped = ?(id, epoch),
            "producer id issued by the other cluster mapped before its first write here");
        mirror.producer_map().insert(key, (id, epoch));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issued_ids_are_kept_per_cluster_and_survive_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let open = || IssuedProducerIds::open(StateDir::open(dir.path()).unwrap()).unwrap();
        let ids = open();
        assert!(!ids.any(ClusterName::A));
        ids.note(ClusterName::A, 0);
        ids.note(ClusterName::A, 1000);
        ids.note(ClusterName::B, 0);
        ids.note(ClusterName::B, -1);
        let ids = open();
        assert!(ids.issued_by(ClusterName::A, 1000));
        assert!(!ids.issued_by(ClusterName::B, 1000));
        assert!(ids.issued_by(ClusterName::B, 0));
        assert!(!ids.issued_by(ClusterName::B, -1));
    }
}

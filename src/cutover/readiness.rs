//! Would a flip be lossless now? Per consumer group and partition: the
//! group's committed offset on the primary must translate to a record the
//! mirror cluster holds, and the mirror must have nothing outstanding.
//! Every mirrored topic must be laid out alike in both clusters (partition
//! count, cleanup policy, timestamp type, a largest batch at least as
//! large), and no partition's mirroring may have stopped.

use serde::{Deserialize, Serialize};

use crate::config::MirrorMode;
use crate::proxy::Shared;

#[derive(Debug, Serialize, Deserialize)]
pub struct Readiness {
    pub ready: bool,
    /// Reasons that concern every group.
    pub reasons: Vec<String>,
    /// What is worth knowing but does not hold a flip back.
    pub notes: Vec<String>,
    pub groups: Vec<GroupReadiness>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct GroupReadiness {
    pub group: String,
    pub ready: bool,
    pub reasons: Vec<String>,
    pub partitions: Vec<PartitionReadiness>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct PartitionReadiness {
    pub topic: String,
    pub partition: i32,
    /// Committed offset on the primary.
    pub committed: i64,
    /// The equivalent offset on the mirror cluster, when there is one.
    pub translated: Option<i64>,
    pub ready: bool,
    pub reason: Option<String>,
}

impl Readiness {
    /// Every reason, group ones prefixed with their group.
    pub fn all_reasons(&self) -> Vec<String> {
        let mut reasons = self.reasons.clone();
        for group in &self.groups {
            for reason in &group.reasons {
                reasons.push(format!("group {}: {reason}", group.group));
            }
            for p in &group.partitions {
                if let Some(reason) = &p.reason {
                    reasons.push(format!(
                        "group {}: {}-{}: {reason}",
                        group.group, p.topic, p.partition
                    ));
                }
            }
        }
        reasons
    }
}

pub async fn readiness(shared: &Shared) -> Readiness {
    let mut reasons = Vec::new();
    let Some(mirror) = shared.mirror() else {
        return Readiness {
            ready: false,
            reasons: vec!["no second cluster is configured ([clusters.b])".into()],
            notes: Vec::new(),
            groups: Vec::new(),
        };
    };
    if mirror.mode() == MirrorMode::Off {
        reasons.push(format!("mirroring to cluster {} is off", mirror.target()));
    }
    for id in shared.transactional.all() {
        reasons.push(format!(
            "transactional producer {id:?} was seen: transactions are not mirrored \
             (their commit markers are written by the cluster, not through Produce), \
             so its records cannot be carried to cluster {} with their outcome; \
             move it with the application stopped, or flip with force once it is gone",
            mirror.target()
        ));
    }
    let status = mirror.status();
    let mut notes = Vec::new();
    for ((topic, partition), status) in &status {
        if let Some(reason) = &status.stopped {
            reasons.push(format!(
                "{topic}-{partition}: mirroring to cluster {} stopped with {} records \
                 outstanding: {reason}",
                mirror.target(),
                status.lag_records
            ));
        } else if status.lag_records > 0 {
            // Lag alone is traffic in flight, which the flip drains; lag
            // that is not moving is a reason.
            if let Some(error) = &status.last_error {
                reasons.push(format!(
                    "{topic}-{partition}: {} records not yet in cluster {}: {error}",
                    status.lag_records,
                    mirror.target()
                ));
            }
        }
        if status.topic_missing {
            reasons.push(format!(
                "topic {topic} is missing in cluster {}",
                mirror.target()
            ));
        }
        if let Some(note) = &status.note {
            if !notes.contains(note) {
                notes.push(note.clone());
            }
        }
    }
    let mut topics: Vec<String> = status.keys().map(|(topic, _)| topic.clone()).collect();
    topics.extend(mirror.translation().snapshot().into_keys().map(|(t, _)| t));
    topics.sort();
    topics.dedup();
    let checks =
        futures::future::join_all(topics.iter().map(|topic| mirror.check_topic(topic))).await;
    for check in checks {
        reasons.extend(check.differences);
        notes.extend(check.notes);
    }
    let mut groups = Vec::new();
    for group in shared.groups.all() {
        groups.push(group_readiness(shared, mirror, &group, &status).await);
    }
    Readiness {
        ready: reasons.is_empty() && groups.iter().all(|g| g.ready),
        reasons,
        notes,
        groups,
    }
}

async fn group_readiness(
    shared: &Shared,
    mirror: &crate::mirror::Mirror,
    group: &str,
    status: &std::collections::BTreeMap<(String, i32), crate::mirror::PartitionStatus>,
) -> GroupReadiness {
    let committed = match mirror.source().committed_offsets(group).await {
        Ok(committed) => committed,
        Err(e) => {
            return GroupReadiness {
                group: group.to_owned(),
                ready: false,
                reasons: vec![format!("cannot read committed offsets: {e}")],
                partitions: Vec::new(),
            }
        }
    };
    let from = mirror.source().cluster();
    let mut keys: Vec<_> = committed.into_iter().collect();
    keys.sort();
    let mut partitions: Vec<PartitionReadiness> = Vec::with_capacity(keys.len());
    for ((topic, partition), offset) in keys {
        let (translated, reason) = match shared
            .translate_committed(from, &topic, partition, offset)
            .await
        {
            Ok(o) => (Some(o), None),
            // Consumed from the primary before the mirror confirmed
            // it: the drain catches up with it.
            Err(_)
                if status
                    .get(&(topic.clone(), partition))
                    .is_some_and(|s| s.lag_records > 0 && s.last_error.is_none()) =>
            {
                (None, None)
            }
            Err(reason) => (None, Some(reason)),
        };
        partitions.push(PartitionReadiness {
            ready: reason.is_none(),
            topic,
            partition,
            committed: offset,
            translated,
            reason,
        });
    }
    GroupReadiness {
        group: group.to_owned(),
        ready: partitions.iter().all(|p| p.ready),
        reasons: Vec::new(),
        partitions,
    }
}

//! Would a flip be lossless now? Per consumer group and partition: the
//! group's committed offset on the primary must translate to a record the
//! mirror cluster holds, and the mirror must have nothing outstanding.

use serde::Serialize;

use crate::config::MirrorMode;
use crate::proxy::Shared;
use crate::translate::Translated;

#[derive(Debug, Serialize)]
pub struct Readiness {
    pub ready: bool,
    /// Reasons that concern every group.
    pub reasons: Vec<String>,
    pub groups: Vec<GroupReadiness>,
}

#[derive(Debug, Serialize)]
pub struct GroupReadiness {
    pub group: String,
    pub ready: bool,
    pub reasons: Vec<String>,
    pub partitions: Vec<PartitionReadiness>,
}

#[derive(Debug, Serialize)]
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

pub async fn readiness(shared: &Shared) -> Readiness {
    let mut reasons = Vec::new();
    let Some(mirror) = shared.mirror.as_ref() else {
        return Readiness {
            ready: false,
            reasons: vec!["no second cluster is configured ([clusters.b])".into()],
            groups: Vec::new(),
        };
    };
    if mirror.mode() == MirrorMode::Off {
        reasons.push(format!("mirroring to cluster {} is off", mirror.target()));
    }
    for ((topic, partition), status) in mirror.status() {
        if status.lag_records > 0 {
            reasons.push(format!(
                "{topic}-{partition}: {} records not yet in cluster {}",
                status.lag_records,
                mirror.target()
            ));
        }
        if status.topic_missing {
            reasons.push(format!(
                "topic {topic} is missing in cluster {}",
                mirror.target()
            ));
        }
    }
    let mut groups = Vec::new();
    for group in shared.groups.all() {
        groups.push(group_readiness(shared, mirror, &group).await);
    }
    Readiness {
        ready: reasons.is_empty() && groups.iter().all(|g| g.ready),
        reasons,
        groups,
    }
}

async fn group_readiness(
    _shared: &Shared,
    mirror: &crate::mirror::Mirror,
    group: &str,
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
    let mut keys: Vec<_> = committed.into_iter().collect();
    keys.sort();
    let partitions: Vec<PartitionReadiness> = keys
        .into_iter()
        .map(|((topic, partition), offset)| {
            let segments = mirror.translation().partition(&topic, partition);
            let (translated, reason) = match segments {
                None => (
                    None,
                    Some(format!(
                        "nothing of {topic}-{partition} has been mirrored yet"
                    )),
                ),
                Some(segments) => match segments.a_to_b(offset) {
                    Translated::Offset(b) => (Some(b), None),
                    Translated::End(b) if Some(offset) == segments.end_a() => (Some(b), None),
                    Translated::End(_) => (
                        None,
                        Some(format!(
                            "committed offset {offset} is beyond the last mirrored record ({})",
                            segments.end_a().unwrap_or(-1) - 1
                        )),
                    ),
                    Translated::BeforeFirst => (
                        None,
                        Some(format!(
                            "committed offset {offset} lies before the first mirrored record ({})",
                            segments.first_a().unwrap_or(-1)
                        )),
                    ),
                },
            };
            PartitionReadiness {
                ready: reason.is_none(),
                topic,
                partition,
                committed: offset,
                translated,
                reason,
            }
        })
        .collect();
    GroupReadiness {
        group: group.to_owned(),
        ready: partitions.iter().all(|p| p.ready),
        reasons: Vec::new(),
        partitions,
    }
}

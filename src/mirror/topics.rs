//! Topics in the mirror cluster: created like the primary's (partitions,
//! replication, the configuration that decides what a partition keeps and
//! accepts), and compared with the primary's before a flip.

use std::time::{Duration, Instant};

use serde::Serialize;

use super::client::{ConfigEntry, TopicLayout, TopicState, CONFIG_SOURCE_DEFAULT};
use super::Mirror;
use crate::protocol::errors;

/// Topic configuration copied when the mirror creates a topic: what
/// decides which records a partition accepts, keeps and how it stamps
/// them. Copied when set in the primary (on the topic or by its brokers),
/// like MirrorMaker 2 does; the built-in defaults are left to the mirror
/// cluster.
const COPIED: &[&str] = &[
    "cleanup.policy",
    "message.timestamp.type",
    "max.message.bytes",
    "min.insync.replicas",
    "retention.ms",
    "retention.bytes",
    "compression.type",
    "message.timestamp.difference.max.ms",
    "message.timestamp.before.max.ms",
    "message.timestamp.after.max.ms",
];

/// Copied whatever their source: a compacted topic mirrored into a
/// deleting one loses records, and LogAppendTime rewrites timestamps.
const ALWAYS_COPIED: &[&str] = &["cleanup.policy", "message.timestamp.type"];

/// Removed in Kafka 4 (KIP-937): a Kafka 4 mirror cluster refuses it.
const REMOVED_IN_KAFKA_4: &str = "message.timestamp.difference.max.ms";

/// How long a comparison of a topic between the clusters is reused.
const CHECK_REUSE: Duration = Duration::from_secs(1);

/// How a topic differs between the clusters.
#[derive(Debug, Clone, Default, Serialize)]
pub struct TopicCheck {
    /// Differences that make a flip unsafe, naming the setting and both
    /// values.
    pub differences: Vec<String>,
    /// What could not be compared, or is worth knowing.
    pub notes: Vec<String>,
}

/// The settings a topic of the mirror cluster is created with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct CreationPlan {
    pub partitions: i32,
    pub replication_factor: i16,
    pub configs: Vec<(String, String)>,
    pub notes: Vec<String>,
}

/// What to create in the mirror cluster for a topic laid out as `layout` in
/// the primary with `configs` there, given `brokers` in the mirror cluster.
pub(super) fn creation_plan(
    topic: &str,
    layout: TopicLayout,
    configs: &[ConfigEntry],
    brokers: usize,
    names: (&str, &str),
) -> CreationPlan {
    let (source, target) = names;
    let mut notes = Vec::new();
    let mut replication_factor = layout.replication_factor.max(1);
    if brokers > 0 && replication_factor > brokers {
        notes.push(format!(
            "topic {topic} has replication factor {replication_factor} in cluster {source}; \
             cluster {target} has {brokers} broker(s), so it was created there with \
             replication factor {brokers}"
        ));
        replication_factor = brokers;
    }
    let mut copied = Vec::new();
    for entry in configs {
        let Some(value) = entry.value.as_ref() else {
            continue;
        };
        let name = entry.name.as_str();
        if !COPIED.contains(&name) {
            continue;
        }
        if entry.source == CONFIG_SOURCE_DEFAULT && !ALWAYS_COPIED.contains(&name) {
            continue;
        }
        let value = if name == "min.insync.replicas" {
            match value.parse::<usize>() {
                Ok(n) if n > replication_factor => {
                    notes.push(format!(
                        "topic {topic}: min.insync.replicas is {n} in cluster {source}; \
                         capped at the replication factor {replication_factor} in cluster {target}"
                    ));
                    replication_factor.to_string()
                }
                _ => value.clone(),
            }
        } else {
            value.clone()
        };
        copied.push((name.to_owned(), value));
    }
    copied.sort();
    CreationPlan {
        partitions: layout.partitions as i32,
        replication_factor: replication_factor.min(i16::MAX as usize) as i16,
        configs: copied,
        notes,
    }
}

/// The differences between a topic in the primary and in the mirror
/// cluster that make a flip unsafe: partition count (records would land in
/// other partitions), cleanup policy, timestamp type, and a smaller largest
/// batch in the mirror cluster.
pub(super) fn differences(
    topic: &str,
    layouts: (TopicLayout, TopicLayout),
    configs: Option<(&[ConfigEntry], &[ConfigEntry])>,
    names: (&str, &str),
) -> Vec<String> {
    let (source, target) = names;
    let mut out = Vec::new();
    if layouts.0.partitions != layouts.1.partitions {
        out.push(format!(
            "topic {topic}: partition count is {} in cluster {source} but {} in cluster {target}",
            layouts.0.partitions, layouts.1.partitions
        ));
    }
    let Some((in_source, in_target)) = configs else {
        return out;
    };
    let value = |entries: &[ConfigEntry], name: &str| -> Option<String> {
        entries
            .iter()
            .find(|e| e.name == name)
            .and_then(|e| e.value.clone())
    };
    for name in ["cleanup.policy", "message.timestamp.type"] {
        let (a, b) = (value(in_source, name), value(in_target, name));
        let normalised = |v: &Option<String>| -> Option<Vec<String>> {
            v.as_ref().map(|v| {
                let mut parts: Vec<String> = v
                    .split(',')
                    .map(|p| p.trim().to_ascii_lowercase())
                    .filter(|p| !p.is_empty())
                    .collect();
                parts.sort();
                parts
            })
        };
        if let (Some(_), Some(_)) = (&a, &b) {
            if normalised(&a) != normalised(&b) {
                out.push(format!(
                    "topic {topic}: {name} is {} in cluster {source} but {} in cluster {target}",
                    a.unwrap_or_default(),
                    b.unwrap_or_default()
                ));
            }
        }
    }
    let bytes = |entries: &[ConfigEntry]| -> Option<i64> {
        value(entries, "max.message.bytes").and_then(|v| v.parse().ok())
    };
    if let (Some(a), Some(b)) = (bytes(in_source), bytes(in_target)) {
        if b < a {
            out.push(format!(
                "topic {topic}: max.message.bytes is {a} in cluster {source} but {b} in cluster \
                 {target}: batches the primary takes can be refused"
            ));
        }
    }
    out
}

impl Mirror {
    /// Makes sure the topic exists in the mirror cluster, creating it like
    /// the primary's where the cluster allows.
    pub(super) async fn ensure_topic(&self, topic: &str) -> Result<(), String> {
        let topics = [topic.to_owned()];
        let state = self
            .client
            .refresh(&topics)
            .await
            .map_err(|e| e.to_string())?;
        if state.get(topic) != Some(&TopicState::Missing) {
            return Ok(());
        }
        let (source, target) = (self.source.cluster(), self.target);
        let layout = match self.source.topic_layout(topic).await {
            Ok(Some(layout)) => layout,
            Ok(None) => return Err(format!("topic {topic} is unknown in the primary too")),
            Err(e) => return Err(format!("cannot read {topic} in the primary: {e}")),
        };
        let mut notes = Vec::new();
        let configs = match self.source.topic_configs(topic).await {
            Ok(configs) => configs,
            Err(e) => {
                notes.push(format!(
                    "cannot read the configuration of topic {topic} in cluster {source} ({e}); \
                     created in cluster {target} with the partition count only"
                ));
                Vec::new()
            }
        };
        let brokers = match self.client.brokers().await {
            Ok(brokers) => brokers.len(),
            Err(e) => return Err(format!("cannot list the brokers of cluster {target}: {e}")),
        };
        let (source_name, target_name) = (source.as_str(), target.as_str());
        let mut plan = creation_plan(topic, layout, &configs, brokers, (source_name, target_name));
        notes.append(&mut plan.notes);
        let mut created = self
            .client
            .create_topic(
                topic,
                plan.partitions,
                plan.replication_factor,
                &plan.configs,
            )
            .await;
        if matches!(created, Ok((errors::INVALID_CONFIG, _)))
            && plan.configs.iter().any(|(n, _)| n == REMOVED_IN_KAFKA_4)
        {
            // A Kafka 4 mirror cluster no longer knows the setting; its
            // successors (before/after.max.ms) are copied when set.
            notes.push(format!(
                "topic {topic}: cluster {target} does not take {REMOVED_IN_KAFKA_4}; created \
                 without it"
            ));
            plan.configs.retain(|(n, _)| n != REMOVED_IN_KAFKA_4);
            created = self
                .client
                .create_topic(
                    topic,
                    plan.partitions,
                    plan.replication_factor,
                    &plan.configs,
                )
                .await;
        }
        match created {
            Ok((errors::NONE | errors::TOPIC_ALREADY_EXISTS, _)) => {
                tracing::info!(
                    cluster = %target,
                    topic,
                    partitions = plan.partitions,
                    replication_factor = plan.replication_factor,
                    configs = ?plan.configs,
                    "created topic in mirror cluster"
                );
                if !notes.is_empty() {
                    let note = notes.join("; ");
                    tracing::warn!(cluster = %target, topic, %note, "topic created differently from the primary's");
                    for partition in 0..plan.partitions {
                        self.update_status(topic, partition, |s| s.note = Some(note.clone()));
                    }
                }
                let _ = self.client.refresh(&topics).await;
                Ok(())
            }
            Ok((code, message)) => Err(format!(
                "topic {topic} is missing in cluster {target} and CreateTopics failed with {}{}",
                errors::describe(code),
                message.map(|m| format!(": {m}")).unwrap_or_default()
            )),
            Err(e) => Err(format!(
                "topic {topic} is missing in cluster {target} and it cannot be created: {e}"
            )),
        }
    }

    /// Compares a topic between the primary and the mirror cluster (reused
    /// for a second: readiness is asked often).
    pub async fn check_topic(&self, topic: &str) -> TopicCheck {
        if let Some((at, check)) = self
            .topic_checks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(topic)
        {
            if at.elapsed() < CHECK_REUSE {
                return check.clone();
            }
        }
        let check = self.compare_topic(topic).await;
        self.topic_checks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(topic.to_owned(), (Instant::now(), check.clone()));
        check
    }

    async fn compare_topic(&self, topic: &str) -> TopicCheck {
        let (source, target) = (self.source.cluster(), self.target);
        let mut check = TopicCheck::default();
        let layouts = tokio::join!(
            self.source.topic_layout(topic),
            self.client.topic_layout(topic)
        );
        let (in_source, in_target) = match layouts {
            (Ok(Some(a)), Ok(Some(b))) => (a, b),
            // Missing in the mirror cluster: the mirror creates it (or
            // says why not) when it first writes there.
            (Ok(_), Ok(None)) | (Ok(None), Ok(_)) => return check,
            (Err(e), _) | (_, Err(e)) => {
                check
                    .notes
                    .push(format!("cannot compare topic {topic}: {e}"));
                return check;
            }
        };
        let configs = tokio::join!(
            self.source.topic_configs(topic),
            self.client.topic_configs(topic)
        );
        let configs = match configs {
            (Ok(a), Ok(b)) => Some((a, b)),
            (Err(e), _) | (_, Err(e)) => {
                check.notes.push(format!(
                    "cannot compare the configuration of topic {topic}: {e}"
                ));
                None
            }
        };
        check.differences = differences(
            topic,
            (in_source, in_target),
            configs.as_ref().map(|(a, b)| (a.as_slice(), b.as_slice())),
            (source.as_str(), target.as_str()),
        );
        check
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(name: &str, value: &str, source: i8) -> ConfigEntry {
        ConfigEntry {
            name: name.into(),
            value: Some(value.into()),
            source,
        }
    }

    const TOPIC_SET: i8 = 1;
    const BROKER_SET: i8 = 4;

    #[test]
    fn creation_copies_what_the_primary_sets_and_caps_replication() {
        let configs = [
            entry("cleanup.policy", "delete", CONFIG_SOURCE_DEFAULT),
            entry(
                "message.timestamp.type",
                "CreateTime",
                CONFIG_SOURCE_DEFAULT,
            ),
            entry("max.message.bytes", "2000000", TOPIC_SET),
            entry("retention.ms", "604800000", CONFIG_SOURCE_DEFAULT),
            entry("min.insync.replicas", "2", BROKER_SET),
            entry("segment.bytes", "1000", TOPIC_SET),
        ];
        let layout = TopicLayout {
            partitions: 6,
            replication_factor: 3,
        };
        let plan = creation_plan("t", layout, &configs, 1, ("a", "b"));
        assert_eq!(plan.partitions, 6);
        assert_eq!(plan.replication_factor, 1);
        assert_eq!(
            plan.configs,
            vec![
                ("cleanup.policy".into(), "delete".into()),
                ("max.message.bytes".into(), "2000000".into()),
                ("message.timestamp.type".into(), "CreateTime".into()),
                ("min.insync.replicas".into(), "1".into()),
            ]
        );
        assert_eq!(plan.notes.len(), 2, "{:?}", plan.notes);
        assert!(plan.notes[0].contains("replication factor 3"));
        let plan = creation_plan("t", layout, &configs, 3, ("a", "b"));
        assert_eq!(plan.replication_factor, 3);
        assert!(plan.notes.is_empty());
    }

    #[test]
    fn differences_name_the_setting_and_both_values() {
        let one = TopicLayout {
            partitions: 3,
            replication_factor: 1,
        };
        let other = TopicLayout {
            partitions: 2,
            replication_factor: 1,
        };
        let a = [
            entry("cleanup.policy", "compact,delete", TOPIC_SET),
            entry("max.message.bytes", "2000000", TOPIC_SET),
            entry(
                "message.timestamp.type",
                "CreateTime",
                CONFIG_SOURCE_DEFAULT,
            ),
        ];
        let same = [
            entry("cleanup.policy", "delete, compact", TOPIC_SET),
            entry("max.message.bytes", "3000000", TOPIC_SET),
            entry(
                "message.timestamp.type",
                "CreateTime",
                CONFIG_SOURCE_DEFAULT,
            ),
        ];
        assert!(differences("t", (one, one), Some((&a, &same)), ("a", "b")).is_empty());
        let b = [
            entry("cleanup.policy", "delete", CONFIG_SOURCE_DEFAULT),
            entry("max.message.bytes", "1000", TOPIC_SET),
            entry("message.timestamp.type", "LogAppendTime", TOPIC_SET),
        ];
        let found = differences("t", (one, other), Some((&a, &b)), ("a", "b"));
        assert_eq!(found.len(), 4, "{found:?}");
        assert!(found[0].contains("partition count is 3 in cluster a but 2 in cluster b"));
        assert!(found[1].contains("cleanup.policy is compact,delete in cluster a but delete"));
        assert!(found[2].contains("message.timestamp.type is CreateTime"));
        assert!(found[3].contains("max.message.bytes is 2000000 in cluster a but 1000"));
    }
}

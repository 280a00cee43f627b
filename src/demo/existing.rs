//! The demo against two clusters the user already has (a staging
//! rehearsal): one topic and one consumer group of its own, both named
//! `switchyard-demo-<random>`, removed from both clusters at the end however
//! the run went. Nothing else on those clusters is created, changed or
//! deleted.

use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::RDKafkaErrorCode;

/// Every name the demo gives a topic or group on a user's cluster starts
/// with this.
pub const NAME_PREFIX: &str = "switchyard-demo-";

/// How long cleaning up may wait for one cluster: a group whose members
/// were on the old cluster at the flip empties only when their sessions
/// there expire.
const CLEANUP_LIMIT: Duration = Duration::from_secs(45);
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
const METADATA_TIMEOUT: Duration = Duration::from_secs(10);

/// Checks a `--cluster-a`/`--cluster-b` value: HOST:PORT[,HOST:PORT...].
pub fn parse_bootstrap(text: &str) -> Result<String, String> {
    let servers: Vec<&str> = text.split(',').map(str::trim).collect();
    for server in &servers {
        let Some((host, port)) = server.rsplit_once(':') else {
            return Err(format!("`{server}` is not HOST:PORT"));
        };
        if host.is_empty() || host.contains(char::is_whitespace) {
            return Err(format!("`{server}` has no host"));
        }
        if port.parse::<u16>().map_or(true, |p| p == 0) {
            return Err(format!("`{server}` has no port (1-65535)"));
        }
    }
    Ok(servers.join(","))
}

/// The topic and group one run owns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunNames {
    pub topic: String,
    pub group: String,
}

impl RunNames {
    /// Fresh names: 64 random bits, so that runs against the same clusters
    /// (and anything else there) never share one.
    pub fn unique() -> RunNames {
        RunNames::with_suffix(rand::random())
    }

    fn with_suffix(suffix: u64) -> RunNames {
        let name = format!("{NAME_PREFIX}{suffix:016x}");
        RunNames {
            topic: name.clone(),
            group: name,
        }
    }
}

/// One of the user's clusters, as the demo names it in what it prints.
#[derive(Debug, Clone)]
pub struct Existing {
    pub label: &'static str,
    pub bootstrap: String,
}

impl Existing {
    /// A client for metadata and group listings only; it never asks a
    /// broker to create a topic it looks up.
    fn lookup_client(&self) -> anyhow::Result<BaseConsumer> {
        ClientConfig::new()
            .set("bootstrap.servers", &self.bootstrap)
            .set("allow.auto.create.topics", "false")
            .create()
            .with_context(|| format!("cannot create a client for cluster {}", self.label))
    }

    fn admin_client(&self) -> anyhow::Result<AdminClient<DefaultClientContext>> {
        ClientConfig::new()
            .set("bootstrap.servers", &self.bootstrap)
            .create()
            .with_context(|| format!("cannot create an admin client for cluster {}", self.label))
    }

    /// The topic's partitions that have a leader, or `None` when the cluster
    /// does not have the topic.
    fn led_partitions(&self, client: &BaseConsumer, topic: &str) -> anyhow::Result<Option<usize>> {
        let metadata = client
            .fetch_metadata(Some(topic), METADATA_TIMEOUT)
            .with_context(|| {
                format!(
                    "cannot read metadata from cluster {} at {}",
                    self.label, self.bootstrap
                )
            })?;
        let Some(entry) = metadata.topics().iter().find(|t| t.name() == topic) else {
            return Ok(None);
        };
        match entry.error().map(RDKafkaErrorCode::from) {
            None => Ok(Some(
                entry
                    .partitions()
                    .iter()
                    .filter(|p| p.error().is_none() && p.leader() >= 0)
                    .count(),
            )),
            Some(RDKafkaErrorCode::UnknownTopicOrPartition) => Ok(None),
            // Partitions still without a leader right after creation.
            Some(RDKafkaErrorCode::LeaderNotAvailable) => Ok(Some(0)),
            Some(code) => bail!("cluster {} answers {code} for {topic}", self.label),
        }
    }

    /// Every broker address the cluster advertises.
    fn broker_addresses(&self, client: &BaseConsumer) -> anyhow::Result<Vec<String>> {
        let metadata = client
            .fetch_metadata(None, METADATA_TIMEOUT)
            .with_context(|| {
                format!(
                    "cannot read metadata from cluster {} at {}",
                    self.label, self.bootstrap
                )
            })?;
        Ok(metadata
            .brokers()
            .iter()
            .map(|b| format!("{}:{}", b.host(), b.port()))
            .collect())
    }

    fn has_group(&self, client: &BaseConsumer, group: &str) -> anyhow::Result<bool> {
        let groups = client
            .fetch_group_list(Some(group), METADATA_TIMEOUT)
            .with_context(|| format!("cannot list the groups of cluster {}", self.label))?;
        Ok(groups
            .groups()
            .iter()
            .any(|g| g.name() == group && g.state() != "Dead"))
    }
}

/// Before anything is created: neither cluster may already have the run's
/// topic or group, since what the demo deletes at the end must be its own.
/// Returns the real broker addresses of both clusters.
pub async fn check_names_are_free(
    clusters: &[Existing; 2],
    names: &RunNames,
) -> anyhow::Result<Vec<String>> {
    let (clusters, names) = (clusters.clone(), names.clone());
    tokio::task::spawn_blocking(move || {
        let mut brokers = Vec::new();
        for cluster in &clusters {
            let client = cluster.lookup_client()?;
            brokers.extend(cluster.broker_addresses(&client)?);
            if cluster.led_partitions(&client, &names.topic)?.is_some() {
                bail!(
                    "cluster {} already has a topic {}; not touching it",
                    cluster.label,
                    names.topic
                );
            }
            if cluster.has_group(&client, &names.group)? {
                bail!(
                    "cluster {} already has a group {}; not touching it",
                    cluster.label,
                    names.group
                );
            }
        }
        Ok(brokers)
    })
    .await?
}

/// Creates the run's topic in `cluster` with the cluster's default
/// replication factor, and waits until every partition has a leader.
pub async fn create_topic(
    cluster: &Existing,
    topic: &str,
    partitions: i32,
    limit: Duration,
) -> anyhow::Result<()> {
    let admin = cluster.admin_client()?;
    let options = AdminOptions::new()
        .operation_timeout(Some(REQUEST_TIMEOUT))
        .request_timeout(Some(REQUEST_TIMEOUT));
    let new = NewTopic::new(topic, partitions, TopicReplication::Fixed(-1));
    let results = admin
        .create_topics([&new], &options)
        .await
        .with_context(|| format!("cannot create {topic} in cluster {}", cluster.label))?;
    for result in results {
        if let Err((_, code)) = result {
            bail!(
                "cluster {} refused to create {topic}: {code}",
                cluster.label
            );
        }
    }
    let (cluster, topic) = (cluster.clone(), topic.to_owned());
    tokio::task::spawn_blocking(move || {
        let client = cluster.lookup_client()?;
        let deadline = Instant::now() + limit;
        loop {
            let led = cluster.led_partitions(&client, &topic)?.unwrap_or(0);
            if led == partitions as usize {
                return Ok(());
            }
            if Instant::now() >= deadline {
                bail!(
                    "{topic} in cluster {} has {led} of {partitions} partitions with a leader after {} s",
                    cluster.label,
                    limit.as_secs()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    })
    .await?
}

/// What became of one thing the demo tried to remove.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Removal {
    Deleted,
    /// The cluster never had it (the run stopped before it was created).
    NotThere,
    Failed(String),
}

impl std::fmt::Display for Removal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Removal::Deleted => f.write_str("deleted"),
            Removal::NotThere => f.write_str("was not there"),
            Removal::Failed(reason) => write!(f, "NOT deleted ({reason})"),
        }
    }
}

/// What became of the topic and the group in one cluster.
#[derive(Debug, Clone)]
pub struct Cleanup {
    pub label: &'static str,
    pub topic: Removal,
    pub group: Removal,
}

impl Cleanup {
    /// What is still on the cluster, for the report.
    pub fn left_behind(&self, names: &RunNames) -> Vec<String> {
        let mut left = Vec::new();
        if let Removal::Failed(reason) = &self.topic {
            left.push(format!(
                "topic {} in cluster {} ({reason})",
                names.topic, self.label
            ));
        }
        if let Removal::Failed(reason) = &self.group {
            left.push(format!(
                "group {} in cluster {} ({reason})",
                names.group, self.label
            ));
        }
        left
    }
}

/// Deletes the run's topic and group in both clusters, whatever state the
/// run left them in. Call it only once no client of the run (and no proxy
/// mirroring into these clusters) is left: a client could create the topic
/// again.
pub async fn clean_up(clusters: &[Existing; 2], names: &RunNames) -> Vec<Cleanup> {
    let [a, b] = clusters;
    let (a, b) = tokio::join!(clean_up_one(a, names), clean_up_one(b, names));
    vec![a, b]
}

async fn clean_up_one(cluster: &Existing, names: &RunNames) -> Cleanup {
    let admin = match cluster.admin_client() {
        Ok(admin) => admin,
        Err(e) => {
            let reason = format!("{e:#}");
            return Cleanup {
                label: cluster.label,
                topic: Removal::Failed(reason.clone()),
                group: Removal::Failed(reason),
            };
        }
    };
    let deadline = Instant::now() + CLEANUP_LIMIT;
    let (topic, group) = tokio::join!(
        delete_topic(cluster, &admin, &names.topic, deadline),
        delete_group(&admin, &names.group, deadline)
    );
    Cleanup {
        label: cluster.label,
        topic,
        group,
    }
}

fn admin_options() -> AdminOptions {
    AdminOptions::new()
        .operation_timeout(Some(REQUEST_TIMEOUT))
        .request_timeout(Some(REQUEST_TIMEOUT))
}

/// Deletes the topic and waits until the cluster's metadata no longer lists
/// it.
async fn delete_topic(
    cluster: &Existing,
    admin: &AdminClient<DefaultClientContext>,
    topic: &str,
    deadline: Instant,
) -> Removal {
    let outcome = match admin.delete_topics(&[topic], &admin_options()).await {
        Err(e) => return Removal::Failed(e.to_string()),
        Ok(results) => results.into_iter().next(),
    };
    match outcome {
        Some(Ok(_)) => {}
        Some(Err((_, RDKafkaErrorCode::UnknownTopicOrPartition))) => return Removal::NotThere,
        Some(Err((_, code))) => return Removal::Failed(code.to_string()),
        None => return Removal::Failed("no answer for the topic".into()),
    }
    let (cluster, topic) = (cluster.clone(), topic.to_owned());
    let gone = tokio::task::spawn_blocking(move || -> anyhow::Result<bool> {
        let client = cluster.lookup_client()?;
        while Instant::now() < deadline {
            if cluster.led_partitions(&client, &topic)?.is_none() {
                return Ok(true);
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        Ok(false)
    })
    .await;
    match gone {
        Ok(Ok(true)) => Removal::Deleted,
        Ok(Ok(false)) => Removal::Failed("deletion accepted but the topic is still listed".into()),
        Ok(Err(e)) => Removal::Failed(format!("deletion accepted, then {e:#}")),
        Err(e) => Removal::Failed(format!("deletion accepted, then {e}")),
    }
}

/// Deletes the group, waiting while it still has members: members that
/// were moved off this cluster by the flip stay listed until their
/// sessions there expire.
async fn delete_group(
    admin: &AdminClient<DefaultClientContext>,
    group: &str,
    deadline: Instant,
) -> Removal {
    loop {
        let last = match admin.delete_groups(&[group], &admin_options()).await {
            Err(e) => e.to_string(),
            Ok(results) => match results.into_iter().next() {
                Some(Ok(_)) => return Removal::Deleted,
                Some(Err((_, RDKafkaErrorCode::GroupIdNotFound))) => return Removal::NotThere,
                Some(Err((_, code))) if retriable_group_error(code) => code.to_string(),
                Some(Err((_, code))) => return Removal::Failed(code.to_string()),
                None => return Removal::Failed("no answer for the group".into()),
            },
        };
        if Instant::now() >= deadline {
            return Removal::Failed(format!("still {last} after {} s", CLEANUP_LIMIT.as_secs()));
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

fn retriable_group_error(code: RDKafkaErrorCode) -> bool {
    matches!(
        code,
        RDKafkaErrorCode::NonEmptyGroup
            | RDKafkaErrorCode::CoordinatorLoadInProgress
            | RDKafkaErrorCode::CoordinatorNotAvailable
            | RDKafkaErrorCode::NotCoordinator
            | RDKafkaErrorCode::RequestTimedOut
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bootstrap_lists_are_host_port_pairs() {
        assert_eq!(
            parse_bootstrap("kafka-1:9092, kafka-2:9093").as_deref(),
            Ok("kafka-1:9092,kafka-2:9093")
        );
        assert_eq!(parse_bootstrap("[::1]:9092").as_deref(), Ok("[::1]:9092"));
        for bad in [
            "kafka-1",
            "kafka-1:",
            ":9092",
            "kafka-1:0",
            "kafka-1:99999",
            "a:1,",
            "",
        ] {
            assert!(parse_bootstrap(bad).is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn run_names_carry_the_prefix_and_differ_per_run() {
        let names = RunNames::with_suffix(0xab);
        assert_eq!(names.topic, "switchyard-demo-00000000000000ab");
        assert_eq!(names.group, names.topic);
        assert!(RunNames::unique().topic.starts_with(NAME_PREFIX));
        assert_ne!(RunNames::unique(), RunNames::unique());
    }

    #[test]
    fn only_failed_removals_are_left_behind() {
        let names = RunNames::with_suffix(1);
        let cleanup = Cleanup {
            label: "B",
            topic: Removal::NotThere,
            group: Removal::Failed("NonEmptyGroup".into()),
        };
        let left = cleanup.left_behind(&names);
        assert_eq!(
            left,
            ["group switchyard-demo-0000000000000001 in cluster B (NonEmptyGroup)"]
        );
        let clean = Cleanup {
            topic: Removal::Deleted,
            group: Removal::Deleted,
            ..cleanup
        };
        assert!(clean.left_behind(&names).is_empty());
    }
}

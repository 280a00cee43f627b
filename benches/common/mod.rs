//! Helpers shared by the load and flip benchmarks.

use switchyard::demo::{start_cluster, Cluster};

/// The median of the finite values; NaN when there are none.
pub(crate) fn median(mut values: Vec<f64>) -> f64 {
    values.retain(|v| v.is_finite());
    if values.is_empty() {
        return f64::NAN;
    }
    values.sort_by(f64::total_cmp);
    let n = values.len();
    if n % 2 == 1 {
        values[n / 2]
    } else {
        (values[n / 2 - 1] + values[n / 2]) / 2.0
    }
}

/// A setting from the environment, or `default` when unset.
pub(crate) fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    match std::env::var(name) {
        Ok(v) => v
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("{name}={v:?} is not a valid number")),
        Err(_) => default,
    }
}

/// The real-Kafka harness of the integration tests (jars cached outside the
/// repository, brokers stopped when their handle is dropped).
#[allow(dead_code, unreachable_pub)]
#[path = "../../tests/common/kafka.rs"]
pub(crate) mod kafka;

/// Whether `SWITCHYARD_BENCH_KAFKA` asks for real Apache Kafka brokers
/// instead of librdkafka's in-process mock clusters.
pub(crate) fn real_kafka() -> bool {
    env_or("SWITCHYARD_BENCH_KAFKA", 0u8) != 0
}

/// Two one-broker Kafka clusters, A and B, started once for all rounds.
pub(crate) struct KafkaPair {
    pub(crate) a: kafka::KafkaCluster,
    pub(crate) b: kafka::KafkaCluster,
}

impl KafkaPair {
    /// Starts A and B side by side with the JVM options of Kafka's own
    /// start scripts (full JIT, G1, 1 GiB heap) rather than the tests'
    /// quick-start ones.
    pub(crate) fn start() -> anyhow::Result<KafkaPair> {
        use kafka::{ClusterSpec, KafkaCluster, KAFKA_SCRIPT_JVM_OPTIONS};
        let started = std::time::Instant::now();
        let spec = ClusterSpec::new(1).jvm_options(KAFKA_SCRIPT_JVM_OPTIONS);
        let a = {
            let spec = spec.clone();
            std::thread::spawn(move || KafkaCluster::start(spec))
        };
        let b = KafkaCluster::start(spec)?;
        let a = a
            .join()
            .map_err(|_| anyhow::anyhow!("starting cluster A panicked"))??;
        eprintln!(
            "Kafka {} clusters A and B (one broker each) serving after {:.1} s",
            a.version,
            started.elapsed().as_secs_f64()
        );
        Ok(KafkaPair { a, b })
    }
}

/// The clusters A and B one round runs against.
pub(crate) enum Clusters<'k> {
    /// librdkafka mock clusters of `brokers` brokers, fresh for every
    /// round.
    Mock {
        a: Cluster,
        b: Cluster,
        brokers: i32,
    },
    /// Real brokers shared by the rounds.
    Kafka(&'k KafkaPair),
}

impl Clusters<'_> {
    /// The real pair when there is one, otherwise two fresh mock clusters
    /// of `mock_brokers` brokers.
    pub(crate) fn start(
        kafka: Option<&KafkaPair>,
        mock_brokers: i32,
    ) -> anyhow::Result<Clusters<'_>> {
        Ok(match kafka {
            Some(pair) => Clusters::Kafka(pair),
            None => Clusters::Mock {
                a: start_cluster(mock_brokers, &[])?,
                b: start_cluster(mock_brokers, &[])?,
                brokers: mock_brokers,
            },
        })
    }

    /// How the clusters are described in reports.
    pub(crate) fn describe(kafka: Option<&KafkaPair>, mock_brokers: i32) -> String {
        match kafka {
            Some(pair) => format!("two one-broker Apache Kafka {} clusters", pair.a.version),
            None => format!("two {mock_brokers}-broker mock clusters"),
        }
    }

    pub(crate) fn a(&self) -> String {
        match self {
            Clusters::Mock { a, .. } => a.bootstrap_servers(),
            Clusters::Kafka(pair) => pair.a.bootstrap(),
        }
    }

    pub(crate) fn b(&self) -> String {
        match self {
            Clusters::Mock { b, .. } => b.bootstrap_servers(),
            Clusters::Kafka(pair) => pair.b.bootstrap(),
        }
    }

    /// Creates `topic` in A and in B with the same partition count (every
    /// broker a replica).
    pub(crate) fn create_topic(&self, topic: &str, partitions: i32) -> anyhow::Result<()> {
        match self {
            Clusters::Mock { a, b, brokers } => {
                a.create_topic(topic, partitions, *brokers)?;
                b.create_topic(topic, partitions, *brokers)?;
            }
            Clusters::Kafka(pair) => {
                pair.a.create_topic(topic, partitions, 1, &[])?;
                pair.b.create_topic(topic, partitions, 1, &[])?;
            }
        }
        Ok(())
    }
}

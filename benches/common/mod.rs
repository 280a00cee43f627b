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

/// Two one-broker Kafka clusters, A and B, started once for all rounds,
/// and optionally a plain TCP relay in front of A.
pub(crate) struct KafkaPair {
    pub(crate) a: kafka::KafkaCluster,
    pub(crate) b: kafka::KafkaCluster,
    relay: Option<L4Relay>,
}

impl KafkaPair {
    /// Starts A and B side by side with the JVM options of Kafka's own
    /// start scripts (full JIT, G1, 1 GiB heap) rather than the tests'
    /// quick-start ones. With `relay_on`, A's broker also advertises a
    /// listener behind a TCP relay running on that runtime.
    pub(crate) fn start(relay_on: Option<&tokio::runtime::Runtime>) -> anyhow::Result<KafkaPair> {
        use kafka::{ClusterSpec, KafkaCluster, KAFKA_SCRIPT_JVM_OPTIONS};
        let started = std::time::Instant::now();
        let spec = ClusterSpec::new(1).jvm_options(KAFKA_SCRIPT_JVM_OPTIONS);
        let relay_socket = relay_on
            .map(|_| std::net::TcpListener::bind("127.0.0.1:0"))
            .transpose()?;
        let a = {
            let mut spec = spec.clone();
            if let Some(socket) = &relay_socket {
                spec = spec.relayed(&[socket.local_addr()?.port()]);
            }
            std::thread::spawn(move || KafkaCluster::start(spec))
        };
        let b = KafkaCluster::start(spec)?;
        let a = a
            .join()
            .map_err(|_| anyhow::anyhow!("starting cluster A panicked"))??;
        let relay = match (relay_on, relay_socket) {
            (Some(rt), Some(socket)) => {
                let route = a.relay_routes().into_iter().next().map(|(_, to)| to);
                let to = route.ok_or_else(|| anyhow::anyhow!("A has no relayed listener"))?;
                Some(L4Relay::start(rt, socket, to)?)
            }
            _ => None,
        };
        eprintln!(
            "Kafka {} clusters A and B (one broker each) serving after {:.1} s{}",
            a.version,
            started.elapsed().as_secs_f64(),
            relay
                .as_ref()
                .map_or(String::new(), |r| format!("; TCP relay to A at {}", r.addr))
        );
        Ok(KafkaPair { a, b, relay })
    }

    /// Where clients reach A through the relay, if one runs.
    #[allow(dead_code)] // the flip bench measures no relay
    pub(crate) fn relay_a(&self) -> Option<String> {
        self.relay.as_ref().map(|r| r.addr.clone())
    }
}

/// Bytes a relay reads at once in each direction (tokio's default is 8 KiB;
/// Kafka's fetch answers are megabytes).
const RELAY_BUFFER: usize = 256 * 1024;

/// A layer-4 relay: bytes copied both ways, nothing parsed. The floor any
/// proxy in the path pays, measured in the same run as switchyard.
struct L4Relay {
    addr: String,
    accept: tokio::task::JoinHandle<()>,
}

impl L4Relay {
    fn start(
        rt: &tokio::runtime::Runtime,
        socket: std::net::TcpListener,
        to: String,
    ) -> anyhow::Result<L4Relay> {
        let addr = socket.local_addr()?.to_string();
        socket.set_nonblocking(true)?;
        let accept = rt.spawn(async move {
            let listener = match tokio::net::TcpListener::from_std(socket) {
                Ok(l) => l,
                Err(e) => return eprintln!("relay: cannot listen: {e}"),
            };
            while let Ok((mut client, _)) = listener.accept().await {
                let to = to.clone();
                tokio::spawn(async move {
                    let _ = client.set_nodelay(true);
                    if let Ok(mut upstream) = tokio::net::TcpStream::connect(&to).await {
                        let _ = upstream.set_nodelay(true);
                        let _ = tokio::io::copy_bidirectional_with_sizes(
                            &mut client,
                            &mut upstream,
                            RELAY_BUFFER,
                            RELAY_BUFFER,
                        )
                        .await;
                    }
                });
            }
        });
        Ok(L4Relay { addr, accept })
    }
}

impl Drop for L4Relay {
    fn drop(&mut self) {
        self.accept.abort();
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

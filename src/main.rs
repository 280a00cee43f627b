use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
use switchyard::{Config, Proxy};

#[derive(Parser)]
#[command(
    name = "switchyard",
    version,
    about = "Kafka wire-protocol proxy for zero-downtime cluster migration"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the proxy.
    Run {
        #[arg(long, default_value = "proxy.toml")]
        config: PathBuf,
    },
    /// Check a configuration file and exit.
    Check {
        #[arg(long, default_value = "proxy.toml")]
        config: PathBuf,
    },
    /// Print a running switchyard's state: route, virtual brokers, mirror
    /// lag, and whether a flip would be lossless now.
    Status {
        #[command(flatten)]
        admin: AdminTarget,
    },
    /// Move every client from the configured primary to the other cluster:
    /// fence, drain, settle offsets, switch, unfence.
    Flip {
        #[command(flatten)]
        admin: AdminTarget,
        /// Flip although readiness names reasons.
        #[arg(long)]
        force: bool,
    },
    /// Move every client back to the configured primary.
    Rollback {
        #[command(flatten)]
        admin: AdminTarget,
        /// Roll back although readiness names reasons.
        #[arg(long)]
        force: bool,
    },
    /// Stop mirroring after a flip, once the new primary is trusted.
    Finalize {
        #[command(flatten)]
        admin: AdminTarget,
    },
    /// Two in-process clusters, live traffic through switchyard with sync
    /// mirroring, a flip from A to B in the middle of it, and an integrity
    /// report. With --cluster-a and --cluster-b, the same against two
    /// clusters you already have.
    #[cfg(feature = "demo")]
    Demo {
        /// Records the producers send, all of them together.
        #[arg(long, default_value_t = 20_000)]
        records: usize,
        /// An existing cluster to start on, instead of an in-process one.
        /// The demo creates one topic and one consumer group of its own,
        /// named switchyard-demo-<random>, and deletes both from both
        /// clusters at the end; it touches nothing else.
        #[arg(
            long,
            requires = "cluster_b",
            value_name = "HOST:PORT[,HOST:PORT...]",
            value_parser = switchyard::demo::existing::parse_bootstrap
        )]
        cluster_a: Option<String>,
        /// The existing cluster to flip to (with --cluster-a).
        #[arg(
            long,
            requires = "cluster_a",
            value_name = "HOST:PORT[,HOST:PORT...]",
            value_parser = switchyard::demo::existing::parse_bootstrap
        )]
        cluster_b: Option<String>,
        /// Where the client library's and switchyard's log lines go, so that
        /// the terminal shows only the demo's progress and report.
        #[arg(long, default_value = "switchyard-demo.log")]
        log: PathBuf,
    },
}

/// Which running switchyard an operator command talks to.
#[derive(clap::Args)]
struct AdminTarget {
    /// The configuration of the switchyard to ask (admin address and token).
    #[arg(long, default_value = "proxy.toml", conflicts_with = "admin")]
    config: PathBuf,
    /// The admin address to ask instead, host:port.
    #[arg(long)]
    admin: Option<String>,
    /// Bearer token, when not read from the configuration.
    #[arg(long, env = "SWITCHYARD_ADMIN_TOKEN")]
    token: Option<String>,
}

impl AdminTarget {
    fn resolve(self) -> anyhow::Result<(String, Option<String>)> {
        Ok(match self.admin {
            Some(addr) => (addr, self.token),
            None => {
                let config = Config::load(&self.config)?;
                (config.admin.listen, self.token.or(config.admin.token))
            }
        })
    }
}

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt().with_env_filter(filter).init();
}

/// Sends every log line, switchyard's and the client library's (which
/// arrive through the `log` bridge), to a file, truncated first; returns
/// its absolute path. Lines are written as they come, unbuffered, so a
/// process that exits at once loses none.
#[cfg(feature = "demo")]
fn log_to_file(path: &std::path::Path) -> anyhow::Result<PathBuf> {
    let file = std::fs::File::create(path)
        .with_context(|| format!("cannot write the log file {}", path.display()))?;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(false)
        .with_writer(std::sync::Mutex::new(file))
        .init();
    Ok(std::path::absolute(path)?)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Check { config } => {
            Config::load(&config)?;
            println!("{}: ok", config.display());
            Ok(())
        }
        Command::Run { config } => {
            init_logging();
            let config = Config::load(&config)?;
            let grace = Duration::from_millis(config.shutdown.grace_ms);
            let proxy = Proxy::start(config).await.context("cannot start")?;
            wait_for_signal().await?;
            proxy.shutdown(grace).await;
            Ok(())
        }
        Command::Status { admin } => {
            let (addr, token) = admin.resolve()?;
            switchyard::cli::status(&addr, token.as_deref()).await
        }
        Command::Flip { admin, force } => {
            let (addr, token) = admin.resolve()?;
            switchyard::cli::flip(&addr, token.as_deref(), "/flip", force).await
        }
        Command::Rollback { admin, force } => {
            let (addr, token) = admin.resolve()?;
            switchyard::cli::flip(&addr, token.as_deref(), "/rollback", force).await
        }
        Command::Finalize { admin } => {
            let (addr, token) = admin.resolve()?;
            switchyard::cli::finalize(&addr, token.as_deref()).await
        }
        #[cfg(feature = "demo")]
        Command::Demo {
            records,
            cluster_a,
            cluster_b,
            log,
        } => {
            use switchyard::demo::Clusters;
            let log = log_to_file(&log)?;
            println!(
                "log lines of the clients and of switchyard: {}",
                log.display()
            );
            let clusters = match (cluster_a, cluster_b) {
                (Some(a), Some(b)) => Clusters::Existing { a, b },
                _ => Clusters::InProcess,
            };
            // The demo exits without dropping the runtime: a client library
            // thread that still waits for an unreachable broker after a
            // failed run would hold the process open.
            let report = match switchyard::demo::run(records, clusters).await {
                Ok(report) => report,
                Err(e) => {
                    eprintln!(
                        "Error: the demo stopped (details in {}): {e:#}",
                        log.display()
                    );
                    std::process::exit(1);
                }
            };
            switchyard::demo::print_report(&report);
            // Lost or reordered records, no flip, clients not on the new
            // cluster, B differing from A, a real broker address seen by a
            // client, a topic or group left on the user's clusters: the
            // same failures the printed verdict names.
            std::process::exit(if report.passed() { 0 } else { 1 });
        }
    }
}

async fn wait_for_signal() -> anyhow::Result<()> {
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        result = tokio::signal::ctrl_c() => result?,
        _ = terminate.recv() => {}
    }
    tracing::info!("signal received");
    Ok(())
}

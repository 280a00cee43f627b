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
    /// report.
    #[cfg(feature = "demo")]
    Demo {
        #[arg(long, default_value_t = 20_000)]
        records: usize,
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
        Command::Demo { records } => {
            let filter = tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
            tracing_subscriber::fmt().with_env_filter(filter).init();
            let report = switchyard::demo::run(records).await?;
            switchyard::demo::print_report(&report);
            // Lost or reordered records, no flip, clients not on the new
            // cluster, B differing from A, a real broker address seen by a
            // client: the same failures the printed verdict names.
            if !report.passed() {
                std::process::exit(1);
            }
            Ok(())
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

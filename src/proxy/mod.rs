//! Listeners, client sessions and upstream connections.

pub mod brokers;
mod produce;
mod responses;
mod session;
mod upstream;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use kafka_protocol::protocol::StrBytes;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::{ClusterName, Config, MirrorMode};
use crate::metrics::Metrics;
use crate::mirror::client::ClusterClient;
use crate::mirror::Mirror;
use crate::rewrite::{Advertised, ApiRanges, RewriteContext};
use crate::state::{StateDir, StateError};
use brokers::BrokerRegistry;

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot listen on {addr} ({what}): {source}")]
    Listen {
        what: &'static str,
        addr: String,
        source: std::io::Error,
    },
    #[error(transparent)]
    State(#[from] StateError),
    #[error("mirror state (translation log or journal): {0}")]
    Translation(std::io::Error),
}

const ROUTE_FILE: &str = "route.json";

/// The route as the operator last set it; survives restarts and wins over
/// the configuration file's initial values.
#[derive(Debug, Clone, Copy, serde::Serialize, serde::Deserialize)]
pub struct Route {
    pub primary: ClusterName,
    pub mirror: MirrorMode,
}

/// Which listener a client connected to.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Target {
    Bootstrap,
    VirtualBroker(i32),
}

/// Everything the sessions, listeners and admin API share.
pub struct Shared {
    pub config: Config,
    pub brokers: BrokerRegistry,
    pub metrics: Metrics,
    /// Present when a second cluster is configured.
    pub mirror: Option<Arc<Mirror>>,
    /// Consumer groups seen in client traffic.
    pub groups: crate::cutover::KnownGroups,
    state: StateDir,
    primary: RwLock<ClusterName>,
    versions: RwLock<HashMap<ClusterName, ApiRanges>>,
    shutdown: CancellationToken,
    sessions: TaskTracker,
    next_bootstrap: AtomicUsize,
}

impl Shared {
    pub fn primary(&self) -> ClusterName {
        *self.primary.read().unwrap_or_else(|p| p.into_inner())
    }

    pub fn route(&self) -> Route {
        Route {
            primary: self.primary(),
            mirror: self.mirror.as_ref().map_or(MirrorMode::Off, |m| m.mode()),
        }
    }

    /// Switches mirror mode and persists the route.
    pub fn set_mirror_mode(&self, mode: MirrorMode) -> Result<Route, String> {
        let Some(mirror) = self.mirror.as_ref() else {
            return Err("mirroring needs [clusters.b] in the configuration".into());
        };
        let before = mirror.mode();
        mirror.set_mode(mode);
        let route = self.route();
        if let Err(e) = self.state.store(ROUTE_FILE, &route) {
            mirror.set_mode(before);
            return Err(format!("cannot persist the route: {e}"));
        }
        tracing::info!(from = ?before, to = ?mode, target = %mirror.target(), "mirror mode changed");
        Ok(route)
    }

    pub fn learn_versions(&self, cluster: ClusterName, ranges: &ApiRanges) {
        let mut versions = self.versions.write().unwrap_or_else(|p| p.into_inner());
        if versions.get(&cluster) != Some(ranges) {
            tracing::info!(%cluster, apis = ranges.len(), "learned API versions");
            versions.insert(cluster, ranges.clone());
        }
    }

    pub fn known_versions(&self, cluster: ClusterName) -> Option<ApiRanges> {
        self.versions
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(&cluster)
            .cloned()
    }

    pub fn active_sessions(&self) -> usize {
        self.sessions.len()
    }

    /// Bootstrap addresses of `cluster`, starting at a different one for each
    /// new connection so that load spreads.
    fn bootstrap_addrs(&self, cluster: ClusterName) -> Vec<String> {
        let addrs = self
            .config
            .cluster(cluster)
            .map(|c| c.bootstrap_addrs())
            .unwrap_or_default();
        if addrs.is_empty() {
            return addrs;
        }
        let start = self.next_bootstrap.fetch_add(1, Ordering::Relaxed) % addrs.len();
        addrs[start..]
            .iter()
            .chain(&addrs[..start])
            .cloned()
            .collect()
    }

    /// The rewrite context for responses coming from `cluster`.
    pub fn view(&self, cluster: ClusterName) -> ClusterView<'_> {
        ClusterView {
            shared: self,
            cluster,
        }
    }
}

/// [`RewriteContext`] for responses from one cluster.
pub struct ClusterView<'a> {
    shared: &'a Shared,
    cluster: ClusterName,
}

impl RewriteContext for ClusterView<'_> {
    fn virtual_broker(&self, node_id: i32, real: Option<(&str, i32)>) -> Advertised {
        self.shared
            .brokers
            .virtual_broker(self.cluster, node_id, real)
    }

    fn virtual_cluster_id(&self) -> StrBytes {
        self.shared.brokers.cluster_id()
    }

    fn learn_versions(&self, ranges: &ApiRanges) {
        self.shared.learn_versions(self.cluster, ranges);
    }

    fn own_versions(&self) -> Option<ApiRanges> {
        self.shared.known_versions(self.cluster)
    }

    fn other_cluster_versions(&self) -> Option<ApiRanges> {
        let other = self.cluster.other();
        self.shared.config.cluster(other)?;
        self.shared.known_versions(other)
    }
}

/// A running proxy.
pub struct Proxy {
    shared: Arc<Shared>,
    bootstrap_addr: SocketAddr,
    admin_addr: SocketAddr,
}

impl Proxy {
    pub async fn start(config: Config) -> Result<Proxy, StartError> {
        crate::metrics::prometheus();
        let bootstrap = TcpListener::bind(&config.listen.bootstrap)
            .await
            .map_err(|source| StartError::Listen {
                what: "bootstrap",
                addr: config.listen.bootstrap.clone(),
                source,
            })?;
        let bootstrap_addr = bootstrap
            .local_addr()
            .map_err(|source| StartError::Listen {
                what: "bootstrap",
                addr: config.listen.bootstrap.clone(),
                source,
            })?;
        let admin = TcpListener::bind(&config.admin.listen)
            .await
            .map_err(|source| StartError::Listen {
                what: "admin",
                addr: config.admin.listen.clone(),
                source,
            })?;
        let admin_addr = admin.local_addr().map_err(|source| StartError::Listen {
            what: "admin",
            addr: config.admin.listen.clone(),
            source,
        })?;
        let state = StateDir::open(&config.state.dir)?;
        let route: Route = state.load(ROUTE_FILE)?.unwrap_or(Route {
            primary: config.route.primary,
            mirror: config.route.mirror,
        });
        let shutdown = CancellationToken::new();
        let mirror = match config.cluster(route.primary.other()) {
            Some(target) => {
                let timeout = config.upstream.request_timeout();
                let source_config = config
                    .cluster(route.primary)
                    .expect("primary is configured");
                let source = Arc::new(ClusterClient::new(
                    route.primary,
                    source_config.bootstrap_addrs(),
                    timeout,
                ));
                let client = Arc::new(ClusterClient::new(
                    route.primary.other(),
                    target.bootstrap_addrs(),
                    timeout,
                ));
                Some(
                    Mirror::new(
                        source,
                        client,
                        route.mirror,
                        &state,
                        Duration::from_millis(config.mirror.gap_timeout_ms),
                        shutdown.clone(),
                    )
                    .map_err(StartError::Translation)?,
                )
            }
            None => None,
        };
        let brokers = BrokerRegistry::open(
            state.clone(),
            bootstrap_addr.ip(),
            &config.listen.advertised_host,
            config.listen.node_port_base,
        )?;
        let shared = Arc::new(Shared {
            primary: RwLock::new(route.primary),
            config,
            brokers,
            metrics: Metrics::new(),
            mirror,
            groups: crate::cutover::KnownGroups::open(state.clone())?,
            state,
            versions: RwLock::new(HashMap::new()),
            shutdown,
            sessions: TaskTracker::new(),
            next_bootstrap: AtomicUsize::new(0),
        });

        let weak = Arc::downgrade(&shared);
        shared
            .brokers
            .start_listeners(Arc::new(move |virtual_id, listener| {
                let Some(shared) = weak.upgrade() else { return };
                match TcpListener::from_std(listener) {
                    Ok(listener) => {
                        tokio::spawn(accept_loop(
                            shared,
                            listener,
                            Target::VirtualBroker(virtual_id),
                        ));
                    }
                    Err(e) => {
                        tracing::error!(virtual_id, error = %e, "cannot serve virtual broker")
                    }
                }
            }));
        tokio::spawn(accept_loop(shared.clone(), bootstrap, Target::Bootstrap));
        tokio::spawn(crate::admin::serve(shared.clone(), admin));
        for cluster in [ClusterName::A, ClusterName::B] {
            if shared.config.cluster(cluster).is_some() {
                tokio::spawn(upstream::probe_versions(shared.clone(), cluster));
            }
        }
        tracing::info!(%bootstrap_addr, %admin_addr, primary = %shared.primary(), "switchyard started");
        Ok(Proxy {
            shared,
            bootstrap_addr,
            admin_addr,
        })
    }

    pub fn bootstrap_addr(&self) -> SocketAddr {
        self.bootstrap_addr
    }

    pub fn admin_addr(&self) -> SocketAddr {
        self.admin_addr
    }

    pub fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    /// Stops accepting, lets in-flight requests finish within `grace`, then
    /// closes every connection.
    pub async fn shutdown(self, grace: Duration) {
        tracing::info!(sessions = self.shared.sessions.len(), "shutting down");
        self.shared.shutdown.cancel();
        self.shared.sessions.close();
        if tokio::time::timeout(grace, self.shared.sessions.wait())
            .await
            .is_err()
        {
            tracing::warn!(
                sessions = self.shared.sessions.len(),
                "grace period over; closing remaining connections"
            );
        }
    }
}

async fn accept_loop(shared: Arc<Shared>, listener: TcpListener, target: Target) {
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = shared.shutdown.cancelled() => return,
        };
        match accepted {
            Ok((stream, peer)) => {
                let session_shared = shared.clone();
                shared
                    .sessions
                    .spawn(session::run(session_shared, stream, peer, target));
            }
            Err(e) => {
                // Out of file descriptors and the like: back off instead of spinning.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

impl Shared {
    pub(crate) fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }
}

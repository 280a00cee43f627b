//! Listeners, client sessions and upstream connections.

pub mod brokers;
mod epochs;
mod groups;
mod produce;
mod producer_ids;
mod responses;
mod session;
mod topic_ids;
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
use crate::mirror::producers::{file_name, ProducerMap};
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
    /// One mirror per direction, keyed by the cluster mirrored from; present
    /// when a second cluster is configured. Only the primary's mirrors.
    mirrors: HashMap<ClusterName, Arc<Mirror>>,
    /// Consumer groups seen in client traffic.
    pub groups: crate::cutover::KnownGroups,
    /// Transactional producers seen in client traffic.
    pub transactional: crate::cutover::TransactionalProducers,
    /// Consumer group members seen in client traffic.
    pub members: crate::cutover::Members,
    /// Committed offsets a flip carried over.
    pub carried: crate::cutover::CarriedOffsets,
    /// The primary, the fence and the Produce requests in flight.
    pub signals: crate::cutover::RouteSignals,
    /// Leader epochs as clients see them.
    pub epochs: crate::cutover::epochs::LeaderEpochs,
    /// Producer ids each cluster issued to clients.
    pub issued: producer_ids::IssuedProducerIds,
    /// Topic ids as clients see them.
    topic_ids: topic_ids::TopicIds,
    /// One flip at a time.
    pub(crate) flip_lock: tokio::sync::Mutex<()>,
    pub(crate) last_flip: std::sync::Mutex<Option<crate::cutover::flip::FlipReport>>,
    state: StateDir,
    versions: RwLock<HashMap<ClusterName, ApiRanges>>,
    shutdown: CancellationToken,
    sessions: TaskTracker,
    next_bootstrap: AtomicUsize,
}

impl Shared {
    pub fn primary(&self) -> ClusterName {
        self.signals.primary()
    }

    /// The mirror out of the current primary.
    pub fn mirror(&self) -> Option<&Arc<Mirror>> {
        self.mirrors.get(&self.primary())
    }

    /// The mirror out of `source`.
    pub fn mirror_from(&self, source: ClusterName) -> Option<&Arc<Mirror>> {
        self.mirrors.get(&source)
    }

    pub fn route(&self) -> Route {
        Route {
            primary: self.primary(),
            mirror: self.mirror().map_or(MirrorMode::Off, |m| m.mode()),
        }
    }

    pub(crate) fn store_route(&self, route: &Route) -> Result<(), StateError> {
        self.state.store(ROUTE_FILE, route)
    }

    /// Switches mirror mode and persists the route.
    pub fn set_mirror_mode(&self, mode: MirrorMode) -> Result<Route, String> {
        let Some(mirror) = self.mirror() else {
            return Err("mirroring needs [clusters.b] in the configuration".into());
        };
        let before = mirror.mode();
        mirror.set_mode(mode);
        let route = self.route();
        if let Err(e) = self.store_route(&route) {
            mirror.set_mode(before);
            return Err(format!("cannot persist the route: {e}"));
        }
        tracing::info!(from = ?before, to = ?mode, target = %mirror.target(), "mirror mode changed");
        Ok(route)
    }

    /// Translates a committed offset of `topic`-`partition` in `from` to the
    /// offset in the other cluster where a reader resumes without skipping
    /// a record: through the records mirrored out of `from`, or back
    /// through those mirrored into it.
    pub fn translate_offset(
        &self,
        from: ClusterName,
        topic: &str,
        partition: i32,
        offset: i64,
    ) -> Result<i64, String> {
        use crate::translate::Translated;
        let forward = self
            .mirror_from(from)
            .and_then(|m| m.translation().partition(topic, partition));
        let back = self
            .mirror_from(from.other())
            .and_then(|m| m.translation().partition(topic, partition));
        // A record mirrored either way translates exactly.
        if let Some(Translated::Offset(o)) = forward
            .as_ref()
            .filter(|f| f.contains_a(offset))
            .map(|f| f.a_to_b(offset))
        {
            return Ok(o);
        }
        if let Some(Translated::Offset(o)) = back
            .as_ref()
            .filter(|b| b.contains_b(offset))
            .map(|b| b.b_to_a(offset))
        {
            return Ok(o);
        }
        let mut end = None;
        if let Some(f) = &forward {
            match f.a_to_b(offset) {
                Translated::Offset(o) => return Ok(o),
                Translated::End(o) if Some(offset) == f.end_a() => end = Some(o),
                _ => {}
            }
        }
        if let Some(b) = &back {
            match b.b_to_a(offset) {
                Translated::Offset(o) => return Ok(o),
                Translated::End(o) if Some(offset) == b.end_b() => {
                    end = Some(end.map_or(o, |e: i64| e.max(o)))
                }
                _ => {}
            }
        }
        if let Some(o) = end {
            return Ok(o);
        }
        let first = forward.as_ref().and_then(|f| f.first_a());
        let last = forward.as_ref().and_then(|f| f.end_a());
        Err(match (first, last) {
            (Some(first), _) if offset < first => {
                format!("committed offset {offset} lies before the first mirrored record ({first})")
            }
            (_, Some(end)) if offset > end => format!(
                "committed offset {offset} is beyond the last mirrored record ({})",
                end - 1
            ),
            _ => format!("nothing of {topic}-{partition} has been mirrored yet"),
        })
    }

    /// [`Shared::translate_offset`], and for a partition nothing was
    /// mirrored from or into yet: a group that has read it to its end
    /// resumes where the other cluster's copy ends (every record written
    /// to it from now on is mirrored there). Asks both clusters for the
    /// partition's end.
    pub async fn translate_committed(
        &self,
        from: ClusterName,
        topic: &str,
        partition: i32,
        offset: i64,
    ) -> Result<i64, String> {
        let reason = match self.translate_offset(from, topic, partition, offset) {
            Ok(o) => return Ok(o),
            Err(reason) => reason,
        };
        let mirrored_any = [from, from.other()].into_iter().any(|c| {
            self.mirror_from(c)
                .is_some_and(|m| m.translation().partition(topic, partition).is_some())
        });
        let Some(mirror) = self.mirror_from(from).filter(|_| !mirrored_any) else {
            return Err(reason);
        };
        let end = mirror
            .source()
            .log_end(topic, partition)
            .await
            .map_err(|e| format!("{reason}; and its end in {from} is unknown: {e}"))?;
        if offset < end {
            return Err(format!(
                "{reason}: committed offset {offset} is before the end of {topic}-{partition} \
                 ({end}), and nothing of it has been mirrored"
            ));
        }
        let to = from.other();
        mirror
            .client()
            .log_end(topic, partition)
            .await
            .map_err(|e| format!("{topic}-{partition} was read to its end, but cluster {to} has no copy to resume in: {e}"))
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

    fn present_epoch(&self, real: i32) -> i32 {
        self.shared.epochs.present(self.cluster, real)
    }

    fn present_topic_id(&self, topic: &str, real: uuid::Uuid) -> uuid::Uuid {
        self.shared.topic_ids.presented(self.cluster, topic, real)
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
        let mut mirrors = HashMap::new();
        if let (Some(a), Some(b)) = (
            config.cluster(ClusterName::A),
            config.cluster(ClusterName::B),
        ) {
            let timeout = config.upstream.request_timeout();
            let clients = [
                Arc::new(ClusterClient::new(
                    ClusterName::A,
                    a.bootstrap_addrs(),
                    timeout,
                )),
                Arc::new(ClusterClient::new(
                    ClusterName::B,
                    b.bootstrap_addrs(),
                    timeout,
                )),
            ];
            let open_map = |source: ClusterName| {
                ProducerMap::open(state.clone(), file_name(source, source.other())).map(Arc::new)
            };
            let maps = [open_map(ClusterName::A)?, open_map(ClusterName::B)?];
            for (source, target) in [(0, 1), (1, 0)] {
                let name = clients[source].cluster();
                let mode = if name == route.primary {
                    route.mirror
                } else {
                    MirrorMode::Off
                };
                let mirror = Mirror::new(
                    clients[source].clone(),
                    clients[target].clone(),
                    mode,
                    &state,
                    &config.mirror,
                    shutdown.clone(),
                    maps[source].clone(),
                    maps[target].clone(),
                )
                .map_err(StartError::Translation)?;
                mirrors.insert(name, mirror);
            }
            Mirror::pair(&mirrors[&ClusterName::A], &mirrors[&ClusterName::B]);
        }
        let brokers = BrokerRegistry::open(
            state.clone(),
            bootstrap_addr.ip(),
            &config.listen.advertised_host,
            config.listen.node_port_base,
        )?;
        let shared = Arc::new(Shared {
            signals: crate::cutover::RouteSignals::new(route.primary),
            epochs: crate::cutover::epochs::LeaderEpochs::open(state.clone(), route.primary)?,
            issued: producer_ids::IssuedProducerIds::open(state.clone())?,
            topic_ids: topic_ids::TopicIds::open(state.clone())?,
            config,
            brokers,
            metrics: Metrics::new(),
            mirrors,
            groups: crate::cutover::KnownGroups::open(state.clone())?,
            transactional: crate::cutover::TransactionalProducers::open(state.clone())?,
            members: crate::cutover::Members::default(),
            carried: crate::cutover::CarriedOffsets::open(state.clone())?,
            flip_lock: tokio::sync::Mutex::new(()),
            last_flip: std::sync::Mutex::new(None),
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
        {
            // Presented topic ids reach the disk within a second.
            let weak = Arc::downgrade(&shared);
            let shutdown = shared.shutdown.clone();
            tokio::spawn(async move {
                loop {
                    let stop = tokio::select! {
                        _ = tokio::time::sleep(Duration::from_secs(1)) => false,
                        _ = shutdown.cancelled() => true,
                    };
                    let Some(shared) = weak.upgrade() else { return };
                    let ids = shared.clone();
                    let _ = tokio::task::spawn_blocking(move || ids.topic_ids.persist()).await;
                    if stop {
                        return;
                    }
                }
            });
        }
        tokio::spawn(crate::admin::serve(shared.clone(), admin));
        for cluster in [ClusterName::A, ClusterName::B] {
            if shared.config.cluster(cluster).is_some() {
                tokio::spawn(upstream::probe_versions(shared.clone(), cluster));
            }
        }
        shared
            .metrics
            .primary_is_b
            .set(f64::from(u8::from(shared.primary() == ClusterName::B)));
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

//! `proxy.toml`: what the operator writes, parsed strictly.
//!
//! Unknown keys are rejected (with the key's name and line), because a typo in
//! a migration tool's configuration must never be silently ignored.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::ConfigError;

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub listen: ListenConfig,
    pub clusters: ClustersConfig,
    #[serde(default)]
    pub route: RouteConfig,
    #[serde(default)]
    pub admin: AdminConfig,
    #[serde(default)]
    pub state: StateConfig,
    #[serde(default)]
    pub upstream: UpstreamConfig,
    #[serde(default)]
    pub shutdown: ShutdownConfig,
    #[serde(default)]
    pub mirror: MirrorConfig,
    #[serde(default)]
    pub cutover: CutoverConfig,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct CutoverConfig {
    /// The whole flip must finish within this; otherwise it is aborted and
    /// clients stay on the cluster they were on.
    #[serde(default = "default_flip_deadline_ms")]
    pub deadline_ms: u64,
    /// How long a Produce or JoinGroup is held while the flip runs; past it
    /// the client gets a retriable error.
    #[serde(default = "default_fence_hold_ms")]
    pub fence_hold_ms: u64,
    /// How long the flip waits for consumer group members to stop
    /// consuming (they are told to rejoin and commit on revocation).
    #[serde(default = "default_group_wait_ms")]
    pub group_wait_ms: u64,
}

fn default_flip_deadline_ms() -> u64 {
    30_000
}

fn default_fence_hold_ms() -> u64 {
    20_000
}

fn default_group_wait_ms() -> u64 {
    8_000
}

impl Default for CutoverConfig {
    fn default() -> Self {
        CutoverConfig {
            deadline_ms: default_flip_deadline_ms(),
            fence_hold_ms: default_fence_hold_ms(),
            group_wait_ms: default_group_wait_ms(),
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct MirrorConfig {
    /// In sync mode, how long a client's acknowledgement waits for the
    /// mirror; past it the batch is made durable in the mirror journal and
    /// the client gets the primary's acknowledgement.
    #[serde(default = "default_sync_timeout_ms")]
    pub sync_timeout_ms: u64,
    /// How long the mirror waits for a missing primary offset range before
    /// counting it as records that did not pass through switchyard.
    #[serde(default = "default_gap_timeout_ms")]
    pub gap_timeout_ms: u64,
    /// Bytes of batches waiting for the mirror cluster held in memory;
    /// past it, batches already in the mirror journal wait only there and
    /// are read back when their turn comes.
    #[serde(default = "default_max_queued_bytes")]
    pub max_queued_bytes: u64,
}

fn default_max_queued_bytes() -> u64 {
    256 * 1024 * 1024
}

fn default_sync_timeout_ms() -> u64 {
    5_000
}

fn default_gap_timeout_ms() -> u64 {
    7_000
}

impl Default for MirrorConfig {
    fn default() -> Self {
        MirrorConfig {
            sync_timeout_ms: default_sync_timeout_ms(),
            gap_timeout_ms: default_gap_timeout_ms(),
            max_queued_bytes: default_max_queued_bytes(),
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ListenConfig {
    /// What clients put in `bootstrap.servers`.
    pub bootstrap: String,
    /// Host written into rewritten broker addresses.
    pub advertised_host: String,
    /// Virtual broker N listens on `node_port_base + N`; 0 lets the kernel
    /// choose a port per virtual broker (tests, ad-hoc runs).
    pub node_port_base: u16,
    /// Largest request frame accepted from a client, in bytes.
    #[serde(default = "default_max_frame_bytes")]
    pub max_frame_bytes: usize,
    /// Requests a client may have outstanding on one connection before the
    /// proxy stops reading from it.
    #[serde(default = "default_max_in_flight")]
    pub max_in_flight: usize,
}

fn default_max_frame_bytes() -> usize {
    100 * 1024 * 1024
}

fn default_max_in_flight() -> usize {
    1024
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ClustersConfig {
    pub a: ClusterConfig,
    pub b: Option<ClusterConfig>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterConfig {
    /// Comma-separated `host:port` list.
    pub bootstrap: String,
}

impl ClusterConfig {
    pub fn bootstrap_addrs(&self) -> Vec<String> {
        self.bootstrap
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize, Serialize, PartialOrd, Ord)]
#[serde(rename_all = "lowercase")]
pub enum ClusterName {
    A,
    B,
}

impl ClusterName {
    pub fn as_str(self) -> &'static str {
        match self {
            ClusterName::A => "a",
            ClusterName::B => "b",
        }
    }

    pub fn other(self) -> ClusterName {
        match self {
            ClusterName::A => ClusterName::B,
            ClusterName::B => ClusterName::A,
        }
    }
}

impl std::fmt::Display for ClusterName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum MirrorMode {
    #[default]
    Off,
    Sync,
    Async,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    #[serde(default = "default_primary")]
    pub primary: ClusterName,
    #[serde(default)]
    pub mirror: MirrorMode,
}

fn default_primary() -> ClusterName {
    ClusterName::A
}

impl Default for RouteConfig {
    fn default() -> Self {
        RouteConfig {
            primary: ClusterName::A,
            mirror: MirrorMode::Off,
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AdminConfig {
    #[serde(default = "default_admin_listen")]
    pub listen: String,
    /// Bearer token required on every admin call except `/healthz`.
    /// Mandatory when `listen` is not a loopback address.
    pub token: Option<String>,
}

fn default_admin_listen() -> String {
    "127.0.0.1:9644".to_owned()
}

impl Default for AdminConfig {
    fn default() -> Self {
        AdminConfig {
            listen: default_admin_listen(),
            token: None,
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct StateConfig {
    #[serde(default = "default_state_dir")]
    pub dir: PathBuf,
}

fn default_state_dir() -> PathBuf {
    PathBuf::from("./switchyard-state")
}

impl Default for StateConfig {
    fn default() -> Self {
        StateConfig {
            dir: default_state_dir(),
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamConfig {
    #[serde(default = "default_connect_timeout_ms")]
    pub connect_timeout_ms: u64,
    /// Deadline for an upstream answer. Fetch and JoinGroup get their own
    /// long-poll or rebalance wait on top of it.
    #[serde(default = "default_request_timeout_ms")]
    pub request_timeout_ms: u64,
}

fn default_connect_timeout_ms() -> u64 {
    5_000
}

fn default_request_timeout_ms() -> u64 {
    30_000
}

impl Default for UpstreamConfig {
    fn default() -> Self {
        UpstreamConfig {
            connect_timeout_ms: default_connect_timeout_ms(),
            request_timeout_ms: default_request_timeout_ms(),
        }
    }
}

impl UpstreamConfig {
    pub fn connect_timeout(&self) -> Duration {
        Duration::from_millis(self.connect_timeout_ms)
    }

    pub fn request_timeout(&self) -> Duration {
        Duration::from_millis(self.request_timeout_ms)
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ShutdownConfig {
    /// How long in-flight requests may take to finish after SIGTERM/SIGINT.
    #[serde(default = "default_grace_ms")]
    pub grace_ms: u64,
}

fn default_grace_ms() -> u64 {
    10_000
}

impl Default for ShutdownConfig {
    fn default() -> Self {
        ShutdownConfig {
            grace_ms: default_grace_ms(),
        }
    }
}

impl Config {
    pub fn from_toml_str(text: &str) -> Result<Config, ConfigError> {
        let config: Config = toml::from_str(text).map_err(|e| ConfigError::Parse {
            message: describe_toml_error(text, &e),
        })?;
        config.validate()?;
        Ok(config)
    }

    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Config::from_toml_str(&text).map_err(|e| e.in_file(path))
    }

    pub fn cluster(&self, name: ClusterName) -> Option<&ClusterConfig> {
        match name {
            ClusterName::A => Some(&self.clusters.a),
            ClusterName::B => self.clusters.b.as_ref(),
        }
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |key: &str, reason: String| ConfigError::Invalid {
            key: key.to_owned(),
            reason,
        };
        parse_socket_addr(&self.listen.bootstrap)
            .map_err(|reason| invalid("listen.bootstrap", reason))?;
        if self.listen.advertised_host.trim().is_empty() {
            return Err(invalid(
                "listen.advertised_host",
                "must name the host clients connect to".into(),
            ));
        }
        if self.listen.max_frame_bytes < 1024 {
            return Err(invalid(
                "listen.max_frame_bytes",
                format!(
                    "{} is too small (at least 1024)",
                    self.listen.max_frame_bytes
                ),
            ));
        }
        if self.listen.max_in_flight == 0 {
            return Err(invalid("listen.max_in_flight", "must be at least 1".into()));
        }
        for (key, cluster) in [
            ("clusters.a.bootstrap", Some(&self.clusters.a)),
            ("clusters.b.bootstrap", self.clusters.b.as_ref()),
        ] {
            let Some(cluster) = cluster else { continue };
            let addrs = cluster.bootstrap_addrs();
            if addrs.is_empty() {
                return Err(invalid(key, "no broker address given".into()));
            }
            for addr in addrs {
                if addr
                    .rsplit_once(':')
                    .and_then(|(_, p)| p.parse::<u16>().ok())
                    .is_none()
                {
                    return Err(invalid(key, format!("`{addr}` is not host:port")));
                }
            }
        }
        if self.route.primary == ClusterName::B && self.clusters.b.is_none() {
            return Err(invalid(
                "route.primary",
                "is \"b\" but [clusters.b] is not configured".into(),
            ));
        }
        if self.route.mirror != MirrorMode::Off && self.clusters.b.is_none() {
            return Err(invalid(
                "route.mirror",
                "needs [clusters.b] to mirror into".into(),
            ));
        }
        let admin = parse_socket_addr(&self.admin.listen)
            .map_err(|reason| invalid("admin.listen", reason))?;
        if !admin.ip().is_loopback() && self.admin.token.is_none() {
            return Err(invalid(
                "admin.token",
                format!("is required when admin.listen ({admin}) is not a loopback address"),
            ));
        }
        if self.mirror.gap_timeout_ms <= self.mirror.sync_timeout_ms {
            // A connection's answers are passed on in order, so a batch
            // acknowledged behind a sync wait reaches the mirror up to
            // sync_timeout_ms late; waiting less for it would write its
            // successors first.
            return Err(invalid(
                "mirror.gap_timeout_ms",
                format!(
                    "{} must be greater than mirror.sync_timeout_ms ({})",
                    self.mirror.gap_timeout_ms, self.mirror.sync_timeout_ms
                ),
            ));
        }
        let cutover = &self.cutover;
        if cutover.group_wait_ms >= cutover.deadline_ms || cutover.fence_hold_ms == 0 {
            return Err(invalid(
                "cutover",
                format!(
                    "group_wait_ms ({}) must be less than deadline_ms ({}), and fence_hold_ms greater than zero",
                    cutover.group_wait_ms, cutover.deadline_ms
                ),
            ));
        }
        if self.upstream.request_timeout_ms == 0 || self.upstream.connect_timeout_ms == 0 {
            return Err(invalid(
                "upstream",
                "timeouts must be greater than zero".into(),
            ));
        }
        Ok(())
    }
}

fn parse_socket_addr(text: &str) -> Result<SocketAddr, String> {
    text.parse::<SocketAddr>()
        .map_err(|e| format!("`{text}` is not an ip:port address ({e})"))
}

/// toml's message plus the line it points at, so the operator sees both the
/// key and where it stands.
fn describe_toml_error(text: &str, error: &toml::de::Error) -> String {
    let message = error.message().trim().to_owned();
    match error.span() {
        Some(span) => {
            let line = text[..span.start.min(text.len())].matches('\n').count() + 1;
            let source_line = text.lines().nth(line - 1).unwrap_or("").trim();
            format!("line {line}: {message} (in `{source_line}`)")
        }
        None => message,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"
[listen]
bootstrap = "127.0.0.1:9092"
advertised_host = "127.0.0.1"
node_port_base = 9100

[clusters.a]
bootstrap = "10.0.0.1:9092,10.0.0.2:9092"
"#;

    #[test]
    fn minimal_config_gets_defaults() {
        let config = Config::from_toml_str(MINIMAL).unwrap();
        assert_eq!(config.route.primary, ClusterName::A);
        assert_eq!(config.route.mirror, MirrorMode::Off);
        assert_eq!(config.admin.listen, "127.0.0.1:9644");
        assert_eq!(
            config.clusters.a.bootstrap_addrs(),
            vec!["10.0.0.1:9092", "10.0.0.2:9092"]
        );
    }

    #[test]
    fn unknown_key_is_named_with_its_line() {
        let text = format!("{MINIMAL}\n[route]\nprimary = \"a\"\nmirorr = \"sync\"\n");
        let err = Config::from_toml_str(&text).unwrap_err().to_string();
        assert!(err.contains("mirorr"), "{err}");
        let line = text.lines().position(|l| l.starts_with("mirorr")).unwrap() + 1;
        assert!(err.contains(&format!("line {line}:")), "{err}");
    }

    #[test]
    fn example_config_in_repo_is_valid() {
        let text = include_str!("../proxy.toml");
        Config::from_toml_str(text).unwrap();
    }

    #[test]
    fn primary_b_without_cluster_b_is_rejected() {
        let text = format!("{MINIMAL}\n[route]\nprimary = \"b\"\n");
        let err = Config::from_toml_str(&text).unwrap_err().to_string();
        assert!(err.contains("route.primary"), "{err}");
    }

    #[test]
    fn non_loopback_admin_needs_a_token() {
        let text = format!("{MINIMAL}\n[admin]\nlisten = \"0.0.0.0:9644\"\n");
        let err = Config::from_toml_str(&text).unwrap_err().to_string();
        assert!(err.contains("admin.token"), "{err}");
    }

    #[test]
    fn gap_timeout_must_outlast_sync_waits() {
        let text = format!("{MINIMAL}\n[mirror]\nsync_timeout_ms = 5000\ngap_timeout_ms = 2000\n");
        let err = Config::from_toml_str(&text).unwrap_err().to_string();
        assert!(err.contains("mirror.gap_timeout_ms"), "{err}");
    }

    #[test]
    fn bad_bootstrap_is_named() {
        let text = MINIMAL.replace("10.0.0.2:9092", "10.0.0.2");
        let err = Config::from_toml_str(&text).unwrap_err().to_string();
        assert!(err.contains("clusters.a.bootstrap"), "{err}");
        assert!(err.contains("10.0.0.2"), "{err}");
    }
}

//! Errors, labelled by the side that failed and whether a retry can help.

use std::io;
use std::path::PathBuf;

use crate::config::ClusterName;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read { path: PathBuf, source: io::Error },
    #[error("{message}")]
    Parse { message: String },
    #[error("invalid `{key}`: {reason}")]
    Invalid { key: String, reason: String },
    #[error("{path}: {inner}")]
    InFile {
        path: PathBuf,
        inner: Box<ConfigError>,
    },
}

impl ConfigError {
    pub fn in_file(self, path: &std::path::Path) -> ConfigError {
        ConfigError::InFile {
            path: path.to_owned(),
            inner: Box::new(self),
        }
    }
}

/// Which party broke a connection: the label used in logs and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    Client,
    Cluster(ClusterName),
    Proxy,
}

impl Side {
    pub fn label(self) -> &'static str {
        match self {
            Side::Client => "client",
            Side::Cluster(ClusterName::A) => "cluster_a",
            Side::Cluster(ClusterName::B) => "cluster_b",
            Side::Proxy => "proxy",
        }
    }
}

/// Why a client session ended abnormally.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    #[error("client sent a bad frame: {0}")]
    BadFrame(#[from] crate::protocol::frame::FrameError),
    #[error("client sent a bad request: {0}")]
    BadRequest(String),
    #[error("cannot reach cluster {cluster} (tried {tried}): {reason}")]
    UpstreamConnect {
        cluster: ClusterName,
        tried: String,
        reason: String,
    },
    #[error("cluster {cluster} broker {addr}: {reason}")]
    Upstream {
        cluster: ClusterName,
        addr: String,
        reason: String,
    },
    #[error("cluster {cluster} broker {addr} did not answer {api} (correlation id {correlation_id}) within {waited_ms} ms")]
    UpstreamTimeout {
        cluster: ClusterName,
        addr: String,
        api: &'static str,
        correlation_id: i32,
        waited_ms: u64,
    },
    #[error("cannot rewrite {api} v{version} response from cluster {cluster}: {reason}")]
    Rewrite {
        cluster: ClusterName,
        api: &'static str,
        version: i16,
        reason: String,
    },
    #[error("client connection: {0}")]
    ClientIo(io::Error),
    /// switchyard's own fault: an answer it built and could not encode.
    #[error("switchyard could not encode an answer it built ({0})")]
    Proxy(String),
}

impl SessionError {
    pub fn side(&self) -> Side {
        match self {
            SessionError::BadFrame(_) | SessionError::BadRequest(_) | SessionError::ClientIo(_) => {
                Side::Client
            }
            SessionError::UpstreamConnect { cluster, .. }
            | SessionError::Upstream { cluster, .. }
            | SessionError::UpstreamTimeout { cluster, .. }
            | SessionError::Rewrite { cluster, .. } => Side::Cluster(*cluster),
            SessionError::Proxy(_) => Side::Proxy,
        }
    }

    /// A short stable label for the `reason` of an upstream error metric.
    pub fn kind(&self) -> &'static str {
        match self {
            SessionError::BadFrame(_) => "bad_frame",
            SessionError::BadRequest(_) => "bad_request",
            SessionError::UpstreamConnect { .. } => "connect",
            SessionError::Upstream { .. } => "io",
            SessionError::UpstreamTimeout { .. } => "timeout",
            SessionError::Rewrite { .. } => "undecodable_response",
            SessionError::ClientIo(_) => "client_io",
            SessionError::Proxy(_) => "proxy",
        }
    }
}

//! Every metric name and label in one place.
//!
//! Per-API handles are created once, so the per-request cost is an atomic
//! add, not a registry lookup.

use std::sync::OnceLock;

use kafka_protocol::messages::ApiKey;
use metrics::{counter, gauge, histogram, Counter, Gauge, Histogram};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

use crate::config::ClusterName;
use crate::protocol::versions::api_name;

pub const CONNECTIONS_TOTAL: &str = "switchyard_client_connections_total";
pub const CONNECTIONS_ACTIVE: &str = "switchyard_client_connections_active";
pub const REQUESTS_TOTAL: &str = "switchyard_requests_total";
pub const REQUEST_DURATION: &str = "switchyard_request_duration_seconds";
pub const BYTES_IN: &str = "switchyard_client_bytes_in_total";
pub const BYTES_OUT: &str = "switchyard_client_bytes_out_total";
pub const UPSTREAM_ERRORS: &str = "switchyard_upstream_errors_total";
pub const CLIENT_ERRORS: &str = "switchyard_client_errors_total";
pub const VIRTUAL_BROKERS: &str = "switchyard_virtual_brokers";
pub const MIRROR_SYNC_TIMEOUTS: &str = "switchyard_mirror_sync_timeouts_total";
pub const MIRROR_TRANSACTIONAL_REFUSED: &str = "switchyard_mirror_transactional_refused_total";

pub const FLIPS_TOTAL: &str = "switchyard_flips_total";
pub const FLIP_DURATION: &str = "switchyard_last_flip_duration_seconds";
pub const PRIMARY: &str = "switchyard_primary_is_b";
pub const FENCED_REQUESTS: &str = "switchyard_fenced_requests_total";
pub const STALE_MEMBER_REQUESTS: &str = "switchyard_stale_member_requests_total";
pub const RESTAMPED_BATCHES: &str = "switchyard_restamped_batches_total";
pub const CARRIED_OFFSETS_SERVED: &str = "switchyard_carried_offsets_served_total";
pub const STALE_EPOCHS: &str = "switchyard_stale_leader_epochs_total";
pub const STALE_POSITIONS_HELD: &str = "switchyard_stale_positions_held_total";

pub const MIRROR_LAG_RECORDS: &str = "switchyard_mirror_lag_records";
pub const MIRROR_LAG_BYTES: &str = "switchyard_mirror_lag_bytes";
pub const MIRROR_BATCHES: &str = "switchyard_mirror_batches_total";
pub const MIRROR_RETRIES: &str = "switchyard_mirror_retries_total";
pub const MIRROR_DIVERGENT: &str = "switchyard_mirror_divergent_records_total";
/// Bytes of batches waiting for the mirror cluster that are held in memory
/// (bounded by `mirror.max_queued_bytes`; the rest wait in the journal).
pub const MIRROR_QUEUED_BYTES: &str = "switchyard_mirror_queued_bytes";
pub const MIRROR_SPILLED_BATCHES: &str = "switchyard_mirror_spilled_batches_total";
/// Partitions whose mirroring stopped on an error that asking again cannot
/// cure, labelled by the cluster written to.
pub const MIRROR_STOPPED_PARTITIONS: &str = "switchyard_mirror_stopped_partitions";

/// The mirror's numbers, labelled by the cluster written to.
pub struct MirrorMetrics {
    pub lag_records: Gauge,
    pub lag_bytes: Gauge,
    pub batches: Counter,
    pub retries: Counter,
    pub divergent_records: Counter,
    /// Bytes of queued batches held in memory.
    pub queued_bytes: Gauge,
    /// Queued batches let go from memory (read back from the journal).
    pub spilled_batches: Counter,
}

impl MirrorMetrics {
    pub fn new(target: ClusterName) -> MirrorMetrics {
        prometheus();
        let cluster = target.as_str();
        MirrorMetrics {
            lag_records: gauge!(MIRROR_LAG_RECORDS, "cluster" => cluster),
            lag_bytes: gauge!(MIRROR_LAG_BYTES, "cluster" => cluster),
            batches: counter!(MIRROR_BATCHES, "cluster" => cluster),
            retries: counter!(MIRROR_RETRIES, "cluster" => cluster),
            divergent_records: counter!(MIRROR_DIVERGENT, "cluster" => cluster),
            queued_bytes: gauge!(MIRROR_QUEUED_BYTES, "cluster" => cluster),
            spilled_batches: counter!(MIRROR_SPILLED_BATCHES, "cluster" => cluster),
        }
    }
}

const LATENCY_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0, 30.0,
];

static PROMETHEUS: OnceLock<PrometheusHandle> = OnceLock::new();

/// Installs the process-wide Prometheus recorder (once; later calls reuse it).
pub fn prometheus() -> &'static PrometheusHandle {
    PROMETHEUS.get_or_init(|| {
        let builder = PrometheusBuilder::new()
            .set_buckets_for_metric(Matcher::Full(REQUEST_DURATION.to_owned()), LATENCY_BUCKETS)
            .expect("latency buckets are not empty");
        match builder.install_recorder() {
            Ok(handle) => handle,
            // Another recorder is already global (an embedding program set
            // one up): render from a private one rather than fail.
            Err(_) => PrometheusBuilder::new().build_recorder().handle(),
        }
    })
}

pub struct ApiMetrics {
    pub requests: Counter,
    pub latency: Histogram,
}

pub struct Metrics {
    per_api: Vec<Option<ApiMetrics>>,
    pub connections_total: Counter,
    pub connections_active: Gauge,
    pub bytes_in: Counter,
    pub bytes_out: Counter,
    pub virtual_brokers: Gauge,
    pub mirror_sync_timeouts: Counter,
    pub mirror_transactional_refused: Counter,
    /// Produce and JoinGroup requests held while a flip ran.
    pub fenced_requests: Counter,
    /// Group requests from members of the previous primary, answered
    /// UNKNOWN_MEMBER_ID so they rejoin.
    pub stale_member_requests: Counter,
    /// Client batches restamped with the producer id that stands for the
    /// client's on the current primary.
    pub restamped_batches: Counter,
    /// Committed offsets answered from the ones carried over by a flip.
    pub carried_offsets_served: Counter,
    /// Leader epochs from before the last move that clients sent.
    pub stale_epochs: Counter,
    /// Consumer position checks (OffsetForLeaderEpoch) for positions from
    /// before the last move, held until the consumer repositions.
    pub stale_positions_held: Counter,
    pub primary_is_b: Gauge,
    pub last_flip_duration: Gauge,
}

impl Metrics {
    pub fn new() -> Metrics {
        prometheus();
        let mut per_api: Vec<Option<ApiMetrics>> =
            (0..=i16::MAX as usize).take(100).map(|_| None).collect();
        for api in ApiKey::iter() {
            let name = api_name(api);
            per_api[api as usize] = Some(ApiMetrics {
                requests: counter!(REQUESTS_TOTAL, "api" => name),
                latency: histogram!(REQUEST_DURATION, "api" => name),
            });
        }
        Metrics {
            per_api,
            connections_total: counter!(CONNECTIONS_TOTAL),
            connections_active: gauge!(CONNECTIONS_ACTIVE),
            bytes_in: counter!(BYTES_IN),
            bytes_out: counter!(BYTES_OUT),
            virtual_brokers: gauge!(VIRTUAL_BROKERS),
            mirror_sync_timeouts: counter!(MIRROR_SYNC_TIMEOUTS),
            mirror_transactional_refused: counter!(MIRROR_TRANSACTIONAL_REFUSED),
            fenced_requests: counter!(FENCED_REQUESTS),
            stale_member_requests: counter!(STALE_MEMBER_REQUESTS),
            restamped_batches: counter!(RESTAMPED_BATCHES),
            carried_offsets_served: counter!(CARRIED_OFFSETS_SERVED),
            stale_epochs: counter!(STALE_EPOCHS),
            stale_positions_held: counter!(STALE_POSITIONS_HELD),
            primary_is_b: gauge!(PRIMARY),
            last_flip_duration: gauge!(FLIP_DURATION),
        }
    }

    pub fn api(&self, api: ApiKey) -> Option<&ApiMetrics> {
        self.per_api.get(api as usize).and_then(Option::as_ref)
    }

    pub fn upstream_error(&self, cluster: ClusterName, reason: &'static str) {
        counter!(UPSTREAM_ERRORS, "cluster" => cluster.as_str(), "reason" => reason).increment(1);
    }

    pub fn flip(&self, outcome: &'static str) {
        counter!(FLIPS_TOTAL, "outcome" => outcome).increment(1);
    }

    pub fn client_error(&self, reason: &'static str) {
        counter!(CLIENT_ERRORS, "reason" => reason).increment(1);
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

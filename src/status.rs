//! What `GET /status` answers, as types: the admin API builds them and
//! `switchyard status` reads them, so the two cannot drift apart.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::config::{ClusterName, MirrorMode};
use crate::cutover::epochs::Era;
use crate::cutover::flip::FlipReport;
use crate::cutover::readiness::Readiness;
use crate::mirror::PartitionStatus;

#[derive(Debug, Serialize, Deserialize)]
pub struct Status {
    pub primary: ClusterName,
    pub mirror: MirrorMode,
    pub cutover: CutoverStatus,
    /// `None` without a second cluster.
    pub mirroring: Option<Mirroring>,
    /// Whether a flip would be lossless now, per group and partition.
    pub readiness: Readiness,
    pub virtual_cluster_id: String,
    pub client_connections: usize,
    pub clusters: Vec<ClusterStatus>,
    pub virtual_brokers: Vec<VirtualBrokerStatus>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct CutoverStatus {
    /// Where clients started (the configured primary).
    pub home: ClusterName,
    pub fenced: bool,
    pub last_flip: Option<FlipReport>,
    /// Offsets switchyard serves for groups until they commit on the new
    /// primary themselves: group, then "topic/partition".
    pub carried_offsets: BTreeMap<String, BTreeMap<String, i64>>,
    pub leader_epoch_eras: Vec<Era>,
    pub transactional_producers: Vec<String>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct Mirroring {
    pub mode: MirrorMode,
    pub target: ClusterName,
    pub lag_records: i64,
    pub lag_bytes: u64,
    /// Of the lag, what is held in memory (the rest waits in the journal).
    pub queued_bytes_in_memory: u64,
    pub max_queued_bytes: u64,
    pub divergent_records: i64,
    pub partitions: Vec<MirrorPartition>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct MirrorPartition {
    pub topic: String,
    pub partition: i32,
    #[serde(flatten)]
    pub live: PartitionStatus,
    pub translation_segments: usize,
    pub translated_from: Option<i64>,
    pub translated_to: Option<i64>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct ClusterStatus {
    pub name: ClusterName,
    pub bootstrap: String,
    pub api_versions_known: bool,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct VirtualBrokerStatus {
    pub virtual_id: i32,
    pub cluster: ClusterName,
    pub node_id: i32,
    pub real_address: Option<String>,
    pub listen_port: Option<u16>,
}

//! Virtual brokers: the only brokers a client ever sees.
//!
//! A real (cluster, node id) pair gets a virtual id on first sight; the
//! assignment and the virtual cluster id are persisted so that a restart or a
//! flip never moves them. Each virtual broker has a listener of its own.
//!
//! A virtual id stands for at most one broker of each cluster: the first
//! broker of the second cluster seen takes the lowest virtual id that has
//! none of that cluster yet. A flip registers the new primary's brokers
//! before it switches, so clients find the same broker ids at the same
//! addresses, now backed by the other cluster.

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, MutexGuard};

use base64::Engine;
use kafka_protocol::protocol::StrBytes;
use serde::{Deserialize, Serialize};

use crate::config::ClusterName;
use crate::rewrite::Advertised;
use crate::state::{StateDir, StateError};

const STATE_FILE: &str = "virtual-brokers.json";

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct BrokerRecord {
    pub virtual_id: i32,
    pub cluster: ClusterName,
    pub node_id: i32,
    /// The real address, once a response has named it.
    pub address: Option<String>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct RegistryFile {
    cluster_id: String,
    brokers: Vec<BrokerRecord>,
}

/// Called with each newly bound virtual broker listener.
pub type ListenerSpawner = Arc<dyn Fn(i32, std::net::TcpListener) + Send + Sync>;

struct Inner {
    by_real: HashMap<(ClusterName, i32), i32>,
    /// By virtual id, then cluster: one record per cluster a virtual id
    /// stands for.
    records: BTreeMap<(i32, ClusterName), BrokerRecord>,
    /// Port each virtual broker listens on (and is advertised at).
    ports: HashMap<i32, u16>,
}

pub struct BrokerRegistry {
    state: StateDir,
    listen_ip: IpAddr,
    advertised_host: StrBytes,
    node_port_base: u16,
    cluster_id: StrBytes,
    inner: Mutex<Inner>,
    spawner: Mutex<Option<ListenerSpawner>>,
}

impl BrokerRegistry {
    pub fn open(
        state: StateDir,
        listen_ip: IpAddr,
        advertised_host: &str,
        node_port_base: u16,
    ) -> Result<BrokerRegistry, StateError> {
        let mut file: RegistryFile = state.load(STATE_FILE)?.unwrap_or_default();
        let fresh = file.cluster_id.is_empty();
        if fresh {
            let bytes: [u8; 16] = rand::random();
            file.cluster_id = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
        }
        let mut inner = Inner {
            by_real: HashMap::new(),
            records: BTreeMap::new(),
            ports: HashMap::new(),
        };
        for record in file.brokers {
            inner
                .by_real
                .insert((record.cluster, record.node_id), record.virtual_id);
            inner
                .records
                .insert((record.virtual_id, record.cluster), record);
        }
        let registry = BrokerRegistry {
            state,
            listen_ip,
            advertised_host: StrBytes::from_string(advertised_host.to_owned()),
            node_port_base,
            cluster_id: StrBytes::from_string(file.cluster_id),
            inner: Mutex::new(inner),
            spawner: Mutex::new(None),
        };
        if fresh {
            let inner = registry.lock();
            registry.persist(&inner)?;
        }
        Ok(registry)
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub fn cluster_id(&self) -> StrBytes {
        self.cluster_id.clone()
    }

    /// Starts serving: binds a listener for every virtual broker known from
    /// the state directory, and for every one assigned from now on.
    pub fn start_listeners(&self, spawner: ListenerSpawner) {
        *self.spawner.lock().unwrap_or_else(|p| p.into_inner()) = Some(spawner);
        let mut inner = self.lock();
        let mut ids: Vec<i32> = inner.records.keys().map(|(id, _)| *id).collect();
        ids.dedup();
        for id in ids {
            self.bind(&mut inner, id);
        }
    }

    fn bind(&self, inner: &mut Inner, virtual_id: i32) {
        if inner.ports.contains_key(&virtual_id) {
            return;
        }
        let port = if self.node_port_base == 0 {
            0
        } else {
            match u16::try_from(i32::from(self.node_port_base) + virtual_id) {
                Ok(port) => port,
                Err(_) => {
                    tracing::error!(virtual_id, "virtual broker port is beyond 65535");
                    return;
                }
            }
        };
        let spawner = self
            .spawner
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let Some(spawner) = spawner else { return };
        let addr = SocketAddr::new(self.listen_ip, port);
        match std::net::TcpListener::bind(addr).and_then(|l| {
            l.set_nonblocking(true)?;
            Ok(l)
        }) {
            Ok(listener) => {
                let bound = listener.local_addr().map(|a| a.port()).unwrap_or(port);
                inner.ports.insert(virtual_id, bound);
                tracing::info!(virtual_id, listen = %SocketAddr::new(self.listen_ip, bound), "virtual broker listening");
                spawner(virtual_id, listener);
            }
            Err(e) => {
                tracing::error!(virtual_id, %addr, error = %e, "cannot listen for virtual broker");
            }
        }
    }

    fn advertised(&self, inner: &Inner, virtual_id: i32) -> Advertised {
        let port = inner
            .ports
            .get(&virtual_id)
            .map(|&p| i32::from(p))
            .unwrap_or(i32::from(self.node_port_base) + virtual_id);
        Advertised {
            node_id: virtual_id,
            host: self.advertised_host.clone(),
            port,
        }
    }

    /// The virtual broker for a real broker, assigned on first sight.
    pub fn virtual_broker(
        &self,
        cluster: ClusterName,
        node_id: i32,
        real: Option<(&str, i32)>,
    ) -> Advertised {
        let address = real.map(|(host, port)| format!("{host}:{port}"));
        let mut inner = self.lock();
        let (virtual_id, changed) = match inner.by_real.get(&(cluster, node_id)).copied() {
            Some(id) => {
                let record = inner
                    .records
                    .get_mut(&(id, cluster))
                    .expect("indexes agree");
                let changed = address.is_some() && record.address != address;
                if changed {
                    record.address = address;
                }
                (id, changed)
            }
            None => {
                // The lowest virtual id not yet standing for a broker of
                // this cluster, else a new one.
                let mut ids: Vec<i32> = inner.records.keys().map(|(id, _)| *id).collect();
                ids.dedup();
                let id = ids
                    .iter()
                    .copied()
                    .find(|id| !inner.records.contains_key(&(*id, cluster)))
                    .unwrap_or_else(|| ids.last().map_or(1, |last| last + 1));
                inner.by_real.insert((cluster, node_id), id);
                inner.records.insert(
                    (id, cluster),
                    BrokerRecord {
                        virtual_id: id,
                        cluster,
                        node_id,
                        address,
                    },
                );
                tracing::info!(virtual_id = id, %cluster, node_id, "assigned virtual broker");
                (id, true)
            }
        };
        if changed {
            if let Err(e) = self.persist(&inner) {
                tracing::error!(error = %e, "cannot persist virtual broker assignment");
            }
        }
        self.bind(&mut inner, virtual_id);
        self.advertised(&inner, virtual_id)
    }

    fn persist(&self, inner: &Inner) -> Result<(), StateError> {
        let file = RegistryFile {
            cluster_id: self.cluster_id.to_string(),
            brokers: inner.records.values().cloned().collect(),
        };
        self.state.store(STATE_FILE, &file)
    }

    /// Where a connection to `virtual_id` goes while `active` is primary: the
    /// real broker itself when it belongs to `active`; otherwise a broker of
    /// `active` chosen by the virtual id, so that virtual brokers spread over
    /// the active cluster. Empty when nothing is known of `active` yet.
    pub fn upstream_for(&self, virtual_id: i32, active: ClusterName) -> Vec<String> {
        let inner = self.lock();
        if let Some(address) = inner
            .records
            .get(&(virtual_id, active))
            .and_then(|r| r.address.as_ref())
        {
            return vec![address.clone()];
        }
        let candidates: Vec<&String> = inner
            .records
            .values()
            .filter(|r| r.cluster == active)
            .filter_map(|r| r.address.as_ref())
            .collect();
        if candidates.is_empty() {
            return Vec::new();
        }
        let start = virtual_id.unsigned_abs() as usize % candidates.len();
        candidates[start..]
            .iter()
            .chain(&candidates[..start])
            .map(|s| (*s).clone())
            .collect()
    }

    pub fn records(&self) -> Vec<(BrokerRecord, Option<u16>)> {
        let inner = self.lock();
        inner
            .records
            .values()
            .map(|r| (r.clone(), inner.ports.get(&r.virtual_id).copied()))
            .collect()
    }

    pub fn listen_port(&self, virtual_id: i32) -> Option<u16> {
        self.lock().ports.get(&virtual_id).copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    fn open(dir: &std::path::Path) -> BrokerRegistry {
        BrokerRegistry::open(
            StateDir::open(dir).unwrap(),
            IpAddr::V4(Ipv4Addr::LOCALHOST),
            "proxy.local",
            9100,
        )
        .unwrap()
    }

    #[test]
    fn ids_are_stable_across_restarts() {
        let dir = tempfile::tempdir().unwrap();
        let (a1, b7, cluster_id) = {
            let registry = open(dir.path());
            let a1 = registry.virtual_broker(ClusterName::A, 1, Some(("10.0.0.1", 9092)));
            let b7 = registry.virtual_broker(ClusterName::B, 7, None);
            assert_eq!(
                registry.virtual_broker(ClusterName::A, 1, None).node_id,
                a1.node_id
            );
            (a1, b7, registry.cluster_id())
        };
        assert_eq!(a1.node_id, 1);
        assert_eq!(a1.port, 9101);
        assert_eq!(a1.host.as_str(), "proxy.local");
        // The other cluster's first broker shares the first virtual id.
        assert_eq!(b7.node_id, 1);
        let registry = open(dir.path());
        assert_eq!(registry.cluster_id(), cluster_id);
        assert_eq!(cluster_id.len(), 22);
        assert_eq!(registry.virtual_broker(ClusterName::B, 7, None).node_id, 1);
        assert_eq!(registry.virtual_broker(ClusterName::A, 2, None).node_id, 2);
        assert_eq!(registry.virtual_broker(ClusterName::A, 3, None).node_id, 3);
        assert_eq!(registry.virtual_broker(ClusterName::B, 8, None).node_id, 2);
        assert_eq!(
            registry.upstream_for(1, ClusterName::A),
            vec!["10.0.0.1:9092"]
        );
    }

    #[test]
    fn a_virtual_id_is_served_by_its_broker_in_the_active_cluster() {
        let dir = tempfile::tempdir().unwrap();
        let registry = open(dir.path());
        registry.virtual_broker(ClusterName::A, 1, Some(("a1", 1)));
        registry.virtual_broker(ClusterName::B, 1, Some(("b1", 1)));
        registry.virtual_broker(ClusterName::B, 2, Some(("b2", 2)));
        assert_eq!(registry.upstream_for(1, ClusterName::B), vec!["b1:1"]);
        assert_eq!(registry.upstream_for(2, ClusterName::B), vec!["b2:2"]);
        assert_eq!(registry.upstream_for(1, ClusterName::A), vec!["a1:1"]);
        // Virtual id 2 has no broker of A: one of A's stands in.
        assert_eq!(registry.upstream_for(2, ClusterName::A), vec!["a1:1"]);
        // Two virtual ids (one listener each) standing for three brokers.
        assert_eq!(registry.records().len(), 3);
    }
}

//! The cutover: which consumer groups and members switchyard has seen,
//! whether a flip to the mirror cluster would be lossless for them now, and
//! the state a flip changes (route, fence, offsets carried over).

pub mod epochs;
pub mod flip;
pub mod readiness;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::config::ClusterName;
use crate::state::{StateDir, StateError};

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Where new connections go, the token their sessions end on when the
/// primary moves, the fence, and the Produce requests in flight.
pub struct RouteSignals {
    bound: Mutex<(ClusterName, CancellationToken)>,
    fenced: watch::Sender<bool>,
    in_flight: [Arc<AtomicI64>; 2],
    /// Client sessions bound to each cluster.
    sessions: [Arc<AtomicI64>; 2],
    /// Offset commits forwarded to each cluster and not yet answered.
    commits: [Arc<AtomicI64>; 2],
    /// The cluster a flip has moved clients to and is still settling
    /// offsets on: their offset requests wait until the fence is lifted.
    arriving: Mutex<Option<ClusterName>>,
}

/// A client session bound to a cluster; counted until dropped.
pub struct Bound(Arc<AtomicI64>);

impl Drop for Bound {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// A Produce request forwarded to a cluster and not yet answered; the flip's
/// drain waits for these to end.
pub struct InFlight(Arc<AtomicI64>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

fn slot(cluster: ClusterName) -> usize {
    match cluster {
        ClusterName::A => 0,
        ClusterName::B => 1,
    }
}

impl RouteSignals {
    pub fn new(primary: ClusterName) -> RouteSignals {
        RouteSignals {
            bound: Mutex::new((primary, CancellationToken::new())),
            fenced: watch::channel(false).0,
            in_flight: [Arc::new(AtomicI64::new(0)), Arc::new(AtomicI64::new(0))],
            sessions: [Arc::new(AtomicI64::new(0)), Arc::new(AtomicI64::new(0))],
            commits: [Arc::new(AtomicI64::new(0)), Arc::new(AtomicI64::new(0))],
            arriving: Mutex::new(None),
        }
    }

    pub fn primary(&self) -> ClusterName {
        lock(&self.bound).0
    }

    /// The primary for a new session, a token cancelled when it stops
    /// being the primary, and the session's place in the count of sessions
    /// bound to it.
    pub fn bind(&self) -> (ClusterName, CancellationToken, Bound) {
        let bound = lock(&self.bound);
        let counter = &self.sessions[slot(bound.0)];
        counter.fetch_add(1, Ordering::SeqCst);
        (bound.0, bound.1.clone(), Bound(counter.clone()))
    }

    /// Client sessions still bound to `cluster` (they end once the primary
    /// moved away and what they forwarded is answered).
    pub fn sessions(&self, cluster: ClusterName) -> i64 {
        self.sessions[slot(cluster)].load(Ordering::SeqCst)
    }

    /// Makes `to` the primary and ends the sessions bound to the old one.
    pub fn switch(&self, to: ClusterName) {
        let mut bound = lock(&self.bound);
        if bound.0 == to {
            return;
        }
        bound.1.cancel();
        *bound = (to, CancellationToken::new());
    }

    pub fn set_fenced(&self, fenced: bool) {
        if !fenced {
            *lock(&self.arriving) = None;
        }
        self.fenced.send_replace(fenced);
    }

    /// Marks `cluster` as the one clients were just moved to: until the
    /// fence is lifted, offset commits and fetches there wait for the
    /// flip to settle the groups' offsets.
    pub fn set_arriving(&self, cluster: Option<ClusterName>) {
        *lock(&self.arriving) = cluster;
    }

    pub fn is_arriving(&self, cluster: ClusterName) -> bool {
        *lock(&self.arriving) == Some(cluster) && self.is_fenced()
    }

    pub fn is_fenced(&self) -> bool {
        *self.fenced.borrow()
    }

    /// Resolves once the fence is lifted.
    pub async fn unfenced(&self) {
        let mut rx = self.fenced.subscribe();
        let _ = rx.wait_for(|fenced| !fenced).await;
    }

    /// Counts a Produce request about to be forwarded to `cluster`, unless a
    /// fence is up: then `None`, and nothing was counted. The count is taken
    /// before the fence is read, and the flip raises the fence before
    /// reading the count, so one of the two always sees the other.
    pub fn enter(&self, cluster: ClusterName) -> Option<InFlight> {
        let counter = &self.in_flight[slot(cluster)];
        counter.fetch_add(1, Ordering::SeqCst);
        let guard = InFlight(counter.clone());
        (!self.is_fenced()).then_some(guard)
    }

    /// Counts an offset commit about to be forwarded to `cluster`; the
    /// caller checks for a move after this, so that a flip reading the
    /// count after it moved clients never misses one.
    pub fn enter_commit(&self, cluster: ClusterName) -> InFlight {
        let counter = &self.commits[slot(cluster)];
        counter.fetch_add(1, Ordering::SeqCst);
        InFlight(counter.clone())
    }

    pub fn commits_in_flight(&self, cluster: ClusterName) -> i64 {
        self.commits[slot(cluster)].load(Ordering::SeqCst)
    }

    pub fn in_flight(&self, cluster: ClusterName) -> i64 {
        self.in_flight[slot(cluster)].load(Ordering::SeqCst)
    }
}

/// A consumer group member as seen in its requests.
#[derive(Debug, Clone)]
struct Member {
    group: String,
    /// The cluster the member id belongs to.
    cluster: ClusterName,
    /// When the member last sent a request (`None`: its id was handed out
    /// and never used, as after MEMBER_ID_REQUIRED or a join that failed).
    last_seen: Option<Instant>,
    /// Its JoinGroup is being held by a fence.
    parked: bool,
    /// It was told to drop its partitions (see `lose_partitions_first`).
    told_to_rejoin: bool,
    /// A static member's `group.instance.id`.
    instance: Option<String>,
}

const MEMBERS_KEPT: usize = 100_000;

/// Consumer group members seen in client traffic (member ids are issued by
/// one cluster and mean nothing to the other).
#[derive(Default)]
pub struct Members {
    members: Mutex<HashMap<String, Member>>,
}

impl Members {
    /// Notes a request from `member` of `group` on `cluster`. A member id
    /// keeps the cluster it was first seen on.
    pub fn note(&self, group: &str, member: &str, cluster: ClusterName) {
        if member.is_empty() {
            return;
        }
        let mut members = lock(&self.members);
        if let Some(known) = members.get_mut(member) {
            // The common case, a heartbeat or commit: no allocation.
            known.last_seen = Some(Instant::now());
            return;
        }
        if members.len() >= MEMBERS_KEPT {
            let horizon = Instant::now() - Duration::from_secs(600);
            members.retain(|_, m| m.last_seen.is_some_and(|t| t > horizon));
        }
        members.insert(
            member.to_owned(),
            Member {
                group: group.to_owned(),
                cluster,
                last_seen: Some(Instant::now()),
                parked: false,
                told_to_rejoin: false,
                instance: None,
            },
        );
    }

    /// `cluster` handed out `member`: it belongs there from now on.
    pub fn issued(&self, group: &str, member: &str, cluster: ClusterName) {
        let mut members = lock(&self.members);
        // Handing an id out is not using it: a member counts as consuming
        // once it sends requests with it.
        let entry = members.entry(member.to_owned()).or_insert_with(|| Member {
            group: group.to_owned(),
            cluster,
            last_seen: None,
            parked: false,
            told_to_rejoin: false,
            instance: None,
        });
        entry.cluster = cluster;
        entry.group = group.to_owned();
        entry.parked = false;
    }

    /// The cluster `member` belongs to, when known.
    pub fn cluster_of(&self, member: &str) -> Option<ClusterName> {
        lock(&self.members).get(member).map(|m| m.cluster)
    }

    /// Notes a static member's instance id.
    pub fn set_instance(&self, member: &str, instance: &str) {
        if let Some(m) = lock(&self.members).get_mut(member) {
            m.instance = Some(instance.to_owned());
        }
    }

    /// Members of `cluster` by group: (member id, instance id).
    pub fn of_cluster(
        &self,
        cluster: ClusterName,
    ) -> BTreeMap<String, Vec<(String, Option<String>)>> {
        let mut out: BTreeMap<String, Vec<(String, Option<String>)>> = BTreeMap::new();
        for (id, m) in lock(&self.members).iter() {
            if m.cluster == cluster {
                out.entry(m.group.clone())
                    .or_default()
                    .push((id.clone(), m.instance.clone()));
            }
        }
        out
    }

    /// Whether `member` (of another cluster) must first be told to drop
    /// its partitions; true once per member.
    pub fn lose_partitions_first(&self, member: &str) -> bool {
        let mut members = lock(&self.members);
        match members.get_mut(member) {
            Some(m) if !m.told_to_rejoin => {
                m.told_to_rejoin = true;
                true
            }
            _ => false,
        }
    }

    pub fn set_parked(&self, member: &str, parked: bool) {
        if let Some(m) = lock(&self.members).get_mut(member) {
            m.parked = parked;
        }
    }

    pub fn left(&self, member: &str) {
        lock(&self.members).remove(member);
    }

    /// Members of `cluster` seen since `since` that are still consuming
    /// (not parked at the fence), as "group/member".
    pub fn consuming(&self, cluster: ClusterName, since: Instant) -> Vec<String> {
        lock(&self.members)
            .iter()
            .filter(|(_, m)| {
                m.cluster == cluster && !m.parked && m.last_seen.is_some_and(|t| t >= since)
            })
            .map(|(id, m)| format!("{}/{id}", m.group))
            .collect()
    }
}

const CARRIED_FILE: &str = "carried-offsets.json";

#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
struct CarriedGroup {
    cluster: Option<ClusterName>,
    /// "topic/partition" → offset on `cluster`.
    offsets: BTreeMap<String, i64>,
}

/// Committed offsets a flip carried over that the new primary did not take
/// (a broker refuses an administrative commit while the group has
/// members): OffsetFetch answers on that cluster carry them until the
/// group commits the partition there itself.
pub struct CarriedOffsets {
    state: StateDir,
    groups: Mutex<BTreeMap<String, CarriedGroup>>,
}

fn partition_key(topic: &str, partition: i32) -> String {
    format!("{topic}/{partition}")
}

impl CarriedOffsets {
    pub fn open(state: StateDir) -> Result<CarriedOffsets, StateError> {
        let groups = state.load(CARRIED_FILE)?.unwrap_or_default();
        Ok(CarriedOffsets {
            state,
            groups: Mutex::new(groups),
        })
    }

    fn persist(&self, groups: &BTreeMap<String, CarriedGroup>) {
        if let Err(e) = self.state.store(CARRIED_FILE, groups) {
            tracing::error!(error = %e, "cannot persist carried offsets");
        }
    }

    /// Replaces what is carried for `group`.
    pub fn set(&self, group: &str, cluster: ClusterName, offsets: &BTreeMap<(String, i32), i64>) {
        let mut groups = lock(&self.groups);
        if offsets.is_empty() {
            groups.remove(group);
        } else {
            groups.insert(
                group.to_owned(),
                CarriedGroup {
                    cluster: Some(cluster),
                    offsets: offsets
                        .iter()
                        .map(|((t, p), o)| (partition_key(t, *p), *o))
                        .collect(),
                },
            );
        }
        self.persist(&groups);
    }

    /// Whether anything is carried for any group on `cluster`.
    pub fn any(&self, cluster: ClusterName) -> bool {
        lock(&self.groups)
            .values()
            .any(|g| g.cluster == Some(cluster) && !g.offsets.is_empty())
    }

    /// Whether anything is carried for `group` on `cluster`.
    pub fn has(&self, group: &str, cluster: ClusterName) -> bool {
        lock(&self.groups)
            .get(group)
            .is_some_and(|g| g.cluster == Some(cluster) && !g.offsets.is_empty())
    }

    pub fn get(
        &self,
        group: &str,
        cluster: ClusterName,
        topic: &str,
        partition: i32,
    ) -> Option<i64> {
        let groups = lock(&self.groups);
        let g = groups.get(group)?;
        if g.cluster != Some(cluster) {
            return None;
        }
        g.offsets.get(&partition_key(topic, partition)).copied()
    }

    /// The group committed these partitions on `cluster` itself.
    pub fn committed(&self, group: &str, cluster: ClusterName, partitions: &[(String, i32)]) {
        let mut groups = lock(&self.groups);
        let Some(g) = groups.get_mut(group) else {
            return;
        };
        if g.cluster != Some(cluster) {
            return;
        }
        let before = g.offsets.len();
        for (topic, partition) in partitions {
            g.offsets.remove(&partition_key(topic, *partition));
        }
        if g.offsets.len() != before {
            if g.offsets.is_empty() {
                groups.remove(group);
            }
            self.persist(&groups);
        }
    }

    pub fn snapshot(&self) -> BTreeMap<String, BTreeMap<String, i64>> {
        lock(&self.groups)
            .iter()
            .map(|(g, c)| (g.clone(), c.offsets.clone()))
            .collect()
    }
}

const TRANSACTIONAL_FILE: &str = "transactional-ids.json";

/// Transactional producers seen in client traffic. Transactions are not
/// mirrored (their markers are written by the cluster's coordinator, never
/// through Produce), so readiness names every one of them.
pub struct TransactionalProducers {
    state: StateDir,
    ids: Mutex<BTreeSet<String>>,
}

impl TransactionalProducers {
    pub fn open(state: StateDir) -> Result<TransactionalProducers, StateError> {
        let ids: BTreeSet<String> = state.load(TRANSACTIONAL_FILE)?.unwrap_or_default();
        Ok(TransactionalProducers {
            state,
            ids: Mutex::new(ids),
        })
    }

    pub fn note(&self, transactional_id: &str) {
        let mut ids = lock(&self.ids);
        if !ids.contains(transactional_id) && ids.insert(transactional_id.to_owned()) {
            tracing::warn!(
                transactional_id,
                "transactional producer seen: transactions are not mirrored, so a flip is not ready while it is in use"
            );
            if let Err(e) = self.state.store(TRANSACTIONAL_FILE, &*ids) {
                tracing::error!(error = %e, "cannot persist transactional producers");
            }
        }
    }

    pub fn all(&self) -> Vec<String> {
        lock(&self.ids).iter().cloned().collect()
    }
}

const GROUPS_FILE: &str = "groups.json";

/// Consumer groups seen in client traffic, persisted so a restarted proxy
/// still knows whom a flip concerns.
pub struct KnownGroups {
    state: StateDir,
    groups: Mutex<BTreeSet<String>>,
}

impl KnownGroups {
    pub fn open(state: StateDir) -> Result<KnownGroups, StateError> {
        let groups: BTreeSet<String> = state.load(GROUPS_FILE)?.unwrap_or_default();
        Ok(KnownGroups {
            state,
            groups: Mutex::new(groups),
        })
    }

    pub fn note(&self, group: &str) {
        if group.is_empty() {
            return;
        }
        let mut groups = lock(&self.groups);
        if !groups.contains(group) && groups.insert(group.to_owned()) {
            tracing::info!(group, "consumer group seen");
            if let Err(e) = self.state.store(GROUPS_FILE, &*groups) {
                tracing::error!(error = %e, "cannot persist known groups");
            }
        }
    }

    pub fn all(&self) -> Vec<String> {
        lock(&self.groups).iter().cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_survive_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let groups = KnownGroups::open(StateDir::open(dir.path()).unwrap()).unwrap();
        groups.note("billing");
        groups.note("");
        groups.note("audit");
        groups.note("billing");
        let groups = KnownGroups::open(StateDir::open(dir.path()).unwrap()).unwrap();
        assert_eq!(groups.all(), vec!["audit", "billing"]);
    }
}

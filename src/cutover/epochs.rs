//! Partition leader epochs as clients see them.
//!
//! Clients remember the highest leader epoch they have seen per partition
//! and ignore metadata that goes backwards (Java and librdkafka for good,
//! franz-go for a few refreshes). Cluster B's epochs are unrelated to A's
//! and usually lower, so after a flip every client would keep routing by
//! A's stale view. switchyard therefore presents `real + base`, where the
//! base of the cluster clients are moved to is raised above every epoch
//! presented before. Each move starts an era `(base, cluster)`; an epoch a
//! client sends belongs to the era whose range holds it, so an epoch from a
//! cluster clients have left is recognised ("stale") and never reaches the
//! new primary as if it were that cluster's own.

use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::RwLock;

use serde::{Deserialize, Serialize};

use crate::config::ClusterName;
use crate::state::{StateDir, StateError};

const FILE: &str = "leader-epochs.json";

/// Room left between the epochs of one era and the next.
const ERA_MARGIN: i32 = 1000;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Era {
    /// The first presented epoch of this era (its base).
    pub base: i32,
    pub cluster: ClusterName,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Stored {
    eras: Vec<Era>,
    high_water: i32,
}

/// What a client-sent epoch means for the cluster it is sent to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientEpoch {
    /// No epoch (-1) or one of this cluster's current era: the real epoch.
    Real(i32),
    /// An epoch presented in an earlier era, for `cluster` (whose real
    /// epoch it was): the client's view predates the last move.
    Stale { cluster: ClusterName, real: i32 },
}

pub struct LeaderEpochs {
    state: StateDir,
    eras: RwLock<Vec<Era>>,
    /// The highest epoch presented to any client.
    high_water: AtomicI32,
}

impl LeaderEpochs {
    /// Opens the persisted eras; a new state directory starts one era at
    /// base 0 on `primary` (epochs pass through unchanged).
    pub fn open(state: StateDir, primary: ClusterName) -> Result<LeaderEpochs, StateError> {
        let stored: Option<Stored> = state.load(FILE)?;
        let stored = stored.filter(|s| !s.eras.is_empty()).unwrap_or(Stored {
            eras: vec![Era {
                base: 0,
                cluster: primary,
            }],
            high_water: 0,
        });
        Ok(LeaderEpochs {
            state,
            eras: RwLock::new(stored.eras),
            high_water: AtomicI32::new(stored.high_water),
        })
    }

    fn eras(&self) -> std::sync::RwLockReadGuard<'_, Vec<Era>> {
        self.eras.read().unwrap_or_else(|p| p.into_inner())
    }

    /// The base of `cluster`'s latest era (0 before it had one): what is
    /// added to its real epochs.
    pub fn base(&self, cluster: ClusterName) -> i32 {
        latest_base(&self.eras(), cluster)
    }

    /// Whether anything must be translated for `cluster`: its epochs are
    /// shifted, or clients may hold epochs from an earlier era.
    pub fn translates(&self, cluster: ClusterName) -> bool {
        let eras = self.eras();
        eras.len() > 1 || latest_base(&eras, cluster) != 0
    }

    /// A real epoch of `cluster` as clients see it (negative epochs mean
    /// "none" and pass unchanged).
    pub fn present(&self, cluster: ClusterName, real: i32) -> i32 {
        if real < 0 {
            return real;
        }
        let presented = real.saturating_add(self.base(cluster));
        self.high_water.fetch_max(presented, Ordering::Relaxed);
        presented
    }

    /// What an epoch a client sends to `cluster` stands for.
    pub fn from_client(&self, cluster: ClusterName, presented: i32) -> ClientEpoch {
        if presented < 0 {
            return ClientEpoch::Real(presented);
        }
        let eras = self.eras();
        let Some(era) = eras.iter().rev().find(|e| e.base <= presented) else {
            return ClientEpoch::Real(presented);
        };
        let real = presented - era.base;
        if era.cluster == cluster && era.base == latest_base(&eras, cluster) {
            ClientEpoch::Real(real)
        } else {
            ClientEpoch::Stale {
                cluster: era.cluster,
                real,
            }
        }
    }

    /// Starts an era on `cluster` whose base lies above every epoch
    /// presented so far and above `floor` (the highest epoch clients may
    /// have seen that switchyard has not counted, such as the old primary's
    /// current epochs). Persisted before it takes effect. Returns the base.
    pub fn start_era(&self, cluster: ClusterName, floor: i32) -> Result<i32, StateError> {
        let mut eras = self.eras.write().unwrap_or_else(|p| p.into_inner());
        let last = eras.last().map_or(0, |e| e.base);
        // The margin covers epochs clients saw that switchyard did not
        // count: record batches' epochs while nothing is translated, and a
        // broker whose metadata lagged when `floor` was read.
        let base = [last, floor, self.high_water.load(Ordering::Relaxed)]
            .into_iter()
            .max()
            .unwrap_or(0)
            .saturating_add(1 + ERA_MARGIN);
        let mut next = eras.clone();
        next.push(Era { base, cluster });
        self.state.store(
            FILE,
            &Stored {
                eras: next.clone(),
                high_water: base,
            },
        )?;
        *eras = next;
        self.high_water.fetch_max(base, Ordering::Relaxed);
        tracing::info!(%cluster, base, "leader epochs presented from now on start at this base");
        Ok(base)
    }

    pub fn eras_snapshot(&self) -> Vec<Era> {
        self.eras().clone()
    }
}

fn latest_base(eras: &[Era], cluster: ClusterName) -> i32 {
    eras.iter()
        .rev()
        .find(|e| e.cluster == cluster)
        .map_or(0, |e| e.base)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ClusterName::{A, B};

    fn open(dir: &tempfile::TempDir) -> LeaderEpochs {
        LeaderEpochs::open(StateDir::open(dir.path()).unwrap(), A).unwrap()
    }

    #[test]
    fn the_home_cluster_passes_through_until_a_move() {
        let dir = tempfile::tempdir().unwrap();
        let epochs = open(&dir);
        assert!(!epochs.translates(A));
        assert_eq!(epochs.present(A, 7), 7);
        assert_eq!(epochs.from_client(A, 7), ClientEpoch::Real(7));
        assert_eq!(epochs.from_client(A, -1), ClientEpoch::Real(-1));
    }

    #[test]
    fn epochs_never_go_backwards_across_flips_and_old_ones_are_recognised() {
        let dir = tempfile::tempdir().unwrap();
        let epochs = open(&dir);
        assert_eq!(epochs.present(A, 41), 41);
        // B's real epochs are low; A's current epochs reach 45 at the flip.
        let base_b = epochs.start_era(B, 45).unwrap();
        assert!(base_b > 45);
        assert_eq!(epochs.present(B, 0), base_b);
        assert!(epochs.present(B, 2) > 45);
        assert_eq!(epochs.from_client(B, base_b + 2), ClientEpoch::Real(2));
        assert_eq!(
            epochs.from_client(B, 41),
            ClientEpoch::Stale {
                cluster: A,
                real: 41
            },
            "an A epoch never reaches B as B's own"
        );
        // Rolled back: A's epochs now start above everything B presented.
        epochs.present(B, 9);
        let base_a = epochs.start_era(A, 0).unwrap();
        assert!(base_a > base_b + 9);
        assert_eq!(epochs.present(A, 41), base_a + 41);
        assert_eq!(
            epochs.from_client(A, 41),
            ClientEpoch::Stale {
                cluster: A,
                real: 41
            },
            "A's first era is not its current one"
        );
        assert_eq!(
            epochs.from_client(A, base_b + 4),
            ClientEpoch::Stale {
                cluster: B,
                real: 4
            }
        );
        assert_eq!(epochs.from_client(A, base_a + 3), ClientEpoch::Real(3));
        // The eras survive a restart.
        let again = open(&dir);
        assert_eq!(again.base(A), base_a);
        assert_eq!(again.base(B), base_b);
        assert_eq!(again.from_client(A, base_a + 3), ClientEpoch::Real(3));
    }
}

//! The cutover: which consumer groups switchyard has seen, and whether a
//! flip to the mirror cluster would be lossless for them now.

pub mod readiness;

use std::collections::BTreeSet;
use std::sync::Mutex;

use crate::state::{StateDir, StateError};

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
        let mut groups = self.groups.lock().unwrap_or_else(|p| p.into_inner());
        if groups.insert(group.to_owned()) {
            tracing::info!(group, "consumer group seen");
            if let Err(e) = self.state.store(GROUPS_FILE, &*groups) {
                tracing::error!(error = %e, "cannot persist known groups");
            }
        }
    }

    pub fn all(&self) -> Vec<String> {
        self.groups
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .cloned()
            .collect()
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

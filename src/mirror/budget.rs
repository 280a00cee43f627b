//! Memory for queued mirror batches, bounded by `mirror.max_queued_bytes`.
//!
//! While the mirror cluster is away, batches keep arriving. Each queued
//! submission's batches are a [`Payload`]; once a payload is durable in the
//! mirror journal it may be let go from memory, and the worker reads it
//! back from the journal when its turn comes. Past the limit the newest
//! journaled payloads go first, so the ones the worker needs next stay in
//! memory. Batches not yet journaled (a sync client still waiting, at most
//! `mirror.sync_timeout_ms`) always stay: they have nowhere else to be.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};

use bytes::Bytes;
use metrics::{Counter, Gauge};

/// The bytes of queued batches held in memory, against the limit.
pub(super) struct Budget {
    limit: u64,
    used: AtomicU64,
    /// Journaled payloads still in memory, oldest first.
    journaled: Mutex<VecDeque<Weak<Payload>>>,
    gauge: Gauge,
    spilled: Counter,
}

impl Budget {
    pub(super) fn new(limit: u64, gauge: Gauge, spilled: Counter) -> Arc<Budget> {
        Arc::new(Budget {
            limit,
            used: AtomicU64::new(0),
            journaled: Mutex::new(VecDeque::new()),
            gauge,
            spilled,
        })
    }

    /// Bytes of queued batches in memory now.
    pub(super) fn used(&self) -> u64 {
        self.used.load(Ordering::Acquire)
    }

    /// Holds `batches` in memory, counted against the limit.
    pub(super) fn hold(self: &Arc<Self>, batches: Vec<Bytes>) -> Arc<Payload> {
        let bytes = batches.iter().map(|b| b.len() as u64).sum();
        self.add(bytes);
        Arc::new(Payload {
            batches: Mutex::new(Some(batches)),
            journaled_at: OnceLock::new(),
            bytes,
            budget: self.clone(),
        })
    }

    /// Batches only in the journal, at `at` (replayed after a restart):
    /// nothing held.
    pub(super) fn on_disk(self: &Arc<Self>, at: u64, bytes: u64) -> Arc<Payload> {
        Arc::new(Payload {
            batches: Mutex::new(None),
            journaled_at: OnceLock::from(at),
            bytes,
            budget: self.clone(),
        })
    }

    /// `payload` is in the journal at `at`: it may be let go from memory.
    pub(super) fn journaled(&self, payload: &Arc<Payload>, at: u64) {
        if payload.journaled_at.set(at).is_err() {
            return;
        }
        let mut journaled = self.journaled.lock().unwrap_or_else(|p| p.into_inner());
        journaled.push_back(Arc::downgrade(payload));
        if journaled.len() >= 1024 && journaled.len().is_power_of_two() {
            journaled.retain(|w| w.strong_count() > 0);
        }
        while self.used() > self.limit {
            let Some(newest) = journaled.pop_back() else {
                break;
            };
            if let Some(payload) = newest.upgrade() {
                payload.let_go();
            }
        }
    }

    fn add(&self, bytes: u64) {
        let used = self.used.fetch_add(bytes, Ordering::AcqRel) + bytes;
        self.gauge.set(used as f64);
    }

    fn sub(&self, bytes: u64) {
        let used = self.used.fetch_sub(bytes, Ordering::AcqRel) - bytes;
        self.gauge.set(used as f64);
    }
}

/// The batches of one queued submission: in memory, or only in the
/// journal.
pub(super) struct Payload {
    batches: Mutex<Option<Vec<Bytes>>>,
    journaled_at: OnceLock<u64>,
    bytes: u64,
    budget: Arc<Budget>,
}

impl Payload {
    /// The batches if they are in memory; otherwise where the journal has
    /// them.
    pub(super) fn get(&self) -> Result<Vec<Bytes>, u64> {
        let batches = self.batches.lock().unwrap_or_else(|p| p.into_inner());
        match batches.as_ref() {
            Some(b) => Ok(b.clone()),
            None => Err(*self.journaled_at.get().expect("let go only once journaled")),
        }
    }

    fn let_go(&self) {
        let taken = self
            .batches
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if taken.is_some() {
            self.budget.sub(self.bytes);
            self.budget.spilled.increment(1);
        }
    }
}

impl Drop for Payload {
    fn drop(&mut self) {
        let held = self
            .batches
            .get_mut()
            .unwrap_or_else(|p| p.into_inner())
            .is_some();
        if held {
            self.budget.sub(self.bytes);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn budget(limit: u64) -> Arc<Budget> {
        Budget::new(limit, Gauge::noop(), Counter::noop())
    }

    fn batch(n: usize) -> Vec<Bytes> {
        vec![Bytes::from(vec![7u8; n])]
    }

    #[test]
    fn journaled_payloads_past_the_limit_are_let_go_newest_first() {
        let budget = budget(250);
        // As in async mode: each submission is journaled as it is queued.
        let payloads: Vec<_> = (0..4)
            .map(|i| {
                let p = budget.hold(batch(100));
                budget.journaled(&p, i * 1000);
                p
            })
            .collect();
        assert_eq!(budget.used(), 200);
        assert!(payloads[0].get().is_ok(), "the next one to ship stays");
        assert!(payloads[1].get().is_ok());
        assert_eq!(payloads[2].get().err(), Some(2000));
        assert_eq!(payloads[3].get().err(), Some(3000));
    }

    #[test]
    fn payloads_not_yet_journaled_are_held_past_the_limit() {
        let budget = budget(150);
        let waiting: Vec<_> = (0..3).map(|_| budget.hold(batch(100))).collect();
        assert_eq!(budget.used(), 300, "nowhere else to keep them");
        budget.journaled(&waiting[0], 0);
        assert_eq!(budget.used(), 200);
        assert_eq!(waiting[0].get().err(), Some(0));
        assert!(waiting[1].get().is_ok());
    }

    #[test]
    fn dropping_a_payload_gives_its_bytes_back_once() {
        let budget = budget(150);
        let first = budget.hold(batch(100));
        let second = budget.hold(batch(100));
        budget.journaled(&second, 5);
        assert_eq!(budget.used(), 100, "second let go");
        drop(second);
        assert_eq!(budget.used(), 100);
        drop(first);
        assert_eq!(budget.used(), 0);
    }

    #[test]
    fn a_payload_is_journaled_once() {
        let budget = budget(0);
        let p = budget.hold(batch(10));
        budget.journaled(&p, 1);
        budget.journaled(&p, 2);
        assert_eq!(p.get().err(), Some(1));
        assert_eq!(budget.used(), 0);
    }
}

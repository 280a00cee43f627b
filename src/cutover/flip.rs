//! The flip: fence, drain, settle offsets, switch, unfence. Each step is
//! timed; the whole flip has a deadline, and a flip that cannot finish is
//! aborted with clients still served by the cluster they were on.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::config::{ClusterName, MirrorMode};
use crate::proxy::{Route, Shared};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    /// From the configured primary to the other cluster.
    Flip,
    /// Back to the configured primary.
    Rollback,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    Flipped,
    /// Nothing was changed: the reasons say why.
    Refused,
    /// Started, could not finish, undone: clients stay where they were.
    Aborted,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StepReport {
    pub step: String,
    pub ms: u64,
    pub detail: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GroupSettled {
    pub group: String,
    /// Partitions with a committed offset on the old primary.
    pub partitions: usize,
    /// Committed on the new primary.
    pub committed: usize,
    /// Refused there (the group has members); served from switchyard's
    /// carried offsets until the group commits itself.
    pub carried: usize,
    /// Not translatable (forced flips only).
    pub untranslatable: Vec<String>,
    /// Where the group resumes on the new primary: "topic-partition" →
    /// offset.
    pub offsets: BTreeMap<String, i64>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FlipReport {
    pub direction: Direction,
    pub from: ClusterName,
    pub to: ClusterName,
    pub outcome: Outcome,
    pub forced: bool,
    pub reasons: Vec<String>,
    pub steps: Vec<StepReport>,
    pub groups: Vec<GroupSettled>,
    pub duration_ms: u64,
    /// How long Produce requests and group joins were held.
    pub fenced_ms: u64,
}

struct Run<'a> {
    shared: &'a Arc<Shared>,
    report: FlipReport,
    started: Instant,
    step_started: Instant,
    deadline: Instant,
}

impl Run<'_> {
    fn step(&mut self, step: &'static str, detail: String) {
        let ms = self.step_started.elapsed().as_millis() as u64;
        tracing::info!(step, ms, %detail, from = %self.report.from, to = %self.report.to, "flip step done");
        self.report.steps.push(StepReport {
            step: step.to_owned(),
            ms,
            detail,
        });
        self.step_started = Instant::now();
    }

    fn remaining(&self) -> Duration {
        self.deadline.saturating_duration_since(Instant::now())
    }

    fn finish(mut self, outcome: Outcome, reasons: Vec<String>) -> FlipReport {
        self.report.outcome = outcome;
        self.report.reasons = reasons;
        self.report.duration_ms = self.started.elapsed().as_millis() as u64;
        let label = match outcome {
            Outcome::Flipped => "flipped",
            Outcome::Refused => "refused",
            Outcome::Aborted => "aborted",
        };
        self.shared.metrics.flip(label);
        if outcome == Outcome::Flipped {
            self.shared
                .metrics
                .last_flip_duration
                .set(self.report.duration_ms as f64 / 1000.0);
        }
        match outcome {
            Outcome::Flipped => {
                tracing::info!(from = %self.report.from, to = %self.report.to, ms = self.report.duration_ms, "flip finished")
            }
            _ => {
                tracing::warn!(from = %self.report.from, to = %self.report.to, outcome = label, reasons = ?self.report.reasons, "flip did not happen")
            }
        }
        *self
            .shared
            .last_flip
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = Some(self.report.clone());
        self.report
    }

    /// Lifts the fence without switching: clients carry on where they were.
    fn abort(mut self, step: &'static str, reason: String) -> FlipReport {
        self.shared.signals.set_fenced(false);
        self.report.fenced_ms = self.report.fenced_ms.max(1);
        self.step(step, format!("aborted: {reason}"));
        let from = self.report.from;
        self.finish(
            Outcome::Aborted,
            vec![format!(
                "{step}: {reason}; the flip was undone and clients stay on cluster {from}"
            )],
        )
    }
}

/// Moves every client to the other cluster (or back), or explains why not.
pub async fn run(shared: &Arc<Shared>, direction: Direction, force: bool) -> FlipReport {
    let from = shared.primary();
    let to = from.other();
    let started = Instant::now();
    let mut run = Run {
        shared,
        report: FlipReport {
            direction,
            from,
            to,
            outcome: Outcome::Refused,
            forced: force,
            reasons: Vec::new(),
            steps: Vec::new(),
            groups: Vec::new(),
            duration_ms: 0,
            fenced_ms: 0,
        },
        started,
        step_started: started,
        deadline: started + Duration::from_millis(shared.config.cutover.deadline_ms),
    };
    let Ok(_one_at_a_time) = shared.flip_lock.try_lock() else {
        return run.finish(
            Outcome::Refused,
            vec!["another flip or rollback is running".into()],
        );
    };
    let home = shared.config.route.primary;
    match direction {
        Direction::Flip if from != home => {
            return run.finish(
                Outcome::Refused,
                vec![format!(
                "clients are already on cluster {from}; POST /rollback moves them back to {home}"
            )],
            )
        }
        Direction::Rollback if from == home => {
            return run.finish(
                Outcome::Refused,
                vec![format!(
                "clients are on cluster {from}, where they started; there is nothing to roll back"
            )],
            )
        }
        _ => {}
    }
    let Some(mirror) = shared.mirror().cloned() else {
        return run.finish(
            Outcome::Refused,
            vec!["no second cluster is configured ([clusters.b])".into()],
        );
    };
    let mode = mirror.mode();
    if mode == MirrorMode::Off {
        return run.finish(
            Outcome::Refused,
            vec![format!(
                "mirroring from {from} to {to} is off, so {to} lacks records written to {from}; \
                 POST /mirror {{\"mode\": \"sync\"}} first"
            )],
        );
    }
    let probe = tokio::time::timeout(run.remaining(), mirror.client().list_topics()).await;
    match probe {
        Ok(Ok(_)) => {}
        Ok(Err(e)) => {
            return run.finish(
                Outcome::Refused,
                vec![format!("cluster {to} is unreachable: {e}")],
            )
        }
        Err(_) => {
            return run.finish(
                Outcome::Refused,
                vec![format!("cluster {to} did not answer in time")],
            )
        }
    }
    let ready = super::readiness::readiness(shared).await;
    if !ready.ready {
        let reasons = ready.all_reasons();
        if !force {
            return run.finish(Outcome::Refused, reasons);
        }
        tracing::warn!(?reasons, "flip forced although not ready");
    }
    run.step(
        "check",
        format!("cluster {to} reachable; ready: {}", ready.ready),
    );

    // Fence: hold Produce and group joins; heartbeats are answered
    // REBALANCE_IN_PROGRESS so members revoke, commit and rejoin (held).
    let fenced_at = Instant::now();
    shared.signals.set_fenced(true);
    run.step("fence", "holding Produce and JoinGroup".into());

    let group_wait = Duration::from_millis(shared.config.cutover.group_wait_ms);
    let group_deadline = (Instant::now() + group_wait).min(run.deadline);
    let horizon = fenced_at.checked_sub(group_wait).unwrap_or(fenced_at);
    let consuming = loop {
        let consuming = shared.members.consuming(from, horizon);
        if consuming.is_empty() || Instant::now() >= group_deadline {
            break consuming;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    let detail = if consuming.is_empty() {
        "every active group member revoked its partitions".to_owned()
    } else {
        format!(
            "{} members had not rejoined in time: {}",
            consuming.len(),
            consuming.join(", ")
        )
    };
    run.step("groups", detail);

    // Drain: what the old primary acknowledged must be in the other cluster.
    loop {
        let in_flight = shared.signals.in_flight(from);
        let lag = mirror.lag_records();
        if in_flight == 0 && lag == 0 {
            break;
        }
        if Instant::now() >= run.deadline {
            return run.abort(
                "drain",
                format!(
                    "{in_flight} Produce requests still in flight on {from}, \
                     {lag} records not yet in {to} when the deadline passed"
                ),
            );
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    run.step(
        "drain",
        format!("mirror lag 0; nothing in flight on {from}"),
    );

    // The new primary's brokers take the virtual ids clients know, so
    // that after the move every virtual broker leads straight to its
    // broker there.
    match tokio::time::timeout(run.remaining(), mirror.client().brokers()).await {
        Ok(Ok(brokers)) => {
            for (node, host, port) in &brokers {
                shared
                    .brokers
                    .virtual_broker(to, *node, Some((host, *port)));
            }
        }
        Ok(Err(e)) => return run.abort("move", format!("cannot list the brokers of {to}: {e}")),
        Err(_) => return run.abort("move", "the deadline passed".into()),
    }
    // Leader epochs shown from the new primary start above every epoch
    // clients have seen, the old primary's current ones included.
    let floor =
        match tokio::time::timeout(run.remaining(), mirror.source().max_leader_epoch()).await {
            Ok(Ok(max)) => shared.epochs.present(from, max),
            Ok(Err(e)) => {
                return run.abort(
                    "move",
                    format!("cannot read the leader epochs of {from}: {e}"),
                )
            }
            Err(_) => return run.abort("move", "the deadline passed".into()),
        };
    let base = match shared.epochs.start_era(to, floor) {
        Ok(base) => base,
        Err(e) => return run.abort("move", format!("cannot persist leader epochs: {e}")),
    };

    // Move: new connections go to the new primary, where Produce, group
    // joins and offset requests wait behind the fence; sessions on the old
    // primary stop reading, answer what they forwarded and close.
    shared.signals.set_arriving(Some(to));
    shared.signals.switch(to);
    let mut run = Moved(run);
    // Only commits matter to the settle: connections to the old primary
    // still waiting on a long-poll Fetch end on their own.
    loop {
        let commits = shared.signals.commits_in_flight(from);
        if commits == 0 {
            break;
        }
        if Instant::now() >= run.0.deadline {
            return run.back(
                "move",
                format!("{commits} offset commits to {from} were still unanswered"),
            );
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    run.0.step(
        "move",
        format!(
            "clients reconnect to {to}; leader epochs presented from {base}; \
             no commit in flight to {from}; {} connections to it still closing",
            shared.signals.sessions(from)
        ),
    );

    // Settle: each group's committed offsets, read now that nothing can
    // commit on the old primary any more, translated, and committed on the
    // new primary while its members are held away from it.
    let mut carries = Vec::new();
    let mut groups = Vec::new();
    for group in shared.groups.all() {
        let committed =
            tokio::time::timeout(run.0.remaining(), mirror.source().committed_offsets(&group))
                .await;
        let committed = match committed {
            Ok(Ok(c)) => c,
            Ok(Err(e)) => {
                return run.back(
                    "settle",
                    format!("cannot read committed offsets of group {group} on {from}: {e}"),
                )
            }
            Err(_) => return run.back("settle", "the deadline passed".into()),
        };
        let mut translated = BTreeMap::new();
        let mut untranslatable = Vec::new();
        for ((topic, partition), offset) in &committed {
            match shared
                .translate_committed(from, topic, *partition, *offset)
                .await
            {
                Ok(o) => {
                    translated.insert((topic.clone(), *partition), o);
                }
                Err(reason) => untranslatable.push(format!("{topic}-{partition}: {reason}")),
            }
        }
        if !untranslatable.is_empty() && !force {
            return run.back(
                "settle",
                format!("group {group}: {}", untranslatable.join("; ")),
            );
        }
        let codes = tokio::time::timeout(
            run.0.remaining(),
            mirror.client().commit_offsets(&group, &translated),
        )
        .await;
        let codes = match codes {
            Ok(Ok(codes)) => codes,
            Ok(Err(e)) => {
                return run.back(
                    "settle",
                    format!("cannot commit offsets of group {group} on {to}: {e}"),
                )
            }
            Err(_) => return run.back("settle", "the deadline passed".into()),
        };
        let mut carry = BTreeMap::new();
        for (key, code) in codes {
            if code != 0 {
                if let Some(offset) = translated.get(&key) {
                    carry.insert(key, *offset);
                }
            }
        }
        groups.push(GroupSettled {
            group: group.clone(),
            partitions: committed.len(),
            committed: translated.len() - carry.len(),
            carried: carry.len(),
            untranslatable,
            offsets: translated
                .iter()
                .map(|((t, p), o)| (format!("{t}-{p}"), *o))
                .collect(),
        });
        carries.push((group, carry));
    }
    let settled: usize = groups.iter().map(|g| g.committed + g.carried).sum();
    run.0.step(
        "settle",
        format!(
            "{settled} committed offsets of {} groups moved to {to}",
            groups.len()
        ),
    );
    run.0.report.groups = groups;

    // The old primary forgets the members that moved, so that a rollback
    // does not wait for their sessions there to expire. Best effort.
    let leaving = shared.members.of_cluster(from);
    let left = tokio::time::timeout(run.0.remaining().min(Duration::from_secs(2)), async {
        let mut count = 0;
        for (group, members) in &leaving {
            match mirror.source().leave_group(group, members).await {
                Ok(codes) => count += codes.iter().filter(|c| **c == 0).count(),
                Err(e) => {
                    tracing::info!(%group, error = %e, "members not removed from the old primary")
                }
            }
        }
        count
    })
    .await
    .unwrap_or(0);
    if left > 0 {
        tracing::info!(members = left, cluster = %from, "members removed from their groups on the old primary");
    }

    // Switch: persisted first, so a restart keeps clients where they went.
    let route = Route {
        primary: to,
        mirror: mode,
    };
    if let Err(e) = shared.store_route(&route) {
        return run.back("switch", format!("cannot persist the route: {e}"));
    }
    let mut run = run.0;
    for (group, carry) in &carries {
        shared.carried.set(group, to, carry);
    }
    if let Some(back) = shared.mirror_from(to) {
        back.set_mode(mode);
    }
    mirror.set_mode(MirrorMode::Off);
    shared
        .metrics
        .primary_is_b
        .set(f64::from(u8::from(to == ClusterName::B)));
    run.step(
        "switch",
        format!("primary is {to}; mirroring {to} to {from} ({mode:?})"),
    );

    // Unfence: what waited on the new primary goes on there.
    shared.signals.set_fenced(false);
    run.report.fenced_ms = fenced_at.elapsed().as_millis() as u64;
    run.step("unfence", format!("requests held on {to} released"));
    run.finish(Outcome::Flipped, Vec::new())
}

/// A flip past the move: clients already reconnect to the new primary,
/// where nothing was written yet (every write waits behind the fence), so
/// an abort moves them back.
struct Moved<'a>(Run<'a>);

impl Moved<'_> {
    fn back(self, step: &'static str, reason: String) -> FlipReport {
        let shared = self.0.shared;
        let (from, to) = (self.0.report.from, self.0.report.to);
        // Clients may have seen the new primary's epochs: the old one's
        // are shown above them from now on.
        if let Err(e) = shared.epochs.start_era(from, 0) {
            tracing::error!(error = %e, "cannot persist leader epochs while moving clients back");
        }
        shared.signals.switch(from);
        tracing::warn!(%from, %to, "flip aborted after clients moved; they move back to {from}");
        self.0.abort(step, reason)
    }
}

/// Stops mirroring once the operator is satisfied with the new primary.
pub fn finalize(shared: &Shared) -> Result<Route, String> {
    let home = shared.config.route.primary;
    let primary = shared.primary();
    if primary == home {
        return Err(format!(
            "clients are on cluster {primary}, where they started; finalize follows a flip \
             (POST /mirror {{\"mode\": \"off\"}} stops mirroring without one)"
        ));
    }
    shared.set_mirror_mode(MirrorMode::Off)
}

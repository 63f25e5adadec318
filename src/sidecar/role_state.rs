//! When to write the role label: a pure state machine fed with what the census said and the time.
//!
//! The label is written only when it would change, so a steady ring costs no API writes. A role
//! that becomes unknown (election, no quorum, supervisor unreachable) keeps the label for a grace
//! period, so one slow poll or a short gossip hiccup does not flap Service endpoints; after that
//! the label is removed, so a Service selecting the leader stops routing to an electing or dead pod.

use std::time::{Duration, Instant};

use crate::sidecar::census::Role;
use crate::sidecar::label::LabelAction;

/// What this process believes the pod's label is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LabelOnPod {
    /// Not written yet by this process: a previous run may have left any value.
    Unsure,
    Absent,
    Present(Role),
}

#[derive(Debug, Clone)]
pub struct RoleTracker {
    grace: Duration,
    on_pod: LabelOnPod,
    unknown_since: Option<Instant>,
    /// Minimum time between two role labels (leader → follower or back): a flapping census is
    /// written once it has held a role that long, not once per flap.
    min_dwell: Duration,
    /// When the role label now on the pod was written.
    set_at: Option<Instant>,
}

impl RoleTracker {
    pub fn new(grace: Duration) -> Self {
        Self {
            grace,
            on_pod: LabelOnPod::Unsure,
            unknown_since: None,
            min_dwell: Duration::ZERO,
            set_at: None,
        }
    }

    /// With a minimum dwell between leader/follower changes. A removal (role unknown for the
    /// grace) and a first label are never held back.
    pub fn with_min_dwell(mut self, min_dwell: Duration) -> Self {
        self.min_dwell = min_dwell;
        self
    }

    pub fn label_on_pod(&self) -> LabelOnPod {
        self.on_pod
    }

    /// The write the pod needs after observing `role` (None: unknown) at `now`, if any.
    pub fn observe(&mut self, role: Option<Role>, now: Instant) -> Option<LabelAction> {
        match role {
            Some(role) => {
                self.unknown_since = None;
                match self.on_pod {
                    LabelOnPod::Present(current) if current == role => None,
                    LabelOnPod::Present(_)
                        if self
                            .set_at
                            .is_some_and(|at| now.saturating_duration_since(at) < self.min_dwell) =>
                    {
                        None
                    }
                    _ => Some(LabelAction::Set(role)),
                }
            }
            None => {
                let since = *self.unknown_since.get_or_insert(now);
                let grace_over = now.saturating_duration_since(since) >= self.grace;
                (grace_over && self.on_pod != LabelOnPod::Absent).then_some(LabelAction::Remove)
            }
        }
    }

    /// Records a write the API server accepted.
    pub fn written(&mut self, action: LabelAction) {
        self.written_at(action, Instant::now());
    }

    /// Records a write the API server accepted at `now`.
    pub fn written_at(&mut self, action: LabelAction, now: Instant) {
        self.on_pod = match action {
            LabelAction::Set(role) => LabelOnPod::Present(role),
            LabelAction::Remove => LabelOnPod::Absent,
        };
        self.set_at = matches!(action, LabelAction::Set(_)).then_some(now);
    }

    /// On the way out the label must go, unless it is known to be gone already.
    pub fn on_shutdown(&self) -> Option<LabelAction> {
        (self.on_pod != LabelOnPod::Absent).then_some(LabelAction::Remove)
    }
}

/// Exponential backoff with jitter for failed label writes: every sidecar of a ring retrying in
/// step after an API server blip would otherwise hit it at the same instants.
#[derive(Debug, Clone)]
pub struct Backoff {
    base: Duration,
    max: Duration,
    failures: u32,
}

impl Backoff {
    pub fn new(base: Duration, max: Duration) -> Self {
        Self { base, max, failures: 0 }
    }

    /// The wait before the next attempt; `jitter` in [0, 1) picks a point in the upper half of the
    /// exponential step, so the wait still grows while attempts spread out.
    pub fn after_failure(&mut self, jitter: f64) -> Duration {
        let step = self.base.saturating_mul(1u32 << self.failures.min(16)).min(self.max);
        self.failures = self.failures.saturating_add(1);
        step / 2 + step.mul_f64(jitter.clamp(0.0, 1.0) / 2.0)
    }

    pub fn reset(&mut self) {
        self.failures = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GRACE: Duration = Duration::from_secs(5);

    fn secs(t0: Instant, s: f64) -> Instant {
        t0 + Duration::from_secs_f64(s)
    }

    /// Feeds observations one second apart, applying every action as if the write succeeded.
    fn run(observations: &[Option<Role>]) -> Vec<(usize, LabelAction)> {
        let t0 = Instant::now();
        let mut tracker = RoleTracker::new(GRACE);
        let mut actions = Vec::new();
        for (i, role) in observations.iter().enumerate() {
            if let Some(action) = tracker.observe(*role, secs(t0, i as f64)) {
                tracker.written(action);
                actions.push((i, action));
            }
        }
        actions
    }

    const L: Option<Role> = Some(Role::Leader);
    const F: Option<Role> = Some(Role::Follower);
    const U: Option<Role> = None;

    #[test]
    fn a_steady_role_is_written_once() {
        assert_eq!(run(&[L; 100]), vec![(0, LabelAction::Set(Role::Leader))]);
        assert_eq!(run(&[F; 100]), vec![(0, LabelAction::Set(Role::Follower))]);
    }

    #[test]
    fn a_role_change_is_written_at_once() {
        assert_eq!(
            run(&[F, F, L, L, F]),
            vec![
                (0, LabelAction::Set(Role::Follower)),
                (2, LabelAction::Set(Role::Leader)),
                (4, LabelAction::Set(Role::Follower)),
            ]
        );
    }

    #[test]
    fn unknown_shorter_than_the_grace_keeps_the_label() {
        assert_eq!(run(&[L, U, U, U, U, L, L]), vec![(0, LabelAction::Set(Role::Leader))]);
    }

    #[test]
    fn unknown_for_the_grace_removes_the_label_once() {
        assert_eq!(
            run(&[L, U, U, U, U, U, U, U, U, U]),
            vec![(0, LabelAction::Set(Role::Leader)), (6, LabelAction::Remove)]
        );
    }

    #[test]
    fn an_election_ending_in_a_new_role_is_one_write_when_short() {
        // follower → election in progress (3 s) → leader
        assert_eq!(
            run(&[F, U, U, U, L]),
            vec![(0, LabelAction::Set(Role::Follower)), (4, LabelAction::Set(Role::Leader)),]
        );
    }

    #[test]
    fn the_grace_restarts_after_a_known_role() {
        // 4 s unknown, 1 s known, 4 s unknown: never 5 s in a row.
        assert_eq!(run(&[F, U, U, U, U, F, U, U, U, U, F]), vec![(0, LabelAction::Set(Role::Follower))]);
    }

    #[test]
    fn a_fresh_start_with_no_role_removes_a_label_left_by_a_previous_run() {
        assert_eq!(run(&[U; 10]), vec![(5, LabelAction::Remove)]);
    }

    #[test]
    fn a_failed_write_is_asked_for_again() {
        let t0 = Instant::now();
        let mut tracker = RoleTracker::new(GRACE);
        assert_eq!(tracker.observe(L, t0), Some(LabelAction::Set(Role::Leader)));
        // not recorded as written: the next poll asks again
        assert_eq!(tracker.observe(L, secs(t0, 1.0)), Some(LabelAction::Set(Role::Leader)));
        tracker.written(LabelAction::Set(Role::Leader));
        assert_eq!(tracker.observe(L, secs(t0, 2.0)), None);
    }

    #[test]
    fn shutdown_removes_unless_known_absent() {
        let t0 = Instant::now();
        let mut tracker = RoleTracker::new(GRACE);
        assert_eq!(tracker.on_shutdown(), Some(LabelAction::Remove));
        tracker.written(LabelAction::Set(Role::Follower));
        assert_eq!(tracker.on_shutdown(), Some(LabelAction::Remove));
        tracker.written(LabelAction::Remove);
        assert_eq!(tracker.on_shutdown(), None);
        assert_eq!(tracker.observe(U, secs(t0, 100.0)), None);
    }

    #[test]
    fn a_zero_grace_removes_on_the_first_unknown() {
        let t0 = Instant::now();
        let mut tracker = RoleTracker::new(Duration::ZERO);
        tracker.written(LabelAction::Set(Role::Leader));
        assert_eq!(tracker.observe(U, t0), Some(LabelAction::Remove));
    }

    /// Like `run`, with a minimum dwell.
    fn run_with_dwell(observations: &[Option<Role>], dwell: Duration) -> Vec<(usize, LabelAction)> {
        let t0 = Instant::now();
        let mut tracker = RoleTracker::new(GRACE).with_min_dwell(dwell);
        let mut actions = Vec::new();
        for (i, role) in observations.iter().enumerate() {
            let now = secs(t0, i as f64);
            if let Some(action) = tracker.observe(*role, now) {
                tracker.written_at(action, now);
                actions.push((i, action));
            }
        }
        actions
    }

    #[test]
    fn a_flap_within_the_dwell_is_not_written() {
        let dwell = Duration::from_secs(3);
        // leader at 0; follower for one poll at 1 (inside the dwell): never written.
        assert_eq!(run_with_dwell(&[L, F, L, L, L, L], dwell), vec![(0, LabelAction::Set(Role::Leader))]);
        // Flapping every second: one write per dwell at most, the role held when the dwell ends.
        assert_eq!(
            run_with_dwell(&[L, F, L, F, L, F, F, F, F], dwell),
            vec![(0, LabelAction::Set(Role::Leader)), (3, LabelAction::Set(Role::Follower))]
        );
        // Without a dwell, every flap is a write.
        assert_eq!(run_with_dwell(&[L, F, L, F], Duration::ZERO).len(), 4);
    }

    #[test]
    fn the_dwell_never_holds_back_a_removal_or_a_first_label() {
        let dwell = Duration::from_secs(30);
        assert_eq!(
            run_with_dwell(&[L, U, U, U, U, U, U, F], dwell),
            vec![
                (0, LabelAction::Set(Role::Leader)),
                (6, LabelAction::Remove),
                (7, LabelAction::Set(Role::Follower))
            ]
        );
    }

    #[test]
    fn backoff_grows_with_jitter_up_to_the_max_and_resets() {
        let mut b = Backoff::new(Duration::from_millis(500), Duration::from_secs(30));
        let lows: Vec<_> = (0..10).map(|_| b.after_failure(0.0)).collect();
        assert_eq!(lows[0], Duration::from_millis(250));
        assert_eq!(lows[1], Duration::from_millis(500));
        assert_eq!(lows[2], Duration::from_secs(1));
        assert_eq!(lows[9], Duration::from_secs(15));
        assert_eq!(b.after_failure(0.999_999).as_secs(), 29);
        b.reset();
        assert_eq!(b.after_failure(0.5), Duration::from_millis(375));
    }
}

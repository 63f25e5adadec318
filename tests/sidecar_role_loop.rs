//! The polling loop against a stand-in Supervisor, with a recording label writer in place of the
//! API server: the label actions must follow the scripted census transitions exactly.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use hab_bootstrap::runtime::admin::Health;
use hab_bootstrap::sidecar::census::Role;
use hab_bootstrap::sidecar::census_client::CensusClient;
use hab_bootstrap::sidecar::label::{LabelAction, LabelWriteError, LabelWriter};
use hab_bootstrap::sidecar::metrics::{Metrics, WriteLabels};
use hab_bootstrap::sidecar::role_loop::{RoleLoop, RoleLoopConfig};
use support::supervisor::{Reply, StandInSupervisor};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

const GROUP: &str = "roletest.prod";
const SHORT_GRACE: Duration = Duration::from_millis(300);
const LONG_GRACE: Duration = Duration::from_secs(30);
const POLL_TIMEOUT: Duration = Duration::from_millis(300);
const WAIT: Duration = Duration::from_secs(15);

const SET_LEADER: LabelAction = LabelAction::Set(Role::Leader);
const SET_FOLLOWER: LabelAction = LabelAction::Set(Role::Follower);
const REMOVE: LabelAction = LabelAction::Remove;

/// Records every accepted write; fails the first `failures` attempts.
#[derive(Clone)]
struct RecordingWriter {
    accepted: mpsc::UnboundedSender<LabelAction>,
    failures: Arc<AtomicUsize>,
}

impl LabelWriter for RecordingWriter {
    async fn apply(&self, action: LabelAction) -> Result<(), LabelWriteError> {
        let fail =
            self.failures.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1)).is_ok();
        if fail {
            return Err(LabelWriteError::Timeout(Duration::ZERO));
        }
        self.accepted.send(action).expect("test is listening");
        Ok(())
    }
}

struct Sidecar {
    accepted: mpsc::UnboundedReceiver<LabelAction>,
    metrics: Metrics,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<()>,
}

struct Options {
    grace: Duration,
    group: Option<&'static str>,
    failing_writes: usize,
    token: Option<&'static str>,
}

impl Default for Options {
    fn default() -> Self {
        Self { grace: SHORT_GRACE, group: Some(GROUP), failing_writes: 0, token: None }
    }
}

fn start(supervisor: &StandInSupervisor, options: Options) -> Sidecar {
    let (tx, accepted) = mpsc::unbounded_channel();
    let writer =
        RecordingWriter { accepted: tx, failures: Arc::new(AtomicUsize::new(options.failing_writes)) };
    let token = options.token.map(|t| t.parse().unwrap());
    let census = CensusClient::new(&supervisor.url(), token, POLL_TIMEOUT).unwrap();
    let mut config =
        RoleLoopConfig::new(options.group.map(str::to_owned), Duration::from_millis(50), options.grace);
    config.backoff_base = Duration::from_millis(20);
    config.backoff_max = Duration::from_millis(100);
    config.write_timeout = Duration::from_secs(2);
    config.shutdown_timeout = Duration::from_secs(2);
    let metrics = Metrics::new();
    let health = Arc::new(Health::new(Duration::from_secs(60), true));
    let (stop, stopped) = oneshot::channel::<()>();
    let role_loop = RoleLoop::new(census, writer, config, metrics.clone(), health);
    let task = tokio::spawn(role_loop.run(async {
        let _ = stopped.await;
    }));
    Sidecar { accepted, metrics, stop: Some(stop), task }
}

impl Sidecar {
    async fn next_write(&mut self) -> LabelAction {
        tokio::time::timeout(WAIT, self.accepted.recv())
            .await
            .expect("a label write within the wait")
            .expect("loop alive")
    }

    fn no_pending_write(&mut self) {
        if let Ok(action) = self.accepted.try_recv() {
            panic!("unexpected label write {action:?}");
        }
    }

    /// Signals shutdown and returns the writes made on the way out.
    async fn shut_down(mut self) -> Vec<LabelAction> {
        self.stop.take().unwrap().send(()).unwrap();
        tokio::time::timeout(WAIT, self.task).await.expect("the loop stops").unwrap();
        let mut writes = Vec::new();
        while let Ok(action) = self.accepted.try_recv() {
            writes.push(action);
        }
        writes
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn follower_then_short_election_then_leader_and_then_no_writes() {
    let supervisor = StandInSupervisor::start(Reply::census("follower")).await;
    let mut sidecar = start(&supervisor, Options { grace: LONG_GRACE, ..Options::default() });
    assert_eq!(sidecar.next_write().await, SET_FOLLOWER);

    supervisor.set(Reply::census("election-in-progress"));
    supervisor.wait_requests(3).await;
    supervisor.set(Reply::census("leader"));
    assert_eq!(sidecar.next_write().await, SET_LEADER);

    // Steady state: many polls, no write.
    supervisor.wait_requests(20).await;
    sidecar.no_pending_write();
    assert_eq!(sidecar.metrics.label_writes_total(), 2);
    assert_eq!(sidecar.shut_down().await, vec![REMOVE]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_election_longer_than_the_grace_removes_the_label_until_a_new_role() {
    let supervisor = StandInSupervisor::start(Reply::census("follower")).await;
    let mut sidecar = start(&supervisor, Options::default());
    assert_eq!(sidecar.next_write().await, SET_FOLLOWER);

    supervisor.set(Reply::census("election-in-progress"));
    assert_eq!(sidecar.next_write().await, REMOVE);
    supervisor.wait_requests(5).await;
    sidecar.no_pending_write();

    supervisor.set(Reply::census("leader"));
    assert_eq!(sidecar.next_write().await, SET_LEADER);
    sidecar.shut_down().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_supervisor_loses_the_label_and_gets_it_back() {
    let mut supervisor = StandInSupervisor::start(Reply::census("leader")).await;
    let mut sidecar = start(&supervisor, Options::default());
    assert_eq!(sidecar.next_write().await, SET_LEADER);

    supervisor.stop();
    assert_eq!(sidecar.next_write().await, REMOVE);
    assert!(sidecar.metrics.census_poll_errors_of("connect") > 0);

    supervisor.restart().await;
    assert_eq!(sidecar.next_write().await, SET_LEADER);
    sidecar.shut_down().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_that_appears_late_is_labelled_once_it_has_a_role() {
    let supervisor = StandInSupervisor::start(Reply::census("no-services")).await;
    let mut sidecar = start(&supervisor, Options::default());
    // Nothing known past the grace: a label left by an earlier run is cleared.
    assert_eq!(sidecar.next_write().await, REMOVE);

    supervisor.set(Reply::census("no-quorum"));
    supervisor.wait_requests(5).await;
    sidecar.no_pending_write();

    supervisor.set(Reply::census("leader"));
    assert_eq!(sidecar.next_write().await, SET_LEADER);
    sidecar.shut_down().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_and_error_statuses_count_as_unknown_and_the_loop_survives() {
    let supervisor = StandInSupervisor::start(Reply::census("leader")).await;
    let mut sidecar = start(&supervisor, Options::default());
    assert_eq!(sidecar.next_write().await, SET_LEADER);

    supervisor.set(Reply::Body("<html>502 Bad Gateway</html>".into()));
    assert_eq!(sidecar.next_write().await, REMOVE);
    assert!(sidecar.metrics.census_poll_errors_of("parse") > 0);

    supervisor.set(Reply::Status(503));
    supervisor.wait_requests(3).await;
    assert!(sidecar.metrics.census_poll_errors_of("status") > 0);

    supervisor.set(Reply::census("follower"));
    assert_eq!(sidecar.next_write().await, SET_FOLLOWER);
    sidecar.shut_down().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_answer_slower_than_the_poll_timeout_is_unreachable() {
    let supervisor = StandInSupervisor::start(Reply::census("leader")).await;
    let mut sidecar = start(&supervisor, Options::default());
    assert_eq!(sidecar.next_write().await, SET_LEADER);

    supervisor.set(Reply::Slow(Duration::from_secs(5), support::supervisor::fixture("leader")));
    assert_eq!(sidecar.next_write().await, REMOVE);
    assert!(sidecar.metrics.census_poll_errors_of("timeout") > 0);

    // Shutdown does not wait for the slow poll in flight; the label is already gone.
    let started = std::time::Instant::now();
    assert_eq!(sidecar.shut_down().await, vec![]);
    assert!(started.elapsed() < Duration::from_secs(2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_writes_are_retried_until_accepted() {
    let supervisor = StandInSupervisor::start(Reply::census("leader")).await;
    let mut sidecar = start(&supervisor, Options { failing_writes: 3, ..Options::default() });
    assert_eq!(sidecar.next_write().await, SET_LEADER);
    // The next polls start only after the loop has counted that write.
    supervisor.wait_requests(2).await;
    let count =
        |result| sidecar.metrics.label_writes.get_or_create(&WriteLabels { value: "leader", result }).get();
    assert_eq!((count("error"), count("ok")), (3, 1));
    sidecar.shut_down().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_fallback_group_and_the_gateway_token_are_used() {
    let supervisor = StandInSupervisor::start_with_token(Reply::census("follower"), "s3cret").await;
    let mut sidecar =
        start(&supervisor, Options { group: None, token: Some("s3cret"), ..Options::default() });
    assert_eq!(sidecar.next_write().await, SET_FOLLOWER);
    assert_eq!(sidecar.metrics.census_poll_errors_of("status"), 0);
    sidecar.shut_down().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_token_is_a_poll_error_not_a_role() {
    let supervisor = StandInSupervisor::start_with_token(Reply::census("leader"), "s3cret").await;
    let mut sidecar = start(&supervisor, Options::default());
    assert_eq!(sidecar.next_write().await, REMOVE);
    assert!(sidecar.metrics.census_poll_errors_of("status") > 0);
    assert_eq!(sidecar.shut_down().await, vec![]);
}

/// The API server refuses every label write (unreachable): after the API grace the sidecar is not
/// ready (the pod leaves the endpoints of Services that select it by role), and ready again once a
/// write goes through.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_label_that_cannot_be_written_for_the_api_grace_makes_the_sidecar_not_ready() {
    let supervisor = StandInSupervisor::start(Reply::census("leader")).await;
    let (tx, mut accepted) = mpsc::unbounded_channel();
    let failures = Arc::new(AtomicUsize::new(usize::MAX));
    let writer = RecordingWriter { accepted: tx, failures: failures.clone() };
    let census = CensusClient::new(&supervisor.url(), None, POLL_TIMEOUT).unwrap();
    let mut config = RoleLoopConfig::new(Some(GROUP.to_owned()), Duration::from_millis(50), LONG_GRACE);
    config.backoff_base = Duration::from_millis(20);
    config.backoff_max = Duration::from_millis(100);
    config.api_grace = Duration::from_millis(500);
    let health = Arc::new(Health::new(Duration::from_secs(60), true));
    let role_loop = RoleLoop::new(census, writer, config, Metrics::new(), health.clone());
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(role_loop.run(async {
        let _ = stopped.await;
    }));
    let started = std::time::Instant::now();
    while health.is_ready() {
        assert!(started.elapsed() < WAIT, "still ready with every write refused");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let not_ready_after = started.elapsed();
    let reason = health.not_ready_reason().unwrap();
    assert!(reason.contains("role label"), "{reason}");
    assert!(not_ready_after >= Duration::from_millis(500), "{not_ready_after:?}");
    // The API server is back: the label is written and the sidecar is ready again.
    failures.store(0, Ordering::SeqCst);
    assert_eq!(tokio::time::timeout(WAIT, accepted.recv()).await.unwrap(), Some(SET_LEADER));
    tokio::time::timeout(WAIT, async {
        while !health.is_ready() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("ready again once the label is written");
    stop.send(()).unwrap();
    task.await.unwrap();
    eprintln!("API unreachable: not ready {not_ready_after:?} after the first refused write (grace 500 ms)");
}

/// With a minimum dwell, a census flapping leader/follower every poll is written once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flapping_census_is_damped_by_the_minimum_dwell() {
    let supervisor = StandInSupervisor::start(Reply::census("leader")).await;
    let (tx, mut accepted) = mpsc::unbounded_channel();
    let writer = RecordingWriter { accepted: tx, failures: Arc::new(AtomicUsize::new(0)) };
    let census = CensusClient::new(&supervisor.url(), None, POLL_TIMEOUT).unwrap();
    let mut config = RoleLoopConfig::new(Some(GROUP.to_owned()), Duration::from_millis(20), LONG_GRACE);
    config.min_dwell = Duration::from_secs(60);
    let health = Arc::new(Health::new(Duration::from_secs(60), true));
    let role_loop = RoleLoop::new(census, writer, config, Metrics::new(), health);
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(role_loop.run(async {
        let _ = stopped.await;
    }));
    assert_eq!(tokio::time::timeout(WAIT, accepted.recv()).await.unwrap(), Some(SET_LEADER));
    for i in 0..20 {
        supervisor.set(Reply::census(if i % 2 == 0 { "follower" } else { "leader" }));
        supervisor.wait_requests(2).await;
    }
    assert!(accepted.try_recv().is_err(), "a flap inside the dwell was written");
    stop.send(()).unwrap();
    task.await.unwrap();
}

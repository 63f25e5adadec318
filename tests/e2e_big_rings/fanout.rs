//! `fanout_figures` (ignored; `scripts/bench.sh fanout`): what the peer watch file costs the API
//! server with N (100) sidecars running, bounded by `--pod-index` and not.
//!
//! kwok runs no containers, so the test runs each pod's sidecar itself, as
//! `tests/e2e_habitat/kubelet.rs` does: the stored `habitat-role` container's argv with the
//! project's binary (`HAB_BOOTSTRAP_BIN` when set), its env resolved from the pod, its volumes on
//! host directories, `127.0.0.1` and `0.0.0.0` turned into the pod IP. It authenticates as the
//! ServiceAccount of `examples/sidecar-rbac.yaml` with a token not bound to a pod, so the processes
//! outlive the pods the rolling update replaces (the pod is not what is measured: the watch is). No
//! Supervisor runs: the census polls fail and no role label is written; the pod watch and the peer
//! file work as in a cluster, and the test checks each file against the pods it should list, before
//! and after the rolling update.
//!
//! Rounds, on one opted-in Parallel StatefulSet, in turn (`HAB_BENCH_FANOUT_ROUNDS` times): no
//! sidecar (the controllers', the scheduler's and kwok's own watch events), N sidecars with their
//! stored args (`--pod-index`: pods 0–2 and i±2^k), N sidecars without `--pod-index` (each watches
//! the whole StatefulSet). Each round: the sidecars start and write their files, `IDLE` seconds of
//! steady state, a rolling update of every pod (until every file lists the new pods, and `SETTLE`
//! more), each measured as the difference of the API server's `/metrics`. Asserts correctness
//! only: every file lists exactly the pods its sidecar watches, before and after the update; every
//! sidecar alive and logging its writes.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::Pod;
use kube::Client;
use kube::api::{Api, Patch, PatchParams};
use serde_json::json;

use super::support::pod_token::{service_account_token, write_token_kubeconfig};
use super::support::webhook_process::binary;
use super::*;
use crate::support::pod_spec::{self as spec, Lookup, Mounts};

const NS_FANOUT: &str = "big-ring-fanout";
const STS: &str = "fan";
/// The ServiceAccount of examples/sidecar-rbac.yaml.
const SERVICE_ACCOUNT: &str = "habitat";
const IDLE: Duration = Duration::from_secs(30);
/// After a rolling update, for the last watch events to be delivered (every round waits as long).
const SETTLE: Duration = Duration::from_secs(5);
/// 100 debug-build processes starting at once on 2 shared cores, each listing and watching.
const SIDECARS_WRITE_TIMEOUT: Duration = Duration::from_secs(600);
const PROCESS_CPU: &str = "process_cpu_seconds_total";

#[derive(Clone, Copy, PartialEq)]
enum Sidecars {
    None,
    /// Their stored args, `--pod-index` included.
    Bounded,
    /// `--pod-index <i>` removed: each watches the whole StatefulSet.
    Unbounded,
}

impl Sidecars {
    fn name(self) -> &'static str {
        match self {
            Sidecars::None => "no sidecar (baseline)",
            Sidecars::Bounded => "sidecars with --pod-index",
            Sidecars::Unbounded => "sidecars without --pod-index",
        }
    }
}

/// What the API server counted over one window, and the sidecars' own CPU time meanwhile.
struct Window {
    seconds: f64,
    apiserver: Metrics,
    sidecar_cpu_seconds: f64,
}

impl Window {
    fn pod_events(&self) -> f64 {
        self.apiserver.sum(WATCH_EVENTS, &[POD_KIND])
    }
    fn pod_mib(&self) -> f64 {
        self.apiserver.sum(WATCH_BYTES, &[POD_KIND]) / 1048576.0
    }
    fn cpu(&self) -> f64 {
        self.apiserver.sum(PROCESS_CPU, &[])
    }
}

struct Round {
    sidecars: Sidecars,
    processes: usize,
    /// Open pod watches as the API server counts them, during the idle window.
    pod_watches: f64,
    idle: Window,
    rollout: Window,
    /// "peer watch file replaced" lines over all the sidecars' logs.
    file_writes: usize,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "takes many minutes; run by scripts/bench.sh fanout"]
async fn fanout_figures() {
    if !enabled() {
        return;
    }
    let replicas = bench_replicas(100);
    let client = client().await;
    let mut webhook = start_figures_webhook(&client).await;
    let _cleanup = Cleanup { ns: NS_FANOUT };
    // Every replica, and room for the rolling update's replacement.
    add_nodes(&client, "fanout", replicas + 10).await;
    let ns = namespace(&client, NS_FANOUT).await;
    kubectl(&["apply", "-n", &ns, "-f", repo_file("examples/sidecar-rbac.yaml").to_str().unwrap()]).unwrap();
    let dir = tempfile::Builder::new().prefix("hab-fanout-").tempdir().unwrap();
    let token = service_account_token(&client, &ns, SERVICE_ACCOUNT, None).await.unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    write_token_kubeconfig(&kubeconfig, &token, &ns);

    create(&client, &ns, &statefulset(STS, replicas, "Parallel", true)).await;
    let statefulsets = Api::<StatefulSet>::namespaced(client.clone(), &ns);
    wait_rolled_out(&statefulsets, STS, STEP_TIMEOUT).await;
    let run_started = Instant::now();

    // The three rounds in turn, `HAB_BENCH_FANOUT_ROUNDS` (1) times: drift on a shared machine
    // hits each.
    let repeat: usize = std::env::var("HAB_BENCH_FANOUT_ROUNDS").map_or(1, |v| v.parse().unwrap());
    let kinds = [Sidecars::None, Sidecars::Bounded, Sidecars::Unbounded];
    let mut rounds = Vec::new();
    for (i, sidecars) in (0..repeat).flat_map(|_| kinds).enumerate() {
        let round_dir = dir.path().join(format!("round-{i}"));
        let round = round(&client, &statefulsets, &kubeconfig, &round_dir, sidecars, i).await;
        rounds.push(round);
    }
    let report = report(replicas, &rounds, run_started.elapsed().as_secs_f64());
    eprintln!("{report}");
    if let Ok(out) = std::env::var("HAB_BENCH_OUT") {
        std::fs::write(Path::new(&out).join("fanout.md"), &report).unwrap();
    }
    webhook.stop();
}

/// One round: the sidecars started and their files written, an idle window, a rolling update.
async fn round(
    client: &Client,
    statefulsets: &Api<StatefulSet>,
    kubeconfig: &Path,
    dir: &Path,
    sidecars: Sidecars,
    revision: usize,
) -> Round {
    let started = Instant::now();
    let mut running = match sidecars {
        Sidecars::None => Running::default(),
        _ => start_sidecars(client, kubeconfig, dir, sidecars == Sidecars::Bounded).await,
    };
    running.wait_files_match(client, sidecars).await;
    eprintln!(
        "[fanout] {}: {} processes wrote their peer files in {:.1} s",
        sidecars.name(),
        running.procs.len(),
        started.elapsed().as_secs_f64()
    );

    let before = Metrics::of_apiserver(client).await;
    let (cpu_before, t0) = (running.cpu_seconds(), Instant::now());
    tokio::time::sleep(IDLE).await;
    let after_idle = Metrics::of_apiserver(client).await;
    let pod_watches =
        after_idle.sum("apiserver_longrunning_requests", &["resource=\"pods\"", "verb=\"WATCH\""]);
    let cpu_idle = running.cpu_seconds();
    let idle = Window {
        seconds: t0.elapsed().as_secs_f64(),
        apiserver: after_idle.since(&before),
        sidecar_cpu_seconds: cpu_idle - cpu_before,
    };

    let t1 = Instant::now();
    let patch = json!({"spec": {"template": {"metadata": {"annotations": {"bench/revision": revision.to_string()}}}}});
    statefulsets.patch(STS, &PatchParams::default(), &Patch::Merge(patch)).await.unwrap();
    wait_rolled_out(statefulsets, STS, STEP_TIMEOUT).await;
    let seconds = t1.elapsed().as_secs_f64();
    eprintln!("[fanout] {}: rolling update {seconds:.1} s", sidecars.name());
    // The files follow the replaced pods: the sidecars watched through the whole update. The
    // window closes once they have, and the last events are delivered.
    running.wait_files_match(client, sidecars).await;
    tokio::time::sleep(SETTLE).await;
    let rollout = Window {
        seconds,
        apiserver: Metrics::of_apiserver(client).await.since(&after_idle),
        sidecar_cpu_seconds: running.cpu_seconds() - cpu_idle,
    };
    running.assert_alive();
    let file_writes = running.file_writes();
    if sidecars != Sidecars::None {
        assert!(idle.pod_events() + rollout.pod_events() > 0.0, "no pod watch events counted");
    }
    let processes = running.procs.len();
    running.stop();
    Round { sidecars, processes, pod_watches, idle, rollout, file_writes }
}

/// A sidecar process per pod of the StatefulSet, from its stored container.
async fn start_sidecars(client: &Client, kubeconfig: &Path, dir: &Path, bounded: bool) -> Running {
    let pods = live_pods(client).await;
    let mut running = Running::default();
    for (ordinal, pod) in pods {
        let sidecar_dir = dir.join(format!("{STS}-{ordinal}"));
        std::fs::create_dir_all(&sidecar_dir).unwrap();
        let (command, peer_file) = sidecar_command(&pod, kubeconfig, &sidecar_dir, bounded);
        let log = sidecar_dir.join("sidecar.log");
        running.spawn(ordinal, command, &log, peer_file);
    }
    running
}

/// The stored sidecar container as a command line here; and where its peer file is.
fn sidecar_command(pod: &Pod, kubeconfig: &Path, dir: &Path, bounded: bool) -> (Command, PathBuf) {
    let container = super::support::injected::sidecar(pod);
    let ip = pod.status.as_ref().and_then(|s| s.pod_ip.clone()).expect("a pod IP");
    let env = spec::resolve_env(pod, container, &NoValues).unwrap();
    // Each volume the container mounts is a directory of its own here.
    let mounts = Mounts::new(
        container
            .volume_mounts
            .iter()
            .flatten()
            .map(|m| {
                let host = dir.join(&m.name);
                std::fs::create_dir_all(&host).unwrap();
                (m.mount_path.clone(), host)
            })
            .collect(),
    );
    let mut argv: Vec<String> = spec::argv(container, &env, "hab-bootstrap")
        .iter()
        .skip(1)
        .map(|a| mounts.rewrite(&a.replace("127.0.0.1", &ip).replace("0.0.0.0", &ip)))
        .collect();
    let index = argv.iter().position(|a| a == "--pod-index").expect("the webhook passed --pod-index");
    if !bounded {
        argv.drain(index..index + 2);
    }
    let peer_file = argv
        .windows(2)
        .find(|w| w[0] == "--peer-watch-file")
        .map(|w| PathBuf::from(&w[1]))
        .expect("watch-file mode");
    let mut command = Command::new(binary());
    command
        .args(&argv)
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .env("KUBECONFIG", kubeconfig)
        .env("RUST_LOG", "info")
        .envs(env.iter().map(|(k, v)| (k, mounts.rewrite(v))));
    (command, peer_file)
}

/// The pod's env refers to no Secret or ConfigMap.
struct NoValues;

impl Lookup for NoValues {
    fn secret_key(&self, _: &str, _: &str) -> Option<String> {
        None
    }
    fn config_map_key(&self, _: &str, _: &str) -> Option<String> {
        None
    }
}

/// The StatefulSet's live pods by ordinal.
async fn live_pods(client: &Client) -> BTreeMap<u32, Pod> {
    stored_pods(client, NS_FANOUT, STS)
        .await
        .into_iter()
        .map(|(ordinal, (_, raw))| (ordinal, serde_json::from_value(raw).unwrap()))
        .collect()
}

struct Sidecar {
    ordinal: u32,
    child: Child,
    log: PathBuf,
    peer_file: PathBuf,
}

/// The sidecar processes of a round: killed and reaped when dropped.
#[derive(Default)]
struct Running {
    procs: Vec<Sidecar>,
}

impl Running {
    fn spawn(&mut self, ordinal: u32, mut command: Command, log: &Path, peer_file: PathBuf) {
        let file = std::fs::File::create(log).unwrap();
        command.stdin(Stdio::null()).stdout(file.try_clone().unwrap()).stderr(file);
        // SAFETY: prctl is async-signal-safe and touches no memory of the parent.
        unsafe {
            use std::os::unix::process::CommandExt;
            command.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        let child = command.spawn().expect("starting a sidecar");
        self.procs.push(Sidecar { ordinal, child, log: log.to_owned(), peer_file });
    }

    /// Until every peer file lists exactly the live pods its sidecar should watch: ordinals
    /// `watched_ordinals(i)` with `--pod-index`, every other pod without; every sidecar alive.
    async fn wait_files_match(&mut self, client: &Client, sidecars: Sidecars) {
        let deadline = Instant::now() + SIDECARS_WRITE_TIMEOUT;
        loop {
            self.assert_alive();
            let wrong = self.files_not_matching(client, sidecars).await;
            if wrong.is_empty() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{}: after {SIDECARS_WRITE_TIMEOUT:?} the peer files of {wrong:?} do not list their pods",
                sidecars.name()
            );
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }

    /// The ordinals whose peer file does not list exactly the pods it should (all of them while a
    /// pod has no IP yet).
    async fn files_not_matching(&self, client: &Client, sidecars: Sidecars) -> Vec<u32> {
        let pods = live_pods(client).await;
        let ip = |p: &Pod| p.status.as_ref().and_then(|s| s.pod_ip.clone());
        if pods.values().any(|p| ip(p).is_none()) {
            return self.procs.iter().map(|s| s.ordinal).collect();
        }
        self.procs
            .iter()
            .filter(|s| {
                let watched = hab_bootstrap::sidecar::peer_set::watched_ordinals(s.ordinal);
                let want: BTreeSet<String> = pods
                    .iter()
                    .filter(|(o, _)| **o != s.ordinal)
                    .filter(|(o, _)| sidecars == Sidecars::Unbounded || watched.contains(o))
                    .filter_map(|(_, p)| ip(p))
                    .collect();
                let have = std::fs::read_to_string(&s.peer_file).unwrap_or_default();
                want.is_empty() || have.lines().map(str::to_owned).collect::<BTreeSet<_>>() != want
            })
            .map(|s| s.ordinal)
            .collect()
    }

    fn assert_alive(&mut self) {
        for s in &mut self.procs {
            if let Some(status) = s.child.try_wait().unwrap() {
                let log = std::fs::read_to_string(&s.log).unwrap_or_default();
                let tail: Vec<&str> = log.lines().rev().take(5).collect();
                panic!("the sidecar of {STS}-{} exited ({status}): {tail:?}", s.ordinal);
            }
        }
    }

    /// User and system CPU time of every sidecar so far, in seconds.
    fn cpu_seconds(&self) -> f64 {
        // SAFETY: plain libc call.
        let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
        self.procs
            .iter()
            .map(|s| {
                let stat = std::fs::read_to_string(format!("/proc/{}/stat", s.child.id())).unwrap();
                // After the command name in parentheses: state is field 3, utime 14, stime 15.
                let fields: Vec<&str> = stat.rsplit_once(')').unwrap().1.split_whitespace().collect();
                (fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()) as f64 / ticks
            })
            .sum()
    }

    /// Every sidecar replaced its file at least once; the total.
    fn file_writes(&self) -> usize {
        self.procs
            .iter()
            .map(|s| {
                let log = std::fs::read_to_string(&s.log).unwrap();
                let writes = log.lines().filter(|l| l.contains("peer watch file replaced")).count();
                assert!(writes > 0, "{STS}-{} logged no peer file write", s.ordinal);
                writes
            })
            .sum()
    }

    /// SIGTERM, then SIGKILL after 10 s; every process reaped.
    fn stop(&mut self) {
        for s in &self.procs {
            // SAFETY: plain syscall.
            unsafe { libc::kill(s.child.id() as i32, libc::SIGTERM) };
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        for mut s in self.procs.drain(..) {
            while s.child.try_wait().unwrap().is_none() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = s.child.kill();
            let _ = s.child.wait();
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Deletes the namespace and unregisters the webhook, also when the test panics.
struct Cleanup {
    ns: &'static str,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        // No panic here: this may run while unwinding.
        for args in [
            &["delete", "namespace", self.ns, "--ignore-not-found", "--wait=false"][..],
            &["delete", "mutatingwebhookconfiguration", "hab-bootstrap", "--ignore-not-found"],
        ] {
            if let Err(e) = kubectl(args) {
                eprintln!("[fanout] clean-up: {e}");
            }
        }
    }
}

/// The control plane's kubectl (`scripts/control-plane.sh run` puts it first on PATH).
fn kubectl(args: &[&str]) -> Result<(), String> {
    let out = Command::new("kubectl").args(args).output().map_err(|e| format!("running kubectl: {e}"))?;
    out.status
        .success()
        .then_some(())
        .ok_or_else(|| format!("kubectl {args:?}: {}", String::from_utf8_lossy(&out.stderr)))
}

fn report(replicas: i32, rounds: &[Round], run_seconds: f64) -> String {
    let mut r = String::new();
    let n = replicas as usize;
    writeln!(r, "## Watch-file fan-out: {n} replicas, {n} sidecars (one run, {run_seconds:.0} s)\n").unwrap();
    writeln!(
        r,
        "| round | sidecars | open pod watches | idle {}s: pod watch events, API server CPU s | rolling update s | pod watch events | MiB | API server CPU s | sidecars' CPU s | peer file writes |",
        IDLE.as_secs()
    )
    .unwrap();
    writeln!(r, "|---|---|---|---|---|---|---|---|---|---|").unwrap();
    for x in rounds {
        writeln!(
            r,
            "| {} | {} | {:.0} | {:.0}, {:.2} | {:.1} | {:.0} | {:.1} | {:.1} | {:.1} | {} |",
            x.sidecars.name(),
            x.processes,
            x.pod_watches,
            x.idle.pod_events(),
            x.idle.cpu(),
            x.rollout.seconds,
            x.rollout.pod_events(),
            x.rollout.pod_mib(),
            x.rollout.cpu(),
            x.rollout.sidecar_cpu_seconds,
            x.file_writes,
        )
        .unwrap();
    }
    // The median over the repetitions of each kind of round.
    let median_of = |s: Sidecars, f: fn(&Window) -> f64| {
        median(&rounds.iter().filter(|x| x.sidecars == s).map(|x| f(&x.rollout)).collect::<Vec<_>>())
    };
    writeln!(
        r,
        "\nThe sidecars' share of the rolling update (the round minus the baseline; medians when repeated), bounded / unbounded:"
    )
    .unwrap();
    for (what, f) in [
        ("pod watch events", Window::pod_events as fn(&Window) -> f64),
        ("MiB", Window::pod_mib),
        ("API server CPU s", Window::cpu),
    ] {
        let base = median_of(Sidecars::None, f);
        let (b, u) = (median_of(Sidecars::Bounded, f) - base, median_of(Sidecars::Unbounded, f) - base);
        writeln!(r, "- {what}: {b:.1} / {u:.1} = **{:.3}**", b / u).unwrap();
    }
    let pairs: usize = (0..n as u32)
        .map(|i| hab_bootstrap::sidecar::peer_set::watched_ordinals(i).range(..n as u32).count())
        .sum();
    writeln!(
        r,
        "- watcher pairs by construction: {pairs} / {} = {:.3}",
        n * (n - 1),
        pairs as f64 / (n * (n - 1)) as f64
    )
    .unwrap();
    r
}

//! A kubelet for real processes: for each pod of the namespace as the API server stored it (kwok
//! gives it an IP from a loopback range), it runs the pod's Supervisor container with the real
//! `hab` binaries and its role sidecar with the project's own binary, both from their stored
//! command lines.
//!
//! What it does like a kubelet: env (literal values with `$(VAR)` expansion, fieldRefs, Secret
//! and ConfigMap keys), `$(VAR)` in command and args, volumes (a PVC is a directory per claim kept
//! across pod recreation; an emptyDir a directory per pod UID, kept across container restarts;
//! the container's own file system, and so `/hab/sup` without a volume, is new at every container
//! start), native sidecars (initContainers with `restartPolicy: Always` start first and must pass
//! their startupProbe before the Supervisor starts), restarts of exited containers with a backoff,
//! SIGTERM on pod deletion. Cluster DNS: each Supervisor runs in its own mount, UTS and PID namespace
//! (`unshare --mount --uts --pid --fork --mount-proc`; the PID namespace makes a container's stop
//! kill every process in it, the service's run hook too) with hostname = pod name and a private `/etc/hosts` that maps every
//! published pod's `<pod>.<service>.<ns>.svc.<domain>` to its IP (Ready pods, or every pod with an
//! IP when the Service has `publishNotReadyAddresses`), written again at every start; its
//! `/etc/resolv.conf` names no reachable server, so any other name fails fast.
//!
//! Liberties, documented: all pods share this machine's network namespace, so the harness
//! APPENDS `--listen-gossip IP:9638 --listen-http IP:9631 --listen-ctl IP:9632 --sys-ip-address IP`
//! (IP = the pod IP) to the Supervisor's command line, and the sidecar's `127.0.0.1` and `0.0.0.0`
//! become the pod IP. Paths in args and env under a volume's mountPath become the host directory
//! of that volume (`/hab` is the Supervisor's FS_ROOT and `/hab/...` mounts are links inside it).
//! The stored image is ignored: `hab sup run` is the real `hab` of HAB_BOOTSTRAP_HABITAT_BIN and
//! the package (`acme/roletest`) is made on disk by `mkpkg.sh`. The sidecar authenticates with a
//! TokenRequest token of the pod's ServiceAccount bound to the pod (a kubeconfig), so RBAC and the
//! admission policy apply. Readiness in the API server is kwok's, not the processes'.

use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{
    ConfigMap, Container, PersistentVolume, PersistentVolumeClaim, Pod, Secret, Service,
};
use kube::Client;
use kube::api::{Api, ListParams, PostParams};

use crate::census::http_get;
use crate::support::pod_spec::{self as spec, Lookup, Mounts};

pub const SIDECAR: &str = "habitat-role";
const RESTART_BACKOFF_MAX: Duration = Duration::from_secs(10);
const STOP_GRACE_MAX: Duration = Duration::from_secs(10);

/// Where the Habitat binaries and the package maker are.
#[derive(Debug, Clone)]
pub struct Habitat {
    pub bin: PathBuf,
    pub mkpkg: PathBuf,
}

/// One process group (the process calls setsid): killed with its group when dropped.
pub struct Proc {
    child: Child,
    pub log: PathBuf,
    pub started: Instant,
}

impl Proc {
    fn spawn(mut command: Command, log: &Path) -> std::io::Result<Self> {
        let file = std::fs::File::create(log)?;
        command.stdin(Stdio::null()).stdout(file.try_clone()?).stderr(file);
        // SAFETY: setsid and prctl are async-signal-safe and touch no memory of the parent.
        unsafe {
            command.pre_exec(|| {
                libc::setsid();
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        let child = command.spawn()?;
        Ok(Self { child, log: log.to_owned(), started: Instant::now() })
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// Signals the whole process group.
    pub fn signal(&self, sig: i32) {
        // SAFETY: plain syscall.
        unsafe { libc::kill(-self.pid(), sig) };
    }

    /// Some(exit description) once it has exited.
    fn exited(&mut self) -> Option<String> {
        match self.child.try_wait() {
            Ok(Some(status)) => Some(status.to_string()),
            Ok(None) => None,
            Err(e) => Some(format!("wait failed: {e}")),
        }
    }

    /// SIGTERM (or `sig`), then SIGKILL after `grace`; returns how it ended.
    fn stop(&mut self, sig: i32, grace: Duration) -> String {
        self.signal(sig);
        let deadline = Instant::now() + grace;
        loop {
            if let Some(how) = self.exited() {
                // Children of the group may still be on their way out.
                self.signal(libc::SIGKILL);
                return how;
            }
            if Instant::now() > deadline {
                self.signal(libc::SIGKILL);
                let _ = self.child.wait();
                return "killed after the grace period".into();
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn last_lines(&self, n: usize) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.signal(libc::SIGKILL);
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One container of one pod as the harness runs it.
#[derive(Default)]
struct Runner {
    proc: Option<Proc>,
    starts: u32,
    next_start: Option<Instant>,
    backoff: Duration,
    /// Why each earlier run ended (exit status and the last lines of its output).
    exits: Vec<String>,
    /// Held stopped by the test (no automatic restart).
    held: bool,
}

impl Runner {
    fn reap(&mut self, what: &str) {
        let Some(p) = self.proc.as_mut() else { return };
        if let Some(how) = p.exited() {
            let ran = p.started.elapsed();
            let tail = p.last_lines(3);
            self.exits.push(format!("{what} exited ({how}) after {ran:.1?}:\n{tail}"));
            eprintln!("[kubelet] {what} exited ({how}) after {ran:.1?}; last output:\n{tail}");
            self.proc = None;
            self.backoff = if ran > Duration::from_secs(10) {
                Duration::from_secs(1)
            } else {
                (self.backoff * 2).clamp(Duration::from_secs(1), RESTART_BACKOFF_MAX)
            };
            self.next_start = Some(Instant::now() + self.backoff);
        }
    }

    fn due(&self) -> bool {
        !self.held && self.proc.is_none() && self.next_start.is_none_or(|t| Instant::now() >= t)
    }
}

/// A pod the harness runs.
struct PodRt {
    name: String,
    ip: String,
    pod: Pod,
    dir: PathBuf,
    kubeconfig: PathBuf,
    values: Values,
    sidecar: Runner,
    sup: Runner,
    /// The sidecar passed its startupProbe (or has none, or is not a native sidecar).
    sidecar_started: bool,
}

/// Secret and ConfigMap keys the pod's env refers to, read once when the pod is first seen.
#[derive(Default, Clone)]
struct Values {
    secrets: BTreeMap<(String, String), String>,
    config_maps: BTreeMap<(String, String), String>,
}

impl Lookup for Values {
    fn secret_key(&self, name: &str, key: &str) -> Option<String> {
        self.secrets.get(&(name.to_owned(), key.to_owned())).cloned()
    }
    fn config_map_key(&self, name: &str, key: &str) -> Option<String> {
        self.config_maps.get(&(name.to_owned(), key.to_owned())).cloned()
    }
}

/// What a scenario sees of a running pod.
#[derive(Debug, Clone)]
pub struct Running {
    pub name: String,
    pub uid: String,
    pub ip: String,
    pub sup_starts: u32,
    pub sup_exits: Vec<String>,
}

struct State {
    pods: BTreeMap<String, PodRt>, // by UID
    claims: PathBuf,
    /// Pod name → the address its processes use instead of the one kwok stored (see
    /// `Kubelet::override_address`).
    overrides: BTreeMap<String, String>,
}

pub struct Kubelet {
    state: Arc<Mutex<State>>,
    stop: Arc<AtomicBool>,
    task: Option<tokio::task::JoinHandle<()>>,
}

struct Ctx {
    client: Client,
    ns: String,
    domain: String,
    habitat: Habitat,
    root: PathBuf,
}

impl Kubelet {
    /// Starts managing every pod of namespace `ns` (`root` holds all host-side directories).
    pub fn start(client: Client, ns: &str, domain: &str, habitat: Habitat, root: &Path) -> Self {
        let claims = root.join("claims");
        std::fs::create_dir_all(&claims).unwrap();
        let state = Arc::new(Mutex::new(State { pods: BTreeMap::new(), claims, overrides: BTreeMap::new() }));
        let stop = Arc::new(AtomicBool::new(false));
        let ctx =
            Ctx { client, ns: ns.to_owned(), domain: domain.to_owned(), habitat, root: root.to_owned() };
        let task = tokio::spawn(run(ctx, Arc::clone(&state), Arc::clone(&stop)));
        Self { state, stop, task: Some(task) }
    }

    /// The pods whose Supervisor is running now, by name.
    pub fn running(&self) -> BTreeMap<String, Running> {
        let st = self.state.lock().unwrap();
        st.pods
            .iter()
            .filter(|(_, p)| p.sup.proc.is_some())
            .map(|(uid, p)| {
                (
                    p.name.clone(),
                    Running {
                        name: p.name.clone(),
                        uid: uid.clone(),
                        ip: p.ip.clone(),
                        sup_starts: p.sup.starts,
                        sup_exits: p.sup.exits.clone(),
                    },
                )
            })
            .collect()
    }

    /// Every exit of any Supervisor so far, "pod: description".
    pub fn supervisor_exits(&self) -> Vec<String> {
        let st = self.state.lock().unwrap();
        st.pods.values().flat_map(|p| p.sup.exits.iter().map(move |e| format!("{}: {e}", p.name))).collect()
    }

    fn with_pod<T>(&self, name: &str, f: impl FnOnce(&mut PodRt) -> T) -> T {
        let mut st = self.state.lock().unwrap();
        let pod =
            st.pods.values_mut().find(|p| p.name == name).unwrap_or_else(|| panic!("no pod {name} running"));
        f(pod)
    }

    /// A crash that stays down: SIGKILL to the Supervisor's process group, and no restart until
    /// `release_supervisor` (a CrashLoopBackOff, a node that does not come back, a held container).
    pub fn hold_supervisor(&self, name: &str) {
        self.with_pod(name, |p| {
            p.sup.held = true;
            if let Some(mut proc) = p.sup.proc.take() {
                let how = proc.stop(libc::SIGKILL, Duration::from_secs(5));
                p.sup.exits.push(format!("killed and held down by the test ({how})"));
            }
        });
    }

    /// The held Supervisor starts again (in place: same pod, same state).
    pub fn release_supervisor(&self, name: &str) {
        self.with_pod(name, |p| {
            p.sup.held = false;
            p.sup.next_start = None;
        });
    }

    /// A documented liberty: the pod named `name` (when it appears; not one already running) runs
    /// its processes on `ip` instead of the address kwok stored. For handing a dead pod's address
    /// to a pod of another StatefulSet when kwok will not (its pool hands released addresses out
    /// in random order). Only this pod's own processes use it: the API server (and so the other
    /// sidecars' peer files and the DNS records) keep kwok's address.
    pub fn override_address(&self, name: &str, ip: &str) {
        self.state.lock().unwrap().overrides.insert(name.to_owned(), ip.to_owned());
    }

    /// The host directory that the pod's Supervisor sees as `/hab/sup/default` (its `MEMBER_ID`,
    /// `CTL_SECRET`, `data/`), while it runs.
    pub fn state_dir(&self, name: &str) -> PathBuf {
        self.with_pod(name, |p| p.dir.join("fsroot/hab/sup/default"))
    }

    /// The last `n` lines of the pod's current (or last) sidecar log.
    pub fn sidecar_log(&self, name: &str, n: usize) -> String {
        self.with_pod(name, |p| {
            let log = p.dir.join(format!("sidecar-{}.log", p.sidecar.starts.max(1)));
            let text = std::fs::read_to_string(log).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            lines[lines.len().saturating_sub(n)..].join("\n")
        })
    }

    /// The Supervisor container restarts in place (same pod, same stored spec, same IP): stopped
    /// with SIGTERM (`graceful`) or SIGKILL, then started again at once.
    pub fn restart_supervisor(&self, name: &str, graceful: bool) {
        self.with_pod(name, |p| {
            if let Some(mut proc) = p.sup.proc.take() {
                let how = proc.stop(if graceful { libc::SIGTERM } else { libc::SIGKILL }, STOP_GRACE_MAX);
                p.sup.exits.push(format!("restarted in place by the test ({how})"));
            }
            p.sup.next_start = None;
            p.sup.held = false;
        });
    }

    /// A node reboot: every Supervisor and sidecar killed at once, then started again in the
    /// native-sidecar order (pods and IPs unchanged).
    pub fn reboot(&self) {
        let mut st = self.state.lock().unwrap();
        for p in st.pods.values_mut() {
            for r in [&mut p.sup, &mut p.sidecar] {
                if let Some(proc) = r.proc.as_ref() {
                    proc.signal(libc::SIGKILL);
                }
            }
        }
        for p in st.pods.values_mut() {
            for r in [&mut p.sup, &mut p.sidecar] {
                if let Some(mut proc) = r.proc.take() {
                    proc.stop(libc::SIGKILL, Duration::from_secs(5));
                }
                r.next_start = None;
            }
            p.sidecar_started = false;
        }
    }

    /// Stops everything it started (also done on drop).
    pub fn shutdown(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(task) = self.task.take() {
            task.abort();
        }
        let pods = std::mem::take(&mut self.state.lock().unwrap_or_else(|e| e.into_inner()).pods);
        for (_, mut p) in pods {
            for r in [&mut p.sup, &mut p.sidecar] {
                if let Some(mut proc) = r.proc.take() {
                    proc.stop(libc::SIGTERM, Duration::from_secs(5));
                }
            }
        }
    }
}

impl Drop for Kubelet {
    fn drop(&mut self) {
        self.shutdown();
    }
}

async fn run(ctx: Ctx, state: Arc<Mutex<State>>, stop: Arc<AtomicBool>) {
    while !stop.load(Ordering::SeqCst) {
        if let Err(e) = sync_once(&ctx, &state, &stop).await {
            eprintln!("[kubelet] sync: {e}");
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

fn supervisor_container(pod: &Pod) -> Option<&Container> {
    pod.spec.as_ref()?.containers.iter().find(|c| c.name != SIDECAR)
}

fn sidecar_container(pod: &Pod) -> Option<(&Container, bool)> {
    let spec = pod.spec.as_ref()?;
    if let Some(c) = spec.init_containers.iter().flatten().find(|c| c.name == SIDECAR) {
        return Some((c, c.restart_policy.as_deref() == Some("Always")));
    }
    spec.containers.iter().find(|c| c.name == SIDECAR).map(|c| (c, false))
}

fn ip_of(pod: &Pod) -> Option<String> {
    pod.status.as_ref()?.pod_ip.clone().filter(|ip| !ip.is_empty())
}

fn is_ready(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// A static provisioner: every unbound claim of the namespace gets a PersistentVolume made for it
/// (pre-bound through claimRef; the PV controller binds them), so that pods with claims schedule.
/// The data lives in the harness's per-claim directory, not in the PV's hostPath.
async fn provision(ctx: &Ctx) -> Result<(), String> {
    let claims = Api::<PersistentVolumeClaim>::namespaced(ctx.client.clone(), &ctx.ns)
        .list(&ListParams::default())
        .await
        .map_err(|e| e.to_string())?;
    let pvs = Api::<PersistentVolume>::all(ctx.client.clone());
    for c in claims.items {
        let spec = c.spec.clone().unwrap_or_default();
        if spec.volume_name.is_some() {
            continue;
        }
        let name = format!("{}-{}", ctx.ns, c.metadata.name.clone().unwrap());
        if pvs.get_opt(&name).await.map_err(|e| e.to_string())?.is_some() {
            continue;
        }
        let storage = spec
            .resources
            .as_ref()
            .and_then(|r| r.requests.as_ref())
            .and_then(|r| r.get("storage"))
            .map_or("1Gi".to_owned(), |q| q.0.clone());
        let pv: PersistentVolume = serde_json::from_value(serde_json::json!({
            "metadata": {"name": name, "labels": {"hab-bootstrap-e2e": ctx.ns}},
            "spec": {
                "capacity": {"storage": storage},
                "accessModes": spec.access_modes.clone().unwrap_or_else(|| vec!["ReadWriteOnce".into()]),
                "persistentVolumeReclaimPolicy": "Retain",
                "storageClassName": spec.storage_class_name.clone().unwrap_or_default(),
                "hostPath": {"path": format!("/tmp/hab-e2e-pv/{name}")},
                "claimRef": {"namespace": ctx.ns, "name": c.metadata.name.clone().unwrap(), "uid": c.metadata.uid.clone()},
            }
        }))
        .unwrap();
        pvs.create(&PostParams::default(), &pv).await.map_err(|e| format!("PV {name}: {e}"))?;
    }
    Ok(())
}

async fn sync_once(ctx: &Ctx, state: &Arc<Mutex<State>>, stop: &AtomicBool) -> Result<(), String> {
    provision(ctx).await?;
    let pods_api = Api::<Pod>::namespaced(ctx.client.clone(), &ctx.ns);
    let pods = pods_api.list(&ListParams::default()).await.map_err(|e| e.to_string())?.items;
    let services = Api::<Service>::namespaced(ctx.client.clone(), &ctx.ns)
        .list(&ListParams::default())
        .await
        .map_err(|e| e.to_string())?
        .items;
    let live: BTreeMap<String, &Pod> = pods
        .iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none() && ip_of(p).is_some())
        .filter(|p| supervisor_container(p).is_some())
        .map(|p| (p.metadata.uid.clone().unwrap(), p))
        .collect();

    // Pods deleted (or being deleted): SIGTERM both containers, as the kubelet does.
    let gone: Vec<PodRt> = {
        let mut st = state.lock().unwrap();
        let uids: Vec<String> = st.pods.keys().filter(|u| !live.contains_key(*u)).cloned().collect();
        uids.iter().filter_map(|u| st.pods.remove(u)).collect()
    };
    for mut p in gone {
        let grace = p
            .pod
            .spec
            .as_ref()
            .and_then(|s| s.termination_grace_period_seconds)
            .map_or(STOP_GRACE_MAX, |s| Duration::from_secs(s.max(0) as u64).min(STOP_GRACE_MAX));
        let grace = grace.max(Duration::from_secs(3));
        // Both at once; the Supervisor first so it can announce its departure.
        for r in [&p.sup, &p.sidecar] {
            if let Some(proc) = r.proc.as_ref() {
                proc.signal(libc::SIGTERM);
            }
        }
        for r in [&mut p.sup, &mut p.sidecar] {
            if let Some(mut proc) = r.proc.take() {
                proc.stop(libc::SIGTERM, grace);
            }
        }
        eprintln!("[kubelet] {} ({}) stopped: pod deleted", p.name, p.ip);
    }

    // New pods: prepare what needs the API (token, secrets) before taking the lock.
    let known: BTreeSet<String> = state.lock().unwrap().pods.keys().cloned().collect();
    for (uid, pod) in &live {
        if known.contains(uid) || stop.load(Ordering::SeqCst) {
            continue;
        }
        // Processes of an older pod on the same IP must be gone first (they are: stopped above).
        let mut rt = prepare(ctx, pod).await?;
        eprintln!("[kubelet] {} ({}) appeared, uid {uid}", rt.name, rt.ip);
        if let Some(ip) = state.lock().unwrap().overrides.get(&rt.name).filter(|ip| **ip != rt.ip) {
            eprintln!(
                "[kubelet] {}: runs on {ip} instead of its stored address {} (override)",
                rt.name, rt.ip
            );
            rt.ip = ip.clone();
        }
        state.lock().unwrap().pods.insert(uid.clone(), rt);
    }

    if stop.load(Ordering::SeqCst) {
        return Ok(());
    }
    let mut st = state.lock().unwrap();
    let claims = st.claims.clone();
    for p in st.pods.values_mut() {
        if let Some(stored) = live.get(p.pod.metadata.uid.as_deref().unwrap_or("")) {
            // Labels and status change; the spec of a pod does not.
            p.pod = (*stored).clone();
        }
        step_pod(ctx, &claims, p, &pods, &services);
    }
    Ok(())
}

/// Starts, restarts and gates the containers of one pod.
fn step_pod(ctx: &Ctx, claims: &Path, p: &mut PodRt, pods: &[Pod], services: &[Service]) {
    p.sidecar.reap(&format!("{} sidecar", p.name));
    p.sup.reap(&format!("{} supervisor", p.name));
    let native = sidecar_container(&p.pod).map(|(c, native)| (c.clone(), native));
    match native {
        Some((c, native)) => {
            if p.sidecar.due() {
                p.sidecar_started = false;
                match start_sidecar(ctx, claims, p, &c) {
                    Ok(proc) => {
                        p.sidecar.proc = Some(proc);
                        p.sidecar.starts += 1;
                        p.sidecar.next_start = None;
                    }
                    Err(e) => {
                        eprintln!("[kubelet] {} sidecar did not start: {e}", p.name);
                        p.sidecar.next_start = Some(Instant::now() + Duration::from_secs(2));
                    }
                }
            }
            if !p.sidecar_started && p.sidecar.proc.is_some() {
                p.sidecar_started = !native || startup_probe_passes(&c, &p.ip);
                if !p.sidecar_started
                    && p.sidecar.proc.as_ref().is_some_and(|s| s.started.elapsed() > Duration::from_secs(60))
                {
                    eprintln!("[kubelet] {} sidecar failed its startupProbe for 60 s: restarting it", p.name);
                    if let Some(mut proc) = p.sidecar.proc.take() {
                        proc.stop(libc::SIGTERM, Duration::from_secs(3));
                    }
                }
            }
        }
        None => p.sidecar_started = true,
    }
    if p.sidecar_started && p.sup.due() {
        match start_supervisor(ctx, claims, p, pods, services) {
            Ok(proc) => {
                p.sup.proc = Some(proc);
                p.sup.starts += 1;
                p.sup.next_start = None;
            }
            Err(e) => {
                eprintln!("[kubelet] {} supervisor did not start: {e}", p.name);
                p.sup.exits.push(format!("not started: {e}"));
                p.sup.next_start = Some(Instant::now() + Duration::from_secs(2));
            }
        }
    }
}

fn startup_probe_passes(c: &Container, ip: &str) -> bool {
    let Some(get) = c.startup_probe.as_ref().and_then(|p| p.http_get.as_ref()) else { return true };
    let port = match &get.port {
        k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int(p) => *p as u16,
        k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::String(name) => c
            .ports
            .iter()
            .flatten()
            .find(|p| p.name.as_deref() == Some(name))
            .map_or(0, |p| p.container_port as u16),
    };
    http_get(ip, port, get.path.as_deref().unwrap_or("/")).is_some_and(|(s, _)| (200..400).contains(&s))
}

/// The host directories of a container's volume mounts.
fn mounts(claims: &Path, p: &PodRt, c: &Container) -> Mounts {
    let volumes = p.pod.spec.as_ref().and_then(|s| s.volumes.clone()).unwrap_or_default();
    let mut out = Vec::new();
    for m in c.volume_mounts.iter().flatten() {
        let Some(v) = volumes.iter().find(|v| v.name == m.name) else { continue };
        let base = if let Some(pvc) = &v.persistent_volume_claim {
            claims.join(&pvc.claim_name)
        } else if v.empty_dir.is_some() {
            p.dir.join("volumes").join(&v.name)
        } else {
            continue; // projected tokens, Secrets, ConfigMaps: not needed by these processes
        };
        let host = match m.sub_path.as_deref() {
            Some(sub) if !sub.is_empty() => base.join(sub),
            _ => base,
        };
        std::fs::create_dir_all(&host).unwrap();
        out.push((m.mount_path.clone(), host));
    }
    Mounts::new(out)
}

/// The cluster DNS records of the namespace's pods, as `/etc/hosts` lines.
fn hosts_file(ctx: &Ctx, pods: &[Pod], services: &[Service]) -> String {
    let mut out = String::from("127.0.0.1 localhost\n");
    for pod in pods {
        let spec = pod.spec.as_ref();
        let (Some(host), Some(sub), Some(ip)) =
            (spec.and_then(|s| s.hostname.clone()), spec.and_then(|s| s.subdomain.clone()), ip_of(pod))
        else {
            continue;
        };
        let Some(svc) = services.iter().find(|s| s.metadata.name.as_deref() == Some(&sub)) else { continue };
        let svc_spec = svc.spec.as_ref();
        let headless = svc_spec.and_then(|s| s.cluster_ip.as_deref()) == Some("None");
        let selects = svc_spec.and_then(|s| s.selector.as_ref()).is_some_and(|sel| {
            let labels = pod.metadata.labels.clone().unwrap_or_default();
            sel.iter().all(|(k, v)| labels.get(k) == Some(v))
        });
        let not_ready_too = svc_spec.and_then(|s| s.publish_not_ready_addresses) == Some(true);
        let terminating = pod.metadata.deletion_timestamp.is_some();
        let terminal = pod
            .status
            .as_ref()
            .and_then(|s| s.phase.as_deref())
            .is_some_and(|p| p == "Succeeded" || p == "Failed");
        if headless && selects && !terminal && (not_ready_too || (is_ready(pod) && !terminating)) {
            out.push_str(&format!("{ip} {host}.{sub}.{}.svc.{} {host}\n", ctx.ns, ctx.domain));
        }
    }
    out
}

const SUPERVISOR_WRAPPER: &str = r#"hostname "$1" && mount --bind "$2" /etc/hosts && mount --bind "$3" /etc/resolv.conf && shift 3 && exec "$@""#;

fn base_env(command: &mut Command) {
    command.env_clear().env("PATH", "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin");
}

fn start_supervisor(
    ctx: &Ctx,
    claims: &Path,
    p: &mut PodRt,
    pods: &[Pod],
    services: &[Service],
) -> Result<Proc, String> {
    let c = supervisor_container(&p.pod).ok_or("no supervisor container")?.clone();
    let env = spec::resolve_env(&p.pod, &c, &p.values)?;
    let mounts = mounts(claims, p, &c);
    let mut argv = spec::argv(&c, &env, "hab");
    if argv.first().is_none_or(|a| a != "hab" && !a.ends_with("/hab"))
        || argv.get(1..3) != Some(&["sup".into(), "run".into()])
    {
        return Err(format!("not a `hab sup run` command line: {argv:?}"));
    }
    argv[0] = ctx.habitat.bin.join("hab").to_string_lossy().into_owned();
    for a in argv.iter_mut().skip(1) {
        *a = mounts.rewrite(a);
    }
    let ip = &p.ip;
    argv.extend(
        [
            "--listen-gossip",
            &format!("{ip}:9638"),
            "--listen-http",
            &format!("{ip}:9631"),
            "--listen-ctl",
            &format!("{ip}:9632"),
            "--sys-ip-address",
            ip,
        ]
        .map(str::to_owned),
    );

    // The container's own file system: new at every start.
    let fs_root = p.dir.join("fsroot");
    if fs_root.exists() {
        std::fs::remove_dir_all(&fs_root).map_err(|e| format!("wiping {}: {e}", fs_root.display()))?;
    }
    std::fs::create_dir_all(&fs_root).unwrap();
    for (path, host) in &mounts.0 {
        if path == "/hab" || path.starts_with("/hab/") {
            spec::link_into(&fs_root, path, host).map_err(|e| format!("linking {path}: {e}"))?;
        }
    }
    let made = Command::new(&ctx.habitat.mkpkg).arg(&fs_root).output().map_err(|e| e.to_string())?;
    if !made.status.success() {
        return Err(format!("mkpkg.sh: {}", String::from_utf8_lossy(&made.stderr)));
    }
    let hosts = p.dir.join("hosts");
    std::fs::write(&hosts, hosts_file(ctx, pods, services)).unwrap();
    let resolv = p.dir.join("resolv.conf");
    std::fs::write(&resolv, "nameserver 127.0.0.1\noptions timeout:1 attempts:1\n").unwrap();

    let mut command = Command::new("unshare");
    command
        // A PID namespace like a container's: when its first process (hab) dies, the kernel kills
        // everything else in it (the service's run hook runs in a process group of its own and
        // would otherwise outlive a SIGKILL of the Supervisor's group, keeping its ports).
        .args([
            "--mount",
            "--uts",
            "--pid",
            "--fork",
            "--mount-proc",
            "--propagation",
            "private",
            "--",
            "sh",
            "-c",
            SUPERVISOR_WRAPPER,
            "sh",
        ])
        .arg(&p.name)
        .arg(&hosts)
        .arg(&resolv)
        .args(&argv);
    base_env(&mut command);
    command
        .env("FS_ROOT", &fs_root)
        .env("HAB_SUP_BINARY", ctx.habitat.bin.join("hab-sup"))
        .env("HAB_LAUNCH_BINARY", ctx.habitat.bin.join("hab-launch"))
        .env("HAB_LICENSE", "accept-no-persist")
        .env("HAB_BLDR_URL", "http://127.0.0.1:1")
        // hab-launch gives hab-sup 5 s to connect back; with every pod of a scenario, the control
        // plane and the build on 2 shared cores it sometimes took longer (the launcher exits, as it
        // would on an overloaded node). This machine's load, not the ring, is not under test.
        .env("HAB_LAUNCH_SUP_CONNECT_TIMEOUT_SECS", "30")
        .env("HOME", fs_root.join("root"));
    for (k, v) in &env {
        command.env(k, mounts.rewrite(v));
    }
    let log = p.dir.join(format!("supervisor-{}.log", p.sup.starts + 1));
    eprintln!(
        "[kubelet] {} ({ip}) starting supervisor #{}: {}",
        p.name,
        p.sup.starts + 1,
        argv[1..].join(" ")
    );
    Proc::spawn(command, &log).map_err(|e| e.to_string())
}

fn start_sidecar(_ctx: &Ctx, claims: &Path, p: &mut PodRt, c: &Container) -> Result<Proc, String> {
    let env = spec::resolve_env(&p.pod, c, &p.values)?;
    let mounts = mounts(claims, p, c);
    let mut argv = spec::argv(c, &env, "hab-bootstrap");
    argv[0] = env!("CARGO_BIN_EXE_hab-bootstrap").to_owned();
    for a in argv.iter_mut().skip(1) {
        *a = mounts.rewrite(&a.replace("127.0.0.1", &p.ip).replace("0.0.0.0", &p.ip));
    }
    let mut command = Command::new(&argv[0]);
    command.args(&argv[1..]);
    base_env(&mut command);
    command.env("KUBECONFIG", &p.kubeconfig).env("RUST_LOG", "info,hab_bootstrap=debug");
    for (k, v) in &env {
        command.env(k, mounts.rewrite(v));
    }
    let log = p.dir.join(format!("sidecar-{}.log", p.sidecar.starts + 1));
    eprintln!(
        "[kubelet] {} ({}) starting sidecar #{}: {}",
        p.name,
        p.ip,
        p.sidecar.starts + 1,
        argv[1..].join(" ")
    );
    Proc::spawn(command, &log).map_err(|e| e.to_string())
}

/// What a new pod needs from the API server: a token of its ServiceAccount bound to it, and the
/// Secret and ConfigMap keys its containers' env refers to.
async fn prepare(ctx: &Ctx, pod: &Pod) -> Result<PodRt, String> {
    let name = pod.metadata.name.clone().unwrap();
    let uid = pod.metadata.uid.clone().unwrap();
    let dir = ctx.root.join("pods").join(format!("{name}-{uid}"));
    std::fs::create_dir_all(&dir).unwrap();
    let sa =
        pod.spec.as_ref().and_then(|s| s.service_account_name.clone()).unwrap_or_else(|| "default".into());
    let token =
        crate::support::pod_token::service_account_token(&ctx.client, &ctx.ns, &sa, Some(pod)).await?;
    let kubeconfig = dir.join("kubeconfig");
    crate::support::pod_token::write_token_kubeconfig(&kubeconfig, &token, &ctx.ns);

    let mut values = Values::default();
    let spec = pod.spec.as_ref().unwrap();
    let containers = spec.containers.iter().chain(spec.init_containers.iter().flatten());
    for e in containers.flat_map(|c| c.env.iter().flatten()) {
        let Some(from) = &e.value_from else { continue };
        if let Some(s) = &from.secret_key_ref {
            let secret =
                Api::<Secret>::namespaced(ctx.client.clone(), &ctx.ns).get_opt(&s.name).await.ok().flatten();
            let value = secret.and_then(|sec| {
                sec.data
                    .as_ref()
                    .and_then(|d| d.get(&s.key))
                    .map(|b| String::from_utf8_lossy(&b.0).into_owned())
                    .or_else(|| sec.string_data.as_ref().and_then(|d| d.get(&s.key)).cloned())
            });
            if let Some(v) = value {
                values.secrets.insert((s.name.clone(), s.key.clone()), v);
            }
        }
        if let Some(c) = &from.config_map_key_ref {
            let cm = Api::<ConfigMap>::namespaced(ctx.client.clone(), &ctx.ns)
                .get_opt(&c.name)
                .await
                .ok()
                .flatten();
            if let Some(v) = cm.and_then(|cm| cm.data.and_then(|d| d.get(&c.key).cloned())) {
                values.config_maps.insert((c.name.clone(), c.key.clone()), v);
            }
        }
    }
    Ok(PodRt {
        name,
        ip: ip_of(pod).unwrap(),
        pod: pod.clone(),
        dir,
        kubeconfig,
        values,
        sidecar: Runner::default(),
        sup: Runner::default(),
        sidecar_started: false,
    })
}

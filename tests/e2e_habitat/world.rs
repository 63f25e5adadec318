//! One scenario's world: a namespace with the sidecar's RBAC, the webhook, the kubelet, and the
//! measurements (time to one ring, time to one leader label) every scenario reports.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{Container, Pod, Secret, Service};
use k8s_openapi::api::events::v1::Event;
use kube::Client;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use serde_json::{Value, json};

use crate::kubelet::{Habitat, Kubelet, Running, SIDECAR};
use crate::{GROUP, WAIT, census, harness, objects};

pub const ROLE_LABEL: &str = "role";
/// Where the webhook points the Supervisor's `--peer-watch-file` (an emptyDir shared with the
/// sidecar).
pub const PEER_FILE: &str = "/habitat-bootstrap/peers";
/// The volume the webhook injects at `/hab/sup` when nothing covers it.
pub const STATE_VOLUME: &str = "habitat-supervisor-state";

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum SupVolume {
    /// No volume at /hab/sup in the template: the webhook injects an emptyDir
    /// (`habitat-supervisor-state`), kept across container restarts, new with a new pod.
    None,
    /// A volumeClaimTemplate: kept across pod recreation.
    Pvc,
}

pub struct StsSpec {
    pub name: &'static str,
    pub replicas: i32,
    pub parallel: bool,
    /// `habitat/peer-mode`, when set (default: none, the watch-file mode).
    pub peer_mode: Option<&'static str>,
    pub volume: SupVolume,
}

impl StsSpec {
    pub fn new(name: &'static str, replicas: i32) -> Self {
        Self { name, replicas, parallel: false, peer_mode: None, volume: SupVolume::None }
    }

    fn object(&self) -> StatefulSet {
        let mut annotations = json!({"habitat/bootstrap": "true"});
        if let Some(mode) = self.peer_mode {
            annotations["habitat/peer-mode"] = json!(mode);
        }
        let mut container = json!({
            "name": "supervisor",
            "image": "habitat/roletest:e2e",
            "args": ["sup", "run", "acme/roletest", "--topology", "leader", "--group", "prod", "--strategy", "none"],
            "ports": [{"name": "gossip", "containerPort": 9638}, {"name": "http", "containerPort": 9631}],
        });
        let mut claims = json!([]);
        if self.volume == SupVolume::Pvc {
            container["volumeMounts"] = json!([{"name": "hab-sup", "mountPath": "/hab/sup"}]);
            claims = json!([{
                "metadata": {"name": "hab-sup"},
                "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}},
            }]);
        }
        serde_json::from_value(json!({
            "apiVersion": "apps/v1",
            "kind": "StatefulSet",
            "metadata": {"name": self.name, "annotations": annotations},
            "spec": {
                "serviceName": self.name,
                "replicas": self.replicas,
                "podManagementPolicy": if self.parallel { "Parallel" } else { "OrderedReady" },
                "selector": {"matchLabels": {"app": self.name}},
                "template": {
                    "metadata": {"labels": {"app": self.name}},
                    "spec": {
                        "serviceAccountName": "habitat",
                        "terminationGracePeriodSeconds": 10,
                        "containers": [container],
                    },
                },
                "volumeClaimTemplates": claims,
            }
        }))
        .unwrap()
    }
}

fn kubectl_output(args: &[&str]) -> std::io::Result<std::process::Output> {
    let kubectl = std::env::var("CP_KUBECTL").unwrap_or_else(|_| "kubectl".into());
    std::process::Command::new(kubectl).args(args).output()
}

pub fn kubectl(args: &[&str]) {
    let out = kubectl_output(args).expect("kubectl runs");
    assert!(out.status.success(), "kubectl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

/// One measured step: (step, time to one ring, time to one leader label).
type Step = (String, Duration, Duration);

pub struct World {
    pub client: Client,
    pub ns: String,
    pub kubelet: Kubelet,
    pub habitat: Habitat,
    /// The scenario's name, in every measurement line and in the summary.
    pub scenario: String,
    /// Pods the test holds down (stored, their Supervisor not running): not expected to run.
    pub down: BTreeSet<String>,
    /// Extra namespaces made by the test (IP squatters), deleted at the end.
    extra_namespaces: Vec<String>,
    steps: Vec<Step>,
    /// Printed in the SCENARIO line when the test fails (the first failed measurement).
    failure: Option<String>,
    /// This world prints the SCENARIO line of its scenario: at `summary`, or as FAILED when the
    /// test panics (a world made `beside` another does not).
    reports: bool,
    summarized: bool,
    webhook: Arc<harness::Webhook>,
    /// Host directories and logs; kept when the test fails.
    dir: Option<tempfile::TempDir>,
    t0: Instant,
}

impl World {
    pub async fn new(scenario: &str, ns: &str, habitat: Habitat) -> Self {
        let client = harness::client().await;
        let webhook = Arc::new(harness::start_webhook(&client).await);
        kubectl(&[
            "apply",
            "-f",
            harness::repo_file("examples/sidecar-admission-policy.yaml").to_str().unwrap(),
        ]);
        // What `check` expects of a healthy install.
        kubectl(&["apply", "-f", harness::webhook_secrets_policy().path().to_str().unwrap()]);
        Self::with_webhook(scenario, ns, habitat, client, webhook).await
    }

    /// A second namespace with its own kubelet, admitted by the same webhook.
    pub async fn beside(&self, ns: &str) -> Self {
        Self::with_webhook(
            &self.scenario,
            ns,
            self.habitat.clone(),
            self.client.clone(),
            Arc::clone(&self.webhook),
        )
        .await
    }

    async fn with_webhook(
        scenario: &str,
        ns: &str,
        habitat: Habitat,
        client: Client,
        webhook: Arc<harness::Webhook>,
    ) -> Self {
        let ns = harness::namespace(&client, ns).await;
        kubectl(&[
            "apply",
            "-n",
            &ns,
            "-f",
            harness::repo_file("examples/sidecar-rbac.yaml").to_str().unwrap(),
        ]);
        let dir = tempfile::Builder::new().prefix("hab-e2e-habitat-").tempdir().unwrap();
        eprintln!(
            "[world] {scenario}: namespace {ns}, host directories and logs in {}",
            dir.path().display()
        );
        let kubelet =
            Kubelet::start(client.clone(), &ns, harness::CLUSTER_DOMAIN, habitat.clone(), dir.path());
        Self {
            client,
            ns,
            kubelet,
            habitat,
            scenario: scenario.to_owned(),
            down: BTreeSet::new(),
            extra_namespaces: Vec::new(),
            steps: Vec::new(),
            failure: None,
            reports: true,
            summarized: false,
            webhook,
            dir: Some(dir),
            t0: Instant::now(),
        }
    }

    pub fn pods(&self) -> Api<Pod> {
        Api::namespaced(self.client.clone(), &self.ns)
    }

    pub fn sts(&self) -> Api<StatefulSet> {
        Api::namespaced(self.client.clone(), &self.ns)
    }

    /// Creates the headless Service (publishNotReadyAddresses) and the StatefulSet; the clock of
    /// the measurements starts here.
    pub async fn create(&mut self, spec: &StsSpec) {
        let svc = objects::headless_service(spec.name, spec.name);
        Api::<Service>::namespaced(self.client.clone(), &self.ns)
            .create(&PostParams::default(), &svc)
            .await
            .unwrap();
        self.t0 = Instant::now();
        self.sts().create(&PostParams::default(), &spec.object()).await.unwrap();
    }

    pub async fn scale(&mut self, name: &str, replicas: i32) {
        self.t0 = Instant::now();
        self.sts()
            .patch(name, &PatchParams::default(), &Patch::Merge(json!({"spec": {"replicas": replicas}})))
            .await
            .unwrap();
    }

    /// A graceful pod deletion; the StatefulSet controller recreates it.
    pub async fn delete_pod(&mut self, name: &str) {
        self.t0 = Instant::now();
        self.pods().delete(name, &DeleteParams::default()).await.unwrap();
    }

    /// A rolling update: a template annotation changes.
    pub async fn rolling_update(&mut self, name: &str, value: &str) {
        self.t0 = Instant::now();
        let patch = json!({"spec": {"template": {"metadata": {"annotations": {"e2e/revision": value}}}}});
        self.sts().patch(name, &PatchParams::default(), &Patch::Merge(patch)).await.unwrap();
    }

    pub fn mark(&mut self) {
        self.t0 = Instant::now();
    }

    pub fn since_mark(&self) -> Duration {
        self.t0.elapsed()
    }

    /// The pods `sts-<ordinal>` if exactly those run a Supervisor (and nothing else of `sts`
    /// does, but the pods in `down`), each one the pod the API server stores now (same UID).
    pub async fn snapshot(&self, sts: &str, ordinals: &[u32]) -> Result<BTreeMap<String, Running>, String> {
        let mut want: Vec<String> = ordinals.iter().map(|o| format!("{sts}-{o}")).collect();
        want.sort();
        let stored = self
            .pods()
            .list(&ListParams::default().labels(&format!("app={sts}")))
            .await
            .map_err(|e| e.to_string())?;
        let stored: BTreeMap<String, String> = stored
            .items
            .iter()
            .filter(|p| p.metadata.deletion_timestamp.is_none())
            .map(|p| (p.metadata.name.clone().unwrap(), p.metadata.uid.clone().unwrap()))
            .filter(|(n, _)| !self.down.contains(n))
            .collect();
        let ours: BTreeMap<String, Running> =
            self.kubelet.running().into_iter().filter(|(n, _)| n.starts_with(&format!("{sts}-"))).collect();
        let names: Vec<String> = ours.keys().cloned().collect();
        if names == want
            && ours.iter().all(|(n, r)| stored.get(n) == Some(&r.uid))
            && stored.len() == want.len()
        {
            Ok(ours)
        } else {
            Err(format!(
                "want {want:?} running: running {names:?}, stored {:?}",
                stored.keys().collect::<Vec<_>>()
            ))
        }
    }

    /// Waits until exactly the pods `sts-<ordinal>` run a Supervisor (see `snapshot`).
    pub async fn wait_running(&self, sts: &str, ordinals: &[u32]) -> BTreeMap<String, Running> {
        let deadline = Instant::now() + WAIT;
        loop {
            match self.snapshot(sts, ordinals).await {
                Ok(r) => return r,
                Err(e) => assert!(Instant::now() < deadline, "not running after {WAIT:?}: {e}"),
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// Waits until no pod of `sts` is stored (scale to 0 done, kwok released the addresses).
    pub async fn wait_no_pods(&self, sts: &str) {
        let deadline = Instant::now() + WAIT;
        loop {
            let list = self.pods().list(&ListParams::default().labels(&format!("app={sts}"))).await.unwrap();
            if list.items.is_empty()
                && self.kubelet.running().keys().all(|n| !n.starts_with(&format!("{sts}-")))
            {
                return;
            }
            assert!(Instant::now() < deadline, "pods of {sts} still there after {WAIT:?}");
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// Time (since the last mark) until the Supervisors of `ordinals` form one ring.
    pub async fn time_to_ring(
        &self,
        sts: &str,
        ordinals: &[u32],
        timeout: Duration,
    ) -> Result<Duration, String> {
        let deadline = Instant::now() + timeout;
        loop {
            match self.ring(sts, ordinals).await {
                Ok(_) => return Ok(self.t0.elapsed()),
                Err(e) if Instant::now() > deadline => {
                    return Err(format!("no single ring after {timeout:?}: {e}"));
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(250)).await,
            }
        }
    }

    pub async fn ring(
        &self,
        sts: &str,
        ordinals: &[u32],
    ) -> Result<(BTreeMap<String, Running>, Vec<census::View>), String> {
        let running = self.snapshot(sts, ordinals).await?;
        let ips: Vec<String> = running.values().map(|r| r.ip.clone()).collect();
        let views = census::one_ring(&ips, GROUP)?;
        Ok((running, views))
    }

    /// Pod name → its Supervisor's member id, when `ordinals` form one ring.
    pub async fn member_ids(&self, sts: &str, ordinals: &[u32]) -> BTreeMap<String, String> {
        let (running, views) = self.ring(sts, ordinals).await.expect("one ring");
        running.keys().cloned().zip(views.into_iter().map(|v| v.local)).collect()
    }

    /// One ring, one finished election with one leader, and exactly one pod labelled
    /// role=leader in the API server: the leader's.
    pub async fn leader_label(&self, sts: &str, ordinals: &[u32]) -> Result<String, String> {
        let (running, views) = self.ring(sts, ordinals).await?;
        let leader = census::one_leader(&views)?;
        let leader_pod = running
            .values()
            .zip(&views)
            .find(|(_, v)| v.local == leader)
            .map(|(r, _)| r.name.clone())
            .ok_or("the leader is none of the pods")?;
        let list = self
            .pods()
            .list(&ListParams::default().labels(&format!("app={sts}")))
            .await
            .map_err(|e| e.to_string())?;
        let labelled: Vec<String> = list
            .items
            .iter()
            .filter(|p| p.metadata.deletion_timestamp.is_none())
            .filter(|p| {
                p.metadata.labels.as_ref().and_then(|l| l.get(ROLE_LABEL)).map(String::as_str)
                    == Some("leader")
            })
            .map(|p| p.metadata.name.clone().unwrap())
            .collect();
        if labelled == [leader_pod.clone()] {
            Ok(leader_pod)
        } else {
            Err(format!("census leader is {leader_pod}, role=leader on {labelled:?}"))
        }
    }

    /// Time (since the last mark) until `leader_label` holds.
    pub async fn time_to_leader_label(
        &self,
        sts: &str,
        ordinals: &[u32],
        timeout: Duration,
    ) -> Result<Duration, String> {
        let deadline = Instant::now() + timeout;
        loop {
            match self.leader_label(sts, ordinals).await {
                Ok(_) => return Ok(self.t0.elapsed()),
                Err(e) if Instant::now() > deadline => {
                    return Err(format!("no single leader label after {timeout:?}: {e}"));
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(250)).await,
            }
        }
    }

    /// Both measurements (each bounded by WAIT), printed and recorded; fails the test (with the
    /// Supervisors' exits) if either times out.
    pub async fn measure(&mut self, step: &str, sts: &str, ordinals: &[u32]) -> (Duration, Duration) {
        self.measure_within(step, sts, ordinals, WAIT).await
    }

    pub async fn measure_within(
        &mut self,
        step: &str,
        sts: &str,
        ordinals: &[u32],
        timeout: Duration,
    ) -> (Duration, Duration) {
        let ring = self.time_to_ring(sts, ordinals, timeout).await;
        let label = match &ring {
            Ok(_) => self.time_to_leader_label(sts, ordinals, timeout).await,
            Err(e) => Err(e.clone()),
        };
        let scenario = self.scenario.clone();
        match (&ring, &label) {
            (Ok(r), Ok(l)) => {
                eprintln!(
                    "[measure] {scenario} / {step}: time to one ring {r:.1?}, to one leader label {l:.1?}"
                );
                self.steps.push((step.to_owned(), *r, *l));
                (*r, *l)
            }
            _ => {
                let exits = self.kubelet.supervisor_exits();
                let why = ring.as_ref().err().or(label.as_ref().err()).unwrap();
                self.failure.get_or_insert(format!("at {step}: {why}"));
                panic!(
                    "{scenario} / {step}: ring {ring:?}, leader label {label:?}\nSupervisor exits so far:\n{}",
                    exits.join("\n---\n")
                )
            }
        }
    }

    /// A container restart in place: the pod's Supervisor is SIGKILLed and started again at once
    /// (same pod, same stored spec, same IP, same volumes; the sidecar keeps running). Measures the
    /// ring of `ordinals` afterwards and checks that the Supervisor came back with one start: no
    /// crash loop (issue 9, failure 1).
    pub async fn restart_in_place(
        &mut self,
        step: &str,
        sts: &str,
        ordinals: &[u32],
        pod: &str,
    ) -> (Duration, Duration) {
        let before = self.kubelet.running().get(pod).map(|r| r.sup_starts).expect("the pod runs");
        self.mark();
        self.kubelet.restart_supervisor(pod, false);
        let times = self.measure(step, sts, ordinals).await;
        let after = self.kubelet.running()[pod].clone();
        assert_eq!(
            after.sup_starts,
            before + 1,
            "{pod}'s Supervisor started more than once after a restart in place (a crash loop):\n{}",
            after.sup_exits.join("\n---\n")
        );
        times
    }

    /// Records a step measured by the scenario itself.
    pub fn record(&mut self, step: &str, ring: Duration, label: Duration) {
        eprintln!(
            "[measure] {} / {step}: time to one ring {ring:.1?}, to one leader label {label:.1?}",
            self.scenario
        );
        self.steps.push((step.to_owned(), ring, label));
    }

    /// This world prints no SCENARIO line (another world of the same scenario does).
    pub fn silence(&mut self) {
        self.reports = false;
    }

    /// Fails the test with `why`, which the SCENARIO line repeats.
    pub fn fail(&mut self, why: String) -> ! {
        self.failure.get_or_insert(why.clone());
        panic!("{why}")
    }

    fn steps_text(&self) -> String {
        self.steps
            .iter()
            .map(|(s, r, l)| format!("{s} {:.1}/{:.1}", r.as_secs_f64(), l.as_secs_f64()))
            .collect::<Vec<_>>()
            .join("; ")
    }

    /// The line the lead pastes into the table: the times of step `key` (the event the
    /// scenario is about), what it showed, and every step's times (ring/leader label, seconds).
    pub fn summary(&mut self, key: &str, showed: &str) {
        self.summarized = true;
        let (_, r, l) = self
            .steps
            .iter()
            .find(|(s, _, _)| s == key)
            .unwrap_or_else(|| panic!("no step {key:?} measured"));
        println!(
            "SCENARIO {} | ring {:.1} s | leader {:.1} s | {showed} [steps ring/leader s: {}]",
            self.scenario,
            r.as_secs_f64(),
            l.as_secs_f64(),
            self.steps_text()
        );
    }

    // --------------------------------------------------------------------------------------------
    // What the API server stored
    // --------------------------------------------------------------------------------------------

    /// What the new design injects, checked on the stored objects; every mismatch is reported.
    pub async fn injection_problems(&self, sts: &str, pod: &str, volume: SupVolume) -> Vec<String> {
        let mut problems = Vec::new();
        let secret_name = format!("{sts}-habitat-ring");
        let stored_sts = self.sts().get(sts).await.unwrap();
        let annotation =
            stored_sts.metadata.annotations.as_ref().and_then(|a| a.get("habitat/ring-key-secret")).cloned();
        if annotation.as_deref() != Some(secret_name.as_str()) {
            problems.push(format!("StatefulSet annotation habitat/ring-key-secret is {annotation:?}"));
        }
        match Api::<Secret>::namespaced(self.client.clone(), &self.ns).get_opt(&secret_name).await.unwrap() {
            None => problems.push(format!("no Secret {secret_name}")),
            Some(s) => {
                let key = s
                    .data
                    .as_ref()
                    .and_then(|d| d.get("ring-key"))
                    .map(|b| String::from_utf8_lossy(&b.0).into_owned());
                if !key.as_deref().is_some_and(|k| k.starts_with("SYM-SEC-1\n")) {
                    problems.push(format!("Secret {secret_name} has no SYM-SEC-1 ring-key"));
                }
            }
        }
        let pod = self.pods().get(pod).await.unwrap();
        let spec = pod.spec.as_ref().unwrap();
        let sup = supervisor(&pod);
        let args = sup.args.clone().unwrap_or_default();
        if args.iter().any(|a| a == "--peer") {
            problems.push(format!("the Supervisor has --peer: {args:?}"));
        }
        if !args.windows(2).any(|w| w[0] == "--peer-watch-file" && w[1] == PEER_FILE) {
            problems.push(format!("the Supervisor has no --peer-watch-file {PEER_FILE}: {args:?}"));
        }
        let ring_env = sup.env.iter().flatten().find(|e| e.name == "HAB_RING_KEY");
        let from = ring_env.and_then(|e| e.value_from.as_ref()).and_then(|f| f.secret_key_ref.as_ref());
        if !from.is_some_and(|s| s.name == secret_name && s.key == "ring-key") {
            problems.push(format!("HAB_RING_KEY is not from Secret {secret_name}/ring-key: {ring_env:?}"));
        }
        let state_mount = sup.volume_mounts.iter().flatten().find(|m| m.mount_path == "/hab/sup").cloned();
        match (&state_mount, volume) {
            (None, _) => problems.push("nothing mounted at /hab/sup in the Supervisor".into()),
            (Some(m), SupVolume::None) => {
                let injected = spec.volumes.iter().flatten().find(|v| v.name == m.name);
                if m.name != STATE_VOLUME || injected.is_none_or(|v| v.empty_dir.is_none()) {
                    problems.push(format!("/hab/sup is not the injected emptyDir {STATE_VOLUME}: {m:?}"));
                }
            }
            (Some(m), SupVolume::Pvc) => {
                if m.name != "hab-sup" {
                    problems.push(format!("/hab/sup is not the claim's volume: {m:?}"));
                }
                if spec.volumes.iter().flatten().any(|v| v.name == STATE_VOLUME) {
                    problems.push(format!("{STATE_VOLUME} injected although a claim covers /hab/sup"));
                }
            }
        }
        let sidecar =
            spec.init_containers.iter().flatten().chain(&spec.containers).find(|c| c.name == SIDECAR);
        match sidecar {
            None => problems.push("no sidecar".into()),
            Some(c) => {
                let sargs = c.args.clone().unwrap_or_default();
                let state_dir = sargs.windows(2).find(|w| w[0] == "--sup-state-dir").map(|w| w[1].clone());
                if !sargs.windows(2).any(|w| w[0] == "--ctl-gateway" && w[1] == "127.0.0.1:9632") {
                    problems.push(format!("the sidecar has no --ctl-gateway 127.0.0.1:9632: {sargs:?}"));
                }
                match (state_dir, &state_mount) {
                    (None, _) => problems.push(format!("the sidecar has no --sup-state-dir: {sargs:?}")),
                    (Some(dir), Some(m)) => {
                        let shares = c.volume_mounts.iter().flatten().any(|sm| {
                            sm.name == m.name
                                && dir.trim_end_matches('/')
                                    == format!("{}/default", sm.mount_path.trim_end_matches('/'))
                        });
                        if !shares {
                            problems.push(format!(
                                "the sidecar's --sup-state-dir {dir} is not <its mount of {}>/default",
                                m.name
                            ));
                        }
                    }
                    (Some(_), None) => {}
                }
            }
        }
        problems
    }

    pub async fn assert_injection(&self, sts: &str, pod: &str, volume: SupVolume) {
        let problems = self.injection_problems(sts, pod, volume).await;
        assert!(problems.is_empty(), "what the webhook stored for {pod}:\n- {}", problems.join("\n- "));
    }

    /// Events of `reason` about pod `pod`, their notes.
    pub async fn events(&self, pod: &str, reason: &str) -> Vec<String> {
        let api = Api::<Event>::namespaced(self.client.clone(), &self.ns);
        let list = api.list(&ListParams::default()).await.unwrap();
        list.items
            .into_iter()
            .filter(|e| e.reason.as_deref() == Some(reason))
            .filter(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(pod))
            .map(|e| e.note.unwrap_or_default())
            .collect()
    }

    /// The sidecar's /metrics of a running pod (its --metrics-listen port, on the pod's IP).
    pub async fn sidecar_metrics(&self, pod: &str) -> String {
        let stored = self.pods().get(pod).await.unwrap();
        let spec = stored.spec.as_ref().unwrap();
        let c = spec
            .init_containers
            .iter()
            .flatten()
            .chain(&spec.containers)
            .find(|c| c.name == SIDECAR)
            .unwrap();
        let args = c.args.clone().unwrap_or_default();
        let listen = args.windows(2).find(|w| w[0] == "--metrics-listen").map(|w| w[1].clone()).unwrap();
        let port: u16 = listen.rsplit(':').next().unwrap().parse().unwrap();
        let ip = self.kubelet.running()[pod].ip.clone();
        census::http_get(&ip, port, "/metrics").map(|(_, b)| b).unwrap_or_default()
    }

    // --------------------------------------------------------------------------------------------
    // Habitat's own tools against the ring
    // --------------------------------------------------------------------------------------------

    /// `hab config apply <GROUP> <incarnation> cfg.toml --remote-sup <pod ip>:9632`, authenticated
    /// with that pod's CTL_SECRET.
    pub fn config_apply(&self, pod: &str, incarnation: u64, toml: &str) {
        let ip = self.kubelet.running()[pod].ip.clone();
        let secret = std::fs::read_to_string(self.kubelet.state_dir(pod).join("CTL_SECRET")).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("cfg.toml");
        std::fs::write(&file, toml).unwrap();
        let out = std::process::Command::new(self.habitat.bin.join("hab"))
            .args(["config", "apply", GROUP, &incarnation.to_string()])
            .arg(&file)
            .args(["--remote-sup", &format!("{ip}:9632")])
            .env_clear()
            .env("PATH", "/usr/bin:/bin")
            .env("HAB_LICENSE", "accept-no-persist")
            .env("HAB_CTL_SECRET", secret.trim())
            .env("FS_ROOT", dir.path())
            .env("HOME", dir.path())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "hab config apply: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        eprintln!("[scenario] hab config apply {GROUP} {incarnation} --remote-sup {ip}:9632: ok");
    }

    /// The service's `cfg` as the Supervisor at `ip` renders it.
    pub fn service_cfg(ip: &str) -> Option<Value> {
        let (status, body) = census::http_get(ip, 9631, "/services/roletest/prod")?;
        if status != 200 {
            return None;
        }
        serde_json::from_str::<Value>(&body).ok()?.get("cfg").cloned()
    }

    /// Occupies the addresses `ips` (released by kwok) with placeholder pods in a namespace of their
    /// own, so that the next pods get new ones: kwok hands released addresses out again first (in
    /// random order), so pods recreated after a scale to 0 would otherwise get the old ones back.
    /// Every address released earlier on this control plane (200 by the big-ring test) may come
    /// first: the bound is time, not a count.
    pub async fn occupy_addresses(&mut self, ips: &BTreeSet<String>) {
        let ns = harness::namespace(&self.client, &format!("{}-squat", self.ns)).await;
        self.extra_namespaces.push(ns.clone());
        let api = Api::<Pod>::namespaced(self.client.clone(), &ns);
        let mut made = 0;
        let deadline = Instant::now() + 3 * WAIT;
        loop {
            let pods = api.list(&ListParams::default()).await.unwrap().items;
            let held: BTreeSet<String> =
                pods.iter().filter_map(|p| p.status.as_ref()?.pod_ip.clone()).collect();
            let pending = pods.len() - held.len();
            if ips.is_subset(&held) {
                eprintln!("[scenario] {made} placeholder pods hold the released addresses {ips:?}");
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{made} placeholder pods ({pending} pending) and the addresses {ips:?} are still free"
            );
            if pending == 0 {
                for _ in 0..10 {
                    let pod: Pod = serde_json::from_value(json!({
                        "metadata": {"name": format!("squat-{made}")},
                        "spec": {"containers": [{"name": "pause", "image": "pause:e2e"}]},
                    }))
                    .unwrap();
                    api.create(&PostParams::default(), &pod).await.unwrap();
                    made += 1;
                }
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
}

impl Drop for World {
    /// Stops every process, then deletes the namespaces and the PersistentVolumes made for them
    /// (without waiting: the next scenario uses other names).
    fn drop(&mut self) {
        if self.reports && !self.summarized {
            let why = self.failure.clone().unwrap_or_else(|| "see the panic above".into());
            println!(
                "SCENARIO {} | ring - | leader - | FAILED {why} [steps ring/leader s: {}]",
                self.scenario,
                self.steps_text()
            );
        }
        self.kubelet.shutdown();
        if std::thread::panicking()
            && let Some(dir) = self.dir.take()
        {
            eprintln!("[world] {}: logs kept in {}", self.ns, dir.keep().display());
        }
        for ns in std::iter::once(&self.ns).chain(&self.extra_namespaces) {
            let _ = kubectl_output(&["delete", "namespace", ns, "--wait=false"]);
            let _ =
                kubectl_output(&["delete", "pv", "-l", &format!("hab-bootstrap-e2e={ns}"), "--wait=false"]);
        }
        // The last world of a webhook: other test binaries share this control plane, so leave no
        // webhook registered that nobody serves (it would refuse their opted-in StatefulSets).
        if Arc::strong_count(&self.webhook) == 1 {
            let _ = kubectl_output(&[
                "delete",
                "mutatingwebhookconfiguration",
                "hab-bootstrap",
                "--ignore-not-found",
            ]);
        }
    }
}

pub fn supervisor(pod: &Pod) -> &Container {
    pod.spec.as_ref().unwrap().containers.iter().find(|c| c.name != SIDECAR).unwrap()
}

/// The address of each pod, by name.
pub fn addresses(running: &BTreeMap<String, Running>) -> BTreeSet<String> {
    running.values().map(|r| r.ip.clone()).collect()
}

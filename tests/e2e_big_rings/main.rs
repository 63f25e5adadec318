//! Big rings on a real control plane (scripts/test starts it), kwok playing the kubelets.
//!
//! - `big_ring_injected`: a 200-replica opted-in StatefulSet (Parallel) rolls out; every stored pod
//!   is injected, below a fixed size, and what is injected does not grow with the ordinal. A test
//!   of correctness, not of speed: generous timeouts, no time asserted.
//! - `big_ring_figures` (ignored; `scripts/bench.sh scale`): the same StatefulSet of
//!   `HAB_BENCH_REPLICAS` (1000) pods with the webhook and without it, through an OrderedReady and
//!   a Parallel rollout, a rolling update and a scale to 10 and back, timed side by side, with the
//!   API server's admission latency and watch events, the webhook's peak memory and the largest
//!   stored pod. It prints the figures of BENCHMARKS.md's "Big rings" and asserts none.
//! - `fanout::fanout_figures` (ignored; `scripts/bench.sh fanout`): the peer watch file's cost to
//!   the API server with a sidecar process per pod, bounded by `--pod-index` and not
//!   (`e2e_big_rings/fanout.rs`).
//!
//! kwok marks a scheduled pod Running and Ready at once (its pod-ready stage), so OrderedReady
//! rollouts go on as fast as the controllers do; no container runs, so no sidecar watches anything
//! unless the test starts it.

#[path = "../support/mod.rs"]
mod support;

mod fanout;
mod floor;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::{Duration, Instant};

use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{Namespace, Node, Pod};
use kube::Client;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use serde_json::{Value, json};
use support::harness::*;
use support::injected::*;
use support::objects;

/// The CI form: enough pods to show that nothing grows with the ring, few enough for a loaded
/// 2-core machine in a few minutes.
const CI_REPLICAS: i32 = 200;

/// Every stored pod of `big_ring_injected` is below this, in bytes of its JSON. An injected pod
/// of the CI StatefulSet, status and managed fields included, is about 7 KB: the bound leaves room
/// for field-manager and status churn, and is far below what carrying the peers would cost at
/// 200 pods (a name per peer in the args, the env and the annotation: 200 × 3 × 40 bytes).
const POD_BYTES_BOUND: usize = 12 * 1024;

/// The control plane's node takes 110 pods, as do the fake nodes added here (kwok-node.yaml).
const PODS_PER_NODE: i32 = 110;

#[tokio::test]
#[ignore = "needs a control plane: run scripts/test"]
async fn big_ring_injected() {
    if !enabled() {
        return;
    }
    let client = client().await;
    let webhook = start_webhook(&client).await;
    add_nodes(&client, "big-ring", CI_REPLICAS).await;
    let ns = namespace(&client, "e2e-big-ring").await;
    create(&client, &ns, &statefulset("big", CI_REPLICAS, "Parallel", true)).await;
    let statefulsets = Api::<StatefulSet>::namespaced(client.clone(), &ns);
    wait_rolled_out(&statefulsets, "big", Duration::from_secs(900)).await;

    let stored = stored_pods(&client, &ns, "big").await;
    assert_eq!(stored.len(), CI_REPLICAS as usize, "one stored pod per replica");
    for (ordinal, (bytes, raw)) in &stored {
        let pod: Pod = serde_json::from_value(raw.clone()).unwrap();
        assert_injected(&pod);
        assert_eq!(env(&pod, "HABITAT_BOOTSTRAP_ORDINAL"), Some(ordinal.to_string()));
        assert!(*bytes <= POD_BYTES_BOUND, "big-{ordinal} is {bytes} bytes, above {POD_BYTES_BOUND}");
    }
    // Written out without what the API server and kwok add (status, managed fields, versions, the
    // node) and with the pod's own name and ordinal replaced by a placeholder, the last pod is the
    // first one: nothing of its siblings is in it.
    let (first, last) = (1, CI_REPLICAS as u32 - 1);
    let (a, b) =
        (identity_free(&stored[&first].1, "big", first), identity_free(&stored[&last].1, "big", last));
    assert_eq!(a.len(), b.len(), "big-{last} carries more than big-{first}:\n{a}\n{b}");
    let largest = stored.values().map(|(bytes, _)| *bytes).max().unwrap();
    eprintln!("{CI_REPLICAS} pods injected; largest stored pod {largest} bytes");

    clean_up(&client, &ns, webhook).await;
}

/// Other test binaries share this control plane: free the nodes' room, unregister the webhook.
async fn clean_up(client: &Client, ns: &str, mut webhook: Webhook) {
    Api::<Namespace>::all(client.clone()).delete(ns, &DeleteParams::default()).await.unwrap();
    Api::<MutatingWebhookConfiguration>::all(client.clone())
        .delete("hab-bootstrap", &DeleteParams::default())
        .await
        .unwrap();
    webhook.stop();
}

/// A Habitat StatefulSet of `replicas` pods with `policy` (OrderedReady or Parallel), opted in or
/// not; its headless Service has its name.
fn statefulset(name: &str, replicas: i32, policy: &str, opted_in: bool) -> StatefulSet {
    let annotations: &[(&str, &str)] = if opted_in { &[("habitat/bootstrap", "true")] } else { &[] };
    let mut sts = objects::statefulset_json(name, name, replicas, annotations);
    sts["spec"]["podManagementPolicy"] = json!(policy);
    serde_json::from_value(sts).unwrap()
}

async fn create(client: &Client, ns: &str, sts: &StatefulSet) {
    let name = sts.metadata.name.as_deref().unwrap();
    let services = Api::<k8s_openapi::api::core::v1::Service>::namespaced(client.clone(), ns);
    services.create(&PostParams::default(), &objects::headless_service(name, name)).await.unwrap();
    Api::<StatefulSet>::namespaced(client.clone(), ns).create(&PostParams::default(), sts).await.unwrap();
}

/// Fake nodes `<prefix>-<i>` (kwok manages every node) so that `pods` more pods fit; the ones that
/// exist already are kept.
async fn add_nodes(client: &Client, prefix: &str, pods: i32) {
    let template = std::fs::read_to_string(repo_file("scripts/control-plane/kwok-node.yaml")).unwrap();
    let cidr = std::env::var("CP_POD_CIDR").unwrap_or_else(|_| "127.1.0.0/16".into());
    let nodes = Api::<Node>::all(client.clone());
    for i in 0..(pods + PODS_PER_NODE - 1) / PODS_PER_NODE {
        let yaml = template.replace("@NODE@", &format!("{prefix}-{i}")).replace("@POD_CIDR@", &cidr);
        let node: Node = serde_yaml_ng::from_str(&yaml).unwrap();
        match nodes.create(&PostParams::default(), &node).await {
            Ok(_) => {}
            Err(kube::Error::Api(e)) if e.code == 409 => {}
            Err(e) => panic!("creating node {prefix}-{i}: {e}"),
        }
    }
}

/// Rolled out as `kubectl rollout status` sees it: the controller has seen the last change, every
/// replica exists, is Ready and runs the current revision.
fn rolled_out(sts: &StatefulSet) -> bool {
    let (Some(spec), Some(status)) = (&sts.spec, &sts.status) else { return false };
    let want = spec.replicas.unwrap_or(1);
    status.observed_generation >= sts.metadata.generation
        && status.replicas == want
        && status.ready_replicas == Some(want)
        && status.updated_replicas == Some(want)
        && status.current_revision == status.update_revision
}

/// Waits until `name` is rolled out; the time it took.
async fn wait_rolled_out(api: &Api<StatefulSet>, name: &str, timeout: Duration) -> Duration {
    let started = Instant::now();
    eventually(timeout, &format!("StatefulSet {name} rolled out"), || async {
        api.get(name).await.ok().filter(rolled_out).map(|_| ())
    })
    .await;
    started.elapsed()
}

/// The StatefulSet's stored pods by ordinal: the bytes of each as the API server returns it
/// (compact JSON), and the object.
async fn stored_pods(client: &Client, ns: &str, sts: &str) -> BTreeMap<u32, (usize, Value)> {
    let path = format!("/api/v1/namespaces/{ns}/pods?labelSelector=app%3D{sts}");
    let list: Value = serde_json::from_str(&get_text(client, &path).await).unwrap();
    let items = list["items"].as_array().unwrap();
    items
        .iter()
        .filter(|p| p["metadata"]["deletionTimestamp"].is_null())
        .map(|p| {
            let ordinal =
                p["metadata"]["name"].as_str().unwrap().rsplit('-').next().unwrap().parse().unwrap();
            (ordinal, (serde_json::to_string(p).unwrap().len(), p.clone()))
        })
        .collect()
}

/// A stored pod without what the API server, the scheduler and kwok add, its name and ordinal
/// replaced by `#`: what the pod template and the injection made of it.
fn identity_free(pod: &Value, sts: &str, ordinal: u32) -> String {
    let mut pod = pod.clone();
    let metadata = pod["metadata"].as_object_mut().unwrap();
    for volatile in ["resourceVersion", "uid", "creationTimestamp", "managedFields"] {
        metadata.remove(volatile);
    }
    pod["spec"].as_object_mut().unwrap().remove("nodeName");
    pod.as_object_mut().unwrap().remove("status");
    serde_json::to_string(&pod)
        .unwrap()
        .replace(&format!("{sts}-{ordinal}"), &format!("{sts}-#"))
        .replace(&format!("\"{ordinal}\""), "\"#\"")
}

async fn get_text(client: &Client, path: &str) -> String {
    client.request_text(http::Request::get(path).body(Vec::new()).unwrap()).await.unwrap()
}

// ---------------------------------------------------------------------------------------------
// Figures (ignored): scripts/bench.sh scale
// ---------------------------------------------------------------------------------------------

const NS_FIGURES: &str = "big-ring-figures";

/// Generous: on 2 shared cores the controller-manager's API rate limits pace a 1000-pod step at
/// minutes.
const STEP_TIMEOUT: Duration = Duration::from_secs(3600);

/// A Prometheus text exposition, series (name and labels) to value.
#[derive(Default, Clone)]
struct Metrics(BTreeMap<String, f64>);

impl Metrics {
    fn parse(text: &str) -> Self {
        Self(
            text.lines()
                .filter(|l| !l.starts_with('#'))
                .filter_map(|l| {
                    let (series, value) = l.rsplit_once(' ')?;
                    Some((series.to_owned(), value.parse().ok()?))
                })
                .collect(),
        )
    }

    async fn of_apiserver(client: &Client) -> Self {
        Self::parse(&get_text(client, "/metrics").await)
    }

    fn of_webhook(webhook: &Webhook) -> Self {
        Self::parse(&webhook.metrics())
    }

    /// What was counted since `before`.
    fn since(&self, before: &Metrics) -> Metrics {
        Self(self.0.iter().map(|(k, v)| (k.clone(), v - before.0.get(k).unwrap_or(&0.0))).collect())
    }

    /// The sum of `metric`'s series whose labels contain every one of `labels`.
    fn sum(&self, metric: &str, labels: &[&str]) -> f64 {
        self.matching(metric, labels).map(|(_, v)| v).sum()
    }

    fn matching<'a>(&'a self, metric: &'a str, labels: &'a [&str]) -> impl Iterator<Item = (&'a str, f64)> {
        self.0.iter().filter_map(move |(series, v)| {
            let rest = series.strip_prefix(metric)?;
            (rest.starts_with('{') || rest.is_empty())
                .then_some(())
                .filter(|_| labels.iter().all(|l| rest.contains(l)))
                .map(|_| (series.as_str(), *v))
        })
    }

    /// The API server's requests by verb and resource (`apiserver_request_total`).
    fn requests_by_verb_and_resource(&self) -> BTreeMap<String, f64> {
        let label = |series: &str, name: &str| {
            series
                .split(&format!("{name}=\""))
                .nth(1)
                .and_then(|s| s.split('"').next())
                .unwrap_or("")
                .to_owned()
        };
        let mut by = BTreeMap::new();
        for (series, v) in self.matching("apiserver_request_total", &[]) {
            let (resource, subresource) = (label(series, "resource"), label(series, "subresource"));
            let resource =
                if subresource.is_empty() { resource } else { format!("{resource}/{subresource}") };
            *by.entry(format!("{} {resource}", label(series, "verb"))).or_default() += v;
        }
        by
    }

    /// A histogram's count, mean and p50/p99 estimated from its buckets (linear within a bucket,
    /// as PromQL's histogram_quantile), in milliseconds.
    fn histogram(&self, metric: &str, labels: &[&str]) -> Latency {
        let mut cumulative: BTreeMap<u64, f64> = BTreeMap::new(); // le in ns (ordered), count
        let mut inf = 0.0;
        for (series, v) in self.matching(&format!("{metric}_bucket"), labels).collect::<Vec<_>>() {
            let le = series.split("le=\"").nth(1).and_then(|s| s.split('"').next()).unwrap_or("+Inf");
            match le.parse::<f64>() {
                Ok(le) if le.is_finite() => *cumulative.entry((le * 1e9) as u64).or_default() += v,
                _ => inf += v,
            }
        }
        let count = self.sum(&format!("{metric}_count"), labels);
        let sum = self.sum(&format!("{metric}_sum"), labels);
        let quantile = |q: f64| {
            let rank = q * inf;
            let (mut lower, mut below) = (0.0, 0.0);
            for (&le, &n) in &cumulative {
                let le = le as f64 / 1e6;
                if n >= rank && n > below {
                    return lower + (le - lower) * (rank - below) / (n - below);
                }
                (lower, below) = (le, n);
            }
            lower // in the +Inf bucket: at least the last bound
        };
        // Interpolation cannot place a quantile below half the first bound (the API server's is
        // 5 ms), so the share of calls within it is told as well.
        let first_bucket = cumulative
            .first_key_value()
            .map(|(&le, &n)| (le as f64 / 1e6, if inf > 0.0 { n / inf } else { 0.0 }));
        Latency {
            count,
            mean_ms: if count > 0.0 { sum / count * 1e3 } else { f64::NAN },
            p50_ms: quantile(0.5),
            p99_ms: quantile(0.99),
            first_bucket,
        }
    }
}

struct Latency {
    count: f64,
    mean_ms: f64,
    p50_ms: f64,
    p99_ms: f64,
    /// The lowest bucket's bound (ms) and the share of calls in it.
    first_bucket: Option<(f64, f64)>,
}

impl std::fmt::Display for Latency {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.count == 0.0 {
            return write!(f, "no calls");
        }
        write!(
            f,
            "{:.0} calls, mean {:.2} ms, p50 {:.2} ms, p99 {:.2} ms",
            self.count, self.mean_ms, self.p50_ms, self.p99_ms
        )?;
        match self.first_bucket {
            Some((le, share)) => write!(f, ", {:.1}% ≤ {le} ms", share * 100.0),
            None => Ok(()),
        }
    }
}

/// One field of `/proc/<pid>/status` in KiB (VmHWM: the peak resident set; VmRSS: now).
fn proc_status_kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with(&format!("{field}:"))).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// The CPU time of all threads of process `pid` and their time runnable but waiting for a core,
/// in seconds, from `/proc/<pid>/task/*/schedstat` (threads that have exited are not counted; the
/// webhook's tokio workers live as long as it does).
fn sched_seconds(pid: u32) -> Sched {
    let mut total = Sched::default();
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).unwrap().flatten() {
        let Ok(stat) = std::fs::read_to_string(task.path().join("schedstat")) else { continue };
        let ns: Vec<f64> = stat.split_whitespace().map(|n| n.parse().unwrap()).collect();
        total.cpu += ns[0] / 1e9;
        total.waiting += ns[1] / 1e9;
    }
    total
}

/// A process's CPU time and its threads' time waiting for a core, in seconds.
#[derive(Debug, Default, Clone, Copy)]
struct Sched {
    cpu: f64,
    waiting: f64,
}

impl Sched {
    fn since(self, before: Sched) -> Sched {
        Sched { cpu: self.cpu - before.cpu, waiting: self.waiting - before.waiting }
    }
}

/// One timed step of one StatefulSet, and what the API server and the webhook counted meanwhile.
struct Step {
    seconds: f64,
    apiserver: Metrics,
    webhook: Metrics,
    /// The webhook process's CPU and waiting for a core meanwhile (it watches the other
    /// StatefulSet too, so "without" has some).
    webhook_sched: Sched,
}

/// The figures, a StatefulSet with the webhook and the same without.
struct Figures {
    client: Client,
    statefulsets: Api<StatefulSet>,
    replicas: i32,
    steps: Vec<(String, Step, Step)>,
}

impl Figures {
    /// Runs `change` on each StatefulSet in turn (the one with the webhook first when
    /// `with_first`: the order alternates from step to step, so that drift on a shared machine
    /// hits both alike) and times each until it is rolled out.
    async fn step<F, Fut>(&mut self, name: &str, webhook: &Webhook, with_first: bool, change: F)
    where
        F: Fn(Api<StatefulSet>, &'static str) -> Fut,
        Fut: std::future::Future<Output = ()>,
    {
        let order = if with_first { ["with", "without"] } else { ["without", "with"] };
        let mut timed = BTreeMap::new();
        for sts in order {
            let pid = webhook.pid().unwrap();
            let (api_before, ours_before, sched_before) =
                (Metrics::of_apiserver(&self.client).await, Metrics::of_webhook(webhook), sched_seconds(pid));
            let started = Instant::now();
            change(self.statefulsets.clone(), sts).await;
            wait_rolled_out(&self.statefulsets, sts, STEP_TIMEOUT).await;
            let seconds = started.elapsed().as_secs_f64();
            let apiserver = Metrics::of_apiserver(&self.client).await.since(&api_before);
            let ours = Metrics::of_webhook(webhook).since(&ours_before);
            let webhook_sched = sched_seconds(pid).since(sched_before);
            eprintln!("[big rings] {name}, {sts} the webhook: {seconds:.1} s");
            timed.insert(sts, Step { seconds, apiserver, webhook: ours, webhook_sched });
        }
        let (with, without) = (timed.remove("with").unwrap(), timed.remove("without").unwrap());
        self.steps.push((name.to_owned(), with, without));
    }

    /// Deletes both StatefulSets and their Services and waits for their pods to be gone, so that
    /// the next step starts from an empty namespace.
    async fn delete_both(&self) {
        for sts in ["with", "without"] {
            delete(&self.client, sts).await;
        }
    }
}

/// Deletes a StatefulSet of the figures and its Service, and waits until its pods are gone.
async fn delete(client: &Client, sts: &str) {
    let statefulsets = Api::<StatefulSet>::namespaced(client.clone(), NS_FIGURES);
    statefulsets.delete(sts, &DeleteParams::foreground()).await.unwrap();
    let services = Api::<k8s_openapi::api::core::v1::Service>::namespaced(client.clone(), NS_FIGURES);
    services.delete(sts, &DeleteParams::default()).await.unwrap();
    let pods = Api::<Pod>::namespaced(client.clone(), NS_FIGURES);
    let selector = ListParams::default().labels(&format!("app={sts}"));
    eventually(STEP_TIMEOUT, &format!("the pods of {sts} deleted"), || async {
        let (pods, sts) = (pods.list_metadata(&selector).await.ok()?, statefulsets.get_opt(sts).await.ok()?);
        (pods.items.is_empty() && sts.is_none()).then_some(())
    })
    .await;
}

/// HAB_BENCH_REPLICAS, or `default`.
/// The middle value (the mean of the two middle ones for an even count).
fn median(xs: &[f64]) -> f64 {
    let mut xs = xs.to_vec();
    xs.sort_by(f64::total_cmp);
    (xs[(xs.len() - 1) / 2] + xs[xs.len() / 2]) / 2.0
}

fn bench_replicas(default: i32) -> i32 {
    std::env::var("HAB_BENCH_REPLICAS").map_or(default, |v| v.parse().expect("HAB_BENCH_REPLICAS: a number"))
}

/// The webhook of the figures, started and registered, logging as in a cluster (info, not the
/// harness's debug).
async fn start_figures_webhook(client: &Client) -> Webhook {
    let mut webhook = start_webhook(client).await;
    webhook.env = vec![("RUST_LOG".into(), "info".into())];
    webhook.stop();
    webhook.start();
    webhook
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "takes many minutes; run by scripts/bench.sh scale"]
async fn big_ring_figures() {
    if !enabled() {
        return;
    }
    let replicas = bench_replicas(1000);
    let client = client().await;
    let mut webhook = start_figures_webhook(&client).await;
    // Both StatefulSets at full size, and one more pod for the rolling update's surge.
    add_nodes(&client, "big-ring-figures", 2 * replicas + 10).await;
    let ns = namespace(&client, NS_FIGURES).await;
    let statefulsets = Api::<StatefulSet>::namespaced(client.clone(), &ns);
    let mut figures = Figures { client: client.clone(), statefulsets, replicas, steps: Vec::new() };
    let run_started = Instant::now();
    let api_at_start = Metrics::of_apiserver(&client).await;

    let policy = |p: &'static str| {
        let client = client.clone();
        move |_api: Api<StatefulSet>, sts: &'static str| {
            let client = client.clone();
            async move { create(&client, NS_FIGURES, &statefulset(sts, replicas, p, sts == "with")).await }
        }
    };
    figures.step("rollout, OrderedReady", &webhook, true, policy("OrderedReady")).await;
    let mut largest = BTreeMap::new();
    for sts in ["with", "without"] {
        let stored = stored_pods(&client, &ns, sts).await;
        let bytes: Vec<usize> = stored.values().map(|(b, _)| *b).collect();
        largest.insert(sts, (*bytes.iter().max().unwrap(), bytes.iter().sum::<usize>()));
    }
    // HAB_BENCH_UPDATE_ROUNDS (2) rolling updates (a template change each), the order
    // alternating as for the scale rounds below: the control plane slows through a long run, so
    // the side that always went second would always pay for it.
    let update_rounds: u32 = std::env::var("HAB_BENCH_UPDATE_ROUNDS").map_or(2, |v| v.parse().unwrap());
    for round in 1..=update_rounds {
        let revision = (round + 1).to_string();
        let updater = move |api: Api<StatefulSet>, sts: &'static str| {
            let patch =
                json!({"spec": {"template": {"metadata": {"annotations": {"bench/revision": revision}}}}});
            async move {
                api.patch(sts, &PatchParams::default(), &Patch::Merge(patch)).await.unwrap();
            }
        };
        let name = format!("rolling update (template change) ({round})");
        figures.step(&name, &webhook, round % 2 == 0, updater).await;
    }
    let down = replicas.min(10);
    let scaler = |to: i32| {
        move |api: Api<StatefulSet>, sts: &'static str| async move {
            let patch = Patch::Merge(json!({"spec": {"replicas": to}}));
            api.patch_scale(sts, &PatchParams::default(), &patch).await.unwrap();
        }
    };
    // HAB_BENCH_SCALE_ROUNDS (2) times, the order alternating: the StatefulSet that goes second in
    // a step has been seen to take longer, so each order is measured as often.
    let scale_rounds: usize = std::env::var("HAB_BENCH_SCALE_ROUNDS").map_or(2, |v| v.parse().unwrap());
    for round in 1..=scale_rounds {
        let (with_first, round) = (round % 2 == 1, format!(" ({round})"));
        figures.step(&format!("scale {replicas} → {down}{round}"), &webhook, with_first, scaler(down)).await;
        figures
            .step(&format!("scale {down} → {replicas}{round}"), &webhook, !with_first, scaler(replicas))
            .await;
    }
    figures.delete_both().await;
    figures.step("rollout, Parallel", &webhook, true, policy("Parallel")).await;
    let hwm = proc_status_kib(webhook.pid().unwrap(), "VmHWM");
    let api_total = Metrics::of_apiserver(&client).await.since(&api_at_start);
    let run_seconds = run_started.elapsed().as_secs_f64();
    figures.delete_both().await;

    // The webhook's peak memory under each allocator setting (and of another build, if given): a
    // fresh process each, through the same Parallel rollout of the opted-in StatefulSet,
    // alternating, HAB_BENCH_MEMORY_ROUNDS (2) times each.
    let this_build = webhook.binary.clone();
    let mut settings = vec![
        ("this build".to_owned(), this_build.clone(), vec![]),
        ("this build, MALLOC_ARENA_MAX=2".to_owned(), this_build, vec![("MALLOC_ARENA_MAX", "2")]),
    ];
    if let Some(other) = std::env::var_os("HAB_BENCH_COMPARE_BIN") {
        settings.push((format!("{}", other.to_string_lossy()), other.into(), vec![]));
    }
    let mut memory: BTreeMap<String, Vec<[u64; 4]>> = BTreeMap::new();
    let rounds: u32 = std::env::var("HAB_BENCH_MEMORY_ROUNDS").map_or(2, |v| v.parse().unwrap());
    for round in 0..rounds {
        for (label, binary, env) in &settings {
            webhook.stop();
            webhook.binary = binary.clone();
            webhook.env = std::iter::once(&("RUST_LOG", "info"))
                .chain(env)
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
            webhook.start();
            let pid = webhook.pid().unwrap();
            let idle = proc_status_kib(pid, "VmRSS");
            create(&client, &ns, &statefulset("with", replicas, "Parallel", true)).await;
            let took = wait_rolled_out(&figures.statefulsets, "with", STEP_TIMEOUT).await;
            let (peak, anon, file) = (
                proc_status_kib(pid, "VmHWM"),
                proc_status_kib(pid, "RssAnon"),
                proc_status_kib(pid, "RssFile"),
            );
            eprintln!(
                "[big rings] memory round {round}, {label}: idle {idle} KiB, peak {peak} KiB, after: anonymous {anon} KiB, file {file} KiB; rollout {took:?}"
            );
            memory.entry(label.clone()).or_default().push([idle, peak, anon, file]);
            delete(&client, "with").await;
        }
    }

    let report = report(&figures, &largest, hwm, &api_total, run_seconds, &memory);
    eprintln!("{report}");
    if let Ok(dir) = std::env::var("HAB_BENCH_OUT") {
        std::fs::write(std::path::Path::new(&dir).join("big-rings.md"), &report).unwrap();
    }
    clean_up(&client, &ns, webhook).await;
}

const ADMISSION: &str = "apiserver_admission_webhook_admission_duration_seconds";
const OUR_POD_WEBHOOK: &str = "name=\"pods.hab-bootstrap.habitat.sh\"";
const WATCH_EVENTS: &str = "apiserver_watch_events_total";
const WATCH_BYTES: &str = "apiserver_watch_events_sizes_sum";
const POD_KIND: &str = "resource=\"pods\"";

fn report(
    figures: &Figures,
    largest: &BTreeMap<&str, (usize, usize)>,
    hwm_kib: u64,
    api_total: &Metrics,
    run_seconds: f64,
    memory: &BTreeMap<String, Vec<[u64; 4]>>,
) -> String {
    let mib = |kib: u64| kib as f64 / 1024.0;
    let mut r = String::new();
    let n = figures.replicas;
    writeln!(r, "## Big rings: {n} replicas, with the webhook and without (one run, {run_seconds:.0} s)\n")
        .unwrap();
    writeln!(
        r,
        "| step | with (s) | without (s) | ratio | pod watch events with / without | API server: our pod webhook (with) | the webhook's own (with) |"
    )
    .unwrap();
    writeln!(r, "|---|---|---|---|---|---|---|").unwrap();
    for (name, with, without) in &figures.steps {
        let events = |s: &Step| s.apiserver.sum(WATCH_EVENTS, &[POD_KIND]);
        writeln!(
            r,
            "| {name} | {:.1} | {:.1} | **{:.2}** | {:.0} / {:.0} | {} | {} |",
            with.seconds,
            without.seconds,
            with.seconds / without.seconds,
            events(with),
            events(without),
            with.apiserver.histogram(ADMISSION, &[OUR_POD_WEBHOOK]),
            with.webhook.histogram("hab_bootstrap_admission_duration_seconds", &["webhook=\"pods\""]),
        )
        .unwrap();
    }
    // Steps run more than once ("… (k)"): each round's ratio and their median.
    let mut rounds: BTreeMap<&str, Vec<f64>> = BTreeMap::new();
    for (name, with, without) in &figures.steps {
        if let Some((step, _)) = name.rsplit_once(" (") {
            rounds.entry(step).or_default().push(with.seconds / without.seconds);
        }
    }
    for (step, mut ratios) in rounds {
        ratios.sort_by(f64::total_cmp);
        let listed: Vec<String> = ratios.iter().map(|r| format!("{r:.2}")).collect();
        let median = median(&ratios);
        writeln!(
            r,
            "\n{step}, {} rounds: ratios {}, median **{median:.2}**",
            ratios.len(),
            listed.join(", ")
        )
        .unwrap();
    }
    let total = api_total.histogram(ADMISSION, &[OUR_POD_WEBHOOK]);
    writeln!(r, "\nAPI server, our pod webhook over the whole run: {total}").unwrap();
    writeln!(
        r,
        "\nWhat each step cost the API server and the webhook process, with / without: the API \
         server's CPU, the webhook's CPU and its threads' time waiting for a core, the API server's \
         requests, and the requests it had most more of with the webhook (verb resource: with − without):\n"
    )
    .unwrap();
    writeln!(
        r,
        "| step | API server CPU s | webhook CPU s | webhook waiting for a core s | requests | most more with the webhook |\n|---|---|---|---|---|---|"
    )
    .unwrap();
    for (name, with, without) in &figures.steps {
        let cpu = |s: &Step| s.apiserver.sum("process_cpu_seconds_total", &[]);
        let (w, wo) = (
            with.apiserver.requests_by_verb_and_resource(),
            without.apiserver.requests_by_verb_and_resource(),
        );
        let mut more: Vec<(String, f64)> = w
            .iter()
            .map(|(k, v)| (k.clone(), v - wo.get(k).unwrap_or(&0.0)))
            .filter(|(_, d)| *d >= 1.0)
            .collect();
        more.sort_by(|a, b| b.1.total_cmp(&a.1));
        let more: Vec<String> = more.iter().take(4).map(|(k, d)| format!("{k} +{d:.0}")).collect();
        writeln!(
            r,
            "| {name} | {:.1} / {:.1} | {:.2} / {:.2} | {:.2} / {:.2} | {:.0} / {:.0} | {} |",
            cpu(with),
            cpu(without),
            with.webhook_sched.cpu,
            without.webhook_sched.cpu,
            with.webhook_sched.waiting,
            without.webhook_sched.waiting,
            w.values().sum::<f64>(),
            wo.values().sum::<f64>(),
            more.join(", ")
        )
        .unwrap();
    }
    writeln!(
        r,
        "API server watch events over the whole run: {:.0} of pods ({:.1} MiB), {:.0} of all kinds ({:.1} MiB)",
        api_total.sum(WATCH_EVENTS, &[POD_KIND]),
        api_total.sum(WATCH_BYTES, &[POD_KIND]) / 1048576.0,
        api_total.sum(WATCH_EVENTS, &[]),
        api_total.sum(WATCH_BYTES, &[]) / 1048576.0,
    )
    .unwrap();
    for (sts, (max, sum)) in largest {
        writeln!(
            r,
            "stored pods {sts} the webhook: largest {max} bytes, all {n} together {:.2} MiB",
            *sum as f64 / 1048576.0
        )
        .unwrap();
    }
    writeln!(r, "webhook peak resident memory (VmHWM) through the steps above: {:.1} MiB", mib(hwm_kib))
        .unwrap();
    writeln!(r, "\nThe webhook's memory, a fresh process per Parallel rollout of {n} opted-in pods:\n")
        .unwrap();
    writeln!(r, "| build, allocator | idle VmRSS | peak VmHWM | after: anonymous | after: file-backed |")
        .unwrap();
    writeln!(r, "|---|---|---|---|---|").unwrap();
    for (label, runs) in memory {
        let column =
            |i: usize| runs.iter().map(|m| format!("{:.1}", mib(m[i]))).collect::<Vec<_>>().join(", ");
        writeln!(r, "| {label} | {} | {} | {} | {} |", column(0), column(1), column(2), column(3)).unwrap();
    }
    writeln!(r, "\n(MiB, each run; anonymous and file-backed: RssAnon and RssFile after the rollout)")
        .unwrap();
    r
}

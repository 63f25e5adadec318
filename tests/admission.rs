//! The admission flow, in process: a review in, the answer out, the patch applied to the pod the
//! way the API server applies it. The cluster is a few objects in memory (tests/support).

mod support;

use hab_bootstrap::webhook::admission::EventType;
use serde_json::{Value, json};
use support::*;

const NS: &str = "default";
const SVC: &str = "redis-headless";
/// What our StatefulSet webhook stamps on an opted-in StatefulSet when it is created.
const RING_KEY: (&str, &str) = ("habitat/ring-key-secret", "redis-habitat-ring");
const PEERS_FILE: &str = "/habitat-bootstrap/peers";

fn redis_pod() -> Value {
    redis_review()["request"]["object"].clone()
}

/// A copy of the captured redis-2 pod renamed to another ordinal.
fn redis_pod_ordinal(ordinal: u32) -> Value {
    let mut pod = redis_pod();
    let name = format!("redis-{ordinal}");
    pod["metadata"]["name"] = json!(name);
    pod["metadata"]["labels"]["apps.kubernetes.io/pod-index"] = json!(ordinal.to_string());
    pod["metadata"]["labels"]["statefulset.kubernetes.io/pod-name"] = json!(name);
    pod["spec"]["hostname"] = json!(name);
    pod
}

/// StatefulSet `redis` (3 replicas, annotated as given) and its headless Service. No pods: the
/// webhook no longer lists them.
fn cluster_with(publish_not_ready: bool, annotations: &[(&str, &str)]) -> MemoryCluster {
    MemoryCluster {
        statefulsets: vec![statefulset("redis", NS, SVC, 3, annotations)],
        services: vec![headless_service(SVC, NS, publish_not_ready)],
        ..Default::default()
    }
}

/// The cluster after our StatefulSet webhook: `redis` carries its ring key.
fn keyed_cluster() -> MemoryCluster {
    cluster_with(true, &[RING_KEY])
}

struct Admitted {
    answer: Answer,
    out: Value,
    events: support::RecordingEvents,
    /// Calls that reached the "API server".
    reads: u32,
    /// Ring-key Secrets "created".
    ring_keys: Vec<(String, String, String)>,
    metrics: String,
}

async fn admit_all(cluster: MemoryCluster, pod: &Value, dry_run: bool) -> Admitted {
    let a = admission(cluster);
    let body = serde_json::to_vec(&review_of(pod, "CREATE", dry_run)).unwrap();
    let answer = decode(&a.review_pod(&body).await.expect("answerable"));
    let out = patched(pod, &answer);
    let reads = *a.cluster.live_reads.lock().unwrap();
    let ring_keys = a.cluster.ring_keys.lock().unwrap().clone();
    let metrics = a.metrics.encode();
    Admitted { answer, out, events: a.events, reads, ring_keys, metrics }
}

async fn admit(cluster: MemoryCluster, pod: &Value) -> (Answer, Value, support::RecordingEvents, u32) {
    let Admitted { answer, out, events, reads, .. } = admit_all(cluster, pod, false).await;
    (answer, out, events, reads)
}

fn supervisor(pod: &Value) -> &Value {
    &pod["spec"]["containers"][0]
}

fn sidecar(pod: &Value) -> &Value {
    let init = pod["spec"]["initContainers"].as_array().expect("init containers");
    let sidecars: Vec<&Value> = init.iter().filter(|c| c["name"] == "habitat-role").collect();
    assert_eq!(sidecars.len(), 1, "one sidecar: {init:?}");
    sidecars[0]
}

fn args(container: &Value) -> Vec<String> {
    container["args"].as_array().into_iter().flatten().map(|a| a.as_str().unwrap().to_owned()).collect()
}

fn env_names(container: &Value) -> Vec<String> {
    container["env"].as_array().unwrap().iter().map(|e| e["name"].as_str().unwrap().to_owned()).collect()
}

fn env_value<'a>(container: &'a Value, name: &str) -> Option<&'a Value> {
    container["env"].as_array()?.iter().find(|e| e["name"] == name)
}

fn mounts(container: &Value) -> Vec<Value> {
    container["volumeMounts"].as_array().cloned().unwrap_or_default()
}

fn volume<'a>(pod: &'a Value, name: &str) -> Option<&'a Value> {
    pod["spec"]["volumes"].as_array()?.iter().find(|v| v["name"] == name)
}

fn status(pod: &Value) -> Value {
    serde_json::from_str(pod["metadata"]["annotations"]["habitat/bootstrap-status"].as_str().unwrap())
        .unwrap()
}

fn ring_key_env(secret: &str) -> Value {
    json!({"name": "HAB_RING_KEY", "valueFrom": {"secretKeyRef": {"name": secret, "key": "ring-key", "optional": false}}})
}

/// What every injected pod gets for its peers: `--peer-watch-file` at the end of the supervisor's
/// args (never a `--peer`), the emptyDir shared with the sidecar, and the sidecar keeping the file
/// from the StatefulSet's pods.
#[track_caller]
fn assert_peer_watch_file(pod: &Value) {
    let sup = args(supervisor(pod));
    assert_eq!(&sup[sup.len() - 2..], ["--peer-watch-file", PEERS_FILE], "{sup:?}");
    assert!(!sup.contains(&"--peer".to_owned()), "no --peer ever: {sup:?}");
    assert!(env_value(supervisor(pod), "HABITAT_BOOTSTRAP_PEERS").is_none());
    assert_eq!(
        volume(pod, "habitat-bootstrap-peers"),
        Some(&json!({"name": "habitat-bootstrap-peers", "emptyDir": {}}))
    );
    let peers_mount = json!({"name": "habitat-bootstrap-peers", "mountPath": "/habitat-bootstrap"});
    assert!(mounts(supervisor(pod)).contains(&peers_mount), "{:?}", mounts(supervisor(pod)));
    assert!(mounts(sidecar(pod)).contains(&peers_mount), "{:?}", mounts(sidecar(pod)));
    let side = args(sidecar(pod)).join(" ");
    assert!(side.contains(&format!("--peer-watch-file {PEERS_FILE}")), "{side}");
    assert!(side.contains("--statefulset redis"), "{side}");
    assert!(side.contains("--pod-selector app=redis"), "{side}");
    assert_eq!(status(pod)["peerWatchFile"], PEERS_FILE);
}

#[tokio::test]
async fn captured_review_matches_the_golden_pod() {
    let review = redis_review();
    let a = admission(keyed_cluster());
    let answer = decode(&a.review_pod(&serde_json::to_vec(&review).unwrap()).await.unwrap());
    assert!(answer.allowed);
    assert_eq!(answer.uid, review["request"]["uid"]);
    let out = patched(&review["request"]["object"], &answer);
    let golden_path =
        concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/admission/pod-create-redis-2.injected.json");
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(golden_path, serde_json::to_string_pretty(&out).unwrap() + "\n").unwrap();
    }
    let golden: Value = serde_json::from_str(&std::fs::read_to_string(golden_path).unwrap()).unwrap();
    assert_eq!(out, golden, "rerun with UPDATE_GOLDEN=1 and review the diff");
}

#[tokio::test]
async fn every_pod_gets_the_peer_watch_file_and_admission_lists_no_pods() {
    let Admitted { answer, out, events, reads, ring_keys, .. } =
        admit_all(keyed_cluster(), &redis_pod(), false).await;
    assert!(answer.allowed);
    assert_peer_watch_file(&out);
    // The only call that reached the API server: the ring key's Secret (no pod LIST).
    assert_eq!(reads, 1);
    assert_eq!(ring_keys, [(NS.to_owned(), "redis-habitat-ring".to_owned(), "redis".to_owned())]);
    let events = events.lock().unwrap();
    assert_eq!(events.len(), 1);
    assert_eq!(
        (events[0].reason, events[0].event_type, events[0].pod.as_str()),
        ("Injected", EventType::Normal, "redis-2")
    );
    assert!(
        events[0].note.starts_with("redis-2: peers from the watch file, ring key;"),
        "{}",
        events[0].note
    );
    assert!(events[0].note.contains("sidecar habitat-role"), "{}", events[0].note);
}

/// Pod 0 of a first rollout, pod 0 recreated while others live, pod 4 of a Parallel StatefulSet:
/// with no pods read, each gets the same injection but for its identity.
#[tokio::test]
async fn every_ordinal_is_injected_alike_whoever_is_alive() {
    let (_, two, _, _) = admit(keyed_cluster(), &redis_pod()).await;
    let mut parallel = keyed_cluster();
    parallel.statefulsets[0].spec.as_mut().unwrap().pod_management_policy = Some("Parallel".into());
    for (cluster, ordinal) in [(keyed_cluster(), 0), (parallel, 4)] {
        let (answer, out, _, _) = admit(cluster, &redis_pod_ordinal(ordinal)).await;
        assert!(answer.allowed);
        assert_peer_watch_file(&out);
        assert_eq!(
            env_value(supervisor(&out), "HABITAT_BOOTSTRAP_ORDINAL").unwrap()["value"],
            ordinal.to_string()
        );
        assert_eq!(args(supervisor(&out)), args(supervisor(&two)));
        // The sidecar differs only in which ordinals it watches.
        let without_index = |pod: &Value| {
            let mut side = sidecar(pod).clone();
            let args = side["args"].as_array_mut().unwrap();
            let at = args.iter().position(|a| a == "--pod-index").unwrap();
            assert_eq!(
                args.drain(at..at + 2).nth(1).unwrap(),
                pod["metadata"]["labels"]["apps.kubernetes.io/pod-index"]
            );
            side
        };
        assert_eq!(without_index(&out), without_index(&two));
        assert_eq!(out["spec"]["volumes"], two["spec"]["volumes"]);
        // No warning that a pod starts with no live peer: the watch file fills as members appear.
        assert!(
            !answer.warnings.iter().any(|w| w.contains("Parallel") || w.contains("alive")),
            "{:?}",
            answer.warnings
        );
    }
}

#[tokio::test]
async fn the_supervisor_state_is_shared_with_the_sidecar() {
    // The captured pod keeps /data on its claim, nothing at /hab/sup: we add an emptyDir there.
    let (answer, out, _, _) = admit(keyed_cluster(), &redis_pod_ordinal(0)).await;
    assert_eq!(
        volume(&out, "habitat-supervisor-state"),
        Some(&json!({"name": "habitat-supervisor-state", "emptyDir": {}}))
    );
    assert!(
        mounts(supervisor(&out))
            .contains(&json!({"name": "habitat-supervisor-state", "mountPath": "/hab/sup"}))
    );
    assert!(
        mounts(sidecar(&out))
            .contains(&json!({"name": "habitat-supervisor-state", "mountPath": "/habitat-supervisor"}))
    );
    let side = args(sidecar(&out)).join(" ");
    assert!(side.contains("--sup-state-dir /habitat-supervisor/default"), "{side}");
    assert!(side.contains("--ctl-gateway 127.0.0.1:9632"), "{side}");
    // The sidecar runs as the Supervisor's user (the pod's runAsUser 999) to share its files.
    let security = &sidecar(&out)["securityContext"];
    assert_eq!((&security["runAsUser"], &security["runAsGroup"]), (&json!(999), &json!(999)));
    assert_eq!(security["runAsNonRoot"], true);
    assert_eq!(security["allowPrivilegeEscalation"], false);
    assert_eq!(security["capabilities"]["drop"], json!(["ALL"]));
    assert_eq!(status(&out)["volumes"], json!(["habitat-bootstrap-peers", "habitat-supervisor-state"]));
    assert!(answer.warnings.iter().any(|w| w.contains("not on a PersistentVolume")), "{:?}", answer.warnings);

    // /hab/sup on the user's claim, through a subPath, and the Supervisor's container as uid 1000
    // (over the pod's 999): the sidecar mounts that claim with that subPath and runs as that user;
    // nothing is added.
    let mut pod = redis_pod();
    pod["spec"]["containers"][0]["volumeMounts"]
        .as_array_mut()
        .unwrap()
        .push(json!({"name": "data", "mountPath": "/hab/sup", "subPath": "sup"}));
    pod["spec"]["containers"][0]["securityContext"]["runAsUser"] = json!(1000);
    pod["spec"]["containers"][0]["securityContext"]["runAsGroup"] = json!(2000);
    let (answer, out, _, _) = admit(keyed_cluster(), &pod).await;
    assert!(volume(&out, "habitat-supervisor-state").is_none());
    assert_eq!(status(&out)["volumes"], json!(["habitat-bootstrap-peers"]));
    assert!(
        mounts(sidecar(&out))
            .contains(&json!({"name": "data", "mountPath": "/habitat-supervisor", "subPath": "sup"}))
    );
    assert!(args(sidecar(&out)).join(" ").contains("--sup-state-dir /habitat-supervisor/default"));
    let security = &sidecar(&out)["securityContext"];
    assert_eq!(
        (&security["runAsUser"], &security["runAsGroup"], &security["runAsNonRoot"]),
        (&json!(1000), &json!(2000), &json!(true))
    );
    assert!(!answer.warnings.iter().any(|w| w.contains("/hab/sup")), "{:?}", answer.warnings);

    // A claim at /hab: the state directory is below the sidecar's mount. And a Supervisor with no
    // user set runs as root (Habitat's default): so does the sidecar, still with no capability.
    let mut pod = redis_pod();
    pod["spec"]["containers"][0]["volumeMounts"][0]["mountPath"] = json!("/hab");
    pod["spec"].as_object_mut().unwrap().remove("securityContext");
    pod["spec"]["containers"][0].as_object_mut().unwrap().remove("securityContext");
    let (_, out, _, _) = admit(keyed_cluster(), &pod).await;
    assert!(mounts(sidecar(&out)).contains(&json!({"name": "data", "mountPath": "/habitat-supervisor"})));
    assert!(args(sidecar(&out)).join(" ").contains("--sup-state-dir /habitat-supervisor/sup/default"));
    let security = &sidecar(&out)["securityContext"];
    assert_eq!((&security["runAsUser"], &security["runAsNonRoot"]), (&json!(0), &json!(false)));
    assert_eq!(security["allowPrivilegeEscalation"], false);
    assert_eq!(security["capabilities"]["drop"], json!(["ALL"]));
    // runAsNonRoot with no uid: the sidecar image's own non-root user.
    pod["spec"]["securityContext"] = json!({"runAsNonRoot": true});
    let (_, out, _, _) = admit(keyed_cluster(), &pod).await;
    let security = &sidecar(&out)["securityContext"];
    assert_eq!((&security["runAsUser"], &security["runAsNonRoot"]), (&Value::Null, &json!(true)));
}

#[tokio::test]
async fn the_ring_key_comes_from_the_statefulsets_secret() {
    let (answer, out, _, _) = admit(keyed_cluster(), &redis_pod()).await;
    assert_eq!(env_value(supervisor(&out), "HAB_RING_KEY"), Some(&ring_key_env("redis-habitat-ring")));
    assert_eq!(status(&out)["ringKeySecret"], "redis-habitat-ring");
    assert!(!answer.warnings.iter().any(|w| w.contains("ring key")), "{:?}", answer.warnings);

    // A Secret of the user's own is named as it is, and ensured like ours.
    let Admitted { out, ring_keys, .. } =
        admit_all(cluster_with(true, &[("habitat/ring-key-secret", "my-ring")]), &redis_pod(), false).await;
    assert_eq!(env_value(supervisor(&out), "HAB_RING_KEY"), Some(&ring_key_env("my-ring")));
    assert_eq!(ring_keys, [(NS.to_owned(), "my-ring".to_owned(), "redis".to_owned())]);

    // No annotation (a StatefulSet created before the webhook named keys), or `none`: no key, no
    // Secret, a warning.
    for annotations in [&[][..], &[("habitat/ring-key-secret", "none")][..]] {
        let Admitted { answer, out, reads, ring_keys, .. } =
            admit_all(cluster_with(true, annotations), &redis_pod(), false).await;
        assert!(answer.allowed);
        assert!(env_value(supervisor(&out), "HAB_RING_KEY").is_none());
        assert!(status(&out).get("ringKeySecret").is_none());
        assert_eq!((reads, ring_keys.len()), (0, 0), "{annotations:?}");
        assert!(answer.warnings.iter().any(|w| w.starts_with("no ring key")), "{:?}", answer.warnings);
    }

    // The user's own key, as a flag or a variable, wins: no key of ours, no Secret.
    let mut flag = redis_pod();
    flag["spec"]["containers"][0]["args"].as_array_mut().unwrap().extend([json!("--ring"), json!("prod")]);
    let mut variable = redis_pod();
    variable["spec"]["containers"][0]["env"]
        .as_array_mut()
        .unwrap()
        .push(json!({"name": "HAB_RING", "value": "prod"}));
    for pod in [flag, variable] {
        let Admitted { answer, out, ring_keys, .. } = admit_all(keyed_cluster(), &pod, false).await;
        assert!(answer.allowed);
        assert!(env_value(supervisor(&out), "HAB_RING_KEY").is_none());
        assert!(ring_keys.is_empty());
        assert!(!answer.warnings.iter().any(|w| w.contains("ring key")), "{:?}", answer.warnings);
        assert_peer_watch_file(&out);
    }
}

#[tokio::test]
async fn mutating_an_injected_pod_again_changes_nothing() {
    let (_, once, _, _) = admit(keyed_cluster(), &redis_pod()).await;
    let (answer, twice, _, _) = admit(keyed_cluster(), &once).await;
    assert_eq!(twice, once);
    assert!(answer.patch.is_none(), "{:?}", answer.patch);
    // And when the StatefulSet changed in between (another key, no role label), the injection is
    // re-rendered, not stacked.
    let changed =
        cluster_with(true, &[("habitat/ring-key-secret", "other-ring"), ("habitat/role-sidecar", "false")]);
    let (_, again, _, _) = admit(changed, &once).await;
    let names = env_names(supervisor(&again));
    assert_eq!(names.iter().filter(|n| *n == "HAB_RING_KEY").count(), 1, "{names:?}");
    assert_eq!(env_value(supervisor(&again), "HAB_RING_KEY"), Some(&ring_key_env("other-ring")));
    assert_eq!(names.iter().filter(|n| *n == "HABITAT_BOOTSTRAP_ORDINAL").count(), 1, "{names:?}");
    let sup = args(supervisor(&again));
    assert_eq!(sup.iter().filter(|a| *a == "--peer-watch-file").count(), 1, "{sup:?}");
    assert!(args(sidecar(&again)).contains(&"--no-role-label".to_owned()));
    for name in ["habitat-bootstrap-peers", "habitat-supervisor-state"] {
        let n = again["spec"]["volumes"].as_array().unwrap().iter().filter(|v| v["name"] == name).count();
        assert_eq!(n, 1, "{name}");
        let n = mounts(supervisor(&again)).iter().filter(|m| m["name"] == name).count();
        assert_eq!(n, 1, "{name}");
    }
}

#[tokio::test]
async fn pods_that_are_not_ours_are_allowed_untouched_without_api_calls() {
    let mut no_owner = redis_pod();
    no_owner["metadata"].as_object_mut().unwrap().remove("ownerReferences");
    let mut deployment_pod = redis_pod();
    deployment_pod["metadata"]["ownerReferences"][0]["kind"] = json!("ReplicaSet");
    let mut unknown_sts = redis_pod();
    unknown_sts["metadata"]["ownerReferences"][0]["name"] = json!("other");
    for pod in [no_owner, deployment_pod, unknown_sts] {
        let Admitted { answer, out, events, reads, ring_keys, .. } =
            admit_all(keyed_cluster(), &pod, false).await;
        assert!(answer.allowed && answer.patch.is_none() && answer.warnings.is_empty());
        assert_eq!(out, pod);
        assert_eq!(reads, 0, "no API call for a pod that is not ours");
        assert!(ring_keys.is_empty());
        assert!(events.lock().unwrap().is_empty());
    }
    let mut cluster = keyed_cluster();
    cluster.statefulsets[0].metadata.annotations = None;
    let (answer, _, events, reads) = admit(cluster, &redis_pod()).await;
    assert!(answer.allowed && answer.patch.is_none());
    assert_eq!(reads, 0);
    assert!(events.lock().unwrap().is_empty());
}

fn labelled(mut pod: Value) -> Value {
    pod["metadata"]["labels"]["habitat/bootstrap"] = json!("true");
    pod
}

#[tokio::test]
async fn labelled_pod_whose_owner_is_not_cached_yet_is_read_live() {
    let mut cluster = keyed_cluster();
    cluster.uncached_statefulsets = std::mem::take(&mut cluster.statefulsets);
    let Admitted { answer, out, reads, ring_keys, .. } =
        admit_all(cluster, &labelled(redis_pod_ordinal(0)), false).await;
    assert!(answer.allowed);
    assert_peer_watch_file(&out);
    assert_eq!(reads, 2, "one read of the StatefulSet, one creation of its ring key");
    assert_eq!(ring_keys.len(), 1);
}

#[tokio::test]
async fn ours_fail_closed_with_a_reason() {
    let mut unknown = keyed_cluster();
    unknown.statefulsets.clear();
    let mut api_down_uncached = keyed_cluster();
    api_down_uncached.statefulsets.clear();
    api_down_uncached.api_down = true;
    let mut api_down_cached = keyed_cluster();
    api_down_cached.api_down = true;
    for (cluster, want, reason) in [
        (unknown, "was not found", "owner_not_found"),
        (api_down_uncached, "cannot read StatefulSet default/redis", "api_unavailable"),
        (api_down_cached, "cannot create Secret default/redis-habitat-ring", "ring_key_not_created"),
    ] {
        let pod = labelled(redis_pod());
        let Admitted { answer, out, metrics, .. } = admit_all(cluster, &pod, false).await;
        assert!(!answer.allowed, "{want}");
        assert!(answer.patch.is_none());
        assert!(answer.message.as_deref().unwrap().contains(want), "{:?}", answer.message);
        assert!(answer.message.as_deref().unwrap().contains("retries"), "{:?}", answer.message);
        assert!(metrics.contains(&format!("reason=\"{reason}\"")), "{reason}: {metrics}");
        assert_eq!(out, pod);
    }
    // The ring key's denial says how to do without, and is recorded on the StatefulSet.
    let mut api_down = keyed_cluster();
    api_down.api_down = true;
    let (answer, _, events, _) = admit(api_down, &redis_pod()).await;
    assert!(answer.message.unwrap().contains("habitat/ring-key-secret=none"));
    let events = events.lock().unwrap().clone();
    assert_eq!(
        (events.len(), events[0].reason, events[0].event_type),
        (1, "InjectionDenied", EventType::Warning)
    );
    assert!(events[0].note.starts_with("redis-2: cannot create Secret"), "{}", events[0].note);

    // A StatefulSet in the cache without a ring key needs no API call at all: injected meanwhile.
    let mut api_down = cluster_with(true, &[]);
    api_down.api_down = true;
    let (answer, out, _, reads) = admit(api_down, &labelled(redis_pod())).await;
    assert!(answer.allowed);
    assert_peer_watch_file(&out);
    assert_eq!(reads, 0);
}

#[tokio::test]
async fn label_without_annotation_is_explained() {
    let mut cluster = keyed_cluster();
    cluster.statefulsets[0].metadata.annotations = None;
    let (answer, _, events, _) = admit(cluster, &labelled(redis_pod())).await;
    assert!(answer.allowed && answer.patch.is_none());
    assert!(answer.warnings[0].contains("is not annotated"), "{:?}", answer.warnings);
    assert_eq!(events.lock().unwrap()[0].reason, "InjectionSkipped");
}

#[tokio::test]
async fn dry_run_is_mutated_without_events_or_secrets() {
    let Admitted { answer, out, events, reads, ring_keys, .. } =
        admit_all(keyed_cluster(), &redis_pod(), true).await;
    assert!(answer.patch.is_some());
    // The pod names the key as for a real create, but no Secret is made (sideEffects: NoneOnDryRun).
    assert_eq!(env_value(supervisor(&out), "HAB_RING_KEY"), Some(&ring_key_env("redis-habitat-ring")));
    assert_peer_watch_file(&out);
    assert!(ring_keys.is_empty());
    assert_eq!(reads, 0);
    assert!(events.lock().unwrap().is_empty());
}

#[tokio::test]
async fn other_operations_and_kinds_pass_through() {
    let a = admission(keyed_cluster());
    let mut not_a_pod = redis_pod();
    not_a_pod["kind"] = json!("ConfigMap");
    for (object, op) in
        [(redis_pod(), "UPDATE"), (redis_pod(), "DELETE"), (redis_pod(), "CONNECT"), (not_a_pod, "CREATE")]
    {
        let body = serde_json::to_vec(&review_of(&object, op, false)).unwrap();
        let answer = decode(&a.review_pod(&body).await.unwrap());
        assert!(answer.allowed && answer.patch.is_none(), "{op}");
    }
    assert_eq!(*a.cluster.live_reads.lock().unwrap(), 0);
    assert!(a.cluster.ring_keys.lock().unwrap().is_empty());
}

#[tokio::test]
async fn the_users_own_peer_and_env_win() {
    for user_peers in [["--peer", "seed.example.com"], ["--peer-watch-file", "/etc/peers"]] {
        let mut pod = redis_pod();
        let args_of_pod = pod["spec"]["containers"][0]["args"].as_array_mut().unwrap();
        args_of_pod.extend(user_peers.map(|a| json!(a)));
        let want_args = args(&pod["spec"]["containers"][0]);
        pod["spec"]["containers"][0]["env"]
            .as_array_mut()
            .unwrap()
            .push(json!({"name": "HABITAT_BOOTSTRAP_ORDINAL", "value": "mine"}));
        let (answer, out, _, _) = admit(keyed_cluster(), &pod).await;
        // Their peers, as they wrote them: no watch file, no volume for it, in either container.
        assert_eq!(args(supervisor(&out)), want_args);
        assert!(answer.warnings.iter().any(|w| w.contains("already passes --peer")), "{:?}", answer.warnings);
        assert!(volume(&out, "habitat-bootstrap-peers").is_none());
        assert!(!mounts(supervisor(&out)).iter().any(|m| m["name"] == "habitat-bootstrap-peers"));
        assert!(status(&out).get("peerWatchFile").is_none());
        // The sidecar still runs (role label, predecessor departures), without a peer file.
        let side = args(sidecar(&out));
        assert!(!side.contains(&"--peer-watch-file".to_owned()), "{side:?}");
        assert!(side.contains(&"--sup-state-dir".to_owned()), "{side:?}");
        let ordinals: Vec<_> = supervisor(&out)["env"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["name"] == "HABITAT_BOOTSTRAP_ORDINAL")
            .collect();
        assert_eq!(ordinals, vec![&json!({"name": "HABITAT_BOOTSTRAP_ORDINAL", "value": "mine"})]);
    }
}

#[tokio::test]
async fn options_from_annotations() {
    // habitat/role-sidecar: "false" keeps the sidecar (it keeps the peer file), labelling nothing.
    let (answer, out, _, _) =
        admit(cluster_with(true, &[RING_KEY, ("habitat/role-sidecar", "false")]), &redis_pod()).await;
    assert!(answer.allowed);
    assert!(args(sidecar(&out)).contains(&"--no-role-label".to_owned()));
    assert_peer_watch_file(&out);
    assert!(
        answer.warnings.iter().any(|w| w.starts_with("habitat/role-sidecar=\"false\": the sidecar still")),
        "{:?}",
        answer.warnings
    );
    let (_, labelling, _, _) = admit(keyed_cluster(), &redis_pod()).await;
    assert!(!args(sidecar(&labelling)).contains(&"--no-role-label".to_owned()));

    // watch-file is the default spelled out: the same pod, no warning about it.
    let (answer, out, _, _) =
        admit(cluster_with(true, &[RING_KEY, ("habitat/peer-mode", "watch-file")]), &redis_pod()).await;
    assert_eq!(out, labelling);
    assert!(!answer.warnings.iter().any(|w| w.contains("peer-mode")), "{:?}", answer.warnings);

    // peer, the former mode, is served by the watch file, with a warning.
    let (answer, out, _, _) =
        admit(cluster_with(true, &[RING_KEY, ("habitat/peer-mode", "peer")]), &redis_pod()).await;
    assert!(answer.allowed);
    assert_eq!(out, labelling);
    assert!(
        answer.warnings.iter().any(|w| w.starts_with("habitat/peer-mode=peer is no longer offered")),
        "{:?}",
        answer.warnings
    );

    for bad in [("habitat/peer-mode", "dns"), ("habitat/ring-key-secret", "Not_A_Name")] {
        let (answer, _, events, _) = admit(cluster_with(true, &[bad]), &redis_pod()).await;
        assert!(!answer.allowed, "{bad:?}");
        assert!(answer.message.unwrap().contains(bad.0));
        assert_eq!(events.lock().unwrap()[0].reason, "InjectionDenied");
    }
}

#[tokio::test]
async fn warnings_explain_likely_mistakes() {
    let mut cluster = cluster_with(false, &[]);
    cluster.statefulsets[0].spec.as_mut().unwrap().replicas = Some(4);
    cluster.services[0].spec.as_mut().unwrap().cluster_ip = Some("10.0.0.7".into());
    let (answer, out, _, _) = admit(cluster, &redis_pod()).await;
    for want in ["not headless", "4 replicas", "/hab/sup", "publishNotReadyAddresses", "no ring key"] {
        assert!(answer.warnings.iter().any(|w| w.contains(want)), "{want}: {:?}", answer.warnings);
    }
    // Each shown whole: under the cut (250 bytes, before the API server's at 256), not truncated.
    assert!(answer.warnings.iter().all(|w| w.len() <= 250 && !w.ends_with('…')), "{:?}", answer.warnings);
    // Warnings only: the pod is injected as any other.
    assert_peer_watch_file(&out);

    let (answer, _, _, _) = admit(keyed_cluster(), &redis_pod()).await;
    assert!(!answer.warnings.iter().any(|w| w.contains("publishNotReadyAddresses")), "{:?}", answer.warnings);

    let mut cluster = keyed_cluster();
    cluster.services.clear();
    let (answer, _, _, _) = admit(cluster, &redis_pod()).await;
    assert!(answer.warnings.iter().any(|w| w.contains("not found")), "{:?}", answer.warnings);
}

#[tokio::test]
async fn unusable_pods_of_ours_are_denied_with_what_to_fix() {
    let mut clash = redis_pod();
    clash["spec"]["containers"].as_array_mut().unwrap().push(json!({"name": "habitat-role", "image": "x"}));
    let mut bad_name = redis_pod();
    bad_name["metadata"]["name"] = json!("redis-two");
    let mut huge_ordinal = redis_pod();
    huge_ordinal["metadata"]["name"] = json!("redis-99999999999");
    huge_ordinal["metadata"]["labels"].as_object_mut().unwrap().remove("apps.kubernetes.io/pod-index");
    let mut no_containers = redis_pod();
    no_containers["spec"]["containers"] = json!([]);
    let mut wrong_type = redis_pod();
    wrong_type["spec"]["containers"] = json!("redis");
    for (pod, want) in [
        (clash.clone(), "already has a container named \"habitat-role\""),
        (bad_name, "not <statefulset>-<ordinal>"),
        (huge_ordinal, "out of range"),
        (no_containers, "no containers"),
        (wrong_type, "cannot read the pod"),
    ] {
        let (answer, _, _, _) = admit(keyed_cluster(), &pod).await;
        assert!(!answer.allowed, "{want}");
        assert!(answer.message.as_deref().unwrap().contains(want), "{want}: {:?}", answer.message);
    }
    // The sidecar is always injected: a container of that name is refused even when the role label
    // is turned off (it used to opt out of the sidecar).
    let (answer, _, _, _) = admit(cluster_with(true, &[("habitat/role-sidecar", "false")]), &clash).await;
    assert!(!answer.allowed);
    assert!(answer.message.as_deref().unwrap().contains("already has a container named \"habitat-role\""));
}

#[tokio::test]
async fn custom_domain_and_ports_reach_the_env_and_the_sidecar() {
    let mut a = admission(keyed_cluster());
    a.settings.cluster_domain = "corp.example".into();
    let mut pod = redis_pod();
    pod["spec"]["containers"][0]["args"].as_array_mut().unwrap().extend([
        json!("--listen-gossip"),
        json!("0.0.0.0:9700"),
        json!("--listen-ctl"),
        json!("127.0.0.1:9800"),
    ]);
    let answer =
        decode(&a.review_pod(&serde_json::to_vec(&review_of(&pod, "CREATE", false)).unwrap()).await.unwrap());
    let out = patched(&pod, &answer);
    assert_eq!(
        env_value(supervisor(&out), "HABITAT_BOOTSTRAP_POD_FQDN").unwrap()["value"],
        format!("redis-2.{SVC}.{NS}.svc.corp.example")
    );
    assert_eq!(
        env_value(supervisor(&out), "HABITAT_BOOTSTRAP_SERVICE_FQDN").unwrap()["value"],
        format!("{SVC}.{NS}.svc.corp.example")
    );
    let side = args(sidecar(&out)).join(" ");
    assert!(side.contains("--gossip-port 9700"), "{side}");
    assert!(side.contains("--ctl-gateway 127.0.0.1:9800"), "{side}");
    assert_peer_watch_file(&out);
}

fn sts_review(sts: &Value, operation: &str) -> Vec<u8> {
    let mut review = review_of(sts, operation, false);
    review["request"]["kind"] = json!({"group": "apps", "version": "v1", "kind": "StatefulSet"});
    serde_json::to_vec(&review).unwrap()
}

fn ring_key_annotation(sts: &Value) -> &Value {
    &sts["metadata"]["annotations"]["habitat/ring-key-secret"]
}

#[tokio::test]
async fn statefulset_template_label_follows_the_annotation() {
    let a = admission(MemoryCluster::default());
    let mut sts = serde_json::to_value(statefulset("redis", NS, SVC, 3, &[])).unwrap();
    sts["kind"] = json!("StatefulSet");
    sts["spec"]["template"] =
        json!({"metadata": {"labels": {"app": "redis"}}, "spec": {"containers": [{"name": "c"}]}});

    // Created: labelled, and its ring key named.
    let answer = decode(&a.review_statefulset(&sts_review(&sts, "CREATE")).await.unwrap());
    let labelled = patched(&sts, &answer);
    assert_eq!(
        labelled["spec"]["template"]["metadata"]["labels"],
        json!({"app": "redis", "habitat/bootstrap": "true"})
    );
    assert_eq!(ring_key_annotation(&labelled), "redis-habitat-ring");
    assert!(answer.warnings.is_empty());
    let again = decode(&a.review_statefulset(&sts_review(&labelled, "UPDATE")).await.unwrap());
    assert!(again.patch.is_none());
    // A StatefulSet created (labelled) by another path still gets its key at creation.
    let mut applied_labelled = sts.clone();
    applied_labelled["spec"]["template"]["metadata"]["labels"]["habitat/bootstrap"] = json!("true");
    let answer = decode(&a.review_statefulset(&sts_review(&applied_labelled, "CREATE")).await.unwrap());
    assert_eq!(ring_key_annotation(&patched(&applied_labelled, &answer)), "redis-habitat-ring");

    // Opted in by an update (a ring that already runs): labelled, but never given a key.
    let answer = decode(&a.review_statefulset(&sts_review(&sts, "UPDATE")).await.unwrap());
    let updated = patched(&sts, &answer);
    assert_eq!(updated["spec"]["template"]["metadata"]["labels"]["habitat/bootstrap"], "true");
    assert!(ring_key_annotation(&updated).is_null(), "{updated}");

    // The user's own choice, a Secret or none, is kept.
    for own in ["my-ring", "none"] {
        let mut mine = sts.clone();
        mine["metadata"]["annotations"]["habitat/ring-key-secret"] = json!(own);
        let answer = decode(&a.review_statefulset(&sts_review(&mine, "CREATE")).await.unwrap());
        assert_eq!(ring_key_annotation(&patched(&mine, &answer)), own);
    }

    let mut opted_out = labelled.clone();
    opted_out["metadata"]["annotations"].as_object_mut().unwrap().remove("habitat/bootstrap");
    let answer = decode(&a.review_statefulset(&sts_review(&opted_out, "UPDATE")).await.unwrap());
    assert_eq!(
        patched(&opted_out, &answer)["spec"]["template"]["metadata"]["labels"],
        json!({"app": "redis"})
    );
    assert!(answer.warnings[0].contains("replaced"), "{:?}", answer.warnings);

    // Not opted in: created as it is, no key.
    let mut plain = sts.clone();
    plain["metadata"]["annotations"].as_object_mut().unwrap().remove("habitat/bootstrap");
    let answer = decode(&a.review_statefulset(&sts_review(&plain, "CREATE")).await.unwrap());
    assert!(answer.allowed && answer.patch.is_none());

    let mut bad = sts.clone();
    bad["metadata"]["annotations"]["habitat/role-sidecar"] = json!("maybe");
    let answer = decode(&a.review_statefulset(&sts_review(&bad, "CREATE")).await.unwrap());
    assert!(!answer.allowed);
    assert!(answer.message.unwrap().contains("habitat/role-sidecar"));
}

#[tokio::test]
async fn a_service_account_that_cannot_label_is_warned_about() {
    let mut cluster = keyed_cluster();
    cluster.sidecar_can_label = Some(false);
    let (answer, _, _, _) = admit(cluster, &redis_pod()).await;
    assert!(
        answer.warnings.iter().any(|w| w.contains("ServiceAccount \"redis\" may not patch pods")),
        "{:?}",
        answer.warnings
    );
    for allowed in [Some(true), None] {
        let mut cluster = keyed_cluster();
        cluster.sidecar_can_label = allowed;
        let (answer, _, _, _) = admit(cluster, &redis_pod()).await;
        assert!(!answer.warnings.iter().any(|w| w.contains("may not patch")), "{:?}", answer.warnings);
    }
}

/// The captured pod as the API server hands it over when the pod (or its ServiceAccount) opts out
/// of the token mount: no `kube-api-access-*` volume, no mount in any container.
fn redis_pod_without_token() -> Value {
    let mut pod = redis_pod();
    pod["spec"]["automountServiceAccountToken"] = json!(false);
    let is_token = |v: &Value| v["name"].as_str().is_some_and(|n| n.starts_with("kube-api-access"));
    pod["spec"]["volumes"].as_array_mut().unwrap().retain(|v| !is_token(v));
    for container in pod["spec"]["containers"].as_array_mut().unwrap() {
        container["volumeMounts"].as_array_mut().unwrap().retain(|m| !is_token(m));
    }
    pod
}

const TOKEN_PATH: &str = "/var/run/secrets/kubernetes.io/serviceaccount";

fn mounts_token(container: &Value) -> Option<String> {
    mounts(container)
        .into_iter()
        .find(|m| m["mountPath"] == TOKEN_PATH)
        .map(|m| m["name"].as_str().unwrap().into())
}

#[tokio::test]
async fn a_pod_that_mounts_no_token_gets_one_in_the_sidecar_alone() {
    let pod = redis_pod_without_token();
    let (answer, out, _, _) = admit(keyed_cluster(), &pod).await;
    assert!(answer.allowed);
    assert!(!answer.warnings.iter().any(|w| w.contains("token")), "{:?}", answer.warnings);
    assert_eq!(mounts_token(sidecar(&out)).as_deref(), Some("habitat-role-api-access"));
    let mount = mounts(sidecar(&out)).into_iter().find(|m| m["mountPath"] == TOKEN_PATH).unwrap();
    assert_eq!(mount["readOnly"], true);
    assert_eq!(mounts_token(supervisor(&out)), None, "the Supervisor's container gets no token");
    let volume =
        out["spec"]["volumes"].as_array().unwrap().iter().find(|v| v["name"] == "habitat-role-api-access");
    // What the kubelet's kube-api-access-* holds: a token bound to the pod, the CA, the namespace.
    assert_eq!(
        volume.unwrap()["projected"],
        json!({"defaultMode": 420, "sources": [
            {"serviceAccountToken": {"expirationSeconds": 3607, "path": "token"}},
            {"configMap": {"name": "kube-root-ca.crt", "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
            {"downwardAPI": {"items": [{"path": "namespace", "fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.namespace"}}]}}
        ]})
    );
    // Reinvocation keeps the one volume and mount, and changes nothing.
    let (again, twice, _, _) = admit(keyed_cluster(), &out).await;
    assert!(again.patch.is_none(), "{:?}", again.patch);
    assert_eq!(twice, out);
    // A pod that mounts the token again (the template changed) drops ours.
    let (_, shared, _, _) = admit(keyed_cluster(), &{
        let mut p = redis_pod();
        p["metadata"]["annotations"] = out["metadata"]["annotations"].clone();
        p
    })
    .await;
    assert!(
        !shared["spec"]["volumes"].as_array().unwrap().iter().any(|v| v["name"] == "habitat-role-api-access")
    );
}

#[tokio::test]
async fn a_token_every_container_mounts_is_shared_with_the_sidecar_and_warned_about() {
    let (answer, out, _, _) = admit(keyed_cluster(), &redis_pod()).await;
    assert_eq!(mounts_token(sidecar(&out)), mounts_token(supervisor(&out)));
    assert!(mounts_token(sidecar(&out)).unwrap().starts_with("kube-api-access-"));
    assert!(
        !out["spec"]["volumes"].as_array().unwrap().iter().any(|v| v["name"] == "habitat-role-api-access")
    );
    let warning = answer.warnings.iter().find(|w| w.contains("token is mounted in every container"));
    assert!(
        warning.is_some_and(|w| w.contains("automountServiceAccountToken: false")),
        "{:?}",
        answer.warnings
    );
}

#[tokio::test]
async fn the_supervisor_waits_for_the_sidecars_first_sync() {
    // A native sidecar's startupProbe holds the Supervisor until the peer file is written and the
    // saved members forgotten, whatever the options.
    for annotations in [&[RING_KEY][..], &[RING_KEY, ("habitat/role-sidecar", "false")][..]] {
        let (_, out, _, _) = admit(cluster_with(true, annotations), &redis_pod()).await;
        let probe = &sidecar(&out)["startupProbe"];
        assert_eq!(probe["httpGet"]["path"], "/readyz", "{annotations:?}");
        assert_eq!(sidecar(&out)["restartPolicy"], "Always");
    }
    // Not native: a plain container, which cannot hold the others back.
    let mut a = admission(keyed_cluster());
    a.settings.native_sidecar = false;
    let body = serde_json::to_vec(&review_of(&redis_pod(), "CREATE", false)).unwrap();
    let out = patched(&redis_pod(), &decode(&a.review_pod(&body).await.unwrap()));
    assert!(out["spec"]["initContainers"].is_null());
    let side =
        out["spec"]["containers"].as_array().unwrap().iter().find(|c| c["name"] == "habitat-role").unwrap();
    assert!(side["startupProbe"].is_null());
}

#[tokio::test]
async fn a_real_reinvocation_review_changes_nothing() {
    let review: Value =
        serde_json::from_str(include_str!("fixtures/admission/captured-reinvocation-redis-1.json")).unwrap();
    let object = &review["request"]["object"];
    // The StatefulSet as our StatefulSet webhook stored it in scenario 9.
    let mut sts = statefulset("redis", "e2e-reinvoke", "redis", 2, &[RING_KEY]);
    sts.metadata.uid = object["metadata"]["ownerReferences"][0]["uid"].as_str().map(str::to_owned);
    let cluster = MemoryCluster {
        statefulsets: vec![sts],
        services: vec![headless_service("redis", "e2e-reinvoke", true)],
        ..Default::default()
    };
    let mut a = admission(cluster);
    a.settings.cluster_domain = "hab.test".into();
    a.settings.sidecar_image = "hab-bootstrap:e2e".into();
    let answer = decode(&a.review_pod(&serde_json::to_vec(&review).unwrap()).await.unwrap());
    assert!(answer.allowed);
    assert_eq!(answer.uid, review["request"]["uid"]);
    assert!(answer.patch.is_none(), "{:?}", answer.patch);
    assert_peer_watch_file(object);
}

/// The pod's QoS class as Kubernetes computes it (pkg/apis/core/helper/qos): Guaranteed when every
/// container, init containers (native sidecars) included, has cpu and memory limits equal to its
/// requests (an unset request defaults to its limit); BestEffort when none sets any.
fn qos_class(pod: &Value) -> &'static str {
    use hab_bootstrap::injection::quantity::parse;
    let spec = &pod["spec"];
    let all = spec["containers"].as_array().into_iter().chain(spec["initContainers"].as_array()).flatten();
    let (mut any, mut guaranteed) = (false, true);
    for container in all {
        let resources = &container["resources"];
        for resource in ["cpu", "memory"] {
            let limit = resources["limits"][resource].as_str();
            let request = resources["requests"][resource].as_str().or(limit);
            any |= request.is_some();
            guaranteed &= matches!((request, limit), (Some(r), Some(l)) if parse(r) == parse(l));
        }
    }
    match (any, guaranteed) {
        (false, _) => "BestEffort",
        (true, true) => "Guaranteed",
        (true, false) => "Burstable",
    }
}

const GUARANTEED_SIDECAR: [(&str, &str); 4] = [
    ("habitat/sidecar-cpu-request", "50m"),
    ("habitat/sidecar-cpu-limit", "0.05"),
    ("habitat/sidecar-memory-request", "32Mi"),
    ("habitat/sidecar-memory-limit", "32Mi"),
];

#[tokio::test]
async fn a_guaranteed_pod_stays_guaranteed_when_the_annotations_size_the_sidecar_alike() {
    let mut pod = redis_pod();
    pod["spec"]["containers"][0]["resources"] =
        json!({"requests": {"cpu": "2", "memory": "2Gi"}, "limits": {"cpu": "2", "memory": "2Gi"}});
    assert_eq!(qos_class(&pod), "Guaranteed");
    // The webhook's default sidecar requests less than its limit: the pod falls to Burstable.
    let (_, out, _, _) = admit(keyed_cluster(), &pod).await;
    assert_eq!(qos_class(&out), "Burstable");

    let annotations: Vec<(&str, &str)> = [RING_KEY].into_iter().chain(GUARANTEED_SIDECAR).collect();
    let (answer, out, _, _) = admit(cluster_with(true, &annotations), &pod).await;
    assert!(answer.allowed, "{:?}", answer.message);
    assert_eq!(qos_class(&out), "Guaranteed");
    assert_eq!(
        sidecar(&out)["resources"],
        json!({"requests": {"cpu": "50m", "memory": "32Mi"}, "limits": {"cpu": "0.05", "memory": "32Mi"}})
    );
    // Nothing else of the injection changes.
    assert_peer_watch_file(&out);
}

#[tokio::test]
async fn the_sidecars_image_and_timings_come_from_the_annotations() {
    let annotations = [
        RING_KEY,
        ("habitat/sidecar-image", "registry.example/hab-bootstrap:9"),
        ("habitat/sidecar-poll-interval", "500ms"),
        ("habitat/sidecar-unknown-grace", "12s"),
    ];
    let (answer, out, _, _) = admit(cluster_with(true, &annotations), &redis_pod()).await;
    assert!(answer.allowed, "{:?}", answer.message);
    assert_eq!(sidecar(&out)["image"], "registry.example/hab-bootstrap:9");
    let side = args(sidecar(&out)).join(" ");
    assert!(side.contains("--interval 500ms") && side.contains("--unknown-grace 12s"), "{side}");
    // Left out: the sidecar's own defaults, and no flag for them.
    let (_, plain, _, _) = admit(keyed_cluster(), &redis_pod()).await;
    let side = args(sidecar(&plain)).join(" ");
    assert!(!side.contains("--interval") && !side.contains("--unknown-grace"), "{side}");

    // The operator may keep the image theirs.
    let mut a = admission(cluster_with(true, &annotations));
    a.settings.allow_sidecar_image_annotation = false;
    let body = serde_json::to_vec(&review_of(&redis_pod(), "CREATE", false)).unwrap();
    let answer = decode(&a.review_pod(&body).await.unwrap());
    assert!(!answer.allowed);
    assert!(answer.message.unwrap().contains("--allow-sidecar-image-annotation=false"));
}

#[tokio::test]
async fn bad_sidecar_settings_are_denied_with_what_to_fix() {
    for (bad, want) in [
        (("habitat/sidecar-cpu-limit", "1m"), "set habitat/sidecar-cpu-limit to at least 5m"),
        (("habitat/sidecar-memory-request", "32MB"), "unknown suffix \"MB\""),
        (("habitat/sidecar-poll-interval", "0s"), "must be longer than 0"),
        (("habitat/sidecar-unknown-grace", "5"), "missing unit"),
        (("habitat/sidecar-image", " "), "expected an image reference"),
    ] {
        let (answer, _, _, _) = admit(cluster_with(true, &[RING_KEY, bad]), &redis_pod()).await;
        assert!(!answer.allowed, "{bad:?}");
        let message = answer.message.unwrap();
        assert!(message.contains(bad.0) && message.contains(want), "{bad:?}: {message}");
    }
}

#[tokio::test]
async fn a_dry_run_denial_publishes_no_event() {
    // Denied by the decision (a bad annotation) or for the ring key's Secret (API down): a real
    // request records InjectionDenied; a dry run records nothing and does not try the Secret
    // (sideEffects: NoneOnDryRun).
    let bad_annotation = || cluster_with(true, &[RING_KEY, ("habitat/sidecar-cpu-limit", "1m")]);
    let api_down = || MemoryCluster { api_down: true, ..keyed_cluster() };
    for cluster in [bad_annotation as fn() -> MemoryCluster, api_down] {
        let real = admit_all(cluster(), &redis_pod(), false).await;
        assert!(!real.answer.allowed);
        assert_eq!(real.events.lock().unwrap()[0].reason, "InjectionDenied");
        let dry = admit_all(cluster(), &redis_pod(), true).await;
        assert!(dry.events.lock().unwrap().is_empty(), "{:?}", dry.events.lock().unwrap());
        assert!(dry.ring_keys.is_empty());
    }
    // The last Event of the admission path: a pod labelled ours whose StatefulSet is not annotated.
    let not_annotated = || cluster_with(true, &[("habitat/bootstrap", "")]);
    let real = admit_all(not_annotated(), &labelled(redis_pod()), false).await;
    assert_eq!(real.events.lock().unwrap()[0].reason, "InjectionSkipped");
    let dry = admit_all(not_annotated(), &labelled(redis_pod()), true).await;
    assert!(dry.answer.warnings[0].contains("is not annotated"), "{:?}", dry.answer.warnings);
    assert!(dry.events.lock().unwrap().is_empty());
}

#[tokio::test]
async fn statefulset_denials_are_cut_to_size_like_pod_denials() {
    let a = admission(MemoryCluster::default());
    let mut sts = serde_json::to_value(statefulset("redis", NS, SVC, 3, &[])).unwrap();
    sts["kind"] = json!("StatefulSet");
    // The denial quotes the value: a hostile one must not make a huge answer.
    sts["metadata"]["annotations"]["habitat/peer-mode"] = json!("x".repeat(100_000));
    let answer = decode(&a.review_statefulset(&sts_review(&sts, "CREATE")).await.unwrap());
    assert!(!answer.allowed);
    let message = answer.message.unwrap();
    assert!(message.contains("habitat/peer-mode"), "{message}");
    assert!(message.len() <= 1024 + '…'.len_utf8() && message.ends_with('…'), "{} bytes", message.len());
    // The same cut as a pod's denial.
    let (answer, _, _, _) =
        admit(cluster_with(true, &[("habitat/peer-mode", &"x".repeat(100_000))]), &redis_pod()).await;
    assert_eq!(answer.message.unwrap().len(), message.len());
}

/// Events keep client-go's pace: 25 of a type per StatefulSet at once, each StatefulSet its own.
#[test]
fn a_statefulset_gets_25_events_of_each_type_at_once() {
    use hab_bootstrap::webhook::admission::{EventSink, PodEvent};
    use hab_bootstrap::webhook::event_pace::{EVENT_BURST, Paced};
    let recorded = std::sync::Arc::new(RecordingEvents::default());
    let paced = Paced::new(recorded.clone());
    let (redis, other_ns, web) = (
        statefulset("redis", "a", "redis-headless", 3, &[]),
        statefulset("redis", "b", "redis-headless", 3, &[]),
        statefulset("web", "a", "web-headless", 3, &[]),
    );
    for i in 0..40 {
        let pod = format!("redis-{i}");
        paced.publish(PodEvent::normal(&redis, &pod, "Injected", String::new()));
        paced.publish(PodEvent::warning(&redis, &pod, "InjectionDenied", String::new()));
    }
    paced.publish(PodEvent::normal(&other_ns, "other-0", "Injected", String::new()));
    paced.publish(PodEvent::normal(&web, "web-0", "Injected", String::new()));
    let recorded = recorded.0.lock().unwrap();
    let pods = |t: EventType| -> Vec<&str> {
        recorded
            .iter()
            .filter(|e| e.pod.starts_with("redis-") && e.event_type == t)
            .map(|e| e.pod.as_str())
            .collect()
    };
    let first: Vec<String> = (0..EVENT_BURST).map(|i| format!("redis-{i}")).collect();
    assert_eq!(pods(EventType::Normal), first, "the first 25, then one per 5 minutes");
    assert_eq!(pods(EventType::Warning), first, "warnings have their own allowance");
    for pod in ["other-0", "web-0"] {
        assert_eq!(
            recorded.iter().filter(|e| e.pod == pod).count(),
            1,
            "{pod}: each StatefulSet its own allowance"
        );
    }
}

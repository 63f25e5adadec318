//! The admission flow, in process: a review in, the answer out, the patch applied to the pod the
//! way the API server applies it. The cluster is a few objects in memory (tests/support).

mod support;

use hab_bootstrap::webhook::admission::EventType;
use serde_json::{Value, json};
use support::*;

const NS: &str = "default";
const SVC: &str = "redis-headless";

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

fn cluster_with(
    live: &[(u32, bool)],
    publish_not_ready: bool,
    annotations: &[(&str, &str)],
) -> MemoryCluster {
    MemoryCluster {
        statefulsets: vec![statefulset("redis", NS, SVC, 3, annotations)],
        services: vec![headless_service(SVC, NS, publish_not_ready)],
        pods: live.iter().map(|&(o, ready)| sibling("redis", NS, o, ready)).collect(),
        ..Default::default()
    }
}

async fn admit(cluster: MemoryCluster, pod: &Value) -> (Answer, Value, support::RecordingEvents, u32) {
    let a = admission(cluster);
    let body = serde_json::to_vec(&review_of(pod, "CREATE", false)).unwrap();
    let answer = decode(&a.review_pod(&body).await.expect("answerable"));
    let out = patched(pod, &answer);
    let reads = *a.cluster.live_reads.lock().unwrap();
    (answer, out, a.events, reads)
}

fn supervisor(pod: &Value) -> &Value {
    &pod["spec"]["containers"][0]
}

fn env_names(container: &Value) -> Vec<String> {
    container["env"].as_array().unwrap().iter().map(|e| e["name"].as_str().unwrap().to_owned()).collect()
}

fn env_value<'a>(container: &'a Value, name: &str) -> Option<&'a Value> {
    container["env"].as_array()?.iter().find(|e| e["name"] == name)
}

fn fqdn(ordinal: u32) -> String {
    format!("redis-{ordinal}.{SVC}.{NS}.svc.cluster.local")
}

#[tokio::test]
async fn captured_review_matches_the_golden_pod() {
    let review = redis_review();
    let a = admission(cluster_with(&[(0, true), (1, true)], true, &[]));
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
async fn first_rollout_pod_k_peers_every_lower_ordinal() {
    let (answer, out, events, _) =
        admit(cluster_with(&[(0, true), (1, true)], true, &[]), &redis_pod()).await;
    assert!(answer.allowed);
    assert_eq!(peer_args(supervisor(&out)), vec![fqdn(0), fqdn(1)]);
    let events = events.lock().unwrap();
    assert_eq!(events.len(), 1);
    assert_eq!(
        (events[0].reason, events[0].event_type, events[0].pod.as_str()),
        ("Injected", EventType::Normal, "redis-2")
    );
    assert!(events[0].note.contains(&fqdn(1)), "{}", events[0].note);
}

#[tokio::test]
async fn recreated_pod_zero_peers_the_live_members() {
    let (_, out, _, _) = admit(cluster_with(&[(1, true), (2, true)], true, &[]), &redis_pod_ordinal(0)).await;
    assert_eq!(peer_args(supervisor(&out)), vec![fqdn(1), fqdn(2)]);
}

#[tokio::test]
async fn lone_first_ordinal_founds_the_ring_but_gets_env_and_sidecar() {
    let (answer, out, _, _) = admit(cluster_with(&[], true, &[]), &redis_pod_ordinal(0)).await;
    assert!(answer.allowed);
    assert!(peer_args(supervisor(&out)).is_empty());
    assert_eq!(env_value(supervisor(&out), "HABITAT_BOOTSTRAP_PEERS").unwrap()["value"], "");
    assert_eq!(env_value(supervisor(&out), "HABITAT_BOOTSTRAP_ORDINAL").unwrap()["value"], "0");
    assert_eq!(out["spec"]["initContainers"][0]["name"], "habitat-role");
}

#[tokio::test]
async fn parallel_pod_with_nobody_alive_peers_the_first_ordinal_and_warns() {
    let (answer, out, _, _) = admit(cluster_with(&[], true, &[]), &redis_pod_ordinal(2)).await;
    assert_eq!(peer_args(supervisor(&out)), vec![fqdn(0)]);
    assert!(answer.warnings.iter().any(|w| w.contains("no member is alive yet")), "{:?}", answer.warnings);
}

#[tokio::test]
async fn not_ready_members_count_only_when_the_service_publishes_them() {
    let live = [(0, true), (1, false)];
    let (answer, out, _, _) = admit(cluster_with(&live, false, &[]), &redis_pod()).await;
    assert_eq!(peer_args(supervisor(&out)), vec![fqdn(0)]);
    assert!(answer.warnings.iter().any(|w| w.contains("publishNotReadyAddresses")));
    let (_, out, _, _) = admit(cluster_with(&live, true, &[]), &redis_pod()).await;
    assert_eq!(peer_args(supervisor(&out)), vec![fqdn(0), fqdn(1)]);
}

#[tokio::test]
async fn terminating_and_foreign_pods_are_not_peers() {
    let mut cluster = cluster_with(&[(0, true), (1, true)], true, &[]);
    cluster.pods[1].metadata.deletion_timestamp =
        serde_json::from_value(json!("2026-01-01T00:00:00Z")).unwrap();
    let mut other = sibling("redis", NS, 5, true);
    other.metadata.owner_references.as_mut().unwrap()[0].uid = "another-uid".into();
    cluster.pods.push(other);
    let (_, out, _, _) = admit(cluster, &redis_pod()).await;
    assert_eq!(peer_args(supervisor(&out)), vec![fqdn(0)]);
}

#[tokio::test]
async fn mutating_an_injected_pod_again_changes_nothing() {
    let cluster = || cluster_with(&[(0, true), (1, true)], true, &[]);
    let (_, once, _, _) = admit(cluster(), &redis_pod()).await;
    let (answer, twice, _, _) = admit(cluster(), &once).await;
    assert_eq!(twice, once);
    assert!(answer.patch.is_none(), "{:?}", answer.patch);
    // And when the live members changed in between, the injection is re-rendered, not stacked.
    let (_, again, _, _) = admit(cluster_with(&[(0, true)], true, &[]), &once).await;
    assert_eq!(peer_args(supervisor(&again)), vec![fqdn(0)]);
    let names = env_names(supervisor(&again));
    assert_eq!(names.iter().filter(|n| *n == "HABITAT_BOOTSTRAP_PEERS").count(), 1);
    assert_eq!(again["spec"]["initContainers"].as_array().unwrap().len(), 1);
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
        let (answer, out, events, reads) = admit(cluster_with(&[(0, true)], true, &[]), &pod).await;
        assert!(answer.allowed && answer.patch.is_none() && answer.warnings.is_empty());
        assert_eq!(out, pod);
        assert_eq!(reads, 0, "no API call for a pod that is not ours");
        assert!(events.lock().unwrap().is_empty());
    }
    let mut cluster = cluster_with(&[], true, &[]);
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
    let mut cluster = cluster_with(&[], true, &[]);
    cluster.uncached_statefulsets = std::mem::take(&mut cluster.statefulsets);
    let (answer, out, _, reads) = admit(cluster, &labelled(redis_pod_ordinal(0))).await;
    assert!(answer.allowed);
    assert_eq!(out["spec"]["initContainers"][0]["name"], "habitat-role");
    assert_eq!(reads, 2, "one read of the StatefulSet, one of its pods");
}

#[tokio::test]
async fn ours_fail_closed_with_a_reason() {
    let mut unknown = cluster_with(&[], true, &[]);
    unknown.statefulsets.clear();
    let mut api_down_uncached = cluster_with(&[], true, &[]);
    api_down_uncached.statefulsets.clear();
    api_down_uncached.api_down = true;
    let mut api_down_cached = cluster_with(&[], true, &[]);
    api_down_cached.api_down = true;
    for (cluster, want) in [
        (unknown, "was not found"),
        (api_down_uncached, "cannot read StatefulSet default/redis"),
        (api_down_cached, "cannot list the pods of StatefulSet default/redis"),
    ] {
        let pod = labelled(redis_pod());
        let (answer, out, _, _) = admit(cluster, &pod).await;
        assert!(!answer.allowed, "{want}");
        assert!(answer.patch.is_none());
        assert!(answer.message.as_deref().unwrap().contains(want), "{:?}", answer.message);
        assert!(answer.message.as_deref().unwrap().contains("retries"), "{:?}", answer.message);
        assert_eq!(out, pod);
    }
}

#[tokio::test]
async fn label_without_annotation_is_explained() {
    let mut cluster = cluster_with(&[], true, &[]);
    cluster.statefulsets[0].metadata.annotations = None;
    let (answer, _, events, _) = admit(cluster, &labelled(redis_pod())).await;
    assert!(answer.allowed && answer.patch.is_none());
    assert!(answer.warnings[0].contains("is not annotated"), "{:?}", answer.warnings);
    assert_eq!(events.lock().unwrap()[0].reason, "InjectionSkipped");
}

#[tokio::test]
async fn dry_run_is_mutated_without_events() {
    let a = admission(cluster_with(&[(0, true)], true, &[]));
    let body = serde_json::to_vec(&review_of(&redis_pod(), "CREATE", true)).unwrap();
    let answer = decode(&a.review_pod(&body).await.unwrap());
    assert!(answer.patch.is_some());
    assert!(a.events.lock().unwrap().is_empty());
}

#[tokio::test]
async fn other_operations_and_kinds_pass_through() {
    let a = admission(cluster_with(&[(0, true)], true, &[]));
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
}

#[tokio::test]
async fn the_users_own_peer_and_env_win() {
    let mut pod = redis_pod();
    let args = pod["spec"]["containers"][0]["args"].as_array_mut().unwrap();
    args.extend([json!("--peer"), json!("seed.example.com")]);
    pod["spec"]["containers"][0]["env"]
        .as_array_mut()
        .unwrap()
        .push(json!({"name": "HABITAT_BOOTSTRAP_ORDINAL", "value": "mine"}));
    let (answer, out, _, _) = admit(cluster_with(&[(0, true)], true, &[]), &pod).await;
    assert_eq!(peer_args(supervisor(&out)), vec!["seed.example.com"]);
    assert!(answer.warnings.iter().any(|w| w.contains("already passes --peer")), "{:?}", answer.warnings);
    let ordinals: Vec<_> = supervisor(&out)["env"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["name"] == "HABITAT_BOOTSTRAP_ORDINAL")
        .collect();
    assert_eq!(ordinals, vec![&json!({"name": "HABITAT_BOOTSTRAP_ORDINAL", "value": "mine"})]);
}

#[tokio::test]
async fn options_from_annotations() {
    let no_sidecar = [("habitat/role-sidecar", "false")];
    let (_, out, _, _) = admit(cluster_with(&[(0, true)], true, &no_sidecar), &redis_pod()).await;
    assert!(out["spec"]["initContainers"].is_null());
    assert_eq!(peer_args(supervisor(&out)), vec![fqdn(0)]);

    let watch = [("habitat/peer-mode", "watch-file")];
    let (_, out, _, _) = admit(cluster_with(&[(0, true)], true, &watch), &redis_pod()).await;
    let args = supervisor(&out)["args"].as_array().unwrap();
    assert!(peer_args(supervisor(&out)).is_empty());
    assert_eq!(&args[args.len() - 2..], &[json!("--peer-watch-file"), json!("/habitat-bootstrap/peers")]);
    let sidecar_args = out["spec"]["initContainers"][0]["args"].to_string();
    for want in ["--peer-watch-file", "--statefulset", "\"app=redis\"", "--gossip-port"] {
        assert!(sidecar_args.contains(want), "{want} in {sidecar_args}");
    }
    assert!(
        out["spec"]["volumes"].as_array().unwrap().iter().any(|v| v["name"] == "habitat-bootstrap-peers")
    );

    let bad = [("habitat/peer-mode", "dns")];
    let (answer, _, events, _) = admit(cluster_with(&[], true, &bad), &redis_pod()).await;
    assert!(!answer.allowed);
    assert!(answer.message.unwrap().contains("habitat/peer-mode"));
    assert_eq!(events.lock().unwrap()[0].reason, "InjectionDenied");
}

#[tokio::test]
async fn warnings_explain_likely_mistakes() {
    let mut cluster = cluster_with(&[(0, true)], true, &[]);
    cluster.statefulsets[0].spec.as_mut().unwrap().replicas = Some(4);
    cluster.statefulsets[0].spec.as_mut().unwrap().pod_management_policy = Some("Parallel".into());
    cluster.services[0].spec.as_mut().unwrap().cluster_ip = Some("10.0.0.7".into());
    let (answer, _, _, _) = admit(cluster, &redis_pod()).await;
    for want in ["not headless", "4 replicas", "Parallel", "/hab/sup"] {
        assert!(answer.warnings.iter().any(|w| w.contains(want)), "{want}: {:?}", answer.warnings);
    }
    assert!(answer.warnings.iter().all(|w| w.len() <= 120), "{:?}", answer.warnings);

    let mut cluster = cluster_with(&[], true, &[]);
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
        (clash, "already has a container named \"habitat-role\""),
        (bad_name, "not <statefulset>-<ordinal>"),
        (huge_ordinal, "out of range"),
        (no_containers, "no containers"),
        (wrong_type, "cannot read the pod"),
    ] {
        let (answer, _, _, _) = admit(cluster_with(&[], true, &[]), &pod).await;
        assert!(!answer.allowed, "{want}");
        assert!(answer.message.as_deref().unwrap().contains(want), "{want}: {:?}", answer.message);
    }
}

#[tokio::test]
async fn custom_domain_and_gossip_port_reach_the_peer_names() {
    let mut a = admission(cluster_with(&[(0, true)], true, &[]));
    a.settings.cluster_domain = "corp.example".into();
    let mut pod = redis_pod();
    pod["spec"]["containers"][0]["args"]
        .as_array_mut()
        .unwrap()
        .extend([json!("--listen-gossip"), json!("0.0.0.0:9700")]);
    let answer =
        decode(&a.review_pod(&serde_json::to_vec(&review_of(&pod, "CREATE", false)).unwrap()).await.unwrap());
    let out = patched(&pod, &answer);
    assert_eq!(peer_args(supervisor(&out)), vec![format!("redis-0.{SVC}.{NS}.svc.corp.example:9700")]);
}

fn sts_review(sts: &Value, operation: &str) -> Vec<u8> {
    let mut review = review_of(sts, operation, false);
    review["request"]["kind"] = json!({"group": "apps", "version": "v1", "kind": "StatefulSet"});
    serde_json::to_vec(&review).unwrap()
}

#[tokio::test]
async fn statefulset_template_label_follows_the_annotation() {
    let a = admission(MemoryCluster::default());
    let mut sts = serde_json::to_value(statefulset("redis", NS, SVC, 3, &[])).unwrap();
    sts["kind"] = json!("StatefulSet");
    sts["spec"]["template"] =
        json!({"metadata": {"labels": {"app": "redis"}}, "spec": {"containers": [{"name": "c"}]}});

    let answer = decode(&a.review_statefulset(&sts_review(&sts, "CREATE")).await.unwrap());
    let labelled = patched(&sts, &answer);
    assert_eq!(
        labelled["spec"]["template"]["metadata"]["labels"],
        json!({"app": "redis", "habitat/bootstrap": "true"})
    );
    assert!(answer.warnings.is_empty());
    let again = decode(&a.review_statefulset(&sts_review(&labelled, "UPDATE")).await.unwrap());
    assert!(again.patch.is_none());

    let mut opted_out = labelled.clone();
    opted_out["metadata"]["annotations"].as_object_mut().unwrap().remove("habitat/bootstrap");
    let answer = decode(&a.review_statefulset(&sts_review(&opted_out, "UPDATE")).await.unwrap());
    assert_eq!(
        patched(&opted_out, &answer)["spec"]["template"]["metadata"]["labels"],
        json!({"app": "redis"})
    );
    assert!(answer.warnings[0].contains("replaced"), "{:?}", answer.warnings);

    let mut bad = sts.clone();
    bad["metadata"]["annotations"]["habitat/role-sidecar"] = json!("maybe");
    let answer = decode(&a.review_statefulset(&sts_review(&bad, "CREATE")).await.unwrap());
    assert!(!answer.allowed);
    assert!(answer.message.unwrap().contains("habitat/role-sidecar"));
}

#[tokio::test]
async fn a_service_account_that_cannot_label_is_warned_about() {
    let mut cluster = cluster_with(&[(0, true)], true, &[]);
    cluster.sidecar_can_label = Some(false);
    let (answer, _, _, _) = admit(cluster, &redis_pod()).await;
    assert!(
        answer.warnings.iter().any(|w| w.contains("ServiceAccount \"redis\" may not patch pods")),
        "{:?}",
        answer.warnings
    );
    for allowed in [Some(true), None] {
        let mut cluster = cluster_with(&[(0, true)], true, &[]);
        cluster.sidecar_can_label = allowed;
        let (answer, _, _, _) = admit(cluster, &redis_pod()).await;
        assert!(!answer.warnings.iter().any(|w| w.contains("may not patch")), "{:?}", answer.warnings);
    }
}

#[tokio::test]
async fn watch_file_mode_holds_the_supervisor_until_the_file_is_synced() {
    let watch = [("habitat/peer-mode", "watch-file")];
    let (_, out, _, _) = admit(cluster_with(&[(0, true)], true, &watch), &redis_pod()).await;
    let probe = &out["spec"]["initContainers"][0]["startupProbe"];
    assert_eq!(probe["httpGet"]["path"], "/readyz");
    let (_, out, _, _) = admit(cluster_with(&[(0, true)], true, &[]), &redis_pod()).await;
    assert!(out["spec"]["initContainers"][0]["startupProbe"].is_null());
}

#[tokio::test]
async fn a_real_reinvocation_review_changes_nothing() {
    let review: Value =
        serde_json::from_str(include_str!("fixtures/admission/captured-reinvocation-redis-1.json")).unwrap();
    let object = &review["request"]["object"];
    let mut sts = statefulset("redis", "e2e-reinvoke", "redis", 2, &[]);
    sts.metadata.uid = object["metadata"]["ownerReferences"][0]["uid"].as_str().map(str::to_owned);
    let mut redis_0 = sibling("redis", "e2e-reinvoke", 0, true);
    redis_0.metadata.owner_references.as_mut().unwrap()[0].uid = sts.metadata.uid.clone().unwrap();
    let cluster = MemoryCluster {
        statefulsets: vec![sts],
        services: vec![headless_service("redis", "e2e-reinvoke", true)],
        pods: vec![redis_0],
        ..Default::default()
    };
    let mut a = admission(cluster);
    a.settings.cluster_domain = "hab.test".into();
    a.settings.sidecar_image = "hab-bootstrap:e2e".into();
    let answer = decode(&a.review_pod(&serde_json::to_vec(&review).unwrap()).await.unwrap());
    assert!(answer.allowed);
    assert_eq!(answer.uid, review["request"]["uid"]);
    assert!(answer.patch.is_none(), "{:?}", answer.patch);
}

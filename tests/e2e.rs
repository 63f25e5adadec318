//! End-to-end scenarios against a real control plane (scripts/test starts it). One test runs them
//! in order because they share one webhook process and its registration, and scenario 5 stops it.
//! Admission lists no pods: every pod gets the peer watch file, the sidecar, the Supervisor's state
//! shared with it and (for a StatefulSet created under the webhook) a ring key from a Secret the
//! webhook creates; the scenarios check that on the stored objects.

mod support;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use base64::Engine;
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::core::v1::{Container, Event as CoreEvent, Pod, Secret, Service};
use k8s_openapi::api::events::v1::Event;
use kube::Client;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use serde_json::json;
use support::harness::*;
use support::injected::*;
use support::objects;

const ROLLOUT: Duration = Duration::from_secs(90);

fn fqdn(sts: &str, ordinal: u32, service: &str, ns: &str) -> String {
    format!("{sts}-{ordinal}.{service}.{ns}.svc.{CLUSTER_DOMAIN}")
}

/// The StatefulSet's stamped annotation, the pod's `HAB_RING_KEY` from that Secret, and the Secret
/// in the API server: key `ring-key` holding a Habitat symmetric key (SYM-SEC-1), owned by the
/// StatefulSet (deleted with it). Returns the Secret.
async fn assert_ring_key(client: &Client, ns: &str, sts: &str, pod: &Pod) -> Secret {
    let secret_name = format!("{sts}-habitat-ring");
    let stored = Api::<StatefulSet>::namespaced(client.clone(), ns).get(sts).await.unwrap();
    let annotations = stored.metadata.annotations.clone().unwrap_or_default();
    assert_eq!(annotations.get("habitat/ring-key-secret"), Some(&secret_name), "stamped at creation");
    let name = pod.metadata.name.as_deref().unwrap();
    assert_eq!(ring_key_ref(pod), Some((secret_name.clone(), "ring-key".to_owned())), "{name}");
    let secret = Api::<Secret>::namespaced(client.clone(), ns).get(&secret_name).await.unwrap();
    let data = secret.data.as_ref().unwrap();
    let contents = String::from_utf8(data["ring-key"].0.clone()).unwrap();
    let lines: Vec<&str> = contents.split('\n').collect();
    assert_eq!(lines.len(), 4, "{contents:?}");
    assert_eq!(lines[0], "SYM-SEC-1");
    let revision = lines[1].strip_prefix(&format!("{sts}-")).unwrap_or_else(|| panic!("{contents:?}"));
    assert!(revision.len() == 14 && revision.bytes().all(|b| b.is_ascii_digit()), "{contents:?}");
    assert_eq!(lines[2], "");
    let key = base64::engine::general_purpose::STANDARD.decode(lines[3]).unwrap();
    assert_eq!(key.len(), 32);
    let owners = secret.metadata.owner_references.clone().unwrap_or_default();
    assert_eq!(owners.len(), 1, "{owners:?}");
    assert_eq!((owners[0].kind.as_str(), owners[0].name.as_str()), ("StatefulSet", sts));
    assert_eq!(Some(&owners[0].uid), stored.metadata.uid.as_ref());
    secret
}

async fn secret_names(client: &Client, ns: &str) -> Vec<String> {
    let list = Api::<Secret>::namespaced(client.clone(), ns).list(&ListParams::default()).await.unwrap();
    list.items.into_iter().filter_map(|s| s.metadata.name).collect()
}

/// Waits until exactly `ordinals` exist for `sts`, all Ready (kwok plays the kubelet), and returns them.
async fn wait_ready(pods: &Api<Pod>, sts: &str, ordinals: &[u32]) -> BTreeMap<u32, Pod> {
    let want: Vec<String> = ordinals.iter().map(|o| format!("{sts}-{o}")).collect();
    eventually(ROLLOUT, &format!("pods {want:?} Ready"), || async {
        let list = pods.list(&ListParams::default().labels(&format!("app={sts}"))).await.ok()?;
        let live: Vec<&Pod> = list.items.iter().filter(|p| p.metadata.deletion_timestamp.is_none()).collect();
        let mut names: Vec<String> = live.iter().map(|p| p.metadata.name.clone().unwrap()).collect();
        names.sort();
        let mut sorted_want = want.clone();
        sorted_want.sort();
        (names == sorted_want && live.iter().all(|p| is_ready(p))).then(|| {
            live.iter()
                .map(|p| {
                    let ordinal =
                        p.metadata.name.as_ref().unwrap().rsplit('-').next().unwrap().parse().unwrap();
                    (ordinal, (*p).clone())
                })
                .collect()
        })
    })
    .await
}

async fn create_statefulset(client: &Client, ns: &str, sts: &StatefulSet, service: &Service) {
    Api::<Service>::namespaced(client.clone(), ns).create(&PostParams::default(), service).await.unwrap();
    Api::<StatefulSet>::namespaced(client.clone(), ns).create(&PostParams::default(), sts).await.unwrap();
}

/// As `kubectl scale` does, through the scale subresource.
async fn scale(client: &Client, ns: &str, sts: &str, replicas: i32) {
    let api = Api::<StatefulSet>::namespaced(client.clone(), ns);
    api.patch_scale(sts, &PatchParams::default(), &Patch::Merge(json!({"spec": {"replicas": replicas}})))
        .await
        .unwrap();
}

/// Deletes a pod and waits for the StatefulSet controller to replace it (a new uid).
async fn recreate(pods: &Api<Pod>, name: &str) -> Pod {
    let old = pods.get(name).await.unwrap().metadata.uid;
    pods.delete(name, &DeleteParams { grace_period_seconds: Some(0), ..Default::default() }).await.unwrap();
    eventually(ROLLOUT, &format!("{name} recreated and Ready"), || async {
        let p = pods.get_opt(name).await.ok()??;
        (p.metadata.uid != old && p.metadata.deletion_timestamp.is_none() && is_ready(&p)).then_some(p)
    })
    .await
}

#[tokio::test]
#[ignore = "needs a control plane: run scripts/test"]
async fn e2e_scenarios() {
    if !enabled() {
        return;
    }
    let client = client().await;
    let mut webhook = start_webhook(&client).await;
    let started = Instant::now();
    s1_to_s3_rollout_recreate_scale(&client).await;
    eprintln!("scenarios 1-3 passed");
    s4_others_untouched(&client).await;
    eprintln!("scenario 4 passed");
    s5_webhook_down(&client, &mut webhook).await;
    eprintln!("scenario 5 passed");
    s6_namespace_domain_ordinals_service(&client).await;
    eprintln!("scenario 6 passed");
    s7_dry_run(&client).await;
    eprintln!("scenario 7 passed");
    s8_restricted_pod_security(&client).await;
    eprintln!("scenario 8 passed");
    s9_reinvocation(&client, &webhook).await;
    eprintln!("scenario 9 passed");
    s10_ring_key_not_created(&client).await;
    eprintln!("scenario 10 passed");
    s11_guaranteed_qos(&client).await;
    eprintln!("scenario 11 passed");
    s12_a_token_for_the_sidecar_alone(&client).await;
    eprintln!("scenario 12 passed");
    report_admission_latency(&client, &webhook, started.elapsed()).await;
    // Other test binaries share this control plane: leave no webhook registered that nobody serves.
    Api::<k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration>::all(client.clone())
        .delete("hab-bootstrap", &DeleteParams::default())
        .await
        .unwrap();
    webhook.stop();
}

/// 1: a first ordered rollout: the StatefulSet is stamped with its ring key at creation, the
/// webhook creates that Secret, every pod gets the watch file, the sidecar, the shared state and
/// the key; 2: pod 0 recreated while 1 and 2 live gets the same, with the same key; 3: scale
/// 3 → 5 → 1, and a lone pod 0 recreated: the same again (admission never depends on who is alive).
async fn s1_to_s3_rollout_recreate_scale(client: &Client) {
    let ns = namespace(client, "e2e-rollout").await;
    let sts = objects::statefulset("redis", "redis", 3, &[("habitat/bootstrap", "true")]);
    create_statefulset(client, &ns, &sts, &objects::headless_service("redis", "redis")).await;
    let pods = Api::<Pod>::namespaced(client.clone(), &ns);

    let ready = wait_ready(&pods, "redis", &[0, 1, 2]).await;
    let mut secret = None;
    for (ordinal, pod) in &ready {
        assert_injected(pod);
        secret = Some(assert_ring_key(client, &ns, "redis", pod).await);
        assert_eq!(env(pod, "HABITAT_BOOTSTRAP_ORDINAL"), Some(ordinal.to_string()));
        assert_eq!(
            env(pod, "HABITAT_BOOTSTRAP_SERVICE_FQDN"),
            Some(format!("redis.{ns}.svc.{CLUSTER_DOMAIN}"))
        );
        assert_eq!(env(pod, "HABITAT_BOOTSTRAP_POD_FQDN"), Some(fqdn("redis", *ordinal, "redis", &ns)));
        // The template label was stamped by the StatefulSet webhook.
        assert_eq!(pod.metadata.labels.as_ref().unwrap()["habitat/bootstrap"], "true");
        // The sidecar keeps the file from this StatefulSet's pods, on the default gossip port.
        assert_eq!(flag(sidecar(pod), "--statefulset").as_deref(), Some("redis"));
        assert_eq!(flag(sidecar(pod), "--pod-selector").as_deref(), Some("app=redis"));
        assert_eq!(flag(sidecar(pod), "--gossip-port").as_deref(), Some("9638"));
        assert_eq!(flag(sidecar(pod), "--ctl-gateway").as_deref(), Some("127.0.0.1:9632"));
    }
    let secret = secret.unwrap();
    // One Secret for the ring, whatever the number of pods.
    assert_eq!(secret_names(client, &ns).await, ["redis-habitat-ring"]);
    let events = Api::<Event>::namespaced(client.clone(), &ns);
    let injected = eventually(Duration::from_secs(20), "Injected events", || async {
        let list = events.list(&ListParams::default()).await.ok()?;
        let n = list.items.iter().filter(|e| e.reason.as_deref() == Some("Injected")).count();
        (n >= 3).then_some(list.items)
    })
    .await;
    for ordinal in 0..3 {
        let prefix = format!("redis-{ordinal}: peers from the watch file, ring key;");
        assert!(
            injected.iter().any(|e| e.note.as_deref().unwrap_or_default().starts_with(&prefix)),
            "{prefix}"
        );
    }
    let ours = |e: &&Event| e.reporting_controller.as_deref().unwrap_or_default().contains("hab-bootstrap");
    let warnings: Vec<_> =
        injected.iter().filter(ours).filter(|e| e.type_.as_deref() == Some("Warning")).collect();
    assert!(warnings.is_empty(), "no warning Event of ours: {warnings:?}");

    // 2: pod 0 comes back with a new identity: the same injection, the same key.
    let pod0 = recreate(&pods, "redis-0").await;
    assert_injected(&pod0);
    let again = assert_ring_key(client, &ns, "redis", &pod0).await;
    assert_eq!((again.metadata.uid, again.data), (secret.metadata.uid.clone(), secret.data.clone()));

    // 3: scale up, then down to one, and recreate that lone pod 0.
    scale(client, &ns, "redis", 5).await;
    let ready = wait_ready(&pods, "redis", &[0, 1, 2, 3, 4]).await;
    for pod in [&ready[&3], &ready[&4]] {
        assert_injected(pod);
        assert_ring_key(client, &ns, "redis", pod).await;
    }
    scale(client, &ns, "redis", 1).await;
    wait_ready(&pods, "redis", &[0]).await;
    let pod0 = recreate(&pods, "redis-0").await;
    assert_injected(&pod0);
    let again = assert_ring_key(client, &ns, "redis", &pod0).await;
    assert_eq!(again.metadata.uid, secret.metadata.uid, "the ring keeps its key");
    assert_eq!(secret_names(client, &ns).await, ["redis-habitat-ring"]);
}

/// 4: a StatefulSet without the annotation and a Deployment are left alone.
async fn s4_others_untouched(client: &Client) {
    let ns = namespace(client, "e2e-others").await;
    let sts = objects::statefulset("plain", "plain", 2, &[]);
    create_statefulset(client, &ns, &sts, &objects::headless_service("plain", "plain")).await;
    create_deployment(client, &ns, "web", 2).await;
    let pods = Api::<Pod>::namespaced(client.clone(), &ns);
    for pod in wait_ready(&pods, "plain", &[0, 1]).await.values() {
        assert_untouched(pod);
        assert!(!pod.metadata.labels.as_ref().unwrap().contains_key("habitat/bootstrap"));
    }
    let web = eventually(ROLLOUT, "deployment pods", || async {
        let list = pods.list(&ListParams::default().labels("app=web")).await.ok()?;
        (list.items.len() == 2).then_some(list.items)
    })
    .await;
    web.iter().for_each(assert_untouched);
}

async fn create_deployment(client: &Client, ns: &str, name: &str, replicas: i32) {
    let deployment: Deployment = serde_json::from_value(json!({
        "metadata": {"name": name},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"containers": [{"name": "web", "image": "nginx:e2e", "args": ["sup", "run", "core/nginx"]}]}
            }
        }
    }))
    .unwrap();
    Api::<Deployment>::namespaced(client.clone(), ns)
        .create(&PostParams::default(), &deployment)
        .await
        .unwrap();
}

/// 5: with the webhook down, an opted-in StatefulSet's new pod is refused with the webhook's name
/// in the reason, every other pod is created; once it is back, the pod is created, injected.
async fn s5_webhook_down(client: &Client, webhook: &mut Webhook) {
    let ns = namespace(client, "e2e-down").await;
    let sts = objects::statefulset("redis", "redis", 1, &[("habitat/bootstrap", "true")]);
    create_statefulset(client, &ns, &sts, &objects::headless_service("redis", "redis")).await;
    let pods = Api::<Pod>::namespaced(client.clone(), &ns);
    wait_ready(&pods, "redis", &[0]).await;

    webhook.stop();
    // Changing an opted-in, already labelled StatefulSet does not need us.
    let statefulsets = Api::<StatefulSet>::namespaced(client.clone(), &ns);
    let bump = json!({"spec": {"replicas": 2}});
    statefulsets.patch("redis", &PatchParams::default(), &Patch::Merge(bump)).await.unwrap();
    let plain = objects::statefulset("plain", "plain", 1, &[]);
    create_statefulset(client, &ns, &plain, &objects::headless_service("plain", "plain")).await;
    create_deployment(client, &ns, "web", 1).await;
    wait_ready(&pods, "plain", &[0]).await;
    eventually(ROLLOUT, "the deployment's pod", || async {
        let list = pods.list(&ListParams::default().labels("app=web")).await.ok()?;
        (list.items.len() == 1).then_some(())
    })
    .await;
    let events = Api::<CoreEvent>::namespaced(client.clone(), &ns);
    let refusal = eventually(ROLLOUT, "a FailedCreate event naming our webhook", || async {
        let list = events.list(&ListParams::default()).await.ok()?;
        list.items.into_iter().find_map(|e| {
            let message = e.message.unwrap_or_default();
            (e.reason.as_deref() == Some("FailedCreate") && message.contains("pods.hab-bootstrap.habitat.sh"))
                .then_some(message)
        })
    })
    .await;
    eprintln!("refusal while the webhook is down: {refusal}");
    assert!(pods.get_opt("redis-1").await.unwrap().is_none(), "redis-1 must not start uninjected");
    // An opted-in StatefulSet cannot even be created or changed meanwhile: that too is refused.
    let another = objects::statefulset("other", "other", 1, &[("habitat/bootstrap", "true")]);
    let err = statefulsets.create(&PostParams::default(), &another).await.unwrap_err();
    assert!(err.to_string().contains("statefulsets.hab-bootstrap.habitat.sh"), "{err}");

    webhook.start();
    let ready = wait_ready(&pods, "redis", &[0, 1]).await;
    assert_injected(&ready[&1]);
    assert_ring_key(client, &ns, "redis", &ready[&1]).await;
}

/// 6: another namespace, `spec.ordinals.start: 5`, a serviceName unlike the StatefulSet's name,
/// gossip and control gateway ports of its own, no volume for /hab/sup, and no ring key (annotated
/// `none`); the custom cluster domain is the webhook's setting in every scenario.
async fn s6_namespace_domain_ordinals_service(client: &Client) {
    let ns = namespace(client, "e2e-custom").await;
    let annotations = [("habitat/bootstrap", "true"), ("habitat/ring-key-secret", "none")];
    let mut sts = objects::statefulset_json("ring", "members", 3, &annotations);
    sts["spec"]["ordinals"] = json!({"start": 5});
    let container = &mut sts["spec"]["template"]["spec"]["containers"][0];
    container["args"] = json!([
        "sup",
        "run",
        "core/redis",
        "--listen-gossip",
        "0.0.0.0:9700",
        "--listen-ctl",
        "127.0.0.1:9800"
    ]);
    container.as_object_mut().unwrap().remove("volumeMounts");
    sts["spec"]["template"]["spec"].as_object_mut().unwrap().remove("volumes");
    let sts: StatefulSet = serde_json::from_value(sts).unwrap();
    create_statefulset(client, &ns, &sts, &objects::headless_service("members", "ring")).await;
    let pods = Api::<Pod>::namespaced(client.clone(), &ns);
    let ready = wait_ready(&pods, "ring", &[5, 6, 7]).await;
    for (ordinal, pod) in &ready {
        assert_injected(pod);
        assert_eq!(env(pod, "HABITAT_BOOTSTRAP_POD_FQDN"), Some(fqdn("ring", *ordinal, "members", &ns)));
        assert_eq!(env(pod, "HABITAT_BOOTSTRAP_ORDINAL"), Some(ordinal.to_string()));
        assert_eq!(flag(sidecar(pod), "--gossip-port").as_deref(), Some("9700"));
        assert_eq!(flag(sidecar(pod), "--ctl-gateway").as_deref(), Some("127.0.0.1:9800"));
        // Nothing of the user's at /hab/sup: ours, an emptyDir, shared with the sidecar.
        let state = pod
            .spec
            .as_ref()
            .unwrap()
            .volumes
            .iter()
            .flatten()
            .find(|v| v.name == "habitat-supervisor-state");
        assert!(state.and_then(|v| v.empty_dir.as_ref()).is_some(), "{ordinal}: {:?}", volume_names(pod));
        // `none`: no key, no Secret.
        assert_eq!(ring_key_ref(pod), None);
    }
    let stored = Api::<StatefulSet>::namespaced(client.clone(), &ns).get("ring").await.unwrap();
    assert_eq!(stored.metadata.annotations.unwrap()["habitat/ring-key-secret"], "none");
    assert!(secret_names(client, &ns).await.iter().all(|s| !s.ends_with("-habitat-ring")));
}

/// 7: a server-side dry-run create is mutated (the ring key named) but creates no Secret and
/// leaves no Event behind; the real create that follows creates the Secret.
async fn s7_dry_run(client: &Client) {
    let ns = namespace(client, "e2e-dryrun").await;
    // No replicas yet: nothing has created the ring key's Secret.
    let sts = objects::statefulset("redis", "redis", 0, &[("habitat/bootstrap", "true")]);
    create_statefulset(client, &ns, &sts, &objects::headless_service("redis", "redis")).await;
    let statefulsets = Api::<StatefulSet>::namespaced(client.clone(), &ns);
    let stored = statefulsets.get("redis").await.unwrap();
    assert_eq!(
        stored.metadata.annotations.as_ref().unwrap()["habitat/ring-key-secret"],
        "redis-habitat-ring"
    );
    let pods = Api::<Pod>::namespaced(client.clone(), &ns);

    // What the controller would send for ordinal 0, by hand, as a dry run.
    let template = stored.spec.as_ref().unwrap().template.clone();
    let mut labels = template.metadata.as_ref().unwrap().labels.clone().unwrap();
    labels.insert("statefulset.kubernetes.io/pod-name".into(), "redis-0".into());
    labels.insert("apps.kubernetes.io/pod-index".into(), "0".into());
    let mut spec = serde_json::to_value(&template.spec).unwrap();
    spec["hostname"] = json!("redis-0");
    spec["subdomain"] = json!("redis");
    let pod: Pod = serde_json::from_value(json!({
        "metadata": {
            "name": "redis-0",
            "labels": labels,
            "ownerReferences": [{"apiVersion": "apps/v1", "kind": "StatefulSet", "name": "redis",
                                 "uid": stored.metadata.uid, "controller": true, "blockOwnerDeletion": true}],
        },
        "spec": spec,
    }))
    .unwrap();
    let created = pods.create(&PostParams { dry_run: true, ..Default::default() }, &pod).await.unwrap();
    assert_injected(&created);
    assert_eq!(ring_key_ref(&created), Some(("redis-habitat-ring".to_owned(), "ring-key".to_owned())));
    assert!(pods.get_opt("redis-0").await.unwrap().is_none());
    assert!(secret_names(client, &ns).await.is_empty(), "a dry run creates no Secret");
    tokio::time::sleep(Duration::from_secs(2)).await;
    let events = Api::<Event>::namespaced(client.clone(), &ns).list(&ListParams::default()).await.unwrap();
    assert!(events.items.is_empty(), "a dry run leaves no Event: {:?}", events.items);

    // The real pod: now the Secret exists.
    scale(client, &ns, "redis", 1).await;
    let ready = wait_ready(&pods, "redis", &[0]).await;
    assert_ring_key(client, &ns, "redis", &ready[&0]).await;
}

/// 8: a namespace enforcing the "restricted" Pod Security profile admits our sidecar, which runs as
/// the Supervisor's user (42) to share its files.
async fn s8_restricted_pod_security(client: &Client) {
    let labels = json!({"pod-security.kubernetes.io/enforce": "restricted", "pod-security.kubernetes.io/enforce-version": "latest"});
    let ns = namespace_with(client, "e2e-restricted", labels).await;
    let mut sts = objects::statefulset_json("secure", "secure", 2, &[("habitat/bootstrap", "true")]);
    sts["spec"]["template"]["spec"]["securityContext"] =
        json!({"runAsNonRoot": true, "runAsUser": 42, "seccompProfile": {"type": "RuntimeDefault"}});
    sts["spec"]["template"]["spec"]["containers"][0]["securityContext"] =
        json!({"allowPrivilegeEscalation": false, "capabilities": {"drop": ["ALL"]}});
    let sts: StatefulSet = serde_json::from_value(sts).unwrap();
    create_statefulset(client, &ns, &sts, &objects::headless_service("secure", "secure")).await;
    let pods = Api::<Pod>::namespaced(client.clone(), &ns);
    let ready = wait_ready(&pods, "secure", &[0, 1]).await;
    for pod in ready.values() {
        assert_injected(pod);
        let security = sidecar(pod).security_context.clone().unwrap();
        assert_eq!((security.run_as_user, security.run_as_non_root), (Some(42), Some(true)));
    }
}

/// 10: the ring key's Secret cannot be created (a quota of no Secrets): each pod is refused with
/// the reason, recorded as an InjectionDenied Event on the StatefulSet (and no Injected one);
/// annotated `habitat/ring-key-secret: none`, the pods start without a key.
async fn s10_ring_key_not_created(client: &Client) {
    use k8s_openapi::api::core::v1::ResourceQuota;
    let ns = namespace(client, "e2e-no-secrets").await;
    let quota: ResourceQuota = serde_json::from_value(
        json!({"metadata": {"name": "no-secrets"}, "spec": {"hard": {"secrets": "0"}}}),
    )
    .unwrap();
    Api::<ResourceQuota>::namespaced(client.clone(), &ns)
        .create(&PostParams::default(), &quota)
        .await
        .unwrap();
    let sts = objects::statefulset("redis", "redis", 1, &[("habitat/bootstrap", "true")]);
    create_statefulset(client, &ns, &sts, &objects::headless_service("redis", "redis")).await;
    let core_events = Api::<CoreEvent>::namespaced(client.clone(), &ns);
    let refusal = eventually(ROLLOUT, "a FailedCreate event naming the Secret", || async {
        let list = core_events.list(&ListParams::default()).await.ok()?;
        list.items.into_iter().find_map(|e| {
            let message = e.message.unwrap_or_default();
            (e.reason.as_deref() == Some("FailedCreate")
                && message.contains(&format!("cannot create Secret {ns}/redis-habitat-ring")))
            .then_some(message)
        })
    })
    .await;
    eprintln!("refusal without the ring key's Secret: {refusal}");
    assert!(refusal.contains("habitat/ring-key-secret=none"), "{refusal}");
    let events = Api::<Event>::namespaced(client.clone(), &ns);
    let denied = eventually(Duration::from_secs(20), "an InjectionDenied Event", || async {
        let list = events.list(&ListParams::default()).await.ok()?;
        list.items.into_iter().find(|e| e.reason.as_deref() == Some("InjectionDenied"))
    })
    .await;
    assert_eq!(denied.type_.as_deref(), Some("Warning"));
    assert_eq!(denied.regarding.as_ref().and_then(|r| r.name.as_deref()), Some("redis"));
    let note = denied.note.unwrap_or_default();
    assert!(note.starts_with("redis-0: cannot create Secret"), "{note}");
    let pods = Api::<Pod>::namespaced(client.clone(), &ns);
    assert!(pods.get_opt("redis-0").await.unwrap().is_none(), "refused, not started without its key");
    let all = events.list(&ListParams::default()).await.unwrap().items;
    assert!(!all.iter().any(|e| e.reason.as_deref() == Some("Injected")), "a refused pod is not 'Injected'");

    let none = json!({"metadata": {"annotations": {"habitat/ring-key-secret": "none"}}});
    Api::<StatefulSet>::namespaced(client.clone(), &ns)
        .patch("redis", &PatchParams::default(), &Patch::Merge(none))
        .await
        .unwrap();
    let ready = wait_ready(&pods, "redis", &[0]).await;
    assert_injected(&ready[&0]);
    assert_eq!(ring_key_ref(&ready[&0]), None);
}

const TOKEN_PATH: &str = "/var/run/secrets/kubernetes.io/serviceaccount";

fn token_mount(container: &Container) -> Option<&str> {
    container.volume_mounts.iter().flatten().find(|m| m.mount_path == TOKEN_PATH).map(|m| m.name.as_str())
}

/// 12: pods that opt out of the token mount, on the pod template or on their ServiceAccount, are
/// stored with a projected token volume that only the sidecar mounts; a pod that keeps the mount
/// shares it with the sidecar.
async fn s12_a_token_for_the_sidecar_alone(client: &Client) {
    use k8s_openapi::api::core::v1::ServiceAccount;
    let ns = namespace(client, "e2e-token").await;
    let no_automount: ServiceAccount =
        serde_json::from_value(json!({"metadata": {"name": "quiet"}, "automountServiceAccountToken": false}))
            .unwrap();
    Api::<ServiceAccount>::namespaced(client.clone(), &ns)
        .create(&PostParams::default(), &no_automount)
        .await
        .unwrap();
    let annotations = [("habitat/bootstrap", "true"), ("habitat/ring-key-secret", "none")];
    let mut pod_level = objects::statefulset_json("podlevel", "podlevel", 1, &annotations);
    pod_level["spec"]["template"]["spec"]["automountServiceAccountToken"] = json!(false);
    let mut account_level = objects::statefulset_json("salevel", "salevel", 1, &annotations);
    account_level["spec"]["template"]["spec"]["serviceAccountName"] = json!("quiet");
    let shared = objects::statefulset_json("shared", "shared", 1, &annotations);
    for sts in [pod_level, account_level, shared] {
        let name = sts["metadata"]["name"].as_str().unwrap().to_owned();
        let sts: StatefulSet = serde_json::from_value(sts).unwrap();
        create_statefulset(client, &ns, &sts, &objects::headless_service(&name, &name)).await;
    }
    let pods = Api::<Pod>::namespaced(client.clone(), &ns);
    for sts in ["podlevel", "salevel"] {
        let pod = &wait_ready(&pods, sts, &[0]).await[&0];
        assert_injected(pod);
        assert_eq!(token_mount(sidecar(pod)), Some("habitat-role-api-access"), "{sts}");
        assert_eq!(token_mount(supervisor(pod)), None, "{sts}: the Supervisor's container has no token");
        let volume =
            pod.spec.as_ref().unwrap().volumes.iter().flatten().find(|v| v.name == "habitat-role-api-access");
        let sources = volume.and_then(|v| v.projected.clone()).and_then(|p| p.sources).unwrap_or_default();
        assert!(sources.iter().any(|s| s.service_account_token.is_some()), "{sts}: {sources:?}");
        assert!(
            !volume_names(pod).iter().any(|v| v.starts_with("kube-api-access")),
            "{sts}: {:?}",
            volume_names(pod)
        );
    }
    let pod = &wait_ready(&pods, "shared", &[0]).await[&0];
    let mount = token_mount(supervisor(pod)).unwrap();
    assert!(mount.starts_with("kube-api-access-"), "{mount}");
    assert_eq!(token_mount(sidecar(pod)), Some(mount));
    assert!(!volume_names(pod).contains(&"habitat-role-api-access".to_owned()));
}

/// 9: another mutating webhook after ours changes the pod, so the API server calls ours again
/// (reinvocationPolicy: IfNeeded): the stored pod has each injected item exactly once.
async fn s9_reinvocation(client: &Client, webhook: &Webhook) {
    let ns = namespace(client, "e2e-reinvoke").await;
    let other = other_webhook::start(webhook).await;
    other_webhook::register(client, webhook, other.port, &ns).await;
    let sts = objects::statefulset("redis", "redis", 2, &[("habitat/bootstrap", "true")]);
    create_statefulset(client, &ns, &sts, &objects::headless_service("redis", "redis")).await;
    let pods = Api::<Pod>::namespaced(client.clone(), &ns);
    let ready = wait_ready(&pods, "redis", &[0, 1]).await;
    let pod = &ready[&1];
    let names: Vec<&str> = supervisor(pod).env.iter().flatten().map(|e| e.name.as_str()).collect();
    assert_eq!(names.iter().filter(|n| **n == "OTHER_WEBHOOK").count(), 1, "{names:?}");
    for ours in ["HAB_RING_KEY", "HABITAT_BOOTSTRAP_ORDINAL", "HABITAT_BOOTSTRAP_POD_IP"] {
        assert_eq!(names.iter().filter(|n| **n == ours).count(), 1, "{ours} in {names:?}");
    }
    assert_injected(pod);
    let sup = args(supervisor(pod));
    assert_eq!(sup.iter().filter(|a| *a == "--peer-watch-file").count(), 1, "{sup:?}");
    assert!(other.calls() >= 2, "the other webhook was called for both pods");
    // Each pod was admitted twice by us, and the second time changed nothing.
    let unchanged = webhook
        .metrics()
        .lines()
        .find(|l| {
            l.starts_with("hab_bootstrap_admission_requests_total")
                && l.contains("outcome=\"unchanged\"")
                && l.contains("webhook=\"pods\"")
        })
        .and_then(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .unwrap_or(0);
    assert!(unchanged >= 2, "reinvocations answered without a patch: {unchanged}");
    Api::<k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration>::all(client.clone())
        .delete("zz-other", &DeleteParams::default())
        .await
        .unwrap();
}

mod other_webhook {
    //! A second mutating webhook that adds an env var to the first container.
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use axum::routing::post;
    use base64::Engine;
    use serde_json::{Value, json};

    use crate::support::harness::{Webhook, register as register_config};

    pub struct Other {
        pub port: u16,
        calls: Arc<AtomicUsize>,
    }

    impl Other {
        pub fn calls(&self) -> usize {
            self.calls.load(Ordering::SeqCst)
        }
    }

    pub async fn start(ours: &Webhook) -> Other {
        let calls = Arc::new(AtomicUsize::new(0));
        let counter = Arc::clone(&calls);
        let app = axum::Router::new().route(
            "/mutate",
            post(move |axum::Json(review): axum::Json<Value>| {
                counter.fetch_add(1, Ordering::SeqCst);
                // HAB_BOOTSTRAP_E2E_CAPTURE=<file> keeps a real review from the API server, the
                // source of tests/fixtures/admission/captured-*.json.
                if let Ok(path) = std::env::var("HAB_BOOTSTRAP_E2E_CAPTURE") {
                    let _ = std::fs::write(path, serde_json::to_string_pretty(&review).unwrap());
                }
                async move {
                    let has_env = review["request"]["object"]["spec"]["containers"][0]["env"].is_array();
                    let patch = if has_env {
                        json!([{"op": "add", "path": "/spec/containers/0/env/-", "value": {"name": "OTHER_WEBHOOK", "value": "1"}}])
                    } else {
                        json!([{"op": "add", "path": "/spec/containers/0/env", "value": [{"name": "OTHER_WEBHOOK", "value": "1"}]}])
                    };
                    let patch = base64::engine::general_purpose::STANDARD.encode(patch.to_string());
                    axum::Json(json!({
                        "apiVersion": "admission.k8s.io/v1",
                        "kind": "AdmissionReview",
                        "response": {"uid": review["request"]["uid"], "allowed": true, "patchType": "JSONPatch", "patch": patch}
                    }))
                }
            }),
        );
        let certs = ours.cert_reloader();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(hab_bootstrap::webhook::server::serve_tls(
            listener,
            certs.server_config(None),
            app,
            std::future::pending(),
            std::time::Duration::from_secs(1),
        ));
        Other { port, calls }
    }

    /// Named to sort after ours, so it runs after us and our reinvocation follows its change.
    pub async fn register(client: &kube::Client, ours: &Webhook, port: u16, ns: &str) {
        let file = std::env::temp_dir().join(format!("zz-other-{}.yaml", std::process::id()));
        let config = format!(
            r#"apiVersion: admissionregistration.k8s.io/v1
kind: MutatingWebhookConfiguration
metadata: {{name: zz-other}}
webhooks:
  - name: other.e2e.example
    admissionReviewVersions: ["v1"]
    sideEffects: None
    failurePolicy: Fail
    timeoutSeconds: 5
    rules: [{{operations: ["CREATE"], apiGroups: [""], apiVersions: ["v1"], resources: ["pods"]}}]
    namespaceSelector: {{matchLabels: {{kubernetes.io/metadata.name: {ns}}}}}
    clientConfig: {{service: {{name: x, namespace: x, path: /mutate}}}}
"#
        );
        std::fs::write(&file, config).unwrap();
        register_config(client, &ours.ca_pem, port, "zz-other", &file).await;
        // Let the API server pick it up.
        tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    }
}

/// The API server's own measure of our webhook across the suite.
async fn report_admission_latency(client: &Client, webhook: &Webhook, suite: Duration) {
    let text = client.request_text(http::Request::get("/metrics").body(Vec::new()).unwrap()).await.unwrap();
    let ours: Vec<&str> = text
        .lines()
        .filter(|l| {
            l.starts_with("apiserver_admission_webhook_admission_duration_seconds")
                && l.contains("hab-bootstrap.habitat.sh")
        })
        .collect();
    let mut report = format!("suite took {:.1} s\n", suite.as_secs_f64());
    for name in ["pods.hab-bootstrap.habitat.sh", "statefulsets.hab-bootstrap.habitat.sh"] {
        let lines: Vec<&&str> = ours
            .iter()
            .filter(|l| l.contains(&format!("name=\"{name}\"")) && l.contains("rejected=\"false\""))
            .collect();
        let value = |suffix: &str| -> f64 {
            lines
                .iter()
                .filter(|l| l.contains(suffix))
                .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
                .sum()
        };
        let (sum, count) = (value("_sum{"), value("_count{"));
        let buckets: Vec<(f64, f64)> = lines
            .iter()
            .filter(|l| l.contains("_bucket{"))
            .filter_map(|l| {
                let le = l.split("le=\"").nth(1)?.split('"').next()?;
                Some((le.parse().unwrap_or(f64::INFINITY), l.rsplit(' ').next()?.parse().ok()?))
            })
            .collect();
        let quantile = |q: f64| {
            let mut by_le: BTreeMap<String, f64> = BTreeMap::new();
            for (le, n) in &buckets {
                *by_le.entry(format!("{le:020.6}")).or_default() += n;
            }
            by_le
                .iter()
                .find(|(_, n)| **n >= q * count)
                .map(|(le, _)| le.trim_start_matches('0').to_owned())
                .unwrap_or_default()
        };
        report += &format!(
            "apiserver_admission_webhook_admission_duration_seconds{{name={name}}}: {count} calls, mean {:.2} ms, p50 <= {} s, p99 <= {} s\n",
            if count > 0.0 { sum / count * 1000.0 } else { 0.0 },
            quantile(0.5),
            quantile(0.99)
        );
    }
    let metrics = webhook.metrics();
    let ours_requests: Vec<&str> =
        metrics.lines().filter(|l| l.starts_with("hab_bootstrap_admission_requests_total")).collect();
    report += &format!("webhook: {}\n", ours_requests.join("; "));
    eprintln!("{report}");
    if let Ok(path) = std::env::var("HAB_BOOTSTRAP_E2E_REPORT") {
        std::fs::write(path, report).unwrap();
    }
}

/// 11: the sidecar sized by annotation, requests equal to limits, keeps a pod whose own container
/// is Guaranteed Guaranteed, by the API server's own reckoning (`status.qosClass`); with the
/// webhook's default sizes it is Burstable. A limit below its request is refused when the
/// StatefulSet is applied, with the fix.
async fn s11_guaranteed_qos(client: &Client) {
    let ns = namespace(client, "e2e-qos").await;
    let sized = [
        ("habitat/bootstrap", "true"),
        ("habitat/sidecar-cpu-request", "50m"),
        ("habitat/sidecar-cpu-limit", "50m"),
        ("habitat/sidecar-memory-request", "32Mi"),
        ("habitat/sidecar-memory-limit", "32Mi"),
    ];
    let guaranteed_app = |name: &str, annotations: &[(&str, &str)]| -> StatefulSet {
        let mut sts = objects::statefulset_json(name, name, 1, annotations);
        sts["spec"]["template"]["spec"]["containers"][0]["resources"] =
            json!({"requests": {"cpu": "1", "memory": "1Gi"}, "limits": {"cpu": "1", "memory": "1Gi"}});
        serde_json::from_value(sts).unwrap()
    };
    for (name, annotations, want) in
        [("sized", &sized[..], "Guaranteed"), ("default", &[("habitat/bootstrap", "true")][..], "Burstable")]
    {
        let sts = guaranteed_app(name, annotations);
        create_statefulset(client, &ns, &sts, &objects::headless_service(name, name)).await;
        let pods = Api::<Pod>::namespaced(client.clone(), &ns);
        let pod = wait_ready(&pods, name, &[0]).await.remove(&0).unwrap();
        assert_injected(&pod);
        assert_eq!(pod.status.as_ref().unwrap().qos_class.as_deref(), Some(want), "{name}");
    }
    let too_small =
        guaranteed_app("small", &[("habitat/bootstrap", "true"), ("habitat/sidecar-memory-limit", "8Mi")]);
    let refused = Api::<StatefulSet>::namespaced(client.clone(), &ns)
        .create(&PostParams::default(), &too_small)
        .await
        .expect_err("a limit below its request is refused");
    let message = refused.to_string();
    assert!(
        message.contains("memory limit 8Mi")
            && message.contains("set habitat/sidecar-memory-limit to at least 16Mi"),
        "{message}"
    );
}

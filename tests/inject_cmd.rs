//! `hab-bootstrap inject`: the offline rendering, through the built binary and the library, and
//! `--from-cluster` against the real control plane (ignored without one).

mod support;

use std::process::Command;

use hab_bootstrap::commands::inject::render;
use hab_bootstrap::injection::settings::InjectionSettings;
use serde_json::{Value, json};

const EXAMPLE: &str = include_str!("../examples/redis.yaml");

fn inject(args: &[&str], stdin: Option<&str>) -> (bool, String, String) {
    use std::io::Write;
    let mut child = Command::new(env!("CARGO_BIN_EXE_hab-bootstrap"))
        .arg("inject")
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(stdin.unwrap_or("").as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    (out.status.success(), String::from_utf8(out.stdout).unwrap(), String::from_utf8(out.stderr).unwrap())
}

fn supervisor_args(pod: &Value) -> Vec<&str> {
    pod["spec"]["containers"][0]["args"].as_array().unwrap().iter().map(|a| a.as_str().unwrap()).collect()
}

fn env<'a>(pod: &'a Value, name: &str) -> Option<&'a Value> {
    pod["spec"]["containers"][0]["env"].as_array()?.iter().find(|e| e["name"] == name)
}

fn flag<'a>(container: &'a Value, name: &str) -> Option<&'a str> {
    let args = container["args"].as_array()?;
    args.windows(2).find(|w| w[0] == name).and_then(|w| w[1].as_str())
}

#[test]
fn renders_each_ordinal_with_the_peer_watch_file() {
    let (ok, out, err) = inject(&["-f", "examples/redis.yaml", "--ordinal", "2", "-o", "json"], None);
    assert!(ok, "{err}");
    let pod: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(pod["metadata"]["name"], "redis-2");
    assert_eq!(pod["metadata"]["labels"]["habitat/bootstrap"], "true");
    let args = supervisor_args(&pod);
    assert_eq!(&args[args.len() - 2..], ["--peer-watch-file", "/habitat-bootstrap/peers"]);
    assert!(!args.contains(&"--peer"), "{args:?}");
    assert!(env(&pod, "HABITAT_BOOTSTRAP_PEERS").is_none());
    assert_eq!(env(&pod, "HABITAT_BOOTSTRAP_ORDINAL").unwrap()["value"], "2");
    let sidecar = &pod["spec"]["initContainers"][0];
    assert_eq!(sidecar["name"], "habitat-role");
    assert_eq!(flag(sidecar, "--peer-watch-file"), Some("/habitat-bootstrap/peers"));
    assert!(err.is_empty(), "no warnings for the example: {err}");

    // From stdin, YAML out: every ordinal renders the same way (no live members to choose from).
    for ordinal in ["0", "1"] {
        let (ok, out, err) = inject(&["-f", "-", "--ordinal", ordinal], Some(EXAMPLE));
        assert!(ok, "{err}");
        let pod: Value = serde_yaml_ng::from_str(&out).unwrap();
        let args = supervisor_args(&pod);
        assert_eq!(&args[args.len() - 2..], ["--peer-watch-file", "/habitat-bootstrap/peers"], "{ordinal}");
        assert!(!args.contains(&"--peer"), "{ordinal}: {args:?}");
    }
}

/// `inject` renders as if the StatefulSet were created now: through our StatefulSet webhook, it
/// gets a ring key of its own; the Supervisor's state is shared with the sidecar.
#[test]
fn renders_the_ring_key_and_the_supervisor_state() {
    let rendered = render(EXAMPLE, 1, &InjectionSettings::default()).unwrap();
    assert!(rendered.warnings.is_empty(), "{:?}", rendered.warnings);
    let pod = serde_json::to_value(&rendered.pod).unwrap();
    assert_eq!(
        env(&pod, "HAB_RING_KEY").unwrap(),
        &json!({"name": "HAB_RING_KEY", "valueFrom": {"secretKeyRef": {"name": "redis-habitat-ring", "key": "ring-key", "optional": false}}})
    );
    // The example keeps /hab/sup on its volume claim: the sidecar mounts that, runs as root like
    // the Supervisor (no runAsUser), and talks to the default control gateway.
    let sidecar = &pod["spec"]["initContainers"][0];
    let mounts = sidecar["volumeMounts"].as_array().unwrap();
    assert!(mounts.contains(&json!({"name": "hab-sup", "mountPath": "/habitat-supervisor"})), "{mounts:?}");
    assert_eq!(flag(sidecar, "--sup-state-dir"), Some("/habitat-supervisor/default"));
    assert_eq!(flag(sidecar, "--ctl-gateway"), Some("127.0.0.1:9632"));
    assert_eq!(sidecar["securityContext"]["runAsUser"], 0);
    let volumes: Vec<&Value> =
        pod["spec"]["volumes"].as_array().unwrap().iter().map(|v| &v["name"]).collect();
    assert!(!volumes.contains(&&json!("habitat-supervisor-state")), "{volumes:?}");
    assert!(volumes.contains(&&json!("habitat-bootstrap-peers")), "{volumes:?}");

    // Without a volume of its own for /hab/sup, it gets an emptyDir (restarts in place keep it).
    let no_state =
        EXAMPLE.replace("          volumeMounts:\n            - {name: hab-sup, mountPath: /hab/sup}\n", "");
    assert_ne!(no_state, EXAMPLE);
    let rendered = render(&no_state, 1, &InjectionSettings::default()).unwrap();
    let pod = serde_json::to_value(&rendered.pod).unwrap();
    let state =
        pod["spec"]["volumes"].as_array().unwrap().iter().find(|v| v["name"] == "habitat-supervisor-state");
    assert_eq!(state, Some(&json!({"name": "habitat-supervisor-state", "emptyDir": {}})));
    let sup_mounts = pod["spec"]["containers"][0]["volumeMounts"].as_array().unwrap();
    assert!(sup_mounts.contains(&json!({"name": "habitat-supervisor-state", "mountPath": "/hab/sup"})));
    let sidecar = &pod["spec"]["initContainers"][0];
    let mounts = sidecar["volumeMounts"].as_array().unwrap();
    assert!(
        mounts.contains(&json!({"name": "habitat-supervisor-state", "mountPath": "/habitat-supervisor"}))
    );
    assert_eq!(flag(sidecar, "--sup-state-dir"), Some("/habitat-supervisor/default"));
    assert!(
        rendered.warnings.iter().any(|w| w.contains("not on a PersistentVolume")),
        "{:?}",
        rendered.warnings
    );

    // A StatefulSet that says `none` gets no key, and is told so.
    let no_key = EXAMPLE.replace(
        "    habitat/bootstrap: \"true\"\n",
        "    habitat/bootstrap: \"true\"\n    habitat/ring-key-secret: none\n",
    );
    assert_ne!(no_key, EXAMPLE);
    let rendered = render(&no_key, 1, &InjectionSettings::default()).unwrap();
    let pod = serde_json::to_value(&rendered.pod).unwrap();
    assert!(env(&pod, "HAB_RING_KEY").is_none());
    assert!(rendered.warnings.iter().any(|w| w.starts_with("no ring key")), "{:?}", rendered.warnings);
}

#[test]
fn takes_the_webhook_settings() {
    let settings = InjectionSettings {
        cluster_domain: "corp.example".into(),
        sidecar_image: "registry.example/hab-bootstrap:1".into(),
        native_sidecar: false,
        ..Default::default()
    };
    let rendered = render(EXAMPLE, 1, &settings).unwrap();
    let pod = serde_json::to_value(&rendered.pod).unwrap();
    assert_eq!(
        env(&pod, "HABITAT_BOOTSTRAP_POD_FQDN").unwrap()["value"],
        "redis-1.redis.default.svc.corp.example"
    );
    assert_eq!(pod["spec"]["containers"][1]["image"], "registry.example/hab-bootstrap:1");
    assert!(pod["spec"]["initContainers"].is_null());
    // Not a native sidecar: nothing holds the Supervisor back, so no startup probe.
    assert!(pod["spec"]["containers"][1]["startupProbe"].is_null());
}

#[test]
fn useful_errors() {
    let not_sts = "apiVersion: v1\nkind: Service\nmetadata: {name: x}\n";
    let not_annotated = EXAMPLE.replace("habitat/bootstrap: \"true\"", "other: \"x\"");
    let no_service = EXAMPLE.replace("  serviceName: redis\n", "");
    let cases: &[(&str, &str)] = &[
        (not_sts, "holds no StatefulSet (found: Service)"),
        ("", "the manifest is empty"),
        ("kind: [", "document 1"),
        (&not_annotated, "is not annotated habitat/bootstrap"),
        (&no_service, "has no spec.serviceName"),
    ];
    for (manifest, want) in cases {
        let (ok, out, err) = inject(&["-f", "-", "--ordinal", "0"], Some(manifest));
        assert!(!ok && out.is_empty(), "{want}");
        assert!(err.contains(want), "{want}: {err}");
    }
    // --live (the members alive at admission) went with the --peer mode.
    let (ok, _, err) = inject(&["-f", "examples/redis.yaml", "--ordinal", "1", "--live", "0"], None);
    assert!(!ok && err.contains("--live"), "{err}");
    let (ok, _, err) = inject(&["-f", "/nonexistent.yaml", "--ordinal", "1"], None);
    assert!(!ok && err.contains("reading /nonexistent.yaml"), "{err}");
    let (ok, _, err) = inject(&["-f", "examples/redis.yaml", "--ordinal", "7"], None);
    assert!(ok && err.contains("outside the StatefulSet's ordinals 0..3"), "{err}");
    // An absurd ordinal is rendered, not an out-of-memory: the fuzzer's finding.
    let (ok, out, err) =
        inject(&["-f", "examples/redis.yaml", "--ordinal", "4294967295", "-o", "json"], None);
    assert!(ok, "{err}");
    let pod: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(pod["metadata"]["name"], "redis-4294967295");
    assert_eq!(
        flag(&pod["spec"]["initContainers"][0], "--peer-watch-file"),
        Some("/habitat-bootstrap/peers")
    );
}

/// The per-StatefulSet sidecar settings show in the rendered pod, and a bad one is refused with the
/// webhook's own message.
#[test]
fn shows_the_statefulsets_own_sidecar_settings() {
    let annotated = EXAMPLE.replace(
        "    habitat/bootstrap: \"true\"\n",
        "    habitat/bootstrap: \"true\"\n    habitat/sidecar-cpu-request: 50m\n    habitat/sidecar-cpu-limit: 50m\n    \
         habitat/sidecar-memory-request: 32Mi\n    habitat/sidecar-memory-limit: 32Mi\n    \
         habitat/sidecar-image: registry.example/hab-bootstrap:9\n    habitat/sidecar-poll-interval: 500ms\n    \
         habitat/sidecar-unknown-grace: 12s\n",
    );
    assert_ne!(annotated, EXAMPLE);
    let (ok, out, err) = inject(&["-f", "-", "--ordinal", "1", "-o", "json"], Some(&annotated));
    assert!(ok, "{err}");
    let pod: Value = serde_json::from_str(&out).unwrap();
    let sidecar = &pod["spec"]["initContainers"][0];
    assert_eq!(sidecar["image"], "registry.example/hab-bootstrap:9");
    assert_eq!(
        sidecar["resources"],
        json!({"requests": {"cpu": "50m", "memory": "32Mi"}, "limits": {"cpu": "50m", "memory": "32Mi"}})
    );
    assert_eq!((flag(sidecar, "--interval"), flag(sidecar, "--unknown-grace")), (Some("500ms"), Some("12s")));

    let too_small =
        annotated.replace("habitat/sidecar-memory-limit: 32Mi", "habitat/sidecar-memory-limit: 16Mi");
    let (ok, _, err) = inject(&["-f", "-", "--ordinal", "1"], Some(&too_small));
    assert!(!ok, "{err}");
    assert!(err.contains("would be refused") && err.contains("memory limit 16Mi"), "{err}");
    let (ok, _, err) =
        inject(&["-f", "-", "--ordinal", "1", "--allow-sidecar-image-annotation=false"], Some(&annotated));
    assert!(!ok && err.contains("remove the annotation"), "{err}");
}

#[test]
fn renders_every_ordinal_without_one() {
    let (ok, out, err) = inject(&["-f", "examples/redis.yaml", "-o", "json"], None);
    assert!(ok, "{err}");
    let list: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(list["kind"], "List");
    let names: Vec<&str> =
        list["items"].as_array().unwrap().iter().map(|p| p["metadata"]["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["redis-0", "redis-1", "redis-2"]);
    // A warning that holds for every ordinal is shown once.
    let lines: Vec<&str> = err.lines().collect();
    let unique: std::collections::BTreeSet<&&str> = lines.iter().collect();
    assert_eq!(lines.len(), unique.len(), "{err}");
    // YAML: one document per pod, the same pods.
    let (ok, out, err) = inject(&["-f", "examples/redis.yaml"], None);
    assert!(ok, "{err}");
    let docs: Vec<Value> = serde_yaml_ng::Deserializer::from_str(&out)
        .map(|d| <Value as serde::Deserialize>::deserialize(d).unwrap())
        .collect();
    assert_eq!(docs, list["items"].as_array().unwrap().clone());
    // Neither a manifest nor a StatefulSet of the cluster: told what to give.
    let (ok, _, err) = inject(&["--ordinal", "0"], None);
    assert!(!ok && err.contains("--filename") && err.contains("--from-cluster"), "{err}");
}

mod from_cluster {
    //! `inject --from-cluster` against the real control plane:
    //!   scripts/control-plane.sh run -- cargo test --test inject_cmd -- --include-ignored from_cluster

    use crate::support::{harness, objects};
    use k8s_openapi::api::apps::v1::StatefulSet;
    use k8s_openapi::api::core::v1::Service;
    use kube::Api;
    use kube::api::PostParams;
    use serde_json::Value;

    use super::{flag, inject};

    #[tokio::test]
    #[ignore = "needs a control plane: run scripts/test"]
    async fn reads_the_statefulset_its_service_and_the_sidecars_access() {
        if !harness::enabled() {
            return;
        }
        let client = harness::client().await;
        let ns = harness::namespace(&client, "inject-from-cluster").await;
        // Created with no webhook serving this namespace's StatefulSets: stored without the label.
        let annotations = [
            ("habitat/bootstrap", "true"),
            ("habitat/ring-key-secret", "none"),
            ("habitat/sidecar-poll-interval", "250ms"),
        ];
        let mut sts = objects::statefulset("db", "db", 2, &annotations);
        sts.spec
            .as_mut()
            .unwrap()
            .template
            .metadata
            .as_mut()
            .unwrap()
            .labels
            .as_mut()
            .unwrap()
            .remove("habitat/bootstrap");
        let created = Api::<StatefulSet>::namespaced(client.clone(), &ns)
            .create(&PostParams::default(), &sts)
            .await
            .unwrap();
        let uid = created.metadata.uid.unwrap();

        let (ok, out, err) = inject(&["--from-cluster", "db", "-n", &ns, "-o", "json"], None);
        assert!(ok, "{err}");
        let list: Value = serde_json::from_str(&out).unwrap();
        let pods = list["items"].as_array().unwrap();
        let names: Vec<&str> = pods.iter().map(|p| p["metadata"]["name"].as_str().unwrap()).collect();
        assert_eq!(names, ["db-0", "db-1"]);
        for pod in pods {
            assert_eq!(pod["metadata"]["namespace"], ns.as_str());
            assert_eq!(
                pod["metadata"]["ownerReferences"][0]["uid"],
                uid.as_str(),
                "the stored StatefulSet's"
            );
            let sidecar = &pod["spec"]["initContainers"][0];
            assert_eq!(flag(sidecar, "--interval"), Some("250ms"));
            // As stored: no ring key stamped (it is stamped at creation only), none asked for.
            assert!(
                pod["metadata"]["annotations"]["habitat/bootstrap-status"]
                    .as_str()
                    .unwrap()
                    .contains("\"supervisor\":\"redis\"")
            );
            assert!(!pod["spec"]["containers"][0]["env"].to_string().contains("HAB_RING_KEY"));
        }
        // What admission would find: no label on the template, no Service, no RBAC for the label.
        for want in [
            "lacks the pod-template label habitat/bootstrap=true",
            "Service \"db\" (spec.serviceName) not found",
            "ServiceAccount \"default\" may not patch pods",
        ] {
            assert!(err.contains(want), "{want}: {err}");
        }

        // The Service made: its warning goes; one ordinal, through an explicit kubeconfig and context.
        Api::<Service>::namespaced(client.clone(), &ns)
            .create(&PostParams::default(), &objects::headless_service("db", "db"))
            .await
            .unwrap();
        let kubeconfig = std::env::var("KUBECONFIG").unwrap();
        let context = kube::config::Kubeconfig::read_from(&kubeconfig).unwrap().current_context.unwrap();
        let (ok, out, err) = inject(
            &[
                "--from-cluster",
                "db",
                "-n",
                &ns,
                "--ordinal",
                "1",
                "-o",
                "json",
                "--kubeconfig",
                &kubeconfig,
                "--context",
                &context,
            ],
            None,
        );
        assert!(ok, "{err}");
        let pod: Value = serde_json::from_str(&out).unwrap();
        assert_eq!(pod["metadata"]["name"], "db-1");
        assert!(!err.contains("not found"), "{err}");

        for (args, want) in [
            (vec!["--from-cluster", "nope", "-n", &ns], "StatefulSet inject-from-cluster/nope not found"),
            (vec!["--from-cluster", "db", "-n", &ns, "--context", "no-such-context"], "no-such-context"),
        ] {
            let (ok, _, err) = inject(&args, None);
            assert!(!ok && err.contains(want), "{want}: {err}");
        }
    }
}

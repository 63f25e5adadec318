//! Properties over generated pods: the patch applies cleanly to whatever pod we are given, a second
//! admission of the result changes nothing, nothing but the supervisor container is touched, and
//! what the design promises holds for every pod: the sidecar once, the peer watch file unless the
//! user passes peers (never a `--peer`), the Supervisor's state on a volume the sidecar shares.

mod support;

use futures::executor::block_on;
use proptest::prelude::*;
use serde_json::{Value, json};
use support::*;

fn command() -> impl Strategy<Value = Option<Vec<&'static str>>> {
    prop_oneof![
        Just(None),
        Just(Some(vec!["hab", "sup", "run"])),
        Just(Some(vec!["/hab/bin/hab-launch", "run"])),
        Just(Some(vec!["sh", "-c", "hab sup run core/redis"])),
        Just(Some(vec!["redis-server"])),
    ]
}

fn args() -> impl Strategy<Value = Option<Vec<&'static str>>> {
    let token = prop_oneof![
        Just("core/redis"),
        Just("--peer"),
        Just("seed.example"),
        Just("--group"),
        Just("prod"),
        Just("--listen-gossip"),
        Just("0.0.0.0:9700"),
        Just("--topology"),
        Just("leader"),
        Just("--peer-watch-file"),
        Just("sup"),
        Just("run"),
        Just("--peer=x"),
        Just("--ring"),
        Just("prod-ring"),
        Just("--listen-ctl"),
        Just("127.0.0.1:9800"),
        Just("ünïcødé"),
        Just(""),
    ];
    prop_oneof![
        Just(None),
        proptest::collection::vec(token, 0..8).prop_map(Some),
        Just(Some(vec!["sup", "run", "core/redis"]))
    ]
}

fn env() -> impl Strategy<Value = Vec<Value>> {
    let var = prop_oneof![
        Just(json!({"name": "HABITAT_BOOTSTRAP_ORDINAL", "value": "user"})),
        Just(json!({"name": "HAB_RING_KEY", "value": "SYM-SEC-1"})),
        Just(json!({"name": "HAB_REDIS", "value": "port = 6379"})),
        Just(
            json!({"name": "HAB_SUP_GATEWAY_AUTH_TOKEN", "valueFrom": {"secretKeyRef": {"name": "t", "key": "k"}}})
        ),
        Just(json!({"name": "X", "value": "1"})),
    ];
    proptest::collection::vec(var, 0..4).prop_map(|mut v| {
        v.dedup_by(|a, b| a["name"] == b["name"]);
        v
    })
}

fn container(name: String) -> impl Strategy<Value = Value> {
    (command(), args(), env(), any::<bool>()).prop_map(move |(command, args, env, state_on_pvc)| {
        let mut c = json!({"name": name, "image": "img"});
        if let Some(cmd) = command {
            c["command"] = json!(cmd);
        }
        if let Some(a) = args {
            c["args"] = json!(a);
        }
        if !env.is_empty() {
            c["env"] = json!(env);
        }
        let mut mounts = vec![json!({"name": "kube-api-access-x", "mountPath": "/var/run/secrets/kubernetes.io/serviceaccount", "readOnly": true})];
        if state_on_pvc {
            mounts.push(json!({"name": "data", "mountPath": "/hab"}));
        }
        c["volumeMounts"] = json!(mounts);
        c
    })
}

prop_compose! {
    fn pod()(
        n in 1usize..4,
        ordinal in 0u32..6,
        init in 0usize..3,
        annotations in proptest::sample::subsequence(vec![("habitat/bootstrap-status", "{not json"), ("other", "x")], 0..2),
    )(
        containers in (0..n).map(|i| container(format!("c{i}"))).collect::<Vec<_>>(),
        ordinal in Just(ordinal),
        init in Just(init),
        annotations in Just(annotations),
    ) -> Value {
        let name = format!("redis-{ordinal}");
        let mut pod = json!({
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "name": name,
                "namespace": "default",
                "labels": {"app": "redis", "statefulset.kubernetes.io/pod-name": name, "apps.kubernetes.io/pod-index": ordinal.to_string()},
                "ownerReferences": [{"apiVersion": "apps/v1", "kind": "StatefulSet", "name": "redis", "uid": STS_UID, "controller": true}],
            },
            "spec": {
                "containers": containers,
                "volumes": [{"name": "data", "persistentVolumeClaim": {"claimName": format!("data-{name}")}}, {"name": "kube-api-access-x", "projected": {"sources": []}}],
                "hostname": name,
                "subdomain": "redis",
            }
        });
        if init > 0 {
            pod["spec"]["initContainers"] = json!((0..init).map(|i| json!({"name": format!("init{i}"), "image": "busybox"})).collect::<Vec<_>>());
        }
        if !annotations.is_empty() {
            pod["metadata"]["annotations"] = json!(annotations.into_iter().collect::<std::collections::BTreeMap<_, _>>());
        }
        pod
    }
}

fn options() -> impl Strategy<Value = Vec<(&'static str, &'static str)>> {
    (
        prop_oneof![Just(""), Just("peer"), Just("watch-file")],
        prop_oneof![Just(""), Just("true"), Just("false")],
        prop_oneof![Just(""), Just("redis-habitat-ring"), Just("none")],
    )
        .prop_map(|(mode, sidecar, key)| {
            vec![
                ("habitat/peer-mode", mode),
                ("habitat/role-sidecar", sidecar),
                ("habitat/ring-key-secret", key),
            ]
        })
}

fn admit(pod: &Value, options: &[(&str, &str)]) -> Answer {
    let cluster = MemoryCluster {
        statefulsets: vec![statefulset("redis", "default", "redis", 3, options)],
        services: vec![headless_service("redis", "default", true)],
        ..Default::default()
    };
    let a = admission(cluster);
    let body = serde_json::to_vec(&review_of(pod, "CREATE", false)).unwrap();
    decode(&block_on(a.review_pod(&body)).expect("every generated review is answerable"))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]

    #[test]
    fn patch_applies_and_converges(
        pod in pod(),
        options in options(),
    ) {
        let answer = admit(&pod, &options);
        // Every generated option is accepted and no generated container is named habitat-role.
        prop_assert!(answer.allowed, "{:?}", answer.message);
        let once = patched(&pod, &answer);

        // Converges: a second admission of the injected pod changes nothing.
        let again = admit(&once, &options);
        prop_assert!(again.allowed);
        prop_assert_eq!(&patched(&once, &again), &once);
        prop_assert!(again.patch.is_none());

        // Only the supervisor container changes, among the user's containers.
        let before = pod["spec"]["containers"].as_array().unwrap();
        let after = once["spec"]["containers"].as_array().unwrap();
        let changed: Vec<_> = before.iter().zip(after).filter(|(b, a)| b != a).collect();
        prop_assert!(changed.len() <= 1);
        // The user's env values survive.
        for (b, a) in before.iter().zip(after) {
            for var in b["env"].as_array().into_iter().flatten() {
                prop_assert!(a["env"].as_array().unwrap().contains(var));
            }
        }
        // The user's init containers come first, unchanged.
        if let Some(init) = pod["spec"]["initContainers"].as_array() {
            prop_assert_eq!(&once["spec"]["initContainers"].as_array().unwrap()[..init.len()], &init[..]);
        }
        // Each injected item once: the sidecar always, whatever habitat/role-sidecar says.
        let init = once["spec"]["initContainers"].as_array().cloned().unwrap_or_default();
        let sidecars: Vec<&Value> = init.iter().filter(|c| c["name"] == "habitat-role").collect();
        prop_assert_eq!(sidecars.len(), 1);
        let sidecar = sidecars[0];
        let no_label = sidecar["args"].as_array().unwrap().contains(&json!("--no-role-label"));
        prop_assert_eq!(no_label, options.contains(&("habitat/role-sidecar", "false")));

        // The supervisor: the watch file appended unless the user passes peers; never a --peer.
        let status: Value =
            serde_json::from_str(once["metadata"]["annotations"]["habitat/bootstrap-status"].as_str().unwrap()).unwrap();
        prop_assert_eq!(&once["metadata"]["labels"]["habitat/injected"], "true");
        let name = status["supervisor"].as_str().unwrap();
        let index = before.iter().position(|c| c["name"] == name).unwrap();
        let count = |c: &Value, token: &str| c["args"].as_array().into_iter().flatten().filter(|a| *a == token).count();
        prop_assert_eq!(count(&after[index], "--peer"), count(&before[index], "--peer"));
        let watch_file = status["peerWatchFile"].as_str();
        prop_assert_eq!(
            count(&after[index], "--peer-watch-file"),
            count(&before[index], "--peer-watch-file") + usize::from(watch_file.is_some())
        );
        if let Some(path) = watch_file {
            prop_assert_eq!(path, "/habitat-bootstrap/peers");
            let args = after[index]["args"].as_array().unwrap();
            prop_assert_eq!(&args[args.len() - 2..], &[json!("--peer-watch-file"), json!(path)]);
        }
        prop_assert!(!env_names(&after[index]).contains(&"HABITAT_BOOTSTRAP_PEERS".to_owned()));

        // /hab/sup/default is on a volume (the user's at /hab, or the one we add at /hab/sup) that
        // the sidecar mounts at /habitat-supervisor.
        let mounts = after[index]["volumeMounts"].as_array().unwrap();
        let state = mounts.iter().find(|m| m["mountPath"] == "/hab" || m["mountPath"] == "/hab/sup").unwrap();
        let injected = state["name"] == "habitat-supervisor-state";
        let volumes: Vec<&str> = status["volumes"].as_array().into_iter().flatten().filter_map(Value::as_str).collect();
        prop_assert_eq!(injected, volumes.contains(&"habitat-supervisor-state"));
        let sidecar_mount = sidecar["volumeMounts"].as_array().unwrap().iter().find(|m| m["mountPath"] == "/habitat-supervisor");
        prop_assert_eq!(&sidecar_mount.unwrap()["name"], &state["name"]);
        let dir = if injected { "/habitat-supervisor/default" } else { "/habitat-supervisor/sup/default" };
        prop_assert!(sidecar["args"].to_string().contains(&format!("\"--sup-state-dir\",\"{dir}\"")), "{}", sidecar["args"]);
        let pod_volumes = once["spec"]["volumes"].as_array().unwrap();
        for volume in &volumes {
            prop_assert_eq!(pod_volumes.iter().filter(|v| v["name"] == *volume).count(), 1);
        }
    }
}

fn env_names(container: &Value) -> Vec<String> {
    container["env"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|e| e["name"].as_str().map(str::to_owned))
        .collect()
}

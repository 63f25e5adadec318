//! `hab-bootstrap inject`: the offline rendering, through the built binary and the library.

use std::process::Command;

use hab_bootstrap::commands::inject::render;
use hab_bootstrap::injection::settings::InjectionSettings;
use serde_json::Value;

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

fn peers(pod: &Value) -> Vec<String> {
    let args: Vec<&str> = pod["spec"]["containers"][0]["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    args.windows(2).filter(|w| w[0] == "--peer").map(|w| w[1].split('.').next().unwrap().to_owned()).collect()
}

#[test]
fn renders_each_ordinal_of_a_first_rollout_and_a_recreated_pod_zero() {
    let (ok, out, err) = inject(&["-f", "examples/redis.yaml", "--ordinal", "2", "-o", "json"], None);
    assert!(ok, "{err}");
    let pod: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(peers(&pod), ["redis-0", "redis-1"]);
    assert_eq!(pod["metadata"]["name"], "redis-2");
    assert_eq!(pod["spec"]["initContainers"][0]["name"], "habitat-role");
    assert_eq!(pod["metadata"]["labels"]["habitat/bootstrap"], "true");
    assert!(err.is_empty(), "no warnings for the example: {err}");

    let (ok, out, _) = inject(&["-f", "-", "--ordinal", "0", "--live", "1,2", "-o", "json"], Some(EXAMPLE));
    assert!(ok);
    assert_eq!(peers(&serde_json::from_str(&out).unwrap()), ["redis-1", "redis-2"]);

    let (ok, out, _) = inject(&["-f", "examples/redis.yaml", "--ordinal", "1", "--live", ""], None);
    assert!(ok);
    let pod: Value = serde_yaml_ng::from_str(&out).unwrap();
    assert_eq!(peers(&pod), ["redis-0"], "nobody alive: the first ordinal, with a warning");
}

#[test]
fn takes_the_webhook_settings() {
    let settings = InjectionSettings {
        cluster_domain: "corp.example".into(),
        sidecar_image: "registry.example/hab-bootstrap:1".into(),
        native_sidecar: false,
        ..Default::default()
    };
    let rendered = render(EXAMPLE, 1, None, &settings).unwrap();
    let pod = serde_json::to_value(&rendered.pod).unwrap();
    let args = pod["spec"]["containers"][0]["args"].to_string();
    assert!(args.contains("redis-0.redis.default.svc.corp.example"), "{args}");
    assert_eq!(pod["spec"]["containers"][1]["image"], "registry.example/hab-bootstrap:1");
    assert!(pod["spec"]["initContainers"].is_null());
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
    let (ok, _, err) = inject(&["-f", "examples/redis.yaml", "--ordinal", "1", "--live", "0,x"], None);
    assert!(!ok && err.contains("\"x\" is not an ordinal"), "{err}");
    let (ok, _, err) = inject(&["-f", "/nonexistent.yaml", "--ordinal", "1"], None);
    assert!(!ok && err.contains("reading /nonexistent.yaml"), "{err}");
    let (ok, _, err) = inject(&["-f", "examples/redis.yaml", "--ordinal", "7"], None);
    assert!(ok && err.contains("outside the StatefulSet's ordinals 0..3"), "{err}");
    // An absurd ordinal is rendered (with the StatefulSet's 3 members as live peers), not an
    // out-of-memory: the fuzzer's finding.
    let (ok, out, err) =
        inject(&["-f", "examples/redis.yaml", "--ordinal", "4294967295", "-o", "json"], None);
    assert!(ok, "{err}");
    assert_eq!(peers(&serde_json::from_str(&out).unwrap()), ["redis-0", "redis-1", "redis-2"]);
}

//! The chart's Deployments against the binary's command line, with no cluster: every setting of
//! `hab-bootstrap webhook` that reads an environment variable is set by the chart (or knowingly
//! left at its default), the chart sets no variable the binary does not read, and the certificate
//! keeper's arguments parse; the default NetworkPolicy lets in the webhook port alone. Read from `webhook/`, the chart rendered with its defaults (CI fails
//! when the two differ: `scripts/chart.sh check`).

use std::collections::BTreeSet;

use clap::{CommandFactory, Parser};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::networking::v1::NetworkPolicy;

/// Settings the chart leaves at the binary's default on purpose.
/// The server limits' defaults are sized for the chart's memory limit (RELIABILITY.md).
const NOT_IN_CHART: &[&str] = &[
    "HABITAT_BOOTSTRAP_CERT_RELOAD_INTERVAL",
    "HABITAT_BOOTSTRAP_MAX_CONNECTIONS",
    "HABITAT_BOOTSTRAP_MAX_STREAMS",
    "HABITAT_BOOTSTRAP_MAX_IN_FLIGHT",
    "HABITAT_BOOTSTRAP_BODY_BUDGET_BYTES",
    // Opt-in: needs the API server's AdmissionConfiguration to send a client certificate.
    "HABITAT_BOOTSTRAP_CLIENT_CA",
];

#[derive(Parser)]
struct Webhook {
    #[command(flatten)]
    args: hab_bootstrap::commands::webhook::WebhookArgs,
}

fn objects<T: serde::de::DeserializeOwned>(file: &str, kind: &str) -> Vec<T> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("webhook").join(file);
    let text = std::fs::read_to_string(&path).unwrap();
    serde_yaml_ng::Deserializer::from_str(&text)
        .map(|doc| serde::Deserialize::deserialize(doc).unwrap())
        .filter_map(|v: serde_json::Value| (v["kind"] == kind).then(|| serde_json::from_value(v).unwrap()))
        .collect()
}

fn deployments(file: &str) -> Vec<Deployment> {
    objects(file, "Deployment")
}

#[test]
fn the_chart_sets_every_webhook_setting_and_nothing_else() {
    let code: BTreeSet<String> = Webhook::command()
        .get_arguments()
        .filter_map(|a| a.get_env())
        .map(|e| e.to_string_lossy().into_owned())
        .filter(|e| !NOT_IN_CHART.contains(&e.as_str()))
        .collect();
    let deployment = &deployments("deployment.yaml")[0];
    let container = &deployment.spec.as_ref().unwrap().template.spec.as_ref().unwrap().containers[0];
    assert_eq!(container.args.as_deref(), Some(&["webhook".to_owned()][..]));
    let chart: BTreeSet<String> = container.env.iter().flatten().map(|e| e.name.clone()).collect();
    let missing: Vec<_> = code.difference(&chart).collect();
    let unknown: Vec<_> = chart.difference(&code).collect();
    assert!(
        missing.is_empty(),
        "settings the chart does not set (add a value, or NOT_IN_CHART): {missing:?}"
    );
    assert!(unknown.is_empty(), "variables the binary does not read: {unknown:?}");
}

#[test]
fn the_certificate_keeper_arguments_parse() {
    let deployment = &deployments("certs-self-managed.yaml")[0];
    let container = &deployment.spec.as_ref().unwrap().template.spec.as_ref().unwrap().containers[0];
    let args = container.args.clone().unwrap();
    assert_eq!(&args[..2], ["certs", "watch"]);
    let argv = std::iter::once("hab-bootstrap".to_owned())
        .chain(args.iter().map(|a| a.replace("$(POD_NAMESPACE)", "hab-bootstrap")));
    let cli = hab_bootstrap::cli::Cli::try_parse_from(argv).unwrap_or_else(|e| panic!("{e}"));
    assert!(matches!(
        cli.command,
        hab_bootstrap::cli::Command::Certs(hab_bootstrap::commands::certs::CertsArgs {
            command: hab_bootstrap::commands::certs::CertsCommand::Watch(_)
        })
    ));
    let env: Vec<_> = container.env.iter().flatten().map(|e| e.name.as_str()).collect();
    assert!(env.contains(&"POD_NAMESPACE"), "$(POD_NAMESPACE) must be defined: {env:?}");
}

/// On by default: the webhook's pods take connections on the webhook port only (from anyone until
/// `networkPolicy.httpsFrom` narrows it), not on the admin port (/metrics); the certificate keeper
/// takes none. Each policy selects exactly its Deployment's pods.
#[test]
fn the_default_network_policy_lets_in_the_webhook_port_alone() {
    let policies: Vec<NetworkPolicy> = objects("networkpolicy.yaml", "NetworkPolicy");
    let selects = |policy: &NetworkPolicy, deployment: &Deployment| {
        let selector = policy.spec.as_ref().unwrap().pod_selector.clone().unwrap_or_default();
        let wanted = selector.match_labels.unwrap_or_default();
        let labels =
            deployment.spec.as_ref().unwrap().template.metadata.as_ref().unwrap().labels.clone().unwrap();
        !wanted.is_empty() && wanted.iter().all(|(k, v)| labels.get(k) == Some(v))
    };
    let all: Vec<Deployment> =
        deployments("deployment.yaml").into_iter().chain(deployments("certs-self-managed.yaml")).collect();
    let webhook = &deployments("deployment.yaml")[0];
    let certs = &deployments("certs-self-managed.yaml")[0];
    let policy_of = |d: &Deployment| {
        let found: Vec<&NetworkPolicy> = policies.iter().filter(|p| selects(p, d)).collect();
        assert_eq!(found.len(), 1, "one policy for {:?}", d.metadata.name);
        assert_eq!(
            all.iter().filter(|other| selects(found[0], other)).count(),
            1,
            "it selects only {:?}",
            d.metadata.name
        );
        found[0].spec.clone().unwrap()
    };
    let spec = policy_of(webhook);
    assert_eq!(spec.policy_types.as_deref(), Some(&["Ingress".to_owned()][..]));
    let rules = spec.ingress.unwrap();
    assert_eq!(rules.len(), 1, "{rules:?}");
    assert!(rules[0].from.is_none(), "from anyone by default: {rules:?}");
    let ports = rules[0].ports.clone().unwrap();
    let container = &webhook.spec.as_ref().unwrap().template.spec.as_ref().unwrap().containers[0];
    let named = |name: &str| {
        container.ports.iter().flatten().find(|p| p.name.as_deref() == Some(name)).map(|p| p.container_port)
    };
    assert_eq!(ports.len(), 1);
    let allowed = match ports[0].port.clone().unwrap() {
        k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::String(name) => named(&name),
        k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int(n) => Some(n),
    };
    assert_eq!(allowed, named("https"), "the webhook port");
    assert!(named("admin").is_some() && allowed != named("admin"), "not the admin port");
    let certs = policy_of(certs);
    assert_eq!(certs.policy_types.as_deref(), Some(&["Ingress".to_owned()][..]));
    assert!(certs.ingress.unwrap_or_default().is_empty(), "the certificate keeper takes no connection");
}

/// Every series a metric of `exposition` (OpenMetrics text) may be queried by: counters with
/// `_total`, histograms with `_bucket`, `_sum` and `_count`.
fn queryable_names(exposition: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for line in exposition.lines() {
        let Some(rest) = line.strip_prefix("# TYPE ") else { continue };
        let (name, kind) = rest.split_once(' ').unwrap();
        let suffixes: &[&str] = match kind {
            "counter" => &["_total"],
            "histogram" => &["_bucket", "_sum", "_count"],
            _ => &[""],
        };
        names.extend(suffixes.iter().map(|s| format!("{name}{s}")));
    }
    names
}

/// The chart's alerts query metrics the binary exports, by their real names: the webhook's (with
/// the server limits' it registers at start) and the role sidecar's.
#[test]
fn every_alert_queries_a_metric_that_exists() {
    use hab_bootstrap::webhook::escaped::{Escape, Problem};
    use hab_bootstrap::webhook::metrics::{ReasonLabels, WebhookLabels};
    use hab_bootstrap::webhook::server::shed::{ShedLabels, ShedMetrics};

    // A family is exported once it has a series: one of each.
    let mut webhook = hab_bootstrap::webhook::metrics::Metrics::default();
    let shed = ShedMetrics::default();
    shed.register(&mut webhook.registry);
    shed.shed.get_or_create(&ShedLabels { limit: "in_flight" }).inc();
    webhook.denials.get_or_create(&ReasonLabels { reason: "api_unavailable" }).inc();
    webhook.duration.get_or_create(&WebhookLabels { webhook: "pods" }).observe(0.001);
    let escape =
        |problem| Escape { namespace: "ns".into(), statefulset: "s".into(), uid: "u".into(), problem };
    webhook.set_escapes(&[
        escape(Problem::TemplateUnlabelled),
        escape(Problem::PodsNotInjected(vec!["s-0".into()])),
    ]);
    let now = time::OffsetDateTime::now_utc();
    webhook.set_certificate_expiry(Some(now), Some(now));
    let mut sidecar = String::new();
    prometheus_client::encoding::text::encode(
        &mut sidecar,
        &hab_bootstrap::sidecar::metrics::Metrics::new().registry(),
    )
    .unwrap();
    let exported: BTreeSet<String> =
        queryable_names(&webhook.encode()).union(&queryable_names(&sidecar)).cloned().collect();

    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("charts/hab-bootstrap/templates/prometheusrule.yaml");
    let rules = std::fs::read_to_string(path).unwrap();
    let mut queried = BTreeSet::new();
    for (i, _) in rules.match_indices("hab_bootstrap_") {
        let name: String =
            rules[i..].chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
        queried.insert(name);
    }
    // Seven alerts over eight metrics; a name that is no metric of ours fails below.
    assert!(queried.len() >= 7, "{queried:?}");
    let unknown: Vec<_> = queried.difference(&exported).collect();
    assert!(unknown.is_empty(), "alerts query metrics nobody exports: {unknown:?}\nexported: {exported:?}");
}

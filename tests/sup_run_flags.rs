//! The `hab sup run` flags that take a value (src/injection/supervisor_args.rs) against the real
//! `hab sup run --help` of the Habitat binaries in HAB_BOOTSTRAP_HABITAT_BIN: a flag the table
//! misses makes its value read as the package (the service group is then not found), a flag the
//! table has in excess swallows the package. Skipped without the binaries (failed in CI, where
//! HAB_BOOTSTRAP_E2E_REQUIRED is set).

use std::collections::BTreeSet;

use hab_bootstrap::injection::supervisor_args::FLAGS_WITH_VALUE;

/// In the table, absent from `--help` because Habitat hides them (read from its source).
const HIDDEN: &[&str] = &["--ring-key", "--svc-config-paths", "--pkg-ident-file"];

#[test]
fn the_flag_table_matches_hab_sup_run_help() {
    let Some(dir) = std::env::var_os("HAB_BOOTSTRAP_HABITAT_BIN") else {
        assert!(
            std::env::var_os("HAB_BOOTSTRAP_E2E_REQUIRED").is_none(),
            "HAB_BOOTSTRAP_HABITAT_BIN is not set"
        );
        eprintln!("skipped: HAB_BOOTSTRAP_HABITAT_BIN is not set");
        return;
    };
    let root = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(std::path::Path::new(&dir).join("hab"))
        .args(["sup", "run", "--help"])
        .env("FS_ROOT", root.path())
        .env("HAB_LICENSE", "accept-no-persist")
        .output()
        .expect("running hab");
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(
        help.contains("--listen-gossip"),
        "not the help of hab sup run: {help}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut with_value = BTreeSet::new();
    let mut without_value = BTreeSet::new();
    for line in help.lines().map(str::trim_start).filter(|l| l.starts_with('-')) {
        let (names, rest) = line.split_once(" <").or_else(|| line.split_once(" [<")).unwrap_or((line, ""));
        let names: Vec<&str> = names.split(", ").map(|n| n.split_whitespace().next().unwrap()).collect();
        let set = if rest.is_empty() { &mut without_value } else { &mut with_value };
        set.extend(names.into_iter().map(str::to_owned));
    }
    let table: BTreeSet<String> = FLAGS_WITH_VALUE.iter().map(|f| f.to_string()).collect();
    let missing: Vec<&String> = with_value.difference(&table).collect();
    assert!(missing.is_empty(), "flags that take a value, missing from the table: {missing:?}");
    let extra: Vec<&String> =
        table.difference(&with_value).filter(|f| !HIDDEN.contains(&f.as_str())).collect();
    assert!(
        extra.is_empty(),
        "flags in the table that hab sup run does not have (or that take no value): {extra:?}"
    );
    assert!(without_value.contains("--permanent-peer") && !table.contains("--permanent-peer"));
}

/// The drift the issue reported: `--url <bldr>` before the package hid the service group.
#[test]
fn the_package_after_url_and_update_periods_is_found() {
    use hab_bootstrap::injection::supervisor_args::parse_flags;
    let container: k8s_openapi::api::core::v1::Container = serde_json::from_value(serde_json::json!({
        "name": "redis",
        "args": ["sup", "run", "--url", "https://bldr.example", "--auto-update-period", "60",
                 "--service-update-period", "60", "core/redis", "--topology", "leader"]
    }))
    .unwrap();
    assert_eq!(parse_flags(&container).service_group.as_deref(), Some("redis.default"));
}

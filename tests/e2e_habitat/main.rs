//! End-to-end scenarios with REAL Habitat Supervisors (issue 9): the project's control plane, the
//! webhook injecting each pod, and for every pod the API server stored, its Supervisor started from
//! the stored command line with the real `hab` binaries and its role sidecar from the stored
//! arguments (see `kubelet.rs` for exactly what is emulated and the liberties taken).
//!
//! Needs: a control plane (`scripts/control-plane.sh run -- ...`, pod CIDR in 127.0.0.0/8, the
//! default), root (mount and UTS namespaces), the binaries `hab`, `hab-sup`, `hab-launch` in the
//! directory HAB_BOOTSTRAP_HABITAT_BIN (CI: `../shared/habitat/bin`, next to the checkout, with
//! `mkpkg.sh` one level up) and their libraries (`scripts/control-plane.sh ensure-habitat-deps`).
//! `scripts/test` runs them:
//!
//!   scripts/control-plane.sh run -- cargo test --test e2e_habitat -- --include-ignored --nocapture --test-threads=1
//!
//! Each test prints the times it measured: to one ring (every pod's /census lists the same alive
//! members, and each pod's own member is among them) and to one leader label (the election is
//! finished everywhere with one leader, and exactly one pod carries role=leader in the API server:
//! that leader's pod), and ends with one line for issue 9's table:
//! `SCENARIO <name> | ring <s> | leader <s> | <what it showed> [steps ...]`
//! (`cargo test ... 2>&1 | grep ^SCENARIO`).
//!
//! Layout: `world.rs` (a scenario's namespace, webhook, kubelet and measurements), `kubelet.rs`,
//! `spec.rs`, `census.rs`, and `scenarios/` by theme (rollout, restarts, state, ghosts, merge).

mod census;
mod check;
mod kubelet;
mod scenarios;
mod world;

// A test crate in a folder finds the shared support module one level up.
#[path = "../support/mod.rs"]
mod support;
use support::{harness, objects};

use std::path::PathBuf;
use std::time::Duration;

use kubelet::Habitat;

const GROUP: &str = "roletest.prod";
const WAIT: Duration = Duration::from_secs(120);

/// Tests share the webhook registration and the machine's two cores: one at a time.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

// ------------------------------------------------------------------------------------------------
// What is needed, and skipping (or failing in CI) without it
// ------------------------------------------------------------------------------------------------

fn required() -> bool {
    std::env::var_os("HAB_BOOTSTRAP_E2E_REQUIRED").is_some()
}

fn skip_or_fail(what: &str) -> Option<Habitat> {
    assert!(!required(), "HAB_BOOTSTRAP_E2E_REQUIRED is set but {what}");
    eprintln!("skipped: {what}");
    None
}

/// The Habitat binaries and what else the suite needs, or None (the test is skipped, with the
/// reason printed) when something is missing and HAB_BOOTSTRAP_E2E_REQUIRED is unset.
fn habitat() -> Option<Habitat> {
    if !harness::enabled() {
        return None;
    }
    let Some(dir) = std::env::var_os("HAB_BOOTSTRAP_HABITAT_BIN").map(PathBuf::from) else {
        return skip_or_fail(
            "HAB_BOOTSTRAP_HABITAT_BIN is not set: point it at a directory with the Habitat 2.1.78 \
             binaries hab, hab-sup and hab-launch (CI has them in ../shared/habitat/bin next to the \
             checkout; scripts/test sets it), built from github.com/habitat-sh/habitat with \
             `cargo build --release -p hab -p habitat_sup -p habitat-launcher`",
        );
    };
    for b in ["hab", "hab-sup", "hab-launch"] {
        if !dir.join(b).is_file() {
            return skip_or_fail(&format!("{} has no {b} (HAB_BOOTSTRAP_HABITAT_BIN)", dir.display()));
        }
    }
    let mkpkg = dir.parent().map(|p| p.join("mkpkg.sh")).filter(|p| p.is_file());
    let Some(mkpkg) = mkpkg else {
        return skip_or_fail(&format!("no mkpkg.sh next to {} (the package maker)", dir.display()));
    };
    // SAFETY: plain syscall.
    if unsafe { libc::geteuid() } != 0 {
        return skip_or_fail("not root: the Supervisors need their own mount and UTS namespaces (unshare)");
    }
    let version = std::process::Command::new(dir.join("hab-sup")).arg("--version").output();
    if !version.as_ref().is_ok_and(|o| o.status.success()) {
        return skip_or_fail(
            "hab-sup does not run (missing libzmq5/libsodium23? `scripts/control-plane.sh ensure-habitat-deps`)",
        );
    }
    let cidr = std::env::var("CP_POD_CIDR").unwrap_or_default();
    if !cidr.starts_with("127.") {
        return skip_or_fail(&format!("the pod CIDR {cidr:?} is not in 127.0.0.0/8 (HAB_CP_POD_CIDR)"));
    }
    Some(Habitat { bin: dir, mkpkg })
}

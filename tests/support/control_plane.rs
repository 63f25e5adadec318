//! Whether a real control plane was started for the end-to-end tests (`scripts/test` starts one
//! and runs them with `--include-ignored`).

/// False when no control plane was started for us (plain `cargo test`): the test is skipped with a
/// message. CI sets HAB_BOOTSTRAP_E2E_REQUIRED so that a missing control plane fails instead.
pub fn enabled() -> bool {
    let on = std::env::var_os("CP_APISERVER_URL").is_some() && std::env::var_os("KUBECONFIG").is_some();
    if !on {
        assert!(
            std::env::var_os("HAB_BOOTSTRAP_E2E_REQUIRED").is_none(),
            "HAB_BOOTSTRAP_E2E_REQUIRED is set but no control plane: run through scripts/test"
        );
        eprintln!("skipped: no control plane (run `scripts/test` to start one)");
    }
    on
}

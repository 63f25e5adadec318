//! Starting the real `hab-bootstrap webhook` binary in the tests that need it as a process
//! (`tests/e2e.rs`, `tests/e2e_certs.rs`, `tests/faults.rs`).

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// The `hab-bootstrap` binary the processes run: `HAB_BOOTSTRAP_BIN` if set (a copy taken right
/// after the build, when another worktree shares the target directory and may overwrite its
/// `debug/hab-bootstrap` while the suite runs), else the one Cargo built for this test.
pub fn binary() -> PathBuf {
    std::env::var_os("HAB_BOOTSTRAP_BIN")
        .map_or_else(|| env!("CARGO_BIN_EXE_hab-bootstrap").into(), PathBuf::from)
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// `hab-bootstrap webhook` serving 127.0.0.1:`port` (admin port `admin_port`) with
/// `certs/tls.crt` and `certs/tls.key` (and the CA's expiry from `certs/ca.crt`, when there is one),
/// text logs to `log`. It dies with the test process
/// (`PR_SET_PDEATHSIG`), so a test killed by a timeout leaves no webhook behind. Callers add their
/// own flags, then spawn.
pub fn webhook_command(port: u16, admin_port: u16, certs: &Path, log: File) -> Command {
    webhook_command_of(&binary(), port, admin_port, certs, log)
}

/// The same, of another build of `hab-bootstrap`.
pub fn webhook_command_of(binary: &Path, port: u16, admin_port: u16, certs: &Path, log: File) -> Command {
    let mut command = Command::new(binary);
    // SAFETY: prctl is async-signal-safe and touches no memory of the parent.
    unsafe {
        use std::os::unix::process::CommandExt;
        command.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
            Ok(())
        });
    }
    command
        .args(["webhook", "--log-format", "text"])
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .args(["--admin-listen", &format!("127.0.0.1:{admin_port}")])
        .args(["--tls-cert", certs.join("tls.crt").to_str().unwrap()])
        .args(["--tls-key", certs.join("tls.key").to_str().unwrap()])
        .args(["--tls-ca", certs.join("ca.crt").to_str().unwrap()])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log);
    command
}

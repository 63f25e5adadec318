//! `hab-bootstrap role` end to end: the built binary against a stand-in Supervisor.

mod support;

use std::process::Output;

use support::supervisor::{Reply, StandInSupervisor};

const GROUP: &str = "roletest.prod";

async fn role(args: &[&str], token: Option<&str>) -> Output {
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_hab-bootstrap"));
    command.arg("role").args(args).env_remove("HABITAT_BOOTSTRAP_GATEWAY_TOKEN");
    if let Some(token) = token {
        command.env("HABITAT_BOOTSTRAP_GATEWAY_TOKEN", token);
    }
    command.output().await.expect("the binary runs")
}

fn stdout(output: &Output) -> String {
    assert!(
        output.status.success(),
        "exit {:?}, stderr: {}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout.clone()).unwrap()
}

fn failure(output: &Output) -> String {
    assert!(!output.status.success(), "expected a failure, got {output:?}");
    String::from_utf8(output.stderr.clone()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prints_the_role_of_every_capture() {
    let supervisor = StandInSupervisor::start(Reply::census("leader")).await;
    let url = supervisor.url();
    let cases = [
        ("leader", vec![], "leader\n"),
        ("follower", vec!["--group", GROUP], "follower\n"),
        ("election-in-progress", vec![], "unknown: election in progress in roletest.prod\n"),
        (
            "no-quorum",
            vec![],
            "unknown: no quorum in roletest.prod: no more than half of its members are alive\n",
        ),
        (
            "no-services",
            vec!["--group", GROUP],
            "unknown: service group roletest.prod is not in the census (service not loaded yet?)\n",
        ),
        ("no-services", vec![], "unknown: no service is loaded on this supervisor yet\n"),
        (
            "not-a-member",
            vec![],
            "unknown: this supervisor is not a member of roletest.prod (it does not run the service)\n",
        ),
    ];
    for (fixture, extra, expected) in cases {
        supervisor.set(Reply::census(fixture));
        let mut args = vec!["--census-url", url.as_str()];
        args.extend(extra);
        assert_eq!(stdout(&role(&args, None).await), expected, "{fixture}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sends_the_gateway_token_from_the_environment() {
    let supervisor = StandInSupervisor::start_with_token(Reply::census("leader"), "s3cret").await;
    let url = supervisor.url();
    assert_eq!(stdout(&role(&["--census-url", &url], Some("s3cret")).await), "leader\n");
    let stderr = failure(&role(&["--census-url", &url], None).await);
    assert!(stderr.contains("HTTP 401"), "{stderr}");
    assert!(stderr.contains("HABITAT_BOOTSTRAP_GATEWAY_TOKEN"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fails_clearly_when_there_is_no_census() {
    let mut supervisor = StandInSupervisor::start(Reply::Body("<html>oops</html>".into())).await;
    let url = supervisor.url();
    let stderr = failure(&role(&["--census-url", &url], None).await);
    assert!(stderr.contains("not a census"), "{stderr}");

    supervisor.stop();
    let stderr = failure(&role(&["--census-url", &url], None).await);
    assert!(stderr.contains("cannot connect to the supervisor"), "{stderr}");

    let stderr = failure(&role(&["--census-url", "https://127.0.0.1:9631/census"], None).await);
    assert!(stderr.contains("must be an http:// URL"), "{stderr}");
}

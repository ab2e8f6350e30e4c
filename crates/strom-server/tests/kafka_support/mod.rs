#![allow(dead_code)]
//! What the Kafka client tests share: finding the real client tools, running them.

use std::process::{Command, Output, Stdio};
use std::time::Duration;

/// Whether an external client tool is usable. Without it a test prints why and returns
/// early, except in CI (`CI=true`), where a missing tool fails the test: CI installs them.
pub fn available(program: &str, probe: &[&str]) -> bool {
    let found = Command::new(program)
        .args(probe)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !found {
        let message =
            format!("{program} is not installed ({program} {}); see .ci/run for the install", probe.join(" "));
        if std::env::var("CI").is_ok_and(|ci| ci == "true") {
            panic!("{message}");
        }
        eprintln!("skipped: {message}");
    }
    found
}

pub fn kcat() -> bool {
    available("kcat", &["-V"])
}

pub fn kafka_python() -> bool {
    available("python3", &["-c", "import kafka"])
}

pub fn confluent_kafka() -> bool {
    available("python3", &["-c", "import confluent_kafka"])
}

/// Runs a command with stdin, on the blocking pool, failing the test after `timeout`. A
/// client still running then is killed first: a test runtime waits for its blocking tasks
/// when it shuts down, so a hung client would hang the test run instead of failing it.
pub async fn run(mut command: Command, stdin: Vec<u8>, timeout: Duration) -> Output {
    let description = format!("{command:?}");
    let mut child =
        command.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("spawn the client");
    let pid = child.id();
    let task = tokio::task::spawn_blocking(move || {
        use std::io::Write;
        let mut input = child.stdin.take().expect("piped stdin");
        let writer = std::thread::spawn(move || {
            let _ = input.write_all(&stdin);
        });
        let output = child.wait_with_output().expect("wait for the client");
        let _ = writer.join();
        output
    });
    match tokio::time::timeout(timeout, task).await {
        Ok(output) => output.expect("the client task"),
        Err(_) => {
            let _ = std::process::Command::new("kill").args(["-9", &pid.to_string()]).status();
            panic!("{description} did not finish within {timeout:?}; it was killed")
        }
    }
}

/// Runs one of the Python client scripts in `tests/kafka/` with `args`; fails the test with
/// the script's output when it fails.
pub async fn python(script: &str, args: &[String], timeout: Duration) -> String {
    let path = format!("{}/tests/kafka/{script}", env!("CARGO_MANIFEST_DIR"));
    let mut command = Command::new("python3");
    command.arg(&path).args(args);
    let output = run(command, Vec::new(), timeout).await;
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "{script} {args:?} failed ({}):\nstdout:\n{stdout}\nstderr:\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}

pub fn stdout_of(output: &Output) -> String {
    assert!(
        output.status.success(),
        "client failed ({}): {}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

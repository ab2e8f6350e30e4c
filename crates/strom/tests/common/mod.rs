#![allow(dead_code)]
//! The real `strom serve` as a child process, for tests that kill it.

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

const STARTUP_TIMEOUT_MS: u64 = 30_000;

/// The `strom serve` child process, killed when dropped so a failing test leaves no server.
pub struct TestServer {
    child: Child,
    pub url: String,
    /// The Kafka listener's `HOST:PORT`, for a server started with `start_broker`.
    pub kafka: Option<String>,
}

impl TestServer {
    /// Starts `strom serve` on `data_dir` and an ephemeral port with `config` (TOML) as its
    /// configuration, its logs appended to `log_path`, and waits for its
    /// `listening http://HOST:PORT` line.
    pub fn start(data_dir: &Path, log_path: &Path, config: &str) -> TestServer {
        Self::spawn(data_dir, log_path, config, false)
    }

    /// The same, for a server used as a Kafka broker: also waits for its
    /// `listening kafka://HOST:PORT` line.
    pub fn start_broker(data_dir: &Path, log_path: &Path, config: &str) -> TestServer {
        Self::spawn(data_dir, log_path, config, true)
    }

    fn spawn(data_dir: &Path, log_path: &Path, config: &str, broker: bool) -> TestServer {
        let log = File::options().create(true).append(true).open(log_path).expect("open the server log");
        let parent = data_dir.parent().expect("the data dir has a parent");
        let config_text = config;
        let config = data_dir.with_extension("toml");
        std::fs::write(&config, config_text).expect("write the test config");
        let mut command = Command::new(env!("CARGO_BIN_EXE_strom"));
        command
            .args(["serve", "--http-addr", "127.0.0.1:0", "--kafka-addr", "127.0.0.1:0", "--config"])
            .arg(&config)
            .arg("--data-dir")
            .arg(data_dir)
            // The server reads ./strom.toml when it exists: run where there is none.
            .current_dir(parent)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log));
        // The developer's STROM_* settings must not change the server under test.
        for (name, _) in std::env::vars_os() {
            if name.to_string_lossy().starts_with("STROM_") {
                command.env_remove(name);
            }
        }
        let mut child = command.spawn().expect("spawn strom serve");
        let stdout = child.stdout.take().expect("stdout is piped");
        let (line_sender, line_receiver) = mpsc::channel();
        let wanted = if broker { 2 } else { 1 };
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            for _ in 0..wanted {
                let _ = line_sender.send(lines.next());
            }
            // Keep reading so the server never blocks on a full pipe.
            for _ in lines {}
        });
        let mut server = TestServer { child, url: String::new(), kafka: None };
        let next_line = || match line_receiver.recv_timeout(Duration::from_millis(STARTUP_TIMEOUT_MS)) {
            Ok(Some(Ok(line))) => line,
            other => panic!(
                "strom serve did not print its listening lines ({other:?}); its log:\n{}",
                std::fs::read_to_string(log_path).unwrap_or_default()
            ),
        };
        let line = next_line();
        server.url = line
            .strip_prefix("listening ")
            .unwrap_or_else(|| panic!("unexpected first line of strom serve: {line:?}"))
            .trim_end_matches('/')
            .to_owned();
        if broker {
            let line = next_line();
            let address = line
                .strip_prefix("listening kafka://")
                .unwrap_or_else(|| panic!("unexpected second line of strom serve: {line:?}"));
            server.kafka = Some(address.trim_end_matches('/').to_owned());
        }
        server
    }

    /// SIGKILL: the process gets no chance to flush or clean up anything.
    pub fn kill(&mut self) {
        self.child.kill().expect("SIGKILL strom serve");
        self.child.wait().expect("reap strom serve");
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

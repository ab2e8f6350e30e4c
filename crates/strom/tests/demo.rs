//! `strom demo` starts, serves its shop's traffic through the real tracking API with its rules
//! loaded, and stops cleanly: the newcomer's first command must not rot.

use std::process::Command;

#[test]
fn the_demo_runs_its_shop_and_stops() {
    let dir = tempfile::tempdir().unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_strom"))
        .args(["demo", "--http-addr", "127.0.0.1:0", "--seconds", "8", "--dir"])
        .arg(dir.path())
        .env("STROM_LOG", "warn")
        .output()
        .expect("run strom demo");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "exit {:?}\nstdout:\n{stdout}\nstderr:\n{stderr}", output.status);
    assert!(stdout.contains("Strom demo: a shop"), "{stdout}");
    assert!(!stderr.contains("the collector answered") && !stderr.contains("cannot send events"), "{stderr}");
    let sent: u64 = stdout
        .lines()
        .find_map(|line| line.strip_prefix("stopping: "))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|count| count.parse().ok())
        .unwrap_or_else(|| panic!("no stopping line in:\n{stdout}"));
    assert!(sent > 50, "only {sent} events sent");
    // Its files are there for a look afterwards, and the server took its rules.
    for file in ["strom.toml", "rules/cart-abandoned.yaml", "catalog/AddToCart.json"] {
        assert!(dir.path().join(file).exists(), "{file}");
    }
    assert!(!stderr.contains("invalid rule") && !stderr.contains("refused"), "{stderr}");
}

//! Golden cases, one directory each under `tests/golden/`:
//!
//! - `rule.yaml` or `rule.toml`, and either
//! - `error.txt`: the error the rule is refused with (as displayed), or
//! - `input.jsonl` → `expected.jsonl`: the engine run with a manual clock.
//!
//! Input lines: `{"partitions": {"events": 2}}` registers partitions (the watermark waits
//! for them); `{"now": ms}` sets the wall clock; `{"event": {...}, "stream": s, "partition": p,
//! "now": ms}` processes one event (stream: the rule's first, partition 0, offsets counted
//! per partition, record timestamp = now); `{"advance": ms}` moves the wall clock and calls
//! `advance`; `{"flush": true}` finalises everything. Expected lines are the outputs in
//! order, then the engine's counters.
//!
//! `UPDATE_GOLDEN=1 cargo test -p strom-rules --test golden` rewrites the expected files;
//! review the diff before committing it.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::Arc;

use serde_json::{Value, json};
use strom_rules::{Engine, EngineConfig, Format, Input, Rule};

fn destinations() -> BTreeSet<String> {
    ["coupons".to_string(), "slack".to_string()].into()
}

fn load(dir: &Path) -> (String, Format, String) {
    for (file, format) in [("rule.yaml", Format::Yaml), ("rule.toml", Format::Toml)] {
        if let Ok(source) = std::fs::read_to_string(dir.join(file)) {
            return (source, format, file.to_string());
        }
    }
    panic!("{}: no rule.yaml or rule.toml", dir.display());
}

fn parse(dir: &Path) -> Result<Rule, String> {
    let (source, format, origin) = load(dir);
    let rule = Rule::parse(&source, format, &origin).map_err(|e| e.to_string())?;
    rule.check_destinations(&destinations()).map_err(|e| e.to_string())?;
    Ok(rule)
}

fn run(dir: &Path, rule: Rule) -> String {
    let input = std::fs::read_to_string(dir.join("input.jsonl")).expect("input.jsonl");
    let rule = Arc::new(rule);
    let first_stream = rule.streams[0].clone();
    let mut engine = Engine::new(rule, EngineConfig::default());
    let mut now = 0i64;
    let mut offsets: BTreeMap<(String, u32), u64> = BTreeMap::new();
    let mut outputs = Vec::new();
    let mut text = String::new();
    for (number, line) in input.lines().enumerate() {
        if line.trim().is_empty() || line.starts_with("//") {
            continue;
        }
        outputs.clear();
        let step: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("input line {}: {e}", number + 1));
        if let Some(ms) = step.get("now").and_then(Value::as_i64) {
            now = ms;
        }
        if let Some(partitions) = step.get("partitions").and_then(Value::as_object) {
            for (stream, count) in partitions {
                for partition in 0..count.as_u64().unwrap() as u32 {
                    engine.register_partition(stream, partition, now);
                }
            }
        }
        if let Some(event) = step.get("event") {
            let stream = step.get("stream").and_then(Value::as_str).unwrap_or(&first_stream).to_string();
            let partition = step.get("partition").and_then(Value::as_u64).unwrap_or(0) as u32;
            let offset = offsets.entry((stream.clone(), partition)).or_insert(0);
            let input = Input { stream: &stream, partition, offset: *offset, record_timestamp_ms: now, event };
            *offset += 1;
            engine.process(&input, now, &mut outputs);
        }
        if let Some(ms) = step.get("advance").and_then(Value::as_i64) {
            now = ms;
            while engine.advance(now, &mut outputs) {}
        }
        if step.get("flush").is_some() {
            engine.flush(&mut outputs);
        }
        // Which input line made the outputs: a timeout's line says when it fired.
        if !outputs.is_empty() {
            text.push_str(&format!("// input line {}\n", number + 1));
        }
        for output in &outputs {
            text.push_str(&serde_json::to_string(output).unwrap());
            text.push('\n');
        }
    }
    text.push_str(&serde_json::to_string(&json!({"counters": engine.counters()})).unwrap());
    text.push('\n');
    text
}

#[test]
fn golden_cases() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden");
    let update = std::env::var_os("UPDATE_GOLDEN").is_some();
    let mut cases: Vec<_> =
        std::fs::read_dir(&root).unwrap().map(|e| e.unwrap().path()).filter(|p| p.is_dir()).collect();
    cases.sort();
    assert!(cases.len() >= 10, "golden cases are missing from {}", root.display());
    let mut failures = Vec::new();
    for dir in &cases {
        let name = dir.file_name().unwrap().to_string_lossy().into_owned();
        let (actual, expected_file) = match parse(dir) {
            Err(error) => (format!("{error}\n"), dir.join("error.txt")),
            Ok(rule) if dir.join("input.jsonl").exists() => (run(dir, rule), dir.join("expected.jsonl")),
            Ok(_) => (String::from("(the rule was accepted)\n"), dir.join("error.txt")),
        };
        if update {
            std::fs::write(&expected_file, &actual).unwrap();
            continue;
        }
        let expected = std::fs::read_to_string(&expected_file).unwrap_or_default();
        if expected != actual {
            failures.push(format!(
                "--- {name} ({}):\nexpected:\n{expected}\nactual:\n{actual}",
                expected_file.file_name().unwrap().to_string_lossy()
            ));
        }
    }
    assert!(failures.is_empty(), "{} golden case(s) differ:\n{}", failures.len(), failures.join("\n"));
}

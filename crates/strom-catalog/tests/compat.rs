//! Compatibility verdicts as data: `tests/compat/*.json` hold schema versions (oldest first)
//! with the expected verdict per mode, and optionally the change kinds FULL reports.
//! Non-transitive modes check the last version against the one before it; transitive modes
//! against all earlier versions. A pair's transitive verdict defaults to the plain one.

use std::collections::BTreeSet;

use serde::Deserialize;
use serde_json::Value;
use strom_catalog::{Compatibility, check_compatibility};

#[derive(Deserialize)]
struct Case {
    name: String,
    versions: Vec<Value>,
    expected: std::collections::BTreeMap<String, bool>,
    kinds: Option<Vec<String>>,
}

#[test]
fn golden_compatibility_cases() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/compat");
    let mut files: Vec<_> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().path()).collect();
    files.sort();
    let (mut checked, mut failures) = (0, Vec::new());
    for file in files {
        let cases: Vec<Case> = serde_json::from_str(&std::fs::read_to_string(&file).unwrap())
            .unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        for case in cases {
            assert!(case.versions.len() >= 2, "{}: needs two versions", case.name);
            let (new, earlier) = case.versions.split_last().unwrap();
            let earlier: Vec<&Value> = earlier.iter().collect();
            for mode in Compatibility::ALL {
                let expected = case.expected.get(mode.as_str()).copied().or_else(|| {
                    let plain = mode.as_str().strip_suffix("_TRANSITIVE")?;
                    (case.versions.len() == 2).then(|| case.expected.get(plain).copied()).flatten()
                });
                let Some(expected) = expected else {
                    panic!("{}: no expected verdict for {mode}", case.name);
                };
                let differences = check_compatibility(mode, &earlier, new);
                checked += 1;
                if differences.is_empty() != expected {
                    failures.push(format!(
                        "{} [{}] under {mode}: expected compatible={expected}, got {differences:#?}",
                        file.display(),
                        case.name
                    ));
                }
            }
            if let Some(kinds) = &case.kinds {
                let reported: BTreeSet<String> =
                    check_compatibility(Compatibility::Full, &earlier, new).into_iter().map(|d| d.kind).collect();
                let expected: BTreeSet<String> = kinds.iter().cloned().collect();
                if reported != expected {
                    failures.push(format!(
                        "{} [{}]: FULL reported kinds {reported:?}, expected {expected:?}",
                        file.display(),
                        case.name
                    ));
                }
            }
        }
    }
    assert!(checked > 300, "only {checked} verdicts checked: are the data files there?");
    assert!(failures.is_empty(), "{} failures:\n{}", failures.len(), failures.join("\n"));
}

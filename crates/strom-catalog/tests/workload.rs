//! The example catalog (the repository's `catalog/`) against the shop workload's events
//! (`benches/shop_events.jsonl`): every event the generator did not break is valid, every
//! event it broke (`context.workload == "invalid"`) is not.

use std::path::Path;

use serde_json::Value;
use strom_catalog::{Catalog, CatalogConfig, Compatibility, EventKind};

#[test]
fn example_catalog_accepts_the_workload_and_refuses_its_broken_events() {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    let store = tempfile::tempdir().unwrap();
    let catalog = Catalog::open(CatalogConfig {
        dir: manifest.join("../../catalog"),
        store_dir: store.path().to_path_buf(),
        default_compatibility: Compatibility::Backward,
        pii_secret: Some(b"k".to_vec()),
    })
    .unwrap();
    let snapshot = catalog.snapshot();
    assert_eq!(snapshot.len(), 7);
    let text = std::fs::read_to_string(manifest.join("benches/shop_events.jsonl")).unwrap();
    let (mut valid, mut invalid) = (0, 0);
    for line in text.lines() {
        let event: Value = serde_json::from_str(line).unwrap();
        let kind: EventKind = event["type"].as_str().unwrap().parse().unwrap();
        let name = if kind == EventKind::Track { event["event"].as_str().unwrap() } else { "" };
        let event_type = snapshot.lookup(kind, name).unwrap_or_else(|| panic!("no type for {line}"));
        let broken = event["context"]["workload"] == "invalid";
        match event_type.validate(&event) {
            Ok(()) => {
                assert!(!broken, "a broken event passed: {line}");
                valid += 1;
            }
            Err(violations) => {
                assert!(broken, "a good event was refused: {violations:?} {line}");
                assert!(violations.iter().all(|v| v.pointer.starts_with("/properties")), "{violations:?}");
                invalid += 1;
            }
        }
    }
    assert!(valid > 900 && invalid > 5, "{valid} valid, {invalid} invalid");
}

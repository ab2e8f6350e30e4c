//! The catalog end to end: files loaded at open, changes picked up by reload, incompatible
//! files refused, the registry operations, persistence across reopen.

use std::path::Path;
use std::sync::Arc;

use serde_json::{Value, json};
use strom_catalog::{Catalog, CatalogConfig, CatalogError, Compatibility, EventKind, VersionRef, keyed_hash};

fn add_to_cart(extra_property: Option<(&str, Value)>) -> Value {
    let mut properties = json!({
        "cart_id": {"type": "string"},
        "sku": {"type": "string", "pattern": "^SKU-[0-9]{5}$"},
        "price": {"type": "number", "minimum": 0},
        "quantity": {"type": "integer", "minimum": 1, "maximum": 100}
    });
    if let Some((name, schema)) = extra_property {
        properties[name] = schema;
    }
    json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "x-strom": {"kind": "track", "stream": "events"},
        "type": "object",
        "required": ["event", "properties"],
        "properties": {
            "event": {"const": "AddToCart"},
            "properties": {"type": "object", "required": ["sku", "price"], "properties": properties}
        }
    })
}

fn identify() -> Value {
    json!({
        "x-strom": {"kind": "identify", "stream": "events"},
        "type": "object",
        "properties": {"traits": {"type": "object", "properties": {
            "email": {"type": "string", "x-strom-pii": "hash"},
            "phone": {"type": "string", "x-strom-pii": "drop"}
        }}}
    })
}

fn write(dir: &Path, name: &str, schema: &Value) {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join(format!("{name}.json")), serde_json::to_string_pretty(schema).unwrap()).unwrap();
}

fn open(root: &Path, secret: Option<&[u8]>) -> Arc<Catalog> {
    Catalog::open(CatalogConfig {
        dir: root.join("catalog"),
        store_dir: root.join("data/catalog"),
        default_compatibility: Compatibility::Backward,
        pii_secret: secret.map(<[u8]>::to_vec),
    })
    .unwrap()
}

#[test]
fn files_are_loaded_validated_and_pii_applied() {
    let root = tempfile::tempdir().unwrap();
    write(&root.path().join("catalog"), "AddToCart", &add_to_cart(None));
    write(&root.path().join("catalog"), "identify", &identify());
    let catalog = open(root.path(), Some(b"secret"));
    let snapshot = catalog.snapshot();
    assert_eq!(snapshot.types().map(|t| t.name.as_str()).collect::<Vec<_>>(), ["AddToCart", "identify"]);

    let cart = snapshot.lookup(EventKind::Track, "AddToCart").expect("track type by event name");
    assert_eq!((cart.version, cart.stream.as_str(), cart.has_pii()), (1, "events", false));
    assert!(snapshot.lookup(EventKind::Track, "Checkout").is_none());
    let good =
        json!({"type": "track", "event": "AddToCart", "properties": {"sku": "SKU-00001", "price": 9.5, "quantity": 2}});
    assert_eq!(cart.validate(&good), Ok(()));
    let bad = json!({"type": "track", "event": "AddToCart", "properties": {"sku": "SKU-1", "price": "nineteen"}});
    let violations = cart.validate(&bad).unwrap_err();
    let mut found: Vec<(&str, &str)> = violations.iter().map(|v| (v.pointer.as_str(), v.keyword.as_str())).collect();
    found.sort();
    assert_eq!(found, [("/properties/price", "type"), ("/properties/sku", "pattern")]);
    assert!(violations.iter().all(|v| !v.message.contains("nineteen")), "messages do not quote values: {violations:?}");

    let who = snapshot.lookup(EventKind::Identify, "").expect("one identify type");
    assert!(who.has_pii());
    let mut event = json!({"type": "identify", "traits": {"email": "ann@example.com", "phone": "555", "plan": "pro"}});
    who.apply_pii(&mut event, catalog.pii_secret());
    assert_eq!(event["traits"], json!({"email": keyed_hash(&json!("ann@example.com"), b"secret"), "plan": "pro"}));
}

#[test]
fn a_compatible_file_change_is_a_new_version_and_an_incompatible_one_is_refused() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("catalog");
    write(&dir, "AddToCart", &add_to_cart(None));
    let catalog = open(root.path(), Some(b"k"));
    assert!(!catalog.dir_changed());

    // Optional property with an unconstrained schema: compatible under BACKWARD.
    write(&dir, "AddToCart", &add_to_cart(Some(("coupon", json!({"description": "any value"})))));
    assert!(catalog.dir_changed());
    let report = catalog.reload().unwrap();
    assert_eq!(report.updated.len(), 1, "{report:?}");
    assert_eq!(report.updated[0].version, 2);
    assert_eq!(catalog.snapshot().lookup(EventKind::Track, "AddToCart").unwrap().version, 2);

    // A typed optional property in an open content model breaks BACKWARD (Confluent's meaning).
    write(&dir, "AddToCart", &add_to_cart(Some(("coupon", json!({"type": "integer"})))));
    let report = catalog.reload().unwrap();
    assert_eq!(report.refused.len(), 1, "{report:?}");
    let CatalogError::Incompatible { differences, mode, .. } = &report.refused[0].error else { panic!("{report:?}") };
    assert_eq!(*mode, Compatibility::Backward);
    assert_eq!(differences[0].pointer, "/properties/properties/properties/coupon/type");
    assert_eq!(differences[0].kind, "type_narrowed");
    assert_eq!(
        catalog.snapshot().lookup(EventKind::Track, "AddToCart").unwrap().version,
        2,
        "version 2 stays in force"
    );

    // The schema's own level lets the reviewed file through.
    let mut relaxed = add_to_cart(Some(("coupon", json!({"type": "integer"}))));
    relaxed["x-strom"]["compatibility"] = json!("NONE");
    write(&dir, "AddToCart", &relaxed);
    let report = catalog.reload().unwrap();
    assert_eq!(report.updated.len(), 1, "{report:?}");
    assert_eq!(catalog.versions("AddToCart").unwrap(), [1, 2, 3]);

    // Unchanged files are reported as such; a broken file is refused with a reason.
    std::fs::write(dir.join("Broken.json"), "{\"type\": ").unwrap();
    std::fs::write(dir.join("NoMeta.json"), "{\"type\": \"object\"}").unwrap();
    let report = catalog.reload().unwrap();
    assert_eq!(report.unchanged, ["AddToCart"]);
    let reasons: Vec<String> = report.refused.iter().map(|r| format!("{}: {}", r.subject, r.error)).collect();
    assert_eq!(reasons.len(), 2, "{reasons:?}");
    assert!(reasons[0].starts_with("Broken: invalid schema") && reasons[0].contains("not JSON"), "{reasons:?}");
    assert!(reasons[1].contains("no x-strom metadata"), "{reasons:?}");
}

#[test]
fn registry_operations_and_persistence() {
    let root = tempfile::tempdir().unwrap();
    let (first_id, secret) = {
        let catalog = open(root.path(), None);
        let schema = r#"{"type": "object", "properties": {"id": {"type": "string"}}}"#;
        let orders = catalog.register("orders-value", schema).unwrap();
        assert_eq!((orders.id, orders.version, orders.created), (1, 1, true));
        // The same schema (other spacing and key order) is the same id, under any subject.
        let same =
            catalog.register("orders-value", r#"{"properties":{"id":{"type":"string"}},"type":"object"}"#).unwrap();
        assert_eq!((same.id, same.version, same.created), (1, 1, false));
        let other = catalog.register("payments-value", schema).unwrap();
        assert_eq!((other.id, other.version), (1, 1));
        let raw = catalog.snapshot().raw_for_stream("orders").cloned().expect("<stream>-value is the raw type");
        assert_eq!(raw.kind, EventKind::Raw);

        let narrower = r#"{"type": "object", "required": ["id"], "properties": {"id": {"type": "string"}}}"#;
        let differences = catalog.test_compatibility("orders-value", narrower, None).unwrap();
        assert_eq!(differences.iter().map(|d| d.kind.as_str()).collect::<Vec<_>>(), ["required_attribute_added"]);
        assert!(matches!(catalog.register("orders-value", narrower), Err(CatalogError::Incompatible { .. })));
        catalog.set_compatibility(Some("orders-value"), Some(Compatibility::Forward)).unwrap();
        assert_eq!(catalog.compatibility(Some("orders-value")), Compatibility::Forward);
        let v2 = catalog.register("orders-value", narrower).unwrap();
        assert_eq!((v2.id, v2.version), (2, 2));
        assert_eq!(catalog.version("orders-value", VersionRef::Latest).unwrap().id, 2);
        assert_eq!(catalog.lookup_schema("orders-value", schema).unwrap().version, 1);
        assert!(catalog.by_id(2).unwrap().contains("required"));
        assert!(matches!(catalog.by_id(99), Err(CatalogError::SchemaNotFound(99))));

        // Deleting the latest version puts the one before back in force.
        assert_eq!(catalog.delete_version("orders-value", VersionRef::Number(2)).unwrap(), 2);
        assert_eq!(catalog.snapshot().raw_for_stream("orders").unwrap().schema_id, 1);
        assert_eq!(catalog.delete_subject("payments-value").unwrap(), [1]);
        assert_eq!(catalog.subjects(), ["orders-value"]);
        assert!(catalog.snapshot().raw_for_stream("payments").is_none());
        (orders.id, catalog.pii_secret().to_vec())
    };
    let catalog = open(root.path(), None);
    assert_eq!(catalog.pii_secret(), secret, "the generated PII key is kept");
    assert_eq!(catalog.subjects(), ["orders-value"]);
    assert_eq!(catalog.versions("orders-value").unwrap(), [1]);
    assert_eq!(catalog.snapshot().raw_for_stream("orders").unwrap().schema_id, first_id);
    assert_eq!(catalog.compatibility(Some("orders-value")), Compatibility::Forward);
    // Numbering continues after a soft delete, as in the Confluent Schema Registry.
    let again = catalog.register("payments-value", r#"{"type": "object"}"#).unwrap();
    assert_eq!((again.version, again.id), (2, 3));
}

#[test]
fn bad_input_is_refused_precisely() {
    let root = tempfile::tempdir().unwrap();
    let catalog = open(root.path(), Some(b"k"));
    let cases = [
        ("s", r#"{"$schema": "http://json-schema.org/draft-04/schema#"}"#, "unsupported $schema"),
        ("s", r#"{"$ref": "https://example.com/remote.json"}"#, "invalid schema"),
        ("s", r#"{"type": "strin"}"#, "invalid schema"),
        ("s", r#"{"x-strom": {"kind": "track"}}"#, "x-strom.stream is missing"),
        ("s", r#"{"x-strom": {"kind": "click", "stream": "e"}}"#, "unknown kind"),
        ("s", r#"{"properties": {"a": {"x-strom-pii": "encrypt"}}}"#, "must be \"hash\""),
        ("bad/name", "{}", "invalid subject name"),
    ];
    for (subject, schema, expected) in cases {
        let error = catalog.register(subject, schema).unwrap_err().to_string();
        assert!(error.contains(expected), "{schema}: {error}");
    }
    let huge = format!("{{\"description\": \"{}\"}}", "x".repeat(strom_catalog::limits::SCHEMA_BYTES_MAX));
    assert!(matches!(catalog.register("s", &huge), Err(CatalogError::Limit { .. })));

    // Two subjects may not claim one lookup key (a track type's event defaults to its subject).
    catalog.register("AddToCart", &add_to_cart(None).to_string()).unwrap();
    let mut copy = add_to_cart(None);
    copy["x-strom"]["event"] = json!("AddToCart");
    let error = catalog.register("AddToCartCopy", &copy.to_string()).unwrap_err();
    assert!(matches!(error, CatalogError::Conflict { .. }), "{error}");
}

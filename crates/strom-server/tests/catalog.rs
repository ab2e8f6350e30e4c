//! The catalog through HTTP: files loaded at start, file changes picked up, incompatible
//! files refused with their differences, Strom's admin API, the Confluent Schema Registry
//! API (round trips and error codes), and Confluent's own Python client against it.

mod common;

use std::path::Path;
use std::time::Duration;

use common::{TestServer, assert_error, status_and_json};
use serde_json::{Value, json};

fn add_to_cart(extra: Option<(&str, Value)>) -> Value {
    let mut properties = json!({"sku": {"type": "string"}, "price": {"type": "number", "minimum": 0}});
    if let Some((name, schema)) = extra {
        properties[name] = schema;
    }
    json!({
        "x-strom": {"kind": "track", "stream": "events"},
        "type": "object",
        "required": ["properties"],
        "properties": {"properties": {"type": "object", "required": ["sku"], "properties": properties}}
    })
}

fn write(dir: &Path, name: &str, schema: &Value) {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join(format!("{name}.json")), serde_json::to_vec_pretty(schema).unwrap()).unwrap();
}

/// A server whose catalog directory is `<temp>/catalog-files`, polled every 50 ms.
async fn start_with_catalog(files: &[(&str, Value)]) -> (TestServer, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let catalog_dir = dir.path().join("catalog-files");
    for (name, schema) in files {
        write(&catalog_dir, name, schema);
    }
    let configured = catalog_dir.clone();
    let server = TestServer::start_in(dir, move |config| {
        config.catalog.dir = configured;
        config.catalog.reload_interval_ms = 50;
    })
    .await;
    (server, catalog_dir)
}

async fn put(server: &TestServer, path: &str, body: impl Into<reqwest::Body>) -> (u16, Value) {
    status_and_json(server.client.put(format!("{}{path}", server.url)).body(body).send().await.unwrap()).await
}

#[tokio::test]
async fn files_load_at_start_changes_are_picked_up_and_incompatible_files_are_refused() {
    let (server, dir) = start_with_catalog(&[("AddToCart", add_to_cart(None))]).await;
    let (status, body) = server.get("/v1/catalog/types").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["types"].as_array().unwrap().len(), 1, "{body}");
    assert_eq!(body["types"][0]["name"], "AddToCart");
    assert_eq!(body["types"][0]["event"], "AddToCart");
    let (status, body) = server.get("/v1/catalog/types/AddToCart").await;
    assert_eq!((status, &body["versions"]), (200, &json!([1])), "{body}");
    assert_eq!(body["schema"]["x-strom"]["stream"], "events");

    // A compatible change on disk is picked up by the poll.
    write(&dir, "AddToCart", &add_to_cart(Some(("note", json!({"description": "free text, any type"})))));
    let mut version = 0;
    for _ in 0..100 {
        version = server.get("/v1/catalog/types/AddToCart").await.1["version"].as_u64().unwrap();
        if version == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(version, 2, "the file change was not picked up");

    // An incompatible change is refused with its differences; version 2 stays in force.
    write(&dir, "AddToCart", &add_to_cart(Some(("note", json!({"type": "integer"})))));
    let (status, report) = server.post("/v1/catalog/reload", &json!({})).await;
    assert_eq!(status, 200, "{report}");
    let refused = &report["refused"][0];
    assert_eq!(refused["name"], "AddToCart", "{report}");
    assert_eq!(refused["error"]["code"], "incompatible_schema", "{report}");
    assert_eq!(refused["error"]["detail"]["differences"][0]["kind"], "type_narrowed", "{report}");
    assert_eq!(refused["error"]["detail"]["differences"][0]["pointer"], "/properties/properties/properties/note/type");
    assert_eq!(server.get("/v1/catalog/types/AddToCart").await.1["version"], 2);

    // The same through PUT: 409 with the differences in detail.
    let incompatible = serde_json::to_vec(&add_to_cart(Some(("note", json!({"type": "integer"}))))).unwrap();
    let (status, body) = put(&server, "/v1/catalog/types/AddToCart", incompatible.clone()).await;
    assert_error(status, &body, 409, "incompatible_schema");
    assert_eq!(body["error"]["detail"]["compatibility"], "BACKWARD");
    assert_eq!(body["error"]["detail"]["differences"][0]["kind"], "type_narrowed", "{body}");
    let (status, body) = server.post_raw("/v1/catalog/types/AddToCart/compatibility", incompatible).await;
    assert_eq!((status, &body["compatible"]), (200, &json!(false)), "{body}");

    // A new type by PUT; the same body again changes nothing.
    let mut checkout = add_to_cart(None);
    checkout["x-strom"]["event"] = json!("Checkout");
    let (status, body) = put(&server, "/v1/catalog/types/Checkout", checkout.to_string()).await;
    assert_eq!((status, &body["version"]), (201, &json!(1)), "{body}");
    let (status, body) = put(&server, "/v1/catalog/types/Checkout", checkout.to_string()).await;
    assert_eq!((status, &body["created"]), (200, &json!(false)), "{body}");
    let (status, body) = server.get("/v1/catalog/types/Checkout/versions/1").await;
    assert_eq!((status, &body["schema"]["x-strom"]["event"]), (200, &json!("Checkout")), "{body}");

    // Bad input: precise errors.
    let (status, body) = put(&server, "/v1/catalog/types/Bad", "{\"type\": ").await;
    assert_error(status, &body, 422, "invalid_schema");
    let (status, body) = put(&server, "/v1/catalog/types/NoMeta", "{\"type\": \"object\"}").await;
    assert_error(status, &body, 422, "invalid_schema");
    let (status, body) =
        put(&server, "/v1/catalog/types/Big", vec![b' '; strom_catalog::limits::SCHEMA_BYTES_MAX + 1]).await;
    assert_error(status, &body, 413, "body_too_large");
    let (status, body) = server.get("/v1/catalog/types/Nope").await;
    assert_error(status, &body, 404, "type_not_found");

    // Types and versions survive a restart (the history is in the data directory).
    let dir_kept = dir.clone();
    let data = server.stop().await;
    let server = TestServer::start_in(data, move |config| config.catalog.dir = dir_kept).await;
    let (_, body) = server.get("/v1/catalog/types/AddToCart").await;
    assert_eq!(body["versions"], json!([1, 2]), "{body}");
    assert_eq!(server.get("/v1/catalog/types/Checkout").await.0, 200);
}

const SR: &str = "/schema-registry";

async fn sr_post(server: &TestServer, path: &str, body: Value) -> (u16, Value, String) {
    let response = server.client.post(format!("{}{SR}{path}", server.url)).json(&body).send().await.unwrap();
    let content_type =
        response.headers().get("content-type").map(|v| v.to_str().unwrap().to_string()).unwrap_or_default();
    let (status, body) = status_and_json(response).await;
    (status, body, content_type)
}

fn assert_sr_error(status: u16, body: &Value, expected_status: u16, code: u32) {
    assert_eq!(status, expected_status, "{body}");
    assert_eq!(body["error_code"], code, "{body}");
    assert!(body["message"].as_str().is_some_and(|m| !m.is_empty()), "{body}");
}

#[tokio::test]
async fn schema_registry_round_trips_and_error_codes() {
    let server = TestServer::start().await;
    let schema = json!({"type": "object", "properties": {"id": {"type": "string"}}});
    let (status, body, content_type) = sr_post(
        &server,
        "/subjects/orders-value/versions",
        json!({"schema": schema.to_string(), "schemaType": "JSON"}),
    )
    .await;
    assert_eq!((status, &body), (200, &json!({"id": 1})));
    assert_eq!(content_type, "application/vnd.schemaregistry.v1+json");

    // `<stream>-value` is the stream's raw event type.
    let (_, types) = server.get("/v1/catalog/types").await;
    assert_eq!(types["types"][0]["kind"], "raw", "{types}");
    assert_eq!(types["types"][0]["stream"], "orders", "{types}");

    assert_eq!(server.get(&format!("{SR}/subjects")).await, (200, json!(["orders-value"])));
    assert_eq!(server.get(&format!("{SR}/subjects/orders-value/versions")).await, (200, json!([1])));
    let (status, body) = server.get(&format!("{SR}/subjects/orders-value/versions/latest")).await;
    assert_eq!(status, 200);
    assert_eq!(
        (&body["subject"], &body["version"], &body["id"], &body["schemaType"]),
        (&json!("orders-value"), &json!(1), &json!(1), &json!("JSON"))
    );
    let stored: Value = serde_json::from_str(body["schema"].as_str().unwrap()).unwrap();
    assert_eq!(stored, schema);
    assert_eq!(server.get(&format!("{SR}/subjects/orders-value/versions/1/schema")).await, (200, schema.clone()));
    let (status, body) = server.get(&format!("{SR}/schemas/ids/1")).await;
    assert_eq!((status, &body["schemaType"]), (200, &json!("JSON")));
    assert_eq!(server.get(&format!("{SR}/schemas/ids/1/schema")).await, (200, schema.clone()));
    assert_eq!(
        server.get(&format!("{SR}/schemas/ids/1/versions")).await,
        (200, json!([{"subject": "orders-value", "version": 1}]))
    );
    assert_eq!(server.get(&format!("{SR}/schemas/types")).await, (200, json!(["JSON"])));
    let (status, body, _) =
        sr_post(&server, "/subjects/orders-value", json!({"schema": schema.to_string(), "schemaType": "JSON"})).await;
    assert_eq!((status, &body["version"], &body["id"]), (200, &json!(1), &json!(1)), "{body}");

    // Compatibility: test, refuse, configure.
    let narrower = json!({"type": "object", "required": ["id"], "properties": {"id": {"type": "string"}}});
    let request = json!({"schema": narrower.to_string(), "schemaType": "JSON"});
    let (status, body, _) =
        sr_post(&server, "/compatibility/subjects/orders-value/versions/latest", request.clone()).await;
    assert_eq!((status, &body["is_compatible"]), (200, &json!(false)), "{body}");
    assert!(body["messages"][0].as_str().unwrap().contains("REQUIRED_ATTRIBUTE_ADDED"), "{body}");
    let (status, body, _) = sr_post(&server, "/subjects/orders-value/versions", request.clone()).await;
    assert_sr_error(status, &body, 409, 409);
    assert_eq!(server.get(&format!("{SR}/config")).await, (200, json!({"compatibilityLevel": "BACKWARD"})));
    let (status, body) = server.get(&format!("{SR}/config/orders-value")).await;
    assert_sr_error(status, &body, 404, 40408);
    assert_eq!(
        server.get(&format!("{SR}/config/orders-value?defaultToGlobal=true")).await,
        (200, json!({"compatibilityLevel": "BACKWARD"}))
    );
    let response = server
        .client
        .put(format!("{}{SR}/config/orders-value", server.url))
        .json(&json!({"compatibility": "FORWARD"}))
        .send()
        .await
        .unwrap();
    assert_eq!(status_and_json(response).await, (200, json!({"compatibility": "FORWARD"})));
    let (status, body, _) = sr_post(&server, "/subjects/orders-value/versions", request).await;
    assert_eq!((status, &body), (200, &json!({"id": 2})));
    let response = server
        .client
        .put(format!("{}{SR}/config", server.url))
        .json(&json!({"compatibility": "SOMETIMES"}))
        .send()
        .await
        .unwrap();
    let (status, body) = status_and_json(response).await;
    assert_sr_error(status, &body, 422, 42203);

    // Error codes Confluent's clients act on.
    let (status, body) = server.get(&format!("{SR}/subjects/nope/versions")).await;
    assert_sr_error(status, &body, 404, 40401);
    let (status, body) = server.get(&format!("{SR}/subjects/orders-value/versions/7")).await;
    assert_sr_error(status, &body, 404, 40402);
    let (status, body) = server.get(&format!("{SR}/subjects/orders-value/versions/zero")).await;
    assert_sr_error(status, &body, 422, 42202);
    let (status, body) = server.get(&format!("{SR}/schemas/ids/99")).await;
    assert_sr_error(status, &body, 404, 40403);
    let (status, body, _) = sr_post(
        &server,
        "/subjects/x-value/versions",
        json!({"schema": "{\"type\": \"record\"}", "schemaType": "AVRO"}),
    )
    .await;
    assert_sr_error(status, &body, 422, 42201);
    assert!(body["message"].as_str().unwrap().contains("JSON Schemas only"), "{body}");
    let (status, body, _) = sr_post(
        &server,
        "/subjects/x-value/versions",
        json!({"schema": "{\"type\": \"strin\"}", "schemaType": "JSON"}),
    )
    .await;
    assert_sr_error(status, &body, 422, 42201);
    let (status, body, _) = sr_post(
        &server,
        "/subjects/x-value/versions",
        json!({"schema": "{}", "schemaType": "JSON", "references": [{"name": "a", "subject": "b", "version": 1}]}),
    )
    .await;
    assert_sr_error(status, &body, 422, 42201);
    let (status, body, _) =
        sr_post(&server, "/subjects/bad%20name/versions", json!({"schema": "{}", "schemaType": "JSON"})).await;
    assert_sr_error(status, &body, 422, 42208);

    // Soft deletes.
    let response =
        server.client.delete(format!("{}{SR}/subjects/orders-value/versions/2", server.url)).send().await.unwrap();
    assert_eq!(status_and_json(response).await, (200, json!(2)));
    assert_eq!(server.get(&format!("{SR}/subjects/orders-value/versions")).await, (200, json!([1])));
    let response = server.client.delete(format!("{}{SR}/subjects/orders-value", server.url)).send().await.unwrap();
    assert_eq!(status_and_json(response).await, (200, json!([1])));
    assert_eq!(server.get(&format!("{SR}/subjects")).await, (200, json!([])));
    assert_eq!(server.get("/v1/catalog/types").await.1["types"], json!([]));
}

/// Confluent's Python client (`confluent-kafka[schemaregistry,json]`) against the registry.
/// Skipped with a reason when Python or the package is missing, except under CI=true.
#[tokio::test]
async fn confluent_python_client_interoperates() {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/interop/schema_registry_client.py");
    let ci = std::env::var("CI").is_ok_and(|v| v == "true");
    let probe = std::process::Command::new("python3")
        .args(["-c", "import confluent_kafka.schema_registry.json_schema, jsonschema"])
        .output();
    let missing = match &probe {
        Err(error) => Some(format!("python3 cannot run: {error}")),
        Ok(output) if !output.status.success() => {
            Some(format!("the Python package is missing: {}", String::from_utf8_lossy(&output.stderr).trim()))
        }
        Ok(_) => None,
    };
    if let Some(reason) = missing {
        assert!(
            !ci,
            "CI=true and the interop test cannot run: {reason} (pip install \"confluent-kafka[schemaregistry,json]\")"
        );
        eprintln!("skipping the Confluent client interop test: {reason}");
        return;
    }
    let server = TestServer::start().await;
    let url = format!("{}{SR}", server.url);
    let output = tokio::process::Command::new("python3").arg(&script).arg(&url).output().await.unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success() && stdout.contains("interop ok"), "the client failed:\n{stdout}\n{stderr}");
}

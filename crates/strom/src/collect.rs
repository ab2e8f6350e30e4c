//! `strom sources` and `strom dead-letters`: the tracking collector's admin commands.

use anyhow::Result;
use clap::{Subcommand, ValueEnum};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::api::Api;
use crate::client::{print_raw, print_table};

#[derive(Subcommand)]
pub enum SourcesCommand {
    /// List the sources (never their keys).
    List {
        /// Print the server's JSON answer.
        #[arg(long)]
        json: bool,
    },
    /// Create a source and print its write key (shown this once; the server keeps a digest).
    Create {
        name: String,
        /// Event types the source may send (track event names or call names); repeatable.
        #[arg(long = "allowed-type", default_value = "*")]
        allowed_types: Vec<String>,
        /// What happens to events of types the catalog does not know.
        #[arg(long, value_enum, default_value_t = UnknownTypes::Accept)]
        unknown_types: UnknownTypes,
        /// Browser origins allowed to send with the key (`https://shop.example`); repeatable.
        #[arg(long = "cors-origin")]
        cors_origins: Vec<String>,
    },
    /// Add a write key to a source (rotation) and print it.
    AddKey { name: String },
    /// Delete a source made through the API; its keys stop working at once.
    Delete { name: String },
    /// Print the SHA-256 digest of a write key, for `write_keys_sha256` in strom.toml (or of
    /// an admin token, for `auth.admin_tokens_sha256`). Works offline.
    HashKey { key: String },
}

#[derive(Clone, Copy, ValueEnum)]
pub enum UnknownTypes {
    Accept,
    DeadLetter,
    Reject,
}

#[derive(Subcommand)]
pub enum DeadLettersCommand {
    /// Send dead letters through validation again and append those that pass now, once.
    Replay {
        /// Only dead letters of this event type.
        #[arg(long = "type")]
        event_type: Option<String>,
        /// Only this reason: invalid_schema, unknown_type, invalid_envelope.
        #[arg(long)]
        code: Option<String>,
        /// Only dead letters received at or after this time (ms since the epoch).
        #[arg(long)]
        since_ms: Option<i64>,
        /// Only dead letters received before this time (ms since the epoch).
        #[arg(long)]
        until_ms: Option<i64>,
        /// The dead-letter stream [default: the collector's].
        #[arg(long)]
        stream: Option<String>,
        /// Say what would happen; append nothing.
        #[arg(long)]
        dry_run: bool,
    },
}

pub async fn sources(api: &Api, command: SourcesCommand) -> Result<()> {
    match command {
        SourcesCommand::List { json: true } => print_raw(&api.get_bytes(api.url(&["v1", "sources"])).await?),
        SourcesCommand::List { json: false } => {
            let list: Value = api.get(api.url(&["v1", "sources"])).await?;
            let text = |v: &Value| match v {
                Value::String(s) => s.clone(),
                Value::Null => "-".to_string(),
                other => other.to_string(),
            };
            let rows = list["sources"].as_array().cloned().unwrap_or_default().into_iter().map(|source| {
                vec![
                    text(&source["name"]),
                    text(&source["defined_in"]),
                    text(&source["write_keys"]),
                    text(&source["allowed_types"]),
                    text(&source["unknown_types"]),
                    text(&source["cors_origins"]),
                ]
            });
            print_table(&["SOURCE", "DEFINED_IN", "KEYS", "ALLOWED_TYPES", "UNKNOWN_TYPES", "CORS_ORIGINS"], rows)
        }
        SourcesCommand::Create { name, allowed_types, unknown_types, cors_origins } => {
            let unknown = match unknown_types {
                UnknownTypes::Accept => "accept",
                UnknownTypes::DeadLetter => "dead-letter",
                UnknownTypes::Reject => "reject",
            };
            let body = json!({"name": name, "allowed_types": allowed_types, "unknown_types": unknown, "cors_origins": cors_origins});
            let created: Value = api.post(api.url(&["v1", "sources"]), serde_json::to_vec(&body)?).await?;
            eprintln!("created source {name:?}; its write key (shown this once):");
            println!("{}", created["write_key"].as_str().unwrap_or_default());
            Ok(())
        }
        SourcesCommand::AddKey { name } => {
            let added: Value = api.post(api.url(&["v1", "sources", &name, "keys"]), "{}").await?;
            println!("{}", added["write_key"].as_str().unwrap_or_default());
            Ok(())
        }
        SourcesCommand::Delete { name } => {
            api.delete(api.url(&["v1", "sources", &name])).await?;
            eprintln!("deleted source {name:?}");
            Ok(())
        }
        SourcesCommand::HashKey { key } => {
            let digest: String = Sha256::digest(key.as_bytes()).iter().map(|b| format!("{b:02x}")).collect();
            println!("{digest}");
            Ok(())
        }
    }
}

pub async fn dead_letters(api: &Api, command: DeadLettersCommand) -> Result<()> {
    match command {
        DeadLettersCommand::Replay { event_type, code, since_ms, until_ms, stream, dry_run } => {
            let mut body = serde_json::Map::new();
            let mut put = |name: &str, value: Value| {
                if !value.is_null() {
                    body.insert(name.to_string(), value);
                }
            };
            put("type", json!(event_type));
            put("code", json!(code));
            put("since_ms", json!(since_ms));
            put("until_ms", json!(until_ms));
            put("stream", json!(stream));
            put("dry_run", json!(dry_run));
            eprintln!("replaying dead letters (the server answers when the run is over)...");
            let report: Value =
                api.post(api.url(&["v1", "dead-letters", "replay"]), serde_json::to_vec(&body)?).await?;
            println!("{}", serde_json::to_string_pretty(&report)?);
            Ok(())
        }
    }
}

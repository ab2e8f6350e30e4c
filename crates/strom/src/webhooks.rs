//! `strom webhooks`: the state of webhook destinations, resuming one, making a secret.

use anyhow::Result;
use clap::Subcommand;
use serde_json::Value;

use crate::api::Api;
use crate::client::{print_raw, print_table};

#[derive(Subcommand)]
pub enum WebhooksCommand {
    /// List the destinations with their state, circuit, queue and counters.
    List {
        /// Print the server's JSON answer instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Resume a destination that a 410 Gone disabled.
    Enable {
        /// The destination's name.
        name: String,
    },
    /// Print a new random signing secret (`whsec_...`) for a destination's `secret`.
    NewSecret,
}

pub async fn webhooks(api: &Api, command: WebhooksCommand) -> Result<()> {
    match command {
        WebhooksCommand::List { json: true } => {
            print_raw(&api.get_bytes(api.url(&["v1", "webhooks", "destinations"])).await?)
        }
        WebhooksCommand::List { json: false } => {
            let list: Value = api.get(api.url(&["v1", "webhooks", "destinations"])).await?;
            let text = |v: &Value| match v {
                Value::String(s) => s.clone(),
                Value::Null => "-".to_string(),
                other => other.to_string(),
            };
            let rows = list["destinations"].as_array().cloned().unwrap_or_default().into_iter().map(|d| {
                [
                    "name",
                    "state",
                    "circuit",
                    "lag_records",
                    "in_flight",
                    "delivered",
                    "failed_attempts",
                    "dead_lettered",
                    "last_error",
                ]
                .iter()
                .map(|field| text(&d[*field]))
                .collect()
            });
            print_table(
                &["DESTINATION", "STATE", "CIRCUIT", "LAG", "IN_FLIGHT", "DELIVERED", "FAILED", "DEAD", "LAST_ERROR"],
                rows,
            )
        }
        WebhooksCommand::Enable { name } => {
            let status: Value = api.post(api.url(&["v1", "webhooks", "destinations", &name, "enable"]), "{}").await?;
            eprintln!("destination {name:?} is {}", status["state"].as_str().unwrap_or("?"));
            Ok(())
        }
        WebhooksCommand::NewSecret => {
            println!("{}", strom_webhooks::SigningKey::generate());
            Ok(())
        }
    }
}

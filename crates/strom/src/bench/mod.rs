//! `strom bench`: load generators that measure Strom.

mod http;
mod webhook;

use anyhow::Result;
use clap::Subcommand;
use reqwest::Url;

#[derive(Subcommand)]
pub enum Bench {
    /// Load a running server with produce requests over HTTP and report throughput and latency.
    Http(http::HttpBenchArgs),
    /// End to end: events over HTTP at a steady rate, each firing a rule's webhook back to
    /// this bench; reports the latency from send to webhook.
    Webhook(webhook::WebhookBenchArgs),
}

/// Runs a benchmark; `url` is the global `--url`, the server the HTTP bench loads, `token`
/// the global `--token`.
pub fn run(bench: Bench, url: &Url, token: Option<&str>) -> Result<()> {
    match bench {
        Bench::Http(args) => http::run(args, url, token),
        Bench::Webhook(args) => webhook::run(args, url),
    }
}

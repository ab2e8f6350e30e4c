//! `strom`: the command line of the Strom event platform.
//!
//! `serve` runs the server in this process; every other command is a client of a running
//! server and talks to it only through the HTTP API (`docs/HTTP_API.md`).

mod api;
mod bench;
mod client;
mod collect;
mod demo;
mod lake;
mod webhooks;

use std::io;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use reqwest::Url;

use crate::api::{Api, ApiError};

#[derive(Parser)]
#[command(name = "strom", version, about = "Strom: a durable, partitioned event log with an HTTP API")]
struct Cli {
    /// The server the client commands and the bench talk to.
    #[arg(long, global = true, env = "STROM_URL", default_value = "http://127.0.0.1:8425")]
    url: Url,
    /// Admin token for a server with `auth.admin_tokens_sha256` set (sent as a Bearer token).
    #[arg(long, global = true, env = "STROM_TOKEN", hide_env_values = true)]
    token: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server until SIGINT or SIGTERM.
    Serve(strom_server::ServeArgs),
    #[command(flatten)]
    Client(client::Command),
    /// Try Strom: a shop's traffic, rules and webhooks on this machine, printed as they fire.
    Demo(demo::DemoArgs),
    /// Run SQL over the lake (through the server, or over the files with --lake).
    Query(lake::QueryArgs),
    /// The lake's upkeep.
    #[command(subcommand)]
    Lake(lake::LakeCommand),
    /// Measure a server or the log under load.
    #[command(subcommand)]
    Bench(bench::Bench),
}

/// Idle keep-alive connections a client command keeps; it sends one request at a time.
const CLIENT_CONNECTIONS_IDLE_MAX: usize = 4;

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        // `strom consume ... | head` closes the pipe on purpose: that is the end, not a failure.
        Err(error) if is_broken_pipe(&error) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            if let Some(api_error) = error.downcast_ref::<ApiError>()
                && !api_error.detail.is_null()
            {
                eprintln!("detail: {}", api_error.detail);
            }
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<()> {
    match cli.command {
        // The server builds its own runtime and blocks until it is told to stop.
        Command::Serve(args) => strom_server::serve(args).context("the server stopped with an error"),
        Command::Client(command) => {
            let api = Api::new(cli.url, CLIENT_CONNECTIONS_IDLE_MAX, cli.token.as_deref())?;
            // A client command sends one request at a time: one thread is plenty.
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .context("cannot start the async runtime")?;
            runtime.block_on(client::run(&api, command))
        }
        Command::Demo(args) => demo::run(args),
        Command::Bench(bench) => bench::run(bench, &cli.url, cli.token.as_deref()),
        Command::Query(args) => lake::query(args, &cli.url, cli.token.as_deref()),
        Command::Lake(command) => {
            let api = Api::new(cli.url, CLIENT_CONNECTIONS_IDLE_MAX, cli.token.as_deref())?;
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .context("cannot start the async runtime")?;
            runtime.block_on(lake::lake(&api, command))
        }
    }
}

fn is_broken_pipe(error: &anyhow::Error) -> bool {
    error
        .chain()
        .filter_map(|cause| cause.downcast_ref::<io::Error>())
        .any(|cause| cause.kind() == io::ErrorKind::BrokenPipe)
}

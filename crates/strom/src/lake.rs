//! `strom query` (SQL over the lake, through the server or straight from the files with
//! `--lake`) and `strom lake compact`.

use std::io::Write;

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand, ValueEnum};
use reqwest::Url;
use serde_json::{Value, json};

use crate::api::Api;

/// The widest cell a table prints; longer values are cut with `…`.
const CELL_CHARS_MAX: usize = 60;

#[derive(Args)]
pub struct QueryArgs {
    /// One SQL statement (DataFusion's dialect). Tables are streams (`events`, `"dead-letters"`),
    /// partitioned by `date` ('YYYY-MM-DD') and `hour` ('HH').
    sql: String,
    /// How to print the answer.
    #[arg(long, value_enum, default_value_t = Format::Table)]
    format: Format,
    /// Rows printed at most (the server caps it at 100000).
    #[arg(long, default_value_t = 10_000)]
    max_rows: usize,
    /// Query the lake's files directly (a directory, file:///dir or s3://bucket/prefix with
    /// the AWS environment's credentials) instead of asking the server.
    #[arg(long, value_name = "URL")]
    lake: Option<String>,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Format {
    Table,
    Json,
    Csv,
}

#[derive(Subcommand)]
pub enum LakeCommand {
    /// Merge the small files of closed hours (older than `lake.compact_after_ms`), per
    /// partition, without changing their rows.
    Compact {
        /// Only this stream's table.
        #[arg(long)]
        stream: Option<String>,
    },
}

pub fn query(args: QueryArgs, url: &Url, token: Option<&str>) -> Result<()> {
    let runtime =
        tokio::runtime::Builder::new_multi_thread().enable_all().build().context("cannot start the async runtime")?;
    let (body, elapsed_ms) = runtime.block_on(async {
        match &args.lake {
            Some(lake) => local_query(lake, &args).await,
            None => remote_query(url, token, &args).await,
        }
    })?;
    let mut out = std::io::stdout().lock();
    match args.format {
        Format::Csv => out.write_all(&body)?,
        Format::Json => {
            out.write_all(&body)?;
            out.write_all(b"\n")?;
        }
        Format::Table => {
            let answer: Value = serde_json::from_slice(&body).context("the answer is not JSON")?;
            print_table(&mut out, &answer)?;
            let rows = answer["row_count"].as_u64().unwrap_or(0);
            let more = if answer["truncated"] == true { " (more rows exist: --max-rows)" } else { "" };
            eprintln!("({rows} rows{more}, {elapsed_ms} ms)");
        }
    }
    Ok(())
}

async fn local_query(lake: &str, args: &QueryArgs) -> Result<(Vec<u8>, u64)> {
    let url = strom_lake::LakeUrl::parse(lake).map_err(|e| anyhow::anyhow!("--lake: {e}"))?;
    let spool = std::env::temp_dir();
    let store = strom_lake::Store::open(&url, &strom_lake::S3Settings::default(), &spool)?;
    let engine = strom_lake::QueryEngine::new(store)?;
    let answer = engine.query(&args.sql, args.max_rows).await?;
    let elapsed_ms = answer.elapsed.as_millis() as u64;
    let body = match args.format {
        Format::Csv => answer.to_csv()?,
        _ => answer.to_json()?,
    };
    Ok((body, elapsed_ms))
}

async fn remote_query(url: &Url, token: Option<&str>, args: &QueryArgs) -> Result<(Vec<u8>, u64)> {
    let api = Api::new(url.clone(), 1, token)?;
    let format = if args.format == Format::Csv { "csv" } else { "json" };
    let started = std::time::Instant::now();
    let body = json!({"sql": args.sql, "format": format, "max_rows": args.max_rows});
    let response = api
        .http()
        .post(api.url(&["v1", "query"]))
        .json(&body)
        .send()
        .await
        .with_context(|| format!("cannot reach {url}"))?;
    let response = crate::api::error_for_status(response).await?;
    let bytes = response.bytes().await?;
    Ok((bytes.to_vec(), started.elapsed().as_millis() as u64))
}

fn cell(value: &Value) -> String {
    let text = match value {
        Value::Null => String::new(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    let text = text.replace(['\n', '\r', '\t'], " ");
    if text.chars().count() > CELL_CHARS_MAX {
        let cut: String = text.chars().take(CELL_CHARS_MAX - 1).collect();
        format!("{cut}…")
    } else {
        text
    }
}

fn print_table(out: &mut impl Write, answer: &Value) -> Result<()> {
    let Some(columns) = answer["columns"].as_array() else { bail!("the answer has no columns: {answer}") };
    let names: Vec<&str> = columns.iter().map(|c| c["name"].as_str().unwrap_or("?")).collect();
    let rows: Vec<Vec<String>> = answer["rows"]
        .as_array()
        .map(|rows| rows.iter().map(|row| names.iter().map(|n| cell(&row[*n])).collect()).collect())
        .unwrap_or_default();
    let widths: Vec<usize> = names
        .iter()
        .enumerate()
        .map(|(i, n)| rows.iter().map(|r| r[i].chars().count()).chain([n.chars().count()]).max().unwrap_or(0))
        .collect();
    let line = |cells: Vec<&str>| -> String {
        let padded: Vec<String> =
            cells.iter().zip(&widths).map(|(c, w)| format!("{c}{}", " ".repeat(w - c.chars().count()))).collect();
        format!("| {} |", padded.join(" | "))
    };
    let rule = format!("+-{}-+", widths.iter().map(|w| "-".repeat(*w)).collect::<Vec<_>>().join("-+-"));
    writeln!(out, "{rule}")?;
    writeln!(out, "{}", line(names.clone()))?;
    writeln!(out, "{rule}")?;
    for row in &rows {
        writeln!(out, "{}", line(row.iter().map(String::as_str).collect()))?;
    }
    writeln!(out, "{rule}")?;
    Ok(())
}

pub async fn lake(api: &Api, command: LakeCommand) -> Result<()> {
    match command {
        LakeCommand::Compact { stream } => {
            eprintln!("compacting closed hours…");
            let report: Value =
                api.post(api.url(&["v1", "lake", "compact"]), json!({"stream": stream}).to_string()).await?;
            println!("{}", serde_json::to_string_pretty(&report)?);
            Ok(())
        }
    }
}

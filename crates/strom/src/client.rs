//! The client commands: `streams`, `produce`, `consume`, `tail` and `groups`, each a few HTTP
//! requests to a running server.

use std::io::{self, Write};
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};
use reqwest::{StatusCode, Url};
use serde_json::value::RawValue;
use tokio::io::{AsyncBufRead, AsyncBufReadExt, BufReader};
use tokio::sync::mpsc;
use tokio::task::JoinSet;

use crate::api::{
    Api, ApiError, CommitRequest, Committed, Durability, GroupList, GroupOffsets, GroupPage, PartitionOffset,
    PartitionPage, ProduceAnswer, Record, StreamDescription, StreamList,
};

/// Events per produce request unless `--batch` says otherwise.
const PRODUCE_BATCH_EVENTS_DEFAULT: u32 = 100;
/// The most events `--batch` may put in one request: the most the server takes in one.
pub const BATCH_EVENTS_MAX: u32 = strom_server::REQUEST_EVENTS_MAX as u32;
/// How often a produce request refused with `429 overloaded` is tried again.
const OVERLOADED_RETRIES_MAX: u32 = 10;
/// The longest wait between those tries, whatever `Retry-After` says.
const OVERLOADED_WAIT_S_MAX: u64 = 10;
/// Records asked for per read; the API allows up to 10000.
const READ_PAGE_RECORDS_MAX: u64 = 1_000;
/// The long-poll wait of `consume --follow`; the API allows up to 30000.
const FOLLOW_WAIT_MS: u64 = 10_000;
/// Pages read ahead of printing, per `consume`.
const PAGES_AHEAD_MAX: usize = 4;
/// `tail` gives up when the server sends nothing, not even its 15 s keepalive, for this long.
const TAIL_SILENCE_MS_MAX: u64 = 45_000;
/// The longest server-sent event `tail` accepts.
const TAIL_EVENT_BYTES_MAX: usize = 16 * 1024 * 1024;

/// The commands that are a client of a running server.
#[derive(Subcommand)]
pub enum Command {
    /// Create, list, describe and delete streams.
    #[command(subcommand)]
    Streams(StreamsCommand),
    /// Write events to a stream.
    Produce(ProduceArgs),
    /// Read events from a stream, by partition or as a consumer group, as JSON lines.
    Consume(ConsumeArgs),
    /// Print new records of a stream as they arrive, as JSON lines.
    Tail(TailArgs),
    /// List consumer groups, show their offsets and lag, reset them.
    #[command(subcommand)]
    Groups(GroupsCommand),
    /// Tracking sources and their write keys.
    #[command(subcommand)]
    Sources(crate::collect::SourcesCommand),
    /// The tracking collector's dead letters.
    #[command(subcommand, name = "dead-letters")]
    DeadLetters(crate::collect::DeadLettersCommand),
    /// Webhook destinations: their state, resuming one, making a signing secret.
    #[command(subcommand)]
    Webhooks(crate::webhooks::WebhooksCommand),
}

pub async fn run(api: &Api, command: Command) -> Result<()> {
    match command {
        Command::Streams(command) => streams(api, command).await,
        Command::Produce(args) => produce(api, args).await,
        Command::Consume(args) => consume(api, args).await,
        Command::Tail(args) => tail(api, args).await,
        Command::Groups(command) => groups(api, command).await,
        Command::Sources(command) => crate::collect::sources(api, command).await,
        Command::DeadLetters(command) => crate::collect::dead_letters(api, command).await,
        Command::Webhooks(command) => crate::webhooks::webhooks(api, command).await,
    }
}

// ---------------------------------------------------------------------------------------------
// streams

#[derive(Subcommand)]
pub enum StreamsCommand {
    /// List the streams with their partitions, records and size.
    List {
        /// Print the server's JSON answer instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Create a stream; options not given take the server's defaults.
    Create(CreateStreamArgs),
    /// Show a stream's configuration and its partitions.
    Describe {
        /// The stream.
        name: String,
        /// Print the server's JSON answer instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Delete a stream and all its data.
    Delete {
        /// The stream.
        name: String,
    },
}

#[derive(Args)]
pub struct CreateStreamArgs {
    /// The stream's name: [A-Za-z0-9._-], 1 to 249 characters.
    name: String,
    /// Number of partitions (fixed for the stream's life).
    #[arg(long)]
    partitions: Option<u32>,
    /// Delete segments older than this, in milliseconds, or `forever` to keep them.
    #[arg(long, value_name = "MS|forever")]
    retention_ms: Option<Limit>,
    /// Delete the oldest segments beyond this size per partition, or `forever` to keep them.
    #[arg(long, value_name = "BYTES|forever")]
    retention_bytes: Option<Limit>,
    /// Roll to a new segment at this size.
    #[arg(long)]
    segment_bytes: Option<u64>,
    /// Roll to a new segment at this age.
    #[arg(long)]
    segment_ms: Option<u64>,
}

/// A retention bound: a number, or none (the API's `null`).
#[derive(Clone, Copy)]
enum Limit {
    Forever,
    At(u64),
}

impl FromStr for Limit {
    type Err = String;

    fn from_str(text: &str) -> Result<Limit, String> {
        if text == "forever" {
            return Ok(Limit::Forever);
        }
        text.parse().map(Limit::At).map_err(|_| format!("expected a whole number or `forever`, got {text:?}"))
    }
}

impl From<Limit> for serde_json::Value {
    fn from(limit: Limit) -> serde_json::Value {
        match limit {
            Limit::Forever => serde_json::Value::Null,
            Limit::At(value) => value.into(),
        }
    }
}

async fn streams(api: &Api, command: StreamsCommand) -> Result<()> {
    match command {
        StreamsCommand::List { json: true } => print_raw(&api.get_bytes(api.url(&["v1", "streams"])).await?),
        StreamsCommand::List { json: false } => {
            let list: StreamList = api.get(api.url(&["v1", "streams"])).await?;
            let rows = list.streams.iter().map(|stream| {
                vec![
                    stream.name.clone(),
                    stream.config.partitions.to_string(),
                    stream.log_end_offset_total.to_string(),
                    stream.size_bytes_total.to_string(),
                    limit_text(stream.config.retention_ms),
                    limit_text(stream.config.retention_bytes),
                ]
            });
            print_table(&["STREAM", "PARTITIONS", "RECORDS", "SIZE_BYTES", "RETENTION_MS", "RETENTION_BYTES"], rows)
        }
        StreamsCommand::Create(args) => {
            let mut body = serde_json::Map::new();
            body.insert("name".into(), args.name.clone().into());
            if let Some(partitions) = args.partitions {
                body.insert("partitions".into(), partitions.into());
            }
            if let Some(retention_ms) = args.retention_ms {
                body.insert("retention_ms".into(), retention_ms.into());
            }
            if let Some(retention_bytes) = args.retention_bytes {
                body.insert("retention_bytes".into(), retention_bytes.into());
            }
            if let Some(segment_bytes) = args.segment_bytes {
                body.insert("segment_bytes".into(), segment_bytes.into());
            }
            if let Some(segment_ms) = args.segment_ms {
                body.insert("segment_ms".into(), segment_ms.into());
            }
            let body = serde_json::to_vec(&body)?;
            let stream: StreamDescription = api.post(api.url(&["v1", "streams"]), body).await?;
            println!("created stream {:?} with {} partitions", stream.name, stream.config.partitions);
            Ok(())
        }
        StreamsCommand::Describe { name, json: true } => {
            print_raw(&api.get_bytes(api.url(&["v1", "streams", &name])).await?)
        }
        StreamsCommand::Describe { name, json: false } => {
            let stream: StreamDescription = api.get(api.url(&["v1", "streams", &name])).await?;
            print_description(&stream)
        }
        StreamsCommand::Delete { name } => {
            api.delete(api.url(&["v1", "streams", &name])).await?;
            println!("deleted stream {name:?}");
            Ok(())
        }
    }
}

fn print_description(stream: &StreamDescription) -> Result<()> {
    let config = &stream.config;
    println!("stream {:?}", stream.name);
    println!("  partitions       {}", config.partitions);
    println!("  retention_ms     {}", limit_text(config.retention_ms));
    println!("  retention_bytes  {}", limit_text(config.retention_bytes));
    println!("  segment_bytes    {}", config.segment_bytes);
    println!("  segment_ms       {}", limit_text(config.segment_ms));
    println!("  records          {}", stream.log_end_offset_total);
    println!("  size_bytes       {}", stream.size_bytes_total);
    println!();
    let rows = stream.partitions.iter().map(|partition| {
        vec![
            partition.partition.to_string(),
            partition.log_start_offset.to_string(),
            partition.log_end_offset.to_string(),
            partition.size_bytes.to_string(),
            partition.segments.to_string(),
            match &partition.poisoned {
                None => "-".to_owned(),
                Some(error) => error.to_string(),
            },
        ]
    });
    print_table(&["PARTITION", "LOG_START", "LOG_END", "SIZE_BYTES", "SEGMENTS", "POISONED"], rows)
}

fn limit_text(limit: Option<u64>) -> String {
    limit.map_or_else(|| "forever".to_owned(), |value| value.to_string())
}

// ---------------------------------------------------------------------------------------------
// produce

#[derive(Args)]
pub struct ProduceArgs {
    /// The stream to write to.
    stream: String,
    /// Events, each one JSON object. Without any, events are read from --file or stdin, one
    /// JSON object per line.
    #[arg(value_name = "EVENT_JSON")]
    events: Vec<String>,
    /// Read events from this file, one JSON object per line (blank lines are skipped).
    #[arg(long, short, conflicts_with = "events")]
    file: Option<PathBuf>,
    /// The key of every event (else the server takes it from userId or anonymousId).
    #[arg(long)]
    key: Option<String>,
    /// Write every event to this partition (else the key picks it, else round robin).
    #[arg(long)]
    partition: Option<u32>,
    /// When the server answers: after fsync (`sync`) or after the write to the page cache.
    #[arg(long, value_enum, default_value_t = Durability::Sync)]
    durability: Durability,
    /// Events per request.
    #[arg(long, default_value_t = PRODUCE_BATCH_EVENTS_DEFAULT,
          value_parser = clap::value_parser!(u32).range(1..=i64::from(BATCH_EVENTS_MAX)))]
    batch: u32,
}

async fn produce(api: &Api, args: ProduceArgs) -> Result<()> {
    let mut url = api.url(&["v1", "streams", &args.stream, "events"]);
    {
        let mut query = url.query_pairs_mut();
        query.append_pair("durability", args.durability.as_str());
        if let Some(key) = &args.key {
            query.append_pair("key", key);
        }
        if let Some(partition) = args.partition {
            query.append_pair("partition", &partition.to_string());
        }
    }
    let mut producer = Producer { api, url, acknowledged: 0 };
    let batch_events = args.batch as usize;
    let outcome = if args.events.is_empty() {
        match &args.file {
            Some(path) => match tokio::fs::File::open(path).await {
                Ok(file) => {
                    let source = path.display().to_string();
                    produce_lines(BufReader::new(file), &source, batch_events, &mut producer).await
                }
                Err(error) => Err(anyhow::Error::new(error).context(format!("cannot open {}", path.display()))),
            },
            None => produce_lines(BufReader::new(tokio::io::stdin()), "stdin", batch_events, &mut producer).await,
        }
    } else {
        produce_arguments(&args.events, batch_events, &mut producer).await
    };
    // The count is printed on failure too: it says where a retry should resume.
    println!("acknowledged {} events", producer.acknowledged);
    outcome
}

/// Events given as arguments are all checked before the first is sent.
async fn produce_arguments(texts: &[String], batch_events: usize, producer: &mut Producer<'_>) -> Result<()> {
    let mut events = Vec::with_capacity(texts.len());
    for (index, text) in texts.iter().enumerate() {
        events.push(parse_event(text).with_context(|| format!("event argument {}", index + 1))?);
    }
    for batch in events.chunks(batch_events) {
        producer.send(batch).await?;
    }
    Ok(())
}

/// Sends JSON lines in batches. A bad line stops the run: every event before it is sent,
/// nothing after it, so the acknowledged count says where to resume.
async fn produce_lines(
    input: impl AsyncBufRead + Unpin,
    source: &str,
    batch_events: usize,
    producer: &mut Producer<'_>,
) -> Result<()> {
    let mut lines = input.lines();
    let mut line_number = 0u64;
    let mut batch = Vec::with_capacity(batch_events);
    loop {
        let line = lines.next_line().await.with_context(|| format!("{source} line {}: cannot read", line_number + 1));
        let line = match line {
            Ok(Some(line)) => line,
            Ok(None) => break,
            Err(error) => {
                producer.send(&batch).await?;
                return Err(error);
            }
        };
        line_number += 1;
        if line.trim().is_empty() {
            continue;
        }
        match parse_event(&line) {
            Ok(event) => batch.push(event),
            Err(error) => {
                producer.send(&batch).await?;
                return Err(error.context(format!("{source} line {line_number}")));
            }
        }
        if batch.len() == batch_events {
            producer.send(&batch).await?;
            batch.clear();
        }
    }
    producer.send(&batch).await
}

fn parse_event(text: &str) -> Result<Box<RawValue>> {
    let event: Box<RawValue> = serde_json::from_str(text).context("invalid JSON")?;
    if !event.get().starts_with('{') {
        bail!("an event must be a JSON object");
    }
    Ok(event)
}

struct Producer<'a> {
    api: &'a Api,
    url: Url,
    acknowledged: u64,
}

impl Producer<'_> {
    /// Sends one batch as one request; a `429 overloaded` is tried again after `Retry-After`.
    async fn send(&mut self, events: &[Box<RawValue>]) -> Result<()> {
        if events.is_empty() {
            return Ok(());
        }
        let body = bytes::Bytes::from(encode_array(events.iter().map(|event| event.get().as_bytes())));
        let mut retries = 0;
        loop {
            let error = match self.api.post::<ProduceAnswer>(self.url.clone(), body.clone()).await {
                Ok(answer) if answer.results.len() == events.len() => {
                    self.acknowledged += events.len() as u64;
                    return Ok(());
                }
                Ok(answer) => {
                    bail!("the server acknowledged {} results for {} events", answer.results.len(), events.len())
                }
                Err(error) => error,
            };
            let overloaded =
                error.downcast_ref::<ApiError>().filter(|api_error| api_error.status == StatusCode::TOO_MANY_REQUESTS);
            match overloaded {
                Some(api_error) if retries < OVERLOADED_RETRIES_MAX => {
                    let wait_s = api_error.retry_after_s.unwrap_or(1).clamp(1, OVERLOADED_WAIT_S_MAX);
                    tokio::time::sleep(Duration::from_secs(wait_s)).await;
                    retries += 1;
                }
                _ => return Err(error),
            }
        }
    }
}

/// `[e1,e2,...]` from events that are each already JSON text.
fn encode_array<'a>(events: impl IntoIterator<Item = &'a [u8]>) -> Vec<u8> {
    let mut body = vec![b'['];
    for (index, event) in events.into_iter().enumerate() {
        if index > 0 {
            body.push(b',');
        }
        body.extend_from_slice(event);
    }
    body.push(b']');
    body
}

// ---------------------------------------------------------------------------------------------
// consume

#[derive(Args)]
#[command(group = clap::ArgGroup::new("start").multiple(false))]
pub struct ConsumeArgs {
    /// The stream to read.
    stream: String,
    /// Read only this partition (default: every partition).
    #[arg(long)]
    partition: Option<u32>,
    /// Start at this offset in every partition read.
    #[arg(long, group = "start", conflicts_with = "group")]
    offset: Option<u64>,
    /// Start at the first record at or after this time (ms since the epoch).
    #[arg(long, group = "start", conflicts_with = "group")]
    timestamp: Option<i64>,
    /// Start at the log start (the default; with --group: where the group has no offset yet).
    #[arg(long, group = "start")]
    from_start: bool,
    /// Read as this consumer group, from its committed offsets, committing after each page
    /// printed (at-least-once). Move a group's offsets with `strom groups reset`.
    #[arg(long)]
    group: Option<String>,
    /// Stop after this many events.
    #[arg(long)]
    max: Option<u64>,
    /// Keep waiting for new events at the end instead of stopping.
    #[arg(long)]
    follow: bool,
}

/// Where a direct read of a partition starts.
#[derive(Clone, Copy)]
enum Position {
    LogStart,
    Offset(u64),
    Timestamp(i64),
}

async fn consume(api: &Api, args: ConsumeArgs) -> Result<()> {
    let mut output = JsonLines::stdout();
    match &args.group {
        Some(group) => consume_group(api, &args, group, &mut output).await,
        None => consume_partitions(api, &args, &mut output).await,
    }
}

async fn consume_partitions(api: &Api, args: &ConsumeArgs, output: &mut JsonLines) -> Result<()> {
    let start = match (args.offset, args.timestamp) {
        (Some(offset), _) => Position::Offset(offset),
        (None, Some(timestamp)) => Position::Timestamp(timestamp),
        (None, None) => Position::LogStart,
    };
    let partitions = match args.partition {
        Some(partition) => vec![partition],
        None => {
            let stream: StreamDescription = api.get(api.url(&["v1", "streams", &args.stream])).await?;
            stream.partitions.iter().map(|partition| partition.partition).collect()
        }
    };
    let page_records = args.max.unwrap_or(u64::MAX).clamp(1, READ_PAGE_RECORDS_MAX);
    let wait_ms = if args.follow { FOLLOW_WAIT_MS } else { 0 };
    let (pages, mut received) = mpsc::channel(PAGES_AHEAD_MAX);
    // Dropping the set at return stops readers still waiting on a long poll.
    let mut readers = JoinSet::new();
    let reader =
        PartitionReader { api: api.clone(), stream: args.stream.clone(), page_records, wait_ms, follow: args.follow };
    if args.follow {
        // Following waits at the end of every partition at once, so each gets its own reader.
        for partition in partitions {
            readers.spawn(reader.clone().run(partition, start, pages.clone()));
        }
        drop(pages);
    } else {
        // A bounded read prints the partitions one after the other, each in offset order.
        readers.spawn(async move {
            for partition in partitions {
                if !reader.clone().run(partition, start, pages.clone()).await {
                    return false;
                }
            }
            true
        });
    }
    let mut remaining = args.max.unwrap_or(u64::MAX);
    while let Some(page) = received.recv().await {
        for record in page? {
            if remaining == 0 {
                break;
            }
            output.write(&record)?;
            remaining -= 1;
        }
        output.flush()?;
        if remaining == 0 {
            break;
        }
    }
    Ok(())
}

#[derive(Clone)]
struct PartitionReader {
    api: Api,
    stream: String,
    page_records: u64,
    wait_ms: u64,
    follow: bool,
}

impl PartitionReader {
    /// Reads one partition page by page into `pages`; an error is the last thing sent.
    /// Returns whether the partition was read to its end (false: an error, or `--max` reached).
    async fn run(self, partition: u32, start: Position, pages: mpsc::Sender<Result<Vec<Record>>>) -> bool {
        let mut position = start;
        loop {
            let page = match self.read(partition, position).await {
                Ok(page) => page,
                Err(error) => {
                    let _ = pages.send(Err(error)).await;
                    return false;
                }
            };
            let at_end = page.next_offset >= page.log_end_offset;
            position = Position::Offset(page.next_offset);
            if !page.events.is_empty() {
                let mut records = page.events;
                for record in &mut records {
                    record.partition = partition;
                }
                if pages.send(Ok(records)).await.is_err() {
                    return false; // The printer has stopped (`--max` reached).
                }
            }
            if at_end && !self.follow {
                return true;
            }
        }
    }

    async fn read(&self, partition: u32, position: Position) -> Result<PartitionPage> {
        let partition_text = partition.to_string();
        let mut url = self.api.url(&["v1", "streams", &self.stream, "partitions", &partition_text, "events"]);
        {
            let mut query = url.query_pairs_mut();
            match position {
                Position::LogStart => {}
                Position::Offset(offset) => {
                    query.append_pair("offset", &offset.to_string());
                }
                Position::Timestamp(timestamp) => {
                    query.append_pair("timestamp", &timestamp.to_string());
                }
            }
            query.append_pair("max_records", &self.page_records.to_string());
            query.append_pair("wait_ms", &self.wait_ms.to_string());
        }
        self.api.get(url).await
    }
}

async fn consume_group(api: &Api, args: &ConsumeArgs, group: &str, output: &mut JsonLines) -> Result<()> {
    let read_url = api.url(&["v1", "groups", group, "streams", &args.stream, "events"]);
    let commit_url = api.url(&["v1", "groups", group, "offsets"]);
    let wait_ms = if args.follow { FOLLOW_WAIT_MS } else { 0 };
    let mut remaining = args.max.unwrap_or(u64::MAX);
    while remaining > 0 {
        let mut url = read_url.clone();
        {
            let mut query = url.query_pairs_mut();
            if let Some(partition) = args.partition {
                query.append_pair("partition", &partition.to_string());
            }
            if args.from_start {
                query.append_pair("reset", "earliest");
            }
            query.append_pair("max_records", &remaining.min(READ_PAGE_RECORDS_MAX).to_string());
            query.append_pair("wait_ms", &wait_ms.to_string());
        }
        let mut page: GroupPage = api.get(url).await?;
        if page.events.is_empty() {
            if args.follow {
                continue;
            }
            break;
        }
        let mut offsets = page.offsets;
        if page.events.len() as u64 > remaining {
            // More than asked for: commit only what is printed, never past it.
            page.events.truncate(remaining as usize);
            offsets = next_offsets(&page.events);
        }
        for record in &page.events {
            output.write(record)?;
        }
        output.flush()?;
        remaining -= page.events.len() as u64;
        let body = serde_json::to_vec(&CommitRequest { stream: &args.stream, offsets: &offsets })?;
        let _: Committed = api.post(commit_url.clone(), body).await.context("committing the group's offsets")?;
    }
    Ok(())
}

/// The offset after the last record of each partition in `records`.
fn next_offsets(records: &[Record]) -> Vec<PartitionOffset> {
    let mut offsets: Vec<PartitionOffset> = Vec::new();
    for record in records {
        let next = PartitionOffset { partition: record.partition, offset: record.offset + 1 };
        match offsets.iter_mut().find(|known| known.partition == record.partition) {
            Some(known) => known.offset = known.offset.max(next.offset),
            None => offsets.push(next),
        }
    }
    offsets
}

// ---------------------------------------------------------------------------------------------
// tail

#[derive(Args)]
pub struct TailArgs {
    /// The stream to follow.
    stream: String,
    /// Follow only this partition (default: every partition).
    #[arg(long)]
    partition: Option<u32>,
    /// Start with the records already stored instead of only new ones.
    #[arg(long)]
    from_start: bool,
}

async fn tail(api: &Api, args: TailArgs) -> Result<()> {
    let mut url = api.url(&["v1", "streams", &args.stream, "tail"]);
    {
        let mut query = url.query_pairs_mut();
        if let Some(partition) = args.partition {
            query.append_pair("partition", &partition.to_string());
        }
        query.append_pair("from", if args.from_start { "start" } else { "end" });
    }
    let mut response = api.open_stream(url).await?;
    let mut parser = SseParser::default();
    let mut output = JsonLines::stdout();
    loop {
        let chunk = tokio::time::timeout(Duration::from_millis(TAIL_SILENCE_MS_MAX), response.chunk())
            .await
            .with_context(|| format!("the server sent nothing for {TAIL_SILENCE_MS_MAX} ms"))?
            .context("reading the tail stream")?;
        let Some(chunk) = chunk else {
            bail!("the server ended the tail stream");
        };
        for event in parser.feed(&chunk)? {
            match event.name.as_str() {
                "record" => output.write_raw(event.data.as_bytes())?,
                // Not in the API today; an error event in the API's shape is shown as one.
                "error" => match serde_json::from_str::<serde_json::Value>(&event.data) {
                    Ok(body) if body.get("error").is_some() => {
                        let code = body["error"]["code"].as_str().unwrap_or("unknown");
                        let message = body["error"]["message"].as_str().unwrap_or("");
                        bail!("{code}: {message}");
                    }
                    _ => bail!("tail_error: {}", event.data),
                },
                _ => {} // Server-sent events of other kinds are ignored, as the SSE spec says.
            }
        }
        output.flush()?;
    }
}

/// One server-sent event: its `event:` name (default `message`) and its `data:` lines.
#[derive(Debug, PartialEq)]
struct SseEvent {
    name: String,
    data: String,
}

/// An incremental parser of the `text/event-stream` format, fed chunks as they arrive.
#[derive(Default)]
struct SseParser {
    pending: Vec<u8>,
    name: Option<String>,
    data: Option<String>,
}

impl SseParser {
    fn feed(&mut self, chunk: &[u8]) -> Result<Vec<SseEvent>> {
        self.pending.extend_from_slice(chunk);
        let mut events = Vec::new();
        let mut consumed = 0;
        while let Some(length) = self.pending[consumed..].iter().position(|&byte| byte == b'\n') {
            let line = &self.pending[consumed..consumed + length];
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            let line = std::str::from_utf8(line).context("the tail stream is not UTF-8")?.to_owned();
            consumed += length + 1;
            if let Some(event) = self.line(&line) {
                events.push(event);
            }
        }
        self.pending.drain(..consumed);
        let event_bytes = self.pending.len() + self.data.as_ref().map_or(0, String::len);
        if event_bytes > TAIL_EVENT_BYTES_MAX {
            bail!("a server-sent event is over {TAIL_EVENT_BYTES_MAX} bytes");
        }
        Ok(events)
    }

    fn line(&mut self, line: &str) -> Option<SseEvent> {
        if line.is_empty() {
            let name = self.name.take().unwrap_or_else(|| "message".to_owned());
            return self.data.take().map(|data| SseEvent { name, data });
        }
        if line.starts_with(':') {
            return None; // A comment, such as the keepalive.
        }
        let (field, value) = line.split_once(':').unwrap_or((line, ""));
        let value = value.strip_prefix(' ').unwrap_or(value);
        match field {
            "event" => self.name = Some(value.to_owned()),
            "data" => match &mut self.data {
                Some(data) => {
                    data.push('\n');
                    data.push_str(value);
                }
                None => self.data = Some(value.to_owned()),
            },
            _ => {} // `id` and `retry` mean nothing to a tail that does not reconnect.
        }
        None
    }
}

// ---------------------------------------------------------------------------------------------
// groups

#[derive(Subcommand)]
pub enum GroupsCommand {
    /// List the consumer groups.
    List,
    /// Show a group's committed offsets and its lag, per stream and partition.
    Offsets {
        /// The group.
        group: String,
        /// Print the server's JSON answer instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Move a group's offsets in one stream, backwards or forwards.
    Reset {
        /// The group.
        group: String,
        /// The stream whose offsets move.
        #[arg(long)]
        stream: String,
        /// Where to: `earliest`, `latest`, `offset:N` or `timestamp:MS`.
        #[arg(long, value_name = "earliest|latest|offset:N|timestamp:MS")]
        to: ResetTarget,
        /// Move only this partition (repeat for more; default: every partition).
        #[arg(long = "partition", value_name = "PARTITION")]
        partitions: Vec<u32>,
    },
}

/// Where `groups reset` moves a group's offsets.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum ResetTarget {
    Earliest,
    Latest,
    Offset(u64),
    Timestamp(i64),
}

impl FromStr for ResetTarget {
    type Err = String;

    fn from_str(text: &str) -> Result<ResetTarget, String> {
        let bad = || format!("expected earliest, latest, offset:N or timestamp:MS, got {text:?}");
        match text.split_once(':') {
            None if text == "earliest" => Ok(ResetTarget::Earliest),
            None if text == "latest" => Ok(ResetTarget::Latest),
            Some(("offset", offset)) => offset.parse().map(ResetTarget::Offset).map_err(|_| bad()),
            Some(("timestamp", timestamp)) => timestamp.parse().map(ResetTarget::Timestamp).map_err(|_| bad()),
            _ => Err(bad()),
        }
    }
}

impl ResetTarget {
    /// The API's `to`: `"earliest"`, `"latest"`, `{"offset": N}` or `{"timestamp": MS}`.
    fn to_json(self) -> serde_json::Value {
        match self {
            ResetTarget::Earliest => "earliest".into(),
            ResetTarget::Latest => "latest".into(),
            ResetTarget::Offset(offset) => serde_json::json!({ "offset": offset }),
            ResetTarget::Timestamp(timestamp) => serde_json::json!({ "timestamp": timestamp }),
        }
    }
}

async fn groups(api: &Api, command: GroupsCommand) -> Result<()> {
    match command {
        GroupsCommand::List => {
            let list: GroupList = api.get(api.url(&["v1", "groups"])).await?;
            let mut out = io::stdout().lock();
            for group in list.groups {
                writeln!(out, "{group}")?;
            }
            Ok(())
        }
        GroupsCommand::Offsets { group, json: true } => {
            print_raw(&api.get_bytes(api.url(&["v1", "groups", &group, "offsets"])).await?)
        }
        GroupsCommand::Offsets { group, json: false } => {
            let offsets: GroupOffsets = api.get(api.url(&["v1", "groups", &group, "offsets"])).await?;
            let rows = offsets.streams.iter().flat_map(|stream| {
                stream.partitions.iter().map(|partition| {
                    vec![
                        stream.stream.clone(),
                        partition.partition.to_string(),
                        partition.offset.to_string(),
                        partition.log_end_offset.to_string(),
                        partition.lag.to_string(),
                    ]
                })
            });
            print_table(&["STREAM", "PARTITION", "OFFSET", "LOG_END", "LAG"], rows)
        }
        GroupsCommand::Reset { group, stream, to, partitions } => {
            let mut body = serde_json::json!({ "stream": stream, "to": to.to_json() });
            if !partitions.is_empty() {
                body["partitions"] = partitions.into();
            }
            let url = api.url(&["v1", "groups", &group, "offsets", "reset"]);
            let committed: Committed = api.post(url, serde_json::to_vec(&body)?).await?;
            let rows = committed
                .committed
                .iter()
                .map(|position| vec![position.partition.to_string(), position.offset.to_string()]);
            print_table(&["PARTITION", "OFFSET"], rows)
        }
    }
}

// ---------------------------------------------------------------------------------------------
// output

/// Records as JSON lines on stdout, buffered and flushed after each page so a pipe sees them
/// as they arrive.
struct JsonLines {
    out: io::BufWriter<io::Stdout>,
    line: Vec<u8>,
}

impl JsonLines {
    fn stdout() -> JsonLines {
        JsonLines { out: io::BufWriter::new(io::stdout()), line: Vec::new() }
    }

    fn write(&mut self, record: &Record) -> Result<()> {
        self.line.clear();
        serde_json::to_writer(&mut self.line, record)?;
        self.line.push(b'\n');
        self.out.write_all(&self.line)?;
        Ok(())
    }

    fn write_raw(&mut self, json: &[u8]) -> Result<()> {
        self.out.write_all(json)?;
        self.out.write_all(b"\n")?;
        Ok(())
    }

    fn flush(&mut self) -> Result<()> {
        self.out.flush()?;
        Ok(())
    }
}

pub(crate) fn print_raw(body: &[u8]) -> Result<()> {
    let mut out = io::stdout().lock();
    out.write_all(body)?;
    if !body.ends_with(b"\n") {
        out.write_all(b"\n")?;
    }
    Ok(())
}

/// Left-aligned columns, two spaces apart.
pub(crate) fn print_table(header: &[&str], rows: impl Iterator<Item = Vec<String>>) -> Result<()> {
    let rows: Vec<Vec<String>> = rows.collect();
    let mut widths: Vec<usize> = header.iter().map(|title| title.len()).collect();
    for row in &rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.len());
        }
    }
    let mut out = io::stdout().lock();
    let header = header.iter().map(|title| title.to_string()).collect::<Vec<_>>();
    for row in std::iter::once(&header).chain(&rows) {
        let mut line = String::new();
        for (index, (cell, width)) in row.iter().zip(&widths).enumerate() {
            if index + 1 == row.len() {
                line.push_str(cell);
            } else {
                line.push_str(&format!("{cell:<width$}  "));
            }
        }
        writeln!(out, "{line}")?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sse_parser_splits_events_across_chunks() {
        // (chunks fed in turn, (event name, data) expected after the last one)
        type Case<'a> = (&'a [&'a str], &'a [(&'a str, &'a str)]);
        let cases: &[Case] = &[
            (&["event: record\ndata: {\"offset\":1}\n\n"], &[("record", "{\"offset\":1}")]),
            (&["event: rec", "ord\r\ndata: {}\r\n", "\r\n"], &[("record", "{}")]),
            (&[": keepalive\n\n"], &[]),
            (&["data: a\ndata: b\n\n"], &[("message", "a\nb")]),
            (&["event: record\ndata: 1\n\nevent: record\ndata:2\n\n"], &[("record", "1"), ("record", "2")]),
            (&["event: record\ndata: 1\n"], &[]),
        ];
        for (chunks, expected) in cases {
            let mut parser = SseParser::default();
            let mut events = Vec::new();
            for chunk in *chunks {
                events.extend(parser.feed(chunk.as_bytes()).unwrap());
            }
            let expected: Vec<SseEvent> = expected
                .iter()
                .map(|(name, data)| SseEvent { name: name.to_string(), data: data.to_string() })
                .collect();
            assert_eq!(events, expected, "chunks {chunks:?}");
        }
    }

    #[test]
    fn reset_targets_parse() {
        let cases = [
            ("earliest", Ok(ResetTarget::Earliest)),
            ("latest", Ok(ResetTarget::Latest)),
            ("offset:42", Ok(ResetTarget::Offset(42))),
            ("timestamp:1700000000000", Ok(ResetTarget::Timestamp(1_700_000_000_000))),
            ("offset:", Err(())),
            ("offset:-1", Err(())),
            ("start", Err(())),
        ];
        for (text, expected) in cases {
            assert_eq!(text.parse::<ResetTarget>().map_err(|_| ()), expected, "{text}");
        }
    }

    #[test]
    fn events_must_be_json_objects() {
        let cases = [
            (r#"{"a":1}"#, Ok(r#"{"a":1}"#)),
            (" {\"a\": [1, 2]}\r", Ok("{\"a\": [1, 2]}")),
            ("[1]", Err(())),
            ("42", Err(())),
            ("{\"a\":", Err(())),
        ];
        for (text, expected) in cases {
            let parsed = parse_event(text);
            assert_eq!(parsed.as_ref().map(|event| event.get()).map_err(|_| ()), expected, "{text:?}");
        }
    }
}

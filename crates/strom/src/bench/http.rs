//! `strom bench http`: many concurrent produce requests against a running server.
//!
//! Every request body is encoded before the clock starts, so the client spends its CPU on
//! HTTP and not on JSON; on a 2-core machine the client shares the cores with the server.

use std::collections::BTreeMap;
use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail};
use bytes::Bytes;
use clap::Args;
use hdrhistogram::Histogram;
use indicatif::{ProgressBar, ProgressStyle};
use reqwest::header::{CONTENT_TYPE, HeaderValue};
use reqwest::{Client, Url};
use serde_json::value::RawValue;

use crate::api::{Api, ApiError, Durability, REQUEST_TIMEOUT_MS, StreamDescription};
use crate::client::BATCH_EVENTS_MAX;

/// Events sent, or encoded and sent in turn for `--duration-s`, unless `--events` says otherwise.
const EVENTS_DEFAULT: u64 = 200_000;
const EVENTS_MAX: u64 = 100_000_000;
const DURATION_S_MAX: u64 = 24 * 3600;
const CONCURRENCY_MAX: u32 = 4096;
const EVENT_BYTES_MAX: usize = 1024 * 1024;
/// All pre-encoded bodies together; past this, use `--duration-s`, which reuses them.
const ENCODED_BYTES_MAX: usize = 4 * 1024 * 1024 * 1024;
/// Distinct userIds of synthesized events, so keys spread over every partition.
const USERS: u64 = 100_000;
/// Latencies above this are recorded as this; the request timeout ends them sooner anyway.
const LATENCY_US_MAX: u64 = 120_000_000;
const PROGRESS_INTERVAL_MS: u64 = 100;

#[derive(Args)]
pub struct HttpBenchArgs {
    /// The stream to write to; created with --partitions if it does not exist.
    #[arg(long, default_value = "bench")]
    stream: String,
    /// Partitions of the stream when the bench creates it.
    #[arg(long, default_value_t = 4)]
    partitions: u32,
    /// Events to send [default: 200000, or every line of --input].
    #[arg(long, conflicts_with = "duration_s",
          value_parser = clap::value_parser!(u64).range(1..=EVENTS_MAX))]
    events: Option<u64>,
    /// Send for this many seconds instead, reusing 200000 encoded events (or --input's) in turn.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=DURATION_S_MAX))]
    duration_s: Option<u64>,
    /// Events per request; 1 sends each event alone as a JSON object, more as a JSON array.
    #[arg(long, default_value_t = 100,
          value_parser = clap::value_parser!(u32).range(1..=i64::from(BATCH_EVENTS_MAX)))]
    batch: u32,
    /// Requests in flight at once, each on its own keep-alive connection.
    #[arg(long, default_value_t = 64,
          value_parser = clap::value_parser!(u32).range(1..=i64::from(CONCURRENCY_MAX)))]
    concurrency: u32,
    /// Size of each synthesized Segment-style track event, in bytes.
    #[arg(long, default_value_t = 500, conflicts_with = "input",
          value_parser = clap::value_parser!(u64).range(1..=EVENT_BYTES_MAX as u64))]
    event_bytes: u64,
    /// Send the events of this file (one JSON object per line) instead of synthesized ones,
    /// for example the output of `python3 shared/workload/shop_events.py`.
    #[arg(long)]
    input: Option<PathBuf>,
    /// When the server answers: after fsync (`sync`) or after the write to the page cache.
    #[arg(long, value_enum, default_value_t = Durability::Sync)]
    durability: Durability,
    /// Send through the Segment-compatible tracking API with this write key instead:
    /// `/v1/batch` (or `/v1/track` with --batch 1), validated, deduplicated and enriched.
    /// Events go to the stream their catalog type names; --stream is not used.
    #[arg(long, env = "STROM_WRITE_KEY", hide_env_values = true)]
    write_key: Option<String>,
    /// Print the result as one JSON object on stdout.
    #[arg(long)]
    json: bool,
}

pub fn run(args: HttpBenchArgs, url: &Url, token: Option<&str>) -> Result<()> {
    let runtime =
        tokio::runtime::Builder::new_multi_thread().enable_all().build().context("cannot start the async runtime")?;
    runtime.block_on(bench(args, url, token))
}

async fn bench(args: HttpBenchArgs, url: &Url, token: Option<&str>) -> Result<()> {
    // With a write key the requests carry their own Basic auth; the admin token is for
    // creating the stream of the plain produce bench.
    let token = if args.write_key.is_some() { None } else { token };
    let api = Api::new(url.clone(), args.concurrency as usize, token)?;
    let partitions = match &args.write_key {
        Some(_) => 0,
        None => ensure_stream(&api, &args.stream, args.partitions).await?,
    };
    let workload = Arc::new(Workload::encode(&args)?);
    let stop = match args.duration_s {
        Some(duration_s) => Stop::At(Duration::from_secs(duration_s)),
        None => Stop::AfterBodies(workload.bodies.len() as u64),
    };
    let produce_url = match &args.write_key {
        Some(_) if args.batch == 1 => api.url(&["v1", "track"]),
        Some(_) => api.url(&["v1", "batch"]),
        None => {
            let mut url = api.url(&["v1", "streams", &args.stream, "events"]);
            url.query_pairs_mut().append_pair("durability", args.durability.as_str());
            url
        }
    };
    let authorization = args.write_key.as_ref().map(|key| {
        use base64::Engine;
        let encoded = base64::engine::general_purpose::STANDARD.encode(format!("{key}:"));
        HeaderValue::from_str(&format!("Basic {encoded}")).expect("base64 is a valid header value")
    });

    let progress = Progress::start(&stop, workload.events);
    let next_body = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..args.concurrency {
        let worker = Worker {
            http: api.http().clone(),
            url: produce_url.clone(),
            authorization: authorization.clone(),
            workload: Arc::clone(&workload),
            next_body: Arc::clone(&next_body),
            events_done: Arc::clone(&progress.events_done),
            stop: stop.deadline(started),
        };
        workers.spawn(worker.run());
    }
    let mut tally = Tally::new();
    while let Some(worker_tally) = workers.join_next().await {
        tally.merge(worker_tally.context("a bench worker panicked")?)?;
    }
    let elapsed = started.elapsed();
    progress.finish();

    let result = BenchResult::new(&args, partitions, &workload, &tally, elapsed);
    if args.json {
        println!("{}", result.to_json());
    } else {
        result.print();
    }
    if tally.events_ok == 0 && tally.events_failed > 0 {
        bail!("no event was acknowledged");
    }
    Ok(())
}

/// The stream's partition count, after creating the stream if it does not exist.
async fn ensure_stream(api: &Api, stream: &str, partitions: u32) -> Result<usize> {
    let stream_url = api.url(&["v1", "streams", stream]);
    match api.get::<StreamDescription>(stream_url.clone()).await {
        Ok(description) => return Ok(description.partitions.len()),
        Err(error) if has_code(&error, "stream_not_found") => {}
        Err(error) => return Err(error),
    }
    let body = serde_json::to_vec(&serde_json::json!({ "name": stream, "partitions": partitions }))?;
    match api.post::<StreamDescription>(api.url(&["v1", "streams"]), body).await {
        Ok(description) => {
            eprintln!("created stream {stream:?} with {} partitions", description.partitions.len());
            Ok(description.partitions.len())
        }
        // Another client created it meanwhile: use it as it is.
        Err(error) if has_code(&error, "stream_exists") => {
            Ok(api.get::<StreamDescription>(stream_url).await?.partitions.len())
        }
        Err(error) => Err(error),
    }
}

fn has_code(error: &anyhow::Error, code: &str) -> bool {
    error.downcast_ref::<ApiError>().is_some_and(|api_error| api_error.code == code)
}

/// The request bodies, encoded before the run.
struct Workload {
    bodies: Vec<Body>,
    /// Events in all bodies together.
    events: u64,
    /// Bytes of all bodies together.
    bytes: u64,
}

struct Body {
    json: Bytes,
    events: u64,
}

impl Workload {
    fn encode(args: &HttpBenchArgs) -> Result<Workload> {
        let batch = u64::from(args.batch);
        let wrap = args.write_key.is_some();
        match &args.input {
            Some(path) => {
                let lines = read_json_lines(path)?;
                let events = args.events.unwrap_or(lines.len() as u64);
                let line_count = lines.len() as u64;
                Workload::from_events(events, batch, wrap, |index, out| {
                    out.extend_from_slice(lines[(index % line_count) as usize].get().as_bytes());
                })
            }
            None => {
                let events = args.events.unwrap_or(EVENTS_DEFAULT);
                let synthesizer = Synthesizer::new(args.event_bytes as usize);
                Workload::from_events(events, batch, wrap, |index, out| synthesizer.event(index, out))
            }
        }
    }

    /// Bodies of `batch` events each (the last may hold fewer), event `i` written by `event`;
    /// `wrap` writes a Segment batch (`{"batch": [...]}`) instead of a bare array.
    fn from_events(events: u64, batch: u64, wrap: bool, mut event: impl FnMut(u64, &mut Vec<u8>)) -> Result<Workload> {
        let mut bodies = Vec::with_capacity(events.div_ceil(batch) as usize);
        let mut bytes = 0u64;
        let mut first = 0;
        while first < events {
            let count = batch.min(events - first);
            let mut json = Vec::new();
            if count == 1 && batch == 1 {
                event(first, &mut json);
            } else {
                if wrap {
                    json.extend_from_slice(br#"{"batch":"#);
                }
                json.push(b'[');
                for index in first..first + count {
                    if index > first {
                        json.push(b',');
                    }
                    event(index, &mut json);
                }
                json.push(b']');
                if wrap {
                    json.push(b'}');
                }
            }
            bytes += json.len() as u64;
            if bytes > ENCODED_BYTES_MAX as u64 {
                bail!("the encoded events exceed {ENCODED_BYTES_MAX} bytes: send fewer, or use --duration-s");
            }
            bodies.push(Body { json: Bytes::from(json), events: count });
            first += count;
        }
        Ok(Workload { bodies, events, bytes })
    }
}

/// Every non-blank line of `path`, each checked to be one JSON object.
fn read_json_lines(path: &Path) -> Result<Vec<Box<RawValue>>> {
    let file = std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let mut events = Vec::new();
    for (index, line) in std::io::BufReader::new(file).lines().enumerate() {
        let line_number = index + 1;
        let line = line.with_context(|| format!("{} line {line_number}: cannot read", path.display()))?;
        if line.trim().is_empty() {
            continue;
        }
        let event: Box<RawValue> = serde_json::from_str(&line)
            .with_context(|| format!("{} line {line_number}: invalid JSON", path.display()))?;
        if !event.get().starts_with('{') {
            bail!("{} line {line_number}: an event must be a JSON object", path.display());
        }
        events.push(event);
    }
    if events.is_empty() {
        bail!("{} holds no events", path.display());
    }
    Ok(events)
}

/// Segment-style track events of a fixed size, with distinct messageIds and many userIds.
struct Synthesizer {
    event_bytes: usize,
    /// Makes messageIds unique across runs too, not only within one.
    run_id: String,
    started_ms: u64,
}

impl Synthesizer {
    fn new(event_bytes: usize) -> Synthesizer {
        let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
        Synthesizer { event_bytes, run_id: format!("{:x}", now.as_nanos()), started_ms: now.as_millis() as u64 }
    }

    fn event(&self, index: u64, out: &mut Vec<u8>) {
        // A multiplicative hash spreads consecutive events over the users, as real traffic does.
        let user = index.wrapping_mul(0x9E37_79B9_7F4A_7C15) % USERS;
        let sku = index % 5_000;
        let head = format!(
            concat!(
                r#"{{"type":"track","event":"AddToCart","userId":"user-{user}","#,
                r#""messageId":"{run}-{index}","timestamp":"{timestamp}","#,
                r#""properties":{{"cart_id":"cart-{user}","sku":"SKU-{sku:05}","quantity":{quantity},"price":{price}.99,"#,
                r#""currency":"EUR","padding":""#
            ),
            user = user,
            run = self.run_id,
            index = index,
            timestamp = rfc3339_ms(self.started_ms + index / 100),
            sku = sku,
            quantity = 1 + index % 4,
            price = 5 + sku % 200,
        );
        const TAIL: &str = r#""}}"#;
        out.extend_from_slice(head.as_bytes());
        let padding = self.event_bytes.saturating_sub(head.len() + TAIL.len());
        out.resize(out.len() + padding, b'x');
        out.extend_from_slice(TAIL.as_bytes());
    }
}

/// `1970-01-01T00:00:00.000Z` from milliseconds since the epoch (UTC, proleptic Gregorian).
fn rfc3339_ms(epoch_ms: u64) -> String {
    let days = (epoch_ms / 86_400_000) as i64;
    let ms_of_day = epoch_ms % 86_400_000;
    // Howard Hinnant's days-to-civil algorithm.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z.rem_euclid(146_097);
    let year_of_era = (day_of_era - day_of_era / 1_460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_index = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * month_index + 2) / 5 + 1;
    let month = if month_index < 10 { month_index + 3 } else { month_index - 9 };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        ms_of_day / 3_600_000,
        ms_of_day / 60_000 % 60,
        ms_of_day / 1_000 % 60,
        ms_of_day % 1_000
    )
}

/// When the run ends.
enum Stop {
    /// After every body was sent once.
    AfterBodies(u64),
    /// After this long, sending the bodies in turn.
    At(Duration),
}

/// A [`Stop`] fixed to the run's start.
#[derive(Clone, Copy)]
enum Deadline {
    AfterBodies(u64),
    At(Instant),
}

impl Stop {
    fn deadline(&self, started: Instant) -> Deadline {
        match self {
            Stop::AfterBodies(bodies) => Deadline::AfterBodies(*bodies),
            Stop::At(duration) => Deadline::At(started + *duration),
        }
    }
}

/// One of `--concurrency` loops, each with one request in flight.
struct Worker {
    http: Client,
    url: Url,
    /// Basic auth with the write key, for the tracking API.
    authorization: Option<HeaderValue>,
    workload: Arc<Workload>,
    /// The next body to send, shared by all workers.
    next_body: Arc<AtomicU64>,
    events_done: Arc<AtomicU64>,
    stop: Deadline,
}

impl Worker {
    async fn run(self) -> Tally {
        let mut tally = Tally::new();
        let bodies = &self.workload.bodies;
        loop {
            let sequence = self.next_body.fetch_add(1, Ordering::Relaxed);
            match self.stop {
                Deadline::AfterBodies(count) if sequence >= count => break,
                Deadline::At(deadline) if Instant::now() >= deadline => break,
                _ => {}
            }
            let body = &bodies[(sequence % bodies.len() as u64) as usize];
            let sent = Instant::now();
            let outcome = self.send(body).await;
            let latency_us = sent.elapsed().as_micros() as u64;
            match outcome {
                Ok(()) => {
                    tally.latency_us.saturating_record(latency_us.max(1));
                    tally.requests_ok += 1;
                    tally.events_ok += body.events;
                    tally.bytes_ok += body.json.len() as u64;
                }
                Err(kind) => {
                    *tally.errors.entry(kind).or_default() += 1;
                    tally.events_failed += body.events;
                }
            }
            self.events_done.fetch_add(body.events, Ordering::Relaxed);
        }
        tally
    }

    /// One produce request, its answer read whole so the connection can be reused; an error
    /// is named by its HTTP status or by what failed (`connect`, `timeout`, `io`).
    async fn send(&self, body: &Body) -> Result<(), String> {
        let mut request = self
            .http
            .post(self.url.clone())
            .header(CONTENT_TYPE, HeaderValue::from_static("application/json"))
            .timeout(Duration::from_millis(REQUEST_TIMEOUT_MS))
            .body(body.json.clone());
        if let Some(authorization) = &self.authorization {
            request = request.header(reqwest::header::AUTHORIZATION, authorization.clone());
        }
        let response = request.send().await.map_err(|error| transport_error(&error))?;
        let status = response.status();
        let answer = response.bytes().await.map_err(|error| transport_error(&error))?;
        if !status.is_success() {
            return Err(status.as_u16().to_string());
        }
        // The tracking API answers 200 for a batch whose events were dead-lettered: only
        // events it accepted (or already had) count as acknowledged.
        if self.authorization.is_some() && body.events > 1 {
            let counts: serde_json::Value = serde_json::from_slice(&answer).map_err(|_| "bad_answer".to_owned())?;
            let stored = counts["accepted"].as_u64().unwrap_or(0) + counts["duplicates"].as_u64().unwrap_or(0);
            if stored != body.events {
                return Err("not_accepted".to_owned());
            }
        }
        Ok(())
    }
}

fn transport_error(error: &reqwest::Error) -> String {
    if error.is_timeout() {
        "timeout".to_owned()
    } else if error.is_connect() {
        "connect".to_owned()
    } else {
        "io".to_owned()
    }
}

/// What the workers counted; merged at the end so they never contend on a lock.
struct Tally {
    latency_us: Histogram<u64>,
    requests_ok: u64,
    events_ok: u64,
    events_failed: u64,
    bytes_ok: u64,
    errors: BTreeMap<String, u64>,
}

impl Tally {
    fn new() -> Tally {
        Tally {
            latency_us: Histogram::new_with_bounds(1, LATENCY_US_MAX, 3).expect("the bounds are valid constants"),
            requests_ok: 0,
            events_ok: 0,
            events_failed: 0,
            bytes_ok: 0,
            errors: BTreeMap::new(),
        }
    }

    fn merge(&mut self, other: Tally) -> Result<()> {
        self.latency_us.add(&other.latency_us).context("merging latency histograms")?;
        self.requests_ok += other.requests_ok;
        self.events_ok += other.events_ok;
        self.events_failed += other.events_failed;
        self.bytes_ok += other.bytes_ok;
        for (kind, count) in other.errors {
            *self.errors.entry(kind).or_default() += count;
        }
        Ok(())
    }
}

/// The progress bar on stderr (hidden when stderr is not a terminal).
struct Progress {
    bar: ProgressBar,
    events_done: Arc<AtomicU64>,
    ticker: tokio::task::JoinHandle<()>,
}

impl Progress {
    fn start(stop: &Stop, events: u64) -> Progress {
        let events_done = Arc::new(AtomicU64::new(0));
        let (bar, by_time) = match stop {
            Stop::AfterBodies(_) => (ProgressBar::new(events), false),
            Stop::At(duration) => (ProgressBar::new(duration.as_millis() as u64), true),
        };
        let template = if by_time {
            "{elapsed_precise} [{bar:40}] {msg}"
        } else {
            "{elapsed_precise} [{bar:40}] {pos}/{len} events, {msg}, eta {eta}"
        };
        if let Ok(style) = ProgressStyle::with_template(template) {
            bar.set_style(style.progress_chars("=> "));
        }
        let ticker = {
            let bar = bar.clone();
            let events_done = Arc::clone(&events_done);
            let started = Instant::now();
            tokio::spawn(async move {
                let mut interval = tokio::time::interval(Duration::from_millis(PROGRESS_INTERVAL_MS));
                loop {
                    interval.tick().await;
                    let done = events_done.load(Ordering::Relaxed);
                    let elapsed = started.elapsed();
                    let per_s = done as f64 / elapsed.as_secs_f64().max(f64::EPSILON);
                    if by_time {
                        bar.set_message(format!("{done} events, {per_s:.0} events/s"));
                        bar.set_position(elapsed.as_millis() as u64);
                    } else {
                        bar.set_message(format!("{per_s:.0}/s"));
                        bar.set_position(done);
                    }
                }
            })
        };
        Progress { bar, events_done, ticker }
    }

    fn finish(self) {
        self.ticker.abort();
        self.bar.finish_and_clear();
    }
}

/// What a run measured.
struct BenchResult {
    stream: String,
    partitions: usize,
    durability: Durability,
    batch: u32,
    concurrency: u32,
    elapsed_s: f64,
    events: u64,
    events_failed: u64,
    requests: u64,
    bytes: u64,
    event_bytes_mean: f64,
    latency_ms: [(&'static str, f64); 5],
    errors: BTreeMap<String, u64>,
}

impl BenchResult {
    fn new(
        args: &HttpBenchArgs,
        partitions: usize,
        workload: &Workload,
        tally: &Tally,
        elapsed: Duration,
    ) -> BenchResult {
        let ms = |us: u64| us as f64 / 1_000.0;
        let latency = &tally.latency_us;
        BenchResult {
            stream: if args.write_key.is_some() { "(tracking API)".to_string() } else { args.stream.clone() },
            partitions,
            durability: args.durability,
            batch: args.batch,
            concurrency: args.concurrency,
            elapsed_s: elapsed.as_secs_f64(),
            events: tally.events_ok,
            events_failed: tally.events_failed,
            requests: tally.requests_ok,
            bytes: tally.bytes_ok,
            event_bytes_mean: workload.bytes as f64 / workload.events.max(1) as f64,
            latency_ms: [
                ("p50", ms(latency.value_at_quantile(0.5))),
                ("p90", ms(latency.value_at_quantile(0.9))),
                ("p99", ms(latency.value_at_quantile(0.99))),
                ("p99.9", ms(latency.value_at_quantile(0.999))),
                ("max", ms(latency.max())),
            ],
            errors: tally.errors.clone(),
        }
    }

    fn per_s(&self, count: u64) -> f64 {
        count as f64 / self.elapsed_s.max(f64::EPSILON)
    }

    fn to_json(&self) -> serde_json::Value {
        let latency_ms: serde_json::Map<String, serde_json::Value> =
            self.latency_ms.iter().map(|(name, value)| (name.replace('.', "_"), (*value).into())).collect();
        serde_json::json!({
            "stream": self.stream,
            "partitions": self.partitions,
            "durability": self.durability.as_str(),
            "batch": self.batch,
            "concurrency": self.concurrency,
            "elapsed_s": self.elapsed_s,
            "events": self.events,
            "events_failed": self.events_failed,
            "requests": self.requests,
            "bytes": self.bytes,
            "event_bytes_mean": self.event_bytes_mean,
            "events_per_s": self.per_s(self.events),
            "mb_per_s": self.per_s(self.bytes) / 1e6,
            "requests_per_s": self.per_s(self.requests),
            "latency_ms": latency_ms,
            "errors": self.errors,
        })
    }

    fn print(&self) {
        println!(
            "stream {:?} ({} partitions), durability {}, batch {}, concurrency {}, {:.0} body bytes/event",
            self.stream,
            self.partitions,
            self.durability.as_str(),
            self.batch,
            self.concurrency,
            self.event_bytes_mean
        );
        println!("elapsed      {:.2} s", self.elapsed_s);
        println!("events       {} acknowledged, {} failed", self.events, self.events_failed);
        println!("events/s     {:.0}", self.per_s(self.events));
        println!("MB/s         {:.2}", self.per_s(self.bytes) / 1e6);
        println!("requests/s   {:.0}", self.per_s(self.requests));
        let latency: Vec<String> = self.latency_ms.iter().map(|(name, value)| format!("{name} {value:.2}")).collect();
        println!("latency ms   {}", latency.join("  "));
        if self.errors.is_empty() {
            println!("errors       none");
        } else {
            let errors: Vec<String> = self.errors.iter().map(|(kind, count)| format!("{kind}: {count}")).collect();
            println!("errors       {}", errors.join(", "));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_formats_utc_milliseconds() {
        let cases = [
            (0, "1970-01-01T00:00:00.000Z"),
            (1_700_000_000_123, "2023-11-14T22:13:20.123Z"),
            (951_782_400_000, "2000-02-29T00:00:00.000Z"),
            (4_107_542_399_999, "2100-02-28T23:59:59.999Z"),
        ];
        for (epoch_ms, expected) in cases {
            assert_eq!(rfc3339_ms(epoch_ms), expected, "{epoch_ms}");
        }
    }

    #[test]
    fn synthesized_events_are_json_of_the_asked_size() {
        let synthesizer = Synthesizer::new(500);
        for index in [0, 1, 99_999, 1_000_000] {
            let mut event = Vec::new();
            synthesizer.event(index, &mut event);
            assert_eq!(event.len(), 500);
            let value: serde_json::Value = serde_json::from_slice(&event).unwrap();
            assert_eq!(value["type"], "track");
            assert_eq!(value["messageId"], format!("{}-{index}", synthesizer.run_id));
        }
    }

    #[test]
    fn bodies_hold_batches_and_single_events_stay_objects() {
        let write = |index: u64, out: &mut Vec<u8>| out.extend_from_slice(format!("{{\"i\":{index}}}").as_bytes());
        let single = Workload::from_events(2, 1, false, write).unwrap();
        assert_eq!(
            single.bodies.iter().map(|body| &body.json[..]).collect::<Vec<_>>(),
            [&b"{\"i\":0}"[..], b"{\"i\":1}"]
        );
        let batched = Workload::from_events(5, 2, false, write).unwrap();
        let bodies: Vec<&[u8]> = batched.bodies.iter().map(|body| &body.json[..]).collect();
        assert_eq!(bodies, [&b"[{\"i\":0},{\"i\":1}]"[..], b"[{\"i\":2},{\"i\":3}]", b"[{\"i\":4}]"]);
        assert_eq!(batched.events, 5);
    }
}

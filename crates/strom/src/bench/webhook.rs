//! `strom bench webhook`: end to end, an event accepted over HTTP to the webhook a rule fires
//! for it, at a steady rate. The bench is the sender and the receiver, so both timestamps come
//! from one clock; the server must have a destination pointing at `--receiver` and a rule that
//! fires a webhook for every `BenchPing` event with `{"sent_us": event.properties.sent_us}`
//! (bench/webhook.sh sets this up).

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail};
use base64::Engine;
use hdrhistogram::Histogram;
use reqwest::Url;
use serde_json::{Value, json};

#[derive(clap::Args, Debug)]
pub struct WebhookBenchArgs {
    /// Where this bench receives the webhooks (the destination's URL must point here, path /hook).
    #[arg(long, value_name = "HOST:PORT")]
    pub receiver: SocketAddr,
    /// Events per second, each in its own /v1/track request.
    #[arg(long, default_value_t = 1000)]
    pub rate: u64,
    /// How long to send.
    #[arg(long, default_value_t = 30)]
    pub seconds: u64,
    /// The write key of a source that may send BenchPing.
    #[arg(long)]
    pub write_key: String,
}

/// Latencies above this are counted as this (a minute).
const LATENCY_US_MAX: u64 = 60_000_000;
/// How long the bench waits for the last webhooks after the last send.
const DRAIN_MS: u64 = 5000;

fn now_us() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_micros() as u64)
}

pub fn run(args: WebhookBenchArgs, url: &Url) -> Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().context("starting the runtime")?;
    runtime.block_on(bench(args, url.clone()))
}

async fn bench(args: WebhookBenchArgs, url: Url) -> Result<()> {
    if args.rate == 0 || args.seconds == 0 {
        bail!("--rate and --seconds must be positive");
    }
    let latency = Arc::new(Mutex::new(
        Histogram::<u64>::new_with_bounds(1, LATENCY_US_MAX, 3).expect("the bounds are valid constants"),
    ));
    let listener = tokio::net::TcpListener::bind(args.receiver)
        .await
        .with_context(|| format!("cannot listen on {} for the webhooks", args.receiver))?;
    let recorded = latency.clone();
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |body: axum::Json<Value>| {
            let recorded = recorded.clone();
            async move {
                let received = now_us();
                if let Some(sent) = body["sent_us"].as_u64().or_else(|| body["sent_us"].as_f64().map(|f| f as u64)) {
                    let micros = received.saturating_sub(sent).clamp(1, LATENCY_US_MAX);
                    let _ = recorded.lock().map(|mut h| h.record(micros));
                }
                axum::http::StatusCode::NO_CONTENT
            }
        }),
    );
    tokio::spawn(async move { axum::serve(listener, app).await });

    let client = reqwest::Client::builder().pool_max_idle_per_host(256).build()?;
    let auth = format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("{}:", args.write_key)));
    let track = url.join("v1/track")?;
    let total = args.rate * args.seconds;
    let interval = Duration::from_nanos(1_000_000_000 / args.rate);
    let started = Instant::now();
    let failures = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let mut sends = tokio::task::JoinSet::new();
    eprintln!("sending {total} events at {}/s for {} s ...", args.rate, args.seconds);
    for i in 0..total {
        // An open-loop schedule: each event at its time, whatever the answers take.
        let due = started + interval * i as u32;
        tokio::time::sleep_until(due.into()).await;
        let (client, auth, track, failures) = (client.clone(), auth.clone(), track.clone(), failures.clone());
        sends.spawn(async move {
            let event = json!({"type": "track", "event": "BenchPing", "userId": format!("u{}", i % 1000),
                               "properties": {"sent_us": now_us(), "seq": i}});
            let ok = client
                .post(track)
                .header("authorization", auth)
                .json(&event)
                .send()
                .await
                .is_ok_and(|response| response.status().is_success());
            if !ok {
                failures.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
        });
        while sends.try_join_next().is_some() {}
    }
    while sends.join_next().await.is_some() {}
    let sent_for = started.elapsed();
    let deadline = Instant::now() + Duration::from_millis(DRAIN_MS);
    while Instant::now() < deadline && latency.lock().map(|h| h.len()).unwrap_or(0) < total {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let histogram = latency.lock().map_err(|_| anyhow::anyhow!("the receiver panicked"))?.clone();
    let ms = |us: u64| us as f64 / 1000.0;
    println!(
        "sent {total} events in {:.1} s ({:.0}/s), {} refused or failed; {} webhooks received",
        sent_for.as_secs_f64(),
        total as f64 / sent_for.as_secs_f64(),
        failures.load(std::sync::atomic::Ordering::Relaxed),
        histogram.len()
    );
    println!(
        "event sent -> webhook received: p50 {:.2} ms, p90 {:.2} ms, p99 {:.2} ms, p99.9 {:.2} ms, max {:.2} ms",
        ms(histogram.value_at_quantile(0.5)),
        ms(histogram.value_at_quantile(0.9)),
        ms(histogram.value_at_quantile(0.99)),
        ms(histogram.value_at_quantile(0.999)),
        ms(histogram.max())
    );
    Ok(())
}

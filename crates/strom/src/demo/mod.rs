//! `strom demo`: Strom with an example shop catalog, three rules (cart abandonment after 30 s,
//! page views per minute, a checkout-drop alert), a webhook receiver, and a built-in
//! generator of shop sessions; prints what the rules emit as it happens.

mod traffic;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{Context, Result};
use base64::Engine;
use serde_json::Value;
use strom_webhooks::SigningKey;

pub use traffic::{Shop, rfc3339};

const WRITE_KEY: &str = "demo-write-key";
/// The demo's webhook secret (a fixed one: the demo is local and its receiver prints).
const WEBHOOK_SECRET: &str = "whsec_c3Ryb20tZGVtby13ZWJob29rLXNlY3JldC0zMmI=";

const CATALOG: [(&str, &str); 7] = [
    ("AddToCart.json", include_str!("../../../../catalog/AddToCart.json")),
    ("Checkout.json", include_str!("../../../../catalog/Checkout.json")),
    ("NewsletterOptIn.json", include_str!("../../../../catalog/NewsletterOptIn.json")),
    ("ProductViewed.json", include_str!("../../../../catalog/ProductViewed.json")),
    ("ProductsSearched.json", include_str!("../../../../catalog/ProductsSearched.json")),
    ("identify.json", include_str!("../../../../catalog/identify.json")),
    ("page.json", include_str!("../../../../catalog/page.json")),
];

const RULES: [(&str, &str); 3] = [
    ("cart-abandoned.yaml", include_str!("../../../../demo/rules/cart-abandoned.yaml")),
    ("page-views-per-minute.yaml", include_str!("../../../../demo/rules/page-views-per-minute.yaml")),
    ("checkout-drop.yaml", include_str!("../../../../demo/rules/checkout-drop.yaml")),
];

#[derive(clap::Args, Debug)]
pub struct DemoArgs {
    /// Where the demo keeps its data, catalog, rules and strom.toml [default: a new
    /// temporary directory, removed at the end].
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
    /// Address of the HTTP API.
    #[arg(long, default_value = "127.0.0.1:8425", value_name = "HOST:PORT")]
    pub http_addr: SocketAddr,
    /// Concurrent shop visits (about 0.3 events per second each).
    #[arg(long, default_value_t = 100)]
    pub sessions: usize,
    /// Distinct users the visits are drawn from.
    #[arg(long, default_value_t = 5000)]
    pub users: u64,
    /// Stop after this many seconds (0: until Ctrl-C).
    #[arg(long, default_value_t = 0)]
    pub seconds: u64,
    /// Seed of the shop traffic.
    #[arg(long, default_value_t = 7)]
    pub seed: u64,
    /// When the payment page starts failing (checkouts collapse for a minute), in seconds
    /// after the start; 0 never.
    #[arg(long, default_value_t = 180)]
    pub outage_at: u64,
}

pub fn run(args: DemoArgs) -> Result<()> {
    let temporary;
    let dir = match &args.dir {
        Some(dir) => dir.clone(),
        None => {
            temporary =
                tempfile::Builder::new().prefix("strom-demo-").tempdir().context("making a temporary directory")?;
            temporary.path().to_path_buf()
        }
    };
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().context("starting the runtime")?;
    runtime.block_on(demo(args, &dir))
}

async fn demo(args: DemoArgs, dir: &Path) -> Result<()> {
    // The webhook receiver first: the configuration names its address.
    let receiver = tokio::net::TcpListener::bind("127.0.0.1:0").await.context("binding the webhook receiver")?;
    let receiver_addr = receiver.local_addr()?;
    let delivered = Arc::new(AtomicU64::new(0));
    tokio::spawn(serve_receiver(receiver, delivered.clone()));

    let config_text = write_files(dir, receiver_addr, args.http_addr)?;
    let config =
        strom_server::Config::parse(&config_text).map_err(anyhow::Error::msg).context("the demo's strom.toml")?;
    let listener = tokio::net::TcpListener::bind(args.http_addr).await.with_context(|| {
        format!("cannot listen on {} (is Strom already running? try --http-addr 127.0.0.1:0)", args.http_addr)
    })?;
    let url = format!("http://{}", listener.local_addr()?);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(strom_server::run_with_kafka(config, listener, None, async move {
        let _ = stopped.await;
    }));
    let client = reqwest::Client::new();
    wait_ready(&client, &url).await?;
    for stream in ["derived", "metrics", "alerts"] {
        let body = serde_json::json!({"name": stream, "partitions": 1});
        // 409 (it exists from an earlier run in the same --dir) is fine.
        let _ = client.post(format!("{url}/v1/streams")).json(&body).send().await;
    }

    println!(
        "\nStrom demo: a shop with {} visits at a time, three rules and a webhook receiver.\n\n  \
         data, catalog, rules, strom.toml  {}\n  \
         HTTP API                          {url}/v1/streams\n  \
         rules                             {url}/v1/rules\n  \
         webhook destinations              {url}/v1/webhooks/destinations\n  \
         Prometheus metrics                {url}/metrics\n  \
         send your own events              curl -u {WRITE_KEY}: {url}/v1/track -d '{{\"event\":\"AddToCart\",...}}'\n  \
         read derived events               strom consume derived --from-start\n\n\
         Cart abandonment fires 30 s after an AddToCart without Checkout; page views are counted per\n\
         minute; the checkout-drop alert needs 2 minutes of baseline{}.\n",
        args.sessions,
        dir.display(),
        if args.outage_at > 0 {
            format!(", and the payment page fails at {} s", args.outage_at)
        } else {
            String::new()
        }
    );

    let sent = Arc::new(AtomicU64::new(0));
    let mut generator = tokio::spawn(generate(
        client.clone(),
        url.clone(),
        args.seed,
        args.sessions,
        args.users,
        args.outage_at,
        sent.clone(),
    ));
    for stream in ["derived", "metrics", "alerts"] {
        tokio::spawn(print_stream(client.clone(), url.clone(), stream));
    }
    let status = tokio::spawn(print_status(sent.clone(), delivered.clone()));

    let until = async {
        match args.seconds {
            0 => {
                let _ = tokio::signal::ctrl_c().await;
            }
            seconds => tokio::time::sleep(Duration::from_secs(seconds)).await,
        }
    };
    tokio::select! {
        _ = until => {}
        result = &mut generator => { result.context("the traffic generator")??; }
    }
    generator.abort();
    status.abort();
    println!(
        "\nstopping: {} events sent, {} webhooks received",
        sent.load(Ordering::Relaxed),
        delivered.load(Ordering::Relaxed)
    );
    let _ = stop.send(());
    server.await.context("the server task")?.context("the server")?;
    Ok(())
}

/// Writes the catalog, the rules and strom.toml into `dir`; returns the configuration text.
fn write_files(dir: &Path, receiver: SocketAddr, http_addr: SocketAddr) -> Result<String> {
    for (sub, files) in [("catalog", &CATALOG[..]), ("rules", &RULES[..])] {
        let path = dir.join(sub);
        std::fs::create_dir_all(&path).with_context(|| format!("creating {}", path.display()))?;
        for (name, text) in files {
            let file = path.join(name);
            // A rule edited by the user in a kept --dir is theirs: not overwritten.
            if !file.exists() {
                std::fs::write(&file, text).with_context(|| format!("writing {}", file.display()))?;
            }
        }
    }
    let digest = strom_server::write_key_digest(WRITE_KEY);
    let text = format!(
        r#"# strom demo's configuration: `strom serve --config {config}` runs the same server.
data_dir = "{data}"

[http]
addr = "{http_addr}"

[kafka]
enabled = false

[catalog]
dir = "{catalog}"

[rules]
dir = "{rules}"

[[sources]]
name = "demo-shop"
write_keys_sha256 = ["{digest}"]

[webhooks]
allow_private = ["127.0.0.1"]

[[webhooks.destinations]]
name = "coupons"
url = "http://{receiver}/coupons"
secret = "{WEBHOOK_SECRET}"
"#,
        config = dir.join("strom.toml").display(),
        data = dir.join("data").display(),
        catalog = dir.join("catalog").display(),
        rules = dir.join("rules").display(),
    );
    std::fs::write(dir.join("strom.toml"), &text).context("writing strom.toml")?;
    Ok(text)
}

async fn wait_ready(client: &reqwest::Client, url: &str) -> Result<()> {
    for _ in 0..1000 {
        if client.get(format!("{url}/health/ready")).send().await.is_ok_and(|r| r.status().is_success()) {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    anyhow::bail!("the server did not become ready")
}

fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

/// Sends the shop's events through the tracking API every 100 ms, as a web shop's SDK would.
async fn generate(
    client: reqwest::Client,
    url: String,
    seed: u64,
    sessions: usize,
    users: u64,
    outage_at: u64,
    sent: Arc<AtomicU64>,
) -> Result<()> {
    let started = now_ms();
    let mut shop = Shop::new(seed, sessions, users, started);
    let auth = format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("{WRITE_KEY}:")));
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    let mut events = Vec::new();
    let mut outage_said = false;
    loop {
        tick.tick().await;
        let now = now_ms();
        let elapsed_s = ((now - started) / 1000) as u64;
        let outage = outage_at > 0 && (outage_at..outage_at + 60).contains(&elapsed_s);
        shop.checkout_probability = if outage { 0.03 } else { 0.7 };
        if outage != outage_said {
            outage_said = outage;
            println!(
                "{}  {}",
                clock(now),
                if outage {
                    "!! the payment page starts failing: checkouts collapse for a minute"
                } else {
                    "!! the payment page is back"
                }
            );
        }
        events.clear();
        shop.tick(now, &mut events);
        if events.is_empty() {
            continue;
        }
        let body = serde_json::json!({"batch": events});
        let response = client.post(format!("{url}/v1/batch")).header("authorization", &auth).json(&body).send().await;
        match response {
            Ok(response) if response.status().is_success() => {
                sent.fetch_add(events.len() as u64, Ordering::Relaxed);
            }
            Ok(response) => {
                eprintln!("the collector answered {}: {}", response.status(), response.text().await.unwrap_or_default())
            }
            Err(error) => eprintln!("cannot send events: {error}"),
        }
    }
}

/// Prints each record of a stream as one line, from its start.
async fn print_stream(client: reqwest::Client, url: String, stream: &'static str) {
    let Ok(mut response) = client.get(format!("{url}/v1/streams/{stream}/tail?from=start")).send().await else {
        return;
    };
    let mut buffer = String::new();
    while let Ok(Some(chunk)) = response.chunk().await {
        buffer.push_str(&String::from_utf8_lossy(&chunk));
        while let Some(end) = buffer.find("\n\n") {
            let event: String = buffer.drain(..end + 2).collect();
            let Some(data) = event.lines().find_map(|line| line.strip_prefix("data:")) else { continue };
            let Ok(record) = serde_json::from_str::<Value>(data.trim()) else { continue };
            if let Some(line) = describe(&record["value"]) {
                println!("{line}");
            }
        }
    }
}

fn describe(event: &Value) -> Option<String> {
    let p = &event["properties"];
    let at = event["timestamp"].as_str().map_or(String::new(), |t| t.get(11..19).unwrap_or(t).to_string());
    let who = event["userId"].as_str().or(event["anonymousId"].as_str()).unwrap_or("?");
    let line = match event["event"].as_str()? {
        "CartAbandoned" => format!(
            "{at}  CartAbandoned        {who} left {} ({}, {:.2} {}) -> coupon webhook",
            p["cart_id"].as_str().unwrap_or("?"),
            p["sku"].as_str().unwrap_or("?"),
            p["value"].as_f64().unwrap_or(0.0),
            p["currency"].as_str().unwrap_or("")
        ),
        "PageViewsPerMinute" => format!(
            "{at}  PageViewsPerMinute   {} views by {} visitors in the minute from {}",
            p["views"],
            p["visitors"],
            p["window_start"].as_str().unwrap_or("?")
        ),
        "CheckoutRateAnomaly" => format!(
            "{at}  CheckoutRateAnomaly  ALERT {}: {} checkouts in 20 s (baseline {:.1}, z = {:.1})",
            p["status"].as_str().unwrap_or("?").to_uppercase(),
            p["value"],
            p["baseline"].as_f64().unwrap_or(0.0),
            p["deviation"].as_f64().unwrap_or(0.0)
        ),
        other => format!("{at}  {other}  {p}"),
    };
    Some(line)
}

/// The demo's webhook receiver: checks each signature and counts the coupons.
async fn serve_receiver(listener: tokio::net::TcpListener, delivered: Arc<AtomicU64>) {
    let key: SigningKey = match WEBHOOK_SECRET.parse() {
        Ok(key) => key,
        Err(_) => return,
    };
    let key = Arc::new(key);
    let app = axum::Router::new().route(
        "/coupons",
        axum::routing::post(move |headers: axum::http::HeaderMap, body: axum::body::Bytes| {
            let (key, delivered) = (key.clone(), delivered.clone());
            async move {
                let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
                let timestamp = header("webhook-timestamp").parse().unwrap_or(0);
                if !key.verify(&header("webhook-id"), timestamp, &body, &header("webhook-signature")) {
                    eprintln!("webhook receiver: a request with a bad signature");
                    return axum::http::StatusCode::UNAUTHORIZED;
                }
                delivered.fetch_add(1, Ordering::Relaxed);
                axum::http::StatusCode::NO_CONTENT
            }
        }),
    );
    let _ = axum::serve(listener, app).await;
}

async fn print_status(sent: Arc<AtomicU64>, delivered: Arc<AtomicU64>) {
    let mut tick = tokio::time::interval(Duration::from_secs(30));
    tick.tick().await;
    loop {
        tick.tick().await;
        println!(
            "{}  ..  {} events sent, {} coupon webhooks received (signatures verified)",
            clock(now_ms()),
            sent.load(Ordering::Relaxed),
            delivered.load(Ordering::Relaxed)
        );
    }
}

fn clock(ms: i64) -> String {
    rfc3339(ms)[11..19].to_string()
}

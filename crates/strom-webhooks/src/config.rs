//! `[webhooks]` and `[[webhooks.destinations]]` of strom.toml.

use std::collections::BTreeMap;
use std::net::IpAddr;

use ipnet::IpNet;
use serde::Deserialize;

use crate::address::AddressPolicy;
use crate::limits::*;
use crate::signature::SigningKey;

#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct WebhooksConfig {
    /// The stream of delivery requests (the queue; rules append to it).
    pub deliveries_stream: String,
    /// Partitions of the deliveries stream when Strom creates it. A destination's requests
    /// all go to one partition (keyed by its name).
    pub deliveries_partitions: u32,
    /// Where deliveries that never succeeded go, with the reason.
    pub dead_letter_stream: String,
    /// Destinations' states (disabled by a 410, enabled again), shared by every process.
    pub states_stream: String,
    /// Networks destinations may reach although they are loopback, private or link-local
    /// (CIDR or single addresses). Empty: only public addresses.
    pub allow_private: Vec<String>,
    pub destinations: Vec<DestinationConfig>,
}

impl Default for WebhooksConfig {
    fn default() -> WebhooksConfig {
        WebhooksConfig {
            deliveries_stream: "strom.deliveries".into(),
            deliveries_partitions: 4,
            dead_letter_stream: "strom.deliveries.dead".into(),
            states_stream: "strom.webhooks.states".into(),
            allow_private: Vec::new(),
            destinations: Vec::new(),
        }
    }
}

#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct DestinationConfig {
    /// What rules name in their `webhook:` actions.
    pub name: String,
    /// `http://` or `https://`; redirects are not followed.
    pub url: String,
    /// The signing secret, `whsec_` + base64 of 24 to 64 random bytes (`strom webhooks
    /// new-secret` makes one). Or `secret_env`: the name of an environment variable holding it.
    #[serde(default)]
    pub secret: Option<crate::Secret>,
    #[serde(default)]
    pub secret_env: Option<String>,
    /// Per attempt, from connecting to the last byte of the answer's head.
    #[serde(default = "defaults::timeout_ms")]
    pub timeout_ms: u64,
    /// Deliveries in flight at once (their order is not kept beyond this).
    #[serde(default = "defaults::concurrency")]
    pub concurrency: usize,
    /// The first retry waits about this long; each next one twice as long.
    #[serde(default = "defaults::retry_initial_ms")]
    pub retry_initial_ms: u64,
    #[serde(default = "defaults::retry_max_ms")]
    pub retry_max_ms: u64,
    /// A delivery still failing this long after it was queued goes to the dead-letter stream.
    #[serde(default = "defaults::retry_horizon_ms")]
    pub retry_horizon_ms: u64,
    /// Failures in a row that open the circuit.
    #[serde(default = "defaults::circuit_failures")]
    pub circuit_failures: u32,
    /// How long an open circuit stays open before one probe (doubling up to 10×).
    #[serde(default = "defaults::circuit_open_ms")]
    pub circuit_open_ms: u64,
    /// Extra request headers.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
}

mod defaults {
    pub fn timeout_ms() -> u64 {
        10_000
    }
    pub fn concurrency() -> usize {
        4
    }
    pub fn retry_initial_ms() -> u64 {
        1000
    }
    pub fn retry_max_ms() -> u64 {
        300_000
    }
    pub fn retry_horizon_ms() -> u64 {
        24 * 3_600_000
    }
    pub fn circuit_failures() -> u32 {
        5
    }
    pub fn circuit_open_ms() -> u64 {
        30_000
    }
}

/// A destination checked and ready: URL parsed, key decoded, headers built.
#[derive(Clone, Debug)]
pub(crate) struct Destination {
    pub config: DestinationConfig,
    pub url: reqwest::Url,
    pub key: SigningKey,
    pub headers: reqwest::header::HeaderMap,
}

impl WebhooksConfig {
    pub fn allowed_networks(&self) -> Result<Vec<IpNet>, String> {
        self.allow_private
            .iter()
            .map(|text| {
                text.parse::<IpNet>()
                    .or_else(|_| text.parse::<IpAddr>().map(IpNet::from))
                    .map_err(|_| format!("webhooks.allow_private: {text:?} is not an address or a CIDR network"))
            })
            .collect()
    }

    /// Checks every key; secrets named by `secret_env` are read from the environment.
    pub fn validate(&self) -> Result<(), String> {
        self.prepare().map(|_| ())
    }

    pub(crate) fn prepare(&self) -> Result<Vec<Destination>, String> {
        for (name, stream) in [
            ("webhooks.deliveries_stream", &self.deliveries_stream),
            ("webhooks.dead_letter_stream", &self.dead_letter_stream),
            ("webhooks.states_stream", &self.states_stream),
        ] {
            strom_log::validate_stream_name(stream).map_err(|error| format!("{name}: {error}"))?;
        }
        if self.deliveries_stream == self.dead_letter_stream {
            return Err("webhooks.dead_letter_stream must differ from webhooks.deliveries_stream".into());
        }
        if self.states_stream == self.deliveries_stream || self.states_stream == self.dead_letter_stream {
            return Err("webhooks.states_stream must differ from the deliveries and dead-letter streams".into());
        }
        if !(1..=strom_log::limits::PARTITIONS_PER_STREAM_MAX).contains(&self.deliveries_partitions) {
            return Err(format!(
                "webhooks.deliveries_partitions must be 1 to {}",
                strom_log::limits::PARTITIONS_PER_STREAM_MAX
            ));
        }
        if self.destinations.len() > DESTINATIONS_MAX {
            return Err(format!("webhooks.destinations: at most {DESTINATIONS_MAX}"));
        }
        let policy = AddressPolicy::new(self.allowed_networks()?);
        let mut names = std::collections::HashSet::new();
        self.destinations
            .iter()
            .map(|destination| {
                let prepared = destination
                    .prepare(&policy)
                    .map_err(|why| format!("webhooks.destinations {:?}: {why}", destination.name))?;
                if !names.insert(destination.name.as_str()) {
                    return Err(format!("webhooks.destinations: {:?} is defined twice", destination.name));
                }
                Ok(prepared)
            })
            .collect()
    }
}

impl DestinationConfig {
    fn prepare(&self, policy: &AddressPolicy) -> Result<Destination, String> {
        if self.name.is_empty()
            || self.name.len() > 64
            || !self.name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
        {
            return Err("name: 1 to 64 ASCII letters, digits, '-', '_' or '.'".into());
        }
        let url = reqwest::Url::parse(&self.url).map_err(|error| format!("url: {error}"))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(format!("url: the scheme must be http or https, not {:?}", url.scheme()));
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err("url: credentials belong in `headers`, not in the URL".into());
        }
        // Literal addresses never reach the resolver, so they are judged here.
        let literal = match url.host() {
            Some(url::Host::Ipv4(ip)) => Some(IpAddr::V4(ip)),
            Some(url::Host::Ipv6(ip)) => Some(IpAddr::V6(ip)),
            Some(url::Host::Domain(_)) => None,
            None => return Err("url: it has no host".into()),
        };
        if let Some(address) = literal {
            policy.check(address).map_err(|refused| format!("url: {refused}"))?;
        }
        let secret = match (&self.secret, &self.secret_env) {
            (Some(secret), None) => secret.0.clone(),
            (None, Some(variable)) => std::env::var(variable)
                .map_err(|_| format!("secret_env: the environment variable {variable} is not set"))?,
            (Some(_), Some(_)) => return Err("set `secret` or `secret_env`, not both".into()),
            (None, None) => return Err("a signing `secret` (or `secret_env`) is required".into()),
        };
        let key: SigningKey = secret.parse().map_err(|why| format!("secret: {why}"))?;
        let bounded = |name: &str, value: u64, min: u64, max: u64| {
            if (min..=max).contains(&value) { Ok(()) } else { Err(format!("{name} must be {min} to {max}")) }
        };
        bounded("timeout_ms", self.timeout_ms, 1, TIMEOUT_MS_MAX)?;
        bounded("concurrency", self.concurrency as u64, 1, CONCURRENCY_MAX as u64)?;
        bounded("retry_initial_ms", self.retry_initial_ms, 1, 3_600_000)?;
        bounded("retry_max_ms", self.retry_max_ms, self.retry_initial_ms, 24 * 3_600_000)?;
        bounded("retry_horizon_ms", self.retry_horizon_ms, 0, RETRY_HORIZON_MS_MAX)?;
        bounded("circuit_failures", u64::from(self.circuit_failures), 1, 1_000_000)?;
        bounded("circuit_open_ms", self.circuit_open_ms, 1, 3_600_000)?;
        if self.headers.len() > HEADERS_MAX {
            return Err(format!("headers: at most {HEADERS_MAX}"));
        }
        let mut headers = reqwest::header::HeaderMap::new();
        for (name, value) in &self.headers {
            let header = reqwest::header::HeaderName::from_bytes(name.as_bytes())
                .map_err(|_| format!("headers: {name:?} is not a header name"))?;
            if header.as_str().starts_with("webhook-") || header == reqwest::header::CONTENT_TYPE {
                return Err(format!("headers: {name:?} is set by Strom"));
            }
            let value = reqwest::header::HeaderValue::from_str(value)
                .map_err(|_| format!("headers: the value of {name:?} is not a header value"))?;
            headers.insert(header, value);
        }
        Ok(Destination { config: self.clone(), url, key, headers })
    }
}

use std::net::IpAddr;

#[derive(Debug, thiserror::Error)]
pub enum WebhooksError {
    #[error("webhooks: {0}")]
    Config(String),
    #[error("webhooks: unknown destination {0:?}")]
    UnknownDestination(String),
    #[error("webhooks: {0}")]
    Log(#[from] strom_log::LogError),
    #[error("webhooks: {0}")]
    Io(#[from] std::io::Error),
}

/// An address the SSRF guard refuses. It travels through the HTTP client's error chain, so
/// a refused delivery is told apart from an unreachable one.
#[derive(Debug, thiserror::Error)]
#[error("{address} is {why}; allow it with webhooks.allow_private")]
pub struct RefusedAddress {
    pub address: IpAddr,
    pub why: &'static str,
}

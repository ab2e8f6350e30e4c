//! User-agent parsing with the uap-core patterns (the `ua-parser` crate), behind a bounded
//! cache: a shop's traffic repeats a few hundred user agents, and one parse costs about 5 µs.

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};

use serde_json::{Map, Value};

/// User agents remembered with their parse. When full, the cache starts over: simpler than an
/// LRU, and a shop's working set of user agents is far smaller.
pub const CACHE_ENTRIES_MAX: usize = 4096;

/// Bytes of a user agent that are parsed; longer strings are not parsed at all (they are
/// either bots or attacks on the regexes, and uap-core's patterns are anchored early).
pub const USER_AGENT_BYTES_MAX: usize = 1024;

static PATTERNS: &str = include_str!("../data/uap-regexes.json");

pub struct UserAgents {
    // Built on first use: 115 ms and about 20 MB that a server without browser sources never pays.
    extractor: OnceLock<Option<ua_parser::Extractor<'static>>>,
    cache: Mutex<HashMap<String, Value>>,
}

impl Default for UserAgents {
    fn default() -> UserAgents {
        UserAgents { extractor: OnceLock::new(), cache: Mutex::new(HashMap::new()) }
    }
}

impl UserAgents {
    /// The parsed fields as a JSON object: `browser`, `browserVersion`, `os`, `osVersion`,
    /// `device`, `deviceBrand`, `deviceModel` (absent when unknown).
    pub fn parse(&self, user_agent: &str) -> Option<Value> {
        if user_agent.is_empty() || user_agent.len() > USER_AGENT_BYTES_MAX {
            return None;
        }
        if let Some(hit) = self.cache.lock().unwrap_or_else(|e| e.into_inner()).get(user_agent) {
            return Some(hit.clone());
        }
        let extractor = self.extractor.get_or_init(build_extractor).as_ref()?;
        let (agent, os, device) = extractor.extract(user_agent);
        let mut fields = Map::new();
        let mut put = |name: &str, value: Option<String>| {
            if let Some(value) = value.filter(|v| !v.is_empty() && v != "Other") {
                fields.insert(name.to_string(), Value::String(value));
            }
        };
        if let Some(agent) = agent {
            put("browser", Some(agent.family.to_string()));
            put("browserVersion", version(&[agent.major, agent.minor, agent.patch]));
        }
        if let Some(os) = os {
            put("os", Some(os.os.to_string()));
            put("osVersion", version(&[os.major.as_deref(), os.minor.as_deref(), os.patch.as_deref()]));
        }
        if let Some(device) = device {
            put("device", Some(device.device.to_string()));
            put("deviceBrand", device.brand.map(|b| b.to_string()));
            put("deviceModel", device.model.map(|m| m.to_string()));
        }
        let parsed = Value::Object(fields);
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        if cache.len() >= CACHE_ENTRIES_MAX {
            cache.clear();
        }
        cache.insert(user_agent.to_string(), parsed.clone());
        Some(parsed)
    }
}

fn version(parts: &[Option<&str>]) -> Option<String> {
    let parts: Vec<&str> = parts.iter().map_while(|p| *p).filter(|p| !p.is_empty()).collect();
    (!parts.is_empty()).then(|| parts.join("."))
}

fn build_extractor() -> Option<ua_parser::Extractor<'static>> {
    let regexes: ua_parser::Regexes<'static> = match serde_json::from_str(PATTERNS) {
        Ok(regexes) => regexes,
        Err(error) => {
            tracing::error!(%error, "the bundled user-agent patterns do not load; user agents are not parsed");
            return None;
        }
    };
    match ua_parser::Extractor::try_from(regexes) {
        Ok(extractor) => Some(extractor),
        Err(error) => {
            tracing::error!(?error, "the bundled user-agent patterns do not compile; user agents are not parsed");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_common_agents() {
        let agents = UserAgents::default();
        let chrome = agents
            .parse("Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/119.0.0.0 Safari/537.36")
            .unwrap();
        assert_eq!(chrome["browser"], "Chrome");
        assert_eq!(chrome["browserVersion"], "119.0.0");
        assert_eq!(chrome["os"], "Mac OS X");
        assert_eq!(chrome["osVersion"], "10.15.7");
        assert_eq!(chrome["deviceBrand"], "Apple");
        let iphone = agents
            .parse("Mozilla/5.0 (iPhone; CPU iPhone OS 17_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.1 Mobile/15E148 Safari/604.1")
            .unwrap();
        assert_eq!(iphone["browser"], "Mobile Safari");
        assert_eq!(iphone["os"], "iOS");
        assert_eq!(iphone["device"], "iPhone");
        assert!(agents.parse("").is_none());
        assert!(agents.parse(&"x".repeat(USER_AGENT_BYTES_MAX + 1)).is_none());
    }
}

//! SASL authentication (SaslHandshake v1 + SaslAuthenticate): PLAIN and SCRAM-SHA-256
//! (RFC 5802, RFC 7677), users from the configuration. SCRAM keys are derived once at start
//! with a random salt and 4096 iterations (Kafka's minimum for SCRAM-SHA-256); passwords are
//! compared in constant time. Without TLS, PLAIN sends passwords in the clear: use SCRAM.

use std::collections::HashMap;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use hmac::{Hmac, KeyInit, Mac};
use sha2::{Digest, Sha256};

use crate::config::SaslConfig;

pub const MECHANISMS: [&str; 2] = ["PLAIN", "SCRAM-SHA-256"];
const SCRAM_ITERATIONS: u32 = 4096;
/// Bytes of one SASL message a client may send (user names and passwords are short).
pub(crate) const SASL_MESSAGE_BYTES_MAX: usize = 4096;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Mechanism {
    Plain,
    ScramSha256,
}

impl Mechanism {
    fn parse(name: &str) -> Option<Mechanism> {
        match name {
            "PLAIN" => Some(Mechanism::Plain),
            "SCRAM-SHA-256" => Some(Mechanism::ScramSha256),
            _ => None,
        }
    }
}

struct Credentials {
    password: String,
    salt: [u8; 16],
    stored_key: [u8; 32],
    server_key: [u8; 32],
}

pub(crate) struct Authenticator {
    mechanisms: Vec<String>,
    users: HashMap<String, Credentials>,
}

/// Where one connection's authentication stands.
#[derive(Default)]
pub(crate) enum Exchange {
    #[default]
    Unauthenticated,
    /// SaslHandshake picked a mechanism.
    Chosen(Mechanism),
    /// SCRAM: the server-first message was sent.
    ScramSent {
        user: String,
        client_first_bare: String,
        server_first: String,
        nonce: String,
        gs2_header: String,
    },
    Authenticated,
}

pub(crate) enum Step {
    /// Send these bytes; the exchange goes on.
    Continue(Vec<u8>),
    /// Authenticated as the user; send these bytes.
    Done(String, Vec<u8>),
    Failed(String),
}

fn hmac(key: &[u8], parts: &[&[u8]]) -> [u8; 32] {
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(key).expect("HMAC takes keys of any length");
    for part in parts {
        mac.update(part);
    }
    mac.finalize().into_bytes().into()
}

/// RFC 5802's Hi(): PBKDF2 with HMAC-SHA-256, one block.
fn salted_password(password: &[u8], salt: &[u8], iterations: u32) -> [u8; 32] {
    let mut block = hmac(password, &[salt, &1u32.to_be_bytes()]);
    let mut result = block;
    for _ in 1..iterations {
        block = hmac(password, &[&block]);
        for (r, b) in result.iter_mut().zip(block) {
            *r ^= b;
        }
    }
    result
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn random<const N: usize>() -> [u8; N] {
    let mut bytes = [0u8; N];
    // Without the OS's random numbers a salt or nonce could repeat: refuse to go on.
    getrandom::fill(&mut bytes).expect("the operating system provides random numbers");
    bytes
}

impl Authenticator {
    pub(crate) fn new(config: &SaslConfig) -> Authenticator {
        let users = config
            .users
            .iter()
            .map(|user| {
                let salt = random::<16>();
                let salted = salted_password(user.password.as_bytes(), &salt, SCRAM_ITERATIONS);
                let client_key = hmac(&salted, &[b"Client Key"]);
                let credentials = Credentials {
                    password: user.password.clone(),
                    salt,
                    stored_key: Sha256::digest(client_key).into(),
                    server_key: hmac(&salted, &[b"Server Key"]),
                };
                (user.name.clone(), credentials)
            })
            .collect();
        Authenticator { mechanisms: config.mechanisms.clone(), users }
    }

    pub(crate) fn required(&self) -> bool {
        !self.mechanisms.is_empty()
    }

    pub(crate) fn mechanisms(&self) -> &[String] {
        &self.mechanisms
    }

    /// SaslHandshake: the mechanism, if offered.
    pub(crate) fn choose(&self, name: &str) -> Option<Mechanism> {
        self.mechanisms.iter().any(|m| m == name).then(|| Mechanism::parse(name)).flatten()
    }

    /// One SaslAuthenticate message.
    pub(crate) fn step(&self, exchange: &mut Exchange, message: &[u8]) -> Step {
        if message.len() > SASL_MESSAGE_BYTES_MAX {
            return Step::Failed("SASL message too long".into());
        }
        let Ok(text) = std::str::from_utf8(message) else { return Step::Failed("SASL message is not UTF-8".into()) };
        match std::mem::take(exchange) {
            Exchange::Chosen(Mechanism::Plain) => self.plain(text, exchange),
            Exchange::Chosen(Mechanism::ScramSha256) => self.scram_first(text, exchange),
            Exchange::ScramSent { user, client_first_bare, server_first, nonce, gs2_header } => {
                self.scram_final(text, exchange, &user, &client_first_bare, &server_first, &nonce, &gs2_header)
            }
            Exchange::Unauthenticated => Step::Failed("SaslAuthenticate before SaslHandshake".into()),
            Exchange::Authenticated => Step::Failed("already authenticated".into()),
        }
    }

    fn plain(&self, text: &str, exchange: &mut Exchange) -> Step {
        let mut parts = text.split('\0');
        let (Some(authzid), Some(user), Some(password), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Step::Failed("malformed PLAIN message".into());
        };
        let known = self.users.get(user);
        let valid = known.is_some_and(|c| constant_time_eq(c.password.as_bytes(), password.as_bytes()));
        if !valid || !(authzid.is_empty() || authzid == user) {
            return Step::Failed(format!("authentication failed for user {user:?}"));
        }
        *exchange = Exchange::Authenticated;
        Step::Done(user.to_string(), Vec::new())
    }

    fn scram_first(&self, text: &str, exchange: &mut Exchange) -> Step {
        // gs2-header: "n,," or "y,," (no channel binding), optionally with "a=authzid".
        let mut parts = text.splitn(3, ',');
        let (Some(binding), Some(authzid), Some(bare)) = (parts.next(), parts.next(), parts.next()) else {
            return Step::Failed("malformed SCRAM client-first message".into());
        };
        if binding != "n" && binding != "y" {
            return Step::Failed("SCRAM channel binding is not supported".into());
        }
        let attribute = |name: &str| bare.split(',').find_map(|a| a.strip_prefix(name));
        let (Some(user), Some(client_nonce)) = (attribute("n="), attribute("r=")) else {
            return Step::Failed("SCRAM client-first message without user or nonce".into());
        };
        let user = user.replace("=2C", ",").replace("=3D", "=");
        if client_nonce.is_empty() || !(authzid.is_empty() || authzid.strip_prefix("a=") == Some(user.as_str())) {
            return Step::Failed("malformed SCRAM client-first message".into());
        }
        let Some(credentials) = self.users.get(&user) else {
            return Step::Failed(format!("authentication failed for user {user:?}"));
        };
        let nonce = format!("{client_nonce}{}", BASE64.encode(random::<18>()));
        let server_first = format!("r={nonce},s={},i={SCRAM_ITERATIONS}", BASE64.encode(credentials.salt));
        *exchange = Exchange::ScramSent {
            user,
            client_first_bare: bare.to_string(),
            server_first: server_first.clone(),
            nonce,
            gs2_header: format!("{binding},{authzid},"),
        };
        Step::Continue(server_first.into_bytes())
    }

    #[allow(clippy::too_many_arguments)]
    fn scram_final(
        &self,
        text: &str,
        exchange: &mut Exchange,
        user: &str,
        client_first_bare: &str,
        server_first: &str,
        nonce: &str,
        gs2_header: &str,
    ) -> Step {
        let failed = || Step::Failed(format!("authentication failed for user {user:?}"));
        let Some((without_proof, proof)) = text.rsplit_once(",p=") else { return failed() };
        let attribute = |name: &str| without_proof.split(',').find_map(|a| a.strip_prefix(name));
        // librdkafka sends its own nonce again in front of the server's combined one; Kafka
        // accepts any client-final nonce that ends with the combined nonce, and so does Strom
        // (the server's random part must still be there).
        let nonce_ok = attribute("r=").is_some_and(|r| r.ends_with(nonce));
        if attribute("c=") != Some(BASE64.encode(gs2_header).as_str()) || !nonce_ok {
            return failed();
        }
        let (Some(credentials), Ok(proof)) = (self.users.get(user), BASE64.decode(proof)) else { return failed() };
        let auth_message = format!("{client_first_bare},{server_first},{without_proof}");
        let client_signature = hmac(&credentials.stored_key, &[auth_message.as_bytes()]);
        if proof.len() != 32 {
            return failed();
        }
        let client_key: Vec<u8> = proof.iter().zip(client_signature).map(|(p, s)| p ^ s).collect();
        let stored_key: [u8; 32] = Sha256::digest(&client_key).into();
        if !constant_time_eq(&stored_key, &credentials.stored_key) {
            return failed();
        }
        let server_signature = hmac(&credentials.server_key, &[auth_message.as_bytes()]);
        *exchange = Exchange::Authenticated;
        Step::Done(user.to_string(), format!("v={}", BASE64.encode(server_signature)).into_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::SaslUser;

    fn authenticator() -> Authenticator {
        Authenticator::new(&SaslConfig {
            mechanisms: vec!["PLAIN".into(), "SCRAM-SHA-256".into()],
            users: vec![SaslUser { name: "alice".into(), password: "secret".into() }],
        })
    }

    #[test]
    fn plain_takes_the_right_password_only() {
        let auth = authenticator();
        for (message, ok) in [
            ("\0alice\0secret", true),
            ("alice\0alice\0secret", true),
            ("\0alice\0wrong", false),
            ("\0bob\0secret", false),
            ("bob\0alice\0secret", false),
            ("alice", false),
        ] {
            let mut exchange = Exchange::Chosen(Mechanism::Plain);
            let done = matches!(auth.step(&mut exchange, message.as_bytes()), Step::Done(..));
            assert_eq!(done, ok, "{message:?}");
        }
    }

    /// A SCRAM client, as RFC 5802 describes it, against the server.
    fn scram(auth: &Authenticator, password: &str) -> bool {
        let mut exchange = Exchange::Chosen(Mechanism::ScramSha256);
        let client_first_bare = "n=alice,r=clientnonce";
        let Step::Continue(server_first) = auth.step(&mut exchange, format!("n,,{client_first_bare}").as_bytes())
        else {
            panic!("no server-first message")
        };
        let server_first = String::from_utf8(server_first).unwrap();
        let field = |name: &str| server_first.split(',').find_map(|a| a.strip_prefix(name)).unwrap().to_string();
        let (nonce, salt, iterations) =
            (field("r="), BASE64.decode(field("s=")).unwrap(), field("i=").parse().unwrap());
        assert!(nonce.starts_with("clientnonce"));
        let salted = salted_password(password.as_bytes(), &salt, iterations);
        let client_key = hmac(&salted, &[b"Client Key"]);
        let stored_key: [u8; 32] = Sha256::digest(client_key).into();
        let without_proof = format!("c=biws,r={nonce}");
        let auth_message = format!("{client_first_bare},{server_first},{without_proof}");
        let signature = hmac(&stored_key, &[auth_message.as_bytes()]);
        let proof: Vec<u8> = client_key.iter().zip(signature).map(|(k, s)| k ^ s).collect();
        let last = format!("{without_proof},p={}", BASE64.encode(proof));
        match auth.step(&mut exchange, last.as_bytes()) {
            Step::Done(user, server_final) => {
                let server_key = hmac(&salted, &[b"Server Key"]);
                let expected = format!("v={}", BASE64.encode(hmac(&server_key, &[auth_message.as_bytes()])));
                assert_eq!(String::from_utf8(server_final).unwrap(), expected, "the server proves it knows the key");
                assert_eq!(user, "alice");
                true
            }
            _ => false,
        }
    }

    #[test]
    fn scram_sha_256_authenticates_with_the_right_password_only() {
        let auth = authenticator();
        assert!(scram(&auth, "secret"));
        assert!(!scram(&auth, "Secret"));
    }

    #[test]
    fn steps_out_of_order_fail() {
        let auth = authenticator();
        assert!(matches!(auth.step(&mut Exchange::Unauthenticated, b"\0alice\0secret"), Step::Failed(_)));
        assert!(auth.choose("GSSAPI").is_none());
        assert_eq!(auth.choose("PLAIN"), Some(Mechanism::Plain));
    }
}

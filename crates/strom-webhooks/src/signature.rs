//! Standard Webhooks signatures (https://www.standardwebhooks.com): the receiver verifies
//! `webhook-signature` = `v1,` + base64(HMAC-SHA256(key, "{webhook-id}.{webhook-timestamp}.{body}")),
//! where the key is the base64 part of a `whsec_` secret.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

/// Keys shorter than this are refused: the spec asks for 24 to 64 random bytes.
pub const KEY_BYTES_MIN: usize = 24;
pub const KEY_BYTES_MAX: usize = 64;

/// A signing key. `Debug` never shows it.
#[derive(Clone, PartialEq, Eq)]
pub struct SigningKey(Vec<u8>);

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SigningKey([redacted])")
    }
}

impl std::str::FromStr for SigningKey {
    type Err = String;

    /// Parses `whsec_<base64>` as Standard Webhooks libraries write secrets.
    fn from_str(text: &str) -> Result<SigningKey, String> {
        let encoded = text.strip_prefix("whsec_").ok_or("a secret starts with \"whsec_\" followed by base64")?;
        let key = STANDARD.decode(encoded).map_err(|error| format!("the secret's base64 is invalid: {error}"))?;
        if !(KEY_BYTES_MIN..=KEY_BYTES_MAX).contains(&key.len()) {
            return Err(format!(
                "the secret holds {} bytes; it must hold {KEY_BYTES_MIN} to {KEY_BYTES_MAX}",
                key.len()
            ));
        }
        Ok(SigningKey(key))
    }
}

impl SigningKey {
    /// A new key from the operating system's random numbers, as a `whsec_` secret (for
    /// `strom webhooks new-secret`).
    pub fn generate() -> String {
        let mut key = [0u8; 32];
        // The OS random source does not fail on Linux once booted; if it ever did, a key of
        // zeros must not be handed out.
        getrandom::fill(&mut key).expect("the operating system's random numbers");
        format!("whsec_{}", STANDARD.encode(key))
    }

    /// The `webhook-signature` header value for one attempt.
    pub fn sign(&self, id: &str, timestamp_s: i64, body: &[u8]) -> String {
        format!("v1,{}", STANDARD.encode(self.mac(id, timestamp_s, body)))
    }

    /// Whether any of the space-separated `v1,` signatures of a header matches.
    pub fn verify(&self, id: &str, timestamp_s: i64, body: &[u8], header: &str) -> bool {
        let expected = self.mac(id, timestamp_s, body);
        header.split(' ').filter_map(|part| part.strip_prefix("v1,")).any(|encoded| {
            STANDARD.decode(encoded).is_ok_and(|given| {
                // Constant time: the comparison must not tell how many bytes matched.
                given.len() == expected.len() && given.iter().zip(&expected).fold(0u8, |acc, (a, b)| acc | (a ^ b)) == 0
            })
        })
    }

    fn mac(&self, id: &str, timestamp_s: i64, body: &[u8]) -> Vec<u8> {
        // HMAC takes keys of any length; new_from_slice cannot fail for it.
        let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(&self.0) else { unreachable!("HMAC accepts any key length") };
        mac.update(id.as_bytes());
        mac.update(b".");
        mac.update(timestamp_s.to_string().as_bytes());
        mac.update(b".");
        mac.update(body);
        mac.finalize().into_bytes().to_vec()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signs_the_specification_example() {
        // The example of the Standard Webhooks specification's reference libraries.
        let key: SigningKey = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw".parse().unwrap();
        let body = br#"{"test": 2432232314}"#;
        let signature = key.sign("msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body);
        assert_eq!(signature, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
        assert!(key.verify("msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body, &format!("v1,bogus {signature}")));
        assert!(!key.verify("msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265331, body, &signature));
    }

    #[test]
    fn refuses_bad_secrets() {
        assert!("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw".parse::<SigningKey>().unwrap_err().contains("whsec_"));
        assert!("whsec_!!".parse::<SigningKey>().unwrap_err().contains("base64"));
        assert!("whsec_c2hvcnQ=".parse::<SigningKey>().unwrap_err().contains("5 bytes"));
        let generated = SigningKey::generate();
        assert!(generated.parse::<SigningKey>().is_ok());
    }
}

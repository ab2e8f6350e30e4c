//! Rule parsing never panics: thousands of damaged rule texts (bytes flipped, cut, dropped,
//! duplicated), each refused with an error that says where, or accepted.

use strom_rules::{Format, Rule};

const YAML: &str = include_str!("golden/pattern_absence_cart/rule.yaml");
const TOML: &str = include_str!("golden/anomaly_ewma_toml/rule.toml");

/// SplitMix64: deterministic damage.
struct Random(u64);

impl Random {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

const ALPHABET: &[u8] = b" \n\t:-[]{}\"'#&*!|>%@`,.=()0123456789abcxyz_\\";

fn damage(source: &str, random: &mut Random) -> String {
    let mut bytes = source.as_bytes().to_vec();
    for _ in 0..1 + random.below(4) {
        let at = random.below(bytes.len());
        match random.below(4) {
            0 => bytes[at] = ALPHABET[random.below(ALPHABET.len())],
            1 => {
                bytes.remove(at);
            }
            2 => bytes.insert(at, ALPHABET[random.below(ALPHABET.len())]),
            _ => {
                let end = (at + random.below(40)).min(bytes.len());
                let copy = bytes[at..end].to_vec();
                bytes.splice(at..at, copy);
            }
        }
    }
    bytes.truncate(bytes.len() - random.below(3).min(bytes.len()));
    String::from_utf8_lossy(&bytes).into_owned()
}

#[test]
fn damaged_rules_are_refused_with_a_place_or_accepted_never_a_panic() {
    let mut random = Random(4);
    let (mut refused, mut accepted) = (0, 0);
    for (source, format) in [(YAML, Format::Yaml), (TOML, Format::Toml)] {
        for _ in 0..3000 {
            let damaged = damage(source, &mut random);
            match Rule::parse(&damaged, format, "damaged") {
                Ok(_) => accepted += 1,
                Err(error) => {
                    refused += 1;
                    assert!(!error.field.is_empty() && !error.why.is_empty(), "{error}");
                    assert!(error.to_string().starts_with("damaged:"), "{error}");
                }
            }
        }
    }
    assert!(refused > 1000, "the damage is real: {refused} refused, {accepted} accepted");
}

#[test]
fn deeply_nested_documents_are_refused_not_a_stack_overflow() {
    for depth in [100, 10_000, 100_000] {
        let toml = format!("name = {}{}", "[".repeat(depth), "]".repeat(depth));
        assert!(Rule::parse(&toml, Format::Toml, "deep.toml").is_err());
        let yaml = format!("name: {}{}", "[".repeat(depth), "]".repeat(depth));
        assert!(Rule::parse(&yaml, Format::Yaml, "deep.yaml").is_err());
        let yaml_maps =
            "a:\n".to_string() + &(1..depth.min(2000)).map(|i| format!("{}b:\n", " ".repeat(i))).collect::<String>();
        assert!(Rule::parse(&yaml_maps, Format::Yaml, "deep.yaml").is_err());
    }
}

//! Request frames captured from real clients (kcat on librdkafka 2.0.2, confluent-kafka on a
//! current librdkafka) decode, and no truncation or byte change of them panics.
//! `tests/golden/capture.py` captured them; `tests/golden/README.md` says how.

use std::collections::BTreeSet;
use std::path::PathBuf;

use bytes::Bytes;
use strom_kafka::{decode_only, parse_request};

fn captured() -> Vec<(String, i16, i16, Vec<u8>)> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/golden");
    let mut frames = Vec::new();
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "bin") {
            continue;
        }
        let name = path.file_stem().unwrap().to_string_lossy().into_owned();
        // <client>-<api key>-v<version>
        let mut parts = name.rsplitn(3, '-');
        let version: i16 = parts.next().unwrap().trim_start_matches('v').parse().unwrap();
        let api: i16 = parts.next().unwrap().parse().unwrap();
        frames.push((name, api, version, std::fs::read(&path).unwrap()));
    }
    frames.sort();
    frames
}

#[test]
fn captured_requests_decode() {
    let frames = captured();
    for (name, api, version, bytes) in &frames {
        let frame = parse_request(Bytes::from(bytes.clone())).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!((frame.api_key as i16, frame.api_version), (*api, *version), "{name}");
        decode_only(&frame).unwrap_or_else(|e| panic!("{name}: {e}"));
    }
    // What the clients were made to do: every served API family appears.
    let seen: BTreeSet<i16> = frames.iter().map(|(_, api, ..)| *api).collect();
    for api in [0, 1, 2, 3, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 22, 36] {
        assert!(seen.contains(&api), "no captured request of API {api}: {seen:?}");
    }
    let clients: BTreeSet<&str> = frames.iter().map(|(name, ..)| name.split('-').next().unwrap()).collect();
    assert_eq!(clients, BTreeSet::from(["confluent", "kcat"]));
}

#[test]
fn truncated_and_changed_requests_never_panic() {
    for (name, _, _, bytes) in captured() {
        if bytes.len() > 64 * 1024 {
            continue;
        }
        let check = |data: Vec<u8>| {
            if let Ok(frame) = parse_request(Bytes::from(data)) {
                let _ = decode_only(&frame);
            }
        };
        for length in 0..bytes.len() {
            check(bytes[..length].to_vec());
        }
        for at in 0..bytes.len() {
            for value in [0x00, 0x7f, 0x80, 0xff] {
                let mut changed = bytes.clone();
                changed[at] = value;
                check(changed);
            }
        }
        eprintln!("{name}: {} bytes, every truncation and 4 changes per byte", bytes.len());
    }
}

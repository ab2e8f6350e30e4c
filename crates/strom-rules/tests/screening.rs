//! The runtime's shortcuts (screening an event on its text, parsing only what a rule reads)
//! must not change what a rule does: the same events through both ways give the same
//! outputs and counters as whole events through `Engine::process`.

use std::sync::Arc;

use serde_json::Value;
use strom_rules::{Engine, EngineConfig, Format, Input, Output, Rule, parse_pruned};

const T0: i64 = 1_795_334_400_000;

const RULES: &[&str] = &[
    r#"
name: carts
streams: [events]
where: event.event in ["AddToCart", "Checkout"]
pattern:
  within: 30s
  start: latest
  steps:
    - {name: cart, match: 'event.event == "AddToCart"'}
    - {name: checkout, match: 'event.event == "Checkout" && event.properties.cart_id == cart.properties.cart_id', absent: true}
emit: {stream: derived, event: CartAbandoned}
actions: [{webhook: coupons}]
"#,
    r#"
name: adds
streams: [events]
filter: event.event == "AddToCart" && event.properties.price > 50
emit: {stream: derived, properties: '{"sku": event.properties.sku}'}
"#,
    r#"
name: views
streams: [events]
key: none
where: event.type == "page" || event.event == "ProductViewed"
window: {type: tumbling, size: 10s, aggregates: {n: count(), users: count_distinct(event.userId)}}
emit: {stream: metrics, event: Views}
"#,
];

/// Varied events: names written plainly and escaped, nested `timestamp` fields, events
/// without a name, out of order, some not JSON objects at all.
fn texts() -> Vec<String> {
    let mut texts = Vec::new();
    for i in 0..3000i64 {
        let user = format!("u{}", i % 37);
        let time = strom_rules::format_time_ms(T0 + i * 250 - (i % 7) * 900);
        let text = match i % 11 {
            0..=2 => format!(
                r#"{{"type":"page","userId":"{user}","properties":{{"path":"/","timestamp":"2000-01-01T00:00:00.000Z"}},"timestamp":"{time}"}}"#
            ),
            3 | 4 => format!(
                r#"{{"type":"track","event":"AddToCart","userId":"{user}","properties":{{"cart_id":"c{}","sku":"S{i}","price":{}}},"timestamp":"{time}"}}"#,
                i % 5,
                i % 90
            ),
            5 => format!(
                r#"{{"type":"track","event":"\u0041ddToCart","userId":"{user}","properties":{{"cart_id":"c{}","price":99}},"timestamp":"{time}"}}"#,
                i % 5
            ),
            6 => format!(
                r#"{{"type":"track","event":"Checkout","userId":"{user}","properties":{{"cart_id":"c{}"}},"timestamp":"{time}"}}"#,
                i % 5
            ),
            7 => format!(
                r#"{{"type":"track","event":"ProductViewed","anonymousId":"a{i}","originalTimestamp":"{time}"}}"#
            ),
            8 => format!(
                r#"{{"timestamp":"{time}","type":"identify","userId":"{user}","traits":{{"event":"AddToCart"}}}}"#
            ),
            9 => format!(r#"{{"type":"track","event":"AddToCart","userId":"{user}","timestamp":"not a time"}}"#),
            _ => "[1, 2, 3]".to_string(),
        };
        texts.push(text);
    }
    texts
}

fn run(source: &str, shortcut: bool) -> (Vec<Output>, strom_rules::Counters) {
    let rule = Arc::new(Rule::parse(source, Format::Yaml, "test").unwrap());
    let mut engine = Engine::new(rule, EngineConfig::default());
    let paths = engine.input_paths().clone();
    let screen = engine.screen_paths().cloned();
    let mut outputs = Vec::new();
    for (offset, text) in texts().iter().enumerate() {
        let now = T0 + offset as i64 * 250;
        let bytes = text.as_bytes();
        let event: Value = if shortcut {
            if engine.screen_raw("events", 0, bytes, now, &mut outputs) {
                continue;
            }
            let screened = screen.as_ref().map(|s| parse_pruned(bytes, s).unwrap());
            match screened {
                Some(partial) if engine.screens_out(&partial) => partial,
                _ => parse_pruned(bytes, &paths).unwrap(),
            }
        } else {
            serde_json::from_str(text).unwrap()
        };
        let input =
            Input { stream: "events", partition: 0, offset: offset as u64, record_timestamp_ms: now, event: &event };
        engine.process(&input, now, &mut outputs);
        if offset % 100 == 0 {
            engine.advance(now, &mut outputs);
        }
    }
    engine.flush(&mut outputs);
    (outputs, engine.counters().clone())
}

#[test]
fn screening_and_partial_parsing_change_nothing() {
    for source in RULES {
        let (whole, whole_counters) = run(source, false);
        let (shortcut, shortcut_counters) = run(source, true);
        assert!(!whole.is_empty(), "the case produces outputs: {source}");
        assert_eq!(shortcut, whole, "{source}");
        assert_eq!(shortcut_counters, whole_counters, "{source}");
    }
}

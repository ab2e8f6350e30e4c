//! The deterministic engine of one rule: events and wall-clock ticks in, derived events,
//! delivery requests and late-event copies out. It does no I/O and never reads a clock:
//! the same inputs with the same `now_ms` values give the same outputs, byte for byte.
//!
//! Time, exactly:
//! - An event's time is its `timestamp` (RFC 3339), else its `originalTimestamp`, else the
//!   record's timestamp.
//! - Each input partition has a watermark: the highest event time it delivered minus the
//!   rule's out-of-orderness. A partition that delivered nothing for `idle_timeout_ms` of
//!   wall-clock time is idle, and its watermark follows the wall clock instead
//!   (`now − out_of_orderness`). Partition watermarks never move back.
//! - The rule's watermark W is the lowest of its partitions' watermarks (every partition of
//!   every input stream, registered or seen), and never moves back.
//! - Everything that closes at event time T (a window whose last millisecond is T, a pattern
//!   whose `within` ends at T, an anomaly window) is finalised once T < W − allowed_lateness.
//! - An event is late when everything it could still change was finalised: for windows and
//!   anomalies, when its windows were emitted; for patterns, when its time is below
//!   W − allowed_lateness. Late events are counted, copied to `late_events_stream` when the
//!   rule has one, and otherwise ignored. Filters keep no state and have no late events.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::{Value as Json, json};

use crate::aggregate::Accumulator;
use crate::expr::{EvalError, Expr, Paths};
use crate::ids::{format_time_ms, id, parse_time_ms};
use crate::rule::{AnomalySpec, Detector, KeySpec, Kind, PatternSpec, PatternStart, Rule, WindowSpec, WindowType};

/// The stream delivery requests go to; the webhook sender reads it.
pub const DELIVERIES_STREAM: &str = "strom.deliveries";

/// Finalisations (fired timers) per `process` or `advance` call; the rest wait for the next
/// call, so that one watermark jump cannot produce an unbounded batch of outputs.
pub const FIRINGS_PER_CALL_MAX: usize = 10_000;

/// Consecutive empty metric windows after which an anomaly rule forgets a key (resolving its
/// incident first): a key that went away must not hold state and a timer forever.
pub const ANOMALY_IDLE_WINDOWS_MAX: u64 = 100;

/// The engine's settings from the runtime (a rule may override the out-of-orderness and
/// the limits).
#[derive(Clone, Debug)]
pub struct EngineConfig {
    pub out_of_orderness_ms: i64,
    pub idle_timeout_ms: i64,
    /// Keys with state; an event for a new key beyond it is not added (counted).
    pub keys_max: usize,
    /// Partial matches (patterns) or open windows of one key; beyond it the oldest is dropped.
    pub matches_per_key_max: usize,
}

impl Default for EngineConfig {
    fn default() -> EngineConfig {
        EngineConfig {
            out_of_orderness_ms: 2_000,
            idle_timeout_ms: 5_000,
            keys_max: 2_000_000,
            matches_per_key_max: 100,
        }
    }
}

/// One input event and where it was read.
#[derive(Clone, Copy, Debug)]
pub struct Input<'a> {
    pub stream: &'a str,
    pub partition: u32,
    pub offset: u64,
    /// The record's timestamp: the event time of events without a parseable one.
    pub record_timestamp_ms: i64,
    pub event: &'a Json,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OutputKind {
    /// A derived event for the rule's `emit.stream`.
    Derived,
    /// A delivery request for `strom.deliveries` (one per firing and action).
    Delivery,
    /// A copy of a late event for the rule's `late_events_stream`.
    Late,
}

/// One record the runtime appends.
#[derive(Clone, Debug, PartialEq)]
pub struct Output {
    pub kind: OutputKind,
    pub stream: String,
    /// The record key (the user, the destination name for deliveries).
    pub key: Option<String>,
    /// Deterministic: the same input gives the same id.
    pub id: String,
    pub timestamp_ms: i64,
    /// The record's value: JSON text, written once by the engine and appended as it is.
    pub value: String,
}

impl Output {
    /// The value as a JSON tree (for tests, backtests and the API; not on the hot path).
    pub fn json(&self) -> Json {
        serde_json::from_str(&self.value).unwrap_or(Json::Null)
    }
}

/// Serialized with the value as JSON, not as a string of JSON.
impl Serialize for Output {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let mut output = serializer.serialize_struct("Output", 6)?;
        output.serialize_field("kind", &self.kind)?;
        output.serialize_field("stream", &self.stream)?;
        output.serialize_field("key", &self.key)?;
        output.serialize_field("id", &self.id)?;
        output.serialize_field("timestamp_ms", &self.timestamp_ms)?;
        output.serialize_field("value", &self.json())?;
        output.end()
    }
}

/// What the engine counted since it was made.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counters {
    pub events_in: u64,
    /// Events without a key, or refused by `where`.
    pub events_skipped: u64,
    /// Complete matches, windows emitted, alert transitions, filter passes.
    pub matches: u64,
    /// Derived events made (whether appended to a stream or only given to actions).
    pub emits: u64,
    pub deliveries: u64,
    pub late_events: u64,
    pub eval_errors: u64,
    /// Events for new keys not added because the rule holds `keys_max` keys.
    pub keys_refused: u64,
    /// Partial matches or windows dropped because a key holds `matches_per_key_max`.
    pub matches_dropped: u64,
}

impl Counters {
    /// Adds another engine's counts (the tasks of one rule).
    pub(crate) fn add(&mut self, other: &Counters) {
        self.events_in += other.events_in;
        self.events_skipped += other.events_skipped;
        self.matches += other.matches;
        self.emits += other.emits;
        self.deliveries += other.deliveries;
        self.late_events += other.late_events;
        self.eval_errors += other.eval_errors;
        self.keys_refused += other.keys_refused;
        self.matches_dropped += other.matches_dropped;
    }
}

/// Where an event was read: stream (index into the rule's streams), partition, offset.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct Position(u16, u32, u64);

/// One partial match of a pattern.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct Partial {
    /// The next step to match.
    step: u8,
    start_ms: i64,
    /// Where the first step's event was read: the firing's id.
    origin: Position,
    /// The matched steps' events, only the parts later expressions read, as JSON text.
    captured: Vec<Box<str>>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct OpenWindow {
    start_ms: i64,
    end_ms: i64,
    /// The group-by values, as JSON array text.
    group: Box<str>,
    accumulators: Vec<Accumulator>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
struct AnomalyState {
    /// Metric windows not evaluated yet, by start.
    open: BTreeMap<i64, Accumulator>,
    /// The start of the next window to evaluate.
    next_ms: Option<i64>,
    /// EWMA mean and variance, or the last windows' values (z-score).
    mean: f64,
    variance: f64,
    history: VecDeque<f64>,
    /// Windows evaluated (the baseline's age).
    evaluated: u64,
    /// Empty windows in a row.
    empty_run: u64,
    /// The window start of the open incident.
    incident_ms: Option<i64>,
}

/// The state of one key.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub(crate) struct KeyState {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    partials: Vec<Partial>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    windows: Vec<OpenWindow>,
    /// Boxed: most rules are not anomaly rules, and a key's state should stay small.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    anomaly: Option<Box<AnomalyState>>,
}

impl KeyState {
    fn is_empty(&self) -> bool {
        self.partials.is_empty() && self.windows.is_empty() && self.anomaly.is_none()
    }

    /// Partial matches and open windows (anomaly state counts as one).
    fn entries(&self) -> usize {
        self.partials.len() + self.windows.len() + usize::from(self.anomaly.is_some())
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct PartitionClock {
    max_event_ms: Option<i64>,
    watermark_ms: i64,
    /// Wall-clock time of the last input (not persisted: idleness restarts at a restart).
    #[serde(skip)]
    last_input_ms: i64,
}

/// The engine-wide part of the state, persisted at every commit.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub(crate) struct Meta {
    watermark_ms: i64,
    partitions: Vec<(String, u32, PartitionClock)>,
}

/// Keys whose state changed since the last `take_changes`, with their new state (`None`:
/// deleted).
pub type Changes = Vec<(Arc<str>, Option<Vec<u8>>)>;

pub struct Engine {
    rule: Arc<Rule>,
    config: EngineConfig,
    out_of_orderness_ms: i64,
    /// What expressions evaluated per event read of it.
    /// What the rule reads of an input event: the runtime parses only that.
    input_paths: Paths,
    /// `context` of every derived event (`{"rule": {"name", "version"}}`), as JSON text,
    /// built once.
    context: String,
    /// What `where` (and a filter's condition) read, with the event time: enough to tell
    /// that an event is not for this rule (`screen`).
    screen_paths: Option<Paths>,
    /// Strings one of which an event's text must contain to pass `where`, and a filter's
    /// condition (see `screen`).
    where_needles: Option<Vec<Vec<u8>>>,
    filter_needles: Option<Vec<Vec<u8>>>,
    /// By (index of the stream in the rule's streams, partition).
    partitions: BTreeMap<(u16, u32), PartitionClock>,
    watermark_ms: i64,
    keys: HashMap<Arc<str>, KeyState>,
    /// (time, key): the key's earliest state that closes at `time`.
    timers: BTreeSet<(i64, Arc<str>)>,
    /// The timer each key has in `timers`.
    timer_of: HashMap<Arc<str>, i64>,
    dirty: HashSet<Arc<str>>,
    entries: usize,
    counters: Counters,
    last_error: Option<String>,
}

impl Engine {
    pub fn new(rule: Arc<Rule>, config: EngineConfig) -> Engine {
        let out_of_orderness_ms = rule.out_of_orderness_ms.unwrap_or(config.out_of_orderness_ms);
        let input_paths = input_paths(&rule);
        let screen_paths = screen_paths(&rule);
        let needles_of = |expr: &Expr| {
            let strings = crate::screen::required_literals(expr.fast()?)?;
            crate::screen::needles(&strings)
        };
        let where_needles = rule.condition.as_ref().and_then(needles_of);
        let filter_needles = match &rule.kind {
            Kind::Filter { condition } if condition.paths_reads_only_event() => needles_of(condition),
            _ => None,
        };
        let context = json!({"rule": {"name": rule.name, "version": rule.version}}).to_string();
        let mut config = config;
        if let Some(keys_max) = rule.limits.keys_max {
            config.keys_max = keys_max;
        }
        if let Some(max) = rule.limits.matches_per_key_max {
            config.matches_per_key_max = max;
        }
        Engine {
            rule,
            config,
            out_of_orderness_ms,
            input_paths,
            context,
            screen_paths,
            where_needles,
            filter_needles,
            partitions: BTreeMap::new(),
            watermark_ms: i64::MIN,
            keys: HashMap::new(),
            timers: BTreeSet::new(),
            timer_of: HashMap::new(),
            dirty: HashSet::new(),
            entries: 0,
            counters: Counters::default(),
            last_error: None,
        }
    }

    /// The parts of an input event the rule reads: give `process` at least these (the
    /// runtime parses only them, see `parse_pruned`).
    pub fn input_paths(&self) -> &Paths {
        &self.input_paths
    }

    /// The parts of an event `screen` needs, when the rule has a condition to screen with.
    pub fn screen_paths(&self) -> Option<&Paths> {
        self.screen_paths.as_ref()
    }

    /// True when an event (parsed with at least `screen_paths`) fails `where` or a filter's
    /// condition: it only moves the watermark, so `process` needs no more of it. The runtime
    /// parses most events only this far.
    pub fn screens_out(&self, event: &Json) -> bool {
        let fails = |expr: &Expr| !matches!(expr.test(&[("event", event)]), Ok(true));
        self.rule.condition.as_ref().is_some_and(fails)
            || matches!(&self.rule.kind, Kind::Filter { condition } if condition.paths_reads_only_event() && fails(condition))
    }

    pub fn rule(&self) -> &Arc<Rule> {
        &self.rule
    }

    pub fn counters(&self) -> &Counters {
        &self.counters
    }

    /// The rule's watermark (`i64::MIN` before any).
    pub fn watermark_ms(&self) -> i64 {
        self.watermark_ms
    }

    /// Whether everything the wall clock could have finalised up to `wall_ms` is finalised
    /// here: every partition's watermark is at least what an idle partition's is at
    /// `wall_ms`, and no timer below the horizon waits for a later call. A run that read the
    /// same input as an earlier one, and gets here for the earlier run's last wall-clock
    /// time, has emitted everything the earlier one emitted. Filters finalise nothing.
    pub fn finalised_through(&self, wall_ms: i64) -> bool {
        if matches!(self.rule.kind, Kind::Filter { .. }) {
            return true;
        }
        let idle = wall_ms.saturating_sub(self.out_of_orderness_ms);
        self.partitions.values().all(|clock| clock.watermark_ms >= idle)
            && self.timers.first().is_none_or(|(time, _)| *time >= self.horizon_ms())
    }

    /// Keys with state, and their partial matches and open windows.
    pub fn state_size(&self) -> (usize, usize) {
        (self.keys.len(), self.entries)
    }

    /// The last evaluation error (field and why), for the rule's status.
    pub fn last_error(&self) -> Option<&str> {
        self.last_error.as_deref()
    }

    /// Makes a partition count for the watermark before it delivered anything, so that the
    /// rule waits for it (or for it to be idle) rather than racing ahead.
    pub fn register_partition(&mut self, stream: &str, partition: u32, now_ms: i64) {
        let Some(stream) = self.stream_index(stream) else { return };
        self.partitions.entry((stream, partition)).or_insert(PartitionClock {
            max_event_ms: None,
            watermark_ms: i64::MIN,
            last_input_ms: now_ms,
        });
    }

    /// The event time of an event as the engine sees it.
    pub fn event_time_ms(event: &Json, record_timestamp_ms: i64) -> i64 {
        ["timestamp", "originalTimestamp"]
            .iter()
            .find_map(|field| event.get(field).and_then(Json::as_str).and_then(parse_time_ms))
            .unwrap_or(record_timestamp_ms)
    }

    /// Processes one event read at wall-clock time `now_ms`.
    pub fn process(&mut self, input: &Input<'_>, now_ms: i64, out: &mut Vec<Output>) {
        self.counters.events_in += 1;
        let stream_index = self.stream_index(input.stream).unwrap_or(0);
        let position = Position(stream_index, input.partition, input.offset);
        if matches!(self.rule.kind, Kind::Filter { .. }) {
            // Stateless: no watermark to keep, and the event time only matters for an output.
            return self.handle(input, None, position, out);
        }
        let time_ms = Engine::event_time_ms(input.event, input.record_timestamp_ms);
        self.handle(input, Some(time_ms), position, out);
        // The partition's clock moves after the event is handled: an event is judged late
        // against the watermark from before it.
        self.observe(stream_index, input.partition, time_ms, now_ms, out);
    }

    /// Screens an event on its JSON text: when the text shows that `where` (or a filter's
    /// condition) cannot hold, the event is counted and its time moves the watermark, as
    /// `process` would do, and true is returned; otherwise nothing happens and the caller
    /// parses the event and calls `process`.
    pub fn screen_raw(
        &mut self,
        stream: &str,
        partition: u32,
        text: &[u8],
        now_ms: i64,
        out: &mut Vec<Output>,
    ) -> bool {
        // Only objects: anything else takes `process`'s way (it is skipped and counted there).
        if text.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
            return false;
        }
        let fails_where = self.where_needles.as_ref().is_some_and(|n| crate::screen::lacks_all(text, n));
        let fails_filter =
            !fails_where && self.filter_needles.as_ref().is_some_and(|n| crate::screen::lacks_all(text, n));
        if !fails_where && !fails_filter {
            return false;
        }
        let filter = matches!(self.rule.kind, Kind::Filter { .. });
        let time_ms = if filter { None } else { crate::screen::top_level_time(text) };
        if !filter && time_ms.is_none() {
            return false;
        }
        self.counters.events_in += 1;
        if fails_where {
            self.counters.events_skipped += 1;
        }
        if let Some(time_ms) = time_ms {
            let stream_index = self.stream_index(stream).unwrap_or(0);
            self.observe(stream_index, partition, time_ms, now_ms, out);
        }
        true
    }

    /// Moves a partition's clock with an event's time, and finalises what is due.
    fn observe(&mut self, stream_index: u16, partition: u32, time_ms: i64, now_ms: i64, out: &mut Vec<Output>) {
        let rule_watermark = self.watermark_ms;
        let clock = self.partitions.entry((stream_index, partition)).or_insert(PartitionClock {
            max_event_ms: None,
            watermark_ms: i64::MIN,
            last_input_ms: now_ms,
        });
        clock.last_input_ms = now_ms;
        clock.max_event_ms = Some(clock.max_event_ms.map_or(time_ms, |max| max.max(time_ms)));
        let before = clock.watermark_ms;
        clock.watermark_ms = before.max(time_ms.saturating_sub(self.out_of_orderness_ms));
        // Only a partition at or below the rule's watermark can be the one holding it back.
        if clock.watermark_ms > before && before <= rule_watermark {
            self.update_watermark();
        }
        self.fire(out);
    }

    fn stream_index(&self, stream: &str) -> Option<u16> {
        self.rule.streams.iter().position(|s| s == stream).map(|i| i as u16)
    }

    /// Moves idle partitions' watermarks with the wall clock and finalises what is due.
    /// Returns true when more finalisations are due than one call makes
    /// (`FIRINGS_PER_CALL_MAX`): call again.
    pub fn advance(&mut self, now_ms: i64, out: &mut Vec<Output>) -> bool {
        for clock in self.partitions.values_mut() {
            if now_ms.saturating_sub(clock.last_input_ms) >= self.config.idle_timeout_ms {
                clock.watermark_ms = clock.watermark_ms.max(now_ms.saturating_sub(self.out_of_orderness_ms));
            }
        }
        self.update_watermark();
        self.fire(out)
    }

    /// Finalises everything, as if the watermark had passed it all: the end of a backtest.
    pub fn flush(&mut self, out: &mut Vec<Output>) {
        self.watermark_ms = i64::MAX;
        while self.fire(out) {}
    }

    fn update_watermark(&mut self) {
        if let Some(lowest) = self.partitions.values().map(|p| p.watermark_ms).min() {
            self.watermark_ms = self.watermark_ms.max(lowest);
        }
    }

    /// W − allowed lateness: what closed before it is final.
    fn horizon_ms(&self) -> i64 {
        self.watermark_ms.saturating_sub(self.rule.allowed_lateness_ms)
    }

    fn handle(&mut self, input: &Input<'_>, time_ms: Option<i64>, position: Position, out: &mut Vec<Output>) {
        let rule = self.rule.clone();
        let event = input.event;
        if !event.is_object() {
            self.counters.events_skipped += 1;
            return;
        }
        // `where` first: it reads only the event, and most events stop here.
        if let Some(condition) = &rule.condition
            && !self.condition(condition, &[("event", event)])
        {
            self.counters.events_skipped += 1;
            return;
        }
        // A filter's condition that reads only the event comes before the key, so that an
        // event screened with `screen_paths` takes the same way as a whole one.
        let filter_checked = match &rule.kind {
            Kind::Filter { condition } if condition.paths_reads_only_event() => {
                if !self.condition(condition, &[("event", event)]) {
                    return;
                }
                true
            }
            _ => false,
        };
        let Some(key) = self.key_of(event) else {
            self.counters.events_skipped += 1;
            return;
        };
        let key_value = Json::String(record_key(&rule.key, &key).to_string());
        let time_ms = time_ms.unwrap_or_else(|| Engine::event_time_ms(event, input.record_timestamp_ms));
        match &rule.kind {
            Kind::Filter { condition } => {
                if !filter_checked && !self.condition(condition, &[("event", event), ("key", &key_value)]) {
                    return;
                }
                self.counters.matches += 1;
                let properties = match &rule.emit.properties {
                    Some(expr) => match expr.object(&[("event", event), ("key", &key_value)]) {
                        Ok(map) => Json::Object(map),
                        Err(error) => return self.eval_error(error),
                    },
                    None => input.event.get("properties").cloned().unwrap_or_else(|| json!({})),
                };
                let name = rule.emit.event.clone().unwrap_or_else(|| {
                    ["event", "type"]
                        .iter()
                        .find_map(|f| input.event.get(f).and_then(Json::as_str))
                        .unwrap_or("event")
                        .to_string()
                });
                let stream = &rule.streams[position.0 as usize];
                let firing_id = id(&[
                    rule.name.as_bytes(),
                    &rule.version.to_be_bytes(),
                    b"filter",
                    stream.as_bytes(),
                    &position.1.to_be_bytes(),
                    &position.2.to_be_bytes(),
                ]);
                self.emit(&key, firing_id, time_ms, name, properties, out);
            }
            Kind::Pattern(spec) => {
                if time_ms < self.horizon_ms() {
                    return self.late(input, &key, out);
                }
                self.pattern_event(spec, &key, &key_value, time_ms, position, event, out);
            }
            Kind::Window(spec) => {
                let key = self.intern(&key);
                self.window_event(spec, &key, &key_value, time_ms, input, out)
            }
            Kind::Anomaly(spec) => {
                let key = self.intern(&key);
                self.anomaly_event(spec, &key, &key_value, time_ms, input, out)
            }
        }
    }

    /// The key's internal name: `u:`/`a:` and the user for `key: user` (so that the derived
    /// event can say which id it was), the rule's name for `key: none`, the value for an
    /// expression.
    fn key_of(&mut self, event: &Json) -> Option<String> {
        let text = |value: &Json| match value {
            Json::String(s) if !s.is_empty() => Some(s.clone()),
            Json::Number(n) => Some(n.to_string()),
            _ => None,
        };
        let key = match &self.rule.key {
            KeySpec::User => {
                // Built by hand: `format!` is measurably slow on this path.
                let (prefix, user) = match event.get("userId").and_then(text) {
                    Some(user) => ("u:", user),
                    None => ("a:", event.get("anonymousId").and_then(text)?),
                };
                let mut key = String::with_capacity(2 + user.len());
                key.push_str(prefix);
                key.push_str(&user);
                key
            }
            KeySpec::Global => self.rule.name.clone(),
            KeySpec::Expr(expr) => match expr.json(&[("event", event)]) {
                Ok(value) => text(&value)?,
                Err(error) => {
                    if !error.missing {
                        self.eval_error(error);
                    }
                    return None;
                }
            },
        };
        Some(key)
    }

    /// The key's shared name: the map's own when the key has state (no allocation).
    fn intern(&self, key: &str) -> Arc<str> {
        self.keys.get_key_value(key).map_or_else(|| Arc::from(key), |(k, _)| k.clone())
    }

    fn eval_error(&mut self, error: EvalError) {
        self.counters.eval_errors += 1;
        self.last_error = Some(error.to_string());
    }

    /// A condition's verdict. A field the event lacks makes it false without an error
    /// (`event.event == "AddToCart"` on a page call); other errors are counted.
    fn condition(&mut self, expr: &Expr, variables: &[(&str, &Json)]) -> bool {
        match expr.test(variables) {
            Ok(verdict) => verdict,
            Err(error) => {
                if !error.missing {
                    self.eval_error(error);
                }
                false
            }
        }
    }

    fn late(&mut self, input: &Input<'_>, key: &str, out: &mut Vec<Output>) {
        self.counters.late_events += 1;
        if let Some(stream) = &self.rule.late_events_stream {
            out.push(Output {
                kind: OutputKind::Late,
                stream: stream.clone(),
                key: Some(record_key(&self.rule.key, key).to_string()),
                id: id(&[
                    self.rule.name.as_bytes(),
                    b"late",
                    input.stream.as_bytes(),
                    &input.partition.to_be_bytes(),
                    &input.offset.to_be_bytes(),
                ]),
                timestamp_ms: Engine::event_time_ms(input.event, input.record_timestamp_ms),
                // The runtime puts the record's own bytes here (the engine may have been given
                // only the fields the rule reads).
                value: serde_json::to_string(input.event).unwrap_or_default(),
            });
        }
    }

    /// Takes a key's state out for changing (new keys only while under `keys_max`).
    fn take_state(&mut self, key: &Arc<str>) -> Option<KeyState> {
        if let Some(state) = self.keys.get_mut(key) {
            return Some(std::mem::take(state));
        }
        if self.keys.len() >= self.config.keys_max {
            self.counters.keys_refused += 1;
            return None;
        }
        Some(KeyState::default())
    }

    /// Puts a key's state back after a change: counts, timer, dirty mark.
    fn put_state(&mut self, key: &Arc<str>, mut state: KeyState, before_entries: usize) {
        // Vectors grow by doubling; a key usually holds one or two entries for a long time.
        if state.partials.capacity() > state.partials.len() {
            state.partials.shrink_to_fit();
        }
        if state.windows.capacity() > state.windows.len() {
            state.windows.shrink_to_fit();
        }
        self.entries = (self.entries + state.entries()).saturating_sub(before_entries);
        let timer = self.deadline(&state);
        if let Some(old) = self.timer_of.remove(key) {
            self.timers.remove(&(old, key.clone()));
        }
        if let Some(time) = timer {
            self.timers.insert((time, key.clone()));
            self.timer_of.insert(key.clone(), time);
        }
        if state.is_empty() {
            self.keys.remove(key);
        } else {
            self.keys.insert(key.clone(), state);
        }
        self.dirty.insert(key.clone());
    }

    /// The event time at which the key's earliest state closes.
    fn deadline(&self, state: &KeyState) -> Option<i64> {
        match &self.rule.kind {
            Kind::Filter { .. } => None,
            Kind::Pattern(spec) => state.partials.iter().map(|p| p.start_ms.saturating_add(spec.within_ms)).min(),
            Kind::Window(_) => state.windows.iter().map(|w| w.end_ms - 1).min(),
            Kind::Anomaly(spec) => {
                state.anomaly.as_ref().and_then(|a| a.next_ms).map(|next| next.saturating_add(spec.size_ms) - 1)
            }
        }
    }

    /// Finalises keys whose deadline is below the horizon, in (deadline, key) order.
    fn fire(&mut self, out: &mut Vec<Output>) -> bool {
        let horizon = self.horizon_ms();
        let mut fired = 0;
        while let Some((time, key)) = self.timers.first().cloned() {
            if time >= horizon {
                return false;
            }
            if fired == FIRINGS_PER_CALL_MAX {
                return true;
            }
            fired += 1;
            let Some(mut state) = self.keys.get_mut(&key).map(std::mem::take) else {
                self.timers.remove(&(time, key.clone()));
                self.timer_of.remove(&key);
                continue;
            };
            let before = state.entries();
            let rule = self.rule.clone();
            match &rule.kind {
                Kind::Pattern(spec) => self.pattern_timeout(spec, &key, &mut state, horizon, out),
                Kind::Window(spec) => self.window_close(spec, &key, &mut state, horizon, out),
                Kind::Anomaly(spec) => self.anomaly_close(spec, &key, &mut state, horizon, out),
                Kind::Filter { .. } => {}
            }
            self.put_state(&key, state, before);
        }
        false
    }

    // ---- patterns ----

    #[allow(clippy::too_many_arguments)]
    fn pattern_event(
        &mut self,
        spec: &PatternSpec,
        key: &str,
        key_value: &Json,
        time_ms: i64,
        position: Position,
        event: &Json,
        out: &mut Vec<Output>,
    ) {
        // Evaluate the first step before touching state: most events start nothing.
        let starts = self.condition(&spec.steps[0].condition, &[("event", event), ("key", key_value)]);
        let has_state = self.keys.get(key).is_some_and(|s| !s.partials.is_empty());
        if !starts && !has_state {
            return;
        }
        let key = &self.intern(key);
        let Some(mut state) = self.take_state(key) else { return };
        let before = state.entries();
        let mut index = 0;
        let mut changed = false;
        while index < state.partials.len() {
            let partial = &state.partials[index];
            let step = &spec.steps[partial.step as usize];
            if time_ms < partial.start_ms || time_ms > partial.start_ms.saturating_add(spec.within_ms) {
                index += 1;
                continue;
            }
            // First without the earlier steps' events: most conditions fail on the event
            // alone (`event.event == "Checkout" && ...`), and then nothing is parsed. Only a
            // verdict that needs them is computed again with them (expressions are pure, so
            // a verdict reached without them is the verdict).
            let verdict = match step.condition.test(&[("event", event), ("key", key_value)]) {
                Ok(verdict) => verdict,
                Err(_) => {
                    let earlier: Vec<Json> = partial.captured.iter().map(|c| parse_captured(c)).collect();
                    let mut variables = vec![("event", event), ("key", key_value)];
                    variables.extend(spec.steps.iter().zip(&earlier).map(|(step, value)| (step.name.as_str(), value)));
                    self.condition(&step.condition, &variables)
                }
            };
            if !verdict {
                index += 1;
                continue;
            }
            changed = true;
            if step.absent {
                // The awaited event came: no match.
                state.partials.remove(index);
                continue;
            }
            let captured = capture(event, &spec.captured[partial.step as usize]);
            let partial = &mut state.partials[index];
            partial.captured.push(captured);
            partial.step += 1;
            if partial.step as usize == spec.steps.len() {
                let partial = state.partials.remove(index);
                self.pattern_fire(spec, key, &partial, time_ms, out);
                continue;
            }
            index += 1;
        }
        if starts {
            changed = true;
            if spec.start == PatternStart::Latest {
                state.partials.clear();
            }
            if state.partials.len() >= self.config.matches_per_key_max {
                state.partials.remove(0);
                self.counters.matches_dropped += 1;
            }
            state.partials.push(Partial {
                step: 1,
                start_ms: time_ms,
                origin: position,
                captured: vec![capture(event, &spec.captured[0])],
            });
        }
        if changed {
            self.put_state(key, state, before);
        } else if !state.is_empty() {
            // Unchanged: put it back as it was, without marking it dirty.
            self.keys.insert(key.clone(), state);
        }
    }

    fn pattern_timeout(
        &mut self,
        spec: &PatternSpec,
        key: &Arc<str>,
        state: &mut KeyState,
        horizon: i64,
        out: &mut Vec<Output>,
    ) {
        let last = spec.steps.len() - 1;
        let mut index = 0;
        while index < state.partials.len() {
            let deadline = state.partials[index].start_ms.saturating_add(spec.within_ms);
            if deadline >= horizon {
                index += 1;
                continue;
            }
            let partial = state.partials.remove(index);
            // "Then not B within T": every step before the absent one matched and T passed.
            if spec.steps[last].absent && partial.step as usize == last {
                self.pattern_fire(spec, key, &partial, deadline, out);
            }
        }
    }

    fn pattern_fire(&mut self, spec: &PatternSpec, key: &str, partial: &Partial, time_ms: i64, out: &mut Vec<Output>) {
        self.counters.matches += 1;
        let rule = self.rule.clone();
        let steps: Vec<(&str, Json)> = spec
            .steps
            .iter()
            .zip(&partial.captured)
            .map(|(step, captured)| (step.name.as_str(), parse_captured(captured)))
            .collect();
        let properties = match &rule.emit.properties {
            Some(expr) => {
                let key_value = Json::String(record_key(&rule.key, key).to_string());
                let mut variables = vec![("key", &key_value)];
                variables.extend(steps.iter().map(|(name, value)| (*name, value)));
                match expr.object(&variables) {
                    Ok(map) => Json::Object(map),
                    Err(error) => return self.eval_error(error),
                }
            }
            None => Json::Object(
                steps
                    .iter()
                    .map(|(name, value)| (name.to_string(), value.get("properties").cloned().unwrap_or(Json::Null)))
                    .collect(),
            ),
        };
        let Position(stream, partition, offset) = partial.origin;
        let stream = rule.streams.get(stream as usize).map_or("", String::as_str);
        let firing_id = id(&[
            rule.name.as_bytes(),
            &rule.version.to_be_bytes(),
            b"pattern",
            stream.as_bytes(),
            &partition.to_be_bytes(),
            &offset.to_be_bytes(),
        ]);
        let name = rule.emit.event.clone().unwrap_or_default();
        self.emit(key, firing_id, time_ms, name, properties, out);
    }

    // ---- windows ----

    #[allow(clippy::too_many_arguments)]
    fn window_event(
        &mut self,
        spec: &WindowSpec,
        key: &Arc<str>,
        key_value: &Json,
        time_ms: i64,
        input: &Input<'_>,
        out: &mut Vec<Output>,
    ) {
        let horizon = self.horizon_ms();
        let variables = [("event", input.event), ("key", key_value)];
        let mut group = Vec::with_capacity(spec.group_by.len());
        for (_, expr) in &spec.group_by {
            match expr.json(&variables) {
                Ok(value) => group.push(value),
                Err(error) => {
                    // A missing field groups as null.
                    if !error.missing {
                        self.eval_error(error);
                    }
                    group.push(Json::Null);
                }
            }
        }
        // serde_json's writer, not `Display` (which goes through the formatting machinery).
        let group: Box<str> = serde_json::to_string(&Json::Array(group)).unwrap_or_default().into();
        let values = self.aggregate_values(&spec.aggregates, &variables);
        let Some(mut state) = self.take_state(key) else { return };
        let before = state.entries();
        let mut added = false;
        match spec.window {
            WindowType::Tumbling { size_ms } => {
                let start = time_ms.div_euclid(size_ms) * size_ms;
                added |=
                    self.add_to_window(spec, &mut state, start, start + size_ms, &group, time_ms, &values, horizon);
            }
            WindowType::Hopping { size_ms, slide_ms } => {
                // Every window [s, s + size) with s a multiple of slide that holds the event.
                let mut start = time_ms.div_euclid(slide_ms) * slide_ms;
                while start > time_ms - size_ms {
                    added |=
                        self.add_to_window(spec, &mut state, start, start + size_ms, &group, time_ms, &values, horizon);
                    start -= slide_ms;
                }
            }
            WindowType::Session { gap_ms } => {
                let mut session = OpenWindow {
                    start_ms: time_ms,
                    end_ms: time_ms.saturating_add(gap_ms),
                    group: group.clone(),
                    accumulators: spec.aggregates.iter().map(|a| Accumulator::new(a.function)).collect(),
                };
                for (accumulator, value) in session.accumulators.iter_mut().zip(&values) {
                    accumulator.add(time_ms, value.as_ref());
                }
                let overlaps =
                    |w: &OpenWindow| w.group == group && w.start_ms < session.end_ms && session.start_ms < w.end_ms;
                if session.end_ms - 1 < horizon && !state.windows.iter().any(overlaps) {
                    // Its session would already be closed, and it joins no open one.
                } else {
                    // Merge every open session it touches, in start order.
                    let mut merged: Vec<OpenWindow> = Vec::new();
                    let mut index = 0;
                    while index < state.windows.len() {
                        if overlaps(&state.windows[index]) {
                            merged.push(state.windows.remove(index));
                        } else {
                            index += 1;
                        }
                    }
                    merged.push(session);
                    merged.sort_by_key(|w| w.start_ms);
                    let mut merged = merged.into_iter();
                    let mut whole = merged.next().expect("holds at least the new session");
                    for next in merged {
                        whole.start_ms = whole.start_ms.min(next.start_ms);
                        whole.end_ms = whole.end_ms.max(next.end_ms);
                        for (accumulator, other) in whole.accumulators.iter_mut().zip(next.accumulators) {
                            accumulator.merge(other);
                        }
                    }
                    if state.windows.len() >= self.config.matches_per_key_max {
                        state.windows.remove(0);
                        self.counters.matches_dropped += 1;
                    }
                    state.windows.push(whole);
                    added = true;
                }
            }
        }
        self.put_state(key, state, before);
        if !added {
            self.late(input, key, out);
        }
    }

    fn aggregate_values(
        &mut self,
        aggregates: &[crate::rule::Aggregate],
        variables: &[(&str, &Json)],
    ) -> Vec<Option<Json>> {
        aggregates
            .iter()
            .map(|aggregate| {
                let expr = aggregate.argument.as_ref()?;
                match expr.json(variables) {
                    Ok(value) => Some(value),
                    Err(error) => {
                        // A missing field adds nothing; other errors are counted.
                        if !error.missing {
                            self.eval_error(error);
                        }
                        None
                    }
                }
            })
            .collect()
    }

    /// Adds the event to the window [start, end) of its group unless that window is closed;
    /// true when added.
    #[allow(clippy::too_many_arguments)]
    fn add_to_window(
        &mut self,
        spec: &WindowSpec,
        state: &mut KeyState,
        start: i64,
        end: i64,
        group: &str,
        time_ms: i64,
        values: &[Option<Json>],
        horizon: i64,
    ) -> bool {
        if end - 1 < horizon {
            return false;
        }
        let index = match state.windows.iter().position(|w| w.start_ms == start && &*w.group == group) {
            Some(index) => index,
            None => {
                if state.windows.len() >= self.config.matches_per_key_max {
                    state.windows.remove(0);
                    self.counters.matches_dropped += 1;
                }
                state.windows.push(OpenWindow {
                    start_ms: start,
                    end_ms: end,
                    group: group.into(),
                    accumulators: spec.aggregates.iter().map(|a| Accumulator::new(a.function)).collect(),
                });
                state.windows.len() - 1
            }
        };
        for (accumulator, value) in state.windows[index].accumulators.iter_mut().zip(values) {
            accumulator.add(time_ms, value.as_ref());
        }
        true
    }

    fn window_close(
        &mut self,
        spec: &WindowSpec,
        key: &str,
        state: &mut KeyState,
        horizon: i64,
        out: &mut Vec<Output>,
    ) {
        let mut due: Vec<OpenWindow> = Vec::new();
        let mut index = 0;
        while index < state.windows.len() {
            if state.windows[index].end_ms - 1 < horizon {
                due.push(state.windows.remove(index));
            } else {
                index += 1;
            }
        }
        due.sort_by(|a, b| (a.end_ms, a.start_ms, &a.group).cmp(&(b.end_ms, b.start_ms, &b.group)));
        for window in due {
            self.window_fire(spec, key, window, out);
        }
    }

    fn window_fire(&mut self, spec: &WindowSpec, key: &str, window: OpenWindow, out: &mut Vec<Output>) {
        let rule = self.rule.clone();
        let group_values: Vec<Json> = serde_json::from_str(&window.group).unwrap_or_default();
        let group: serde_json::Map<String, Json> =
            spec.group_by.iter().map(|(name, _)| name.clone()).zip(group_values).collect();
        let results: Vec<(String, Json)> =
            spec.aggregates.iter().zip(&window.accumulators).map(|(a, acc)| (a.name.clone(), acc.result())).collect();
        let window_value = json!({
            "start": format_time_ms(window.start_ms),
            "end": format_time_ms(window.end_ms),
            "start_ms": window.start_ms,
            "end_ms": window.end_ms,
        });
        let key_value = Json::String(record_key(&rule.key, key).to_string());
        let group_value = Json::Object(group.clone());
        let mut variables: Vec<(&str, &Json)> =
            vec![("key", &key_value), ("window", &window_value), ("group", &group_value)];
        variables.extend(results.iter().map(|(name, value)| (name.as_str(), value)));
        if let Some(having) = &spec.having
            && !self.condition(having, &variables)
        {
            return;
        }
        let custom = rule.emit.properties.as_ref().map(|expr| expr.object(&variables));
        drop(variables);
        self.counters.matches += 1;
        let properties = match custom {
            Some(result) => match result {
                Ok(map) => Json::Object(map),
                Err(error) => return self.eval_error(error),
            },
            None => {
                let mut properties = serde_json::Map::new();
                properties.insert("window_start".into(), window_value["start"].clone());
                properties.insert("window_end".into(), window_value["end"].clone());
                properties.extend(group);
                for ((name, value), accumulator) in results.into_iter().zip(&window.accumulators) {
                    if accumulator.saturated() {
                        properties.insert(format!("{name}_saturated"), Json::Bool(true));
                    }
                    properties.insert(name, value);
                }
                Json::Object(properties)
            }
        };
        let firing_id = id(&[
            rule.name.as_bytes(),
            &rule.version.to_be_bytes(),
            b"window",
            key.as_bytes(),
            window.group.as_bytes(),
            &window.start_ms.to_be_bytes(),
        ]);
        let name = rule.emit.event.clone().unwrap_or_default();
        self.emit(key, firing_id, window.end_ms, name, properties, out);
    }

    // ---- anomalies ----

    #[allow(clippy::too_many_arguments)]
    fn anomaly_event(
        &mut self,
        spec: &AnomalySpec,
        key: &Arc<str>,
        key_value: &Json,
        time_ms: i64,
        input: &Input<'_>,
        out: &mut Vec<Output>,
    ) {
        let horizon = self.horizon_ms();
        let start = time_ms.div_euclid(spec.size_ms) * spec.size_ms;
        let closed = start + spec.size_ms - 1 < horizon
            || self
                .keys
                .get(key)
                .and_then(|s| s.anomaly.as_ref())
                .and_then(|a| a.next_ms)
                .is_some_and(|next| start < next);
        if closed {
            return self.late(input, key, out);
        }
        let variables = [("event", input.event), ("key", key_value)];
        let value = self.aggregate_values(std::slice::from_ref(&spec.metric), &variables).pop().flatten();
        let Some(mut state) = self.take_state(key) else { return };
        let before = state.entries();
        let anomaly = state.anomaly.get_or_insert_with(Box::default);
        anomaly.next_ms.get_or_insert(start);
        anomaly
            .open
            .entry(start)
            .or_insert_with(|| Accumulator::new(spec.metric.function))
            .add(time_ms, value.as_ref());
        self.put_state(key, state, before);
    }

    fn anomaly_close(
        &mut self,
        spec: &AnomalySpec,
        key: &str,
        state: &mut KeyState,
        horizon: i64,
        out: &mut Vec<Output>,
    ) {
        let Some(mut anomaly) = state.anomaly.take() else { return };
        let mut evaluated = 0;
        while let Some(next) = anomaly.next_ms {
            let end = next.saturating_add(spec.size_ms);
            if end > horizon {
                break;
            }
            // A long silence is not evaluated window by window: past the idle bound the key
            // is forgotten.
            if anomaly.open.is_empty() && (horizon - next) / spec.size_ms >= ANOMALY_IDLE_WINDOWS_MAX as i64 {
                anomaly.empty_run = ANOMALY_IDLE_WINDOWS_MAX;
            } else {
                let accumulator = anomaly.open.remove(&next);
                let value = match &accumulator {
                    Some(accumulator) => accumulator.number(),
                    None => Accumulator::empty_value(spec.metric.function),
                };
                anomaly.empty_run = if accumulator.is_some() { 0 } else { anomaly.empty_run + 1 };
                if let Some(value) = value {
                    self.anomaly_evaluate(spec, key, &mut anomaly, next, value, out);
                }
                anomaly.next_ms = Some(end);
                evaluated += 1;
            }
            if anomaly.empty_run >= ANOMALY_IDLE_WINDOWS_MAX {
                if let Some(incident) = anomaly.incident_ms {
                    let alert =
                        json!({"status": "resolved", "reason": "idle", "incident_start": format_time_ms(incident)});
                    self.anomaly_emit(key, "resolved", incident, end, alert, out);
                }
                return;
            }
            if evaluated >= FIRINGS_PER_CALL_MAX {
                break;
            }
        }
        state.anomaly = Some(anomaly);
    }

    fn anomaly_evaluate(
        &mut self,
        spec: &AnomalySpec,
        key: &str,
        anomaly: &mut AnomalyState,
        start: i64,
        value: f64,
        out: &mut Vec<Output>,
    ) {
        let warm = anomaly.evaluated >= spec.min_windows as u64;
        let (anomalous, baseline, deviation) = match &spec.detector {
            Detector::Threshold { above, below } => {
                let over = above.filter(|a| value > *a);
                let under = below.filter(|b| value < *b);
                let bound = over.or(under).or(*above).or(*below).unwrap_or(0.0);
                (over.is_some() || under.is_some(), bound, value - bound)
            }
            Detector::Ewma { alpha, threshold } => {
                let (mean, std) = (anomaly.mean, anomaly.variance.sqrt());
                let verdict = warm && outside(value, mean, std, *threshold);
                if anomaly.evaluated == 0 {
                    anomaly.mean = value;
                    anomaly.variance = 0.0;
                } else {
                    let difference = value - anomaly.mean;
                    let increment = alpha * difference;
                    anomaly.mean += increment;
                    anomaly.variance = (1.0 - alpha) * (anomaly.variance + difference * increment);
                }
                (verdict, mean, z(value, mean, std))
            }
            Detector::ZScore { windows, threshold } => {
                let n = anomaly.history.len() as f64;
                let mean = if n > 0.0 { anomaly.history.iter().sum::<f64>() / n } else { value };
                let std = if n > 0.0 {
                    (anomaly.history.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / n).sqrt()
                } else {
                    0.0
                };
                let verdict = anomaly.history.len() >= spec.min_windows && outside(value, mean, std, *threshold);
                anomaly.history.push_back(value);
                while anomaly.history.len() > *windows {
                    anomaly.history.pop_front();
                }
                (verdict, mean, z(value, mean, std))
            }
        };
        anomaly.evaluated += 1;
        let end = start + spec.size_ms;
        let alert = |status: &str, incident: i64| {
            json!({
                "status": status,
                "value": value,
                "baseline": baseline,
                "deviation": deviation,
                "window_start": format_time_ms(start),
                "window_end": format_time_ms(end),
                "incident_start": format_time_ms(incident),
            })
        };
        match (anomalous, anomaly.incident_ms) {
            (true, None) => {
                anomaly.incident_ms = Some(start);
                self.anomaly_emit(key, "firing", start, end, alert("firing", start), out);
            }
            (false, Some(incident)) => {
                anomaly.incident_ms = None;
                self.anomaly_emit(key, "resolved", incident, end, alert("resolved", incident), out);
            }
            _ => {}
        }
    }

    fn anomaly_emit(
        &mut self,
        key: &str,
        status: &str,
        incident_ms: i64,
        time_ms: i64,
        alert: Json,
        out: &mut Vec<Output>,
    ) {
        self.counters.matches += 1;
        let rule = self.rule.clone();
        let properties = match &rule.emit.properties {
            Some(expr) => {
                let key_value = Json::String(record_key(&rule.key, key).to_string());
                match expr.object(&[("key", &key_value), ("alert", &alert)]) {
                    Ok(map) => Json::Object(map),
                    Err(error) => return self.eval_error(error),
                }
            }
            None => alert,
        };
        let firing_id = id(&[
            rule.name.as_bytes(),
            &rule.version.to_be_bytes(),
            b"anomaly",
            key.as_bytes(),
            status.as_bytes(),
            &incident_ms.to_be_bytes(),
        ]);
        let name = rule.emit.event.clone().unwrap_or_default();
        self.emit(key, firing_id, time_ms, name, properties, out);
    }

    // ---- outputs ----

    /// Builds the derived event and its delivery requests.
    fn emit(
        &mut self,
        key: &str,
        firing_id: String,
        time_ms: i64,
        name: String,
        properties: Json,
        out: &mut Vec<Output>,
    ) {
        let rule = self.rule.clone();
        self.counters.emits += 1;
        let (id_field, id_value) = identity(&rule, key);
        // Written straight to text in a fixed order: building a JSON tree and serialising it
        // costs dozens of allocations per firing.
        let mut event = String::with_capacity(256);
        event.push_str(r#"{"type":"track","event":"#);
        push_json(&mut event, &name);
        event.push_str(r#","messageId":""#);
        event.push_str(&firing_id);
        event.push_str(r#"",""#);
        event.push_str(id_field);
        event.push_str(r#"":"#);
        push_json(&mut event, id_value);
        event.push_str(r#","timestamp":""#);
        event.push_str(&format_time_ms(time_ms));
        event.push_str(r#"","properties":"#);
        push_json(&mut event, &properties);
        event.push_str(r#","context":"#);
        event.push_str(&self.context);
        event.push('}');
        let record_key = record_key(&rule.key, key).to_string();
        if let Some(stream) = &rule.emit.stream {
            out.push(Output {
                kind: OutputKind::Derived,
                stream: stream.clone(),
                key: Some(record_key.clone()),
                id: firing_id.clone(),
                timestamp_ms: time_ms,
                value: if rule.actions.is_empty() { std::mem::take(&mut event) } else { event.clone() },
            });
        }
        // The derived event as a tree, only for a payload expression that reads it.
        let mut tree: Option<Json> = None;
        for (index, action) in rule.actions.iter().enumerate() {
            let payload = match &action.payload {
                Some(expr) => {
                    let tree = tree.get_or_insert_with(|| serde_json::from_str(&event).unwrap_or(Json::Null));
                    let key_value = Json::String(record_key.clone());
                    match expr.json(&[("event", tree), ("key", &key_value)]) {
                        Ok(payload) => serde_json::to_string(&payload).unwrap_or_default(),
                        Err(error) => {
                            self.eval_error(error);
                            continue;
                        }
                    }
                }
                None => event.clone(),
            };
            let delivery_id = id(&[firing_id.as_bytes(), b"delivery", &(index as u32).to_be_bytes()]);
            self.counters.deliveries += 1;
            let mut value = String::with_capacity(payload.len() + 160);
            value.push_str(r#"{"id":""#);
            value.push_str(&delivery_id);
            value.push_str(r#"","destination":"#);
            push_json(&mut value, &action.webhook);
            value.push_str(r#","rule":"#);
            push_json(&mut value, &rule.name);
            value.push_str(r#","created_ms":"#);
            value.push_str(&time_ms.to_string());
            value.push_str(r#","payload":"#);
            value.push_str(&payload);
            value.push('}');
            out.push(Output {
                kind: OutputKind::Delivery,
                stream: DELIVERIES_STREAM.to_string(),
                key: Some(action.webhook.clone()),
                id: delivery_id,
                timestamp_ms: time_ms,
                value,
            });
        }
    }

    // ---- state persistence ----

    /// The keys changed since the last call, serialized, and the engine-wide state.
    /// The runtime commits these with the input offsets; tests restore from them.
    pub fn take_changes(&mut self) -> (Changes, Vec<u8>) {
        let mut changes: Changes = self
            .dirty
            .drain()
            .map(|key| {
                let value = self.keys.get(&key).map(|state| serde_json::to_vec(state).unwrap_or_default());
                (key, value)
            })
            .collect();
        // Sorted: the store sees the same writes in the same order on every run.
        changes.sort_by(|a, b| a.0.cmp(&b.0));
        // A burst of changes must not keep its set's memory for good.
        if self.dirty.capacity() > 65_536 {
            self.dirty.shrink_to_fit();
        }
        (changes, self.meta())
    }

    /// Every key's state (a snapshot of the whole, as a changelog snapshot writes it), sorted
    /// by key.
    pub fn all_states(&self) -> Changes {
        let mut all: Changes = self
            .keys
            .iter()
            .map(|(key, state)| (key.clone(), Some(serde_json::to_vec(state).unwrap_or_default())))
            .collect();
        all.sort_by(|a, b| a.0.cmp(&b.0));
        all
    }

    fn meta(&self) -> Vec<u8> {
        let meta = Meta {
            watermark_ms: self.watermark_ms,
            partitions: self
                .partitions
                .iter()
                .map(|((s, p), clock)| (self.rule.streams[*s as usize].clone(), *p, clock.clone()))
                .collect(),
        };
        serde_json::to_vec(&meta).unwrap_or_default()
    }

    /// Restores committed state: the engine-wide part and every key's. A key whose state
    /// does not decode is an error (the store is damaged or from another version).
    pub(crate) fn restore(
        &mut self,
        meta: Option<&[u8]>,
        keys: impl IntoIterator<Item = (String, Vec<u8>)>,
        now_ms: i64,
    ) -> Result<(), String> {
        if let Some(meta) = meta {
            let meta: Meta = serde_json::from_slice(meta).map_err(|e| format!("rule state: {e}"))?;
            self.watermark_ms = meta.watermark_ms;
            for (stream, partition, mut clock) in meta.partitions {
                clock.last_input_ms = now_ms;
                // A stream the rule no longer reads is forgotten.
                if let Some(stream) = self.stream_index(&stream) {
                    self.partitions.insert((stream, partition), clock);
                }
            }
        }
        for (key, bytes) in keys {
            let state: KeyState = serde_json::from_slice(&bytes).map_err(|e| format!("state of key {key:?}: {e}"))?;
            let key: Arc<str> = Arc::from(key);
            self.entries += state.entries();
            if let Some(time) = self.deadline(&state) {
                self.timers.insert((time, key.clone()));
                self.timer_of.insert(key.clone(), time);
            }
            self.keys.insert(key, state);
        }
        Ok(())
    }
}

/// Appends a value as JSON text (strings escaped as JSON requires).
fn push_json<T: Serialize + ?Sized>(out: &mut String, value: &T) {
    // serde_json writes valid UTF-8, and the buffer is moved in and out without a copy.
    let mut bytes = std::mem::take(out).into_bytes();
    if serde_json::to_writer(&mut bytes, value).is_err() {
        bytes.extend_from_slice(b"null");
    }
    *out = String::from_utf8(bytes).unwrap_or_default();
}

/// A partial match's captured event, back to JSON.
fn parse_captured(text: &str) -> Json {
    serde_json::from_str::<Json>(text).unwrap_or(Json::Null)
}

fn capture(event: &Json, paths: &Paths) -> Box<str> {
    serde_json::to_string(&paths.prune(event)).unwrap_or_default().into()
}

fn outside(value: f64, mean: f64, std: f64, threshold: f64) -> bool {
    let distance = (value - mean).abs();
    if std > 0.0 { distance > threshold * std } else { distance > 0.0 }
}

fn z(value: f64, mean: f64, std: f64) -> f64 {
    if std > 0.0 { (value - mean) / std } else { value - mean }
}

/// The record key of a key: the user id itself for `key: user`.
fn record_key<'k>(spec: &KeySpec, key: &'k str) -> &'k str {
    match spec {
        KeySpec::User => key.get(2..).unwrap_or(key),
        _ => key,
    }
}

/// The envelope field and value that name the key: `userId` or `anonymousId` for user keys
/// (as the input said), `anonymousId` with the key (or the rule's name for `key: none`)
/// otherwise, so that every derived event is a valid Segment event.
fn identity<'k>(rule: &'k Rule, key: &'k str) -> (&'static str, &'k str) {
    match rule.key {
        KeySpec::User if key.starts_with("u:") => ("userId", &key[2..]),
        KeySpec::User => ("anonymousId", key.get(2..).unwrap_or(key)),
        KeySpec::Global => ("anonymousId", key),
        KeySpec::Expr(_) => ("anonymousId", key),
    }
}

/// What screening an event needs: the conditions that read only the event, and its time.
fn screen_paths(rule: &Rule) -> Option<Paths> {
    let mut paths = Paths::default();
    let mut any = false;
    if let Some(condition) = &rule.condition {
        condition.paths_of("event", &mut paths);
        any = true;
    }
    if let Kind::Filter { condition } = &rule.kind
        && condition.paths_reads_only_event()
    {
        condition.paths_of("event", &mut paths);
        any = true;
    }
    if !any || paths.whole {
        return None;
    }
    for field in ["timestamp", "originalTimestamp"] {
        paths.children.insert(field.into(), Paths::whole());
    }
    Some(paths)
}

/// What the expressions evaluated per input event read of `event`.
fn input_paths(rule: &Rule) -> Paths {
    let mut paths = Paths::default();
    // What the engine itself reads: the key, the time, the name.
    for field in ["userId", "anonymousId", "timestamp", "originalTimestamp", "event", "type"] {
        paths.children.insert(field.into(), Paths::whole());
    }
    if matches!(rule.kind, Kind::Filter { .. }) && rule.emit.properties.is_none() {
        paths.children.insert("properties".into(), Paths::whole());
    }
    let mut add = |expr: &crate::expr::Expr| expr.paths_of("event", &mut paths);
    if let Some(condition) = &rule.condition {
        add(condition);
    }
    if let KeySpec::Expr(expr) = &rule.key {
        add(expr);
    }
    match &rule.kind {
        Kind::Filter { condition } => {
            add(condition);
            if let Some(properties) = &rule.emit.properties {
                add(properties);
            }
        }
        Kind::Window(spec) => {
            spec.group_by.iter().for_each(|(_, e)| add(e));
            spec.aggregates.iter().filter_map(|a| a.argument.as_ref()).for_each(&mut add);
        }
        Kind::Pattern(spec) => {
            spec.steps.iter().for_each(|s| add(&s.condition));
            spec.captured.iter().for_each(|captured| paths.merge(captured));
        }
        Kind::Anomaly(spec) => {
            if let Some(argument) = &spec.metric.argument {
                add(argument);
            }
        }
    }
    paths
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::node::Format;

    const T0: i64 = 1_795_334_400_000;

    fn rule(source: &str) -> Arc<Rule> {
        Arc::new(Rule::parse(source, Format::Yaml, "test").unwrap())
    }

    fn cart(user: &str, time_ms: i64, event: &str, cart: &str) -> Json {
        json!({"type": "track", "event": event, "userId": user, "timestamp": format_time_ms(time_ms),
               "properties": {"cart_id": cart, "sku": "S"}})
    }

    const CART: &str = r#"
name: carts
streams: [events]
pattern:
  within: 30s
  steps:
    - {name: cart, match: 'event.event == "AddToCart"'}
    - {name: checkout, match: 'event.event == "Checkout" && event.properties.cart_id == cart.properties.cart_id', absent: true}
emit: {stream: derived, event: CartAbandoned}
"#;

    fn inputs() -> Vec<Json> {
        (0..200)
            .map(|i| {
                let user = format!("u{}", i % 17);
                let kind = if i % 5 == 4 { "Checkout" } else { "AddToCart" };
                cart(&user, T0 + i * 700, kind, &format!("c{}", i % 3))
            })
            .collect()
    }

    fn feed(engine: &mut Engine, events: &[Json], first_offset: usize, out: &mut Vec<Output>) {
        for (i, event) in events.iter().enumerate() {
            let offset = (first_offset + i) as u64;
            let input = Input { stream: "events", partition: 0, offset, record_timestamp_ms: T0, event };
            engine.process(&input, T0 + offset as i64 * 700, out);
        }
    }

    #[test]
    fn state_restored_from_its_changes_continues_exactly_like_the_original() {
        let events = inputs();
        let mut whole = Engine::new(rule(CART), EngineConfig::default());
        let mut expected = Vec::new();
        feed(&mut whole, &events, 0, &mut expected);
        whole.flush(&mut expected);
        assert!(expected.len() > 10, "the case fires: {}", expected.len());

        // The same input in two halves, with a store in between made of the change sets.
        let mut first = Engine::new(rule(CART), EngineConfig::default());
        let mut outputs = Vec::new();
        let mut store: BTreeMap<String, Vec<u8>> = BTreeMap::new();
        let mut meta = Vec::new();
        for (index, chunk) in events[..120].chunks(40).enumerate() {
            feed(&mut first, chunk, index * 40, &mut outputs);
            let (changes, m) = first.take_changes();
            for (key, value) in changes {
                match value {
                    Some(value) => store.insert(key.to_string(), value),
                    None => store.remove(&*key),
                };
            }
            meta = m;
        }
        let mut second = Engine::new(rule(CART), EngineConfig::default());
        second.restore(Some(&meta), store.clone(), T0).unwrap();
        assert_eq!(second.state_size(), first.state_size());
        feed(&mut second, &events[120..], 120, &mut outputs);
        second.flush(&mut outputs);
        assert_eq!(outputs, expected);
    }

    #[test]
    fn state_limits_refuse_new_keys_and_evict_the_oldest_match() {
        let config = EngineConfig { keys_max: 2, matches_per_key_max: 2, ..EngineConfig::default() };
        let mut engine = Engine::new(rule(CART), config);
        let mut out = Vec::new();
        let events = [
            cart("u1", T0, "AddToCart", "a"),
            cart("u1", T0 + 1, "AddToCart", "b"),
            cart("u1", T0 + 2, "AddToCart", "c"),
            cart("u2", T0 + 3, "AddToCart", "d"),
            cart("u3", T0 + 4, "AddToCart", "e"),
        ];
        feed(&mut engine, &events, 0, &mut out);
        assert_eq!(engine.state_size(), (2, 3));
        assert_eq!((engine.counters().matches_dropped, engine.counters().keys_refused), (1, 1));
        engine.flush(&mut out);
        let carts: Vec<String> =
            out.iter().map(|o| o.json()["properties"]["cart"]["cart_id"].as_str().unwrap().to_string()).collect();
        assert_eq!(carts, ["b", "c", "d"], "the oldest of u1 was dropped, u3 never added");
    }
}

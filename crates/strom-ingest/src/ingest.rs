//! The pipeline every tracked event goes through, in this order:
//! size → envelope → dedup → scope → catalog (validate) → enrich → privacy → append.
//!
//! Validation sees the event as the client sent it (so a schema can forbid unknown fields
//! without also forbidding the ones Strom adds); enrichment and PII rules apply afterwards;
//! a dead-lettered event is kept exactly as it arrived.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use ipnet::IpNet;
use jiff::Timestamp;
use serde::Serialize;
use serde_json::{Map, Value};
use strom_catalog::{Catalog, EventKind, EventType};
use strom_log::limits::BATCH_BYTES_MAX;
use strom_log::{Durability, EncodedBatch, Log, LogError, RecordIn, StreamConfig};

use crate::Violation;
use crate::dedup::{self, Check, Dedup, Reservation};
use crate::envelope::{self, Call};
use crate::network;
use crate::source::{Source, UnknownTypes};
use crate::useragent::UserAgents;

/// Headers of every record the collector writes.
pub const SOURCE_HEADER: &str = "strom-source";
pub const TYPE_HEADER: &str = "strom-type";
/// On dead-lettered records: why, as JSON (see `DeadLetterReason`).
pub const REASON_HEADER: &str = "strom-dead-letter";

/// Violations kept per dead-lettered event (the catalog bounds its own report too).
pub const VIOLATIONS_MAX: usize = 16;

/// The collector's settings (`[collector]` in strom.toml).
#[derive(Clone, Debug)]
pub struct IngestConfig {
    pub default_stream: String,
    pub dead_letter_stream: String,
    pub event_bytes_max: usize,
    pub anonymize_ip: bool,
    pub trusted_proxies: Vec<IpNet>,
    /// Where the collector keeps its own state (`<data>/collector`).
    pub state_dir: std::path::PathBuf,
    /// Settings of streams the collector creates (its default and dead-letter streams, and
    /// streams named by catalog types that do not exist yet).
    pub stream_defaults: StreamConfig,
}

/// Where a request came from, and what a batch says for all its messages.
pub struct Origin<'a> {
    pub source: &'a Source,
    pub peer: IpAddr,
    pub forwarded_for: Option<&'a str>,
    /// A batch's `sentAt`, for messages that do not carry their own.
    pub batch_sent_at: Option<Value>,
    /// A batch's `context`, merged under each message's own context (the message wins).
    pub batch_context: Option<Map<String, Value>>,
    /// Set when a dead-lettered event is replayed: see `Replay`.
    pub replay: Option<Replay>,
}

/// A dead-lettered event going through the pipeline again.
pub struct Replay {
    /// The dedup id of this replay (`!replay/<stream>/<partition>/<offset>` of the dead
    /// letter), so that replaying twice writes the event once.
    pub dedup_key: String,
    /// When the event first arrived: its receivedAt stays what it was.
    pub received_at: Timestamp,
}

/// What became of one event.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum Outcome {
    Accepted {
        stream: String,
        partition: u32,
        offset: u64,
    },
    /// The same messageId from the same source was accepted before, within the window.
    Duplicate,
    /// Kept in the dead-letter stream, with the reason.
    DeadLettered {
        code: &'static str,
        violations: Vec<Violation>,
    },
    /// Not written anywhere.
    Rejected {
        code: &'static str,
        message: String,
    },
}

impl Outcome {
    pub fn label(&self) -> &'static str {
        match self {
            Outcome::Accepted { .. } => "accepted",
            Outcome::Duplicate => "duplicate",
            Outcome::DeadLettered { code, .. } => code,
            Outcome::Rejected { code, .. } => code,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    /// Nothing of the request is acknowledged; what was written is remembered by dedup, so
    /// the client's retry does not duplicate it.
    #[error(transparent)]
    Log(#[from] LogError),
}

/// The reason header of a dead-lettered record.
#[derive(Serialize)]
struct DeadLetterReason<'a> {
    code: &'a str,
    source: &'a str,
    /// The endpoint's call, for messages that do not name their type (`/v1/track` bodies).
    #[serde(skip_serializing_if = "Option::is_none")]
    call: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    r#type: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    schema_id: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    schema_version: Option<u32>,
    violations: &'a [Violation],
    ip: String,
    received_at: String,
}

pub struct Ingest {
    log: Arc<Log>,
    catalog: Arc<Catalog>,
    dedup: Dedup,
    user_agents: UserAgents,
    config: IngestConfig,
    replays: tokio::sync::Mutex<()>,
}

/// An event on its way to one partition.
struct Pending<'a> {
    index: usize,
    record: RecordIn,
    reservation: Option<Reservation<'a>>,
    dead_letter: Option<(&'static str, Vec<Violation>)>,
}

impl Ingest {
    pub fn new(log: Arc<Log>, catalog: Arc<Catalog>, dedup: Dedup, config: IngestConfig) -> Ingest {
        Ingest { log, catalog, dedup, user_agents: UserAgents::default(), config, replays: tokio::sync::Mutex::new(()) }
    }

    pub fn dedup(&self) -> &Dedup {
        &self.dedup
    }

    pub fn log(&self) -> &Arc<Log> {
        &self.log
    }

    pub fn config(&self) -> &IngestConfig {
        &self.config
    }

    pub(crate) fn replay_lock(&self) -> &tokio::sync::Mutex<()> {
        &self.replays
    }

    /// What the pipeline would say of an event now, without writing anything: `Ok` if it
    /// would be accepted, else the reason code (for dry-run replays).
    pub fn check_only(&self, source: &Source, call: Option<Call>, raw: &[u8]) -> Result<(), &'static str> {
        let Ok(Value::Object(message)) = serde_json::from_slice::<Value>(raw) else {
            return Err("invalid_envelope");
        };
        let call = envelope::check(&message, call).map_err(|_| "invalid_envelope")?;
        let type_name = envelope::type_name(&message, call);
        if !source.allows_type(type_name) {
            return Err("type_not_allowed");
        }
        let event = Value::Object(message.clone());
        match self.catalog.snapshot().lookup(kind_of(call), envelope::lookup_name(&message, call)) {
            Some(event_type) => event_type.validate(&event).map_err(|_| "invalid_schema"),
            None if source.config.unknown_types == UnknownTypes::Accept => Ok(()),
            None => Err("unknown_type"),
        }
    }

    /// Runs the pipeline for a request's events and appends them durably. `call` is the
    /// endpoint's call, `None` for batch. Returns one outcome per event, in order, once every
    /// accepted or dead-lettered event is fsync'd.
    pub async fn ingest(
        &self,
        origin: &Origin<'_>,
        call: Option<Call>,
        events: Vec<Bytes>,
    ) -> Result<Vec<Option<Outcome>>, IngestError> {
        let received_at = match &origin.replay {
            Some(replay) => replay.received_at,
            None => Timestamp::from_millisecond(self.log.clock().now_ms()).unwrap_or_else(|_| Timestamp::now()),
        };
        let client_ip = network::client_ip(origin.peer, origin.forwarded_for, &self.config.trusted_proxies);
        let connection_ip = if self.config.anonymize_ip { network::anonymize(client_ip) } else { client_ip };
        let catalog = self.catalog.snapshot();
        let source = origin.source;
        let context =
            RequestContext { source, ip: connection_ip, received_at, replaying: origin.replay.is_some(), call };
        let mut outcomes: Vec<Option<Outcome>> = vec![None; events.len()];
        // The catalog type of each event, for the metrics' `type` label: only names the catalog
        // defines, so that clients cannot grow the label set.
        let mut type_labels: Vec<Option<String>> = vec![None; events.len()];
        // (stream, partition) → events for it.
        let mut routes: BTreeMap<(String, u32), Vec<Pending<'_>>> = BTreeMap::new();
        let validation_seconds = metrics::histogram!("strom_ingest_validation_seconds");
        // Ids this request already reserved: a repeat inside one batch is a duplicate of the
        // earlier message, which this request writes (or fails to, and the retry resends both).
        let mut reserved_here: std::collections::HashSet<String> = std::collections::HashSet::new();
        for (index, raw) in events.into_iter().enumerate() {
            if raw.len() > self.config.event_bytes_max {
                outcomes[index] = Some(Outcome::Rejected {
                    code: "event_too_large",
                    message: format!("the event has {} bytes; the limit is {}", raw.len(), self.config.event_bytes_max),
                });
                continue;
            }
            let mut event: Value = match serde_json::from_slice(&raw) {
                Ok(value @ Value::Object(_)) => value,
                Ok(_) => {
                    let violation = Violation::envelope("", "type", "an event must be a JSON object");
                    let letter = DeadLetter { code: "invalid_envelope", violations: vec![violation], event_type: None };
                    if let Some(outcome) =
                        self.dead_letter(&mut routes, index, raw, None, None, None, letter, &context).await?
                    {
                        outcomes[index] = Some(outcome);
                    }
                    continue;
                }
                Err(error) => {
                    // The body parsed as a whole, so this only happens to callers that hand
                    // over events one by one.
                    let violation = Violation::envelope("", "syntax", error.to_string());
                    let letter = DeadLetter { code: "invalid_envelope", violations: vec![violation], event_type: None };
                    if let Some(outcome) =
                        self.dead_letter(&mut routes, index, raw, None, None, None, letter, &context).await?
                    {
                        outcomes[index] = Some(outcome);
                    }
                    continue;
                }
            };
            let message = event.as_object_mut().expect("matched an object above");
            // A write key in the body authenticated the request; it is never stored.
            message.remove("writeKey");
            apply_batch_fields(message, origin);
            let key = envelope::partition_key(message).map(Bytes::from);
            // Dedup comes first: a retry of a dead-lettered event must not be kept twice.
            let dedup_header = match (&origin.replay, message.get("messageId")) {
                (Some(replay), _) => Some(replay.dedup_key.clone()),
                (None, Some(Value::String(id))) if !id.is_empty() && id.len() <= envelope::MESSAGE_ID_BYTES_MAX => {
                    Some(dedup::header_value(source.name(), id))
                }
                _ => None,
            };
            if let Some(header) = &dedup_header
                && reserved_here.contains(header)
            {
                metrics::counter!("strom_ingest_duplicates_total").increment(1);
                outcomes[index] = Some(Outcome::Duplicate);
                continue;
            }
            let reservation = match &dedup_header {
                Some(header) => match self.reserve(header).await {
                    Reserve::New(reservation) => {
                        reserved_here.insert(header.clone());
                        Some(reservation)
                    }
                    Reserve::Duplicate => {
                        outcomes[index] = Some(Outcome::Duplicate);
                        continue;
                    }
                    Reserve::InFlight => {
                        outcomes[index] = Some(Outcome::Rejected {
                            code: "duplicate_in_flight",
                            message: "an event with this messageId is being written by another request; retry"
                                .to_string(),
                        });
                        continue;
                    }
                },
                None => None,
            };
            let call = match envelope::check(message, call) {
                Ok(call) => call,
                Err(violation) => {
                    let letter = DeadLetter { code: "invalid_envelope", violations: vec![violation], event_type: None };
                    if let Some(outcome) = self
                        .dead_letter(&mut routes, index, raw, key, dedup_header, reservation, letter, &context)
                        .await?
                    {
                        outcomes[index] = Some(outcome);
                    }
                    continue;
                }
            };
            let type_name = envelope::type_name(message, call).to_string();
            if !source.allows_type(&type_name) {
                if let Some(reservation) = reservation {
                    self.dedup.release(reservation);
                }
                outcomes[index] = Some(Outcome::Rejected {
                    code: "type_not_allowed",
                    message: format!("source {} may not send events of type {type_name:?}", source.name()),
                });
                continue;
            }
            let event_type = catalog.lookup(kind_of(call), envelope::lookup_name(message, call)).cloned();
            let event_type = event_type.as_ref();
            type_labels[index] = event_type.map(|t| t.name.clone());
            let stream = match event_type {
                Some(event_type) => {
                    let started = Instant::now();
                    let validated = event_type.validate(&event);
                    validation_seconds.record(started.elapsed().as_secs_f64());
                    if let Err(violations) = validated {
                        let violations = violations
                            .into_iter()
                            .take(VIOLATIONS_MAX)
                            .map(|v| Violation { pointer: v.pointer, keyword: v.keyword, message: v.message })
                            .collect();
                        let letter = DeadLetter { code: "invalid_schema", violations, event_type: Some(event_type) };
                        if let Some(outcome) = self
                            .dead_letter(&mut routes, index, raw, key, dedup_header, reservation, letter, &context)
                            .await?
                        {
                            outcomes[index] = Some(outcome);
                        }
                        continue;
                    }
                    event_type.stream.clone()
                }
                None => match source.config.unknown_types {
                    UnknownTypes::Accept => {
                        source.config.stream.clone().unwrap_or_else(|| self.config.default_stream.clone())
                    }
                    UnknownTypes::DeadLetter => {
                        let violation = Violation::envelope(
                            if call == Call::Track { "/event" } else { "/type" },
                            "x-strom-catalog",
                            format!("the catalog has no {call} type {type_name:?}"),
                        );
                        let letter = DeadLetter { code: "unknown_type", violations: vec![violation], event_type: None };
                        if let Some(outcome) = self
                            .dead_letter(&mut routes, index, raw, key, dedup_header, reservation, letter, &context)
                            .await?
                        {
                            outcomes[index] = Some(outcome);
                        }
                        continue;
                    }
                    UnknownTypes::Reject => {
                        if let Some(reservation) = reservation {
                            self.dedup.release(reservation);
                        }
                        outcomes[index] = Some(Outcome::Rejected {
                            code: "unknown_type",
                            message: format!("the catalog has no {call} type {type_name:?}"),
                        });
                        continue;
                    }
                },
            };
            // Enrichment. The call is written into the event, so that a stream's readers see
            // what each event is whichever endpoint it came through.
            let message = event.as_object_mut().expect("still an object");
            message.insert("type".to_string(), Value::String(call.as_str().to_string()));
            envelope::enrich_time(message, received_at);
            self.enrich_context(message, &connection_ip);
            if let Some(event_type) = event_type
                && event_type.has_pii()
            {
                event_type.apply_pii(&mut event, self.catalog.pii_secret());
            }
            let value = match serde_json::to_vec(&event) {
                Ok(bytes) => Bytes::from(bytes),
                Err(error) => {
                    if let Some(reservation) = reservation {
                        self.dedup.release(reservation);
                    }
                    outcomes[index] = Some(Outcome::Rejected { code: "invalid_event", message: error.to_string() });
                    continue;
                }
            };
            let mut headers = vec![(SOURCE_HEADER.to_string(), Bytes::copy_from_slice(source.name().as_bytes()))];
            headers.push((TYPE_HEADER.to_string(), Bytes::from(type_name)));
            if let Some(header) = &dedup_header {
                headers.push((dedup::HEADER.to_string(), Bytes::copy_from_slice(header.as_bytes())));
            }
            let partitions = self.partitions_of(&stream).await?;
            let partition = partition_for(key.as_deref(), partitions, index);
            routes.entry((stream, partition)).or_default().push(Pending {
                index,
                record: RecordIn { key, value: Some(value), timestamp_ms: received_at.as_millisecond(), headers },
                reservation,
                dead_letter: None,
            });
        }
        let appended = self.append_all(routes, &mut outcomes).await;
        // Counted per request, not per event: a labelled counter costs a registry lookup.
        let source_label = source.name().to_string();
        let mut counts: std::collections::HashMap<(Option<String>, &'static str), u64> =
            std::collections::HashMap::new();
        for (outcome, type_label) in outcomes.iter().zip(type_labels) {
            let Some(outcome) = outcome else { continue };
            *counts.entry((type_label, outcome.label())).or_default() += 1;
        }
        for ((type_label, outcome), count) in counts {
            let type_label = type_label.unwrap_or_else(|| "(none)".to_string());
            metrics::counter!("strom_ingest_events_total", "source" => source_label.clone(), "type" => type_label, "outcome" => outcome)
                .increment(count);
            if matches!(outcome, "invalid_schema" | "invalid_envelope" | "unknown_type")
                && outcomes.iter().any(|o| matches!(o, Some(Outcome::DeadLettered { code, .. }) if *code == outcome))
            {
                metrics::counter!("strom_ingest_dead_letters_total", "source" => source_label.clone(), "reason" => outcome)
                    .increment(count);
            }
        }
        if appended.is_err() {
            metrics::counter!("strom_ingest_append_errors_total", "source" => source_label).increment(1);
        }
        appended?;
        Ok(outcomes)
    }

    fn dead_letter_stream<'a>(&'a self, source: &'a Source) -> &'a str {
        source.config.dead_letter_stream.as_deref().unwrap_or(&self.config.dead_letter_stream)
    }

    /// Routes a dead-letter record: the event's bytes untouched, the reason in a header, the
    /// partition chosen by the event's key as it would have been.
    #[allow(clippy::too_many_arguments)]
    async fn dead_letter<'a>(
        &'a self,
        routes: &mut BTreeMap<(String, u32), Vec<Pending<'a>>>,
        index: usize,
        raw: Bytes,
        key: Option<Bytes>,
        dedup_header: Option<String>,
        reservation: Option<Reservation<'a>>,
        letter: DeadLetter<'_>,
        context: &RequestContext<'_>,
    ) -> Result<Option<Outcome>, IngestError> {
        if context.replaying {
            // A replay never writes a new dead letter: the old one stays, and says why.
            if let Some(reservation) = reservation {
                self.dedup.release(reservation);
            }
            let message = letter.violations.first().map_or_else(
                || "still invalid".to_string(),
                |v| format!("still invalid at {:?}: {}", v.pointer, v.message),
            );
            return Ok(Some(Outcome::Rejected { code: letter.code, message }));
        }
        let reason = DeadLetterReason {
            code: letter.code,
            source: context.source.name(),
            call: context.call.map(Call::as_str),
            r#type: letter.event_type.map(|t| t.name.as_str()),
            schema_id: letter.event_type.map(|t| t.schema_id),
            schema_version: letter.event_type.map(|t| t.version),
            violations: &letter.violations,
            ip: context.ip.to_string(),
            received_at: envelope::format_time(context.received_at),
        };
        let reason =
            serde_json::to_vec(&reason).map_err(|e| IngestError::Log(LogError::InvalidBatch(e.to_string())))?;
        let mut headers = vec![
            (SOURCE_HEADER.to_string(), Bytes::copy_from_slice(context.source.name().as_bytes())),
            (REASON_HEADER.to_string(), Bytes::from(reason)),
        ];
        if let Some(header) = dedup_header {
            headers.push((dedup::HEADER.to_string(), Bytes::from(header)));
        }
        let stream = self.dead_letter_stream(context.source).to_string();
        let partitions = self.partitions_of(&stream).await?;
        let partition = partition_for(key.as_deref(), partitions, index);
        routes.entry((stream, partition)).or_default().push(Pending {
            index,
            record: RecordIn { key, value: Some(raw), timestamp_ms: context.received_at.as_millisecond(), headers },
            reservation,
            dead_letter: Some((letter.code, letter.violations)),
        });
        Ok(None)
    }

    fn enrich_context(&self, message: &mut Map<String, Value>, connection_ip: &IpAddr) {
        let context = message.entry("context").or_insert_with(|| Value::Object(Map::new()));
        if context.is_null() {
            *context = Value::Object(Map::new());
        }
        let Some(context) = context.as_object_mut() else { return };
        // A server-side SDK reports its user's address in context.ip; it is anonymised too.
        let ip = match context.get("ip").and_then(Value::as_str).and_then(|s| s.parse::<IpAddr>().ok()) {
            Some(given) if self.config.anonymize_ip => network::anonymize(given),
            Some(given) => given,
            None => *connection_ip,
        };
        context.insert("ip".to_string(), Value::String(ip.to_string()));
        if let Some(parsed) = context.get("userAgent").and_then(Value::as_str).and_then(|ua| self.user_agents.parse(ua))
        {
            context.insert("userAgentParsed".to_string(), parsed);
        }
    }

    /// Looks a messageId up; a candidate is read back to be sure it is the same id.
    async fn reserve(&self, header: &str) -> Reserve<'_> {
        match self.dedup.check(header.as_bytes()) {
            Check::New(reservation) => Reserve::New(reservation),
            Check::InFlight => Reserve::InFlight,
            Check::Candidate(stream, location) => {
                if self.verify(&stream, u32::from(location.partition), location.offset, header.as_bytes()) {
                    metrics::counter!("strom_ingest_duplicates_total").increment(1);
                    Reserve::Duplicate
                } else {
                    Reserve::New(self.dedup.reserve_colliding(header.as_bytes()))
                }
            }
        }
    }

    /// Whether the record at this place carries this dedup header. A record that cannot be
    /// read (retention removed it, the stream was deleted) does not confirm anything: the
    /// event is then taken as new rather than risk dropping a real one.
    fn verify(&self, stream: &str, partition: u32, offset: u64, header: &[u8]) -> bool {
        let Ok(stream) = self.log.stream(stream) else { return false };
        let Ok(partition) = stream.partition(partition) else { return false };
        let Ok(read) = partition.read_records(offset, 1, 64 * 1024) else {
            metrics::counter!("strom_ingest_dedup_unverifiable_total").increment(1);
            return false;
        };
        read.records.first().is_some_and(|record| {
            record.offset == offset
                && record.headers.iter().any(|(name, value)| name == dedup::HEADER && value.as_deref() == Some(header))
        })
    }

    /// The partition count of a stream, creating it with the collector's defaults when it
    /// does not exist (a catalog type or source names it, so it is wanted).
    async fn partitions_of(&self, stream: &str) -> Result<u32, LogError> {
        match self.log.stream(stream) {
            Ok(stream) => Ok(stream.partitions().len() as u32),
            Err(LogError::StreamNotFound(_)) => {
                match self.log.create_stream(stream, self.config.stream_defaults.clone()).await {
                    Ok(created) => Ok(created.partitions().len() as u32),
                    // Another request created it first.
                    Err(LogError::StreamExists(_)) => Ok(self.log.stream(stream)?.partitions().len() as u32),
                    Err(error) => Err(error),
                }
            }
            Err(error) => Err(error),
        }
    }

    /// Appends every partition's records (in batches under the log's bound) at once, with
    /// `Sync` durability, and settles each event's outcome and dedup reservation. If any
    /// append fails the request fails, but what was written is still remembered, so the
    /// client's retry is deduplicated instead of written twice.
    async fn append_all(
        &self,
        routes: BTreeMap<(String, u32), Vec<Pending<'_>>>,
        outcomes: &mut [Option<Outcome>],
    ) -> Result<(), IngestError> {
        let mut batches: Vec<(String, u32, Vec<Pending<'_>>)> = Vec::new();
        for ((stream, partition), mut pending) in routes {
            while !pending.is_empty() {
                let mut bytes = 0;
                let mut end = 0;
                while end < pending.len() {
                    let size = record_size(&pending[end].record);
                    if end > 0 && bytes + size > BATCH_BYTES_MAX / 2 {
                        break;
                    }
                    bytes += size;
                    end += 1;
                }
                let rest = pending.split_off(end);
                batches.push((stream.clone(), partition, pending));
                pending = rest;
            }
        }
        let mut appends = Vec::with_capacity(batches.len());
        for (stream, partition, pending) in &batches {
            let records: Vec<RecordIn> = pending.iter().map(|p| p.record.clone()).collect();
            let batch = EncodedBatch::encode(&records);
            let log = self.log.clone();
            let (stream, partition) = (stream.clone(), *partition);
            appends.push(async move {
                let batch = batch?;
                let stream = log.stream(&stream)?;
                stream.partition(partition)?.append(batch, Durability::Sync).await
            });
        }
        let results = futures_util::future::join_all(appends).await;
        let now_ms = self.log.clock().now_ms();
        let mut failure = None;
        for ((stream, partition, pending), result) in batches.into_iter().zip(results) {
            match result {
                Ok(appended) => {
                    for (position, item) in pending.into_iter().enumerate() {
                        let offset = appended.offset(position);
                        if let Some(reservation) = item.reservation {
                            self.dedup.commit(reservation, &stream, partition, offset, now_ms);
                        }
                        outcomes[item.index] = Some(match item.dead_letter {
                            None => Outcome::Accepted { stream: stream.clone(), partition, offset },
                            Some((code, violations)) => Outcome::DeadLettered { code, violations },
                        });
                    }
                }
                Err(error) => {
                    for item in pending {
                        if let Some(reservation) = item.reservation {
                            self.dedup.release(reservation);
                        }
                    }
                    failure.get_or_insert(error);
                }
            }
        }
        match failure {
            Some(error) => Err(error.into()),
            None => Ok(()),
        }
    }
}

/// What a request's events share.
struct RequestContext<'a> {
    source: &'a Source,
    /// The client's address, anonymised when configured.
    ip: IpAddr,
    received_at: Timestamp,
    replaying: bool,
    /// The endpoint's call (`None` for batch, where each message names its type).
    call: Option<Call>,
}

/// Why an event goes to the dead-letter stream.
struct DeadLetter<'a> {
    code: &'static str,
    violations: Vec<Violation>,
    event_type: Option<&'a Arc<EventType>>,
}

/// A batch's `sentAt` and `context` apply to each message that lacks them.
fn apply_batch_fields(message: &mut Map<String, Value>, origin: &Origin<'_>) {
    if let Some(sent_at) = &origin.batch_sent_at
        && !message.contains_key("sentAt")
    {
        message.insert("sentAt".to_string(), sent_at.clone());
    }
    if let Some(batch_context) = &origin.batch_context {
        match message.get_mut("context") {
            Some(Value::Object(context)) => {
                for (key, value) in batch_context {
                    context.entry(key.clone()).or_insert_with(|| value.clone());
                }
            }
            None | Some(Value::Null) => {
                message.insert("context".to_string(), Value::Object(batch_context.clone()));
            }
            // Not an object: the envelope check refuses it as the client sent it.
            Some(_) => {}
        }
    }
}

fn record_size(record: &RecordIn) -> usize {
    record.value.as_ref().map_or(0, Bytes::len)
        + record.key.as_ref().map_or(0, Bytes::len)
        + record.headers.iter().map(|(name, value)| name.len() + value.len() + 8).sum::<usize>()
        + 32
}

enum Reserve<'a> {
    New(Reservation<'a>),
    Duplicate,
    InFlight,
}

fn kind_of(call: Call) -> EventKind {
    match call {
        Call::Track => EventKind::Track,
        Call::Page => EventKind::Page,
        Call::Screen => EventKind::Screen,
        Call::Identify => EventKind::Identify,
        Call::Group => EventKind::Group,
        Call::Alias => EventKind::Alias,
    }
}

/// Kafka's partitioner for keyed events (murmur2, as the HTTP produce API and Kafka clients
/// use); keyless events spread by their position in the request.
fn partition_for(key: Option<&[u8]>, partitions: u32, index: usize) -> u32 {
    match key {
        Some(key) => strom_log::partitioner::partition_for_key(key, partitions),
        None => (index as u32) % partitions.max(1),
    }
}

//! Replaying dead letters: each one (all, or those matching a filter) goes through the
//! pipeline again against the catalog in force now; those that pass are appended to their
//! stream, those that still fail stay where they are.
//!
//! Exactly once: a replay's dedup id is the dead letter's position
//! (`!replay/<stream>/<partition>/<offset>`), so a second replay within the dedup window is
//! recognised as a duplicate; and the positions replayed are recorded in
//! `<state dir>/replayed.json` after each run, so that a replay after the window skips them
//! too. A crash between the append and that record is covered by the dedup window.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::path::PathBuf;
use std::str::FromStr;

use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use strom_log::RecordOut;

use crate::envelope::Call;
use crate::ingest::{Ingest, IngestError, Origin, Outcome, REASON_HEADER, Replay, SOURCE_HEADER};
use crate::source::Sources;

/// Dead letters read per step.
const READ_RECORDS: usize = 1000;
const READ_BYTES: usize = 8 * 1024 * 1024;

/// Dead letters one replay looks at, at most (a run reports where it stopped).
pub const REPLAY_RECORDS_MAX: usize = 1_000_000;

/// Which dead letters to replay.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReplayFilter {
    /// The dead-letter stream (default: the collector's).
    pub stream: Option<String>,
    /// Only this reason code (`invalid_schema`, `unknown_type`, `invalid_envelope`).
    pub code: Option<String>,
    /// Only dead letters of this event type (the catalog type named in the reason).
    #[serde(rename = "type")]
    pub event_type: Option<String>,
    /// Only dead letters received at or after / before these times (ms since the epoch).
    pub since_ms: Option<i64>,
    pub until_ms: Option<i64>,
    /// Report what would happen without appending anything.
    #[serde(default)]
    pub dry_run: bool,
}

#[derive(Debug, Default, Serialize)]
pub struct ReplayReport {
    pub stream: String,
    pub scanned: u64,
    pub matched: u64,
    /// Appended to their stream now.
    pub replayed: u64,
    /// Replayed by an earlier run: not appended again.
    pub already_replayed: u64,
    /// Still refused by the catalog (by reason code).
    pub still_invalid: BTreeMap<String, u64>,
    /// Their source no longer exists: not replayed.
    pub source_missing: u64,
    /// Would pass now (dry run only).
    pub would_replay: u64,
    /// True when `REPLAY_RECORDS_MAX` stopped the run before the end of the stream.
    pub truncated: bool,
}

#[derive(Deserialize)]
struct Reason {
    code: String,
    call: Option<String>,
    #[serde(rename = "type")]
    event_type: Option<String>,
    ip: Option<String>,
    received_at: Option<String>,
}

/// Positions already replayed, per partition, as sorted disjoint ranges `[start, end)`.
#[derive(Default, Serialize, Deserialize)]
struct Replayed {
    streams: HashMap<String, HashMap<u32, Vec<(u64, u64)>>>,
}

impl Replayed {
    fn contains(&self, stream: &str, partition: u32, offset: u64) -> bool {
        self.streams
            .get(stream)
            .and_then(|p| p.get(&partition))
            .is_some_and(|ranges| ranges.iter().any(|(start, end)| (*start..*end).contains(&offset)))
    }

    fn insert(&mut self, stream: &str, partition: u32, offset: u64) {
        let ranges = self.streams.entry(stream.to_string()).or_default().entry(partition).or_default();
        ranges.push((offset, offset + 1));
        ranges.sort_unstable();
        let mut merged: Vec<(u64, u64)> = Vec::with_capacity(ranges.len());
        for (start, end) in ranges.drain(..) {
            match merged.last_mut() {
                Some(last) if start <= last.1 => last.1 = last.1.max(end),
                _ => merged.push((start, end)),
            }
        }
        *ranges = merged;
    }
}

impl Ingest {
    fn replayed_file(&self) -> PathBuf {
        self.config().state_dir.join("replayed.json")
    }

    /// Replays the dead letters that match `filter`. Runs one at a time.
    pub async fn replay(&self, sources: &Sources, filter: ReplayFilter) -> Result<ReplayReport, IngestError> {
        let _one_at_a_time = self.replay_lock().lock().await;
        let stream_name = filter.stream.clone().unwrap_or_else(|| self.config().dead_letter_stream.clone());
        let mut report = ReplayReport { stream: stream_name.clone(), ..ReplayReport::default() };
        let stream = self.log().stream(&stream_name)?;
        let file = self.replayed_file();
        let mut replayed: Replayed = match std::fs::read(&file) {
            Ok(bytes) => serde_json::from_slice(&bytes).unwrap_or_default(),
            Err(_) => Replayed::default(),
        };
        let partitions = stream.partitions().len() as u32;
        'partitions: for partition in 0..partitions {
            let mut position = stream.partition(partition)?.log_start_offset();
            loop {
                let log = self.log().clone();
                let name = stream_name.clone();
                let read = tokio::task::spawn_blocking(move || {
                    log.stream(&name)?.partition(partition)?.read_records(position, READ_RECORDS, READ_BYTES)
                })
                .await
                .map_err(|error| IngestError::Log(strom_log::LogError::InvalidBatch(error.to_string())))??;
                if read.records.is_empty() {
                    break;
                }
                for record in &read.records {
                    if report.scanned as usize >= REPLAY_RECORDS_MAX {
                        report.truncated = true;
                        break 'partitions;
                    }
                    report.scanned += 1;
                    self.replay_record(sources, &filter, &stream_name, partition, record, &mut replayed, &mut report)
                        .await?;
                }
                if read.next_offset <= position {
                    break;
                }
                position = read.next_offset;
            }
        }
        if !filter.dry_run && report.replayed + report.already_replayed > 0 {
            let bytes = serde_json::to_vec(&replayed).unwrap_or_default();
            let temporary = file.with_extension("tmp");
            let written = std::fs::create_dir_all(&self.config().state_dir)
                .and_then(|()| std::fs::write(&temporary, &bytes))
                .and_then(|()| std::fs::File::open(&temporary)?.sync_all())
                .and_then(|()| std::fs::rename(&temporary, &file));
            if let Err(error) = written {
                // The dedup window still covers these positions; a replay after it may repeat them.
                tracing::warn!(%error, "could not record the replayed positions");
            }
        }
        metrics::counter!("strom_ingest_replayed_total").increment(report.replayed);
        Ok(report)
    }

    #[allow(clippy::too_many_arguments)]
    async fn replay_record(
        &self,
        sources: &Sources,
        filter: &ReplayFilter,
        stream: &str,
        partition: u32,
        record: &RecordOut,
        replayed: &mut Replayed,
        report: &mut ReplayReport,
    ) -> Result<(), IngestError> {
        let header = |name: &str| record.headers.iter().find(|(n, _)| n == name).and_then(|(_, v)| v.as_ref());
        let Some(reason) = header(REASON_HEADER).and_then(|r| serde_json::from_slice::<Reason>(r).ok()) else {
            return Ok(());
        };
        if filter.code.as_ref().is_some_and(|code| *code != reason.code)
            || filter.event_type.as_ref().is_some_and(|t| Some(t) != reason.event_type.as_ref())
            || filter.since_ms.is_some_and(|since| record.timestamp_ms < since)
            || filter.until_ms.is_some_and(|until| record.timestamp_ms >= until)
        {
            return Ok(());
        }
        report.matched += 1;
        if replayed.contains(stream, partition, record.offset) {
            report.already_replayed += 1;
            return Ok(());
        }
        let source_name = header(SOURCE_HEADER).map(|s| String::from_utf8_lossy(s).into_owned()).unwrap_or_default();
        let Some(source) = sources.get(&source_name) else {
            report.source_missing += 1;
            return Ok(());
        };
        let Some(value) = record.value.clone() else { return Ok(()) };
        let received_at = reason
            .received_at
            .as_deref()
            .and_then(|t| Timestamp::from_str(t).ok())
            .or_else(|| Timestamp::from_millisecond(record.timestamp_ms).ok())
            .unwrap_or_else(Timestamp::now);
        let peer = reason.ip.as_deref().and_then(|ip| ip.parse::<IpAddr>().ok()).unwrap_or(IpAddr::from([0, 0, 0, 0]));
        let call = reason.call.as_deref().and_then(|c| c.parse::<Call>().ok());
        if filter.dry_run {
            match self.check_only(&source, call, &value) {
                Ok(()) => report.would_replay += 1,
                Err(code) => *report.still_invalid.entry(code.to_string()).or_default() += 1,
            }
            return Ok(());
        }
        let origin = Origin {
            source: &source,
            peer,
            forwarded_for: None,
            batch_sent_at: None,
            batch_context: None,
            replay: Some(Replay { dedup_key: format!("!replay/{stream}/{partition}/{}", record.offset), received_at }),
        };
        let outcome = self.ingest(&origin, call, vec![value]).await?.into_iter().next().flatten();
        match outcome {
            Some(Outcome::Accepted { .. }) => {
                report.replayed += 1;
                replayed.insert(stream, partition, record.offset);
            }
            Some(Outcome::Duplicate) => {
                report.already_replayed += 1;
                replayed.insert(stream, partition, record.offset);
            }
            Some(Outcome::Rejected { code, .. }) | Some(Outcome::DeadLettered { code, .. }) => {
                *report.still_invalid.entry(code.to_string()).or_default() += 1;
            }
            None => {}
        }
        Ok(())
    }
}

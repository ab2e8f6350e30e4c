//! The rules runtime: every rule in the rules directory runs as one tokio task over the log.
//!
//! One turn of a rule's task: read up to `READ_RECORDS_MAX` records from each input
//! partition, feed them to the engine (on the blocking pool: file reads and CPU), append the
//! outputs (`Durability::Sync`), and every `commit_interval_ms` commit the engine's changed
//! state, the input offsets and the output partitions' end offsets in one redb transaction.
//!
//! Exactly once: outputs are appended before the commit that covers their input. After a
//! crash the task resumes from the last commit and produces the same outputs with the same
//! ids; before appending anything it reads every output partition from the end offset
//! recorded at that commit to its end, collects the ids this rule wrote there (header
//! `strom-id`, filtered by `strom-rule`), and skips outputs with those ids.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde::Serialize;
use strom_log::{Clock, Durability, EncodedBatch, Lease, Log, RecordIn, Stream, StreamConfig};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::changelog::{self, ChangelogCommit, Writer};
use crate::engine::{Counters, Engine, EngineConfig, Input, Output, OutputKind};
use crate::error::{RuleError, RulesError};
use crate::expr::parse_pruned;
use crate::node::Format;
use crate::rule::{Rule, validate_rule_name};
use crate::store::{Commit, Offsets, Store};

/// Rules one runtime runs (each is a task with its state in memory).
pub const RULES_MAX: usize = 256;
/// Rule files read per reload.
pub const RULE_FILES_MAX: usize = 1024;
/// Records read from one input partition per turn, and their bytes.
pub const READ_RECORDS_MAX: usize = 4096;
pub const READ_BYTES_MAX: usize = 8 * 1024 * 1024;
/// Output appends queued before the rule waits for them to be durable.
pub const PENDING_APPENDS_MAX: usize = 64;
/// Records per output batch (an append).
pub const OUTPUT_BATCH_RECORDS_MAX: usize = 10_000;
/// Records read back from output partitions at recovery: the outputs of at most one commit
/// interval. More means the store is far behind its outputs, which is refused.
pub const RECOVERY_SCAN_RECORDS_MAX: u64 = 10_000_000;
/// Events a backtest reads, and outputs it reports.
pub const BACKTEST_EVENTS_MAX: u64 = 10_000_000;
pub const BACKTEST_OUTPUTS_MAX: usize = 10_000;

/// How long a rule's supervisor on a shared log says `starting` while the group assigns no
/// task to this process.
const NO_TASKS_SETTLE: Duration = Duration::from_secs(10);

/// How far ahead of this process's wall clock the clock of a process that ran a task before
/// may have been (`Replay`).
const REPLAY_CLOCK_SKEW_MS: i64 = 10_000;
/// Outputs appended while a re-run still pins its commits' output ends (`Replay`) after
/// which it lets go anyway: a crash then rescans at most this many.
const REPLAY_PIN_RECORDS_MAX: u64 = 1_000_000;

/// The record header naming the rule that wrote a record, and the one with the output's id.
pub const RULE_HEADER: &str = "strom-rule";
pub const ID_HEADER: &str = "strom-id";
/// On a shared log: the header naming the task (its index) that wrote an output.
pub const TASK_HEADER: &str = "strom-task";

/// Where a new rule starts reading its inputs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StartFrom {
    /// The log start: the rule sees the retained history first.
    Earliest,
    /// The log end when the rule first runs: only new events.
    #[default]
    Latest,
}

/// The runtime's settings (`[rules]` in strom.toml; docs/CONFIG.md).
#[derive(Clone, Debug)]
pub struct RulesConfig {
    /// Rule files (`<name>.yaml`, `.yml`, `.toml`).
    pub rules_dir: PathBuf,
    /// The redb file holding rule state and offsets.
    pub state_path: PathBuf,
    /// Webhook destinations rules may name.
    pub destinations: BTreeSet<String>,
    pub out_of_orderness_ms: i64,
    pub idle_timeout_ms: i64,
    /// How often each rule commits state and offsets (outputs are appended as produced).
    pub commit_interval_ms: u64,
    /// How often the rules directory is checked for changes (0: only on `reload()`).
    pub reload_interval_ms: u64,
    pub keys_max: usize,
    pub matches_per_key_max: usize,
    pub start_from: StartFrom,
    /// Partitions of output streams the runtime creates (`strom.deliveries`, `emit.stream`).
    pub output_partitions: u32,
    /// Test-only: crash (stop without committing) after this many output appends.
    #[doc(hidden)]
    pub crash_point: Option<Arc<CrashPoint>>,
}

impl RulesConfig {
    pub fn new(rules_dir: impl Into<PathBuf>, state_path: impl Into<PathBuf>) -> RulesConfig {
        let engine = EngineConfig::default();
        RulesConfig {
            rules_dir: rules_dir.into(),
            state_path: state_path.into(),
            destinations: BTreeSet::new(),
            out_of_orderness_ms: engine.out_of_orderness_ms,
            idle_timeout_ms: engine.idle_timeout_ms,
            commit_interval_ms: 1000,
            reload_interval_ms: 2000,
            keys_max: engine.keys_max,
            matches_per_key_max: engine.matches_per_key_max,
            start_from: StartFrom::Latest,
            output_partitions: 1,
            crash_point: None,
        }
    }

    fn engine(&self) -> EngineConfig {
        EngineConfig {
            out_of_orderness_ms: self.out_of_orderness_ms,
            idle_timeout_ms: self.idle_timeout_ms,
            keys_max: self.keys_max,
            matches_per_key_max: self.matches_per_key_max,
        }
    }
}

/// A test's simulated crash: after `appends` output appends, the rule's task stops where
/// it is, between appending outputs and committing the state that produced them.
#[doc(hidden)]
#[derive(Debug)]
pub struct CrashPoint {
    appends: AtomicU64,
    crashed: AtomicBool,
}

impl CrashPoint {
    pub fn after_appends(appends: u64) -> Arc<CrashPoint> {
        Arc::new(CrashPoint { appends: AtomicU64::new(appends), crashed: AtomicBool::new(false) })
    }

    pub fn crashed(&self) -> bool {
        self.crashed.load(Ordering::SeqCst)
    }

    fn hit(&self) -> bool {
        let before = self.appends.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1));
        if before == Ok(1) || before.is_err() {
            self.crashed.store(true, Ordering::SeqCst);
            return true;
        }
        false
    }
}

/// How a rule is doing.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RunState {
    Starting,
    Running,
    /// Waiting for an input stream to be created.
    Waiting,
    Paused,
    /// Stopped by an error (the message says which); a reload or `put` restarts it.
    Failed,
    Stopped,
}

/// A rule's status, for the API.
#[derive(Clone, Debug, Serialize)]
pub struct RuleStatus {
    pub name: String,
    pub version: u32,
    pub kind: &'static str,
    pub description: Option<String>,
    pub streams: Vec<String>,
    pub state: RunState,
    pub paused: bool,
    pub format: Format,
    pub path: PathBuf,
    pub source: String,
    pub counters: Counters,
    /// Keys with state, and their partial matches and open windows.
    pub state_keys: u64,
    pub state_entries: u64,
    /// Input records not processed yet (log ends minus offsets).
    pub lag_records: u64,
    /// The rule's watermark and how far it is behind the wall clock.
    pub watermark_ms: Option<i64>,
    pub event_time_lag_ms: Option<i64>,
    /// Why the rule failed or waits, or the last evaluation error.
    pub message: Option<String>,
    /// A newer version of the file that was refused (the rule runs the previous one).
    pub load_error: Option<String>,
    /// On a shared (Kafka) log: the rule's tasks (one per input partition for a partitioned
    /// rule, else one), and the ones this server runs now.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tasks: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tasks_here: Option<Vec<u32>>,
}

/// What a reload changed.
#[derive(Clone, Debug, Default, Serialize)]
pub struct ReloadReport {
    pub added: Vec<String>,
    pub changed: Vec<String>,
    pub removed: Vec<String>,
    pub unchanged: Vec<String>,
    /// Files refused (the previous version, if any, keeps running).
    pub errors: Vec<String>,
}

/// What a backtest runs.
#[derive(Clone, Debug)]
pub enum BacktestRule {
    /// A running rule, by name.
    Name(String),
    /// A rule's source (a new rule, or a new version of one).
    Source { source: String, format: Format },
}

/// Where a backtest starts or ends in each partition.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Position {
    Offset(u64),
    TimestampMs(i64),
}

#[derive(Clone, Debug)]
pub struct BacktestRequest {
    pub rule: BacktestRule,
    /// The input stream (default: the rule's first).
    pub stream: Option<String>,
    /// Inclusive start (default: the log start) and exclusive end (default: the log end).
    pub from: Option<Position>,
    pub to: Option<Position>,
    /// Outputs to report (at most `BACKTEST_OUTPUTS_MAX`); the rest are only counted.
    pub max_outputs: usize,
    /// Finalise open windows and pending timeouts at the end, as if time had passed.
    pub flush: bool,
}

#[derive(Clone, Debug, Serialize)]
pub struct BacktestReport {
    pub rule: String,
    pub version: u32,
    pub stream: String,
    pub events_read: u64,
    /// Outputs that would have been appended, in order (at most `max_outputs`).
    pub outputs: Vec<Output>,
    pub outputs_total: u64,
    pub truncated: bool,
    pub counters: Counters,
    /// State still open at the end (before `flush`).
    pub open_keys: u64,
    pub open_entries: u64,
    pub watermark_ms: Option<i64>,
}

/// What a rule's task shares with the API.
struct Shared {
    state: Mutex<(RunState, Option<String>)>,
    counters: Mutex<Counters>,
    keys: AtomicU64,
    entries: AtomicU64,
    lag_records: AtomicU64,
    watermark_ms: AtomicI64,
    /// On a shared log: the rule's tasks and those running here.
    tasks: Mutex<Option<(u32, Vec<u32>)>>,
}

impl Shared {
    fn new() -> Arc<Shared> {
        Arc::new(Shared {
            state: Mutex::new((RunState::Starting, None)),
            counters: Mutex::new(Counters::default()),
            keys: AtomicU64::new(0),
            entries: AtomicU64::new(0),
            lag_records: AtomicU64::new(0),
            watermark_ms: AtomicI64::new(i64::MIN),
            tasks: Mutex::new(None),
        })
    }

    fn set(&self, state: RunState, message: Option<String>) {
        *self.state.lock().unwrap_or_else(|e| e.into_inner()) = (state, message);
    }
}

struct Task {
    stop: watch::Sender<bool>,
    handle: JoinHandle<()>,
}

struct Entry {
    rule: Arc<Rule>,
    fingerprint: String,
    path: PathBuf,
    paused: bool,
    shared: Arc<Shared>,
    task: Option<Task>,
    load_error: Option<String>,
}

/// The rules runtime.
pub struct Rules {
    log: Arc<Log>,
    config: Arc<RulesConfig>,
    clock: Arc<dyn Clock>,
    store: Arc<Store>,
    /// Serialises changes (put, delete, pause, reload, close); readers take it briefly.
    entries: tokio::sync::Mutex<BTreeMap<String, Entry>>,
    /// The directory listing (names, sizes, mtimes) at the last reload, for polling.
    listing: Mutex<Vec<(PathBuf, u64, Option<std::time::SystemTime>)>>,
    closed: AtomicBool,
    poller: Mutex<Option<JoinHandle<()>>>,
}

/// A rule source's identity: the state of a rule belongs to one text of it.
fn fingerprint(source: &str, format: Format) -> String {
    let hash = xxhash_rust::xxh3::xxh3_128(format!("{format:?}\n{source}").as_bytes());
    format!("{hash:032x}")
}

fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> RulesError + '_ {
    move |source| RulesError::Io { path: path.to_path_buf(), source }
}

/// One rule file read from the directory.
struct RuleFile {
    name: String,
    path: PathBuf,
    source: String,
    format: Format,
}

impl Rules {
    /// Opens the state store, loads the rules directory and starts every rule that is not
    /// paused. Must run inside a tokio runtime.
    pub fn start(log: Arc<Log>, config: RulesConfig, clock: Arc<dyn Clock>) -> Result<Arc<Rules>, RulesError> {
        std::fs::create_dir_all(&config.rules_dir).map_err(io_error(&config.rules_dir))?;
        let store = Arc::new(Store::open(&config.state_path)?);
        let reload_interval = config.reload_interval_ms;
        let rules = Arc::new(Rules {
            log,
            config: Arc::new(config),
            clock,
            store,
            entries: tokio::sync::Mutex::new(BTreeMap::new()),
            listing: Mutex::new(Vec::new()),
            closed: AtomicBool::new(false),
            poller: Mutex::new(None),
        });
        let paused = rules.store.paused()?;
        let (files, errors, listing) = rules.read_dir()?;
        for error in &errors {
            tracing::error!(%error, "rule refused");
        }
        // A rule whose file was removed while Strom was down is forgotten, as a reload would
        // (a refused file still exists, and keeps its rule's state).
        let present: BTreeSet<String> =
            files.iter().map(|f| f.name.clone()).chain(errors.iter().filter_map(|e| file_stem(&e.origin))).collect();
        for name in rules.store.rules()?.difference(&present) {
            tracing::info!(rule = %name, "forgetting the state of a rule whose file is gone");
            rules.store.clear(name, true)?;
        }
        {
            let mut entries = rules.entries.try_lock().map_err(|_| RulesError::Closed)?;
            for file in files {
                match rules.validate(&file) {
                    Ok(rule) => {
                        let is_paused = paused.get(&file.name).copied().unwrap_or(false);
                        let mut entry = Entry {
                            fingerprint: fingerprint(&file.source, file.format),
                            rule: Arc::new(rule),
                            path: file.path,
                            paused: is_paused,
                            shared: Shared::new(),
                            task: None,
                            load_error: None,
                        };
                        if is_paused {
                            entry.shared.set(RunState::Paused, None);
                        } else {
                            entry.task = Some(rules.spawn(&entry));
                        }
                        entries.insert(file.name, entry);
                    }
                    Err(error) => tracing::error!(%error, "rule refused"),
                }
            }
            tracing::info!(rules = entries.len(), dir = %rules.config.rules_dir.display(), "rules started");
        }
        *rules.listing.lock().unwrap_or_else(|e| e.into_inner()) = listing;
        if reload_interval > 0 {
            let weak = Arc::downgrade(&rules);
            let handle = tokio::spawn(async move {
                loop {
                    tokio::time::sleep(Duration::from_millis(reload_interval)).await;
                    let Some(rules) = weak.upgrade() else { return };
                    if rules.closed.load(Ordering::Acquire) {
                        return;
                    }
                    if rules.listing_changed() {
                        match rules.reload().await {
                            Ok(report) if !report.errors.is_empty() => {
                                tracing::warn!(errors = ?report.errors, "rules reloaded with errors")
                            }
                            Ok(_) => {}
                            Err(error) => tracing::error!(%error, "rules reload failed"),
                        }
                    }
                }
            });
            *rules.poller.lock().unwrap_or_else(|e| e.into_inner()) = Some(handle);
        }
        Ok(rules)
    }

    /// Every rule's status.
    pub async fn list(&self) -> Vec<RuleStatus> {
        let entries = self.entries.lock().await;
        entries.values().map(|entry| self.status(entry)).collect()
    }

    pub async fn get(&self, name: &str) -> Result<RuleStatus, RulesError> {
        let entries = self.entries.lock().await;
        entries.get(name).map(|entry| self.status(entry)).ok_or_else(|| RulesError::NotFound(name.to_string()))
    }

    /// Validates a rule, writes it to `<rules_dir>/<name>.<ext>` (replacing a file of the
    /// other format), and runs it: an unchanged source keeps its state, a changed one
    /// starts afresh from the previous version's offsets.
    pub async fn put(&self, name: &str, source: &str, format: Format) -> Result<RuleStatus, RulesError> {
        validate_rule_name(name).map_err(|why| RulesError::InvalidName { name: name.to_string(), why })?;
        let path = self.config.rules_dir.join(format!("{name}.{}", format.extension()));
        let file = RuleFile { name: name.to_string(), path: path.clone(), source: source.to_string(), format };
        let rule = self.validate(&file)?;
        let mut entries = self.entries.lock().await;
        self.check_open()?;
        if !entries.contains_key(name) && entries.len() >= RULES_MAX {
            return Err(RulesError::TooManyRules { max: RULES_MAX });
        }
        write_atomically(&path, source.as_bytes())?;
        for other in ["yaml", "yml", "toml"] {
            let other_path = self.config.rules_dir.join(format!("{name}.{other}"));
            if other_path != path && other_path.exists() {
                std::fs::remove_file(&other_path).map_err(io_error(&other_path))?;
            }
        }
        self.apply(&mut entries, file, rule).await?;
        *self.listing.lock().unwrap_or_else(|e| e.into_inner()) = self.read_dir()?.2;
        Ok(self.status(&entries[name]))
    }

    /// Stops a rule (committing) and keeps it stopped across restarts, or starts it again.
    pub async fn pause(&self, name: &str, paused: bool) -> Result<RuleStatus, RulesError> {
        let mut entries = self.entries.lock().await;
        self.check_open()?;
        let entry = entries.get_mut(name).ok_or_else(|| RulesError::NotFound(name.to_string()))?;
        if entry.paused != paused {
            let store = self.store.clone();
            let rule = name.to_string();
            blocking(move || store.set_paused(&rule, paused)).await?;
            entry.paused = paused;
            if paused {
                stop(entry.task.take()).await;
                entry.shared.set(RunState::Paused, None);
            } else {
                entry.task = Some(self.spawn(entry));
            }
        }
        Ok(self.status(entry))
    }

    /// Stops a rule, removes its file and forgets its state and offsets.
    pub async fn delete(&self, name: &str) -> Result<(), RulesError> {
        let mut entries = self.entries.lock().await;
        self.check_open()?;
        let mut entry = entries.remove(name).ok_or_else(|| RulesError::NotFound(name.to_string()))?;
        stop(entry.task.take()).await;
        for ext in ["yaml", "yml", "toml"] {
            let path = self.config.rules_dir.join(format!("{name}.{ext}"));
            if path.exists() {
                std::fs::remove_file(&path).map_err(io_error(&path))?;
            }
        }
        let store = self.store.clone();
        let rule = name.to_string();
        blocking(move || store.clear(&rule, true)).await?;
        *self.listing.lock().unwrap_or_else(|e| e.into_inner()) = self.read_dir()?.2;
        tracing::info!(rule = name, "rule deleted");
        Ok(())
    }

    /// Reads the rules directory again: new files start, changed ones restart afresh,
    /// removed ones stop and are forgotten, unchanged ones keep running with their state.
    /// A refused file leaves its previous version running.
    pub async fn reload(&self) -> Result<ReloadReport, RulesError> {
        let mut entries = self.entries.lock().await;
        self.check_open()?;
        let (files, errors, listing) = self.read_dir()?;
        let mut report =
            ReloadReport { errors: errors.iter().map(ToString::to_string).collect(), ..Default::default() };
        let mut seen = BTreeSet::new();
        for file in files {
            seen.insert(file.name.clone());
            let print = fingerprint(&file.source, file.format);
            if let Some(entry) = entries.get_mut(&file.name)
                && entry.fingerprint == print
            {
                entry.load_error = None;
                report.unchanged.push(file.name.clone());
                continue;
            }
            match self.validate(&file) {
                Ok(rule) => {
                    let name = file.name.clone();
                    let existed = entries.contains_key(&name);
                    if !existed && entries.len() >= RULES_MAX {
                        report.errors.push(format!("{}: too many rules (at most {RULES_MAX})", file.path.display()));
                        continue;
                    }
                    self.apply(&mut entries, file, rule).await?;
                    if existed { report.changed.push(name) } else { report.added.push(name) }
                }
                Err(error) => {
                    tracing::error!(%error, "rule refused");
                    if let Some(entry) = entries.get_mut(&file.name) {
                        entry.load_error = Some(error.to_string());
                    }
                    report.errors.push(error.to_string());
                }
            }
        }
        // A file that exists but was refused (seen by name in the errors) is not removed.
        let refused: BTreeSet<String> = errors.iter().filter_map(|e| file_stem(&e.origin)).collect();
        let gone: Vec<String> =
            entries.keys().filter(|name| !seen.contains(*name) && !refused.contains(*name)).cloned().collect();
        for name in gone {
            if let Some(mut entry) = entries.remove(&name) {
                stop(entry.task.take()).await;
                let store = self.store.clone();
                let rule = name.clone();
                blocking(move || store.clear(&rule, true)).await?;
                report.removed.push(name);
            }
        }
        *self.listing.lock().unwrap_or_else(|e| e.into_inner()) = listing;
        tracing::info!(
            added = report.added.len(),
            changed = report.changed.len(),
            removed = report.removed.len(),
            errors = report.errors.len(),
            "rules reloaded"
        );
        Ok(report)
    }

    /// Runs a rule over a past range of a stream and reports what it would have emitted.
    /// Nothing is appended and no state is kept.
    pub async fn backtest(&self, request: BacktestRequest) -> Result<BacktestReport, RulesError> {
        let rule = match &request.rule {
            BacktestRule::Name(name) => {
                let entries = self.entries.lock().await;
                entries.get(name).map(|e| e.rule.clone()).ok_or_else(|| RulesError::NotFound(name.clone()))?
            }
            BacktestRule::Source { source, format } => {
                let rule = Rule::parse(source, *format, "backtest")?;
                rule.check_destinations(&self.config.destinations)?;
                Arc::new(rule)
            }
        };
        let stream_name = request.stream.clone().unwrap_or_else(|| rule.streams[0].clone());
        let stream = self.log.stream(&stream_name)?;
        let config = self.config.engine();
        blocking(move || backtest(rule, config, stream, &request)).await
    }

    /// Stops every rule, committing its state, and the directory poller.
    pub async fn close(&self) {
        if let Some(poller) = self.poller.lock().unwrap_or_else(|e| e.into_inner()).take() {
            poller.abort();
        }
        let mut entries = self.entries.lock().await;
        self.closed.store(true, Ordering::Release);
        for entry in entries.values_mut() {
            stop(entry.task.take()).await;
            if entry.shared.state.lock().unwrap_or_else(|e| e.into_inner()).0 != RunState::Failed {
                entry.shared.set(RunState::Stopped, None);
            }
        }
        tracing::info!("rules closed");
    }

    fn check_open(&self) -> Result<(), RulesError> {
        if self.closed.load(Ordering::Acquire) { Err(RulesError::Closed) } else { Ok(()) }
    }

    fn validate(&self, file: &RuleFile) -> Result<Rule, RuleError> {
        let origin = file.path.display().to_string();
        let rule = Rule::parse(&file.source, file.format, &origin)?;
        if rule.name != file.name {
            return Err(RuleError {
                origin,
                line: None,
                column: None,
                field: "name".into(),
                why: format!("is {:?} but the file is named {:?}: they must be the same", rule.name, file.name),
            });
        }
        rule.check_destinations(&self.config.destinations)?;
        Ok(rule)
    }

    /// Installs a validated rule: an unchanged source is left running, anything else
    /// replaces the running version (which commits first).
    async fn apply(&self, entries: &mut BTreeMap<String, Entry>, file: RuleFile, rule: Rule) -> Result<(), RulesError> {
        let print = fingerprint(&file.source, file.format);
        if let Some(entry) = entries.get_mut(&file.name) {
            entry.load_error = None;
            if entry.fingerprint == print {
                return Ok(());
            }
            stop(entry.task.take()).await;
            entry.rule = Arc::new(rule);
            entry.fingerprint = print;
            entry.path = file.path;
            entry.shared = Shared::new();
            if entry.paused {
                entry.shared.set(RunState::Paused, None);
            } else {
                entry.task = Some(self.spawn(entry));
            }
            tracing::info!(rule = %file.name, version = entry.rule.version, "rule changed: state starts afresh");
            return Ok(());
        }
        let mut entry = Entry {
            rule: Arc::new(rule),
            fingerprint: print,
            path: file.path,
            paused: false,
            shared: Shared::new(),
            task: None,
            load_error: None,
        };
        entry.task = Some(self.spawn(&entry));
        tracing::info!(rule = %file.name, "rule added");
        entries.insert(file.name, entry);
        Ok(())
    }

    fn spawn(&self, entry: &Entry) -> Task {
        let (stop, stopped) = watch::channel(false);
        let runner = Runner {
            rule: entry.rule.clone(),
            fingerprint: entry.fingerprint.clone(),
            log: self.log.clone(),
            store: self.store.clone(),
            clock: self.clock.clone(),
            config: self.config.clone(),
            shared: entry.shared.clone(),
            stop: stopped,
            task: None,
        };
        let handle = tokio::spawn(runner.run());
        Task { stop, handle }
    }

    fn status(&self, entry: &Entry) -> RuleStatus {
        let (state, message) = entry.shared.state.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let counters = entry.shared.counters.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let watermark = entry.shared.watermark_ms.load(Ordering::Relaxed);
        let watermark_ms = (watermark != i64::MIN && watermark != i64::MAX).then_some(watermark);
        let tasks = entry.shared.tasks.lock().unwrap_or_else(|e| e.into_inner()).clone();
        RuleStatus {
            name: entry.rule.name.clone(),
            version: entry.rule.version,
            kind: entry.rule.kind.name(),
            description: entry.rule.description.clone(),
            streams: entry.rule.streams.clone(),
            state,
            paused: entry.paused,
            format: entry.rule.format,
            path: entry.path.clone(),
            source: entry.rule.source.clone(),
            counters,
            state_keys: entry.shared.keys.load(Ordering::Relaxed),
            state_entries: entry.shared.entries.load(Ordering::Relaxed),
            lag_records: entry.shared.lag_records.load(Ordering::Relaxed),
            watermark_ms,
            event_time_lag_ms: watermark_ms.map(|w| self.clock.now_ms().saturating_sub(w).max(0)),
            message,
            load_error: entry.load_error.clone(),
            tasks: tasks.as_ref().map(|t| t.0),
            tasks_here: tasks.map(|t| t.1),
        }
    }

    /// Rule files in the directory, the errors of the ones that cannot be read, and the
    /// listing for change polling.
    #[allow(clippy::type_complexity)]
    fn read_dir(
        &self,
    ) -> Result<(Vec<RuleFile>, Vec<RuleError>, Vec<(PathBuf, u64, Option<std::time::SystemTime>)>), RulesError> {
        let dir = &self.config.rules_dir;
        let mut paths = Vec::new();
        for entry in std::fs::read_dir(dir).map_err(io_error(dir))? {
            let entry = entry.map_err(io_error(dir))?;
            let path = entry.path();
            if Format::from_path(&path).is_some() && path.is_file() {
                paths.push(path);
            }
        }
        paths.sort();
        if paths.len() > RULE_FILES_MAX {
            return Err(RulesError::TooManyRules { max: RULE_FILES_MAX });
        }
        let mut files: Vec<RuleFile> = Vec::new();
        let mut errors = Vec::new();
        let mut listing = Vec::new();
        for path in paths {
            let origin = path.display().to_string();
            let error = |why: String| RuleError {
                origin: origin.clone(),
                line: None,
                column: None,
                field: "(file)".into(),
                why,
            };
            let metadata = std::fs::metadata(&path).map_err(io_error(&path))?;
            listing.push((path.clone(), metadata.len(), metadata.modified().ok()));
            let Some(name) = path.file_stem().and_then(|s| s.to_str()).map(str::to_string) else {
                errors.push(error("the file name is not UTF-8".into()));
                continue;
            };
            if let Err(why) = validate_rule_name(&name) {
                errors.push(error(format!("the file name is not a rule name: {why}")));
                continue;
            }
            if files.iter().any(|f| f.name == name) {
                errors.push(error(format!("another file already defines rule {name:?}")));
                continue;
            }
            let format = Format::from_path(&path).unwrap_or(Format::Yaml);
            match std::fs::read_to_string(&path) {
                Ok(source) => files.push(RuleFile { name, path, source, format }),
                Err(e) => errors.push(error(e.to_string())),
            }
        }
        Ok((files, errors, listing))
    }

    fn listing_changed(&self) -> bool {
        match self.read_dir() {
            Ok((_, _, listing)) => *self.listing.lock().unwrap_or_else(|e| e.into_inner()) != listing,
            Err(_) => false,
        }
    }
}

fn file_stem(origin: &str) -> Option<String> {
    Path::new(origin).file_stem().and_then(|s| s.to_str()).map(str::to_string)
}

async fn stop(task: Option<Task>) {
    if let Some(task) = task {
        let _ = task.stop.send(true);
        let _ = task.handle.await;
    }
}

async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, RulesError> + Send + 'static,
) -> Result<T, RulesError> {
    tokio::task::spawn_blocking(work).await.map_err(|e| RulesError::Store(format!("a blocking task failed: {e}")))?
}

/// Writes a file so that a crash leaves the old or the new text, never a mix.
fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), RulesError> {
    use std::io::Write;
    let dir = path.parent().unwrap_or(Path::new("."));
    let temporary = dir.join(format!(".{}.tmp", path.file_name().and_then(|n| n.to_str()).unwrap_or("rule")));
    let mut file = std::fs::File::create(&temporary).map_err(io_error(&temporary))?;
    file.write_all(bytes).and_then(|_| file.sync_all()).map_err(io_error(&temporary))?;
    std::fs::rename(&temporary, path).map_err(io_error(path))?;
    std::fs::File::open(dir).and_then(|d| d.sync_all()).map_err(io_error(dir))?;
    Ok(())
}

/// One rule's task.
struct Runner {
    rule: Arc<Rule>,
    fingerprint: String,
    log: Arc<Log>,
    store: Arc<Store>,
    clock: Arc<dyn Clock>,
    config: Arc<RulesConfig>,
    shared: Arc<Shared>,
    stop: watch::Receiver<bool>,
    /// On a shared log: the one task of the rule this runner runs. `None`: the whole rule
    /// (the embedded log), or the supervisor of its tasks (a shared log).
    task: Option<TaskRun>,
}

/// One task of a rule on a shared log: the same partition number of every input stream (a
/// partitioned rule), or all of them; its state is in the rule's changelog, partition
/// `index`.
struct TaskRun {
    index: u32,
    /// The input partition number, or `None` for every partition.
    partition: Option<u32>,
    lease: Lease,
    changelog: Arc<Stream>,
}

/// A stream of the log, created with `config` when missing (also by another process at the
/// same moment).
pub(crate) async fn stream_or_create(log: &Log, name: &str, config: StreamConfig) -> Result<Arc<Stream>, RulesError> {
    match log.stream(name) {
        Ok(stream) => Ok(stream),
        Err(strom_log::LogError::StreamNotFound(_)) => match log.create_stream(name, config).await {
            Ok(stream) => Ok(stream),
            Err(strom_log::LogError::StreamExists(_)) => Ok(log.stream(name)?),
            Err(error) => Err(error.into()),
        },
        Err(error) => Err(error.into()),
    }
}

fn report(name: &str, shared: &Shared, outcome: Result<(), RulesError>) {
    if let Err(error) = outcome {
        tracing::error!(rule = %name, %error, "rule stopped by an error");
        shared.set(RunState::Failed, Some(error.to_string()));
    }
}

/// Waits until the lease of a task is revoked (never, for a runner without one).
async fn revoked(task: &mut Option<TaskRun>) {
    match task {
        Some(task) => task.lease.revoked().await,
        None => std::future::pending().await,
    }
}

/// The metric handles of one rule, registered once.
struct RuleMetrics {
    events_in: metrics::Counter,
    matches: metrics::Counter,
    emits: metrics::Counter,
    deliveries: metrics::Counter,
    late_events: metrics::Counter,
    eval_errors: metrics::Counter,
    keys_refused: metrics::Counter,
    matches_dropped: metrics::Counter,
    duplicates_skipped: metrics::Counter,
    undecodable: metrics::Counter,
    commits: metrics::Counter,
    commit_seconds: metrics::Histogram,
    evaluation_seconds: metrics::Histogram,
    state_keys: metrics::Gauge,
    state_entries: metrics::Gauge,
    lag_records: metrics::Gauge,
    event_time_lag_seconds: metrics::Gauge,
    // On a shared log.
    restores: metrics::Counter,
    restore_seconds: metrics::Histogram,
    dropped_commits: metrics::Counter,
    changelog_records: metrics::Counter,
    snapshots: metrics::Counter,
    not_reproduced: metrics::Counter,
}

impl RuleMetrics {
    fn new(rule: &str) -> RuleMetrics {
        let rule = rule.to_string();
        RuleMetrics {
            events_in: metrics::counter!("strom_rules_events_total", "rule" => rule.clone()),
            matches: metrics::counter!("strom_rules_matches_total", "rule" => rule.clone()),
            emits: metrics::counter!("strom_rules_emits_total", "rule" => rule.clone()),
            deliveries: metrics::counter!("strom_rules_deliveries_total", "rule" => rule.clone()),
            late_events: metrics::counter!("strom_rules_late_events_total", "rule" => rule.clone()),
            eval_errors: metrics::counter!("strom_rules_eval_errors_total", "rule" => rule.clone()),
            keys_refused: metrics::counter!("strom_rules_state_limit_hits_total", "rule" => rule.clone(), "limit" => "keys"),
            matches_dropped: metrics::counter!("strom_rules_state_limit_hits_total", "rule" => rule.clone(), "limit" => "matches_per_key"),
            duplicates_skipped: metrics::counter!("strom_rules_duplicates_skipped_total", "rule" => rule.clone()),
            undecodable: metrics::counter!("strom_rules_undecodable_records_total", "rule" => rule.clone()),
            commits: metrics::counter!("strom_rules_commits_total", "rule" => rule.clone()),
            commit_seconds: metrics::histogram!("strom_rules_commit_duration_seconds", "rule" => rule.clone()),
            evaluation_seconds: metrics::histogram!("strom_rules_evaluation_duration_seconds", "rule" => rule.clone()),
            state_keys: metrics::gauge!("strom_rules_state_keys", "rule" => rule.clone()),
            state_entries: metrics::gauge!("strom_rules_state_entries", "rule" => rule.clone()),
            lag_records: metrics::gauge!("strom_rules_lag_records", "rule" => rule.clone()),
            event_time_lag_seconds: metrics::gauge!("strom_rules_event_time_lag_seconds", "rule" => rule.clone()),
            restores: metrics::counter!("strom_rules_task_restores_total", "rule" => rule.clone()),
            restore_seconds: metrics::histogram!("strom_rules_task_restore_seconds", "rule" => rule.clone()),
            dropped_commits: metrics::counter!("strom_rules_changelog_dropped_commits_total", "rule" => rule.clone()),
            changelog_records: metrics::counter!("strom_rules_changelog_records_total", "rule" => rule.clone()),
            snapshots: metrics::counter!("strom_rules_changelog_snapshots_total", "rule" => rule.clone()),
            not_reproduced: metrics::counter!("strom_rules_outputs_not_reproduced_total", "rule" => rule),
        }
    }

    fn publish(&self, before: &Counters, now: &Counters) {
        self.events_in.increment(now.events_in - before.events_in);
        self.matches.increment(now.matches - before.matches);
        self.emits.increment(now.emits - before.emits);
        self.deliveries.increment(now.deliveries - before.deliveries);
        self.late_events.increment(now.late_events - before.late_events);
        self.eval_errors.increment(now.eval_errors - before.eval_errors);
        self.keys_refused.increment(now.keys_refused - before.keys_refused);
        self.matches_dropped.increment(now.matches_dropped - before.matches_dropped);
    }
}

/// A runner's share of the rule's gauges (state keys, state entries, lag): on a shared log
/// several tasks of one rule run in one process, and the gauges show their sum. Taken back
/// when the runner ends.
struct Shown {
    gauges: [metrics::Gauge; 3],
    values: [f64; 3],
}

impl Shown {
    fn new(metrics: &RuleMetrics) -> Shown {
        Shown {
            gauges: [metrics.state_keys.clone(), metrics.state_entries.clone(), metrics.lag_records.clone()],
            values: [0.0; 3],
        }
    }

    fn set(&mut self, which: usize, value: f64) {
        self.gauges[which].increment(value - self.values[which]);
        self.values[which] = value;
    }
}

impl Drop for Shown {
    fn drop(&mut self) {
        for which in 0..3 {
            self.set(which, 0.0);
        }
    }
}

/// Everything a turn on the blocking pool needs and gives back.
struct Turn {
    engine: Box<Engine>,
    inputs: Vec<(Arc<Stream>, u32)>,
    offsets: Offsets,
    outputs: Vec<Output>,
    read: u64,
    skipped: u64,
    error: Option<RulesError>,
    /// Evaluation time of one sampled event in 16 (seconds).
    samples: Vec<f64>,
}

impl Runner {
    /// Runs the rule: itself on the embedded log, the supervisor of its tasks on a shared one.
    async fn run(mut self) {
        let (name, shared) = (self.rule.name.clone(), self.shared.clone());
        if self.log.remote().is_none() {
            let outcome = self.run_inner().await;
            return report(&name, &shared, outcome);
        }
        // The supervisor tries again after a failure (the cluster unreachable, say): while
        // it fails, the rule's tasks run on the other processes.
        let mut backoff = Duration::from_secs(1);
        loop {
            let outcome = self.supervise().await;
            if outcome.is_ok() || *self.stop.borrow() {
                return report(&name, &shared, outcome);
            }
            report(&name, &shared, outcome);
            tokio::select! {
                _ = tokio::time::sleep(backoff) => {}
                _ = self.stop.changed() => return,
            }
            backoff = (backoff * 2).min(Duration::from_secs(30));
        }
    }

    /// Runs one task of the rule (a shared log).
    async fn run_task(self) {
        let (name, shared) = (self.rule.name.clone(), self.shared.clone());
        let outcome = self.run_inner().await;
        report(&name, &shared, outcome);
    }

    /// The rule's input streams, once they all exist (`None`: stopped while waiting).
    async fn inputs(&mut self) -> Result<Option<Vec<Arc<Stream>>>, RulesError> {
        loop {
            let missing: Vec<&String> = self.rule.streams.iter().filter(|s| self.log.stream(s).is_err()).collect();
            if missing.is_empty() {
                return Ok(Some(self.rule.streams.iter().map(|s| self.log.stream(s)).collect::<Result<Vec<_>, _>>()?));
            }
            self.shared.set(RunState::Waiting, Some(format!("waiting for input stream {:?}", missing[0])));
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(500)) => {}
                _ = self.stop.changed() => return Ok(None),
            }
        }
    }

    /// On a shared log: runs the tasks of the rule that this process owns. The processes
    /// running the rule join the group `strom-rules.<rule>` on its first input stream, which
    /// divides that stream's partitions among them. A partitioned rule has one task per
    /// partition number (all its inputs must have as many partitions); any other rule has
    /// one task, run by the owner of one partition picked by the rule's name, so that rules
    /// spread over the processes. A task's state is restored from the rule's changelog when
    /// it starts, and committed there; a task taken away commits and stops first.
    async fn supervise(&mut self) -> Result<(), RulesError> {
        let name = self.rule.name.clone();
        let Some(streams) = self.inputs().await? else { return Ok(()) };
        let counts: Vec<u32> = streams.iter().map(|s| s.partitions().len() as u32).collect();
        let first = counts[0];
        let (tasks, pick) = if self.rule.partitioned {
            if counts.iter().any(|count| *count != first) {
                let listed: Vec<String> =
                    streams.iter().map(|s| format!("{} has {}", s.name, s.partitions().len())).collect();
                return Err(RulesError::Store(format!(
                    "a partitioned rule needs as many partitions in each input stream: {}",
                    listed.join(", ")
                )));
            }
            (first, None)
        } else {
            (1, Some((xxhash_rust::xxh3::xxh3_64(name.as_bytes()) % u64::from(first)) as u32))
        };
        let changelog = changelog::open(&self.log, &name, tasks).await?;
        let mut share = self.log.share(&format!("strom-rules.{name}"), &streams[0].name)?;
        *self.shared.tasks.lock().unwrap_or_else(|e| e.into_inner()) = Some((tasks, Vec::new()));
        let joined = Instant::now();
        let tasks_running = metrics::gauge!("strom_rules_tasks_running", "rule" => name.clone());
        let event_time_lag = metrics::gauge!("strom_rules_event_time_lag_seconds", "rule" => name.clone());
        tracing::info!(rule = %name, tasks, "rule divided among the processes of the cluster");

        struct Running {
            shared: Arc<Shared>,
            stop: watch::Sender<bool>,
            handle: JoinHandle<()>,
        }
        let mut running: BTreeMap<u32, Running> = BTreeMap::new();
        // Counts of tasks that ended here, and when a failed task may start again.
        let mut ended = Counters::default();
        let mut retry_at: BTreeMap<u32, (Instant, Duration, String)> = BTreeMap::new();
        loop {
            let stopping = *self.stop.borrow();
            let finished: Vec<u32> = running.iter().filter(|(_, r)| r.handle.is_finished()).map(|(i, _)| *i).collect();
            for index in finished {
                let Some(run) = running.remove(&index) else { continue };
                ended.add(&run.shared.counters.lock().unwrap_or_else(|e| e.into_inner()));
                let (state, message) = run.shared.state.lock().unwrap_or_else(|e| e.into_inner()).clone();
                if state == RunState::Failed {
                    let backoff =
                        retry_at.get(&index).map_or(Duration::from_secs(1), |r| (r.1 * 2).min(Duration::from_secs(30)));
                    let message = message.unwrap_or_default();
                    tracing::warn!(rule = %name, task = index, retry_in = ?backoff, %message, "rule task failed; it starts again");
                    retry_at.insert(index, (Instant::now() + backoff, backoff, message));
                }
            }
            if !stopping {
                for index in 0..tasks {
                    if running.contains_key(&index) || retry_at.get(&index).is_some_and(|r| r.0 > Instant::now()) {
                        continue;
                    }
                    let Some(lease) = share.lease(pick.unwrap_or(index)) else { continue };
                    let (stop, stopped) = watch::channel(false);
                    let shared = Shared::new();
                    let runner = Runner {
                        rule: self.rule.clone(),
                        fingerprint: self.fingerprint.clone(),
                        log: self.log.clone(),
                        store: self.store.clone(),
                        clock: self.clock.clone(),
                        config: self.config.clone(),
                        shared: shared.clone(),
                        stop: stopped,
                        task: Some(TaskRun {
                            index,
                            partition: pick.is_none().then_some(index),
                            lease,
                            changelog: changelog.clone(),
                        }),
                    };
                    let handle = tokio::spawn(runner.run_task());
                    running.insert(index, Running { shared, stop, handle });
                }
            }
            // The rule's status: the sum of its tasks here.
            let mut counters = ended.clone();
            let (mut keys, mut entries, mut lag, mut watermark) = (0, 0, 0, i64::MAX);
            // A failed task whose partition went to another process is that one's now.
            let owned = share.owned();
            retry_at.retain(|index, _| owned.contains(&pick.unwrap_or(*index)));
            let mut failure = retry_at.iter().next().map(|(index, r)| format!("task {index} failed: {}", r.2));
            for (index, run) in &running {
                counters.add(&run.shared.counters.lock().unwrap_or_else(|e| e.into_inner()));
                keys += run.shared.keys.load(Ordering::Relaxed);
                entries += run.shared.entries.load(Ordering::Relaxed);
                lag += run.shared.lag_records.load(Ordering::Relaxed);
                let task_watermark = run.shared.watermark_ms.load(Ordering::Relaxed);
                if task_watermark != i64::MIN {
                    watermark = watermark.min(task_watermark);
                }
                let (state, message) = run.shared.state.lock().unwrap_or_else(|e| e.into_inner()).clone();
                if state == RunState::Running {
                    retry_at.remove(index);
                    if failure.is_none() && message.is_some() {
                        failure = message.map(|m| format!("task {index}: {m}"));
                    }
                }
            }
            *self.shared.counters.lock().unwrap_or_else(|e| e.into_inner()) = counters;
            self.shared.keys.store(keys, Ordering::Relaxed);
            self.shared.entries.store(entries, Ordering::Relaxed);
            self.shared.lag_records.store(lag, Ordering::Relaxed);
            self.shared.watermark_ms.store(if watermark == i64::MAX { i64::MIN } else { watermark }, Ordering::Relaxed);
            // The worst lag of the tasks here (none here: nothing lags here).
            if watermark != i64::MAX {
                let now = self.clock.now_ms();
                event_time_lag.set(now.saturating_sub(watermark).max(0) as f64 / 1000.0);
            } else if running.is_empty() {
                event_time_lag.set(0.0);
            }
            *self.shared.tasks.lock().unwrap_or_else(|e| e.into_inner()) =
                Some((tasks, running.keys().copied().collect()));
            tasks_running.set(running.len() as f64);
            // Running once the tasks here all run (reading from their positions); a server
            // given no task says so once the group had time to assign them.
            let all_running = running
                .values()
                .all(|run| run.shared.state.lock().unwrap_or_else(|e| e.into_inner()).0 == RunState::Running);
            if running.is_empty() && !retry_at.is_empty() {
                self.shared.set(RunState::Failed, failure);
            } else if !running.is_empty() && all_running {
                self.shared.set(RunState::Running, failure);
            } else if running.is_empty() && joined.elapsed() >= NO_TASKS_SETTLE {
                self.shared.set(
                    RunState::Running,
                    failure.or_else(|| {
                        Some(
                            "no task of the rule runs on this server: the other servers of the cluster run them".into(),
                        )
                    }),
                );
            } else {
                self.shared.set(RunState::Starting, failure);
            }
            if stopping {
                break;
            }
            tokio::select! {
                _ = share.changed() => {}
                _ = self.stop.changed() => {}
                _ = tokio::time::sleep(Duration::from_millis(500)) => {}
            }
        }
        for run in running.values() {
            let _ = run.stop.send(true);
        }
        for (_, run) in running {
            let _ = run.handle.await;
        }
        share.leave().await;
        tasks_running.set(0.0);
        self.shared.set(RunState::Stopped, None);
        tracing::info!(rule = %name, "rule stopped");
        Ok(())
    }

    /// Whether this runner's task was lost (its process put out of the group): nothing it
    /// did since may be committed.
    fn lost(&self) -> bool {
        self.task.as_ref().is_some_and(|task| task.lease.is_lost())
    }

    async fn run_inner(mut self) -> Result<(), RulesError> {
        let name = self.rule.name.clone();
        let metrics = RuleMetrics::new(&name);
        let mut shown = Shown::new(&metrics);
        // The input streams must exist; the rule waits for them.
        let Some(streams) = self.inputs().await? else { return Ok(()) };
        let only = self.task.as_ref().and_then(|task| task.partition);
        let inputs: Vec<(Arc<Stream>, u32)> = streams
            .iter()
            .flat_map(|s| s.partitions().iter().map(|p| (s.clone(), p.id())))
            .filter(|(_, p)| only.is_none_or(|only| only == *p))
            .collect();
        // Output streams are created when missing.
        let mut outputs_streams: BTreeMap<String, Arc<Stream>> = BTreeMap::new();
        for stream in self.rule.output_streams() {
            let config = StreamConfig { partitions: self.config.output_partitions, ..StreamConfig::default() };
            let handle = stream_or_create(&self.log, &stream, config).await?;
            outputs_streams.insert(stream, handle);
        }

        let (loaded, mut writer) = match &self.task {
            None => {
                let store = self.store.clone();
                let name = name.clone();
                (blocking(move || store.load(&name)).await?, None)
            }
            Some(task) => {
                let (changelog, index) = (task.changelog.clone(), task.index);
                let started = Instant::now();
                let restored = blocking(move || changelog::restore(&changelog, index)).await?;
                metrics.restores.increment(1);
                metrics.restore_seconds.record(started.elapsed().as_secs_f64());
                metrics.dropped_commits.increment(restored.dropped_commits);
                if restored.dropped_commits > 0 {
                    tracing::info!(rule = %name, task = index, commits = restored.dropped_commits, "commits cut short by a crash were dropped from the changelog's state");
                }
                let writer = Writer::new(task.changelog.clone(), index, &restored);
                let mut loaded = restored.loaded;
                if loaded.fingerprint.is_none() {
                    // Nothing in the changelog yet: a rule that ran here before rules were
                    // divided (its state in this process's redb) goes on from there. Key
                    // states carry over only when the rule is one task.
                    let store = self.store.clone();
                    let rule = name.clone();
                    let mut local = blocking(move || store.load(&rule)).await?;
                    if local.fingerprint.is_some() {
                        local.offsets.retain(|(_, p), _| task.partition.is_none_or(|only| only == *p));
                        if task.partition.is_some() {
                            local.keys.clear();
                        }
                        tracing::info!(rule = %name, task = index, keys = local.keys.len(), "task state taken from this process's store into the changelog");
                        loaded = local;
                    }
                } else {
                    tracing::info!(rule = %name, task = index, keys = loaded.keys.len(), "task state restored from the changelog");
                }
                (loaded, Some(writer))
            }
        };
        let now = self.clock.now_ms();
        let mut engine = Box::new(Engine::new(self.rule.clone(), self.config.engine()));
        let same_rule = loaded.fingerprint.as_deref() == Some(self.fingerprint.as_str());
        if same_rule {
            engine.restore(loaded.meta.as_deref(), loaded.keys, now).map_err(RulesError::Store)?;
        } else if let Some(writer) = &mut writer {
            writer.snapshot_next();
        } else if loaded.fingerprint.is_some() {
            let store = self.store.clone();
            let rule = name.clone();
            blocking(move || store.clear(&rule, false)).await?;
        }
        let mut offsets = Offsets::new();
        let mut first_start = false;
        for (stream, partition) in &inputs {
            let key = (stream.name.clone(), *partition);
            let offset = match loaded.offsets.get(&key) {
                Some(offset) => *offset,
                None => {
                    first_start = true;
                    let p = stream.partition(*partition)?;
                    match self.config.start_from {
                        StartFrom::Earliest => p.log_start_offset(),
                        StartFrom::Latest => p.log_end_offset(),
                    }
                }
            };
            engine.register_partition(&stream.name, *partition, now);
            offsets.insert(key, offset);
        }
        // Ids this rule appended after its last commit: the re-run skips them. Also for a
        // changed rule: with the same version, its outputs for the same input have the same ids.
        let task = self.task.as_ref().map(|task| task.index);
        let already = recover_ids(&name, task, &outputs_streams, &loaded.outputs).await?;
        if !already.is_empty() {
            tracing::info!(rule = %name, task, outputs = already.len(), "resuming after a crash: outputs already appended will be skipped");
        }
        let mut replay = Replay::new(already, loaded.outputs.clone(), &inputs, now).await?;
        if first_start || !same_rule {
            // Committed at once, so that a crash before the first regular commit resumes from
            // these offsets and knows where its outputs start.
            let output_ends = replay.ends(&name, &offsets, &engine, &outputs_streams, &metrics);
            self.commit(&name, &offsets, &output_ends, &mut engine, &mut writer, &metrics).await?;
        }
        // The status shows the restored state from the moment the rule runs.
        let (keys, entries) = engine.state_size();
        self.shared.keys.store(keys as u64, Ordering::Relaxed);
        self.shared.entries.store(entries as u64, Ordering::Relaxed);
        *self.shared.counters.lock().unwrap_or_else(|e| e.into_inner()) = engine.counters().clone();
        self.shared.set(RunState::Running, None);
        tracing::info!(rule = %name, version = self.rule.version, kind = self.rule.kind.name(), "rule running");

        let tick = Duration::from_millis((self.config.idle_timeout_ms / 4).clamp(20, 1000) as u64);
        let commit_interval = Duration::from_millis(self.config.commit_interval_ms.max(1));
        let mut last_commit = Instant::now();
        let mut published = engine.counters().clone();
        let mut dirty = false;
        // Appends queued and not yet known durable: the next turn runs meanwhile.
        let mut pending: Vec<strom_log::PendingAppend> = Vec::new();
        let mut turn = Turn {
            engine,
            inputs,
            offsets,
            outputs: Vec::new(),
            read: 0,
            skipped: 0,
            error: None,
            samples: Vec::new(),
        };
        loop {
            if *self.stop.borrow() || self.task.as_ref().is_some_and(|task| task.lease.is_revoked()) {
                break;
            }
            let now = self.clock.now_ms();
            // On a failure the outputs already queued are awaited before the task ends (its
            // next run scans the outputs for what it must not append again).
            turn = match tokio::task::spawn_blocking(move || {
                read_and_process(&mut turn, now);
                turn
            })
            .await
            {
                Ok(turn) => turn,
                Err(error) => {
                    let _ = settle(&mut pending).await;
                    return Err(RulesError::Store(format!("the rule's turn failed: {error}")));
                }
            };
            if let Some(error) = turn.error.take() {
                let _ = settle(&mut pending).await;
                return Err(error);
            }
            metrics.undecodable.increment(turn.skipped);
            for sample in turn.samples.drain(..) {
                metrics.evaluation_seconds.record(sample);
            }
            let outputs = std::mem::take(&mut turn.outputs);
            let produced = !outputs.is_empty();
            if produced {
                let skipped = match self.append(&name, outputs, &outputs_streams, &mut replay.ids, &mut pending).await {
                    Ok(skipped) => skipped,
                    Err(error) => {
                        let _ = settle(&mut pending).await;
                        return Err(error);
                    }
                };
                metrics.duplicates_skipped.increment(skipped);
                if pending.len() > PENDING_APPENDS_MAX {
                    settle(&mut pending).await?;
                }
                if let Some(crash) = &self.config.crash_point
                    && crash.hit()
                {
                    settle(&mut pending).await?;
                    // The test's crash: outputs are durable, the state that made them is not.
                    self.shared.set(RunState::Stopped, Some("crashed (test crash point)".into()));
                    return Ok(());
                }
            }
            dirty |= turn.read > 0 || produced;
            let counters = turn.engine.counters().clone();
            metrics.publish(&published, &counters);
            published = counters.clone();
            *self.shared.counters.lock().unwrap_or_else(|e| e.into_inner()) = counters;
            let (keys, entries) = turn.engine.state_size();
            self.shared.keys.store(keys as u64, Ordering::Relaxed);
            self.shared.entries.store(entries as u64, Ordering::Relaxed);
            shown.set(0, keys as f64);
            shown.set(1, entries as f64);
            let lag: u64 = turn
                .inputs
                .iter()
                .map(|(s, p)| {
                    let end = s.partition(*p).map_or(0, |p| p.log_end_offset());
                    end.saturating_sub(turn.offsets.get(&(s.name.clone(), *p)).copied().unwrap_or(end))
                })
                .sum();
            self.shared.lag_records.store(lag, Ordering::Relaxed);
            shown.set(2, lag as f64);
            let watermark = turn.engine.watermark_ms();
            self.shared.watermark_ms.store(watermark, Ordering::Relaxed);
            // A task's lag is its supervisor's to show: the worst of the tasks here.
            if watermark != i64::MIN && self.task.is_none() {
                metrics.event_time_lag_seconds.set((now.saturating_sub(watermark)).max(0) as f64 / 1000.0);
            }
            if let Some(error) = turn.engine.last_error() {
                let mut state = self.shared.state.lock().unwrap_or_else(|e| e.into_inner());
                if state.0 == RunState::Running {
                    state.1 = Some(format!("last evaluation error: {error}"));
                }
            }
            if dirty && last_commit.elapsed() >= commit_interval {
                // Outputs are durable before the commit that covers their input.
                settle(&mut pending).await?;
                let output_ends = replay.ends(&name, &turn.offsets, &turn.engine, &outputs_streams, &metrics);
                self.commit(&name, &turn.offsets, &output_ends, &mut turn.engine, &mut writer, &metrics).await?;
                last_commit = Instant::now();
                dirty = false;
            }
            if turn.read == 0 && !produced {
                settle(&mut pending).await?;
                // Caught up: wait for input, the next tick (idle watermarks, commits) or stop.
                let waits = turn.inputs.iter().filter_map(|(s, p)| {
                    let offset = turn.offsets.get(&(s.name.clone(), *p)).copied()?;
                    let stream = s.clone();
                    let partition = *p;
                    Some(Box::pin(async move {
                        if let Ok(p) = stream.partition(partition) {
                            p.wait_for(offset, tick).await;
                        }
                    }))
                });
                let waits: Vec<_> = waits.collect();
                tokio::select! {
                    _ = futures_util::future::select_all(waits) => {}
                    _ = tokio::time::sleep(tick) => {}
                    _ = self.stop.changed() => {}
                    _ = revoked(&mut self.task) => {}
                }
            }
        }
        // Stopping: commit what was processed (a task taken away commits before it lets go).
        settle(&mut pending).await?;
        let output_ends = replay.ends(&name, &turn.offsets, &turn.engine, &outputs_streams, &metrics);
        self.commit(&name, &turn.offsets, &output_ends, &mut turn.engine, &mut writer, &metrics).await?;
        self.shared.set(RunState::Stopped, None);
        match &self.task {
            Some(task) => tracing::info!(rule = %name, task = task.index, "rule task stopped"),
            None => tracing::info!(rule = %name, "rule stopped"),
        }
        Ok(())
    }

    /// Commits the engine's changed state with the input offsets and output ends: to redb, or
    /// on a shared log to the task's changelog (refused once the task was lost).
    async fn commit(
        &self,
        name: &str,
        offsets: &Offsets,
        outputs: &Offsets,
        engine: &mut Engine,
        writer: &mut Option<Writer>,
        metrics: &RuleMetrics,
    ) -> Result<(), RulesError> {
        let (changes, meta) = engine.take_changes();
        if let Some(writer) = writer {
            if self.lost() {
                return Err(RulesError::Store(
                    "the task was lost (this process was put out of the rule's group): nothing more is committed"
                        .into(),
                ));
            }
            let all = writer.wants_snapshot(engine.state_size().0).then(|| engine.all_states());
            let started = Instant::now();
            writer
                .commit(&ChangelogCommit {
                    fingerprint: &self.fingerprint,
                    offsets,
                    outputs,
                    meta: &meta,
                    changes: &changes,
                    all: all.as_deref(),
                })
                .await?;
            metrics.commits.increment(1);
            metrics.commit_seconds.record(started.elapsed().as_secs_f64());
            metrics.changelog_records.increment(all.as_ref().map_or(changes.len(), Vec::len) as u64 + 1);
            if all.is_some() {
                metrics.snapshots.increment(1);
            }
            return Ok(());
        }
        let store = self.store.clone();
        let (name, fingerprint, offsets, outputs) =
            (name.to_string(), self.fingerprint.clone(), offsets.clone(), outputs.clone());
        let started = Instant::now();
        blocking(move || {
            store.commit(&Commit {
                rule: &name,
                fingerprint: &fingerprint,
                offsets: &offsets,
                outputs: &outputs,
                meta: &meta,
                changes: &changes,
            })
        })
        .await?;
        metrics.commits.increment(1);
        metrics.commit_seconds.record(started.elapsed().as_secs_f64());
        Ok(())
    }

    /// Queues outputs for appending (skipping ids already appended before a crash), grouped
    /// per partition in order; their durability is awaited later (`settle`), before the
    /// commit. Returns how many were skipped.
    async fn append(
        &self,
        name: &str,
        outputs: Vec<Output>,
        streams: &BTreeMap<String, Arc<Stream>>,
        already: &mut HashSet<String>,
        pending: &mut Vec<strom_log::PendingAppend>,
    ) -> Result<u64, RulesError> {
        let now = self.clock.now_ms();
        let mut skipped = 0;
        let mut groups: BTreeMap<(&str, u32), Vec<RecordIn>> = BTreeMap::new();
        // One copy of the rule's name for every record's header (`Bytes` clones share it).
        let name = Bytes::copy_from_slice(name.as_bytes());
        let task = self.task.as_ref().map(|task| Bytes::from(task.index.to_string()));
        for output in outputs {
            if !already.is_empty() && already.remove(&output.id) {
                skipped += 1;
                continue;
            }
            let Some((stream_name, stream)) = streams.get_key_value(&output.stream) else { continue };
            let partitions = stream.partitions().len() as u32;
            let partition = match &output.key {
                Some(key) => strom_log::partitioner::partition_for_key(key.as_bytes(), partitions),
                None => 0,
            };
            groups.entry((stream_name.as_str(), partition)).or_default().push(RecordIn {
                key: output.key.map(Bytes::from),
                value: Some(Bytes::from(output.value)),
                timestamp_ms: now,
                headers: match &task {
                    None => {
                        vec![(RULE_HEADER.to_string(), name.clone()), (ID_HEADER.to_string(), Bytes::from(output.id))]
                    }
                    Some(task) => vec![
                        (RULE_HEADER.to_string(), name.clone()),
                        (ID_HEADER.to_string(), Bytes::from(output.id)),
                        (TASK_HEADER.to_string(), task.clone()),
                    ],
                },
            });
        }
        for ((stream, partition), records) in &groups {
            let partition = streams[*stream].partition(*partition)?;
            for chunk in records.chunks(OUTPUT_BATCH_RECORDS_MAX) {
                let batch = EncodedBatch::encode(chunk)?;
                // Queued in order now (a partition appends in submission order).
                pending.push(submit_with_retry(partition, batch).await?);
            }
        }
        Ok(skipped)
    }
}

/// Waits until every queued append is durable; the first failure stops the rule (its
/// state is not committed, so a restart produces those outputs again).
async fn settle(pending: &mut Vec<strom_log::PendingAppend>) -> Result<(), RulesError> {
    // Every one is awaited, failed or not: an append left queued could land after the next
    // run scanned the outputs for what it must not append again.
    let mut outcome = Ok(());
    for append in pending.drain(..) {
        if let Err(error) = append.await
            && outcome.is_ok()
        {
            outcome = Err(error.into());
        }
    }
    outcome
}

/// Queues an append; an overloaded partition is retried after a pause (a rule must not
/// drop its outputs, and it has nothing better to do than wait).
async fn submit_with_retry(
    partition: &strom_log::Partition,
    batch: EncodedBatch,
) -> Result<strom_log::PendingAppend, RulesError> {
    loop {
        match partition.submit(batch.clone(), Durability::Sync) {
            Ok(pending) => return Ok(pending),
            Err(strom_log::LogError::Overloaded { .. }) => tokio::time::sleep(Duration::from_millis(50)).await,
            Err(error) => return Err(error.into()),
        }
    }
}

fn partition_ends(streams: &BTreeMap<String, Arc<Stream>>) -> Offsets {
    streams
        .values()
        .flat_map(|s| s.partitions().iter().map(|p| ((s.name.clone(), p.id()), p.log_end_offset())))
        .collect()
}

/// Outputs a run appended after its last commit (before a crash, or before its task moved
/// here), which this run produces again and must not append twice; and what the commits
/// record as the output ends meanwhile.
struct Replay {
    /// The ids not produced again yet: skipped when they are.
    ids: HashSet<String>,
    /// The output ends the last commit recorded. Commits record these again while the ids
    /// are pinned: a crash before they are all produced again then scans for them again,
    /// where recording the current ends would skip over them.
    from: Offsets,
    pinned: bool,
    /// The input ends when this run started, at or past everything the previous run read.
    horizon: Offsets,
    /// The latest wall-clock time the previous run can have seen: this run's start plus the
    /// skew allowed between servers' clocks. Outputs the wall clock finalised (an idle
    /// partition's watermark follows it) are produced again once the engine is finalised
    /// through it.
    wall_ms: i64,
}

impl Replay {
    async fn new(
        ids: HashSet<String>,
        from: Offsets,
        inputs: &[(Arc<Stream>, u32)],
        now_ms: i64,
    ) -> Result<Replay, RulesError> {
        let pinned = !ids.is_empty();
        let wall_ms = now_ms.saturating_add(REPLAY_CLOCK_SKEW_MS);
        let mut replay = Replay { ids, from, pinned, horizon: Offsets::new(), wall_ms };
        if replay.pinned {
            let inputs = inputs.to_vec();
            replay.horizon = blocking(move || {
                let mut ends = Offsets::new();
                for (stream, partition) in &inputs {
                    // The cluster's end, not a cached one that may be short of it.
                    let end = stream.partition(*partition)?.refresh_log_end_offset()?;
                    ends.insert((stream.name.clone(), *partition), end);
                }
                Ok(ends)
            })
            .await?;
        }
        Ok(replay)
    }

    /// The output ends a commit at input `offsets` records. The pin holds until every id
    /// was produced again, or until the input passed the horizon and the engine is finalised
    /// through the previous run's wall-clock time: what is still missing then is not
    /// produced again (which events count as late can differ in a re-run), so it stays, once,
    /// and commits move on (the ids stay skipped should they come after all). It also lets
    /// go after `REPLAY_PIN_RECORDS_MAX` outputs, so that a crash's rescan stays bounded.
    fn ends(
        &mut self,
        name: &str,
        offsets: &Offsets,
        engine: &Engine,
        streams: &BTreeMap<String, Arc<Stream>>,
        metrics: &RuleMetrics,
    ) -> Offsets {
        if self.pinned && self.ids.is_empty() {
            self.pinned = false;
        }
        let ends = partition_ends(streams);
        if !self.pinned {
            return ends;
        }
        let passed = self.horizon.iter().all(|(key, end)| offsets.get(key).is_some_and(|o| o >= end))
            && engine.finalised_through(self.wall_ms);
        // A crash rescans what was appended since `from`: that stays bounded.
        let since: u64 =
            ends.iter().map(|(key, end)| end.saturating_sub(self.from.get(key).copied().unwrap_or(0))).sum();
        if passed {
            tracing::warn!(rule = %name, outputs = self.ids.len(), "outputs of the run before the crash were not produced again by the re-run; they stay, once");
            metrics.not_reproduced.increment(self.ids.len() as u64);
        } else if since > REPLAY_PIN_RECORDS_MAX {
            tracing::warn!(rule = %name, outputs = self.ids.len(), appended_since = since, "outputs of the run before the crash are not all produced again yet; this run still skips them, but commits move on (a crash from now on would not know them)");
        } else {
            return self.from.clone();
        }
        self.pinned = false;
        ends
    }
}

/// Reads the output partitions past the ends recorded at the last commit and collects the
/// ids this rule (on a shared log: this task of it) wrote there.
async fn recover_ids(
    name: &str,
    task: Option<u32>,
    streams: &BTreeMap<String, Arc<Stream>>,
    recorded: &Offsets,
) -> Result<HashSet<String>, RulesError> {
    if recorded.is_empty() {
        return Ok(HashSet::new());
    }
    let task = task.map(|task| task.to_string());
    let name = name.to_string();
    let streams = streams.clone();
    let recorded = recorded.clone();
    blocking(move || {
        let mut ids = HashSet::new();
        let mut scanned = 0u64;
        for ((stream, partition), from) in &recorded {
            let Some(stream) = streams.get(stream) else { continue };
            let Ok(partition) = stream.partition(*partition) else { continue };
            // Asked of the cluster: on a shared log the outputs the task's previous owner
            // appended may be past this process's cached end.
            let end = partition.refresh_log_end_offset()?;
            let mut offset = (*from).max(partition.log_start_offset());
            while offset < end {
                let read = partition.read_records(offset, READ_RECORDS_MAX, READ_BYTES_MAX)?;
                if read.records.is_empty() {
                    break;
                }
                for record in &read.records {
                    let header =
                        |wanted: &str| record.headers.iter().find(|(k, _)| k == wanted).and_then(|(_, v)| v.as_ref());
                    // Outputs of the rule's other tasks are not this task's to skip (an output
                    // without the header is from before tasks, and counted in).
                    let of_task = match (&task, header(TASK_HEADER)) {
                        (Some(task), Some(written)) => written.as_ref() == task.as_bytes(),
                        _ => true,
                    };
                    if of_task
                        && header(RULE_HEADER).is_some_and(|v| v.as_ref() == name.as_bytes())
                        && let Some(id) = header(ID_HEADER)
                    {
                        ids.insert(String::from_utf8_lossy(id).into_owned());
                    }
                }
                scanned += read.records.len() as u64;
                if scanned > RECOVERY_SCAN_RECORDS_MAX {
                    return Err(RulesError::Store(format!(
                        "more than {RECOVERY_SCAN_RECORDS_MAX} records in the outputs after rule {name:?}'s last commit"
                    )));
                }
                offset = read.next_offset;
            }
        }
        Ok(ids)
    })
    .await
}

/// One turn: reads every input partition once and processes what it read, then advances
/// the engine's clock.
fn read_and_process(turn: &mut Turn, now: i64) {
    turn.read = 0;
    turn.skipped = 0;
    let mut sample = 0u32;
    let paths = turn.engine.input_paths().clone();
    let screen = turn.engine.screen_paths().cloned();
    for (stream, partition_id) in &turn.inputs {
        let key = (stream.name.clone(), *partition_id);
        let Some(&offset) = turn.offsets.get(&key) else { continue };
        let partition = match stream.partition(*partition_id) {
            Ok(p) => p,
            Err(error) => {
                turn.error = Some(error.into());
                return;
            }
        };
        let from = if offset < partition.log_start_offset() {
            // Retention deleted records the rule never read.
            tracing::warn!(stream = %stream.name, partition = partition_id, offset, start = partition.log_start_offset(), "rule input was deleted by retention before it was read");
            partition.log_start_offset()
        } else {
            offset
        };
        if from >= partition.log_end_offset() {
            turn.offsets.insert(key, from);
            continue;
        }
        let read = match partition.read_records(from, READ_RECORDS_MAX, READ_BYTES_MAX) {
            Ok(read) => read,
            Err(error) => {
                turn.error = Some(error.into());
                return;
            }
        };
        for record in &read.records {
            turn.read += 1;
            // A rule never reads its own outputs (a rule may write to a stream it reads).
            if record
                .headers
                .iter()
                .any(|(k, v)| k == RULE_HEADER && v.as_deref() == Some(turn.engine.rule().name.as_bytes()))
            {
                continue;
            }
            // Most events are not for the rule, and their text says so.
            if let Some(value) = &record.value
                && turn.engine.screen_raw(&stream.name, *partition_id, value, now, &mut turn.outputs)
            {
                continue;
            }
            let Some(event) = record.value.as_ref().and_then(|v| parse(&turn.engine, v, &paths, screen.as_ref()))
            else {
                turn.skipped += 1;
                continue;
            };
            let before = turn.outputs.len();
            let input = Input {
                stream: &stream.name,
                partition: *partition_id,
                offset: record.offset,
                record_timestamp_ms: record.timestamp_ms,
                event: &event,
            };
            sample = sample.wrapping_add(1);
            if sample.is_multiple_of(16) {
                let started = Instant::now();
                turn.engine.process(&input, now, &mut turn.outputs);
                turn.samples.push(started.elapsed().as_secs_f64());
            } else {
                turn.engine.process(&input, now, &mut turn.outputs);
            }
            copy_late_events_whole(&mut turn.outputs[before..], record.value.as_deref());
        }
        turn.offsets.insert(key, read.next_offset.max(from));
    }
    turn.engine.advance(now, &mut turn.outputs);
}

/// Parses an event as far as the engine needs it: first only what screening reads (most
/// events fail `where` and need nothing more), then everything the rule reads.
fn parse(
    engine: &Engine,
    bytes: &[u8],
    paths: &crate::expr::Paths,
    screen: Option<&crate::expr::Paths>,
) -> Option<serde_json::Value> {
    if let Some(screen) = screen {
        let partial = parse_pruned(bytes, screen).ok()?;
        if engine.screens_out(&partial) {
            return Some(partial);
        }
    }
    parse_pruned(bytes, paths).ok()
}

/// The engine saw only the fields the rule reads; a late event's copy is the whole event.
fn copy_late_events_whole(outputs: &mut [Output], raw: Option<&[u8]>) {
    for output in outputs {
        if output.kind == OutputKind::Late
            && let Some(whole) = raw.and_then(|raw| std::str::from_utf8(raw).ok())
        {
            output.value = whole.to_string();
        }
    }
}

/// A backtest on the blocking pool: the stream's partitions merged by record time.
fn backtest(
    rule: Arc<Rule>,
    config: EngineConfig,
    stream: Arc<Stream>,
    request: &BacktestRequest,
) -> Result<BacktestReport, RulesError> {
    let max_outputs = request.max_outputs.min(BACKTEST_OUTPUTS_MAX);
    let mut engine = Engine::new(rule.clone(), config);
    let paths = engine.input_paths().clone();
    let screen = engine.screen_paths().cloned();
    let mut cursors = Vec::new();
    for partition in stream.partitions() {
        let start = partition.log_start_offset();
        let end = partition.log_end_offset();
        let resolve = |position: Option<Position>, default: u64| -> Result<u64, RulesError> {
            Ok(match position {
                None => default,
                Some(Position::Offset(offset)) => offset.clamp(start, end),
                Some(Position::TimestampMs(ms)) => partition.offset_for_timestamp(ms)?.unwrap_or(end),
            })
        };
        let from = resolve(request.from, start)?;
        let to = resolve(request.to, end)?;
        if from > to {
            return Err(RulesError::InvalidBacktest(format!("from is after to in partition {}", partition.id())));
        }
        cursors.push((partition, from, to, std::collections::VecDeque::new()));
    }
    for (partition, ..) in &cursors {
        engine.register_partition(&stream.name, partition.id(), i64::MIN);
    }
    let mut report = BacktestReport {
        rule: rule.name.clone(),
        version: rule.version,
        stream: stream.name.clone(),
        events_read: 0,
        outputs: Vec::new(),
        outputs_total: 0,
        truncated: false,
        counters: Counters::default(),
        open_keys: 0,
        open_entries: 0,
        watermark_ms: None,
    };
    let mut outputs = Vec::new();
    let collect = |outputs: &mut Vec<Output>, report: &mut BacktestReport| {
        for output in outputs.drain(..) {
            report.outputs_total += 1;
            if report.outputs.len() < max_outputs {
                report.outputs.push(output);
            } else {
                report.truncated = true;
            }
        }
    };
    loop {
        // Refill empty buffers, then take the record with the lowest timestamp.
        for (partition, next, to, buffer) in &mut cursors {
            if buffer.is_empty() && *next < *to {
                let read =
                    partition.read_records(*next, READ_RECORDS_MAX.min((*to - *next) as usize), READ_BYTES_MAX)?;
                if read.records.is_empty() {
                    *next = *to;
                }
                *next = read.next_offset.max(*next);
                buffer.extend(read.records.into_iter().filter(|r| r.offset < *to));
            }
        }
        let Some(index) = cursors
            .iter()
            .enumerate()
            .filter_map(|(i, c)| c.3.front().map(|r| (r.timestamp_ms, i)))
            .min()
            .map(|(_, i)| i)
        else {
            break;
        };
        let record = cursors[index].3.pop_front().expect("chosen for having a record");
        let partition_id = cursors[index].0.id();
        if record.headers.iter().any(|(k, v)| k == RULE_HEADER && v.as_deref() == Some(rule.name.as_bytes())) {
            continue;
        }
        report.events_read += 1;
        if report.events_read > BACKTEST_EVENTS_MAX {
            report.truncated = true;
            break;
        }
        if let Some(event) = record.value.as_ref().and_then(|v| parse(&engine, v, &paths, screen.as_ref())) {
            let input = Input {
                stream: &stream.name,
                partition: partition_id,
                offset: record.offset,
                record_timestamp_ms: record.timestamp_ms,
                event: &event,
            };
            // The wall clock of a backtest is the records' append time.
            let before = outputs.len();
            engine.process(&input, record.timestamp_ms, &mut outputs);
            copy_late_events_whole(&mut outputs[before..], record.value.as_deref());
            if report.events_read.is_multiple_of(1024) {
                engine.advance(record.timestamp_ms, &mut outputs);
            }
        }
        collect(&mut outputs, &mut report);
    }
    let (keys, entries) = engine.state_size();
    report.open_keys = keys as u64;
    report.open_entries = entries as u64;
    let watermark = engine.watermark_ms();
    report.watermark_ms = (watermark != i64::MIN).then_some(watermark);
    if request.flush {
        engine.flush(&mut outputs);
        collect(&mut outputs, &mut report);
    }
    report.counters = engine.counters().clone();
    Ok(report)
}

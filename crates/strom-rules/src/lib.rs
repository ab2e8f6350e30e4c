//! Strom's rules engine: standing queries over the log's streams that emit derived events
//! back into the log and ask for webhook deliveries, exactly once.
//!
//! - `rule`: rule definitions (YAML or TOML) and their validation, with errors at the line,
//!   column and field they are about.
//! - `engine`: the deterministic engine of one rule (filters, windows, patterns, anomalies);
//!   time is passed in, never read.
//! - `runtime`: runs every rule over the log, with state and input offsets committed in one
//!   redb transaction, and derived events deduplicated by their deterministic ids after a
//!   crash.
//!
//! Architecture invariants:
//! - The engine does no I/O and reads no clock: the same inputs and `now` values give the
//!   same outputs.
//! - An output is appended durably before the state and input offsets that produced it are
//!   committed; an output whose id is already in its stream is never appended again.

mod aggregate;
#[doc(hidden)]
pub mod changelog;
mod duration;
mod engine;
mod error;
mod expr;
mod fast;
mod ids;
mod node;
mod rule;
mod runtime;
mod screen;
mod store;

pub use aggregate::COUNT_DISTINCT_MAX;
pub use duration::parse_duration_ms;
pub use engine::{
    ANOMALY_IDLE_WINDOWS_MAX, Counters, DELIVERIES_STREAM, Engine, EngineConfig, FIRINGS_PER_CALL_MAX, Input, Output,
    OutputKind,
};
pub use error::{RuleError, RulesError};
pub use expr::{EXPRESSION_BYTES_MAX, EXPRESSION_DEPTH_MAX, Paths, parse_pruned};
pub use ids::{format_time_ms, parse_time_ms};
pub use node::Format;
pub use rule::{
    ACTIONS_MAX, AGGREGATES_MAX, Action, Aggregate, AggregateFunction, AnomalySpec, DURATION_MS_MAX, Detector, Emit,
    HOPS_MAX, KeySpec, Kind, PARSE_STACK_BYTES, PATTERN_STEPS_MAX, PatternSpec, PatternStart, RULE_BYTES_MAX,
    RULE_NAME_BYTES_MAX, RULE_STREAMS_MAX, Rule, RuleLimits, Step, WindowSpec, WindowType, validate_rule_name,
};
pub use runtime::{
    BACKTEST_EVENTS_MAX, BACKTEST_OUTPUTS_MAX, BacktestReport, BacktestRequest, BacktestRule, CrashPoint, ID_HEADER,
    OUTPUT_BATCH_RECORDS_MAX, PENDING_APPENDS_MAX, Position, READ_BYTES_MAX, READ_RECORDS_MAX,
    RECOVERY_SCAN_RECORDS_MAX, RULE_FILES_MAX, RULE_HEADER, RULES_MAX, ReloadReport, RuleStatus, Rules, RulesConfig,
    RunState, StartFrom, TASK_HEADER,
};

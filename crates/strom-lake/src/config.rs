//! `[lake]` in strom.toml: where the lake is, what lands in it, and how files are cut.

use serde::Deserialize;

use crate::limits::{
    ROLL_AGE_MS_MAX, ROLL_AGE_MS_MIN, ROLL_BYTES_MAX, ROLL_BYTES_MIN, ROW_GROUP_ROWS_MAX, ROW_GROUP_ROWS_MIN,
};

/// The consumer group the lake commits its offsets under (`GET /v1/groups/strom-lake/offsets`
/// shows how far each partition is landed).
pub const GROUP: &str = "strom-lake";

/// The directory (local lake) that holds files being written; never a table.
pub const SPOOL_DIR: &str = "_strom_spool";
/// The lake's directory of flush markers (`<stream>/<partition>.json`): in the lake, so that
/// whichever process lands a partition next finds the flush another left unfinished.
pub const MARKERS_DIR: &str = "_strom_markers";

#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct LakeConfig {
    /// Land streams into the lake (the sink). Queries work whenever `url` is usable.
    pub enabled: bool,
    /// `file:///abs/dir`, a plain directory, or `s3://bucket/prefix`. Empty: `<data_dir>/lake`.
    pub url: String,
    /// Streams landed, each its own table.
    pub streams: Vec<String>,
    /// Land the collector's dead-letter stream too, as its own table.
    pub dead_letters: bool,
    /// Which time places an event in its `date=/hour=` directory.
    pub time_basis: TimeBasis,
    /// A file is cut once it would pass about this many bytes (estimated from the bytes read
    /// and the compression the partition's last files achieved).
    pub roll_bytes: u64,
    /// A partition's files are cut at the latest this long after their first event was read.
    pub roll_age_ms: u64,
    /// Rows per Parquet row group.
    pub row_group_rows: usize,
    /// `zstd` or `none`.
    pub compression: Compression,
    /// zstd level, 1 (fast) to 22 (small).
    pub zstd_level: i32,
    /// `strom lake compact` merges the files of an hour only this long after the hour ended,
    /// so that late events rarely reopen it.
    pub compact_after_ms: u64,
    /// S3-compatible storage (for `s3://` URLs).
    pub s3: S3Settings,
}

#[derive(Clone, Debug, Deserialize, PartialEq, Default)]
#[serde(deny_unknown_fields, default)]
pub struct S3Settings {
    /// e.g. `http://127.0.0.1:9000` for MinIO or moto; empty: AWS.
    pub endpoint: String,
    /// Empty: `AWS_REGION`/`AWS_DEFAULT_REGION`, else `us-east-1`.
    pub region: String,
    /// Empty: `STROM_LAKE_ACCESS_KEY_ID`, else the AWS environment and instance credentials.
    pub access_key_id: String,
    /// Also `STROM_LAKE_SECRET_ACCESS_KEY` (preferred: a file is easier to leak).
    pub secret_access_key: Option<Secret>,
    pub session_token: Option<Secret>,
    /// Allow `http://` endpoints (local test servers).
    pub allow_http: bool,
    /// Path-style requests (`endpoint/bucket/key`) as most S3-compatible servers want;
    /// false uses virtual-hosted style (`bucket.endpoint/key`).
    pub path_style: bool,
}

/// A secret from the configuration: never shown by `Debug`.
#[derive(Clone, Deserialize, PartialEq)]
#[serde(transparent)]
pub struct Secret(pub String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret([redacted])")
    }
}

#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq, Default, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum TimeBasis {
    /// The event's own `timestamp` (as corrected by the collector); the receive time when
    /// the event has none.
    #[default]
    Event,
    /// The record's timestamp in the log (when the server received it).
    Receive,
}

#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    #[default]
    Zstd,
    None,
}

impl Default for LakeConfig {
    fn default() -> LakeConfig {
        LakeConfig {
            enabled: false,
            url: String::new(),
            streams: vec!["events".into()],
            dead_letters: true,
            time_basis: TimeBasis::Event,
            roll_bytes: 128 * 1024 * 1024,
            roll_age_ms: 300_000,
            row_group_rows: 128 * 1024,
            compression: Compression::Zstd,
            // Measured on the shop workload: level 1 landed 22 % faster than 3 and its files
            // were 2 % smaller (docs/BENCHMARKS.md).
            zstd_level: 1,
            compact_after_ms: 3_600_000,
            s3: S3Settings { path_style: true, ..S3Settings::default() },
        }
    }
}

impl LakeConfig {
    /// Checks every value; errors name the key (`lake.<key>`).
    pub fn validate(&self) -> Result<(), String> {
        if !self.url.is_empty() {
            LakeUrl::parse(&self.url).map_err(|error| format!("lake.url: {error}"))?;
        }
        for stream in &self.streams {
            strom_log::validate_stream_name(stream).map_err(|error| format!("lake.streams: {error}"))?;
            if stream == SPOOL_DIR || stream == MARKERS_DIR {
                return Err(format!("lake.streams: {stream:?} is the lake's own directory"));
            }
        }
        if !(ROLL_BYTES_MIN..=ROLL_BYTES_MAX).contains(&self.roll_bytes) {
            return Err(format!("lake.roll_bytes must be between {ROLL_BYTES_MIN} and {ROLL_BYTES_MAX}"));
        }
        if !(ROLL_AGE_MS_MIN..=ROLL_AGE_MS_MAX).contains(&self.roll_age_ms) {
            return Err(format!("lake.roll_age_ms must be between {ROLL_AGE_MS_MIN} and {ROLL_AGE_MS_MAX}"));
        }
        if !(ROW_GROUP_ROWS_MIN..=ROW_GROUP_ROWS_MAX).contains(&self.row_group_rows) {
            return Err(format!("lake.row_group_rows must be between {ROW_GROUP_ROWS_MIN} and {ROW_GROUP_ROWS_MAX}"));
        }
        if !(1..=22).contains(&self.zstd_level) {
            return Err("lake.zstd_level must be between 1 and 22".into());
        }
        if self.compact_after_ms > 30 * 86_400_000 {
            return Err("lake.compact_after_ms must be at most 2592000000 (30 days)".into());
        }
        if !self.s3.endpoint.is_empty()
            && !self.s3.endpoint.starts_with("http://")
            && !self.s3.endpoint.starts_with("https://")
        {
            return Err("lake.s3.endpoint must start with http:// or https://".into());
        }
        Ok(())
    }
}

/// Where the lake lives.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LakeUrl {
    /// A local directory (absolute or relative to the working directory).
    Local(std::path::PathBuf),
    /// `s3://bucket/prefix`: the prefix without slashes at either end (may be empty).
    S3 { bucket: String, prefix: String },
}

impl LakeUrl {
    pub fn parse(text: &str) -> Result<LakeUrl, String> {
        if let Some(rest) = text.strip_prefix("s3://") {
            let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
            if bucket.is_empty() {
                return Err(format!("{text:?} names no bucket"));
            }
            let prefix = prefix.trim_matches('/').to_string();
            if prefix.split('/').any(|part| part == "." || part == "..") {
                return Err(format!("{text:?}: '.' and '..' are not allowed in the prefix"));
            }
            return Ok(LakeUrl::S3 { bucket: bucket.to_string(), prefix });
        }
        if let Some(path) = text.strip_prefix("file://") {
            if !path.starts_with('/') {
                return Err(format!("{text:?}: a file:// URL takes an absolute path (file:///dir)"));
            }
            return Ok(LakeUrl::Local(path.into()));
        }
        if text.contains("://") {
            return Err(format!("{text:?}: the lake takes file://, s3:// or a directory"));
        }
        if text.is_empty() {
            return Err("the URL is empty".into());
        }
        Ok(LakeUrl::Local(text.into()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        assert_eq!(LakeUrl::parse("s3://b/p/q/").unwrap(), LakeUrl::S3 { bucket: "b".into(), prefix: "p/q".into() });
        assert_eq!(LakeUrl::parse("s3://b").unwrap(), LakeUrl::S3 { bucket: "b".into(), prefix: String::new() });
        assert_eq!(LakeUrl::parse("file:///x/y").unwrap(), LakeUrl::Local("/x/y".into()));
        assert_eq!(LakeUrl::parse("lake").unwrap(), LakeUrl::Local("lake".into()));
        for bad in ["s3:///p", "file://rel", "gs://b", "s3://b/../x", ""] {
            assert!(LakeUrl::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn bad_values_name_the_key() {
        type Change = fn(&mut LakeConfig);
        let cases: [(Change, &str); 6] = [
            (|c| c.roll_bytes = 1, "lake.roll_bytes"),
            (|c| c.roll_age_ms = 0, "lake.roll_age_ms"),
            (|c| c.row_group_rows = 1, "lake.row_group_rows"),
            (|c| c.zstd_level = 0, "lake.zstd_level"),
            (|c| c.streams = vec!["a b".into()], "lake.streams"),
            (|c| c.url = "ftp://x".into(), "lake.url"),
        ];
        for (change, key) in cases {
            let mut config = LakeConfig::default();
            change(&mut config);
            let error = config.validate().unwrap_err();
            assert!(error.contains(key), "{error}");
        }
        LakeConfig::default().validate().unwrap();
    }
}

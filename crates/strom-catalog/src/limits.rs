//! Every bound of the catalog, in one place (docs/ARCHITECTURE.md lists them).

/// Bytes of one schema's JSON text. Event schemas are a few KiB; this leaves room for large
/// shared definitions while keeping one registration's parse and compile cheap.
pub const SCHEMA_BYTES_MAX: usize = 256 * 1024;

/// Subjects (event types and other registry subjects), deleted ones included: the registry
/// keeps every subject's record in memory.
pub const SUBJECTS_MAX: usize = 10_000;

/// Versions kept per subject, deleted ones included. A transitive compatibility check reads
/// them all, so this also bounds the cost of one registration.
pub const SUBJECT_VERSIONS_MAX: usize = 1_000;

/// Bytes of a subject name (the file stem for catalog files).
pub const SUBJECT_BYTES_MAX: usize = 255;

/// Files read from the catalog directory in one reload.
pub const CATALOG_FILES_MAX: usize = 10_000;

/// Violations reported for one event: enough to fix it, bounded so that a huge malformed
/// event cannot make a huge dead-letter reason.
pub const VIOLATIONS_MAX: usize = 10;

/// Characters of one violation message (the validator's message can quote schema values).
pub const VIOLATION_MESSAGE_CHARS_MAX: usize = 300;

/// Differences reported for one refused version.
pub const DIFFERENCES_MAX: usize = 100;

/// Nesting of subschemas the compatibility checker and the PII planner follow (through
/// properties, items, combinators and `$ref`). Deeper schemas are refused, not half-checked.
pub const SCHEMA_DEPTH_MAX: usize = 64;

/// Bytes of the PII secret generated when none is configured.
pub const PII_SECRET_BYTES: usize = 32;

/// Subschema comparisons in one compatibility check. Matching combinator branches is
/// quadratic; past this budget the check refuses instead of running on.
pub const COMPAT_STEPS_MAX: usize = 100_000;

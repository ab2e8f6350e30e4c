//! SQL over the lake with DataFusion: one table per stream directory, partitioned by the
//! Hive directories (`date` and `hour` as text: `'2026-11-22'`, `'08'`), so that conditions
//! on them skip whole directories. Text rather than an integer hour: DataFusion turns an
//! equality on a partition column into a directory prefix from the literal's text, and `9`
//! would not find `hour=09`.
//!
//! A table's schema is the union of its files' schemas (files of older catalog versions lack
//! newer columns: those read as null). Where files disagree on a column's type, integer and
//! floating point read as floating point and anything else as text. Queries are read-only
//! (no DDL, DML or `SET`), bounded in rows, memory, time and number at once.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use arrow::record_batch::RecordBatch;
use datafusion::datasource::file_format::parquet::ParquetFormat;
use datafusion::datasource::listing::{ListingOptions, ListingTable, ListingTableConfig, ListingTableUrl};
use datafusion::error::DataFusionError;
use datafusion::execution::cache::cache_manager::CacheManagerConfig;
use datafusion::execution::memory_pool::FairSpillPool;
use datafusion::execution::object_store::ObjectStoreUrl;
use datafusion::execution::runtime_env::{RuntimeEnv, RuntimeEnvBuilder};
use datafusion::prelude::{SQLOptions, SessionConfig, SessionContext};
use futures_util::StreamExt;
use object_store::ObjectStoreExt;
use parquet::file::metadata::ParquetMetaDataReader;
use tokio::sync::Semaphore;

use crate::config::SPOOL_DIR;
use crate::error::{LakeError, Result};
use crate::limits::{
    QUERIES_IN_FLIGHT_MAX, QUERY_MEMORY_BYTES_MAX, QUERY_ROWS_MAX, QUERY_SQL_BYTES_MAX, QUERY_TIMEOUT_MS,
    SCHEMA_CACHE_ENTRIES_MAX,
};
use crate::store::Store;

/// The answer to a query: at most the asked rows.
#[derive(Debug)]
pub struct QueryAnswer {
    pub schema: SchemaRef,
    pub batches: Vec<RecordBatch>,
    pub rows: usize,
    /// More rows than asked for exist.
    pub truncated: bool,
    pub elapsed: Duration,
}

/// Runs SQL over one lake's files.
pub struct QueryEngine {
    store: Store,
    runtime: Arc<RuntimeEnv>,
    running: Semaphore,
    /// File schemas by (path, size): data files are never changed in place.
    schemas: Mutex<HashMap<(String, u64), SchemaRef>>,
}

impl std::fmt::Debug for QueryEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QueryEngine").field("store", &self.store).finish_non_exhaustive()
    }
}

impl QueryEngine {
    pub fn new(store: Store) -> Result<QueryEngine> {
        // DataFusion 55 caches directory listings without expiry by default: a running server
        // then never saw a file published (or compacted away) after a table's first query.
        let caches = CacheManagerConfig::default().with_list_files_cache_limit(0);
        let runtime = RuntimeEnvBuilder::new()
            .with_memory_pool(Arc::new(FairSpillPool::new(QUERY_MEMORY_BYTES_MAX)))
            .with_cache_manager(caches)
            .build_arc()
            .map_err(|error| LakeError::QueryFailed(error.to_string()))?;
        let url = ObjectStoreUrl::parse(root_url(&store)).map_err(|error| LakeError::QueryFailed(error.to_string()))?;
        runtime.register_object_store(url.as_ref(), store.object_store()?);
        Ok(QueryEngine {
            store,
            runtime,
            running: Semaphore::new(QUERIES_IN_FLIGHT_MAX),
            schemas: Mutex::new(HashMap::new()),
        })
    }

    /// Runs one read-only statement; at most `max_rows` rows (capped by `QUERY_ROWS_MAX`).
    pub async fn query(&self, sql: &str, max_rows: usize) -> Result<QueryAnswer> {
        if sql.len() > QUERY_SQL_BYTES_MAX {
            return Err(LakeError::Query(format!("the SQL text is over {QUERY_SQL_BYTES_MAX} bytes")));
        }
        let _permit = self.running.try_acquire().map_err(|_| LakeError::QueriesBusy { max: QUERIES_IN_FLIGHT_MAX })?;
        let started = Instant::now();
        let max_rows = max_rows.clamp(1, QUERY_ROWS_MAX);
        let run = async {
            let context = self.context().await?;
            let options = SQLOptions::new().with_allow_ddl(false).with_allow_dml(false).with_allow_statements(false);
            let frame = context.sql_with_options(sql, options).await.map_err(query_error)?;
            // One row more than asked says whether there are more (EXPLAIN must stay the root).
            let explain = matches!(
                frame.logical_plan(),
                datafusion::logical_expr::LogicalPlan::Explain(_) | datafusion::logical_expr::LogicalPlan::Analyze(_)
            );
            let frame = if explain { frame } else { frame.limit(0, Some(max_rows + 1)).map_err(query_error)? };
            let schema: SchemaRef = Arc::new(frame.schema().as_arrow().clone());
            let mut stream = frame.execute_stream().await.map_err(query_error)?;
            let (mut batches, mut rows, mut truncated) = (Vec::new(), 0, false);
            while let Some(batch) = stream.next().await {
                let batch = batch.map_err(query_error)?;
                let room = max_rows - rows;
                if batch.num_rows() > room {
                    truncated = true;
                    if room > 0 {
                        batches.push(batch.slice(0, room));
                        rows += room;
                    }
                    break;
                }
                rows += batch.num_rows();
                batches.push(batch);
            }
            Ok::<_, LakeError>(QueryAnswer { schema, batches, rows, truncated, elapsed: Duration::ZERO })
        };
        let mut answer = tokio::time::timeout(Duration::from_millis(QUERY_TIMEOUT_MS), run)
            .await
            .map_err(|_| LakeError::QueryTimeout { timeout_ms: QUERY_TIMEOUT_MS })??;
        answer.elapsed = started.elapsed();
        Ok(answer)
    }

    /// A session with every table of the lake registered.
    async fn context(&self) -> Result<SessionContext> {
        let config = SessionConfig::new().with_information_schema(true);
        let context = SessionContext::new_with_config_rt(config, self.runtime.clone());
        let listed = self.store.list("").await?;
        let mut tables: BTreeMap<&str, Vec<(&str, u64)>> = BTreeMap::new();
        for file in &listed {
            let Some((table, rest)) = file.path.split_once('/') else { continue };
            if table == SPOOL_DIR || !rest.ends_with(".parquet") || table.starts_with('.') {
                continue;
            }
            tables.entry(table).or_default().push((&file.path, file.size));
        }
        for (table, files) in tables {
            let schema = self.table_schema(&files).await?;
            let options = ListingOptions::new(Arc::new(ParquetFormat::default()))
                .with_file_extension(".parquet")
                .with_table_partition_cols(vec![("date".into(), DataType::Utf8), ("hour".into(), DataType::Utf8)]);
            let url = ListingTableUrl::parse(format!("{}/{table}/", self.store.url().trim_end_matches('/')))
                .map_err(|error| LakeError::QueryFailed(error.to_string()))?;
            let config = ListingTableConfig::new(url).with_listing_options(options).with_schema(schema);
            let provider = ListingTable::try_new(config).map_err(|error| LakeError::QueryFailed(error.to_string()))?;
            context
                .register_table(table, Arc::new(provider))
                .map_err(|error| LakeError::QueryFailed(error.to_string()))?;
        }
        Ok(context)
    }

    /// The union of the files' schemas, by column name.
    async fn table_schema(&self, files: &[(&str, u64)]) -> Result<SchemaRef> {
        let mut schemas = Vec::with_capacity(files.len());
        for (path, size) in files {
            schemas.push(self.file_schema(path, *size).await?);
        }
        Ok(union_schema(&schemas))
    }

    /// A data file's schema, from its footer (cached).
    pub(crate) async fn file_schema(&self, path: &str, size: u64) -> Result<SchemaRef> {
        let key = (path.to_string(), size);
        if let Some(schema) = self.schemas.lock().unwrap_or_else(|e| e.into_inner()).get(&key) {
            return Ok(schema.clone());
        }
        let location = object_store::path::Path::from(match &self.store {
            Store::Local { root, .. } => format!("{}/{path}", root.display()),
            Store::S3 { prefix, .. } if prefix.is_empty() => path.to_string(),
            Store::S3 { prefix, .. } => format!("{prefix}/{path}"),
        });
        // The footer: metadata length and magic in the last 8 bytes, the metadata before them.
        let store = self.store.object_store()?;
        let damaged = |why: &str| LakeError::QueryFailed(format!("{path} is not a Parquet file: {why}"));
        if size < 12 {
            return Err(damaged("too short"));
        }
        let tail = store.get_range(&location, size - 8..size).await?;
        if &tail[4..] != b"PAR1" {
            return Err(damaged("no magic number at the end"));
        }
        let metadata_len = u64::from(u32::from_le_bytes([tail[0], tail[1], tail[2], tail[3]]));
        if metadata_len + 12 > size {
            return Err(damaged("its footer is longer than the file"));
        }
        let bytes = store.get_range(&location, size - 8 - metadata_len..size - 8).await?;
        let metadata = ParquetMetaDataReader::decode_metadata(&bytes)?;
        let file = metadata.file_metadata();
        let arrow = parquet::arrow::parquet_to_arrow_schema(file.schema_descr(), file.key_value_metadata())?;
        let schema = Arc::new(Schema::new(arrow.fields().clone()));
        let mut cache = self.schemas.lock().unwrap_or_else(|e| e.into_inner());
        if cache.len() >= SCHEMA_CACHE_ENTRIES_MAX {
            cache.clear();
        }
        cache.insert(key, schema.clone());
        Ok(schema)
    }
}

/// The union of schemas by column name, in first-seen order; every column nullable; types
/// widened where they disagree.
pub(crate) fn union_schema(schemas: &[SchemaRef]) -> SchemaRef {
    let mut fields: Vec<Field> = Vec::new();
    let mut positions: HashMap<String, usize> = HashMap::new();
    for schema in schemas {
        for field in schema.fields() {
            match positions.get(field.name()) {
                None => {
                    positions.insert(field.name().clone(), fields.len());
                    fields.push(field.as_ref().clone().with_nullable(true));
                }
                Some(&index) => {
                    let merged = widen(fields[index].data_type(), field.data_type());
                    fields[index] = fields[index].clone().with_data_type(merged);
                }
            }
        }
    }
    Arc::new(Schema::new(fields))
}

fn root_url(store: &Store) -> String {
    match store {
        Store::Local { .. } => "file:///".to_string(),
        Store::S3 { bucket, .. } => format!("s3://{bucket}"),
    }
}

/// The type a column reads as when files disagree.
fn widen(a: &DataType, b: &DataType) -> DataType {
    match (a, b) {
        (a, b) if a == b => a.clone(),
        (DataType::Int64, DataType::Float64) | (DataType::Float64, DataType::Int64) => DataType::Float64,
        _ => DataType::Utf8,
    }
}

/// DataFusion's errors as the lake's: the query's fault, a limit, or a failure.
fn query_error(error: DataFusionError) -> LakeError {
    let message = error.to_string();
    match error.find_root() {
        DataFusionError::SQL(..)
        | DataFusionError::Plan(_)
        | DataFusionError::SchemaError(..)
        | DataFusionError::NotImplemented(_)
        | DataFusionError::Configuration(_) => LakeError::Query(message),
        DataFusionError::ResourcesExhausted(_) => LakeError::QueryTooLarge(message),
        _ => LakeError::QueryFailed(message),
    }
}

impl QueryAnswer {
    /// `{"columns": [{"name", "type"}], "rows": [{column: value}], "row_count", "truncated",
    /// "elapsed_ms"}`; timestamps as RFC 3339 text, binary as hex, nulls written out.
    pub fn to_json(&self) -> Result<Vec<u8>> {
        let columns: Vec<serde_json::Value> = self
            .schema
            .fields()
            .iter()
            .map(|f| serde_json::json!({"name": f.name(), "type": f.data_type().to_string()}))
            .collect();
        let mut rows = Vec::new();
        {
            let mut writer = arrow::json::WriterBuilder::new()
                .with_explicit_nulls(true)
                .build::<_, arrow::json::writer::JsonArray>(&mut rows);
            let batches: Vec<&RecordBatch> = self.batches.iter().collect();
            writer.write_batches(&batches)?;
            writer.finish()?;
        }
        if rows.is_empty() {
            rows.extend_from_slice(b"[]");
        }
        let mut out = Vec::with_capacity(rows.len() + 256);
        out.extend_from_slice(b"{\"columns\":");
        out.extend_from_slice(serde_json::Value::Array(columns).to_string().as_bytes());
        out.extend_from_slice(b",\"rows\":");
        out.extend_from_slice(&rows);
        let tail = serde_json::json!({"row_count": self.rows, "truncated": self.truncated,
                                      "elapsed_ms": self.elapsed.as_millis() as u64});
        let tail = tail.to_string();
        out.push(b',');
        out.extend_from_slice(&tail.as_bytes()[1..]);
        Ok(out)
    }

    /// RFC 4180 CSV with a header line.
    pub fn to_csv(&self) -> Result<Vec<u8>> {
        let mut out = Vec::new();
        {
            let mut writer = arrow::csv::WriterBuilder::new().with_header(true).build(&mut out);
            if self.batches.is_empty() {
                writer.write(&RecordBatch::new_empty(self.schema.clone()))?;
            }
            for batch in &self.batches {
                writer.write(batch)?;
            }
        }
        Ok(out)
    }
}

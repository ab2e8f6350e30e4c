//! Compaction: the small files of a closed hour, per partition, merged into larger ones with
//! the same rows (same values, in offset order; columns the union of the inputs').
//!
//! Only runs of files that are adjacent in offset order within an hour and partition are
//! merged, and only files whose offsets are all committed, so that a merged file's range
//! contains exactly its inputs. The merged file is published first, the inputs deleted after.
//! A crash in between leaves inputs whose ranges lie within the merged file's: the next run
//! deletes such files first (they can arise no other way: the sink's files of one hour and
//! partition never overlap).

use std::collections::BTreeMap;
use std::sync::Arc;

use arrow::array::new_null_array;
use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;
use parquet::arrow::ArrowWriter;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::file::metadata::KeyValue;
use serde::Serialize;

use crate::Shared;
use crate::config::GROUP;
use crate::error::{IoContext, Result};
use crate::flush::writer_properties;
use crate::layout::{FileName, Hour, parse_file_path};
use crate::store::Listed;

/// What a compaction run did.
#[derive(Debug, Default, Serialize, PartialEq, Eq)]
pub struct CompactReport {
    pub hours_examined: usize,
    pub files_merged: usize,
    pub files_written: usize,
    pub rows: u64,
    /// Inputs of an earlier run that a crash left next to their merged file.
    pub leftovers_deleted: usize,
}

pub(crate) async fn compact(shared: &Arc<Shared>, streams: &[String]) -> Result<CompactReport> {
    let mut report = CompactReport::default();
    let now_ms = shared.clock.now_ms();
    for stream in streams {
        let listed = shared.store.list(&format!("{stream}/")).await?;
        let mut hours: BTreeMap<(Hour, u32), Vec<(FileName, Listed)>> = BTreeMap::new();
        for file in listed {
            if let Some((table, hour, name)) = parse_file_path(&file.path)
                && table == stream
            {
                hours.entry((hour, name.partition)).or_default().push((name, file));
            }
        }
        for ((hour, partition), mut files) in hours {
            if hour.end_ms().saturating_add(shared.config.compact_after_ms as i64) > now_ms {
                continue;
            }
            report.hours_examined += 1;
            files.sort_by_key(|(name, _)| (name.first, std::cmp::Reverse(name.last)));
            // Leftovers of a crashed run: within the range of another file.
            let mut kept: Vec<(FileName, Listed)> = Vec::new();
            for (name, file) in files {
                if kept.iter().any(|(outer, _)| name.within(outer)) {
                    shared.store.delete(&file.path).await?;
                    report.leftovers_deleted += 1;
                } else {
                    kept.push((name, file));
                }
            }
            let committed = shared.log.groups().committed(GROUP, stream, partition).unwrap_or(0);
            let small = shared.config.roll_bytes / 2;
            let mut run: Vec<(FileName, Listed)> = Vec::new();
            let mut runs = Vec::new();
            for (name, file) in kept {
                let fits = run.iter().map(|(_, f)| f.size).sum::<u64>() + file.size <= shared.config.roll_bytes;
                if file.size < small && name.last < committed && fits {
                    run.push((name, file));
                    continue;
                }
                runs.push(std::mem::take(&mut run));
                if file.size < small && name.last < committed {
                    run.push((name, file));
                }
            }
            runs.push(run);
            for run in runs.into_iter().filter(|run| run.len() >= 2) {
                report.rows += merge(shared, stream, hour, partition, &run).await?;
                report.files_merged += run.len();
                report.files_written += 1;
            }
        }
    }
    Ok(report)
}

/// Writes one file with the rows of `inputs` (adjacent, in offset order), then deletes them.
async fn merge(
    shared: &Arc<Shared>,
    stream: &str,
    hour: Hour,
    partition: u32,
    inputs: &[(FileName, Listed)],
) -> Result<u64> {
    let mut schemas = Vec::new();
    for (_, file) in inputs {
        schemas.push(shared.queries.file_schema(&file.path, file.size).await?);
    }
    let schema = crate::query::union_schema(&schemas);
    let name = FileName { partition, first: inputs[0].0.first, last: inputs[inputs.len() - 1].0.last };
    let path = crate::layout::file_path(stream, hour, &name);
    let spool = shared.store.spool_dir();
    tokio::fs::create_dir_all(&spool).await.at(&spool)?;
    let spool_path = spool.join(format!("compact.{stream}.{partition}.{}.{}.tmp", name.first, std::process::id()));
    let metadata = vec![
        KeyValue::new("strom.stream".into(), stream.to_string()),
        KeyValue::new("strom.partition".into(), partition.to_string()),
        KeyValue::new("strom.first_offset".into(), name.first.to_string()),
        KeyValue::new("strom.last_offset".into(), name.last.to_string()),
        KeyValue::new("strom.compacted_from".into(), inputs.len().to_string()),
    ];
    let file = std::fs::File::create(&spool_path).at(&spool_path)?;
    let mut writer = ArrowWriter::try_new(
        file.try_clone().at(&spool_path)?,
        schema.clone(),
        Some(writer_properties(&shared.config, Some(metadata))),
    )?;
    let mut rows = 0;
    for (_, input) in inputs {
        // One input in memory at a time: at most roll_bytes / 2 of Parquet.
        let bytes = shared.store.read(&input.path).await?;
        let schema = schema.clone();
        let (written, back) = crate::store::blocking(move || {
            let reader = ParquetRecordBatchReaderBuilder::try_new(bytes)?.build()?;
            let mut rows = 0;
            for batch in reader {
                let batch = conform(&batch?, &schema)?;
                rows += batch.num_rows() as u64;
                writer.write(&batch)?;
            }
            Ok((rows, writer))
        })
        .await?;
        writer = back;
        rows += written;
    }
    writer.close()?;
    file.sync_all().at(&spool_path)?;
    shared.store.publish(&spool_path, &path).await?;
    for (_, input) in inputs {
        shared.store.delete(&input.path).await?;
    }
    tracing::info!(%path, inputs = inputs.len(), rows, "lake files merged");
    metrics::counter!("strom_lake_compacted_files_total", "stream" => stream.to_string())
        .increment(inputs.len() as u64);
    Ok(rows)
}

/// A batch in the merged schema: missing columns as nulls, disagreeing types cast.
fn conform(batch: &RecordBatch, schema: &SchemaRef) -> Result<RecordBatch> {
    let columns = schema
        .fields()
        .iter()
        .map(|field| match batch.column_by_name(field.name()) {
            Some(column) if column.data_type() == field.data_type() => Ok(column.clone()),
            Some(column) => arrow::compute::cast(column, field.data_type()),
            None => Ok(new_null_array(field.data_type(), batch.num_rows())),
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(RecordBatch::try_new(schema.clone(), columns)?)
}

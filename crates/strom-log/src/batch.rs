//! Record batches in Kafka's RecordBatch v2 format, the on-disk format of every segment.
//!
//! Encoding and decoding of records is `kafka-protocol`'s; this module adds the small part the
//! log needs on every append and read without decoding records: the fixed 61-byte header.

use bytes::{Bytes, BytesMut};
use kafka_protocol::indexmap::IndexMap;
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::records::{
    Compression, Record, RecordBatchDecoder, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
};

use crate::error::{LogError, Result};
use crate::limits::{BATCH_BYTES_MAX, BATCH_RECORDS_MAX};

/// Bytes of the batch header (up to and including the record count).
pub const HEADER_BYTES: usize = 61;
/// Bytes before the `batchLength` field ends: base offset (8) and the length itself (4).
pub const LENGTH_PREFIX_BYTES: usize = 12;
const MAGIC_POSITION: usize = 16;
const CRC_POSITION: usize = 17;
/// The CRC covers everything from the attributes to the end of the batch.
const CRC_COVERAGE_START: usize = 21;

/// The fields of a batch header the log uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BatchHeader {
    pub base_offset: u64,
    /// Bytes of the whole batch, header included.
    pub size_bytes: usize,
    pub last_offset_delta: u32,
    pub base_timestamp_ms: i64,
    pub max_timestamp_ms: i64,
    pub record_count: u32,
    pub crc: u32,
}

impl BatchHeader {
    pub fn last_offset(&self) -> u64 {
        self.base_offset + u64::from(self.last_offset_delta)
    }

    pub fn next_offset(&self) -> u64 {
        self.last_offset() + 1
    }

    /// Parses the header at the start of `bytes`. `bytes` needs at least `HEADER_BYTES`.
    pub fn parse(bytes: &[u8]) -> Result<BatchHeader, String> {
        if bytes.len() < HEADER_BYTES {
            return Err(format!("{} bytes are too few for a batch header", bytes.len()));
        }
        let base_offset = i64::from_be_bytes(array(bytes, 0));
        let batch_length = i32::from_be_bytes(array(bytes, 8));
        let magic = bytes[MAGIC_POSITION] as i8;
        let crc = u32::from_be_bytes(array(bytes, CRC_POSITION));
        let last_offset_delta = i32::from_be_bytes(array(bytes, 23));
        let base_timestamp_ms = i64::from_be_bytes(array(bytes, 27));
        let max_timestamp_ms = i64::from_be_bytes(array(bytes, 35));
        let record_count = i32::from_be_bytes(array(bytes, 57));
        if magic != 2 {
            return Err(format!("magic byte {magic}, expected 2"));
        }
        if base_offset < 0 {
            return Err(format!("negative base offset {base_offset}"));
        }
        let size_bytes = usize::try_from(batch_length)
            .ok()
            .map(|length| length + LENGTH_PREFIX_BYTES)
            .filter(|size| (HEADER_BYTES..=BATCH_BYTES_MAX).contains(size))
            .ok_or_else(|| format!("batch length {batch_length} out of bounds"))?;
        if last_offset_delta < 0 || record_count < 0 {
            return Err(format!("negative last offset delta {last_offset_delta} or record count {record_count}"));
        }
        Ok(BatchHeader {
            base_offset: base_offset as u64,
            size_bytes,
            last_offset_delta: last_offset_delta as u32,
            base_timestamp_ms,
            max_timestamp_ms,
            record_count: record_count as u32,
            crc,
        })
    }
}

fn array<const N: usize>(bytes: &[u8], at: usize) -> [u8; N] {
    let mut out = [0u8; N];
    out.copy_from_slice(&bytes[at..at + N]);
    out
}

/// True when the batch's stored CRC-32C matches its content.
pub fn crc_matches(batch: &[u8], header: &BatchHeader) -> bool {
    batch.len() == header.size_bytes && crc32c::crc32c(&batch[CRC_COVERAGE_START..]) == header.crc
}

/// Writes `base_offset` into an encoded batch. The base offset is outside the CRC's coverage,
/// which is what lets a batch be encoded before its offsets are known (as Kafka brokers do).
pub(crate) fn set_base_offset(batch: &mut [u8], base_offset: u64) {
    batch[..8].copy_from_slice(&(base_offset as i64).to_be_bytes());
}

/// One record to append.
#[derive(Clone, Debug, Default)]
pub struct RecordIn {
    pub key: Option<Bytes>,
    pub value: Option<Bytes>,
    pub timestamp_ms: i64,
    pub headers: Vec<(String, Bytes)>,
}

/// One record read back.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecordOut {
    pub offset: u64,
    pub timestamp_ms: i64,
    pub key: Option<Bytes>,
    pub value: Option<Bytes>,
    pub headers: Vec<(String, Option<Bytes>)>,
}

/// A batch encoded and checked, ready to append: the only thing `Partition::append` takes.
/// Its base offset is assigned by the partition's writer.
#[derive(Clone, Debug)]
pub struct EncodedBatch {
    pub(crate) bytes: BytesMut,
    pub(crate) header: BatchHeader,
}

impl EncodedBatch {
    /// Encodes records into one RecordBatch v2 (uncompressed, no producer id).
    pub fn encode(records: &[RecordIn]) -> Result<EncodedBatch> {
        if records.is_empty() || records.len() > BATCH_RECORDS_MAX {
            return Err(LogError::InvalidBatch(format!(
                "a batch holds 1 to {BATCH_RECORDS_MAX} records, not {}",
                records.len()
            )));
        }
        let wire: Vec<Record> = records
            .iter()
            .enumerate()
            .map(|(index, record)| Record {
                transactional: false,
                control: false,
                delete_horizon: false,
                partition_leader_epoch: 0,
                producer_id: -1,
                producer_epoch: -1,
                timestamp_type: TimestampType::Creation,
                offset: index as i64,
                // The encoder starts a new batch whenever `offset - sequence` changes; with
                // sequence = offset - 1 it stays one batch and the base sequence is -1, which
                // is what Kafka writes for producers without idempotence.
                sequence: index as i32 - 1,
                timestamp: record.timestamp_ms,
                key: record.key.clone(),
                value: record.value.clone(),
                headers: record
                    .headers
                    .iter()
                    .map(|(name, value)| (StrBytes::from_string(name.clone()), Some(value.clone())))
                    .collect::<IndexMap<_, _>>(),
            })
            .collect();
        let size_hint: usize = records
            .iter()
            .map(|r| 24 + r.key.as_ref().map_or(0, Bytes::len) + r.value.as_ref().map_or(0, Bytes::len))
            .sum();
        let mut bytes = BytesMut::with_capacity(HEADER_BYTES + size_hint);
        let options = RecordEncodeOptions { version: 2, compression: Compression::None };
        RecordBatchEncoder::encode(&mut bytes, wire.iter(), &options)
            .map_err(|error| LogError::InvalidBatch(error.to_string()))?;
        EncodedBatch::from_bytes(bytes)
    }

    /// Takes a batch encoded elsewhere (a Kafka producer's), checking its header and CRC.
    pub fn from_bytes(bytes: BytesMut) -> Result<EncodedBatch> {
        let header = BatchHeader::parse(&bytes).map_err(LogError::InvalidBatch)?;
        if header.size_bytes != bytes.len() {
            return Err(LogError::InvalidBatch(format!(
                "the header says {} bytes, the batch has {}",
                header.size_bytes,
                bytes.len()
            )));
        }
        if !crc_matches(&bytes, &header) {
            return Err(LogError::InvalidBatch("CRC-32C mismatch".into()));
        }
        if header.record_count == 0 || header.record_count > header.last_offset_delta + 1 {
            return Err(LogError::InvalidBatch(format!(
                "{} records for {} offsets",
                header.record_count,
                header.last_offset_delta + 1
            )));
        }
        Ok(EncodedBatch { bytes, header })
    }

    pub fn record_count(&self) -> u32 {
        self.header.record_count
    }

    /// Offsets the batch takes in the partition.
    pub fn offset_count(&self) -> u64 {
        u64::from(self.header.last_offset_delta) + 1
    }

    pub fn size_bytes(&self) -> usize {
        self.bytes.len()
    }

    pub fn max_timestamp_ms(&self) -> i64 {
        self.header.max_timestamp_ms
    }
}

/// Decodes the records of one stored batch (already CRC-checked by the read path).
pub fn decode_records(batch: Bytes) -> Result<Vec<RecordOut>, String> {
    let mut buf = batch;
    let set = RecordBatchDecoder::decode(&mut buf).map_err(|error| error.to_string())?;
    Ok(set
        .records
        .into_iter()
        .map(|record| RecordOut {
            offset: record.offset as u64,
            timestamp_ms: record.timestamp,
            key: record.key,
            value: record.value,
            headers: record.headers.into_iter().map(|(k, v)| (k.to_string(), v)).collect(),
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(value: &str, timestamp_ms: i64) -> RecordIn {
        RecordIn {
            key: Some(Bytes::from_static(b"k")),
            value: Some(Bytes::copy_from_slice(value.as_bytes())),
            timestamp_ms,
            headers: vec![("h".into(), Bytes::from_static(b"v"))],
        }
    }

    #[test]
    fn encodes_one_batch_and_reads_it_back_at_the_assigned_offset() {
        let records = [record("a", 1_000), record("bb", 3_000), record("ccc", 2_000)];
        let mut batch = EncodedBatch::encode(&records).unwrap();
        assert_eq!(batch.record_count(), 3);
        assert_eq!(batch.offset_count(), 3);
        assert_eq!(batch.max_timestamp_ms(), 3_000);
        set_base_offset(&mut batch.bytes, 40);
        let header = BatchHeader::parse(&batch.bytes).unwrap();
        assert_eq!(header.base_offset, 40);
        assert!(crc_matches(&batch.bytes, &header), "the base offset is outside the CRC");
        let out = decode_records(batch.bytes.freeze()).unwrap();
        assert_eq!(out.iter().map(|r| r.offset).collect::<Vec<_>>(), [40, 41, 42]);
        assert_eq!(out[1].timestamp_ms, 3_000);
        assert_eq!(out[2].value.as_deref(), Some(&b"ccc"[..]));
        assert_eq!(out[0].headers, [("h".to_string(), Some(Bytes::from_static(b"v")))]);
    }

    #[test]
    fn timestamp_deltas_beyond_24_days_survive() {
        // kafka-protocol 0.17 decoded the delta as a 32-bit varint and corrupted this case.
        let day_ms = 86_400_000;
        let records = [record("a", 0), record("b", 40 * day_ms)];
        let batch = EncodedBatch::encode(&records).unwrap();
        let out = decode_records(batch.bytes.freeze()).unwrap();
        assert_eq!(out[1].timestamp_ms, 40 * day_ms);
    }

    #[test]
    fn a_flipped_bit_fails_the_crc() {
        let batch = EncodedBatch::encode(&[record("hello", 5)]).unwrap();
        let mut bytes = batch.bytes.clone();
        let last = bytes.len() - 1;
        bytes[last] ^= 0x10;
        assert!(EncodedBatch::from_bytes(bytes).is_err());
    }

    #[test]
    fn refuses_empty_batches_and_bad_headers() {
        assert!(EncodedBatch::encode(&[]).is_err());
        assert!(BatchHeader::parse(&[0u8; 10]).is_err());
        assert!(BatchHeader::parse(&[0u8; HEADER_BYTES]).is_err(), "magic 0");
    }
}

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
const LEADER_EPOCH_POSITION: usize = 12;
const MAGIC_POSITION: usize = 16;
const CRC_POSITION: usize = 17;
const ATTRIBUTES_POSITION: usize = 21;
const PRODUCER_ID_POSITION: usize = 43;
const PRODUCER_EPOCH_POSITION: usize = 51;
const BASE_SEQUENCE_POSITION: usize = 53;
/// Attribute bits (Kafka's `DefaultRecordBatch`): compression codec, transactional, control.
const ATTRIBUTE_COMPRESSION_MASK: i16 = 0x07;
const ATTRIBUTE_TRANSACTIONAL: i16 = 0x10;
const ATTRIBUTE_CONTROL: i16 = 0x20;
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
    /// Compression codec (0 none, 1 gzip, 2 snappy, 3 lz4, 4 zstd) and flags.
    pub attributes: i16,
    /// The idempotent producer's id, epoch and first sequence; -1 for other producers.
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub base_sequence: i32,
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
            attributes: i16::from_be_bytes(array(bytes, ATTRIBUTES_POSITION)),
            producer_id: i64::from_be_bytes(array(bytes, PRODUCER_ID_POSITION)),
            producer_epoch: i16::from_be_bytes(array(bytes, PRODUCER_EPOCH_POSITION)),
            base_sequence: i32::from_be_bytes(array(bytes, BASE_SEQUENCE_POSITION)),
        })
    }

    /// The compression codec: 0 none, 1 gzip, 2 snappy, 3 lz4, 4 zstd.
    pub fn compression(&self) -> u8 {
        (self.attributes & ATTRIBUTE_COMPRESSION_MASK) as u8
    }

    pub fn is_transactional(&self) -> bool {
        self.attributes & ATTRIBUTE_TRANSACTIONAL != 0
    }

    pub fn is_control(&self) -> bool {
        self.attributes & ATTRIBUTE_CONTROL != 0
    }

    /// The sequence of the batch's last record (sequences wrap at `i32::MAX`, as in Kafka).
    pub fn last_sequence(&self) -> i32 {
        if self.base_sequence < 0 {
            return self.base_sequence;
        }
        let last = i64::from(self.base_sequence) + i64::from(self.last_offset_delta);
        (last % (i64::from(i32::MAX) + 1)) as i32
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

/// Sets a whole batch's compression codec bits and its length field from its size, and
/// rewrites its CRC-32C: a batch whose records were (de)compressed.
pub(crate) fn set_codec(batch: &mut [u8], codec: u8) {
    let attributes = i16::from_be_bytes(array(batch, ATTRIBUTES_POSITION)) & !ATTRIBUTE_COMPRESSION_MASK
        | i16::from(codec) & ATTRIBUTE_COMPRESSION_MASK;
    batch[ATTRIBUTES_POSITION..ATTRIBUTES_POSITION + 2].copy_from_slice(&attributes.to_be_bytes());
    let length = (batch.len() - LENGTH_PREFIX_BYTES) as i32;
    batch[8..LENGTH_PREFIX_BYTES].copy_from_slice(&length.to_be_bytes());
    reseal(batch);
}

/// Rewrites a batch's CRC-32C after bytes it covers changed.
pub(crate) fn reseal(batch: &mut [u8]) {
    let crc = crc32c::crc32c(&batch[CRC_COVERAGE_START..]);
    batch[CRC_POSITION..CRC_POSITION + 4].copy_from_slice(&crc.to_be_bytes());
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

    /// Takes a batch a Kafka producer built, as it will be stored: header and CRC-32C checked,
    /// every record walked (lengths, varints, offset deltas 0, 1, 2, ..., UTF-8 header keys)
    /// without allocating, so that reading it back can never fail or allocate by a count the
    /// producer chose. Only uncompressed, non-transactional data batches are taken (a
    /// compressed one is first decompressed: `compression::decompress_batch`). The
    /// producer id, epoch and sequence are kept; the partition leader epoch (outside the CRC)
    /// is set to 0, the only epoch Strom has.
    pub fn from_client(mut bytes: BytesMut) -> Result<EncodedBatch> {
        let invalid = |why: String| LogError::InvalidBatch(why);
        let header = BatchHeader::parse(&bytes).map_err(invalid)?;
        if header.size_bytes != bytes.len() {
            return Err(invalid(format!("the header says {} bytes, the batch has {}", header.size_bytes, bytes.len())));
        }
        if !crc_matches(&bytes, &header) {
            return Err(invalid("CRC-32C mismatch".into()));
        }
        if header.compression() != 0 {
            return Err(invalid(format!("compression codec {} is not supported", header.compression())));
        }
        if header.is_transactional() || header.is_control() {
            return Err(invalid("transactional and control batches are not supported".into()));
        }
        if header.record_count == 0
            || header.record_count as usize > BATCH_RECORDS_MAX
            || header.record_count != header.last_offset_delta + 1
        {
            return Err(invalid(format!(
                "{} records with last offset delta {} (a producer's batch holds 1 to {BATCH_RECORDS_MAX} records at deltas 0, 1, 2, ...)",
                header.record_count, header.last_offset_delta
            )));
        }
        check_records(&bytes[HEADER_BYTES..], header.record_count).map_err(invalid)?;
        bytes[LEADER_EPOCH_POSITION..LEADER_EPOCH_POSITION + 4].copy_from_slice(&0i32.to_be_bytes());
        Ok(EncodedBatch { bytes, header })
    }

    /// The batch's bytes as they will be stored (base offset as encoded).
    pub fn as_slice(&self) -> &[u8] {
        &self.bytes
    }

    /// The batch's bytes (base offset as encoded; the writer patches it when appending).
    pub fn into_bytes(self) -> Bytes {
        self.bytes.freeze()
    }

    pub fn header(&self) -> &BatchHeader {
        &self.header
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

/// Checks the records of an uncompressed batch (Kafka's record v2 layout) by walking them:
/// `count` records at offset deltas 0..count, each exactly as long as its length says, and
/// nothing after the last.
fn check_records(mut records: &[u8], count: u32) -> Result<(), String> {
    for index in 0..count {
        let length = varint(&mut records).ok_or_else(|| format!("record {index}: bad length"))?;
        let length = usize::try_from(length)
            .ok()
            .filter(|&length| length <= records.len())
            .ok_or_else(|| format!("record {index}: length {length} beyond the batch"))?;
        let (mut record, rest) = records.split_at(length);
        records = rest;
        let bad = |what: &str| format!("record {index}: bad {what}");
        take(&mut record, 1).ok_or_else(|| bad("attributes"))?;
        varlong(&mut record).ok_or_else(|| bad("timestamp delta"))?;
        let offset_delta = varint(&mut record).ok_or_else(|| bad("offset delta"))?;
        if offset_delta != index as i32 {
            return Err(format!("record {index} has offset delta {offset_delta}"));
        }
        nullable_bytes(&mut record).ok_or_else(|| bad("key"))?;
        nullable_bytes(&mut record).ok_or_else(|| bad("value"))?;
        let headers = varint(&mut record).filter(|&n| n >= 0).ok_or_else(|| bad("header count"))?;
        for _ in 0..headers {
            let key = nullable_bytes(&mut record).flatten().ok_or_else(|| bad("header key"))?;
            std::str::from_utf8(key).map_err(|_| bad("header key (not UTF-8)"))?;
            nullable_bytes(&mut record).ok_or_else(|| bad("header value"))?;
        }
        if !record.is_empty() {
            return Err(format!("record {index} has {} bytes after its headers", record.len()));
        }
    }
    if !records.is_empty() {
        return Err(format!("{} bytes after the last record", records.len()));
    }
    Ok(())
}

fn take<'a>(bytes: &mut &'a [u8], count: usize) -> Option<&'a [u8]> {
    if bytes.len() < count {
        return None;
    }
    let (taken, rest) = bytes.split_at(count);
    *bytes = rest;
    Some(taken)
}

/// A zigzag varint of at most `max_bytes` bytes (5 for 32 bits, 10 for 64).
fn zigzag(bytes: &mut &[u8], max_bytes: usize) -> Option<i64> {
    let mut value: u64 = 0;
    for index in 0..max_bytes {
        let byte = *take(bytes, 1)?.first()?;
        value |= u64::from(byte & 0x7f) << (7 * index);
        if byte & 0x80 == 0 {
            return Some((value >> 1) as i64 ^ -((value & 1) as i64));
        }
    }
    None
}

fn varint(bytes: &mut &[u8]) -> Option<i32> {
    zigzag(bytes, 5).and_then(|value| i32::try_from(value).ok())
}

fn varlong(bytes: &mut &[u8]) -> Option<i64> {
    zigzag(bytes, 10)
}

/// A varint length and that many bytes; length -1 is null (`Some(None)`).
fn nullable_bytes<'a>(bytes: &mut &'a [u8]) -> Option<Option<&'a [u8]>> {
    match varint(bytes)? {
        -1 => Some(None),
        length if length >= 0 => take(bytes, length as usize).map(Some),
        _ => None,
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
    fn a_producer_batch_is_taken_with_its_producer_fields() {
        let mut bytes = EncodedBatch::encode(&[record("a", 1), record("b", 2)]).unwrap().bytes;
        bytes[PRODUCER_ID_POSITION..PRODUCER_ID_POSITION + 8].copy_from_slice(&7i64.to_be_bytes());
        bytes[PRODUCER_EPOCH_POSITION..PRODUCER_EPOCH_POSITION + 2].copy_from_slice(&3i16.to_be_bytes());
        bytes[BASE_SEQUENCE_POSITION..BASE_SEQUENCE_POSITION + 4].copy_from_slice(&41i32.to_be_bytes());
        bytes[LEADER_EPOCH_POSITION..LEADER_EPOCH_POSITION + 4].copy_from_slice(&(-1i32).to_be_bytes());
        reseal(&mut bytes);
        let batch = EncodedBatch::from_client(bytes).unwrap();
        let header = batch.header();
        assert_eq!((header.producer_id, header.producer_epoch, header.base_sequence), (7, 3, 41));
        assert_eq!(header.last_sequence(), 42);
        assert_eq!(&batch.bytes[LEADER_EPOCH_POSITION..LEADER_EPOCH_POSITION + 4], &[0; 4]);
        assert_eq!(decode_records(batch.bytes.freeze()).unwrap().len(), 2);
    }

    #[test]
    fn sequences_wrap_at_i32_max() {
        let mut bytes = EncodedBatch::encode(&[record("a", 1), record("b", 2)]).unwrap().bytes;
        bytes[BASE_SEQUENCE_POSITION..BASE_SEQUENCE_POSITION + 4].copy_from_slice(&i32::MAX.to_be_bytes());
        reseal(&mut bytes);
        assert_eq!(EncodedBatch::from_client(bytes).unwrap().header().last_sequence(), 0);
    }

    #[test]
    fn malformed_producer_batches_are_refused_by_the_walk() {
        let good = EncodedBatch::encode(&[record("a", 1), record("bb", 2)]).unwrap().bytes;
        assert!(EncodedBatch::from_client(good.clone()).is_ok());
        // Each case changes one thing and reseals the CRC, so only the structure check can refuse it.
        type Change = Box<dyn Fn(&mut BytesMut)>;
        let cases: Vec<(&str, Change)> = vec![
            ("gzip", Box::new(|b| b[ATTRIBUTES_POSITION + 1] |= 1)),
            ("transactional", Box::new(|b| b[ATTRIBUTES_POSITION + 1] |= 0x10)),
            ("record count above the deltas", Box::new(|b| b[60] = 3)),
            ("first record length beyond the batch", Box::new(|b| b[HEADER_BYTES] = 0x7e)),
            (
                "trailing byte",
                Box::new(|b| {
                    b.extend_from_slice(&[0]);
                    let length = (b.len() - LENGTH_PREFIX_BYTES) as i32;
                    b[8..12].copy_from_slice(&length.to_be_bytes());
                }),
            ),
        ];
        for (name, change) in cases {
            let mut bytes = good.clone();
            change(&mut bytes);
            reseal(&mut bytes);
            assert!(EncodedBatch::from_client(bytes).is_err(), "{name} was accepted");
        }
    }

    #[test]
    fn every_truncation_and_single_byte_change_is_refused_or_reads_back() {
        let good = EncodedBatch::encode(&[record("a", 1), record("bb", 2)]).unwrap().bytes;
        for at in HEADER_BYTES..good.len() {
            for value in [0x00, 0x01, 0x7f, 0x80, 0xff] {
                let mut bytes = good.clone();
                bytes[at] = value;
                reseal(&mut bytes);
                if let Ok(batch) = EncodedBatch::from_client(bytes) {
                    // What the walk lets through must decode: reads never fail on it.
                    decode_records(batch.bytes.freeze()).unwrap();
                }
            }
        }
    }

    #[test]
    fn refuses_empty_batches_and_bad_headers() {
        assert!(EncodedBatch::encode(&[]).is_err());
        assert!(BatchHeader::parse(&[0u8; 10]).is_err());
        assert!(BatchHeader::parse(&[0u8; HEADER_BYTES]).is_err(), "magic 0");
    }
}

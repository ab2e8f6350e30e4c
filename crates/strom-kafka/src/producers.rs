//! The idempotent producer: per partition and producer id, the epoch and the sequences of
//! the last `PRODUCER_BATCHES_KEPT` batches. A retried batch (same first and last sequence)
//! is not appended again: it is answered with the offset its first copy got. A gap in the
//! sequence is refused with OUT_OF_ORDER_SEQUENCE, an older epoch with INVALID_PRODUCER_EPOCH.
//!
//! After a restart the state is rebuilt from each partition's tail (the batch headers keep
//! producer id, epoch and sequence) on the partition's first idempotent produce: the last
//! `PRODUCER_TAIL_OFFSETS` offsets, at most `PRODUCER_TAIL_BYTES`. A producer whose last
//! batch is older than that window is taken at its word, as Kafka does once it has expired a
//! producer's state. Producer ids are the start time in microseconds plus a counter, so they
//! are not reused across restarts without a store.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::sync::atomic::{AtomicI64, Ordering};

use kafka_protocol::ResponseError;
use strom_log::{BatchHeader, Partition};
use tokio::sync::watch;

use crate::api::produce::Pending;
use crate::errors;
use crate::limits::{PRODUCER_BATCHES_KEPT, PRODUCER_TAIL_BYTES, PRODUCER_TAIL_OFFSETS, PRODUCERS_PER_PARTITION_MAX};

/// The base offset a batch got, once known: `None` while its append is in flight.
/// -1 when none of the batch's records went to the partition (all dead-lettered).
type Offset = Option<Result<i64, ResponseError>>;

struct Cached {
    first: i32,
    last: i32,
    offset: watch::Receiver<Offset>,
}

struct Producer {
    epoch: i16,
    batches: VecDeque<Cached>,
}

type Key = (String, u32);

pub(crate) struct Producers {
    next_id: AtomicI64,
    partitions: Mutex<HashMap<Key, HashMap<i64, Producer>>>,
}

/// What became of an idempotent batch.
pub(crate) enum Admitted {
    /// Queued; the sender is told the offset when the append completes.
    Queued(Pending, watch::Sender<Offset>),
    /// A retry of a batch already taken: its offset, now or once its append completes.
    Duplicate(watch::Receiver<Offset>),
    Refused(ResponseError, String),
}

fn next_sequence(last: i32) -> i32 {
    if last == i32::MAX { 0 } else { last + 1 }
}

impl Producers {
    pub(crate) fn new() -> Producers {
        let micros = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_micros());
        Producers { next_id: AtomicI64::new(micros as i64), partitions: Mutex::new(HashMap::new()) }
    }

    /// InitProducerId: a new id at epoch 0, or the next epoch of the id the producer has.
    pub(crate) fn init(&self, producer_id: i64, epoch: i16) -> (i64, i16) {
        if producer_id >= 0 && (0..i16::MAX - 1).contains(&epoch) {
            return (producer_id, epoch + 1);
        }
        (self.next_id.fetch_add(1, Ordering::Relaxed), 0)
    }

    /// Forgets a deleted stream's producers.
    pub(crate) fn forget(&self, stream: &str) {
        self.partitions.lock().unwrap_or_else(|e| e.into_inner()).retain(|(s, _), _| s != stream);
    }

    /// Checks the batch's sequence against the producer's and queues it, as one step: the
    /// lock is held across the (synchronous) queueing, so two copies of a batch arriving on
    /// two connections cannot both be appended.
    /// `header` is the batch as the producer sent it (its sequences); `submit` queues what is
    /// stored for it (the batch itself, or its valid records and the dead letters of the rest).
    pub(crate) fn admit(
        &self,
        stream: &str,
        partition: &Partition,
        header: BatchHeader,
        submit: impl FnOnce() -> Result<Pending, strom_log::LogError>,
    ) -> Admitted {
        let mut partitions = self.partitions.lock().unwrap_or_else(|e| e.into_inner());
        let producers =
            partitions.entry((stream.to_string(), partition.id())).or_insert_with(|| rebuild(stream, partition));
        let (first, last) = (header.base_sequence, header.last_sequence());
        if first < 0 {
            return Admitted::Refused(ResponseError::InvalidRecord, "an idempotent batch needs a sequence".into());
        }
        match producers.get_mut(&header.producer_id) {
            Some(producer) if header.producer_epoch < producer.epoch => {
                return Admitted::Refused(
                    ResponseError::InvalidProducerEpoch,
                    format!("epoch {} is older than the producer's {}", header.producer_epoch, producer.epoch),
                );
            }
            Some(producer) if header.producer_epoch > producer.epoch => {
                if first != 0 {
                    return Admitted::Refused(
                        ResponseError::OutOfOrderSequenceNumber,
                        format!("a new epoch starts at sequence 0, not {first}"),
                    );
                }
                producer.epoch = header.producer_epoch;
                producer.batches.clear();
            }
            Some(producer) => {
                if let Some(cached) = producer.batches.iter().find(|c| c.first == first && c.last == last) {
                    return Admitted::Duplicate(cached.offset.clone());
                }
                if let Some(newest) = producer.batches.back() {
                    let expected = next_sequence(newest.last);
                    if first != expected {
                        let older = producer.batches.iter().any(|c| c.first <= first && first <= c.last)
                            || (first < expected && expected - first < i32::MAX / 2);
                        let (error, why) = if older {
                            (ResponseError::DuplicateSequenceNumber, "an older batch no longer cached")
                        } else {
                            (ResponseError::OutOfOrderSequenceNumber, "a gap")
                        };
                        return Admitted::Refused(
                            error,
                            format!("sequence {first} where {expected} was expected: {why}"),
                        );
                    }
                }
            }
            None => {
                if producers.len() >= PRODUCERS_PER_PARTITION_MAX {
                    // Forget the producer heard from longest ago (the map has no order: any
                    // one is an approximation; this bound only matters under abuse).
                    if let Some(&evicted) = producers.keys().next() {
                        producers.remove(&evicted);
                    }
                }
                producers
                    .insert(header.producer_id, Producer { epoch: header.producer_epoch, batches: VecDeque::new() });
            }
        }
        let pending = match submit() {
            Ok(pending) => pending,
            Err(error) => return Admitted::Refused(errors::code(&error), error.to_string()),
        };
        let (sender, receiver) = watch::channel(None);
        if let Some(producer) = producers.get_mut(&header.producer_id) {
            if producer.batches.len() == PRODUCER_BATCHES_KEPT {
                producer.batches.pop_front();
            }
            producer.batches.push_back(Cached { first, last, offset: receiver });
        }
        Admitted::Queued(pending, sender)
    }

    /// A queued batch's append failed: forget it, so the producer's retry is taken anew.
    pub(crate) fn failed(&self, stream: &str, partition: u32, producer_id: i64, first: i32) {
        let mut partitions = self.partitions.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(producer) =
            partitions.get_mut(&(stream.to_string(), partition)).and_then(|producers| producers.get_mut(&producer_id))
        {
            producer.batches.retain(|cached| cached.first != first);
        }
    }
}

/// The producers found in the partition's tail, with their last batches (already appended).
fn rebuild(stream: &str, partition: &Partition) -> HashMap<i64, Producer> {
    let mut producers: HashMap<i64, Producer> = HashMap::new();
    let end = partition.log_end_offset();
    let from = end.saturating_sub(PRODUCER_TAIL_OFFSETS).max(partition.log_start_offset());
    // Blocking file reads on the connection's task: bounded by the window, and once per
    // partition per process.
    let read = match partition.read(from, usize::MAX, PRODUCER_TAIL_BYTES) {
        Ok(read) => read,
        Err(error) => {
            tracing::warn!(stream, partition = partition.id(), %error, "cannot rebuild producer state; starting empty");
            return producers;
        }
    };
    for batch in read.batches {
        let Ok(header) = BatchHeader::parse(&batch) else { continue };
        if header.producer_id < 0 || header.base_sequence < 0 {
            continue;
        }
        let producer = producers
            .entry(header.producer_id)
            .or_insert_with(|| Producer { epoch: header.producer_epoch, batches: VecDeque::new() });
        if header.producer_epoch != producer.epoch {
            producer.epoch = header.producer_epoch;
            producer.batches.clear();
        }
        if producer.batches.len() == PRODUCER_BATCHES_KEPT {
            producer.batches.pop_front();
        }
        let (_, offset) = watch::channel(Some(Ok(header.base_offset as i64)));
        producer.batches.push_back(Cached { first: header.base_sequence, last: header.last_sequence(), offset });
    }
    if !producers.is_empty() {
        tracing::info!(
            stream,
            partition = partition.id(),
            producers = producers.len(),
            "producer state rebuilt from the log tail"
        );
    }
    producers
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use bytes::{Bytes, BytesMut};
    use strom_log::{Durability, EncodedBatch, Log, LogConfig, RecordIn, StreamConfig};

    use super::*;

    /// A batch of `count` records as an idempotent producer builds it.
    fn batch(producer_id: i64, epoch: i16, first_sequence: i32, count: usize) -> EncodedBatch {
        let records: Vec<RecordIn> =
            (0..count).map(|i| RecordIn { value: Some(Bytes::from(format!("r{i}"))), ..RecordIn::default() }).collect();
        let mut bytes: BytesMut = BytesMut::from(&EncodedBatch::encode(&records).unwrap().into_bytes()[..]);
        bytes[43..51].copy_from_slice(&producer_id.to_be_bytes());
        bytes[51..53].copy_from_slice(&epoch.to_be_bytes());
        bytes[53..57].copy_from_slice(&first_sequence.to_be_bytes());
        let crc = crc32c::crc32c(&bytes[21..]);
        bytes[17..21].copy_from_slice(&crc.to_be_bytes());
        EncodedBatch::from_client(bytes).unwrap()
    }

    async fn offset_of(admitted: Admitted) -> Result<i64, ResponseError> {
        match admitted {
            Admitted::Queued(pending, sender) => {
                let offset = pending.await.map_err(|e| errors::code(&e));
                let _ = sender.send(Some(offset));
                offset
            }
            Admitted::Duplicate(mut receiver) => receiver
                .wait_for(Option::is_some)
                .await
                .map(|o| (*o).unwrap())
                .unwrap_or(Err(ResponseError::Unknown(-1))),
            Admitted::Refused(code, _) => Err(code),
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn retries_are_not_appended_twice_gaps_and_old_epochs_are_refused_and_state_survives_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let log = Log::open(LogConfig::new(dir.path())).unwrap();
        log.create_stream("s", StreamConfig::default()).await.unwrap();
        let stream = log.stream("s").unwrap();
        let partition = stream.partition(0).unwrap();
        let producers = Producers::new();
        let admit = |producers: &Producers, b: EncodedBatch| {
            let header = *b.header();
            producers.admit("s", partition, header, || {
                partition.submit(b, Durability::Sync).map(crate::api::produce::pending)
            })
        };

        assert_eq!(offset_of(admit(&producers, batch(7, 0, 0, 2))).await, Ok(0));
        assert_eq!(offset_of(admit(&producers, batch(7, 0, 2, 3))).await, Ok(2));
        // A retry of either batch is answered with its first offset and not appended.
        assert_eq!(offset_of(admit(&producers, batch(7, 0, 0, 2))).await, Ok(0));
        assert_eq!(offset_of(admit(&producers, batch(7, 0, 2, 3))).await, Ok(2));
        assert_eq!(partition.log_end_offset(), 5);
        // A gap, and an older epoch, are refused.
        assert_eq!(offset_of(admit(&producers, batch(7, 0, 9, 1))).await, Err(ResponseError::OutOfOrderSequenceNumber));
        assert_eq!(offset_of(admit(&producers, batch(7, 1, 0, 1))).await, Ok(5), "a new epoch starts at 0");
        assert_eq!(offset_of(admit(&producers, batch(7, 0, 5, 1))).await, Err(ResponseError::InvalidProducerEpoch));
        // Another producer is independent.
        assert_eq!(offset_of(admit(&producers, batch(8, 0, 0, 1))).await, Ok(6));

        // A restart: the state is rebuilt from the partition's tail.
        drop(producers);
        log.close().await;
        drop(stream);
        drop(log);
        let log: Arc<Log> = Log::open(LogConfig::new(dir.path())).unwrap();
        let stream = log.stream("s").unwrap();
        let partition = stream.partition(0).unwrap();
        let producers = Producers::new();
        let admit = |producers: &Producers, b: EncodedBatch| {
            let header = *b.header();
            producers.admit("s", partition, header, || {
                partition.submit(b, Durability::Sync).map(crate::api::produce::pending)
            })
        };
        assert_eq!(offset_of(admit(&producers, batch(7, 1, 0, 1))).await, Ok(5), "a retry after the restart");
        assert_eq!(offset_of(admit(&producers, batch(8, 0, 0, 1))).await, Ok(6));
        assert_eq!(offset_of(admit(&producers, batch(7, 1, 2, 1))).await, Err(ResponseError::OutOfOrderSequenceNumber));
        assert_eq!(offset_of(admit(&producers, batch(7, 1, 1, 1))).await, Ok(7));
        assert_eq!(partition.log_end_offset(), 8);
    }

    #[test]
    fn producer_ids_are_new_and_epochs_are_bumped() {
        let producers = Producers::new();
        let (a, epoch) = producers.init(-1, -1);
        assert_eq!(epoch, 0);
        let (b, _) = producers.init(-1, -1);
        assert_ne!(a, b);
        assert_eq!(producers.init(a, 0), (a, 1), "an existing producer gets its next epoch");
    }
}

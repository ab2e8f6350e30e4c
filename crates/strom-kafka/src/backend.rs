//! The Kafka backend: Strom's log kept on an Apache Kafka cluster (or any broker that speaks
//! its protocol), through librdkafka (`rdkafka`). It implements `strom_log::Remote`, so the
//! log's API, and everything above it, is the same as on the embedded log.
//!
//! Streams are topics named `<topic_prefix><stream>`; consumer groups of Strom's API and
//! internals are Kafka groups named `<topic_prefix><group>`, so Kafka's own tools show their
//! offsets. Appends go through one idempotent producer with acks=all: an acknowledged
//! append is on every in-sync replica, and a retried send is not written twice. Reads use
//! one assigned (not subscribed) consumer per partition being read, kept while it is read
//! in order.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::{ClientContext, DefaultClientContext};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, Headers, Message, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::{Offset, TopicPartitionList};
use serde::Deserialize;
use strom_log::{
    Appended, EncodedBatch, LogError, Membership, RecordOut, Remote, RemoteFuture, ShareHandle, StreamConfig,
    decode_records,
};

/// Partitions read at once, each with its own consumer (and librdkafka threads); the least
/// recently used is closed beyond it.
pub const READERS_MAX: usize = 64;
/// Groups whose offsets are committed or fetched through a consumer kept open.
pub const GROUP_CLIENTS_MAX: usize = 64;
/// The group id of readers' consumers (never joined, never committed to).
const READERS_GROUP: &str = "strom.readers";
/// Records a reader's consumer prefetches per partition, in KiB (librdkafka's default is 64 MiB).
const READER_QUEUE_KBYTES: &str = "4096";
/// How long a read waits for its first record when the log end says there is one.
const READ_FIRST_RECORD_MS: u64 = 5000;
/// How long an append keeps trying to queue the rest of its records when the producer's
/// queue fills in the middle of it (its first records are already queued and cannot be
/// taken back, so the rest must follow rather than fail).
const ENQUEUE_RETRY_MS: u64 = 5000;
/// A shared group's member is out of the group when it has not been heard from for this long
/// (librdkafka `session.timeout.ms`, unless `log.kafka.properties` sets it): how long the
/// partitions of a process that died wait before another process takes them.
const SHARE_SESSION_TIMEOUT_MS: u64 = 10_000;
/// How often a shared group's member serves its rebalance callbacks.
const SHARE_POLL_MS: u64 = 100;
/// librdkafka properties Strom sets itself and the configuration may not change.
const FIXED_PROPERTIES: [&str; 8] = [
    "bootstrap.servers",
    "enable.idempotence",
    "acks",
    "group.id",
    "enable.auto.commit",
    "enable.auto.offset.store",
    "enable.partition.eof",
    "isolation.level",
];

/// `[log.kafka]` in strom.toml: where the cluster is and how Strom uses it.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct BackendConfig {
    /// `host:port[,host:port...]` of the cluster's brokers.
    pub bootstrap_servers: String,
    /// Put before every stream's topic name and every group's id, so that several Strom
    /// installations (or Strom and other users) share a cluster without meeting.
    pub topic_prefix: String,
    /// Replicas of the topics Strom creates; -1 takes the cluster's `default.replication.factor`.
    pub replication_factor: i16,
    /// How long a request to the cluster (metadata, watermarks, offsets, topic admin) may take.
    pub request_timeout_ms: u64,
    /// How long an append may wait for its acknowledgement (librdkafka `delivery.timeout.ms`).
    pub delivery_timeout_ms: u64,
    /// The producer waits this long to fill a batch (librdkafka `linger.ms`).
    pub linger_ms: u64,
    /// Further librdkafka properties, given to every client as they are: security
    /// (`security.protocol`, `sasl.mechanism`, `sasl.username`, `sasl.password`,
    /// `ssl.ca.location`), `client.id`, ... Those Strom sets itself are refused.
    pub properties: BTreeMap<String, String>,
}

impl Default for BackendConfig {
    fn default() -> BackendConfig {
        BackendConfig {
            bootstrap_servers: "127.0.0.1:9092".into(),
            topic_prefix: String::new(),
            replication_factor: -1,
            request_timeout_ms: 10_000,
            delivery_timeout_ms: 30_000,
            linger_ms: 2,
            properties: BTreeMap::new(),
        }
    }
}

impl BackendConfig {
    /// Checks every value; errors name the key (`log.kafka.<key>`).
    pub fn validate(&self) -> Result<(), String> {
        if self.bootstrap_servers.trim().is_empty() {
            return Err("log.kafka.bootstrap_servers is empty".into());
        }
        if !self.topic_prefix.is_empty() {
            strom_log::validate_stream_name(&self.topic_prefix)
                .map_err(|error| format!("log.kafka.topic_prefix: {error}"))?;
        }
        if self.replication_factor == 0 || self.replication_factor < -1 {
            return Err("log.kafka.replication_factor must be -1 (the cluster's default) or at least 1".into());
        }
        if !(100..=600_000).contains(&self.request_timeout_ms) {
            return Err("log.kafka.request_timeout_ms must be between 100 and 600000".into());
        }
        if !(1000..=3_600_000).contains(&self.delivery_timeout_ms) {
            return Err("log.kafka.delivery_timeout_ms must be between 1000 and 3600000".into());
        }
        if self.linger_ms > 1000 {
            return Err("log.kafka.linger_ms must be at most 1000".into());
        }
        if let Some(fixed) = self.properties.keys().find(|key| FIXED_PROPERTIES.contains(&key.as_str())) {
            return Err(format!("log.kafka.properties: {fixed:?} is set by Strom and cannot be changed"));
        }
        Ok(())
    }
}

/// Readers by (stream, partition).
type Readers = HashMap<(String, u32), Arc<Mutex<Reader>>>;

/// A reader of one partition: an assigned consumer and the offset its next message has.
struct Reader {
    consumer: BaseConsumer,
    next: Option<u64>,
    used: Instant,
}

/// Strom's log on a Kafka cluster.
pub struct KafkaBackend {
    config: BackendConfig,
    producer: FutureProducer,
    /// Held while one append's records are queued, so that two appends of this process to a
    /// partition never interleave: with no other writer on the partition, an append's
    /// records get consecutive offsets. Other processes' records may fall between them;
    /// `Appended::scattered` then gives each record's offset.
    enqueue: Mutex<()>,
    admin: AdminClient<DefaultClientContext>,
    /// Metadata, watermarks and offsets by time (no group, nothing assigned).
    metadata: BaseConsumer,
    readers: Mutex<Readers>,
    groups: Mutex<HashMap<String, (Arc<BaseConsumer>, Instant)>>,
    timeout: Duration,
}

fn remote_error(what: &str, error: impl std::fmt::Display) -> LogError {
    LogError::Remote(format!("{what}: {error}"))
}

impl KafkaBackend {
    /// Creates the clients and checks that the cluster answers (blocking: one metadata
    /// request).
    pub fn connect(config: BackendConfig) -> Result<KafkaBackend, LogError> {
        config.validate().map_err(LogError::InvalidConfig)?;
        let timeout = Duration::from_millis(config.request_timeout_ms);
        let producer: FutureProducer = config
            .client()
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("linger.ms", config.linger_ms.to_string())
            .set("delivery.timeout.ms", config.delivery_timeout_ms.to_string())
            .create()
            .map_err(|error| remote_error("cannot create the Kafka producer", error))?;
        let admin: AdminClient<DefaultClientContext> =
            config.client().create().map_err(|error| remote_error("cannot create the Kafka admin client", error))?;
        let metadata: BaseConsumer = config
            .client()
            .set("enable.auto.commit", "false")
            .create()
            .map_err(|error| remote_error("cannot create a Kafka consumer", error))?;
        metadata.fetch_metadata(None, timeout).map_err(|error| {
            remote_error(&format!("the Kafka cluster at {} does not answer", config.bootstrap_servers), error)
        })?;
        Ok(KafkaBackend {
            config,
            producer,
            enqueue: Mutex::new(()),
            admin,
            metadata,
            readers: Mutex::new(HashMap::new()),
            groups: Mutex::new(HashMap::new()),
            timeout,
        })
    }

    fn topic(&self, stream: &str) -> String {
        format!("{}{}", self.config.topic_prefix, stream)
    }

    fn group_id(&self, group: &str) -> String {
        format!("{}{}", self.config.topic_prefix, group)
    }

    fn reader(&self, stream: &str, partition: u32) -> Result<Arc<Mutex<Reader>>, LogError> {
        let mut readers = self.readers.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(reader) = readers.get(&(stream.to_string(), partition)) {
            return Ok(reader.clone());
        }
        if readers.len() >= READERS_MAX {
            // Close the least recently used one that nobody is reading with now.
            let idle = readers
                .iter()
                .filter_map(|(key, reader)| reader.try_lock().ok().map(|r| (key.clone(), r.used)))
                .min_by_key(|(_, used)| *used)
                .map(|(key, _)| key);
            match idle {
                Some(key) => {
                    readers.remove(&key);
                }
                None => {
                    return Err(LogError::Overloaded { stream: stream.to_string(), partition, queued: READERS_MAX });
                }
            }
        }
        let consumer: BaseConsumer = self
            .config
            .client()
            // librdkafka refuses to assign partitions to a consumer without a group; this
            // one never joins it (no subscription) and never commits.
            .set("group.id", self.group_id(READERS_GROUP))
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("enable.partition.eof", "true")
            .set("fetch.wait.max.ms", "100")
            .set("queued.max.messages.kbytes", READER_QUEUE_KBYTES)
            .create()
            .map_err(|error| remote_error("cannot create a Kafka consumer", error))?;
        let reader = Arc::new(Mutex::new(Reader { consumer, next: None, used: Instant::now() }));
        readers.insert((stream.to_string(), partition), reader.clone());
        Ok(reader)
    }

    fn group_client(&self, group: &str) -> Result<Arc<BaseConsumer>, LogError> {
        let mut groups = self.groups.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((client, used)) = groups.get_mut(group) {
            *used = Instant::now();
            return Ok(client.clone());
        }
        if groups.len() >= GROUP_CLIENTS_MAX
            && let Some(oldest) = groups.iter().min_by_key(|(_, (_, used))| *used).map(|(g, _)| g.clone())
        {
            groups.remove(&oldest);
        }
        let client: BaseConsumer = self
            .config
            .client()
            .set("group.id", self.group_id(group))
            .set("enable.auto.commit", "false")
            .create()
            .map_err(|error| remote_error("cannot create a Kafka consumer", error))?;
        let client = Arc::new(client);
        groups.insert(group.to_string(), (client.clone(), Instant::now()));
        Ok(client)
    }

    fn partitions_of(&self, stream: &str) -> Result<u32, LogError> {
        let topic = self.topic(stream);
        let metadata = self
            .metadata
            .fetch_metadata(Some(&topic), self.timeout)
            .map_err(|error| remote_error(&format!("metadata of {topic}"), error))?;
        match metadata.topics().first() {
            Some(found) if found.error().is_none() => Ok(found.partitions().len() as u32),
            _ => Err(LogError::StreamNotFound(stream.to_string())),
        }
    }
}

/// The context of a shared group's member: it tells the share what the group decided. On a
/// revocation librdkafka waits in `pre_rebalance` until the workers have let go (bounded), and
/// only then rejoins, so the next owner starts from what they committed.
struct ShareContext {
    handle: ShareHandle,
    topic: String,
}

impl ClientContext for ShareContext {}

impl ShareContext {
    fn partitions(&self, list: &TopicPartitionList) -> Vec<u32> {
        list.elements_for_topic(&self.topic).iter().map(|element| element.partition() as u32).collect()
    }
}

impl ConsumerContext for ShareContext {
    fn pre_rebalance(&self, consumer: &BaseConsumer<ShareContext>, rebalance: &Rebalance<'_>) {
        match rebalance {
            // Lost (this member was put out of the group): others may own them already, so
            // nothing held is published; revoked: the workers commit and stop first.
            Rebalance::Revoke(list) if consumer.assignment_lost() => self.handle.lose(&self.partitions(list)),
            Rebalance::Revoke(list) => {
                self.handle.revoke(&self.partitions(list));
            }
            Rebalance::Error(error) => {
                tracing::warn!(group = %self.handle.group(), %error, "shared group rebalance failed; the partitions are let go");
                self.handle.revoke_all();
            }
            Rebalance::Assign(_) => {}
        }
    }

    fn post_rebalance(&self, consumer: &BaseConsumer<ShareContext>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Assign(list) = rebalance {
            // The member owns the partitions; Strom's own readers read them, so it fetches nothing.
            if let Err(error) = consumer.pause(list) {
                tracing::warn!(group = %self.handle.group(), %error, "cannot pause a shared group member's partitions");
            }
            self.handle.assign(&self.partitions(list));
        }
    }
}

/// A shared group's membership: a consumer subscribed to the stream's topic, polled by a
/// thread of its own, which leaves the group when it stops.
struct KafkaMembership {
    stop: Arc<AtomicBool>,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl Membership for KafkaMembership {
    fn leave(&self) {
        self.stop.store(true, Ordering::Release);
        let thread = self.thread.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(thread) = thread {
            let _ = thread.join();
        }
    }
}

impl Drop for KafkaMembership {
    fn drop(&mut self) {
        // Without `leave` the thread still leaves the group, unwaited.
        self.stop.store(true, Ordering::Release);
    }
}

impl BackendConfig {
    fn client(&self) -> ClientConfig {
        let mut client = ClientConfig::new();
        for (key, value) in &self.properties {
            client.set(key, value);
        }
        client.set("bootstrap.servers", &self.bootstrap_servers);
        client.set("socket.timeout.ms", self.request_timeout_ms.max(10).to_string());
        client
    }
}

impl Remote for KafkaBackend {
    fn describe(&self) -> String {
        format!("kafka://{} (topics {}*)", self.config.bootstrap_servers, self.config.topic_prefix)
    }

    fn streams(&self) -> Result<Vec<(String, u32)>, LogError> {
        let metadata = self
            .metadata
            .fetch_metadata(None, self.timeout)
            .map_err(|error| remote_error("listing the Kafka cluster's topics", error))?;
        let mut streams = Vec::new();
        for topic in metadata.topics() {
            let Some(name) = topic.name().strip_prefix(&self.config.topic_prefix) else { continue };
            // Kafka's own topics (`__consumer_offsets`) and names Strom would refuse are not streams.
            if topic.error().is_some() || name.starts_with("__") || strom_log::validate_stream_name(name).is_err() {
                continue;
            }
            streams.push((name.to_string(), topic.partitions().len() as u32));
        }
        streams.sort();
        Ok(streams)
    }

    fn create_stream<'a>(&'a self, name: &'a str, config: &'a StreamConfig) -> RemoteFuture<'a, ()> {
        Box::pin(async move {
            let topic = self.topic(name);
            let bound = |value: Option<u64>| value.map_or("-1".to_string(), |v| v.to_string());
            let (retention_ms, retention_bytes) = (bound(config.retention_ms), bound(config.retention_bytes));
            let (segment_bytes, segment_ms) = (config.segment_bytes.to_string(), config.segment_ms.to_string());
            let replication = TopicReplication::Fixed(i32::from(self.config.replication_factor));
            let new_topic = NewTopic::new(&topic, config.partitions as i32, replication)
                .set("retention.ms", &retention_ms)
                .set("retention.bytes", &retention_bytes)
                .set("segment.bytes", &segment_bytes)
                .set("segment.ms", &segment_ms);
            let options = AdminOptions::new().operation_timeout(Some(self.timeout)).request_timeout(Some(self.timeout));
            let results = self
                .admin
                .create_topics([&new_topic], &options)
                .await
                .map_err(|error| remote_error(&format!("creating topic {topic}"), error))?;
            match results.into_iter().next() {
                Some(Ok(_)) => Ok(()),
                Some(Err((_, RDKafkaErrorCode::TopicAlreadyExists))) => Err(LogError::StreamExists(name.to_string())),
                Some(Err((_, RDKafkaErrorCode::InvalidConfig | RDKafkaErrorCode::InvalidPartitions))) => {
                    Err(LogError::InvalidConfig(format!("the Kafka cluster refused the settings of topic {topic}")))
                }
                Some(Err((_, code))) => Err(remote_error(&format!("creating topic {topic}"), code)),
                None => Err(LogError::Remote(format!("creating topic {topic}: no answer"))),
            }
        })
    }

    fn delete_stream<'a>(&'a self, name: &'a str) -> RemoteFuture<'a, ()> {
        Box::pin(async move {
            let topic = self.topic(name);
            let options = AdminOptions::new().operation_timeout(Some(self.timeout)).request_timeout(Some(self.timeout));
            let results = self
                .admin
                .delete_topics(&[topic.as_str()], &options)
                .await
                .map_err(|error| remote_error(&format!("deleting topic {topic}"), error))?;
            self.readers.lock().unwrap_or_else(|e| e.into_inner()).retain(|(stream, _), _| stream != name);
            match results.into_iter().next() {
                Some(Ok(_)) => Ok(()),
                Some(Err((_, RDKafkaErrorCode::UnknownTopicOrPartition))) => {
                    Err(LogError::StreamNotFound(name.to_string()))
                }
                Some(Err((_, code))) => Err(remote_error(&format!("deleting topic {topic}"), code)),
                None => Err(LogError::Remote(format!("deleting topic {topic}: no answer"))),
            }
        })
    }

    fn append(
        &self,
        stream: &str,
        partition: u32,
        batch: EncodedBatch,
    ) -> Result<RemoteFuture<'static, Appended>, LogError> {
        let records = decode_records(batch.into_bytes()).map_err(LogError::InvalidBatch)?;
        let topic = self.topic(stream);
        let mut deliveries = Vec::with_capacity(records.len());
        let _queueing = self.enqueue.lock().unwrap_or_else(|e| e.into_inner());
        for record in &records {
            let mut message =
                FutureRecord::<[u8], [u8]>::to(&topic).partition(partition as i32).timestamp(record.timestamp_ms);
            if let Some(key) = &record.key {
                message = message.key(key.as_ref());
            }
            if let Some(value) = &record.value {
                message = message.payload(value.as_ref());
            }
            if !record.headers.is_empty() {
                let headers = record
                    .headers
                    .iter()
                    .fold(OwnedHeaders::new_with_capacity(record.headers.len()), |h, (key, value)| {
                        h.insert(Header { key, value: value.as_deref() })
                    });
                message = message.headers(headers);
            }
            let started = Instant::now();
            let mut pending = message;
            let delivery = loop {
                match self.producer.send_result(pending) {
                    Ok(delivery) => break delivery,
                    Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                        if deliveries.is_empty() {
                            // Nothing of this append is queued yet: refuse it whole.
                            return Err(LogError::Overloaded { stream: stream.to_string(), partition, queued: 0 });
                        }
                        if started.elapsed() > Duration::from_millis(ENQUEUE_RETRY_MS) {
                            return Err(LogError::Remote(format!(
                                "the producer's queue stayed full: {} of {} records of an append to {topic}/{partition} were queued",
                                deliveries.len(),
                                records.len()
                            )));
                        }
                        std::thread::sleep(Duration::from_millis(1));
                        pending = back;
                    }
                    Err((error, _)) => return Err(remote_error(&format!("producing to {topic}/{partition}"), error)),
                }
            };
            deliveries.push(delivery);
        }
        Ok(Box::pin(async move {
            let mut offsets = Vec::with_capacity(deliveries.len());
            for delivery in deliveries {
                match delivery.await {
                    Ok(Ok(delivered)) => offsets.push(delivered.offset.max(0) as u64),
                    Ok(Err((error, _))) => {
                        return Err(remote_error(&format!("producing to {topic}/{partition}"), error));
                    }
                    Err(_) => {
                        return Err(LogError::Remote(format!(
                            "producing to {topic}/{partition}: the producer went away"
                        )));
                    }
                }
            }
            let (Some(&first), Some(&last)) = (offsets.first(), offsets.last()) else {
                return Err(LogError::Remote(format!("producing to {topic}/{partition}: an empty append")));
            };
            let consecutive = offsets.windows(2).all(|pair| pair[1] == pair[0] + 1);
            if consecutive {
                return Ok(Appended::consecutive(first, last));
            }
            // Another process's records fell between this append's (collectors share
            // partitions): each record's own offset is reported.
            let base = offsets.iter().copied().min().unwrap_or(first);
            let top = offsets.iter().copied().max().unwrap_or(last);
            Ok(Appended { base_offset: base, last_offset: top, scattered: Some(offsets.into()) })
        }))
    }

    fn read(
        &self,
        stream: &str,
        partition: u32,
        from: u64,
        end: u64,
        max_records: usize,
        max_bytes: usize,
    ) -> Result<Vec<RecordOut>, LogError> {
        let topic = self.topic(stream);
        let reader = self.reader(stream, partition)?;
        let mut reader = reader.lock().unwrap_or_else(|e| e.into_inner());
        reader.used = Instant::now();
        if reader.next != Some(from) {
            let mut assignment = TopicPartitionList::new();
            assignment
                .add_partition_offset(&topic, partition as i32, Offset::Offset(from as i64))
                .map_err(|error| remote_error("assigning a partition", error))?;
            reader
                .consumer
                .assign(&assignment)
                .map_err(|error| remote_error(&format!("reading {topic}/{partition}"), error))?;
            reader.next = Some(from);
        }
        let deadline = Instant::now() + Duration::from_millis(READ_FIRST_RECORD_MS);
        let (mut records, mut bytes) = (Vec::new(), 0usize);
        loop {
            // The first record is waited for; after it, only what is already fetched is taken.
            let wait = match records.is_empty() {
                true => deadline.saturating_duration_since(Instant::now()),
                false => Duration::ZERO,
            };
            match reader.consumer.poll(wait) {
                None => {
                    if !records.is_empty() || Instant::now() >= deadline {
                        break;
                    }
                }
                Some(Err(KafkaError::PartitionEOF(_))) => {
                    if !records.is_empty() || Instant::now() >= deadline {
                        break;
                    }
                }
                Some(Err(KafkaError::OffsetFetch(_) | KafkaError::ConsumerCommit(_))) => {}
                Some(Err(error)) => {
                    reader.next = None;
                    return Err(remote_error(&format!("reading {topic}/{partition} at {from}"), error));
                }
                Some(Ok(message)) => {
                    let offset = message.offset().max(0) as u64;
                    if offset < from {
                        continue;
                    }
                    let key = message.key().map(bytes::Bytes::copy_from_slice);
                    let value = message.payload().map(bytes::Bytes::copy_from_slice);
                    let headers = message.headers().map_or_else(Vec::new, |headers| {
                        headers
                            .iter()
                            .map(|header| (header.key.to_string(), header.value.map(bytes::Bytes::copy_from_slice)))
                            .collect()
                    });
                    bytes += key.as_ref().map_or(0, |k| k.len()) + value.as_ref().map_or(0, |v| v.len());
                    let timestamp_ms = message.timestamp().to_millis().unwrap_or(0);
                    records.push(RecordOut { offset, timestamp_ms, key, value, headers });
                    reader.next = Some(offset + 1);
                    if records.len() >= max_records || bytes >= max_bytes || offset + 1 >= end {
                        break;
                    }
                }
            }
        }
        Ok(records)
    }

    fn watermarks(&self, stream: &str, partition: u32) -> Result<(u64, u64), LogError> {
        let topic = self.topic(stream);
        match self.metadata.fetch_watermarks(&topic, partition as i32, self.timeout) {
            Ok((low, high)) => Ok((low.max(0) as u64, high.max(0) as u64)),
            Err(KafkaError::MetadataFetch(RDKafkaErrorCode::UnknownTopicOrPartition)) => {
                Err(LogError::PartitionNotFound { stream: stream.to_string(), partition })
            }
            Err(error) => Err(remote_error(&format!("watermarks of {topic}/{partition}"), error)),
        }
    }

    fn offset_for_timestamp(&self, stream: &str, partition: u32, timestamp_ms: i64) -> Result<Option<u64>, LogError> {
        let topic = self.topic(stream);
        let mut asked = TopicPartitionList::new();
        asked
            .add_partition_offset(&topic, partition as i32, Offset::Offset(timestamp_ms))
            .map_err(|error| remote_error("asking an offset by time", error))?;
        let answer = self
            .metadata
            .offsets_for_times(asked, self.timeout)
            .map_err(|error| remote_error(&format!("offset by time of {topic}/{partition}"), error))?;
        let found = answer.find_partition(&topic, partition as i32).map(|element| element.offset());
        Ok(match found {
            Some(Offset::Offset(offset)) if offset >= 0 => Some(offset as u64),
            _ => None,
        })
    }

    fn commit(&self, group: &str, stream: &str, offsets: &[(u32, u64)]) -> Result<(), LogError> {
        let topic = self.topic(stream);
        let mut list = TopicPartitionList::new();
        for &(partition, offset) in offsets {
            list.add_partition_offset(&topic, partition as i32, Offset::Offset(offset as i64))
                .map_err(|error| remote_error("committing offsets", error))?;
        }
        let client = self.group_client(group)?;
        client
            .commit(&list, CommitMode::Sync)
            .map_err(|error| LogError::GroupStore(format!("committing {group} on {topic}: {error}")))
    }

    fn committed(&self, group: &str, stream: &str) -> Result<Vec<(u32, u64)>, LogError> {
        let topic = self.topic(stream);
        let partitions = self.partitions_of(stream)?;
        let mut list = TopicPartitionList::new();
        for partition in 0..partitions {
            list.add_partition(&topic, partition as i32);
        }
        let client = self.group_client(group)?;
        let answer = client
            .committed_offsets(list, self.timeout)
            .map_err(|error| LogError::GroupStore(format!("offsets of {group} on {topic}: {error}")))?;
        Ok(answer
            .elements()
            .iter()
            .filter_map(|element| match element.offset() {
                Offset::Offset(offset) if offset >= 0 => Some((element.partition() as u32, offset as u64)),
                _ => None,
            })
            .collect())
    }

    fn join(&self, group: &str, stream: &str, handle: ShareHandle) -> Result<Box<dyn Membership>, LogError> {
        let topic = self.topic(stream);
        let mut client = self.config.client();
        client
            .set("group.id", self.group_id(group))
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("enable.partition.eof", "false");
        let session_ms: u64 = match self.config.properties.get("session.timeout.ms") {
            Some(set) => set.parse().unwrap_or(SHARE_SESSION_TIMEOUT_MS),
            None => {
                client.set("session.timeout.ms", SHARE_SESSION_TIMEOUT_MS.to_string());
                SHARE_SESSION_TIMEOUT_MS
            }
        };
        // A member that misses its session is taken out of the group and its partitions given
        // to others while it may still work on them: heartbeats go three times per session
        // (librdkafka's default of 3 s would miss a session set below it).
        if !self.config.properties.contains_key("heartbeat.interval.ms") {
            client.set("heartbeat.interval.ms", (session_ms / 3).clamp(100, 3000).to_string());
        }
        let context = ShareContext { handle, topic: topic.clone() };
        let consumer: BaseConsumer<ShareContext> = client
            .create_with_context(context)
            .map_err(|error| remote_error("cannot create a Kafka consumer", error))?;
        consumer.subscribe(&[&topic]).map_err(|error| remote_error(&format!("joining {group} on {topic}"), error))?;
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        let group = group.to_string();
        let thread = std::thread::Builder::new()
            .name(format!("share-{group}"))
            .spawn(move || {
                tracing::info!(%group, %topic, "joined the shared group");
                while !stopped.load(Ordering::Acquire) {
                    // Messages are not wanted (the partitions are paused); polling serves the
                    // group's callbacks.
                    if let Some(Err(error)) = consumer.poll(Duration::from_millis(SHARE_POLL_MS)) {
                        tracing::warn!(%group, %topic, %error, "shared group member");
                    }
                }
                // Revokes here (the workers have stopped), then leaves the group.
                consumer.unsubscribe();
                drop(consumer);
                tracing::info!(%group, %topic, "left the shared group");
            })
            .map_err(|error| remote_error("cannot start a shared group's thread", error))?;
        Ok(Box::new(KafkaMembership { stop, thread: Mutex::new(Some(thread)) }))
    }

    fn close(&self) {
        if let Err(error) = self.producer.flush(Duration::from_millis(self.config.delivery_timeout_ms)) {
            tracing::warn!(%error, "appends to Kafka still unacknowledged at close");
        }
    }
}

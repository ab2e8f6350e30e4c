//! Any bytes as one Kafka request frame (without its length prefix): the header, then the
//! body of every served API, then every produced batch through the log's checks. Nothing
//! may panic, abort or allocate by a count the input chose. Seeds: `corpus/kafka_request/`
//! (requests captured from kcat and confluent-kafka, see crates/strom-kafka/tests/golden/).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(frame) = strom_kafka::parse_request(bytes::Bytes::copy_from_slice(data)) {
        let _ = strom_kafka::decode_only(&frame);
    }
});

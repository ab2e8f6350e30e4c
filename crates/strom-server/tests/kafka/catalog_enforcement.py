"""Catalog enforcement on Kafka produce, with confluent-kafka and its Schema Registry client.

Usage: catalog_enforcement.py BOOTSTRAP REGISTRY_URL TOPIC MODE   (MODE: reject | dead-letter)

Registers a JSON Schema for TOPIC-value, produces records serialized by Confluent's
JSONSerializer (wire format with a schema id) with an idempotent producer, then a batch mixing
valid and invalid records from a plain producer, and checks each delivery report. Prints "ok".
"""
import json
import sys

from confluent_kafka import KafkaError, Producer, SerializingProducer
from confluent_kafka.schema_registry import Schema, SchemaRegistryClient
from confluent_kafka.schema_registry.json_schema import JSONSerializer
from confluent_kafka.serialization import StringSerializer

bootstrap, registry_url, topic, mode = sys.argv[1:5]
schema = json.dumps({
    "$schema": "http://json-schema.org/draft-07/schema#",
    "type": "object",
    "properties": {"order_id": {"type": "string"}, "total": {"type": "number", "minimum": 0}},
    "required": ["order_id", "total"],
})
registry = SchemaRegistryClient({"url": registry_url})
registry.register_schema(f"{topic}-value", Schema(schema, "JSON"))

reports = []


def report(error, message):
    reports.append((error, message))


# Serialized by Confluent's serializer: magic byte, schema id, JSON. All valid.
serializing = SerializingProducer({
    "bootstrap.servers": bootstrap,
    "enable.idempotence": True,
    "acks": "all",
    "key.serializer": StringSerializer(),
    "value.serializer": JSONSerializer(schema, registry, conf={"auto.register.schemas": False, "use.latest.version": True}),
})
for i in range(20):
    serializing.produce(topic, key=f"k{i}", value={"order_id": f"o{i}", "total": i * 1.5}, on_delivery=report)
serializing.flush(30)
assert len(reports) == 20 and all(error is None for error, _ in reports), reports
reports.clear()

# One batch (one partition, one flush) of 3 valid and 2 invalid plain JSON records,
# compressed (the note makes lz4 shrink it, so librdkafka sends it compressed): the records
# are checked decompressed.
plain = Producer({
    "bootstrap.servers": bootstrap, "acks": "all", "linger.ms": 200, "enable.idempotence": True,
    "compression.type": "lz4",
})
note = "gift wrapped, deliver to the back door " * 4
values = [
    {"order_id": "a", "total": 1, "note": note},
    {"order_id": "b", "total": "twelve", "note": note},
    {"order_id": "c", "total": 3, "note": note},
    {"total": 4, "note": note},
    {"order_id": "e", "total": 5, "note": note},
]
for value in values:
    plain.produce(topic, value=json.dumps(value).encode(), partition=0, on_delivery=report)
plain.flush(30)
assert len(reports) == 5, reports
errors = [error for error, _ in reports]
if mode == "reject":
    # The whole batch is refused, nothing of it appended. The answer names the bad records
    # (record_errors): librdkafka fails those with INVALID_RECORD and their neighbours with
    # _INVALID_DIFFERENT_RECORD.
    codes = [e.code() if e is not None else None for e in errors]
    bad = [i for i, value in enumerate(values) if not isinstance(value.get("total"), (int, float)) or "order_id" not in value]
    assert bad == [1, 3], bad
    for i, code in enumerate(codes):
        expected = KafkaError.INVALID_RECORD if i in bad else KafkaError._INVALID_DIFFERENT_RECORD
        assert code == expected, (i, errors)
else:
    assert all(e is None for e in errors), errors
print("ok")

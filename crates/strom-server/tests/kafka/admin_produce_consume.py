"""confluent-kafka (current librdkafka) against Strom: create topics, produce with acks=all,
consume by assignment, find offsets by timestamp, delete topics. Exits non-zero on failure.

Usage: admin_produce_consume.py BOOTSTRAP
"""
import sys
import time

from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

bootstrap = sys.argv[1]
admin = AdminClient({"bootstrap.servers": bootstrap})

# Create: one good topic, one with a bad partition count, one with an unsupported config.
futures = admin.create_topics(
    [
        NewTopic("events", num_partitions=4, replication_factor=1, config={"retention.ms": "86400000"}),
        NewTopic("bad-partitions", num_partitions=1000, replication_factor=1),
        NewTopic("bad-config", num_partitions=1, replication_factor=1, config={"cleanup.policy": "compact"}),
    ],
    operation_timeout=10,
)
futures["events"].result()
for name in ["bad-partitions", "bad-config"]:
    try:
        futures[name].result()
        sys.exit(f"creating {name} should fail")
    except KafkaException as error:
        print(f"{name} refused: {error.args[0].str()}")
try:
    admin.create_topics([NewTopic("events", num_partitions=1, replication_factor=1)])["events"].result()
    sys.exit("creating events twice should fail")
except KafkaException as error:
    assert error.args[0].code() == 36, error  # TOPIC_ALREADY_EXISTS

metadata = admin.list_topics(timeout=10)
assert "events" in metadata.topics, metadata.topics
assert len(metadata.topics["events"].partitions) == 4

# Produce 5000 records with acks=all; every delivery report must be a success.
producer = Producer({"bootstrap.servers": bootstrap, "acks": "all", "linger.ms": 5})
delivered = []
failed = []


def report(error, message):
    (failed if error else delivered).append((error, message.partition() if not error else None, message.offset() if not error else None))


before_ms = int(time.time() * 1000)
for i in range(5000):
    producer.produce("events", key=f"user{i % 11}", value=f"record-{i}", on_delivery=report)
    if i % 1000 == 0:
        producer.poll(0)
assert producer.flush(30) == 0, "every record delivered"
assert not failed, failed[:5]
assert len(delivered) == 5000
offsets = {(p, o) for _, p, o in delivered}
assert len(offsets) == 5000, "every record got its own offset"
time.sleep(0.05)
after_ms = int(time.time() * 1000)

# Consume everything back by assignment (no group).
consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "unused", "enable.auto.commit": False})
consumer.assign([TopicPartition("events", p, 0) for p in range(4)])
seen = set()
deadline = time.time() + 30
while len(seen) < 5000 and time.time() < deadline:
    message = consumer.poll(1.0)
    if message is None:
        continue
    assert message.error() is None, message.error()
    n = int(message.value().decode().removeprefix("record-"))
    assert n not in seen, f"record {n} twice"
    assert message.key().decode() == f"user{n % 11}"
    seen.add(n)
assert len(seen) == 5000, f"consumed {len(seen)} of 5000"

# Offsets by timestamp: before the produce → 0 in every partition holding records; after → end (-1).
found = consumer.offsets_for_times([TopicPartition("events", p, before_ms) for p in range(4)], timeout=10)
for tp in found:
    assert tp.error is None, tp
    assert tp.offset == 0, f"partition {tp.partition}: {tp.offset}"
found = consumer.offsets_for_times([TopicPartition("events", p, after_ms + 60000) for p in range(4)], timeout=10)
for tp in found:
    assert tp.offset == -1, f"partition {tp.partition}: {tp.offset}"
low, high = consumer.get_watermark_offsets(TopicPartition("events", 0), timeout=10)
assert low == 0 and high > 0, (low, high)
consumer.close()

# Configs of the topic (as created) and of the broker; the cluster.
from confluent_kafka.admin import ConfigResource, ResourceType

topic_configs = admin.describe_configs([ConfigResource(ResourceType.TOPIC, "events")])
configs = list(topic_configs.values())[0].result(10)
assert configs["retention.ms"].value == "86400000", configs["retention.ms"]
assert configs["cleanup.policy"].value == "delete"
broker_configs = admin.describe_configs([ConfigResource(ResourceType.BROKER, "0")])
configs = list(broker_configs.values())[0].result(10)
assert configs["auto.create.topics.enable"].value == "false", configs
cluster = admin.describe_cluster().result(10)
assert cluster.cluster_id == "strom" and len(cluster.nodes) == 1 and cluster.controller.id == 0, cluster

# Delete, and deleting again fails with UNKNOWN_TOPIC_OR_PARTITION.
admin.delete_topics(["events"], operation_timeout=10)["events"].result()
try:
    admin.delete_topics(["events"], operation_timeout=10)["events"].result()
    sys.exit("deleting events twice should fail")
except KafkaException as error:
    assert error.args[0].code() == 3, error
assert "events" not in admin.list_topics(timeout=10).topics
print("ok")

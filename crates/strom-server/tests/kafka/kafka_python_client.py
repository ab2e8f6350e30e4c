"""kafka-python (a pure-Python client, its own protocol code) against Strom: admin create,
produce with acks=all, a consumer group that commits, committed offsets read back.

Usage: kafka_python_client.py BOOTSTRAP
"""
import sys

from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import NewTopic

bootstrap = sys.argv[1]
admin = KafkaAdminClient(bootstrap_servers=bootstrap)
admin.create_topics([NewTopic("clicks", num_partitions=2, replication_factor=1)])
assert "clicks" in admin.list_topics()

producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5)
futures = [producer.send("clicks", key=f"u{i % 5}".encode(), value=f"click-{i}".encode()) for i in range(500)]
producer.flush()
offsets = {(f.get(10).partition, f.get(10).offset) for f in futures}
assert len(offsets) == 500, len(offsets)

consumer = KafkaConsumer(
    "clicks",
    bootstrap_servers=bootstrap,
    group_id="readers",
    auto_offset_reset="earliest",
    enable_auto_commit=False,
    consumer_timeout_ms=5000,
)
seen = set()
for message in consumer:
    seen.add(message.value.decode())
    if len(seen) == 500:
        break
assert seen == {f"click-{i}" for i in range(500)}, len(seen)
consumer.commit()
committed = {p: consumer.committed(TopicPartition("clicks", p)) for p in (0, 1)}
consumer.close()
assert sum(committed.values()) == 500, committed
listed = admin.list_groups()
assert "readers" in str(listed), listed
offsets = admin.list_group_offsets("readers")
assert "clicks" in str(offsets), offsets
admin.delete_topics(["clicks"])
print("ok")

"""kafka-python (a pure-Python client, its own protocol code) against Strom: admin create,
produce with acks=all, a consumer group that commits, committed offsets read back, and
batches compressed with gzip and (xerial) snappy read back.

Usage: kafka_python_client.py BOOTSTRAP
"""
import os
import sys

from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import NewTopic
from kafka.codec import has_snappy

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

# Compressed batches: gzip, and snappy in the xerial framing the Java client also writes
# (kafka-python needs python-snappy for it; CI installs it, elsewhere it is skipped).
codecs = ["gzip"]
if has_snappy():
    codecs.append("snappy")
elif os.environ.get("CI") == "true":
    sys.exit("python-snappy is not installed: kafka-python cannot produce snappy")
else:
    print("skipping snappy: python-snappy is not installed")
for codec in codecs:
    topic = f"packed-{codec}"
    admin.create_topics([NewTopic(topic, num_partitions=1, replication_factor=1)])
    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=20, compression_type=codec)
    values = [f'{{"event": "ProductViewed", "codec": "{codec}", "n": {i}, "sku": "SKU-{i % 9}"}}'.encode() for i in range(300)]
    futures = [producer.send(topic, value=value) for value in values]
    producer.flush()
    assert sorted(f.get(10).offset for f in futures) == list(range(300)), codec
    producer.close()
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, auto_offset_reset="earliest", consumer_timeout_ms=5000)
    consumer.assign([TopicPartition(topic, 0)])
    read = [message.value for message in consumer]
    consumer.close()
    assert read == values, f"{codec}: {len(read)} of 300 read back in order"
    print(f"{codec}: 300 records produced compressed and read back")
admin.delete_topics(["clicks"] + [f"packed-{codec}" for codec in codecs])
print("ok")

"""Compressed produce with confluent-kafka (current librdkafka): one topic per codec (gzip,
snappy, lz4, zstd), records produced by an idempotent producer with acks=all, then read
back by a consumer. Every record must come back once, in order per partition, byte for byte.
Prints the codecs and "ok"; exits non-zero on failure.

Usage: compressed_produce.py BOOTSTRAP RECORDS
"""
import json
import sys

from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

bootstrap, count = sys.argv[1], int(sys.argv[2])
codecs = ["gzip", "snappy", "lz4", "zstd"]
admin = AdminClient({"bootstrap.servers": bootstrap})
futures = admin.create_topics([NewTopic(f"shop-{codec}", num_partitions=2, replication_factor=1) for codec in codecs])
for future in futures.values():
    future.result()


def value(codec, i):
    # Shop events: repetitive JSON, which every codec shrinks (librdkafka sends a batch
    # uncompressed when compressing would not shrink it).
    return json.dumps({
        "type": "track", "event": "AddToCart", "userId": f"user{i % 13}", "codec": codec, "n": i,
        "properties": {"sku": f"SKU-{i % 50:04d}", "price": 19.99, "currency": "EUR", "note": "gift wrapped " * 4},
    }).encode()


for codec in codecs:
    producer = Producer({
        "bootstrap.servers": bootstrap,
        "compression.type": codec,
        "enable.idempotence": True,
        "acks": "all",
        "linger.ms": 20,
    })
    failed = []
    delivered = []

    def report(error, message):
        (failed if error else delivered).append(error or (message.partition(), message.offset()))

    for i in range(count):
        producer.produce(f"shop-{codec}", key=f"user{i % 13}", value=value(codec, i), on_delivery=report)
        if i % 500 == 0:
            producer.poll(0)
    assert producer.flush(30) == 0, f"{codec}: every record delivered"
    assert not failed, f"{codec}: {failed[:5]}"
    assert len(set(delivered)) == count, f"{codec}: {len(set(delivered))} distinct offsets for {count} records"

    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"check-{codec}", "enable.auto.commit": False})
    consumer.assign([TopicPartition(f"shop-{codec}", p, 0) for p in range(2)])
    seen = {}
    last = {}
    idle = 0
    while len(seen) < count and idle < 20:
        messages = consumer.consume(500, timeout=0.5)
        idle = idle + 1 if not messages else 0
        for message in messages:
            assert message.error() is None, f"{codec}: {message.error()}"
            n = json.loads(message.value())["n"]
            assert message.value() == value(codec, n), f"{codec}: record {n} changed"
            assert message.key() == f"user{n % 13}".encode(), f"{codec}: record {n} has key {message.key()}"
            assert n not in seen, f"{codec}: record {n} read twice"
            seen[n] = message.offset()
            partition = message.partition()
            assert last.get(partition, -1) < n, f"{codec}: {n} after {last.get(partition)} in partition {partition}"
            last[partition] = n
    consumer.close()
    assert len(seen) == count, f"{codec}: {len(seen)} of {count} records read back"
    print(f"{codec}: {count} records produced compressed and read back")
print("ok")

"""The crash test's Kafka producer: confluent-kafka, acks=all, idempotent, as fast as the
server answers. Prints one line per acknowledged record, "PARTITION OFFSET VALUE", flushed
at once, until it is killed.

Usage: kafka_crash_producer.py BOOTSTRAP TOPIC CYCLE
"""
import sys

from confluent_kafka import Producer

bootstrap, topic, cycle = sys.argv[1], sys.argv[2], sys.argv[3]
producer = Producer(
    {
        "bootstrap.servers": bootstrap,
        "acks": "all",
        "enable.idempotence": True,
        "linger.ms": 1,
        "reconnect.backoff.max.ms": 100,
    }
)


def report(error, message):
    if error is None:
        sys.stdout.write(f"{message.partition()} {message.offset()} {message.value().decode()}\n")
        sys.stdout.flush()


seq = 0
while True:
    try:
        producer.produce(topic, key=str(seq % 17), value=f"c{cycle}-{seq}", on_delivery=report)
        seq += 1
    except BufferError:
        pass
    producer.poll(0 if seq % 100 else 0.001)

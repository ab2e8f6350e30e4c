"""An idempotent confluent-kafka producer whose connection is cut after the broker appended a
batch but before the answer arrived, again and again (a proxy in between drops every 5th
Produce response and closes the connection). librdkafka retries those batches with the same
sequence; every record must be stored exactly once.

Usage: idempotent_retries.py PROXY_PORT BROKER_ADDR TOPIC
"""
import socket
import struct
import sys
import threading

from confluent_kafka import Consumer, Producer, TopicPartition

proxy_port, broker, topic = int(sys.argv[1]), sys.argv[2], sys.argv[3]
broker_host, broker_port = broker.rsplit(":", 1)
COUNT = 4000
cut = {"responses": 0, "cuts": 0}
lock = threading.Lock()


def read_frame(sock):
    header = b""
    while len(header) < 4:
        chunk = sock.recv(4 - len(header))
        if not chunk:
            return None
        header += chunk
    (length,) = struct.unpack(">i", header)
    body = b""
    while len(body) < length:
        chunk = sock.recv(length - len(body))
        if not chunk:
            return None
        body += chunk
    return header + body


def pipe(client):
    upstream = socket.create_connection((broker_host, int(broker_port)))
    produce_ids = set()

    def requests():
        try:
            while (frame := read_frame(client)) is not None:
                api_key, _, correlation_id = struct.unpack(">hhi", frame[4:12])
                if api_key == 0:
                    with lock:
                        produce_ids.add(correlation_id)
                upstream.sendall(frame)
        except OSError:
            pass
        for s in (client, upstream):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    threading.Thread(target=requests, daemon=True).start()
    try:
        while (frame := read_frame(upstream)) is not None:
            (correlation_id,) = struct.unpack(">i", frame[4:8])
            with lock:
                is_produce = correlation_id in produce_ids
                if is_produce:
                    cut["responses"] += 1
                    drop = cut["responses"] % 5 == 0
                    cut["cuts"] += drop
                else:
                    drop = False
            if drop:
                break  # the batch is appended; its answer is lost with the connection
            client.sendall(frame)
    except OSError:
        pass
    for s in (client, upstream):
        try:
            s.shutdown(socket.SHUT_RDWR)
            s.close()
        except OSError:
            pass


listener = socket.socket()
listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
listener.bind(("127.0.0.1", proxy_port))
listener.listen(16)


def accept():
    while True:
        client, _ = listener.accept()
        threading.Thread(target=pipe, args=(client,), daemon=True).start()


threading.Thread(target=accept, daemon=True).start()

producer = Producer(
    {
        "bootstrap.servers": f"127.0.0.1:{proxy_port}",
        "enable.idempotence": True,
        "acks": "all",
        "linger.ms": 2,
        "batch.num.messages": 100,
        "retry.backoff.ms": 20,
        "reconnect.backoff.ms": 10,
    }
)
failed = []
for i in range(COUNT):
    producer.produce(topic, key=f"k{i % 13}", value=f"record-{i}", on_delivery=lambda e, m: e and failed.append(e))
    producer.poll(0)
assert producer.flush(60) == 0, "every record delivered"
assert not failed, failed[:3]
assert cut["cuts"] >= 3, f"the proxy cut only {cut['cuts']} answers: no retries were forced"

consumer = Consumer({"bootstrap.servers": broker, "group.id": "check", "enable.auto.commit": False})
partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
consumer.assign([TopicPartition(topic, p, 0) for p in partitions])
ends = {p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1] for p in partitions}
total = sum(ends.values())
values = []
while len(values) < total:
    message = consumer.poll(5)
    assert message is not None, f"consumed {len(values)} of {total}"
    assert message.error() is None, message.error()
    values.append(message.value().decode())
assert total == COUNT, f"{total} records stored for {COUNT} produced ({cut['cuts']} answers cut)"
assert sorted(values) == sorted(f"record-{i}" for i in range(COUNT)), "each record exactly once"
print(f"ok {COUNT} records, {cut['cuts']} answers cut")

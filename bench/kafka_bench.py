"""Kafka client load for bench/kafka.sh (confluent-kafka, i.e. a current librdkafka).

  kafka_bench.py produce BOOTSTRAP TOPIC RECORDS RECORD_BYTES   acks=all, linger.ms=5
  kafka_bench.py consume BOOTSTRAP TOPIC PARTITIONS             catch up from offset 0 to the end
  kafka_bench.py fetch   BOOTSTRAP TOPIC PARTITIONS             raw Fetch requests (no client decoding)

Prints one line of figures.
"""
import socket
import struct
import sys
import time

mode, bootstrap, topic = sys.argv[1], sys.argv[2], sys.argv[3]

if mode == "produce":
    from confluent_kafka import Producer

    records, size = int(sys.argv[4]), int(sys.argv[5])
    producer = Producer(
        {
            "bootstrap.servers": bootstrap,
            "acks": "all",
            "linger.ms": 5,
            "batch.size": 1_000_000,
            "queue.buffering.max.messages": 1_000_000,
            "queue.buffering.max.kbytes": 2_000_000,
        }
    )
    value = b"x" * size
    errors = []

    def report(error, _message):
        if error:
            errors.append(error)

    started = time.perf_counter()
    for _ in range(records):
        while True:
            try:
                producer.produce(topic, value=value, on_delivery=report)
                break
            except BufferError:
                producer.poll(0.001)
        producer.poll(0)
    left = producer.flush(120)
    elapsed = time.perf_counter() - started
    assert left == 0 and not errors, (left, errors[:3])
    print(f"produce: {records} records of {size} B in {elapsed:.2f} s: {records / elapsed:,.0f} records/s, "
          f"{records * size / elapsed / 1e6:,.0f} MB/s (acks=all, linger.ms=5)")
elif mode == "consume":
    from confluent_kafka import Consumer, TopicPartition

    partitions = int(sys.argv[4])
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "bench", "enable.auto.commit": False,
                         "fetch.max.bytes": 52428800, "max.partition.fetch.bytes": 16777216})
    ends = {p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1] for p in range(partitions)}
    total = sum(ends.values())
    consumer.assign([TopicPartition(topic, p, 0) for p in range(partitions)])
    count = 0
    size = 0
    started = time.perf_counter()
    while count < total:
        for message in consumer.consume(num_messages=10000, timeout=1.0):
            if message.error():
                raise RuntimeError(message.error())
            count += 1
            size += len(message.value())
    elapsed = time.perf_counter() - started
    print(f"consume (confluent-kafka): {count} records, {size / 1e6:,.0f} MB of values in {elapsed:.2f} s: "
          f"{count / elapsed:,.0f} records/s, {size / elapsed / 1e6:,.0f} MB/s")
elif mode == "fetch":
    # Fetch v4 requests straight on a socket, each asking 50 MiB (partition max 16 MiB), one
    # after the other, from offset 0 to the end: the broker's side of a catching-up consumer.
    partitions = int(sys.argv[4])
    host, port = bootstrap.rsplit(":", 1)
    sock = socket.create_connection((host, int(port)))

    def call(api_key, version, body, correlation_id):
        header = struct.pack(">hhih", api_key, version, correlation_id, 5) + b"bench"
        frame = header + body
        sock.sendall(struct.pack(">i", len(frame)) + frame)
        (length,) = struct.unpack(">i", recv(4))
        return recv(length)

    def recv(n):
        chunks = []
        while n:
            chunk = sock.recv(min(n, 4 << 20))
            if not chunk:
                raise EOFError
            chunks.append(chunk)
            n -= len(chunk)
        return b"".join(chunks)

    name = topic.encode()
    offsets = {p: 0 for p in range(partitions)}
    # ListOffsets v1, latest, per partition.
    body = struct.pack(">ii", -1, 1) + struct.pack(">h", len(name)) + name + struct.pack(">i", partitions)
    body += b"".join(struct.pack(">iq", p, -1) for p in range(partitions))
    answer = call(2, 1, body, 1)
    ends = {}
    at = 4 + 4  # correlation id, topics count
    (name_length,) = struct.unpack(">h", answer[at:at + 2])
    at += 2 + name_length + 4
    for _ in range(partitions):
        p, error, _timestamp, offset = struct.unpack(">ihqq", answer[at:at + 22])
        ends[p] = offset
        at += 22
    total_bytes = 0
    correlation_id = 2
    started = time.perf_counter()
    while any(offsets[p] < ends[p] for p in offsets):
        body = struct.pack(">iiiib", -1, 0, 1, 50 << 20, 0) + struct.pack(">i", 1) + struct.pack(">h", len(name)) + name
        body += struct.pack(">i", partitions) + b"".join(struct.pack(">iqi", p, offsets[p], 16 << 20) for p in range(partitions))
        answer = call(1, 4, body, correlation_id)
        correlation_id += 1
        total_bytes += len(answer)
        # Walk the answer: per partition, the records; advance past the last batch.
        at = 4 + 4 + 4
        (name_length,) = struct.unpack(">h", answer[at:at + 2])
        at += 2 + name_length
        (count,) = struct.unpack(">i", answer[at:at + 4])
        at += 4
        for _ in range(count):
            p, error, high, _lso = struct.unpack(">ihqq", answer[at:at + 22])
            at += 22
            (aborted,) = struct.unpack(">i", answer[at:at + 4])
            at += 4 + max(aborted, 0) * 16
            (size,) = struct.unpack(">i", answer[at:at + 4])
            at += 4
            records = answer[at:at + max(size, 0)]
            at += max(size, 0)
            position = 0
            while position + 61 <= len(records):
                base, length = struct.unpack(">qi", records[position:position + 12])
                if position + 12 + length > len(records):
                    break
                (last_delta,) = struct.unpack(">i", records[position + 23:position + 27])
                offsets[p] = base + last_delta + 1
                position += 12 + length
    elapsed = time.perf_counter() - started
    print(f"fetch (raw Fetch v4): {total_bytes / 1e6:,.0f} MB in {elapsed:.2f} s: {total_bytes / elapsed / 1e6:,.0f} MB/s")

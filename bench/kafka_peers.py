"""Client load for bench/kafka_peers.sh: Strom's produce latency at a fixed rate, and the NATS peer.

  kafka_peers.py latency BOOTSTRAP TOPIC RATE SECONDS RECORD_BYTES
      An open-loop confluent-kafka producer (acks=all, linger.ms=5): it hands records to
      produce() on a fixed schedule of RATE records/s for SECONDS, without waiting for acks,
      and reports the percentiles of (delivery report time - produce() time).
  kafka_peers.py nats URL RECORDS RECORD_BYTES MAX_PENDING async|pipelined SECONDS
      NATS JetStream publish into a fresh file-backed stream with at most MAX_PENDING publishes
      waiting for their ack: `async` through nats-py's js.publish_async, `pipelined` through
      plain publishes with reply subjects. Stops early after SECONDS (for a server that fsyncs
      every message alone), and says so.
  kafka_peers.py versions
      Prints the versions of the Python clients.
  kafka_peers.py freeport
      Prints a TCP port on 127.0.0.1 that is free right now (for the peers' servers).

Prints one line of figures per run.
"""
import math
import socket
import sys
import time


def percentile(ordered, fraction):
    """The nearest-rank percentile of an already sorted list."""
    rank = math.ceil(fraction * len(ordered))
    return ordered[min(len(ordered), max(1, rank)) - 1]


def latency(bootstrap, topic, rate, seconds, size):
    from confluent_kafka import Producer

    latencies = []
    errors = []

    # One delivery callback for the whole producer: it runs inside poll(), and librdkafka's
    # Message.latency() is measured from the produce() call to the broker's ack, so the figure
    # does not depend on how often this loop gets round to polling.
    def report(error, message):
        if error:
            errors.append(error)
        else:
            latencies.append(message.latency())

    producer = Producer(
        {
            "bootstrap.servers": bootstrap,
            "acks": "all",
            "linger.ms": 5,
            "batch.size": 1_000_000,
            "queue.buffering.max.messages": 1_000_000,
            "queue.buffering.max.kbytes": 2_000_000,
            "on_delivery": report,
        }
    )
    value = b"x" * size
    # Warm up outside the measured window: metadata, connections and the partitions' first
    # segments would otherwise land in the first records' latencies.
    for _ in range(1000):
        producer.produce(topic, value=value)
    assert producer.flush(30) == 0 and not errors, errors[:3]
    latencies.clear()

    # The open loop: every millisecond or so, hand produce() every record whose scheduled time
    # has come, whatever the acks are doing. A producer that waited for acks would slow down
    # when the broker does and hide exactly the latency being measured.
    total = int(rate * seconds)
    sent = 0
    behind_max = 0.0
    refused = 0
    started = time.perf_counter()
    while sent < total:
        now = time.perf_counter()
        due = min(total, int((now - started) * rate) + 1)
        if sent < due:
            # How late the oldest record of this round is against its scheduled time: if this
            # grows, the client (not the broker) could not keep the schedule.
            behind_max = max(behind_max, now - (started + sent / rate))
            while sent < due:
                try:
                    producer.produce(topic, value=value)
                    sent += 1
                except BufferError:
                    refused += 1
                    producer.poll(0.001)
            producer.poll(0)
        else:
            # Nothing is due yet: wait for delivery reports for up to a millisecond.
            producer.poll(0.001)
    sending = time.perf_counter() - started
    left = producer.flush(60)
    finished = time.perf_counter() - started
    assert left == 0 and not errors, (left, errors[:3])
    assert len(latencies) == total, (len(latencies), total)
    ordered = sorted(latencies)
    ms = lambda s: f"{s * 1000:.1f}"
    print(
        f"latency at {rate:,} records/s target: {total:,} records of {size} B sent in {sending:.2f} s "
        f"({total / sending:,.0f} records/s sent, {total / finished:,.0f} records/s acknowledged incl. drain), "
        f"ms: p50 {ms(percentile(ordered, 0.50))}, p90 {ms(percentile(ordered, 0.90))}, "
        f"p99 {ms(percentile(ordered, 0.99))}, p99.9 {ms(percentile(ordered, 0.999))}, max {ms(ordered[-1])}, "
        f"mean {ms(sum(ordered) / len(ordered))}; client behind schedule at most {ms(behind_max)} ms, "
        f"queue-full retries {refused} (acks=all, linger.ms=5)"
    )


def nats_publish(url, records, size, max_pending, how, seconds):
    import asyncio
    import json

    import nats
    from nats.js.api import StorageType, StreamConfig

    async def run():
        nc = await nats.connect(url, pending_size=64 << 20)
        js = nc.jetstream(publish_async_max_pending=max_pending)
        await js.add_stream(StreamConfig(name="BENCH", subjects=["bench"], storage=StorageType.FILE))
        value = b"x" * size
        failures = []
        sent = 0
        started = time.perf_counter()
        if how == "async":
            # nats-py's own js.publish_async: it waits while MAX_PENDING acks are outstanding.
            # The ack futures are checked as they complete: publish_async alone never looks at
            # them, and a refused publish must not count as a stored record.
            def check(future):
                if future.cancelled() or future.exception() is not None:
                    failures.append("cancelled" if future.cancelled() else future.exception())

            while sent < records and time.perf_counter() - started < seconds:
                future = await js.publish_async("bench", value)
                future.add_done_callback(check)
                sent += 1
            await asyncio.wait_for(js.publish_async_completed(), 120)
        else:
            # The same protocol by hand: each message carries a reply subject, JetStream answers
            # it with the ack once the message is stored, and a semaphore bounds the acks
            # outstanding. Without a future, a token and a parsed PubAck per message, this costs
            # the Python client several times less than publish_async (about 3x the rate on this
            # machine), so more of what is measured is the server.
            window = asyncio.Semaphore(max_pending)
            acked = 0
            all_acked = asyncio.Event()

            async def on_ack(message):
                nonlocal acked
                if b'"error"' in message.data:
                    failures.append(json.loads(message.data)["error"])
                acked += 1
                window.release()
                if acked == sent and finished_sending:
                    all_acked.set()

            finished_sending = False
            inbox = nc.new_inbox()
            await nc.subscribe(inbox + ".*", cb=on_ack, pending_msgs_limit=1 << 20, pending_bytes_limit=1 << 30)
            while sent < records and time.perf_counter() - started < seconds:
                await window.acquire()
                await nc.publish("bench", value, reply=f"{inbox}.{sent}")
                sent += 1
            finished_sending = True
            if acked < sent:
                await asyncio.wait_for(all_acked.wait(), 120)
        elapsed = time.perf_counter() - started
        info = await js.stream_info("BENCH")
        await nc.close()
        assert not failures, failures[:3]
        assert info.state.messages == sent, (info.state.messages, sent)
        label = "js.publish_async" if how == "async" else "pipelined publish with reply subjects"
        cut = f", stopped after {seconds:.0f} s" if sent < records else ""
        print(
            f"nats ({label}, at most {max_pending} acks pending{cut}): {sent} records of {size} B in {elapsed:.2f} s: "
            f"{sent / elapsed:,.0f} records/s, {sent * size / elapsed / 1e6:,.0f} MB/s "
            f"(stream holds {info.state.messages} messages, {info.state.bytes / 1e6:,.0f} MB)"
        )

    asyncio.run(run())


mode = sys.argv[1]
if mode == "latency":
    latency(sys.argv[2], sys.argv[3], int(sys.argv[4]), float(sys.argv[5]), int(sys.argv[6]))
elif mode == "nats":
    nats_publish(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]), sys.argv[6], float(sys.argv[7]))
elif mode == "versions":
    from importlib.metadata import version

    import confluent_kafka

    print(f"confluent-kafka {version('confluent-kafka')} (librdkafka {confluent_kafka.libversion()[0]}), "
          f"nats-py {version('nats-py')}")
elif mode == "freeport":
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        print(probe.getsockname()[1])
else:
    sys.exit(__doc__)

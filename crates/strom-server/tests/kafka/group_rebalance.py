"""Three confluent-kafka consumers in one group; one leaves mid-way. Checks that every record
is consumed (no gaps per partition after the rebalances) and commits what was processed.
With "resume", checks that a new member of the group starts exactly at the committed offsets.

Usage: group_rebalance.py BOOTSTRAP TOPIC PARTITIONS consume|resume
"""
import sys
import threading
import time

from confluent_kafka import Consumer, KafkaError, Producer, TopicPartition
from confluent_kafka.admin import AdminClient

bootstrap, topic, partitions, phase = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
GROUP = "mailer"
DEADLINE_S = 90


def produce(count, start):
    producer = Producer({"bootstrap.servers": bootstrap, "acks": "all", "linger.ms": 5})
    errors = []
    for i in range(start, start + count):
        producer.produce(topic, key=f"user{i % 37}", value=f"record-{i}", on_delivery=lambda e, m: e and errors.append(e))
    assert producer.flush(30) == 0 and not errors, errors[:3]


def end_offsets():
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "watermarks"})
    ends = {p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1] for p in range(partitions)}
    consumer.close()
    return ends


def new_consumer(name):
    return Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": GROUP,
            "client.id": name,
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
            "session.timeout.ms": 6000,
            "heartbeat.interval.ms": 300,
            "partition.assignment.strategy": "range",
        }
    )


consumed = {}  # (partition, offset) -> value
lock = threading.Lock()
first_offsets = {}  # partition -> first offset a member received (resume phase)


class Member(threading.Thread):
    def __init__(self, name):
        super().__init__(daemon=True)
        self.name = name
        self.stop = threading.Event()
        self.error = None
        self.count = 0

    def run(self):
        try:
            consumer = new_consumer(self.name)

            revoked = threading.Event()

            def on_revoke(c, partitions):
                # Commit what was processed before the partitions move to another member.
                try:
                    c.commit(asynchronous=False)
                except Exception as error:  # nothing consumed yet: no offsets to commit
                    if "NO_OFFSET" not in str(error):
                        raise
                revoked.set()

            consumer.subscribe([topic], on_revoke=on_revoke)
            while not self.stop.is_set():
                message = consumer.poll(0.2)
                if message is None:
                    continue
                if message.error():
                    if message.error().code() == KafkaError._PARTITION_EOF:
                        continue
                    raise RuntimeError(message.error())
                with lock:
                    key = (message.partition(), message.offset())
                    first_offsets.setdefault(message.partition(), message.offset())
                    consumed[key] = message.value().decode()
                self.count += 1
                if self.count % 50 == 0:
                    consumer.commit(asynchronous=False)
            try:
                consumer.commit(asynchronous=False)
            except Exception as error:
                if "NO_OFFSET" not in str(error):
                    raise
            # Leave the group and serve the revocation here, before close(): a revocation
            # left to close() runs the rebalance callback inside rd_kafka_consumer_close,
            # where librdkafka can block for good holding the GIL (librdkafka #4041).
            revoked.clear()
            consumer.unsubscribe()
            deadline = time.time() + 10
            while not revoked.is_set() and time.time() < deadline:
                consumer.poll(0.1)
            consumer.close()
        except Exception as error:  # reported by the main thread
            self.error = error


def wait_until(condition, what):
    deadline = time.time() + DEADLINE_S
    while time.time() < deadline:
        if condition():
            return
        for member in members:
            if member.error:
                sys.exit(f"{member.name} failed: {member.error}")
        time.sleep(0.1)
    sys.exit(f"timed out waiting for {what}; consumed {len(consumed)}")


def complete(ends, start_at=None):
    """Every offset from the start (or the committed offset) to the end, per partition."""
    for p, end in ends.items():
        begin = 0 if start_at is None else start_at.get(p, 0)
        for offset in range(begin, end):
            if (p, offset) not in consumed:
                return False
    return True


admin = AdminClient({"bootstrap.servers": bootstrap})

if phase == "consume":
    produce(3000, 0)
    members = [Member(f"member-{i}") for i in range(3)]
    for member in members:
        member.start()
    wait_until(lambda: len(consumed) >= 1000, "the first 1000 records")
    leaving = members[2]
    leaving.stop.set()
    leaving.join(30)
    assert not leaving.is_alive() and leaving.error is None, leaving.error
    print(f"member-2 left after {leaving.count} records")
    produce(2000, 3000)
    ends = end_offsets()
    assert sum(ends.values()) == 5000, ends
    wait_until(lambda: complete(ends), "every record")
    # The group, as DescribeGroups tells it: two members, Stable.
    def described():
        group = admin.describe_consumer_groups([GROUP])[GROUP].result(10)
        return group
    wait_until(lambda: len(described().members) == 2 and str(described().state).endswith("STABLE"), "a stable group of two")
    listed = admin.list_consumer_groups().result(10)
    assert GROUP in [g.group_id for g in listed.valid], listed.valid
    for member in members[:2]:
        member.stop.set()
        member.join(30)
        assert member.error is None, member.error
    values = {int(v.removeprefix("record-")) for v in consumed.values()}
    assert values == set(range(5000)), f"missing {sorted(set(range(5000)) - values)[:10]}"
    committed = new_consumer("reader").committed([TopicPartition(topic, p) for p in range(partitions)], timeout=10)
    assert all(tp.offset == ends[tp.partition] for tp in committed), (committed, ends)
    print("ok", sum(ends.values()))
elif phase == "resume":
    committed = new_consumer("reader").committed([TopicPartition(topic, p) for p in range(partitions)], timeout=10)
    committed = {tp.partition: tp.offset for tp in committed}
    assert sum(committed.values()) == 5000, committed
    produce(1000, 5000)
    ends = end_offsets()
    members = [Member("resumer")]
    members[0].start()
    wait_until(lambda: complete(ends, committed), "the records after the committed offsets")
    members[0].stop.set()
    members[0].join(30)
    for p, first in first_offsets.items():
        assert first == committed[p], f"partition {p} resumed at {first}, committed {committed[p]}"
    before = [k for k in consumed if k[1] < committed[k[0]]]
    assert not before, f"records before the committed offsets were consumed again: {before[:5]}"
    print("ok", len(consumed))

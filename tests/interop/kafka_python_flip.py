"""kafka-python producers and a consumer group across POST /flip.

Usage: kafka_python_flip.py BOOTSTRAP ADMIN TOPIC GROUP RECORDS

A producer thread sends keyed records (acks='all', per-key sequence numbers
in the value) in paced rounds; a consumer thread reads them in a group and
commits after every poll; the main thread flips the proxy from cluster A to
cluster B through the admin API in the middle of the stream, then waits
until every acknowledged record was consumed or the deadline passes.

Prints one JSON line with what it observed; the Rust test asserts on it.
Every wait is bounded: the whole run ends within about a minute.
"""
import json
import sys
import threading
import time
import traceback
import urllib.error
import urllib.request

from kafka import KafkaConsumer, KafkaProducer

bootstrap, admin, topic, group, total = sys.argv[1:6]
RECORDS = int(total)
KEYS = 8
ROUND = 20            # records sent before waiting for their acknowledgements
PAUSE = 0.01          # between rounds: traffic flows for a while
MAX_POLL_RECORDS = 50
STARTED = time.time()
DEADLINE = STARTED + 75  # nothing waits past this


def log(message):
    sys.stderr.write("[%6.2fs] %s\n" % (time.time() - STARTED, message))
    sys.stderr.flush()


def value_of(key, seq):
    # The same layout as switchyard::demo::workload::record_value, so the
    # Rust side can look the records up in the clusters.
    return "%s#%d#%s" % (key, seq, "x" * 64)


lock = threading.Lock()
acked = []        # [key, seq, partition, offset]
acked_after_flip = []  # those sent once the flip had answered
consumed = []     # [key, seq, partition, offset], every delivery
errors = []
assigned = threading.Event()
flip_done = threading.Event()
stop_consuming = threading.Event()
commits = {"ok": 0, "failed": 0}
resumed_at = []   # when the consumer first got records after the flip


def wait_for(condition, limit, what):
    """Polls `condition` every 20 ms for at most `limit` seconds."""
    end = min(time.time() + limit, DEADLINE)
    while time.time() < end:
        if condition():
            return True
        time.sleep(0.02)
    log("gave up waiting for " + what)
    return condition()


def produce():
    producer = KafkaProducer(
        bootstrap_servers=bootstrap, acks="all", linger_ms=5, retries=1000,
        retry_backoff_ms=100,
        # One request at a time per broker: a retried batch cannot overtake
        # a later one, so per-key order holds without idempotence.
        max_in_flight_requests_per_connection=1,
        api_version_auto_timeout_ms=10000, client_id="py-flip-producer")
    try:
        sent = 0
        while sent < RECORDS and time.time() < DEADLINE:
            after_flip = flip_done.is_set()
            batch = []
            for i in range(sent, min(sent + ROUND, RECORDS)):
                key = "pyflip-%d" % (i % KEYS)
                seq = i // KEYS
                future = producer.send(topic, key=key.encode(),
                                       value=value_of(key, seq).encode())
                batch.append((key, seq, future))
            sent += len(batch)
            for key, seq, future in batch:
                meta = future.get(timeout=max(1.0, DEADLINE - time.time()))
                with lock:
                    acked.append([key, seq, meta.partition, meta.offset])
                    if after_flip:
                        acked_after_flip.append(acked[-1])
            time.sleep(PAUSE)
        producer.flush(timeout=10)
    except Exception:
        errors.append("producer: " + traceback.format_exc())
    finally:
        producer.close(timeout=10)


def consume():
    consumer = KafkaConsumer(
        topic, bootstrap_servers=bootstrap, group_id=group,
        client_id="py-flip-consumer", auto_offset_reset="earliest",
        enable_auto_commit=False, max_poll_records=MAX_POLL_RECORDS,
        session_timeout_ms=6000, heartbeat_interval_ms=500,
        api_version_auto_timeout_ms=10000)
    try:
        while not stop_consuming.is_set() and time.time() < DEADLINE:
            batches = consumer.poll(timeout_ms=200)
            if consumer.assignment():
                assigned.set()
            got = []
            for records in batches.values():
                for message in records:
                    key, seq, _ = message.value.decode().split("#", 2)
                    got.append([key, int(seq), message.partition, message.offset])
            if not got:
                continue
            with lock:
                consumed.extend(got)
            if flip_done.is_set() and not resumed_at:
                resumed_at.append(time.time())
            # Commit what this poll returned before polling again: at any
            # moment at most one poll's records are read but not committed.
            try:
                consumer.commit()
                commits["ok"] += 1
            except Exception as e:  # a rebalance (the flip) under way
                commits["failed"] += 1
                log("commit failed: %r" % (e,))
    except Exception:
        errors.append("consumer: " + traceback.format_exc())
    finally:
        consumer.close(autocommit=False)


def post_flip():
    request = urllib.request.Request("http://%s/flip" % admin, data=b"", method="POST")
    try:
        with urllib.request.urlopen(request, timeout=60) as answer:
            return answer.status, json.loads(answer.read().decode())
    except urllib.error.HTTPError as answer:
        body = answer.read().decode()
        try:
            return answer.code, json.loads(body)
        except ValueError:
            return answer.code, {"body": body}


def distinct(records):
    with lock:
        return {(r[0], r[1]) for r in records}


consumer_thread = threading.Thread(target=consume, daemon=True)
consumer_thread.start()
wait_for(assigned.is_set, 30, "the consumer to be assigned partitions")
producer_thread = threading.Thread(target=produce, daemon=True)
producer_thread.start()

# Flip in the middle of the stream: a third acknowledged, some consumed.
wait_for(lambda: len(acked) >= RECORDS // 3 and len(consumed) >= RECORDS // 10,
         30, "traffic before the flip")
acked_at_flip = len(acked)
consumed_at_flip = len(consumed)
log("flipping after %d acknowledged, %d consumed" % (acked_at_flip, consumed_at_flip))
flip_started = time.time()
flip_status, flip_report = post_flip()
flip_wall_ms = int((time.time() - flip_started) * 1000)
flip_done.set()
log("flip answered %d in %d ms: %s" % (flip_status, flip_wall_ms, json.dumps(flip_report)))

# Everything acknowledged, then everything acknowledged consumed.
producer_thread.join(max(0.0, DEADLINE - time.time()))
wait_for(lambda: not producer_thread.is_alive() and distinct(acked) <= distinct(consumed),
         DEADLINE - time.time(), "every acknowledged record to be consumed")
stop_consuming.set()
consumer_thread.join(15)

acked_ids = distinct(acked)
with lock:
    seen = set()
    last = {}
    duplicates = 0
    order_violations = 0
    for key, seq, _, _ in consumed:
        if (key, seq) in seen:
            duplicates += 1
            continue
        seen.add((key, seq))
        # Per key, first deliveries come in sequence order.
        if key in last and seq <= last[key]:
            order_violations += 1
        last[key] = seq
    print(json.dumps({
        "records": RECORDS,
        "acknowledged": len(acked),
        "acknowledged_at_flip": acked_at_flip,
        "acknowledged_after_flip": len(acked_after_flip),
        "consumed_at_flip": consumed_at_flip,
        "consumed": len(seen),
        "deliveries": len(consumed),
        "lost": len(acked_ids - seen),
        "duplicates": duplicates,
        "unacknowledged_consumed": len(seen - acked_ids),
        "order_violations": order_violations,
        "commits": commits,
        "max_poll_records": MAX_POLL_RECORDS,
        "flip_status": flip_status,
        "flip_outcome": flip_report.get("outcome"),
        "flip_to": flip_report.get("to"),
        "flip_duration_ms": flip_report.get("duration_ms"),
        "flip_fenced_ms": flip_report.get("fenced_ms"),
        "flip_wall_ms": flip_wall_ms,
        # From the flip's answer to the first records read after it.
        "consumer_resumed_ms": int((resumed_at[0] - flip_started) * 1000 - flip_wall_ms)
        if resumed_at else None,
        "flip_report": flip_report,
        "errors": errors,
        "elapsed_ms": int((time.time() - STARTED) * 1000),
        "acked": acked,
        "acked_after_flip": acked_after_flip,
        "consumed_records": consumed,
    }))

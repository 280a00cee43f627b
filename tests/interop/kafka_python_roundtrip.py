"""Produce / consume / group-resume through switchyard with kafka-python.

Usage: kafka_python_roundtrip.py BOOTSTRAP TOPIC
Prints one JSON line with what it observed; the Rust test asserts on it.
"""
import json
import sys
import time

from kafka import KafkaConsumer, KafkaProducer, TopicPartition

bootstrap, topic = sys.argv[1], sys.argv[2]
RECORDS = 600
KEYS = 12

producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5,
                         compression_type="gzip", api_version_auto_timeout_ms=10000)
futures = []
for i in range(RECORDS):
    key = "py-%d" % (i % KEYS)
    seq = i // KEYS
    futures.append((key, seq, producer.send(topic, key=key.encode(), value=("%s#%d" % (key, seq)).encode(),
                                             headers=[("seq", str(seq).encode())])))
acked = []
for key, seq, future in futures:
    meta = future.get(timeout=30)
    acked.append([key, seq, meta.partition, meta.offset])
producer.flush()
producer.close()

brokers_seen = []


def consume(group, want, commit):
    consumer = KafkaConsumer(topic, bootstrap_servers=bootstrap, group_id=group,
                             auto_offset_reset="earliest", enable_auto_commit=False,
                             session_timeout_ms=6000, heartbeat_interval_ms=500,
                             consumer_timeout_ms=1000, api_version_auto_timeout_ms=10000)
    got = []
    deadline = time.time() + 60
    while len(got) < want and time.time() < deadline:
        for message in consumer:
            key, seq = message.value.decode().split("#")
            header = dict(message.headers).get("seq", b"").decode()
            got.append([key, int(seq), message.partition, message.offset, header == seq])
            if len(got) >= want:
                break
    if commit:
        consumer.commit()
    for broker in consumer._client.cluster.brokers():
        brokers_seen.append("%s:%d" % (broker.host, broker.port))
    consumer.close()
    return got


first = consume("py-group", RECORDS // 3, True)
second = consume("py-group", RECORDS - len(first), True)
print(json.dumps({"acked": acked, "first": first, "second": second,
                  "brokers_seen": sorted(set(brokers_seen))}))

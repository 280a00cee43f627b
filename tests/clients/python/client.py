#!/usr/bin/env python3
"""aiokafka driver for switchyard's real-cluster tests.

The command line and the stdout protocol are specified in ../README.md;
stdout carries only its JSON lines, library logs go to stderr.

What aiokafka 0.14 cannot do, and so is a fatal error here:
  --assignor cooperative  (no cooperative rebalancing: eager assignors only)
  --protocol consumer     (no KIP-848 group protocol)
aiokafka has no delivery.timeout.ms (idempotent batches are retried
forever) and no max.in.flight setting (one request per broker at a time), so
this program reports a record as failed when it is not settled 120 s after
it was sent.
"""

import asyncio
import json
import logging
import os
import sys
import threading
import time


def out(**event):
    sys.stdout.write(json.dumps(event, separators=(",", ":")) + "\n")
    sys.stdout.flush()


def fatal(err):
    out(ev="fatal", err=str(err))
    os._exit(1)


def err_text(exc):
    return f"{type(exc).__name__}: {exc}"


try:
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener, TopicPartition
    from aiokafka.coordinator.assignors.range import RangePartitionAssignor
    from aiokafka.errors import KafkaError
    from aiokafka.partitioner import DefaultPartitioner
except ImportError as e:
    fatal(f"cannot import aiokafka (run tests/clients/python/build.sh): {e}")

REQUIRED = object()
OPTIONS = {
    "produce": {
        "bootstrap": REQUIRED, "topic": REQUIRED, "prefix": REQUIRED, "keys": "8", "rate": "200",
        "idempotent": "false", "acks": "all", "compression": "none", "max": None,
    },
    "consume": {
        "bootstrap": REQUIRED, "topic": REQUIRED, "group": REQUIRED, "assignor": "eager",
        "instance-id": None, "commit": "sync", "assign": None, "from-timestamp": None,
        "protocol": "classic",
    },
}
FLUSH_S = 60  # bound on the final flush
DELIVERY_S = 120  # delivery timeout per record
MAX_UNACKED = 1000


def parse_args(argv):
    if not argv or argv[0] not in OPTIONS:
        fatal(f"usage: client.py produce|consume --option value ... (got {argv[:1]})")
    command, rest = argv[0], argv[1:]
    opts = dict(OPTIONS[command])
    for i in range(0, len(rest), 2):
        name = rest[i][2:]
        if not rest[i].startswith("--") or name not in opts:
            fatal(f"unknown option {rest[i]}")
        if i + 1 >= len(rest):
            fatal(f"missing value for {rest[i]}")
        opts[name] = rest[i + 1]
    for name, value in opts.items():
        if value is REQUIRED:
            fatal(f"--{name} is required")
    return command, opts


def choice(opts, name, values):
    if opts[name] not in values:
        fatal(f"--{name} must be one of {'|'.join(values)}")
    return opts[name]


def integer(opts, name):
    try:
        value = int(opts[name])
        if value >= 0:
            return value
    except ValueError:
        pass
    fatal(f"--{name} must be a non-negative integer")


def watch_stdin(loop, stop):
    """Sets `stop` on a `stop` line or when stdin closes."""

    def read():
        for line in sys.stdin:
            if line.strip() == "stop":
                break
        loop.call_soon_threadsafe(stop.set)

    threading.Thread(target=read, daemon=True).start()


async def wait_event(event, seconds):
    """Waits up to `seconds` for `event`; True when it is set."""
    try:
        await asyncio.wait_for(event.wait(), seconds)
    except asyncio.TimeoutError:
        pass
    return event.is_set()


async def bounded(coro, seconds, what):
    try:
        return await asyncio.wait_for(coro, seconds)
    except asyncio.TimeoutError:
        raise TimeoutError(f"{what} timed out after {seconds} s") from None


# ---- produce ----------------------------------------------------------------


async def produce(opts, stop):
    keys = integer(opts, "keys")
    rate = integer(opts, "rate")
    limit = None if opts["max"] is None else integer(opts, "max")
    idempotent = choice(opts, "idempotent", ["true", "false"]) == "true"
    acks = {"all": "all", "1": 1, "0": 0}[choice(opts, "acks", ["all", "1", "0"])]
    compression = choice(opts, "compression", ["none", "gzip", "snappy", "lz4", "zstd"])
    if keys < 1:
        fatal("--keys must be at least 1")
    if idempotent and acks != "all":
        fatal("aiokafka: an idempotent producer needs --acks all")
    try:
        producer = AIOKafkaProducer(
            bootstrap_servers=opts["bootstrap"],
            client_id=f"switchyard-py-{opts['prefix']}",
            acks=acks,
            enable_idempotence=idempotent,
            compression_type=None if compression == "none" else compression,
            linger_ms=5,
        )
    except RuntimeError as e:  # codec library missing
        fatal(f"compression codec {compression} is unavailable: {e}")
    try:
        await bounded(producer.start(), 60, "producer start")
    except Exception as e:
        fatal(err_text(e))

    counts = {"acked": 0, "failed": 0}
    pending = {}  # record number -> (key, seq, deadline); insertion order is send order
    picked = {}  # record number -> partition, for acks=0 where aiokafka reports no metadata
    settled = asyncio.Event()  # set whenever a record settles

    def fail(i, err):
        key, seq, _ = pending.pop(i)
        picked.pop(i, None)
        out(ev="fail", k=key, s=seq, err=err)
        counts["failed"] += 1
        settled.set()

    def on_delivery(i, fut):
        if i not in pending:  # already reported as failed (delivery timeout)
            return
        if fut.cancelled() or fut.exception() is not None:
            fail(i, "cancelled" if fut.cancelled() else err_text(fut.exception()))
            return
        key, seq, _ = pending.pop(i)
        meta = fut.result()
        if meta is None:  # acks=0
            out(ev="ack", k=key, s=seq, p=picked.pop(i, -1), o=-1)
        else:
            out(ev="ack", k=key, s=seq, p=meta.partition, o=meta.offset)
        counts["acked"] += 1
        settled.set()

    def expire(now):
        while pending:
            i, (_, _, deadline) = next(iter(pending.items()))
            if deadline > now:
                break
            fail(i, f"not acknowledged within the {DELIVERY_S} s delivery timeout")

    partitioner = DefaultPartitioner()

    async def send(i, key, seq):
        partition = None
        if acks == 0:  # pick the partition as aiokafka would, to report it
            all_partitions = sorted(await producer.partitions_for(opts["topic"]))
            partition = picked[i] = partitioner(key.encode(), all_partitions, all_partitions)
        value = f"{key}#{seq}#{'x' * 64}".encode()
        return await producer.send(opts["topic"], value=value, key=key.encode(), partition=partition)

    stopping = asyncio.ensure_future(stop.wait())
    start = time.monotonic()
    i = 0
    while (limit is None or i < limit) and not stop.is_set():
        delay = start + i / rate - time.monotonic() if rate > 0 else 0
        if delay > 0 and await wait_event(stop, delay):
            break
        while len(pending) >= MAX_UNACKED and not stop.is_set():
            settled.clear()
            await wait_event(settled, 1)
            expire(time.monotonic())
        if stop.is_set():
            break
        key = f"{opts['prefix']}-{i % keys}"
        seq = i // keys
        pending[i] = (key, seq, time.monotonic() + DELIVERY_S)
        # send() waits while the partition's buffer is full: stop ends that wait.
        sending = asyncio.ensure_future(send(i, key, seq))
        await asyncio.wait({sending, stopping}, return_when=asyncio.FIRST_COMPLETED)
        if not sending.done():
            sending.cancel()
            del pending[i]  # never handed to aiokafka, so not sent
            picked.pop(i, None)
            break
        try:
            sending.result().add_done_callback(lambda fut, i=i: on_delivery(i, fut))
        except KafkaError as e:
            fail(i, err_text(e))
        expire(time.monotonic())
        i += 1

    # Flush: everything sent ends acknowledged or failed within FLUSH_S.
    deadline = time.monotonic() + FLUSH_S
    try:
        await bounded(producer.flush(), FLUSH_S, "flush")
    except Exception as e:
        print(f"flush: {err_text(e)}", file=sys.stderr)
    while pending and time.monotonic() < deadline:
        settled.clear()
        await wait_event(settled, 0.1)
        expire(time.monotonic())
    for i in list(pending):
        fail(i, f"not acknowledged within the {FLUSH_S} s flush")
    try:
        await bounded(producer.stop(), 5, "producer stop")
    except Exception as e:
        print(f"stop: {err_text(e)}", file=sys.stderr)
    out(ev="done", acked=counts["acked"], failed=counts["failed"])


# ---- consume ----------------------------------------------------------------


def partitions(tps):
    return sorted(tp.partition for tp in tps)


async def consume(opts, stop):
    assignor = choice(opts, "assignor", ["eager", "cooperative"])
    commit = choice(opts, "commit", ["auto", "sync"])
    protocol = choice(opts, "protocol", ["classic", "consumer"])
    if protocol == "consumer":
        fatal("aiokafka has no KIP-848 consumer group protocol (--protocol consumer)")
    if assignor == "cooperative":
        fatal("aiokafka has no cooperative rebalancing (cooperative-sticky): its assignors are eager only")
    assign = None
    if opts["assign"] is not None:
        try:
            assign = sorted({int(p) for p in opts["assign"].split(",")})
        except ValueError:
            fatal("--assign takes a comma-separated list of partitions")
    from_ts = None if opts["from-timestamp"] is None else integer(opts, "from-timestamp")
    if from_ts is not None and assign is None:
        fatal("--from-timestamp needs --assign")

    consumer = AIOKafkaConsumer(
        bootstrap_servers=opts["bootstrap"],
        client_id=f"switchyard-py-{opts['group']}",
        group_id=opts["group"],
        group_instance_id=opts["instance-id"],
        auto_offset_reset="earliest",
        session_timeout_ms=10000,
        heartbeat_interval_ms=1000,
        enable_auto_commit=commit == "auto",
        auto_commit_interval_ms=1000,
        partition_assignment_strategy=(RangePartitionAssignor,),
    )
    uncommitted = {}  # TopicPartition -> next offset, handled but not committed

    async def commit_sync():
        if not uncommitted:
            return
        offsets = dict(uncommitted)
        try:
            await bounded(consumer.commit(offsets), 30, "commit")
        except Exception as e:
            out(ev="commit", ok=False, err=err_text(e))
            return
        for tp, offset in offsets.items():
            if uncommitted.get(tp) == offset:
                del uncommitted[tp]

    class Listener(ConsumerRebalanceListener):
        async def on_partitions_revoked(self, revoked):
            if revoked:  # aiokafka also reports an empty revocation before the first join
                out(ev="revoked", p=partitions(revoked))
            if commit == "sync":
                await commit_sync()
            for tp in revoked:
                uncommitted.pop(tp, None)

        async def on_partitions_assigned(self, assigned):
            out(ev="assigned", p=partitions(assigned))

    async def setup():
        await consumer.start()
        if assign is None:
            consumer.subscribe([opts["topic"]], listener=Listener())
            return
        tps = [TopicPartition(opts["topic"], p) for p in assign]
        consumer.assign(tps)  # positions start from group G's committed offsets
        if from_ts is not None:
            found = await consumer.offsets_for_times({tp: from_ts for tp in tps})
            for tp in tps:
                if found.get(tp) is None:  # no record at or after the timestamp
                    await consumer.seek_to_end(tp)
                else:
                    consumer.seek(tp, found[tp].offset)

    try:
        await bounded(setup(), 60, "consumer start")
    except Exception as e:
        fatal(err_text(e))

    records = 0
    while not stop.is_set():
        try:
            batches = await consumer.getmany(timeout_ms=200)
        except KafkaError as e:
            out(ev="error", err=err_text(e))
            await wait_event(stop, 0.5)
            continue
        for tp, msgs in batches.items():
            for m in msgs:
                value = (m.value or b"").decode("utf-8", "replace").split("#")
                seq = int(value[1]) if len(value) > 2 and value[1].isdigit() else -1
                key = None if m.key is None else m.key.decode("utf-8", "replace")
                out(ev="rec", k=key, s=seq, p=tp.partition, o=m.offset)
                records += 1
            if msgs:
                uncommitted[tp] = msgs[-1].offset + 1
        if commit == "sync":
            await commit_sync()

    if commit == "sync":
        await commit_sync()
    try:
        await bounded(consumer.stop(), 30, "consumer stop")  # leaves the group
    except Exception as e:
        print(f"stop: {err_text(e)}", file=sys.stderr)
    out(ev="done", records=records)


async def main(command, opts):
    stop = asyncio.Event()
    watch_stdin(asyncio.get_running_loop(), stop)
    await (produce if command == "produce" else consume)(opts, stop)


if __name__ == "__main__":
    logging.basicConfig(stream=sys.stderr, level=logging.WARNING, format="%(levelname)s %(name)s %(message)s")
    command, opts = parse_args(sys.argv[1:])
    try:
        asyncio.run(main(command, opts))
    except Exception as e:
        fatal(err_text(e))
    sys.stdout.flush()
    os._exit(0)

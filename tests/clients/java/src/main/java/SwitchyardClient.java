// Kafka client driver for the switchyard real-cluster tests, on the Java
// client (org.apache.kafka:kafka-clients). The command line and the stdout
// protocol are specified in tests/clients/README.md; `admin` is an extra
// toolbox for the Rust tests (create / move-leaders / describe / groups).
//
// stdout carries nothing but JSON lines: System.out is redirected to stderr at
// startup and the JSON lines go to the original stdout, flushed per line.

import java.io.BufferedReader;
import java.io.FileDescriptor;
import java.io.FileOutputStream;
import java.io.InputStreamReader;
import java.io.PrintStream;
import java.nio.charset.StandardCharsets;
import java.time.Duration;
import java.util.ArrayList;
import java.util.Collection;
import java.util.HashMap;
import java.util.HashSet;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Optional;
import java.util.Properties;
import java.util.Set;
import java.util.TreeMap;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.Semaphore;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicLong;
import java.util.stream.Collectors;

import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.admin.AdminClientConfig;
import org.apache.kafka.clients.admin.Config;
import org.apache.kafka.clients.admin.ConfigEntry;
import org.apache.kafka.clients.admin.ListOffsetsResult;
import org.apache.kafka.clients.admin.NewPartitionReassignment;
import org.apache.kafka.clients.admin.NewTopic;
import org.apache.kafka.clients.admin.OffsetSpec;
import org.apache.kafka.clients.admin.TopicDescription;
import org.apache.kafka.clients.consumer.CloseOptions;
import org.apache.kafka.clients.consumer.ConsumerConfig;
import org.apache.kafka.clients.consumer.ConsumerRebalanceListener;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.clients.consumer.ConsumerRecords;
import org.apache.kafka.clients.consumer.CooperativeStickyAssignor;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.clients.consumer.OffsetAndMetadata;
import org.apache.kafka.clients.consumer.OffsetAndTimestamp;
import org.apache.kafka.clients.consumer.RangeAssignor;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerConfig;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.clients.producer.RecordMetadata;
import org.apache.kafka.common.ElectionType;
import org.apache.kafka.common.KafkaException;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.TopicPartitionInfo;
import org.apache.kafka.common.config.ConfigResource;
import org.apache.kafka.common.errors.AuthenticationException;
import org.apache.kafka.common.errors.AuthorizationException;
import org.apache.kafka.common.errors.ElectionNotNeededException;
import org.apache.kafka.common.errors.FencedInstanceIdException;
import org.apache.kafka.common.errors.UnsupportedVersionException;
import org.apache.kafka.common.serialization.StringDeserializer;
import org.apache.kafka.common.serialization.StringSerializer;

public final class SwitchyardClient {
    private static final PrintStream OUT =
            new PrintStream(new FileOutputStream(FileDescriptor.out), false, StandardCharsets.UTF_8);
    /** Counted down by a `stop` line on stdin, or when stdin closes. */
    private static final CountDownLatch STOP = new CountDownLatch(1);
    private static final Duration CALL_TIMEOUT = Duration.ofSeconds(30);
    private static final long WAIT_MS = 60_000;

    /** A fatal error: printed as {"ev":"fatal"} and exit 1. */
    static final class Fatal extends RuntimeException {
        Fatal(String message) {
            super(message);
        }
    }

    public static void main(String[] argv) {
        System.setOut(System.err);
        int code;
        try {
            if (argv.length == 0) {
                throw new Fatal("usage: SwitchyardClient produce|consume|admin ... (see tests/clients/README.md)");
            }
            String[] rest = java.util.Arrays.copyOfRange(argv, 1, argv.length);
            switch (argv[0]) {
                case "produce" -> produce(new Args(rest, "bootstrap", "topic", "prefix", "keys", "rate",
                        "idempotent", "acks", "compression", "max"));
                case "consume" -> consume(new Args(rest, "bootstrap", "topic", "group", "assignor",
                        "instance-id", "commit", "assign", "from-timestamp", "protocol"));
                case "admin" -> admin(rest);
                default -> throw new Fatal("unknown command " + argv[0]);
            }
            code = 0;
        } catch (Throwable e) {
            emit("ev", "fatal", "err", describe(e));
            code = 1;
        }
        OUT.flush();
        System.err.flush();
        // Library threads (if any are left) must not keep the process alive;
        // exit (not halt) so that the native libraries lz4/snappy/zstd
        // unpacked into the temp dir are deleted.
        System.exit(code);
    }

    // ------------------------------------------------------------------ produce

    static void produce(Args a) throws InterruptedException {
        String topic = a.req("topic");
        String prefix = a.req("prefix");
        int keys = a.integer("keys", 8);
        double rate = a.decimal("rate", 200);
        long max = a.integer("max", -1);
        if (keys < 1) {
            throw new Fatal("--keys must be at least 1");
        }

        Properties p = new Properties();
        p.put(ProducerConfig.BOOTSTRAP_SERVERS_CONFIG, a.req("bootstrap"));
        p.put(ProducerConfig.KEY_SERIALIZER_CLASS_CONFIG, StringSerializer.class.getName());
        p.put(ProducerConfig.VALUE_SERIALIZER_CLASS_CONFIG, StringSerializer.class.getName());
        p.put(ProducerConfig.LINGER_MS_CONFIG, "5");
        p.put(ProducerConfig.DELIVERY_TIMEOUT_MS_CONFIG, "120000");
        p.put(ProducerConfig.MAX_IN_FLIGHT_REQUESTS_PER_CONNECTION, "5");
        p.put(ProducerConfig.ACKS_CONFIG, a.choice("acks", "all", "all", "1", "0"));
        p.put(ProducerConfig.COMPRESSION_TYPE_CONFIG,
                a.choice("compression", "none", "none", "gzip", "snappy", "lz4", "zstd"));
        if (a.has("idempotent")) {
            // Left unset, the client enables it unless acks is not `all`.
            p.put(ProducerConfig.ENABLE_IDEMPOTENCE_CONFIG, a.choice("idempotent", "true", "true", "false"));
        }

        startStdinWatcher();
        AtomicLong acked = new AtomicLong();
        AtomicLong failed = new AtomicLong();
        Semaphore window = new Semaphore(1000);
        // Index of every record sent and not yet reported; the first report wins.
        Map<Long, Boolean> pending = new ConcurrentHashMap<>();
        Outcome outcome = (i, md, err) -> {
            if (pending.remove(i) == null) {
                return;
            }
            window.release();
            String key = prefix + "-" + (i % keys);
            long seq = i / keys;
            if (err == null) {
                acked.incrementAndGet();
                emit("ev", "ack", "k", key, "s", seq, "p", md.partition(), "o", md.hasOffset() ? md.offset() : -1);
            } else {
                failed.incrementAndGet();
                emit("ev", "fail", "k", key, "s", seq, "err", describe(err));
            }
        };

        KafkaProducer<String, String> producer = new KafkaProducer<>(p);
        long due = System.nanoTime();
        sending:
        for (long i = 0; max < 0 || i < max; i++) {
            if (rate > 0) {
                if (STOP.await(due - System.nanoTime(), TimeUnit.NANOSECONDS)) {
                    break;
                }
                // After a stall, catch up by at most a second's worth of records.
                due = Math.max(due + (long) (1e9 / rate), System.nanoTime() - 1_000_000_000L);
            }
            while (!window.tryAcquire(100, TimeUnit.MILLISECONDS)) {
                if (STOP.getCount() == 0) {
                    break sending;
                }
            }
            if (STOP.getCount() == 0) {
                window.release();
                break;
            }
            String key = prefix + "-" + (i % keys);
            String value = key + "#" + (i / keys) + "#" + "x".repeat(64);
            long index = i;
            pending.put(index, Boolean.TRUE);
            try {
                producer.send(new ProducerRecord<>(topic, key, value), (md, err) -> outcome.report(index, md, err));
            } catch (KafkaException e) {
                outcome.report(index, null, e);
            }
        }

        // Flush, bounded: wait for the outstanding records, then close (which
        // fails whatever is still outstanding when its time is up).
        long deadline = System.nanoTime() + TimeUnit.MILLISECONDS.toNanos(WAIT_MS);
        while (!pending.isEmpty() && System.nanoTime() < deadline) {
            Thread.sleep(10);
        }
        producer.close(Duration.ofNanos(Math.max(0, deadline - System.nanoTime())));
        for (Long i : new ArrayList<>(pending.keySet())) {
            outcome.report(i, null, new Fatal("not acknowledged within " + WAIT_MS / 1000 + " s of stop"));
        }
        emit("ev", "done", "acked", acked.get(), "failed", failed.get());
    }

    interface Outcome {
        void report(long index, RecordMetadata md, Exception err);
    }

    // ------------------------------------------------------------------ consume

    static void consume(Args a) {
        String topic = a.req("topic");
        String group = a.req("group");
        String assignor = a.choice("assignor", "eager", "eager", "cooperative");
        boolean sync = a.choice("commit", "sync", "sync", "auto").equals("sync");
        boolean classic = a.choice("protocol", "classic", "classic", "consumer").equals("classic");
        if (a.has("from-timestamp") && !a.has("assign")) {
            throw new Fatal("--from-timestamp needs --assign");
        }

        Properties p = new Properties();
        p.put(ConsumerConfig.BOOTSTRAP_SERVERS_CONFIG, a.req("bootstrap"));
        p.put(ConsumerConfig.GROUP_ID_CONFIG, group);
        p.put(ConsumerConfig.KEY_DESERIALIZER_CLASS_CONFIG, StringDeserializer.class.getName());
        p.put(ConsumerConfig.VALUE_DESERIALIZER_CLASS_CONFIG, StringDeserializer.class.getName());
        p.put(ConsumerConfig.AUTO_OFFSET_RESET_CONFIG, "earliest");
        p.put(ConsumerConfig.ENABLE_AUTO_COMMIT_CONFIG, Boolean.toString(!sync));
        p.put(ConsumerConfig.AUTO_COMMIT_INTERVAL_MS_CONFIG, "1000");
        if (classic) {
            p.put(ConsumerConfig.SESSION_TIMEOUT_MS_CONFIG, "10000");
            p.put(ConsumerConfig.HEARTBEAT_INTERVAL_MS_CONFIG, "1000");
            p.put(ConsumerConfig.PARTITION_ASSIGNMENT_STRATEGY_CONFIG, assignor.equals("eager")
                    ? RangeAssignor.class.getName() : CooperativeStickyAssignor.class.getName());
        } else {
            // KIP-848: session timeout and heartbeat interval are the broker's
            // (group.consumer.*; the client rejects them); the assignor runs
            // on the broker: range for eager, uniform for cooperative (as
            // franz-go maps its balancers).
            p.put(ConsumerConfig.GROUP_PROTOCOL_CONFIG, "consumer");
            p.put(ConsumerConfig.GROUP_REMOTE_ASSIGNOR_CONFIG, assignor.equals("eager") ? "range" : "uniform");
        }
        if (a.has("instance-id")) {
            p.put(ConsumerConfig.GROUP_INSTANCE_ID_CONFIG, a.req("instance-id"));
        }

        startStdinWatcher();
        long records = 0;
        KafkaConsumer<String, String> consumer = new KafkaConsumer<>(p);
        if (a.has("assign")) {
            assign(consumer, topic, a);
        } else {
            consumer.subscribe(List.of(topic), new ConsumerRebalanceListener() {
                @Override
                public void onPartitionsRevoked(Collection<TopicPartition> parts) {
                    if (!parts.isEmpty()) {
                        if (sync) {
                            commit(consumer);
                        }
                        emit("ev", "revoked", "p", partitions(parts));
                    }
                }

                @Override
                public void onPartitionsAssigned(Collection<TopicPartition> parts) {
                    emit("ev", "assigned", "p", partitions(parts));
                }

                @Override
                public void onPartitionsLost(Collection<TopicPartition> parts) {
                    if (!parts.isEmpty()) {
                        emit("ev", "lost", "p", partitions(parts));
                    }
                }
            });
        }

        int failures = 0;
        while (STOP.getCount() > 0) {
            ConsumerRecords<String, String> batch;
            try {
                batch = consumer.poll(Duration.ofMillis(200));
                failures = 0;
            } catch (UnsupportedVersionException | FencedInstanceIdException
                     | AuthenticationException | AuthorizationException e) {
                throw new Fatal(describe(e)); // the consumer cannot go on
            } catch (KafkaException | IllegalStateException e) {
                emit("ev", "error", "err", describe(e));
                if (++failures >= 50) {
                    throw new Fatal("poll failed 50 times in a row: " + describe(e));
                }
                sleep(200);
                continue;
            }
            for (ConsumerRecord<String, String> r : batch) {
                emit("ev", "rec", "k", r.key(), "s", sequence(r.value()), "p", r.partition(), "o", r.offset());
                records++;
            }
            if (sync && !batch.isEmpty()) {
                commit(consumer);
            }
        }
        if (sync) {
            commit(consumer);
        }
        // close() leaves the group (a static member keeps its membership,
        // as the client does by default) and commits in auto mode.
        consumer.close(CloseOptions.timeout(CALL_TIMEOUT));
        emit("ev", "done", "records", records);
    }

    static void assign(KafkaConsumer<String, String> consumer, String topic, Args a) {
        List<TopicPartition> tps = new ArrayList<>();
        for (String part : a.req("assign").split(",")) {
            tps.add(new TopicPartition(topic, Integer.parseInt(part.trim())));
        }
        consumer.assign(tps);
        if (a.has("from-timestamp")) {
            long ts = Long.parseLong(a.req("from-timestamp"));
            Map<TopicPartition, Long> query = new HashMap<>();
            tps.forEach(tp -> query.put(tp, ts));
            Map<TopicPartition, OffsetAndTimestamp> found = consumer.offsetsForTimes(query, CALL_TIMEOUT);
            for (TopicPartition tp : tps) {
                OffsetAndTimestamp at = found.get(tp);
                if (at != null) {
                    consumer.seek(tp, at.offset());
                } else {
                    consumer.seekToEnd(List.of(tp)); // nothing at or after MS yet
                }
            }
        } else {
            Map<TopicPartition, OffsetAndMetadata> committed = consumer.committed(new HashSet<>(tps), CALL_TIMEOUT);
            for (TopicPartition tp : tps) {
                OffsetAndMetadata at = committed.get(tp);
                if (at != null) {
                    consumer.seek(tp, at);
                } else {
                    consumer.seekToBeginning(List.of(tp));
                }
            }
        }
        emit("ev", "assigned", "p", partitions(tps));
    }

    static void commit(KafkaConsumer<String, String> consumer) {
        try {
            consumer.commitSync(CALL_TIMEOUT);
        } catch (KafkaException e) {
            emit("ev", "commit", "ok", false, "err", describe(e));
        }
    }

    /** The per-key sequence from a `{key}#{seq}#xxx` value, -1 when it does not parse. */
    static long sequence(String value) {
        if (value == null) {
            return -1;
        }
        String[] parts = value.split("#", 3);
        try {
            return parts.length >= 2 ? Long.parseUnsignedLong(parts[1]) : -1;
        } catch (NumberFormatException e) {
            return -1;
        }
    }

    static List<Integer> partitions(Collection<TopicPartition> tps) {
        return tps.stream().map(TopicPartition::partition).sorted().collect(Collectors.toList());
    }

    // ------------------------------------------------------------------ admin

    static void admin(String[] argv) throws Exception {
        if (argv.length == 0) {
            throw new Fatal("usage: admin create|move-leaders|describe|groups ...");
        }
        String[] rest = java.util.Arrays.copyOfRange(argv, 1, argv.length);
        Args a = switch (argv[0]) {
            case "create" -> new Args(rest, "bootstrap", "topic", "partitions", "rf", "config");
            case "move-leaders" -> new Args(rest, "bootstrap", "topic", "rounds");
            case "describe" -> new Args(rest, "bootstrap", "topic");
            case "groups" -> new Args(rest, "bootstrap", "group", "topic");
            default -> throw new Fatal("unknown admin command " + argv[0]);
        };
        Properties p = new Properties();
        p.put(AdminClientConfig.BOOTSTRAP_SERVERS_CONFIG, a.req("bootstrap"));
        p.put(AdminClientConfig.REQUEST_TIMEOUT_MS_CONFIG, "30000");
        p.put(AdminClientConfig.DEFAULT_API_TIMEOUT_MS_CONFIG, "60000");
        try (Admin admin = Admin.create(p)) {
            switch (argv[0]) {
                case "create" -> create(admin, a);
                case "move-leaders" -> moveLeaders(admin, a);
                case "describe" -> describeTopic(admin, a);
                default -> groupOffsets(admin, a);
            }
        }
    }

    static void create(Admin admin, Args a) throws Exception {
        String topic = a.req("topic");
        int partitions = a.integer("partitions", 1);
        Map<String, String> configs = new LinkedHashMap<>();
        for (String kv : a.all("config")) {
            int eq = kv.indexOf('=');
            if (eq <= 0) {
                throw new Fatal("--config wants key=value, got " + kv);
            }
            configs.put(kv.substring(0, eq), kv.substring(eq + 1));
        }
        NewTopic t = new NewTopic(topic, partitions, (short) a.integer("rf", 1)).configs(configs);
        get(admin.createTopics(List.of(t)).all());
        waitUntil("all partitions of " + topic + " have leaders", () -> {
            List<TopicPartitionInfo> parts = describe(admin, topic).partitions();
            return parts.size() == partitions && parts.stream().allMatch(i -> i.leader() != null && i.leader().id() >= 0);
        });
        emit("ev", "done");
    }

    static void moveLeaders(Admin admin, Args a) throws Exception {
        String topic = a.req("topic");
        int rounds = a.integer("rounds", 1);
        for (int round = 0; round < rounds; round++) {
            Map<TopicPartition, List<Integer>> target = new TreeMap<>((x, y) -> Integer.compare(x.partition(), y.partition()));
            for (TopicPartitionInfo info : describe(admin, topic).partitions()) {
                List<Integer> replicas = info.replicas().stream().map(n -> n.id()).collect(Collectors.toList());
                if (replicas.size() < 2) {
                    throw new Fatal("partition " + info.partition() + " of " + topic
                            + " has " + replicas.size() + " replica(s): moving leaders needs a replication factor of at least 2");
                }
                replicas.add(replicas.remove(0)); // rotate by one position
                target.put(new TopicPartition(topic, info.partition()), replicas);
            }
            Map<TopicPartition, Optional<NewPartitionReassignment>> reassign = new HashMap<>();
            target.forEach((tp, r) -> reassign.put(tp, Optional.of(new NewPartitionReassignment(r))));
            get(admin.alterPartitionReassignments(reassign).all());
            waitUntil("reassignment of " + topic + " finished",
                    () -> get(admin.listPartitionReassignments(target.keySet()).reassignments()).isEmpty());
            waitUntil("leaders of " + topic + " moved to the preferred replicas", () -> {
                Map<TopicPartition, Optional<Throwable>> res =
                        get(admin.electLeaders(ElectionType.PREFERRED, target.keySet()).partitions());
                for (Map.Entry<TopicPartition, Optional<Throwable>> e : res.entrySet()) {
                    Throwable err = e.getValue().orElse(null);
                    if (err != null && !(err instanceof ElectionNotNeededException)) {
                        System.err.println("electLeaders " + e.getKey() + ": " + err); // retried until the wait ends
                    }
                }
                for (TopicPartitionInfo info : describe(admin, topic).partitions()) {
                    List<Integer> want = target.get(new TopicPartition(topic, info.partition()));
                    if (info.leader() == null || want == null || info.leader().id() != want.get(0)) {
                        return false;
                    }
                }
                return true;
            });
        }
        emit("ev", "done", "rounds", rounds);
    }

    static void describeTopic(Admin admin, Args a) throws Exception {
        String topic = a.req("topic");
        TopicDescription d = describe(admin, topic);
        // The current leader epoch of each partition, as ListOffsets(latest) reports it.
        Map<TopicPartition, OffsetSpec> latest = new HashMap<>();
        d.partitions().forEach(i -> latest.put(new TopicPartition(topic, i.partition()), OffsetSpec.latest()));
        Map<TopicPartition, ListOffsetsResult.ListOffsetsResultInfo> ends = get(admin.listOffsets(latest).all());
        List<Map<String, Object>> parts = new ArrayList<>();
        for (TopicPartitionInfo i : d.partitions()) {
            Map<String, Object> m = new LinkedHashMap<>();
            m.put("p", i.partition());
            m.put("leader", i.leader() == null ? -1 : i.leader().id());
            m.put("replicas", i.replicas().stream().map(n -> n.id()).collect(Collectors.toList()));
            m.put("isr", i.isr().stream().map(n -> n.id()).collect(Collectors.toList()));
            ListOffsetsResult.ListOffsetsResultInfo end = ends.get(new TopicPartition(topic, i.partition()));
            m.put("epoch", end == null ? -1 : end.leaderEpoch().orElse(-1));
            m.put("end", end == null ? -1 : end.offset());
            parts.add(m);
        }
        ConfigResource res = new ConfigResource(ConfigResource.Type.TOPIC, topic);
        Config config = get(admin.describeConfigs(List.of(res)).all()).get(res);
        Map<String, Object> configs = new TreeMap<>();
        for (ConfigEntry e : config.entries()) {
            if (e.source() == ConfigEntry.ConfigSource.DYNAMIC_TOPIC_CONFIG) {
                configs.put(e.name(), e.value());
            }
        }
        emit("ev", "topic", "partitions", parts, "configs", configs);
    }

    static void groupOffsets(Admin admin, Args a) throws Exception {
        String topic = a.req("topic");
        Map<TopicPartition, OffsetAndMetadata> all =
                get(admin.listConsumerGroupOffsets(a.req("group")).partitionsToOffsetAndMetadata());
        Map<String, Object> offsets = new TreeMap<>((x, y) -> Integer.compare(Integer.parseInt(x), Integer.parseInt(y)));
        all.forEach((tp, om) -> {
            if (tp.topic().equals(topic) && om != null) {
                offsets.put(Integer.toString(tp.partition()), om.offset());
            }
        });
        emit("ev", "committed", "offsets", offsets);
    }

    static TopicDescription describe(Admin admin, String topic) throws Exception {
        return get(admin.describeTopics(List.of(topic)).allTopicNames()).get(topic);
    }

    static <T> T get(org.apache.kafka.common.KafkaFuture<T> future) throws Exception {
        try {
            return future.get(WAIT_MS, TimeUnit.MILLISECONDS);
        } catch (ExecutionException e) {
            throw e.getCause() instanceof Exception ? (Exception) e.getCause() : e;
        }
    }

    interface Check {
        boolean ok() throws Exception;
    }

    /** Polls `check` every 200 ms for at most 60 s; the last error (if any) is in the fatal message. */
    static void waitUntil(String what, Check check) throws Exception {
        long deadline = System.nanoTime() + TimeUnit.MILLISECONDS.toNanos(WAIT_MS);
        String last = "";
        while (true) {
            try {
                if (check.ok()) {
                    return;
                }
            } catch (KafkaException e) {
                last = ": " + describe(e);
            }
            if (System.nanoTime() > deadline) {
                throw new Fatal("timed out after " + WAIT_MS / 1000 + " s waiting until " + what + last);
            }
            sleep(200);
        }
    }

    // ------------------------------------------------------------------ plumbing

    static void startStdinWatcher() {
        Thread t = new Thread(() -> {
            try (BufferedReader in = new BufferedReader(new InputStreamReader(System.in, StandardCharsets.UTF_8))) {
                String line;
                while ((line = in.readLine()) != null && !line.trim().equals("stop")) {
                    // other lines are ignored
                }
            } catch (Exception e) {
                // a broken stdin counts as closed
            }
            STOP.countDown();
        }, "stdin");
        t.setDaemon(true);
        t.start();
    }

    static void sleep(long ms) {
        try {
            Thread.sleep(ms);
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
        }
    }

    static String describe(Throwable e) {
        while ((e instanceof ExecutionException || e.getClass() == KafkaException.class) && e.getCause() != null) {
            e = e.getCause();
        }
        if (e instanceof Fatal) {
            return e.getMessage();
        }
        return e.getClass().getSimpleName() + (e.getMessage() == null ? "" : ": " + e.getMessage());
    }

    /** Prints one JSON object from key/value pairs, flushed. */
    static synchronized void emit(Object... kv) {
        StringBuilder sb = new StringBuilder("{");
        for (int i = 0; i < kv.length; i += 2) {
            if (i > 0) {
                sb.append(',');
            }
            json(sb, kv[i]);
            sb.append(':');
            json(sb, kv[i + 1]);
        }
        OUT.print(sb.append("}\n"));
        OUT.flush();
    }

    static void json(StringBuilder sb, Object v) {
        if (v == null) {
            sb.append("null");
        } else if (v instanceof Number || v instanceof Boolean) {
            sb.append(v);
        } else if (v instanceof Map<?, ?> m) {
            sb.append('{');
            boolean first = true;
            for (Map.Entry<?, ?> e : m.entrySet()) {
                if (!first) {
                    sb.append(',');
                }
                first = false;
                json(sb, String.valueOf(e.getKey()));
                sb.append(':');
                json(sb, e.getValue());
            }
            sb.append('}');
        } else if (v instanceof Collection<?> c) {
            sb.append('[');
            boolean first = true;
            for (Object o : c) {
                if (!first) {
                    sb.append(',');
                }
                first = false;
                json(sb, o);
            }
            sb.append(']');
        } else {
            String s = v.toString();
            sb.append('"');
            for (int i = 0; i < s.length(); i++) {
                char c = s.charAt(i);
                switch (c) {
                    case '"' -> sb.append("\\\"");
                    case '\\' -> sb.append("\\\\");
                    case '\n' -> sb.append("\\n");
                    case '\r' -> sb.append("\\r");
                    case '\t' -> sb.append("\\t");
                    default -> {
                        if (c < 0x20) {
                            sb.append(String.format("\\u%04x", (int) c));
                        } else {
                            sb.append(c);
                        }
                    }
                }
            }
            sb.append('"');
        }
    }

    /** `--name value` options; only the names given are accepted, `--config` may repeat. */
    static final class Args {
        private final Map<String, List<String>> values = new HashMap<>();

        Args(String[] argv, String... known) {
            Set<String> allowed = Set.of(known);
            for (int i = 0; i < argv.length; i++) {
                String name = argv[i].startsWith("--") ? argv[i].substring(2) : null;
                if (name == null || !allowed.contains(name)) {
                    throw new Fatal("unexpected argument " + argv[i] + " (options: --" + String.join(" --", known) + ")");
                }
                if (i + 1 >= argv.length) {
                    throw new Fatal("--" + name + " needs a value");
                }
                values.computeIfAbsent(name, k -> new ArrayList<>()).add(argv[++i]);
            }
        }

        boolean has(String name) {
            return values.containsKey(name);
        }

        List<String> all(String name) {
            return values.getOrDefault(name, List.of());
        }

        String req(String name) {
            List<String> v = values.get(name);
            if (v == null) {
                throw new Fatal("--" + name + " is required");
            }
            return v.get(v.size() - 1);
        }

        String choice(String name, String dflt, String... options) {
            String v = has(name) ? req(name) : dflt;
            if (!List.of(options).contains(v)) {
                throw new Fatal("--" + name + " must be one of " + String.join("|", options) + ", got " + v);
            }
            return v;
        }

        int integer(String name, int dflt) {
            try {
                return has(name) ? Integer.parseInt(req(name)) : dflt;
            } catch (NumberFormatException e) {
                throw new Fatal("--" + name + " wants an integer, got " + req(name));
            }
        }

        double decimal(String name, double dflt) {
            try {
                return has(name) ? Double.parseDouble(req(name)) : dflt;
            } catch (NumberFormatException e) {
                throw new Fatal("--" + name + " wants a number, got " + req(name));
            }
        }
    }
}

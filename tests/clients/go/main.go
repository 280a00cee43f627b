// franz-client: Kafka client driver for the switchyard real-cluster tests, on
// github.com/twmb/franz-go. The command line and the stdout protocol are
// specified in tests/clients/README.md.
//
// stdout carries nothing but JSON lines, one per event, flushed per line;
// library logs (warnings and up) go to stderr.
package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
)

const (
	callTimeout = 30 * time.Second // one commit, offset fetch, leave
	flushWait   = 60 * time.Second // outstanding records after stop
)

var (
	outMu sync.Mutex
	out   = bufio.NewWriter(os.Stdout)
)

// emit prints one JSON object built from key/value pairs, in order, flushed.
func emit(kv ...any) {
	var b strings.Builder
	b.WriteByte('{')
	for i := 0; i < len(kv); i += 2 {
		if i > 0 {
			b.WriteByte(',')
		}
		k, _ := json.Marshal(kv[i])
		v, err := json.Marshal(kv[i+1])
		if err != nil {
			v, _ = json.Marshal(fmt.Sprint(kv[i+1]))
		}
		b.Write(k)
		b.WriteByte(':')
		b.Write(v)
	}
	b.WriteString("}\n")
	outMu.Lock()
	defer outMu.Unlock()
	out.WriteString(b.String())
	out.Flush()
}

type fatalError string

func (e fatalError) Error() string { return string(e) }

func fatalf(format string, args ...any) error { return fatalError(fmt.Sprintf(format, args...)) }

func main() {
	err := run(os.Args[1:])
	if err != nil {
		emit("ev", "fatal", "err", err.Error())
		os.Exit(1)
	}
	os.Exit(0)
}

func run(argv []string) error {
	if len(argv) == 0 {
		return fatalf("usage: franz-client produce|consume ... (see tests/clients/README.md)")
	}
	switch argv[0] {
	case "produce":
		a, err := parseArgs(argv[1:], "bootstrap", "topic", "prefix", "keys", "rate",
			"idempotent", "acks", "compression", "max")
		if err != nil {
			return err
		}
		return produce(a)
	case "consume":
		a, err := parseArgs(argv[1:], "bootstrap", "topic", "group", "assignor",
			"instance-id", "commit", "assign", "from-timestamp", "protocol")
		if err != nil {
			return err
		}
		return consume(a)
	}
	return fatalf("unknown command %s", argv[0])
}

// watchStdin returns a context canceled by a `stop` line on stdin, or when
// stdin closes.
func watchStdin() context.Context {
	ctx, cancel := context.WithCancel(context.Background())
	go func() {
		defer cancel()
		sc := bufio.NewScanner(os.Stdin)
		for sc.Scan() {
			if strings.TrimSpace(sc.Text()) == "stop" {
				return
			}
		}
	}()
	return ctx
}

func baseOpts(bootstrap string) []kgo.Opt {
	return []kgo.Opt{
		kgo.SeedBrokers(strings.Split(bootstrap, ",")...),
		kgo.WithLogger(kgo.BasicLogger(os.Stderr, kgo.LogLevelWarn, nil)),
	}
}

// ------------------------------------------------------------------ produce

func produce(a args) error {
	topic, err := a.req("topic")
	if err != nil {
		return err
	}
	prefix, err := a.req("prefix")
	if err != nil {
		return err
	}
	bootstrap, err := a.req("bootstrap")
	if err != nil {
		return err
	}
	keys, err := a.integer("keys", 8)
	if err != nil {
		return err
	}
	if keys < 1 {
		return fatalf("--keys must be at least 1")
	}
	max, err := a.integer("max", -1)
	if err != nil {
		return err
	}
	rate, err := a.decimal("rate", 200)
	if err != nil {
		return err
	}
	acksArg, err := a.choice("acks", "all", "all", "1", "0")
	if err != nil {
		return err
	}
	codecArg, err := a.choice("compression", "none", "none", "gzip", "snappy", "lz4", "zstd")
	if err != nil {
		return err
	}

	opts := append(baseOpts(bootstrap),
		kgo.ProducerLinger(5*time.Millisecond),
		kgo.RecordDeliveryTimeout(120*time.Second),
		kgo.ProducerBatchCompression(map[string]kgo.CompressionCodec{
			"none": kgo.NoCompression(), "gzip": kgo.GzipCompression(), "snappy": kgo.SnappyCompression(),
			"lz4": kgo.Lz4Compression(), "zstd": kgo.ZstdCompression(),
		}[codecArg]),
		kgo.RequiredAcks(map[string]kgo.Acks{"all": kgo.AllISRAcks(), "1": kgo.LeaderAck(), "0": kgo.NoAck()}[acksArg]),
	)
	// Idempotence is franz-go's default; left unset it is turned off for
	// acks 0/1 (as the Java client does). Explicitly on with acks 0/1 the
	// client refuses ("idempotency requires acks=all").
	idempotent := acksArg == "all"
	if a.has("idempotent") {
		v, err := a.choice("idempotent", "true", "true", "false")
		if err != nil {
			return err
		}
		idempotent = v == "true"
	}
	if !idempotent {
		opts = append(opts, kgo.DisableIdempotentWrite(), kgo.MaxProduceRequestsInflightPerBroker(5))
	}
	cl, err := kgo.NewClient(opts...)
	if err != nil {
		return err
	}

	stop := watchStdin()
	var acked, failed atomic.Int64
	window := make(chan struct{}, 1000)
	var pendingMu sync.Mutex
	pending := map[int64]bool{}
	report := func(i int64, r *kgo.Record, err error) {
		pendingMu.Lock()
		was := pending[i]
		delete(pending, i)
		pendingMu.Unlock()
		if !was {
			return
		}
		<-window
		key, seq := fmt.Sprintf("%s-%d", prefix, i%int64(keys)), i/int64(keys)
		if err != nil {
			failed.Add(1)
			emit("ev", "fail", "k", key, "s", seq, "err", err.Error())
			return
		}
		acked.Add(1)
		offset := r.Offset
		if acksArg == "0" {
			offset = -1 // franz-go invents offsets counting from 0 for acks=0
		}
		emit("ev", "ack", "k", key, "s", seq, "p", r.Partition, "o", offset)
	}

	due := time.Now()
sending:
	for i := int64(0); max < 0 || i < int64(max); i++ {
		if rate > 0 {
			select {
			case <-stop.Done():
				break sending
			case <-time.After(time.Until(due)):
			}
			// After a stall, catch up by at most a second's worth of records.
			due = due.Add(time.Duration(float64(time.Second) / rate))
			if lag := time.Now().Add(-time.Second); due.Before(lag) {
				due = lag
			}
		}
		select {
		case <-stop.Done():
			break sending
		case window <- struct{}{}:
		}
		if stop.Err() != nil {
			<-window
			break
		}
		key := fmt.Sprintf("%s-%d", prefix, i%int64(keys))
		value := fmt.Sprintf("%s#%d#%s", key, i/int64(keys), strings.Repeat("x", 64))
		pendingMu.Lock()
		pending[i] = true
		pendingMu.Unlock()
		index := i
		cl.Produce(context.Background(), &kgo.Record{Topic: topic, Key: []byte(key), Value: []byte(value)},
			func(r *kgo.Record, err error) { report(index, r, err) })
	}

	// Flush, bounded; then close (which fails what is still buffered) and
	// report whatever is left as failed.
	ctx, cancel := context.WithTimeout(context.Background(), flushWait)
	flushErr := cl.Flush(ctx)
	cancel()
	if flushErr != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		if err := cl.AbortBufferedRecords(ctx); err != nil {
			fmt.Fprintf(os.Stderr, "aborting buffered records: %v\n", err)
		}
		cancel()
	}
	closeBounded(cl, 10*time.Second)
	pendingMu.Lock()
	var left []int64
	for i := range pending {
		left = append(left, i)
	}
	pendingMu.Unlock()
	slices.Sort(left)
	for _, i := range left {
		report(i, nil, fmt.Errorf("not acknowledged within %v of stop", flushWait))
	}
	emit("ev", "done", "acked", acked.Load(), "failed", failed.Load())
	return nil
}

// closeBounded closes the client, giving up waiting after d.
func closeBounded(cl *kgo.Client, d time.Duration) {
	done := make(chan struct{})
	go func() {
		cl.CloseAllowingRebalance()
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(d):
		fmt.Fprintf(os.Stderr, "client close did not finish within %v\n", d)
	}
}

// ------------------------------------------------------------------ consume

func consume(a args) error {
	bootstrap, err := a.req("bootstrap")
	if err != nil {
		return err
	}
	topic, err := a.req("topic")
	if err != nil {
		return err
	}
	group, err := a.req("group")
	if err != nil {
		return err
	}
	assignor, err := a.choice("assignor", "eager", "eager", "cooperative")
	if err != nil {
		return err
	}
	commitMode, err := a.choice("commit", "sync", "sync", "auto")
	if err != nil {
		return err
	}
	protocol, err := a.choice("protocol", "classic", "classic", "consumer")
	if err != nil {
		return err
	}
	if a.has("from-timestamp") && !a.has("assign") {
		return fatalf("--from-timestamp needs --assign")
	}
	syncCommit := commitMode == "sync"

	opts := append(baseOpts(bootstrap), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	if a.has("assign") {
		return consumeAssigned(a, opts, topic, group)
	}
	balancer := kgo.RangeBalancer()
	if assignor == "cooperative" {
		balancer = kgo.CooperativeStickyBalancer()
	}
	var cl *kgo.Client
	commit := func(ctx context.Context) {
		if err := cl.CommitUncommittedOffsets(ctx); err != nil {
			emit("ev", "commit", "ok", false, "err", err.Error())
		}
	}
	opts = append(opts,
		kgo.ConsumerGroup(group),
		kgo.ConsumeTopics(topic),
		kgo.Balancers(balancer),
		kgo.SessionTimeout(10*time.Second),
		kgo.HeartbeatInterval(time.Second),
		// Rebalance callbacks run only between polls (after the records of
		// a poll are handled and committed), as in the Java client.
		kgo.BlockRebalanceOnPoll(),
		kgo.OnPartitionsAssigned(func(_ context.Context, _ *kgo.Client, m map[string][]int32) {
			emit("ev", "assigned", "p", parts(m, topic))
		}),
		// Replaces the library's default revoke callback (which commits in
		// auto mode): commit what was polled, in both modes.
		kgo.OnPartitionsRevoked(func(ctx context.Context, _ *kgo.Client, m map[string][]int32) {
			if len(parts(m, topic)) == 0 {
				return // franz-go calls this at the end of every session
			}
			cctx, cancel := context.WithTimeout(ctx, callTimeout)
			commit(cctx)
			cancel()
			emit("ev", "revoked", "p", parts(m, topic))
		}),
		kgo.OnPartitionsLost(func(_ context.Context, _ *kgo.Client, m map[string][]int32) {
			if len(parts(m, topic)) > 0 {
				emit("ev", "lost", "p", parts(m, topic))
			}
		}),
	)
	if syncCommit {
		opts = append(opts, kgo.DisableAutoCommit())
	} else {
		opts = append(opts, kgo.AutoCommitInterval(time.Second))
	}
	if a.has("instance-id") {
		id, _ := a.req("instance-id")
		opts = append(opts, kgo.InstanceID(id))
	}
	if protocol == "consumer" {
		// KIP-848 in franz-go is ServerSideBalancer: the broker assigns with
		// "range" (RangeBalancer) or "uniform" (CooperativeStickyBalancer);
		// session timeout and heartbeat interval are the broker's. franz-go
		// silently uses the classic protocol instead when the cluster does
		// not offer ConsumerGroupHeartbeat v1+ (checked first) or answers it
		// with UNSUPPORTED_VERSION (caught in its log): both are fatal here.
		if err := require848(bootstrap); err != nil {
			return err
		}
		opts = append(opts, kgo.ServerSideBalancer(), kgo.WithLogger(fallbackWatch{}))
	}
	cl, err = kgo.NewClient(opts...)
	if err != nil {
		return err
	}
	stop := watchStdin()
	records, err := pollLoop(stop, cl, func(*kgo.Record) {}, func() {
		if syncCommit {
			ctx, cancel := context.WithTimeout(context.Background(), callTimeout)
			commit(ctx)
			cancel()
		}
	})
	if err != nil {
		return err
	}
	if syncCommit {
		ctx, cancel := context.WithTimeout(context.Background(), callTimeout)
		commit(ctx)
		cancel()
	}
	// Leave the group (a static member keeps its membership, as franz-go
	// does by default), bounded, then close.
	ctx, cancel := context.WithTimeout(context.Background(), callTimeout)
	cl.AllowRebalance()
	if err := cl.LeaveGroupContext(ctx); err != nil {
		emit("ev", "error", "err", "leave group: "+err.Error())
	}
	cancel()
	closeBounded(cl, callTimeout)
	emit("ev", "done", "records", records)
	return nil
}

// pollLoop prints the records of each poll (passing each to handle), calls
// handled after each non-empty poll, and returns after stop. Errors are
// printed; unrecoverable ones, or 50 polls in a row that return only
// errors, are fatal.
func pollLoop(stop context.Context, cl *kgo.Client, handle func(*kgo.Record), handled func()) (int64, error) {
	var records int64
	failures := 0
	for stop.Err() == nil {
		// Records returned with the stop are handled too: the poll marked
		// them uncommitted, so the final commit covers them.
		fetches := cl.PollFetches(stop)
		var last, fatal error
		fetches.EachError(func(t string, p int32, err error) {
			switch {
			case errors.Is(err, context.Canceled):
			case unrecoverable(err):
				fatal = err
			default:
				last = err
				emit("ev", "error", "err", fmt.Sprintf("%s[%d]: %v", t, p, err))
			}
		})
		if fatal != nil {
			cl.AllowRebalance()
			return records, fatal
		}
		n := 0
		fetches.EachRecord(func(r *kgo.Record) {
			var key any
			if r.Key != nil {
				key = string(r.Key)
			}
			emit("ev", "rec", "k", key, "s", sequence(r.Value), "p", r.Partition, "o", r.Offset)
			handle(r)
			n++
		})
		records += int64(n)
		if n > 0 {
			handled()
		}
		cl.AllowRebalance()
		switch {
		case fetches.IsClientClosed():
			return records, fatalf("client closed")
		case last != nil && n == 0:
			if failures++; failures >= 50 {
				return records, fatalf("poll failed 50 times in a row: %v", last)
			}
			time.Sleep(200 * time.Millisecond)
		default:
			failures = 0
		}
	}
	return records, nil
}

// unrecoverable tells the errors that franz-go would retry forever without a
// chance of success; the Java client gives up on the same ones.
func unrecoverable(err error) bool {
	for _, e := range []error{kerr.UnsupportedVersion, kerr.FencedInstanceID, kerr.GroupAuthorizationFailed,
		kerr.TopicAuthorizationFailed, kerr.ClusterAuthorizationFailed, kerr.SaslAuthenticationFailed} {
		if errors.Is(err, e) {
			return true
		}
	}
	return false
}

// consumeAssigned is --assign: no group membership; start at the offsets
// committed for the group (earliest when none) or, with --from-timestamp, at
// the first offset at or after it; commit after each poll (sync mode) through
// the admin API (as a simple, member-less group).
func consumeAssigned(a args, opts []kgo.Opt, topic, group string) error {
	var ps []int32
	assignArg, _ := a.req("assign")
	for _, s := range strings.Split(assignArg, ",") {
		p, err := strconv.ParseInt(strings.TrimSpace(s), 10, 32)
		if err != nil {
			return fatalf("--assign wants partition numbers, got %q", assignArg)
		}
		ps = append(ps, int32(p))
	}
	commitMode, _ := a.choice("commit", "sync", "sync", "auto")
	// The direct consumer is created with a placeholder partition map and
	// given its real start offsets once they are known.
	cl, err := kgo.NewClient(append(opts, kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{}))...)
	if err != nil {
		return err
	}
	adm := kadm.NewClient(cl)
	start := map[int32]kgo.Offset{}
	if a.has("from-timestamp") {
		ts, err := a.integer("from-timestamp", 0)
		if err != nil {
			return err
		}
		for _, p := range ps {
			start[p] = kgo.NewOffset().AfterMilli(int64(ts))
		}
	} else {
		ctx, cancel := context.WithTimeout(context.Background(), callTimeout)
		committed, err := adm.FetchOffsets(ctx, group)
		cancel()
		if err == nil {
			err = committed.Error()
		}
		if err != nil {
			return fatalf("fetching the offsets committed for %s: %v", group, err)
		}
		for _, p := range ps {
			start[p] = kgo.NewOffset().AtStart()
			if o, ok := committed.Lookup(topic, p); ok && o.At >= 0 {
				start[p] = kgo.NewOffset().At(o.At).WithEpoch(o.LeaderEpoch)
			}
		}
	}
	cl.AddConsumePartitions(map[string]map[int32]kgo.Offset{topic: start})
	emit("ev", "assigned", "p", ps)

	next := kadm.Offsets{} // the positions after the handled records
	commit := func() {
		if len(next) == 0 {
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), callTimeout)
		defer cancel()
		resp, err := adm.CommitOffsets(ctx, group, next)
		if err == nil {
			err = resp.Error()
		}
		if err != nil {
			emit("ev", "commit", "ok", false, "err", err.Error())
		}
	}
	// Without a group the library has no auto commit: --commit auto commits
	// at most once a second from the poll loop.
	lastCommit := time.Now()
	records, err := pollLoop(watchStdin(), cl,
		func(r *kgo.Record) {
			next.Add(kadm.Offset{Topic: r.Topic, Partition: r.Partition, At: r.Offset + 1, LeaderEpoch: r.LeaderEpoch})
		},
		func() {
			if commitMode == "sync" || time.Since(lastCommit) >= time.Second {
				commit()
				lastCommit = time.Now()
			}
		})
	if err != nil {
		return err
	}
	commit()
	closeBounded(cl, callTimeout)
	emit("ev", "done", "records", records)
	return nil
}

// fallbackWatch logs warnings and up to stderr, and turns franz-go's
// (info-level) fallback from KIP-848 to the classic protocol into a fatal
// error.
type fallbackWatch struct{}

func (fallbackWatch) Level() kgo.LogLevel { return kgo.LogLevelInfo }

func (fallbackWatch) Log(level kgo.LogLevel, msg string, kv ...any) {
	if strings.HasPrefix(msg, "falling back to standard consumer group management") {
		emit("ev", "fatal", "err", "--protocol consumer: franz-go fell back to the classic group protocol: "+msg)
		os.Exit(1)
	}
	if level <= kgo.LogLevelWarn {
		kgo.BasicLogger(os.Stderr, kgo.LogLevelWarn, nil).Log(level, msg, kv...)
	}
}

// require848 fails unless the cluster offers ConsumerGroupHeartbeat v1+ (the
// KIP-848 protocol franz-go implements).
func require848(bootstrap string) error {
	cl, err := kgo.NewClient(baseOpts(bootstrap)...)
	if err != nil {
		return err
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), callTimeout)
	defer cancel()
	resp, err := kmsg.NewPtrApiVersionsRequest().RequestWith(ctx, cl)
	if err == nil {
		for _, k := range resp.ApiKeys {
			if k.ApiKey == int16(kmsg.ConsumerGroupHeartbeat) && k.MaxVersion >= 1 {
				return nil
			}
		}
		return fatalf("--protocol consumer: the cluster does not offer ConsumerGroupHeartbeat v1+, which franz-go needs for KIP-848")
	}
	return fatalf("--protocol consumer: ApiVersions: %v", err)
}

// parts lists the partitions of topic in an assignment, sorted.
func parts(m map[string][]int32, topic string) []int32 {
	ps := slices.Clone(m[topic])
	slices.Sort(ps)
	if ps == nil {
		ps = []int32{}
	}
	return ps
}

// sequence is the per-key sequence of a `{key}#{seq}#xxx` value, -1 when it
// does not parse.
func sequence(value []byte) int64 {
	fields := strings.SplitN(string(value), "#", 3)
	if len(fields) < 2 {
		return -1
	}
	s, err := strconv.ParseUint(fields[1], 10, 63)
	if err != nil {
		return -1
	}
	return int64(s)
}

// args holds `--name value` options; only known names are accepted.
type args map[string]string

func parseArgs(argv []string, known ...string) (args, error) {
	a := args{}
	for i := 0; i < len(argv); i++ {
		name, ok := strings.CutPrefix(argv[i], "--")
		if !ok || !slices.Contains(known, name) {
			return nil, fatalf("unexpected argument %s (options: --%s)", argv[i], strings.Join(known, " --"))
		}
		if i+1 >= len(argv) {
			return nil, fatalf("--%s needs a value", name)
		}
		i++
		a[name] = argv[i]
	}
	return a, nil
}

func (a args) has(name string) bool { _, ok := a[name]; return ok }

func (a args) req(name string) (string, error) {
	v, ok := a[name]
	if !ok {
		return "", fatalf("--%s is required", name)
	}
	return v, nil
}

func (a args) choice(name, dflt string, options ...string) (string, error) {
	v, ok := a[name]
	if !ok {
		v = dflt
	}
	if !slices.Contains(options, v) {
		return "", fatalf("--%s must be one of %s, got %s", name, strings.Join(options, "|"), v)
	}
	return v, nil
}

func (a args) integer(name string, dflt int64) (int64, error) {
	v, ok := a[name]
	if !ok {
		return dflt, nil
	}
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil {
		return 0, fatalf("--%s wants an integer, got %s", name, v)
	}
	return n, nil
}

func (a args) decimal(name string, dflt float64) (float64, error) {
	v, ok := a[name]
	if !ok {
		return dflt, nil
	}
	f, err := strconv.ParseFloat(v, 64)
	if err != nil {
		return 0, fatalf("--%s wants a number, got %s", name, v)
	}
	return f, nil
}

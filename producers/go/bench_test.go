package nodemeter

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// go test -bench . -run '^$' ./...   (with NODEMETER_KAFKA_BOOTSTRAP set, also
// BenchmarkKafkaEmitVsRaw against that broker: run it with -benchtime 1x)

func BenchmarkNodeOneRecord(b *testing.B) {
	m, err := New(Config{Sink: &discardSink{}})
	if err != nil {
		b.Fatal(err)
	}
	ctx, req, _ := m.Request(context.Background(), "acme", WithRequestID("bench"))
	b.ReportAllocs()
	for b.Loop() {
		_, span, _ := Node(ctx, "llm.answer", WithModel("gpt-4o"))
		if err := span.Record(Meters{InputTokens: 100, OutputTokens: 20, APICalls: 1}); err != nil {
			b.Fatal(err)
		}
		if err := span.End(nil); err != nil {
			b.Fatal(err)
		}
	}
	_ = req.End(nil)
}

func BenchmarkEncodeUsageEvent(b *testing.B) {
	e := UsageEvent{EventID: EventID("acme", "req-1", "span-1", 0), Tenant: "acme", RequestID: "req-1",
		NodeID: "llm.answer", SpanID: "span-1", EventTime: time.Now(), Meters: Meters{InputTokens: 100}}
	b.ReportAllocs()
	for b.Loop() {
		_ = EncodeUsageEvent(&e)
	}
}

type discardSink struct{}

func (discardSink) Send(context.Context, string, []byte, []byte) error { return nil }
func (discardSink) Flush(context.Context) error                        { return nil }
func (discardSink) Close(context.Context) error                        { return nil }

// BenchmarkKafkaEmitVsRaw is bench/bench_emit.py for Go: franz-go's raw Produce
// of the very same encoded bytes and keys, with the SDK's producer settings
// (NewKafkaSink: idempotent, acks=all, linger 5 ms, the CRC32 partitioner),
// without and with a promise per record; the SDK's EmitUsageEvent (validation,
// encoding, produce with its promise); and the span path (Node + Record + End,
// one usage record a span, inside one request). Every rate includes waiting for
// every acknowledgement (Flush). Rounds are interleaved and the median round is
// reported, with the median of the per-round ratios to raw.
//
//	NODEMETER_KAFKA_BOOTSTRAP=127.0.0.1:19092 go test -run '^$' -bench KafkaEmitVsRaw -benchtime 1x
//
// NODEMETER_BENCH_EVENTS (100000), NODEMETER_BENCH_SPANS (20000),
// NODEMETER_BENCH_ROUNDS (3); NODEMETER_BENCH_TOPIC (default: a new topic of 4
// partitions, as bench_emit.py's).
func BenchmarkKafkaEmitVsRaw(b *testing.B) {
	bootstrap := os.Getenv("NODEMETER_KAFKA_BOOTSTRAP")
	if bootstrap == "" {
		b.Skip("set NODEMETER_KAFKA_BOOTSTRAP to benchmark against a broker")
	}
	brokers := strings.Split(bootstrap, ",")
	n, spans, rounds := envInt(b, "NODEMETER_BENCH_EVENTS", 100000), envInt(b, "NODEMETER_BENCH_SPANS", 20000),
		envInt(b, "NODEMETER_BENCH_ROUNDS", 3)
	ctx := context.Background()
	raw, err := NewKafkaSink(brokers, KafkaConfig{})
	if err != nil {
		b.Fatal(err)
	}
	defer raw.Close(ctx)
	topic := os.Getenv("NODEMETER_BENCH_TOPIC")
	if topic == "" {
		topic = benchTopic(b, raw.Client(), 4)
	}
	m, err := New(Config{Brokers: brokers, Topic: topic})
	if err != nil {
		b.Fatal(err)
	}
	defer m.Close(ctx)

	events := benchEvents(n)
	keys, values := make([][]byte, n), make([][]byte, n)
	for i := range events {
		if keys[i], values[i], err = m.EncodeUsageEvent(&events[i]); err != nil {
			b.Fatal(err)
		}
	}
	// connect and warm up both producers (every partition) before timing
	for i := range min(n, 2000) {
		raw.client.Produce(ctx, &kgo.Record{Topic: topic, Key: keys[i], Value: values[i]}, nil)
		if err := m.EmitUsageEvent(ctx, &events[i]); err != nil {
			b.Fatal(err)
		}
	}
	if err := raw.Flush(ctx); err != nil {
		b.Fatal(err)
	}
	if err := m.Flush(ctx); err != nil {
		b.Fatal(err)
	}

	rawFlush := func() error { return raw.Flush(ctx) }
	cases := []struct {
		label string
		count int
		run   func() error
		flush func() error
	}{
		{"raw Produce", n, func() error {
			for i := range keys {
				raw.client.Produce(ctx, &kgo.Record{Topic: topic, Key: keys[i], Value: values[i]}, nil)
			}
			return nil
		}, rawFlush},
		{"raw Produce + promise", n, func() error {
			acked := 0
			promise := func(_ *kgo.Record, err error) {
				if err == nil {
					acked++ // promises run one at a time
				}
			}
			for i := range keys {
				raw.client.Produce(ctx, &kgo.Record{Topic: topic, Key: keys[i], Value: values[i]}, promise)
			}
			return nil
		}, rawFlush},
		{"sdk EmitUsageEvent", n, func() error {
			for i := range events {
				if err := m.EmitUsageEvent(ctx, &events[i]); err != nil {
					return err
				}
			}
			return nil
		}, func() error { return m.Flush(ctx) }},
		{"sdk span (Node+Record+End)", spans, func() error {
			rctx, req, err := m.Request(ctx, "acme", WithWorkflow("rag"))
			if err != nil {
				return err
			}
			for i := range spans {
				_, span, err := Node(rctx, "llm.summarize", WithModel("gpt-4o"),
					WithAttributes(map[string]string{"region": "eu"}))
				if err != nil {
					return err
				}
				if err := span.Record(Meters{InputTokens: 800 + int64(i%100), OutputTokens: 90, CachedInputTokens: 512}); err != nil {
					return err
				}
				if err := span.End(nil); err != nil {
					return err
				}
			}
			return req.End(nil)
		}, func() error { return m.Flush(ctx) }},
	}
	rates := make([][]float64, len(cases))
	b.ResetTimer()
	for range rounds {
		for c, tc := range cases {
			t0 := time.Now()
			if err := tc.run(); err != nil {
				b.Fatal(err)
			}
			if err := tc.flush(); err != nil {
				b.Fatal(err)
			}
			rates[c] = append(rates[c], float64(tc.count)/time.Since(t0).Seconds())
		}
	}
	b.StopTimer()
	b.Logf("%d events of %d bytes, %d spans, %d rounds; broker %s; topic %s; %s, GOMAXPROCS %d",
		n, len(values[0]), spans, rounds, bootstrap, topic, runtime.Version(), runtime.GOMAXPROCS(0))
	for c, tc := range cases {
		ratio := make([]float64, rounds)
		for r := range rounds {
			ratio[r] = rates[c][r] / rates[0][r]
		}
		b.Logf("%-28s %10.0f events/s   / raw %6.1f%%  (rounds %.0f%% - %.0f%%)", tc.label, median(rates[c]),
			100*median(ratio), 100*slices.Min(ratio), 100*slices.Max(ratio))
	}
	b.ReportMetric(median(rates[0]), "raw_events/s")
	b.ReportMetric(median(rates[2]), "sdk_events/s")
	b.ReportMetric(100*median(perRound(rates[2], rates[0])), "sdk/raw_%")
	b.ReportMetric(median(rates[3]), "spans/s")
	b.ReportMetric(0, "ns/op")
}

func perRound(a, base []float64) []float64 {
	out := make([]float64, len(a))
	for i := range a {
		out[i] = a[i] / base[i]
	}
	return out
}

func median(xs []float64) float64 {
	s := slices.Clone(xs)
	slices.Sort(s)
	return s[len(s)/2]
}

func envInt(b *testing.B, name string, def int) int {
	raw := os.Getenv(name)
	if raw == "" {
		return def
	}
	v, err := strconv.Atoi(raw)
	if err != nil || v < 1 {
		b.Fatalf("%s=%q: want a positive integer", name, raw)
	}
	return v
}

// benchEvents are bench_emit.py's events: 8 spans a request, one record each.
func benchEvents(n int) []UsageEvent {
	now := time.Now()
	parent, model, provider := "root", "gpt-4o", "openai"
	out := make([]UsageEvent, n)
	for i := range out {
		rid, span := fmt.Sprintf("req-%d", i/8), fmt.Sprintf("span-%d", i%8)
		out[i] = UsageEvent{EventID: EventID("acme", rid, span, 0), Tenant: "acme", RequestID: rid,
			NodeID: "llm.summarize", SpanID: span, ParentSpanID: &parent, BranchPath: "1", Workflow: "rag",
			Model: &model, Provider: &provider, EventTime: now, Attributes: []Attr{{"region", "eu"}},
			Meters: Meters{InputTokens: 800 + int64(i%100), OutputTokens: 90, CachedInputTokens: 512}}
	}
	return out
}

// benchTopic creates a fresh topic of the given partitions (replication 1).
func benchTopic(b *testing.B, client *kgo.Client, partitions int32) string {
	suffix := make([]byte, 3)
	_, _ = rand.Read(suffix)
	name := "bench" + hex.EncodeToString(suffix) + "." + DefaultTopic
	req := kmsg.NewPtrCreateTopicsRequest()
	t := kmsg.NewCreateTopicsRequestTopic()
	t.Topic, t.NumPartitions, t.ReplicationFactor = name, partitions, 1
	req.Topics = append(req.Topics, t)
	req.TimeoutMillis = 30000
	resp, err := req.RequestWith(context.Background(), client)
	if err != nil {
		b.Fatal(err)
	}
	if err := kerr.ErrorForCode(resp.Topics[0].ErrorCode); err != nil {
		b.Fatalf("create topic %s: %v", name, err)
	}
	return name
}

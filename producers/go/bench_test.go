package nodemeter

import (
	"context"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
)

// go test -bench . -run '^$' ./...   (with NODEMETER_KAFKA_BOOTSTRAP and
// NODEMETER_BENCH_TOPIC set, also against a broker: the SDK vs raw kgo Produce)

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

func brokerBench(b *testing.B) ([]string, string) {
	bootstrap, topic := os.Getenv("NODEMETER_KAFKA_BOOTSTRAP"), os.Getenv("NODEMETER_BENCH_TOPIC")
	if bootstrap == "" || topic == "" {
		b.Skip("set NODEMETER_KAFKA_BOOTSTRAP and NODEMETER_BENCH_TOPIC to benchmark against a broker")
	}
	return strings.Split(bootstrap, ","), topic
}

func BenchmarkKafkaRawProduce(b *testing.B) {
	brokers, topic := brokerBench(b)
	sink, err := NewKafkaSink(brokers, KafkaConfig{})
	if err != nil {
		b.Fatal(err)
	}
	defer sink.Close(context.Background())
	e := UsageEvent{EventID: "x", Tenant: "acme", RequestID: "req-1", NodeID: "n", SpanID: "s",
		EventTime: time.Now(), Meters: Meters{InputTokens: 100}}
	value, key := EncodeUsageEvent(&e), Key("acme", "req-1")
	ctx := context.Background()
	for b.Loop() {
		sink.client.Produce(ctx, &kgo.Record{Topic: topic, Key: key, Value: value}, nil)
	}
	if err := sink.Flush(ctx); err != nil {
		b.Fatal(err)
	}
}

func BenchmarkKafkaSDKEmit(b *testing.B) {
	brokers, topic := brokerBench(b)
	m, err := New(Config{Brokers: brokers, Topic: topic})
	if err != nil {
		b.Fatal(err)
	}
	ctx, req, _ := m.Request(context.Background(), "acme")
	for b.Loop() {
		_, span, _ := Node(ctx, "llm.answer")
		_ = span.Record(Meters{InputTokens: 100, APICalls: 1})
		if err := span.End(nil); err != nil {
			b.Fatal(err)
		}
	}
	_ = req.End(nil)
	if err := m.Close(context.Background()); err != nil {
		b.Fatal(err)
	}
}

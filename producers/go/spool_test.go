package nodemeter

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"
)

// failSink takes records and fails every one of them at Flush.
type failSink struct {
	mu   sync.Mutex
	sent []*DeliveryError
}

func (s *failSink) Send(_ context.Context, topic string, key, value []byte) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.sent = append(s.sent, &DeliveryError{Topic: topic, Key: key, Value: value, Err: errors.New("broker down")})
	return nil
}

func (s *failSink) Flush(context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	errs := make([]error, len(s.sent))
	for i, e := range s.sent {
		errs[i] = e
	}
	s.sent = nil
	return errors.Join(errs...)
}
func (s *failSink) Close(ctx context.Context) error { return s.Flush(ctx) }

func emitOne(t *testing.T, m *Meter, requestID string) {
	t.Helper()
	ctx, req, err := m.Request(context.Background(), "acme", WithRequestID(requestID))
	if err != nil {
		t.Fatal(err)
	}
	_, span, _ := Node(ctx, "llm")
	if err := span.Record(Meters{InputTokens: 7}); err != nil {
		t.Fatal(err)
	}
	if err := errors.Join(span.End(nil), req.End(nil)); err != nil {
		t.Fatal(err)
	}
}

func TestSpoolKeepsFailedRecordsAndReplaysThem(t *testing.T) {
	dir := t.TempDir()
	down := &failSink{}
	m, _ := New(Config{Sink: down, SpoolDir: dir})
	emitOne(t, m, "r1")
	if err := m.Flush(context.Background()); err != nil {
		t.Fatalf("Flush with a spool: %v", err)
	}
	emitOne(t, m, "r2")
	if err := m.Close(context.Background()); err != nil {
		t.Fatalf("Close with a spool: %v", err)
	}
	emitOne(t, m, "r3") // after Close: straight to the spool
	// a crash while appending leaves a torn frame: dropped on replay
	f, _ := os.OpenFile(filepath.Join(dir, spoolFile), os.O_WRONLY|os.O_APPEND, 0)
	_, _ = f.Write([]byte{0, 0, 0, 5, 'a', 'b'})
	_ = f.Close()

	up := &memSink{}
	m2, _ := New(Config{Sink: up, SpoolDir: dir})
	n, err := m2.ReplaySpool(context.Background())
	if err != nil || n != 6 {
		t.Fatalf("replayed %d, %v; want 6", n, err)
	}
	want := [][]byte{Key("acme", "r1"), Key("acme", "r1"), Key("acme", "r2"), Key("acme", "r2"), Key("acme", "r3"), Key("acme", "r3")}
	for i, r := range up.recs {
		if !bytes.Equal(r[0], want[i]) {
			t.Errorf("record %d: key %q, want %q", i, r[0], want[i])
		}
	}
	if !bytes.Equal(up.recs[0][1][:2], []byte{0xc3, 0x01}) {
		t.Error("replayed value is not the encoded record")
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 0 {
		t.Errorf("spool left behind: %v", entries)
	}
	if n, err := m2.ReplaySpool(context.Background()); n != 0 || err != nil {
		t.Errorf("second replay: %d, %v", n, err)
	}
}

func TestReplayFailingAgainStaysSpooled(t *testing.T) {
	dir := t.TempDir()
	m, _ := New(Config{Sink: &failSink{}, SpoolDir: dir})
	emitOne(t, m, "r1")
	_ = m.Flush(context.Background())
	if n, err := m.ReplaySpool(context.Background()); n != 0 || err != nil {
		t.Fatalf("replay into a down broker: %d, %v", n, err)
	}
	m2, _ := New(Config{Sink: &memSink{}, SpoolDir: dir})
	if n, err := m2.ReplaySpool(context.Background()); n != 2 || err != nil {
		t.Fatalf("replay once up: %d, %v", n, err)
	}
}

func TestWithoutSpoolFlushReturnsDeliveryErrors(t *testing.T) {
	m, _ := New(Config{Sink: &failSink{}})
	emitOne(t, m, "r1")
	err := m.Flush(context.Background())
	var de *DeliveryError
	if !errors.As(err, &de) || !bytes.Equal(de.Key, Key("acme", "r1")) || len(de.Value) == 0 {
		t.Fatalf("Flush: %v", err)
	}
	if failed, rest := deliveryErrors(err); len(failed) != 2 || len(rest) != 0 {
		t.Errorf("%d delivery errors, %d others; want 2, 0", len(failed), len(rest))
	}
}

// franz-go against a port nobody listens on: the records fail after the delivery
// timeout and land in the spool.
func TestKafkaDownGoesToSpool(t *testing.T) {
	dir := t.TempDir()
	m, err := New(Config{Brokers: []string{"127.0.0.1:1"}, SpoolDir: dir,
		Kafka: KafkaConfig{DeliveryTimeout: time.Second}})
	if err != nil {
		t.Fatal(err)
	}
	emitOne(t, m, "r1")
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := m.Close(ctx); err != nil {
		t.Fatalf("Close: %v", err)
	}
	up := &memSink{}
	m2, _ := New(Config{Sink: up, SpoolDir: dir})
	if n, err := m2.ReplaySpool(context.Background()); n != 2 || err != nil {
		t.Fatalf("replayed %d, %v; want 2", n, err)
	}
}

// Close's deadline ends before the delivery timeout: the records still buffered are
// failed by closing the client and spooled, not lost.
func TestCloseDeadlineBeforeDeliveryTimeoutSpoolsTheRest(t *testing.T) {
	dir := t.TempDir()
	m, err := New(Config{Brokers: []string{"127.0.0.1:1"}, SpoolDir: dir,
		Kafka: KafkaConfig{DeliveryTimeout: time.Minute}})
	if err != nil {
		t.Fatal(err)
	}
	emitOne(t, m, "r1")
	emitOne(t, m, "r2")
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	err = m.Close(ctx)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Close: %v; want the deadline, with the records spooled", err)
	}
	up := &memSink{}
	m2, _ := New(Config{Sink: up, SpoolDir: dir})
	if n, err := m2.ReplaySpool(context.Background()); n != 4 || err != nil {
		t.Fatalf("replayed %d, %v; want 4 (2 requests: a usage event and an end each)", n, err)
	}
}

// Without a spool the same records come back to the caller, one *DeliveryError each.
func TestCloseDeadlineWithoutSpoolReturnsEveryRecord(t *testing.T) {
	m, err := New(Config{Brokers: []string{"127.0.0.1:1"},
		Kafka: KafkaConfig{DeliveryTimeout: time.Minute}})
	if err != nil {
		t.Fatal(err)
	}
	emitOne(t, m, "r1")
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	failed, rest := deliveryErrors(m.Close(ctx))
	if len(failed) != 2 || len(rest) != 1 || !errors.Is(rest[0], context.DeadlineExceeded) {
		t.Fatalf("%d delivery errors, others %v; want 2 and the deadline", len(failed), rest)
	}
}

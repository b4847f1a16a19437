package nodemeter

import (
	"context"
	"errors"

	"slices"
	"sync"
	"time"
)

// Version of this SDK; Producer defaults to "nodemeter-go/" + Version.
const Version = "0.1.0"

// DefaultTopic is the usage topic (docs/wire.md).
const DefaultTopic = "nodemeter.usage.v1"

// Sink takes encoded records. Send may return before the broker acknowledged;
// Flush waits for everything sent so far and returns the delivery errors
// (*DeliveryError, joined) of the records that failed since the last Flush.
type Sink interface {
	Send(ctx context.Context, topic string, key, value []byte) error
	Flush(ctx context.Context) error
	// Close flushes, closes, and returns every record not delivered (*DeliveryError).
	Close(ctx context.Context) error
}

// Config of a Meter. Either Brokers (a franz-go producer is built, see kafka.go)
// or Sink must be set.
type Config struct {
	Brokers []string
	Topic   string // DefaultTopic when empty
	// Producer goes into each usage event's producer field.
	Producer string
	// MaxFutureSkew: records dated more than this after Clock() are refused
	// (future_event_time). 0 means the default, 300 s; use a negative value for 0.
	MaxFutureSkew time.Duration
	// Clock is time.Now when nil.
	Clock func() time.Time
	// Tenants, when set, is the only tenants a request may have (unknown_tenant).
	Tenants []string
	// Sink replaces the Kafka producer (tests, a custom transport).
	Sink Sink
	// Kafka tunes the built-in producer; ignored with Sink.
	Kafka KafkaConfig
	// SpoolDir, when set, keeps what the broker did not take (spool.go): Flush
	// and Close write it there instead of returning it, ReplaySpool sends it.
	SpoolDir string
}

// Meter validates, encodes and sends usage records. Safe for concurrent use.
type Meter struct {
	topic    string
	producer string
	skew     time.Duration
	clock    func() time.Time
	tenants  map[string]bool
	sink     Sink
	spool    *spool

	mu     sync.Mutex
	closed bool

	observe func(rec any) // tests: each record handed to the sink
}

// New builds a Meter. With Brokers it connects lazily (franz-go): an
// unreachable broker shows as delivery errors from Flush, not here.
func New(cfg Config) (*Meter, error) {
	m := &Meter{topic: cfg.Topic, producer: cfg.Producer, skew: cfg.MaxFutureSkew, clock: cfg.Clock, sink: cfg.Sink}
	if m.topic == "" {
		m.topic = DefaultTopic
	}
	if m.producer == "" {
		m.producer = "nodemeter-go/" + Version
	}
	if err := checkText("producer", m.producer, false); err != nil {
		return nil, err
	}
	switch {
	case m.skew == 0:
		m.skew = 300 * time.Second
	case m.skew < 0:
		m.skew = 0
	}
	if m.clock == nil {
		m.clock = time.Now
	}
	if cfg.SpoolDir != "" {
		m.spool = &spool{dir: cfg.SpoolDir}
	}
	if cfg.Tenants != nil {
		m.tenants = make(map[string]bool, len(cfg.Tenants))
		for _, t := range cfg.Tenants {
			m.tenants[t] = true
		}
	}
	if m.sink == nil {
		if len(cfg.Brokers) == 0 {
			return nil, errors.New("nodemeter: Config needs Brokers or a Sink")
		}
		sink, err := NewKafkaSink(cfg.Brokers, cfg.Kafka)
		if err != nil {
			return nil, err
		}
		m.sink = sink
	}
	return m, nil
}

func (m *Meter) checkTenant(tenant string) error {
	if err := ValidateTenant(tenant); err != nil {
		return err
	}
	if m.tenants != nil && !m.tenants[tenant] {
		return bad("unknown_tenant", "unknown tenant %q: not in Config.Tenants", tenant)
	}
	return nil
}

// EncodeUsageEvent validates e (with this meter's clock) and returns its key
// and value. Errors are *InvalidUsageError. EventID is required: derive it
// with EventID (the scope API does).
func (m *Meter) EncodeUsageEvent(e *UsageEvent) (key, value []byte, err error) {
	if err := ValidateUsageEvent(e); err != nil {
		return nil, nil, err
	}
	if err := m.checkTenant(e.Tenant); err != nil {
		return nil, nil, err
	}
	if err := checkClock(e.EventTime, m.clock(), m.skew); err != nil {
		return nil, nil, err
	}
	value = EncodeUsageEvent(e)
	if len(value) > MaxEventBytes {
		return nil, nil, bad(ReasonOversize, "encoded record is %d bytes; the limit is %d", len(value), MaxEventBytes)
	}
	return Key(e.Tenant, e.RequestID), value, nil
}

// EncodeRequestEnd is EncodeUsageEvent for a request end (EventID: RequestEndID).
func (m *Meter) EncodeRequestEnd(e *RequestEnd) (key, value []byte, err error) {
	if err := ValidateRequestEnd(e); err != nil {
		return nil, nil, err
	}
	if err := m.checkTenant(e.Tenant); err != nil {
		return nil, nil, err
	}
	if err := checkClock(e.EventTime, m.clock(), m.skew); err != nil {
		return nil, nil, err
	}
	value = EncodeRequestEnd(e)
	if len(value) > MaxEventBytes {
		return nil, nil, bad(ReasonOversize, "encoded record is %d bytes; the limit is %d", len(value), MaxEventBytes)
	}
	return Key(e.Tenant, e.RequestID), value, nil
}

// EmitUsageEvent validates, encodes and sends one usage event.
func (m *Meter) EmitUsageEvent(ctx context.Context, e *UsageEvent) error {
	key, value, err := m.EncodeUsageEvent(e)
	if err != nil {
		return err
	}
	if m.observe != nil {
		m.observe(*e)
	}
	return m.send(ctx, key, value)
}

// EmitRequestEnd validates, encodes and sends one request end.
func (m *Meter) EmitRequestEnd(ctx context.Context, e *RequestEnd) error {
	key, value, err := m.EncodeRequestEnd(e)
	if err != nil {
		return err
	}
	if m.observe != nil {
		m.observe(*e)
	}
	return m.send(ctx, key, value)
}

func (m *Meter) send(ctx context.Context, key, value []byte) error {
	m.mu.Lock()
	closed := m.closed
	m.mu.Unlock()
	if closed {
		if m.spool != nil { // as the Python SDK: after Close, to the spool
			return m.spool.append([]spooled{{[]byte(m.topic), key, value}})
		}
		return ErrClosed
	}
	// A request's records are sent even when the caller's context is cancelled:
	// usage that happened is billed. Only the sink's own timeouts apply.
	return m.sink.Send(context.WithoutCancel(ctx), m.topic, key, value)
}

// Flush waits until every record sent so far is acknowledged (or ctx ends) and
// returns the delivery errors since the last Flush (*DeliveryError, joined).
// With a SpoolDir, failed records go to the spool instead, and only what could
// not be spooled is returned.
func (m *Meter) Flush(ctx context.Context) error {
	return m.spoolFailed(m.sink.Flush(ctx))
}

// spoolFailed puts the records of the delivery errors in err into the spool, when
// there is one, and returns the other errors; without a spool, or when the spool
// cannot be written, it returns err whole.
func (m *Meter) spoolFailed(err error) error {
	if m.spool == nil || err == nil {
		return err
	}
	failed, rest := deliveryErrors(err)
	if len(failed) == 0 {
		return err
	}
	recs := make([]spooled, len(failed))
	for i, f := range failed {
		recs[i] = spooled{[]byte(f.Topic), f.Key, f.Value}
	}
	if serr := m.spool.append(recs); serr != nil {
		return err // nothing spooled: every failure goes back to the caller
	}
	return errors.Join(rest...)
}

// Close flushes until ctx ends, then closes the producer. Records not delivered by
// then, those still waiting included, go to the spool (with a SpoolDir) or come back
// as *DeliveryError. Records emitted after Close get ErrClosed.
func (m *Meter) Close(ctx context.Context) error {
	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		return nil
	}
	m.closed = true
	m.mu.Unlock()
	return m.spoolFailed(m.sink.Close(ctx)) // a Sink's Close flushes first
}

// Attrs turns a map into attributes sorted by key, so that the same map always
// gives the same bytes (Go randomises map order).
func Attrs(m map[string]string) []Attr {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	out := make([]Attr, len(keys))
	for i, k := range keys {
		out[i] = Attr{k, m[k]}
	}
	return out
}

// CustomMeters turns a map into custom meters sorted by name.
func CustomMeters(m map[string]int64) []Custom {
	names := make([]string, 0, len(m))
	for k := range m {
		names = append(names, k)
	}
	slices.Sort(names)
	out := make([]Custom, len(names))
	for i, k := range names {
		out[i] = Custom{k, m[k]}
	}
	return out
}

// mergeAttrs: base's entries in order (values overridden by over), then over's new ones.
func mergeAttrs(base, over []Attr) []Attr {
	if len(over) == 0 {
		return base
	}
	if len(base) == 0 {
		return over
	}
	out := make([]Attr, 0, len(base)+len(over))
	idx := make(map[string]int, len(base))
	for _, a := range base {
		idx[a.Key] = len(out)
		out = append(out, a)
	}
	for _, a := range over {
		if i, ok := idx[a.Key]; ok {
			out[i].Value = a.Value
		} else {
			idx[a.Key] = len(out)
			out = append(out, a)
		}
	}
	return out
}

func setAttr(attrs []Attr, key, value string) []Attr {
	out := slices.Clone(attrs)
	for i := range out {
		if out[i].Key == key {
			out[i].Value = value
			return out
		}
	}
	return append(out, Attr{key, value})
}

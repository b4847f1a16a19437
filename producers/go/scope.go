package nodemeter

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"
)

type ctxKey struct{}

// scope is what a context carries: the current span, and the branch (of a
// parent span) that the goroutine holding this context runs in.
type scope struct {
	span         *Span
	branchParent *Span
	branchPath   string
}

func scopeOf(ctx context.Context) *scope {
	s, _ := ctx.Value(ctxKey{}).(*scope)
	return s
}

// SpanFrom returns the innermost span open in ctx, or nil outside a request.
func SpanFrom(ctx context.Context) *Span {
	if s := scopeOf(ctx); s != nil {
		return s.span
	}
	return nil
}

type requestState struct {
	meter      *Meter
	tenant     string
	requestID  string
	workflow   string
	traceID    *string
	attributes []Attr
	emitted    atomic.Int64
}

// Span is one node execution (or a request's root). Record usage on it; its
// usage events are sent when it ends, one per Record call (sequence 0, 1, ...).
type Span struct {
	req          *requestState
	root         bool
	nodeID       string
	spanID       string
	parentSpanID *string
	branchPath   string
	model        *string
	provider     *string

	mu          sync.Mutex
	status      Status
	notBillable bool
	nbReason    *string
	attributes  []Attr
	records     []pending
	occurrences map[string]int
	branches    int
	ended       bool
}

type pending struct {
	meters          Meters
	model, provider *string
}

// ID is the span's id; Path its branch path; RequestID its request's id.
func (s *Span) ID() string        { return s.spanID }
func (s *Span) Path() string      { return s.branchPath }
func (s *Span) RequestID() string { return s.req.requestID }
func (s *Span) Tenant() string    { return s.req.tenant }

// Option configures a request or a node.
type Option func(*options)

type options struct {
	requestID, workflow, nodeID, spanID string
	model, provider, traceID, nbReason  *string
	notBillable                         bool
	attributes                          []Attr
}

func strp(s string) *string { return &s }

// RequestID sets the request's id (unique per tenant); a fresh one otherwise.
func WithRequestID(id string) Option { return func(o *options) { o.requestID = id } }

// WithWorkflow names the request's workflow.
func WithWorkflow(w string) Option { return func(o *options) { o.workflow = w } }

// WithRootNode sets the root span's node id ("request" by default).
func WithRootNode(id string) Option { return func(o *options) { o.nodeID = id } }

// WithTraceID sets the OpenTelemetry trace id of the request.
func WithTraceID(id string) Option { return func(o *options) { o.traceID = strp(id) } }

// WithSpanID gives a node its own span id instead of the derived one.
func WithSpanID(id string) Option { return func(o *options) { o.spanID = id } }

// WithModel and WithProvider set the default model/provider of a span's records.
func WithModel(m string) Option    { return func(o *options) { o.model = strp(m) } }
func WithProvider(p string) Option { return func(o *options) { o.provider = strp(p) } }

// WithAttributes adds attributes (sorted by key) to a request or node.
func WithAttributes(a map[string]string) Option {
	return func(o *options) { o.attributes = mergeAttrs(o.attributes, Attrs(a)) }
}

// WithNonBillable marks a node's usage as not billable (warm-up, cold start).
func WithNonBillable(reason string) Option {
	return func(o *options) { o.notBillable = true; o.nbReason = strp(reason) }
}

func newRequestID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	b[6] = b[6]&0x0f | 0x40 // a UUID v4, as the Python SDK's uuid4().hex
	b[8] = b[8]&0x3f | 0x80
	return hex.EncodeToString(b[:])
}

// Request opens the root span of a request for tenant. End the returned span
// (after waiting for its branches) to send its usage and the request end.
func (m *Meter) Request(ctx context.Context, tenant string, opts ...Option) (context.Context, *Span, error) {
	o := options{nodeID: "request"}
	for _, f := range opts {
		f(&o)
	}
	if err := m.checkTenant(tenant); err != nil {
		return ctx, nil, err
	}
	if o.requestID == "" {
		o.requestID = newRequestID()
	}
	for _, f := range []struct{ name, v string }{{"request_id", o.requestID}, {"node_id", o.nodeID}} {
		if err := checkText(f.name, f.v, true); err != nil {
			return ctx, nil, err
		}
	}
	if err := checkText("workflow", o.workflow, false); err != nil {
		return ctx, nil, err
	}
	for _, f := range []struct {
		name string
		v    *string
	}{{"trace_id", o.traceID}, {"model", o.model}, {"provider", o.provider}} {
		if err := checkOpt(f.name, f.v); err != nil {
			return ctx, nil, err
		}
	}
	if err := ValidateAttributes(o.attributes); err != nil {
		return ctx, nil, err
	}
	req := &requestState{meter: m, tenant: tenant, requestID: o.requestID, workflow: o.workflow,
		traceID: o.traceID, attributes: o.attributes}
	span := &Span{req: req, root: true, nodeID: o.nodeID, spanID: RootSpanID(o.requestID),
		model: o.model, provider: o.provider}
	return context.WithValue(ctx, ctxKey{}, &scope{span: span}), span, nil
}

// Node opens a child span under the span in ctx (same as the package-level Node).
func (m *Meter) Node(ctx context.Context, nodeID string, opts ...Option) (context.Context, *Span, error) {
	return Node(ctx, nodeID, opts...)
}

// Node opens a child span named nodeID under the span in ctx. Errors:
// no_request outside a request, and the validation reasons of its options.
func Node(ctx context.Context, nodeID string, opts ...Option) (context.Context, *Span, error) {
	var o options
	for _, f := range opts {
		f(&o)
	}
	sc := scopeOf(ctx)
	if sc == nil || sc.span == nil {
		return ctx, nil, bad("no_request", "no request is open in this context: open one with meter.Request")
	}
	parent := sc.span
	if err := checkText("node_id", nodeID, true); err != nil {
		return ctx, nil, err
	}
	for _, f := range []struct {
		name string
		v    *string
	}{{"model", o.model}, {"provider", o.provider}, {"non_billable_reason", o.nbReason}} {
		if err := checkOpt(f.name, f.v); err != nil {
			return ctx, nil, err
		}
	}
	if err := checkText("span_id", o.spanID, false); err != nil {
		return ctx, nil, err
	}
	if err := ValidateAttributes(mergeAttrs(parent.req.attributes, o.attributes)); err != nil {
		return ctx, nil, err
	}
	path := parent.branchPath
	if sc.branchParent == parent {
		path = sc.branchPath
	}
	if err := checkText("branch_path", path, false); err != nil {
		return ctx, nil, err
	}
	spanID := o.spanID
	parent.mu.Lock()
	if parent.occurrences == nil {
		parent.occurrences = map[string]int{}
	}
	k := path + "\x00" + nodeID
	n := parent.occurrences[k]
	parent.occurrences[k] = n + 1
	parent.mu.Unlock()
	if spanID == "" {
		spanID = ChildSpanID(parent.req.requestID, parent.spanID, path, nodeID, n)
	}
	if o.notBillable && (o.nbReason == nil || *o.nbReason == "") {
		o.nbReason = strp("non_billable")
	}
	span := &Span{req: parent.req, nodeID: nodeID, spanID: spanID, parentSpanID: strp(parent.spanID),
		branchPath: path, model: o.model, provider: o.provider, notBillable: o.notBillable,
		nbReason: o.nbReason, attributes: o.attributes}
	return context.WithValue(ctx, ctxKey{}, &scope{span: span}), span, nil
}

// Branch returns a context for one piece of parallel work under the span in
// ctx: nodes opened with it go on a new branch path (parent path + ".n",
// n = 1, 2, ... per parent span). Call it in the parent goroutine, in a fixed
// order, before starting the goroutine: the numbering, and so the span ids,
// then do not depend on the scheduler.
func Branch(ctx context.Context) (context.Context, error) {
	sc := scopeOf(ctx)
	if sc == nil || sc.span == nil {
		return ctx, bad("no_request", "no request is open in this context: open one with meter.Request")
	}
	p := sc.span
	p.mu.Lock()
	p.branches++
	n := p.branches
	p.mu.Unlock()
	return withBranch(ctx, p, strconv.Itoa(n)), nil
}

// NamedBranch is Branch with an explicit key (1-64 chars, no "."): the path is
// parent path + "." + key, stable however the work is scheduled.
func NamedBranch(ctx context.Context, key string) (context.Context, error) {
	sc := scopeOf(ctx)
	if sc == nil || sc.span == nil {
		return ctx, bad("no_request", "no request is open in this context: open one with meter.Request")
	}
	if key == "" || strings.Contains(key, ".") || utf8.RuneCountInString(key) > maxBranchKeyLen || !utf8.ValidString(key) {
		return ctx, bad("invalid_branch", "branch key must be 1-64 chars without '.', got %q", key)
	}
	return withBranch(ctx, sc.span, key), nil
}

func withBranch(ctx context.Context, p *Span, label string) context.Context {
	path := label
	if p.branchPath != "" {
		path = p.branchPath + "." + label
	}
	return context.WithValue(ctx, ctxKey{}, &scope{span: p, branchParent: p, branchPath: path})
}

// Parallel runs each fn in its own goroutine on its own branch (numbered in
// argument order) and waits for all; it returns their errors joined.
func Parallel(ctx context.Context, fns ...func(ctx context.Context) error) error {
	ctxs := make([]context.Context, len(fns))
	for i := range fns {
		bctx, err := Branch(ctx)
		if err != nil {
			return err
		}
		ctxs[i] = bctx
	}
	errs := make([]error, len(fns))
	var wg sync.WaitGroup
	for i, fn := range fns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = fn(ctxs[i])
		}()
	}
	wg.Wait()
	return errors.Join(errs...)
}

// RecordOption sets the model or provider of one record.
type RecordOption func(*pending)

// RecordModel and RecordProvider override the span's model/provider for one record.
func RecordModel(m string) RecordOption    { return func(p *pending) { p.model = strp(m) } }
func RecordProvider(p string) RecordOption { return func(r *pending) { r.provider = strp(p) } }

// Record adds one usage record to the span, validated here (an
// *InvalidUsageError on bad input; nothing is recorded then). A GpuSource left
// empty with GpuMs > 0 means MEASURED, as in the Python SDK's record().
func (s *Span) Record(m Meters, opts ...RecordOption) error {
	if m.GpuSource == "" {
		m.GpuSource = GpuNone
		if m.GpuMs > 0 {
			m.GpuSource = GpuMeasured
		}
	}
	p := pending{meters: m}
	for _, f := range opts {
		f(&p)
	}
	if err := ValidateMeters(m); err != nil {
		return err
	}
	if err := checkOpt("model", p.model); err != nil {
		return err
	}
	if err := checkOpt("provider", p.provider); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ended {
		return bad("span_ended", "span %q has ended: record before End", s.nodeID)
	}
	// The whole event as it will be sent, so that an oversize one fails here.
	e := s.eventLocked(p, len(s.records), StatusOK, s.req.meter.clock())
	if err := ValidateUsageEvent(&e); err != nil {
		return err
	}
	if n := len(EncodeUsageEvent(&e)); n > MaxEventBytes {
		return bad(ReasonOversize, "this record would encode to %d bytes; the limit is %d", n, MaxEventBytes)
	}
	s.records = append(s.records, p)
	return nil
}

// SetAttribute sets an attribute on every usage event of this span.
func (s *Span) SetAttribute(key, value string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	attrs := setAttr(s.attributes, key, value)
	if err := ValidateAttributes(mergeAttrs(s.req.attributes, attrs)); err != nil {
		return err
	}
	old := s.attributes
	s.attributes = attrs
	if err := s.fitsLocked(); err != nil {
		s.attributes = old
		return err
	}
	return nil
}

// fitsLocked: every record of the span (or an empty one) still encodes within
// MaxEventBytes, so that an oversize event fails at the call that made it so.
func (s *Span) fitsLocked() error {
	records := s.records
	if len(records) == 0 {
		records = []pending{{}}
	}
	now := s.req.meter.clock()
	for i, p := range records {
		e := s.eventLocked(p, i, StatusOK, now)
		if n := len(EncodeUsageEvent(&e)); n > MaxEventBytes {
			return bad(ReasonOversize, "this span's usage events would encode to %d bytes; the limit is %d", n, MaxEventBytes)
		}
	}
	return nil
}

// MarkNonBillable marks the span's usage as emitted but not charged.
func (s *Span) MarkNonBillable(reason string) error {
	if reason == "" {
		return bad("missing_non_billable_reason", "a non-billable mark needs its reason")
	}
	if err := checkText("non_billable_reason", reason, true); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	nb, old := s.notBillable, s.nbReason
	s.notBillable, s.nbReason = true, strp(reason)
	if err := s.fitsLocked(); err != nil {
		s.notBillable, s.nbReason = nb, old
		return err
	}
	return nil
}

// SetStatus sets the status of the span's events (End with an error makes it ERROR).
func (s *Span) SetStatus(st Status) error {
	if err := checkStatus(st); err != nil {
		return err
	}
	s.mu.Lock()
	s.status = st
	s.mu.Unlock()
	return nil
}

func (s *Span) eventLocked(p pending, seq int, status Status, now time.Time) UsageEvent {
	model, provider := p.model, p.provider
	if model == nil || *model == "" {
		model = s.model
	}
	if provider == nil || *provider == "" {
		provider = s.provider
	}
	req := s.req
	return UsageEvent{
		EventID: EventID(req.tenant, req.requestID, s.spanID, int64(seq)), Tenant: req.tenant,
		RequestID: req.requestID, NodeID: s.nodeID, SpanID: s.spanID, ParentSpanID: s.parentSpanID,
		BranchPath: s.branchPath, Workflow: req.workflow, Model: model, Provider: provider,
		Sequence: int64(seq), Meters: p.meters, Status: status, NotBillable: s.notBillable,
		NonBillableReason: s.nbReason, EventTime: now, TraceID: req.traceID,
		Producer: req.meter.producer, Attributes: mergeAttrs(req.attributes, s.attributes),
	}
}

// End sends the span's usage events, with status ERROR when err is not nil
// (pass the body's error: partial usage is never dropped). Ending the root also
// sends the request end, counting the usage events of the whole request: wait
// for the request's branches first. Returns the send errors; a second End is a no-op.
func (s *Span) End(err error) error {
	s.mu.Lock()
	if s.ended {
		s.mu.Unlock()
		return nil
	}
	s.ended = true
	status := s.status
	if status == "" {
		status = StatusOK
	}
	if err != nil {
		status = StatusError
	}
	m := s.req.meter
	now := m.clock()
	events := make([]UsageEvent, len(s.records))
	for i, p := range s.records {
		events[i] = s.eventLocked(p, i, status, now)
	}
	s.mu.Unlock()
	ctx := context.Background()
	var errs []error
	for i := range events {
		if e := m.EmitUsageEvent(ctx, &events[i]); e != nil {
			errs = append(errs, e)
			continue
		}
		s.req.emitted.Add(1)
	}
	if s.root {
		req := s.req
		end := RequestEnd{EventID: RequestEndID(req.tenant, req.requestID), Tenant: req.tenant,
			RequestID: req.requestID, Workflow: req.workflow, RootSpanID: s.spanID,
			SpanCount: req.emitted.Load(), Status: status, EventTime: m.clock(), Attributes: req.attributes}
		if e := m.EmitRequestEnd(ctx, &end); e != nil {
			errs = append(errs, e)
		}
	}
	return errors.Join(errs...)
}

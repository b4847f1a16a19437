package nodemeter

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"
)

var errBoom = errors.New("boom")

type recorder struct {
	mu     sync.Mutex
	events []UsageEvent
	ends   []RequestEnd
}

func newRecordingMeter(t *testing.T) (*Meter, *recorder, *memSink) {
	t.Helper()
	sink := &memSink{}
	now := time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC)
	m, err := New(Config{Sink: sink, Clock: func() time.Time { return now }})
	if err != nil {
		t.Fatal(err)
	}
	r := &recorder{}
	m.observe = func(rec any) {
		r.mu.Lock()
		defer r.mu.Unlock()
		switch x := rec.(type) {
		case UsageEvent:
			r.events = append(r.events, x)
		case RequestEnd:
			r.ends = append(r.ends, x)
		}
	}
	return m, r, sink
}

func recordN(span *Span, n int) error {
	for i := 1; i <= n; i++ {
		if err := span.Record(Meters{APICalls: int64(i)}); err != nil {
			return err
		}
	}
	return nil
}

func intOf(v any) int { n, _ := integer(v); return int(n) }

func runChildren(ctx context.Context, children []any) error {
	for _, c := range children {
		c := c.(map[string]any)
		switch {
		case c["node"] != nil:
			if err := runNode(ctx, c); err != nil && !errors.Is(err, errBoom) {
				return err
			}
		case c["parallel"] != nil:
			var fns []func(context.Context) error
			for _, n := range c["parallel"].([]any) {
				n := n.(map[string]any)
				fns = append(fns, func(ctx context.Context) error {
					if err := runNode(ctx, n); err != nil && !errors.Is(err, errBoom) {
						return err
					}
					return nil
				})
			}
			if err := Parallel(ctx, fns...); err != nil {
				return err
			}
		case c["branch"] != nil:
			bctx, err := NamedBranch(ctx, c["branch"].(string))
			if err != nil {
				return err
			}
			kids, _ := c["children"].([]any)
			if err := runChildren(bctx, kids); err != nil {
				return err
			}
		default:
			return fmt.Errorf("unknown child %v", c)
		}
	}
	return nil
}

func runNode(ctx context.Context, n map[string]any) error {
	ctx, span, err := Node(ctx, n["node"].(string))
	if err != nil {
		return err
	}
	if err := recordN(span, intOf(n["records"])); err != nil {
		return err
	}
	kids, _ := n["children"].([]any)
	body := runChildren(ctx, kids)
	if body == nil && n["raises"] == true {
		body = errBoom
	}
	if err := span.End(body); err != nil {
		return err
	}
	return body
}

func TestRequestVectors(t *testing.T) {
	file := loadVectors(t, "requests.json")
	for _, v := range file["vectors"].([]any) {
		v := v.(map[string]any)
		t.Run(v["name"].(string), func(t *testing.T) {
			m, rec, sink := newRecordingMeter(t)
			root := v["root"].(map[string]any)
			ctx, span, err := m.Request(context.Background(), v["tenant"].(string),
				WithRequestID(v["request_id"].(string)), WithWorkflow(v["workflow"].(string)),
				WithRootNode(root["node_id"].(string)))
			if err != nil {
				t.Fatal(err)
			}
			if err := recordN(span, intOf(root["records"])); err != nil {
				t.Fatal(err)
			}
			kids, _ := root["children"].([]any)
			if err := runChildren(ctx, kids); err != nil {
				t.Fatal(err)
			}
			if err := span.End(nil); err != nil {
				t.Fatal(err)
			}
			exp := v["expected"].(map[string]any)
			var want, got []string
			for _, e := range exp["usage_events"].([]any) {
				e := e.(map[string]any)
				parent := "<nil>"
				if p, ok := e["parent_span_id"].(string); ok {
					parent = p
				}
				want = append(want, fmt.Sprintf("%s %s %s %q %d %s %s", e["node_id"], e["span_id"], parent,
					e["branch_path"], intOf(e["sequence"]), e["status"], e["event_id"]))
			}
			for _, e := range rec.events {
				parent := "<nil>"
				if e.ParentSpanID != nil {
					parent = *e.ParentSpanID
				}
				got = append(got, fmt.Sprintf("%s %s %s %q %d %s %s", e.NodeID, e.SpanID, parent,
					e.BranchPath, e.Sequence, e.Status, e.EventID))
			}
			sort.Strings(want)
			sort.Strings(got)
			if strings.Join(got, "\n") != strings.Join(want, "\n") {
				t.Errorf("usage events\n got:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
			}
			we := exp["request_end"].(map[string]any)
			if len(rec.ends) != 1 {
				t.Fatalf("%d request ends", len(rec.ends))
			}
			end := rec.ends[0]
			if end.RootSpanID != we["root_span_id"] || end.SpanCount != int64(intOf(we["span_count"])) ||
				string(end.Status) != we["status"] || end.EventID != we["event_id"] {
				t.Errorf("request end %+v, want %v", end, we)
			}
			// everything reached the sink, the end last, all under the request's key
			if len(sink.recs) != len(want)+1 {
				t.Errorf("sink has %d records, want %d", len(sink.recs), len(want)+1)
			}
			key := string(Key(v["tenant"].(string), v["request_id"].(string)))
			for _, r := range sink.recs {
				if string(r[0]) != key {
					t.Errorf("key %q, want %q", r[0], key)
				}
			}
			last := sink.recs[len(sink.recs)-1][1]
			if string(last[2:10]) != string(EncodeRequestEnd(&end)[2:10]) {
				t.Error("the last record is not the request end")
			}
		})
	}
}

func TestScopeErrors(t *testing.T) {
	m, rec, _ := newRecordingMeter(t)
	ctx := context.Background()
	if _, _, err := Node(ctx, "x"); ReasonOf(err) != "no_request" {
		t.Errorf("Node outside a request: %v", err)
	}
	if _, err := Branch(ctx); ReasonOf(err) != "no_request" {
		t.Errorf("Branch outside a request: %v", err)
	}
	if _, _, err := m.Request(ctx, "a b"); ReasonOf(err) != "invalid_tenant" {
		t.Errorf("bad tenant: %v", err)
	}
	ctx, root, err := m.Request(ctx, "acme", WithRequestID("r1"))
	if err != nil {
		t.Fatal(err)
	}
	for _, key := range []string{"", "a.b", strings.Repeat("k", 65)} {
		if _, err := NamedBranch(ctx, key); ReasonOf(err) != "invalid_branch" {
			t.Errorf("branch %q: %v", key, err)
		}
	}
	_, span, err := Node(ctx, "llm")
	if err != nil {
		t.Fatal(err)
	}
	if err := span.Record(Meters{InputTokens: -1}); ReasonOf(err) != "negative_quantity" {
		t.Errorf("negative: %v", err)
	}
	if err := span.MarkNonBillable(""); ReasonOf(err) != "missing_non_billable_reason" {
		t.Errorf("empty reason: %v", err)
	}
	if err := span.SetAttribute("k", strings.Repeat("v", 2049)); ReasonOf(err) != ReasonOversize {
		t.Errorf("long attribute: %v", err)
	}
	big := strings.Repeat("v", 2048)
	set := 0
	for i := 0; i < 40; i++ { // each within the limits, together over 64 KiB
		if err = span.SetAttribute(fmt.Sprintf("k%d", i), big); err != nil {
			break
		}
		set++
	}
	if ReasonOf(err) != ReasonOversize || set != 31 {
		t.Errorf("after %d attributes: %v", set, err)
	}
	long := strings.Repeat("m", 256)
	for i := 0; ; i++ { // fill up to within ~110 bytes of the limit
		if err = span.SetAttribute(fmt.Sprintf("x%d", i), strings.Repeat("v", 100)); err != nil {
			break
		}
	}
	// what a record adds (its model, provider) can break the limit too
	if err := span.Record(Meters{APICalls: 1}, RecordModel(long), RecordProvider(long)); ReasonOf(err) != ReasonOversize {
		t.Errorf("oversize record: %v", err)
	}
	if err := span.Record(Meters{GpuMs: 5}); err != nil { // GPU source defaults to MEASURED
		t.Errorf("gpu: %v", err)
	}
	_ = span.End(nil)
	if err := span.Record(Meters{APICalls: 1}); ReasonOf(err) != "span_ended" {
		t.Errorf("after End: %v", err)
	}
	if len(rec.events) != 1 || rec.events[0].Meters.GpuSource != GpuMeasured {
		t.Fatalf("want the one accepted record (gpu MEASURED): %d events", len(rec.events))
	}
	if err := root.End(nil); err != nil {
		t.Fatal(err)
	}
	if rec.ends[0].SpanCount != 1 {
		t.Errorf("span_count %d: a refused record is not counted", rec.ends[0].SpanCount)
	}
}

func TestRequestEndAfterFailedRoot(t *testing.T) {
	m, rec, _ := newRecordingMeter(t)
	ctx, root, _ := m.Request(context.Background(), "acme", WithRequestID("r2"),
		WithAttributes(map[string]string{"b": "2", "a": "1"}))
	_, n, _ := Node(ctx, "llm", WithModel("gpt-4o"), WithAttributes(map[string]string{"a": "x", "c": "3"}))
	if err := n.Record(Meters{InputTokens: 5}); err != nil {
		t.Fatal(err)
	}
	if err := n.End(nil); err != nil {
		t.Fatal(err)
	}
	if err := root.End(errBoom); err != nil {
		t.Fatal(err)
	}
	e := rec.events[0]
	if got := fmt.Sprint(e.Attributes); got != "[{a x} {b 2} {c 3}]" {
		t.Errorf("attributes %s", got)
	}
	if *e.Model != "gpt-4o" || e.Producer != "nodemeter-go/"+Version || e.Status != StatusOK {
		t.Errorf("event %+v", e)
	}
	end := rec.ends[0]
	if end.Status != StatusError || end.SpanCount != 1 || fmt.Sprint(end.Attributes) != "[{a 1} {b 2}]" {
		t.Errorf("end %+v", end)
	}
}

func TestClosedMeter(t *testing.T) {
	m, _, _ := newRecordingMeter(t)
	if err := m.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	_, root, _ := m.Request(context.Background(), "acme")
	if err := root.End(nil); !errors.Is(err, ErrClosed) {
		t.Errorf("after Close: %v", err)
	}
}

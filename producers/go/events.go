package nodemeter

import (
	"crypto/sha256"
	"encoding/hex"
	"hash/crc32"
	"regexp"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
)

// Status of a usage event or request end. The zero value "" means OK.
type Status string

const (
	StatusOK      Status = "OK"
	StatusError   Status = "ERROR"
	StatusPartial Status = "PARTIAL"
)

// GpuSource says how gpu_ms was obtained. The zero value "" means NONE.
type GpuSource string

const (
	GpuNone      GpuSource = "NONE"
	GpuMeasured  GpuSource = "MEASURED"
	GpuEstimated GpuSource = "ESTIMATED"
)

// Attr is one attribute. Attributes are ordered: Avro writes map entries in the
// order given, so an ordered slice keeps the bytes reproducible (see Attrs).
type Attr struct{ Key, Value string }

// Custom is one custom meter: a name and a quantity.
type Custom struct {
	Name     string
	Quantity int64
}

// Meters are the metered quantities of one usage record. InputTokens excludes
// cache reads: those are CachedInputTokens, so a token is counted once.
type Meters struct {
	InputTokens       int64
	OutputTokens      int64
	CachedInputTokens int64
	CacheWriteTokens  int64
	GpuMs             int64
	GpuType           string
	GpuSource         GpuSource
	CpuMs             int64
	APICalls          int64
	Custom            []Custom
}

// UsageEvent mirrors schemas/nodemeter_schemas/usage_event.v2.avsc.
// Nil pointers are Avro nulls; "" is not null.
type UsageEvent struct {
	EventID           string // EventID(tenant, request_id, span_id, sequence) unless given
	Tenant            string
	RequestID         string
	NodeID            string
	SpanID            string
	ParentSpanID      *string
	BranchPath        string
	Workflow          string
	Model             *string
	Provider          *string
	Sequence          int64
	Meters            Meters
	Status            Status
	NotBillable       bool // inverted so that the zero value is billable=true
	NonBillableReason *string
	EventTime         time.Time
	TraceID           *string
	Producer          string
	Attributes        []Attr
}

// RequestEnd mirrors schemas/nodemeter_schemas/request_end.v1.avsc.
type RequestEnd struct {
	EventID    string
	Tenant     string
	RequestID  string
	Workflow   string
	RootSpanID string
	SpanCount  int64
	Status     Status
	EventTime  time.Time
	Attributes []Attr
}

// Limits (docs/wire.md, "Validation limits").
const (
	MaxIDLen         = 256
	MaxAttributes    = 64
	MaxAttributeLen  = 2048
	MaxCustomMeters  = 32
	MaxEventBytes    = 64 * 1024
	MaxSpanCount     = 1_000_000
	MaxSequence      = 1<<31 - 1
	maxBranchKeyLen  = 64
	hashSeparator    = "\x1f"
	rootSpanPart     = "__root__"
	requestEndPart   = "__end__"
	limitTokens      = 50_000_000
	limitGpuMs       = 7 * 24 * 3_600_000
	limitCpuMs       = 7 * 24 * 3_600_000 * 256
	limitAPICalls    = 10_000_000
	limitCustomMeter = 1_000_000_000_000_000
)

var (
	tenantRE = regexp.MustCompile(`\A[A-Za-z0-9][A-Za-z0-9_.:@-]{0,127}\z`)
	customRE = regexp.MustCompile(`\A[a-z][a-z0-9_.]{0,63}\z`)
	// Stored by the worker: 2000-01-01T00:00:00Z <= t < 2200-01-01T00:00:00Z.
	minEventTime = time.Date(2000, 1, 1, 0, 0, 0, 0, time.UTC)
	endEventTime = time.Date(2200, 1, 1, 0, 0, 0, 0, time.UTC)
)

// --- ids ---------------------------------------------------------------------------

func hashHex(n int, parts ...string) string {
	sum := sha256.Sum256([]byte(strings.Join(parts, hashSeparator)))
	return hex.EncodeToString(sum[:])[:n]
}

// EventID is the usage event id: H32(tenant, request_id, span_id, sequence).
func EventID(tenant, requestID, spanID string, sequence int64) string {
	return hashHex(32, tenant, requestID, spanID, strconv.FormatInt(sequence, 10))
}

// RequestEndID is the request end's event id: H32(tenant, request_id, "__end__", 0).
func RequestEndID(tenant, requestID string) string {
	return EventID(tenant, requestID, requestEndPart, 0)
}

// RootSpanID is H16(request_id, "__root__").
func RootSpanID(requestID string) string { return hashHex(16, requestID, rootSpanPart) }

// ChildSpanID is H16(request_id, parent_span_id, branch_path, node_id, occurrence).
func ChildSpanID(requestID, parentSpanID, branchPath, nodeID string, occurrence int) string {
	return hashHex(16, requestID, parentSpanID, branchPath, nodeID, strconv.Itoa(occurrence))
}

// Key is the Kafka key of a request's records: "tenant/request_id".
func Key(tenant, requestID string) []byte { return []byte(tenant + "/" + requestID) }

// Partition is librdkafka's consistent_random for a non-empty key:
// crc32(key) mod partitions (docs/wire.md, "Key and partitioning").
func Partition(key []byte, partitions int) int {
	return int(crc32.ChecksumIEEE(key) % uint32(partitions))
}

// --- validation ----------------------------------------------------------------------

func checkText(name, v string, required bool) error {
	if v == "" {
		if required {
			return bad("missing_"+name, "%s is required", name)
		}
		return nil
	}
	if !utf8.ValidString(v) {
		return bad("invalid_"+name, "%s is not valid UTF-8", name)
	}
	if utf8.RuneCountInString(v) > MaxIDLen {
		return bad(ReasonOversize, "%s is %d chars; the limit is %d", name, utf8.RuneCountInString(v), MaxIDLen)
	}
	return nil
}

func checkOpt(name string, v *string) error {
	if v == nil {
		return nil
	}
	return checkText(name, *v, false)
}

// ValidateTenant refuses a tenant that is empty or breaks its pattern.
func ValidateTenant(tenant string) error {
	if tenant == "" {
		return bad("missing_tenant", "tenant is required")
	}
	if !tenantRE.MatchString(tenant) {
		return bad("invalid_tenant", "tenant %q must match %s", tenant, tenantRE)
	}
	return nil
}

func checkQuantity(name string, v, limit int64) error {
	if v < 0 {
		return bad("negative_quantity", "%s must not be negative, got %d", name, v)
	}
	if v > limit {
		return bad("absurd_quantity", "%s=%d exceeds the per-record limit %d", name, v, limit)
	}
	return nil
}

// ValidateMeters applies the per-record limits and the gpu_source rule.
func ValidateMeters(m Meters) error {
	for _, q := range []struct {
		name  string
		v     int64
		limit int64
	}{
		{"input_tokens", m.InputTokens, limitTokens},
		{"output_tokens", m.OutputTokens, limitTokens},
		{"cached_input_tokens", m.CachedInputTokens, limitTokens},
		{"cache_write_tokens", m.CacheWriteTokens, limitTokens},
		{"gpu_ms", m.GpuMs, limitGpuMs},
		{"cpu_ms", m.CpuMs, limitCpuMs},
		{"api_calls", m.APICalls, limitAPICalls},
	} {
		if err := checkQuantity(q.name, q.v, q.limit); err != nil {
			return err
		}
	}
	if len(m.Custom) > MaxCustomMeters {
		return bad(ReasonOversize, "%d custom meters; the limit is %d", len(m.Custom), MaxCustomMeters)
	}
	seen := make(map[string]bool, len(m.Custom))
	for _, c := range m.Custom {
		if !customRE.MatchString(c.Name) {
			return bad("invalid_meter", "custom meter name %q must match %s", c.Name, customRE)
		}
		if seen[c.Name] {
			return bad("invalid_meter", "custom meter %q given twice", c.Name)
		}
		seen[c.Name] = true
		if err := checkQuantity("custom:"+c.Name, c.Quantity, limitCustomMeter); err != nil {
			return err
		}
	}
	if _, ok := gpuSourceIndex(m.GpuSource); !ok {
		return bad("invalid_gpu_source", "gpu_source must be NONE, MEASURED or ESTIMATED, got %q", m.GpuSource)
	}
	if m.GpuMs > 0 && (m.GpuSource == "" || m.GpuSource == GpuNone) {
		return bad("invalid_gpu_source", "gpu_ms given without gpu_source (MEASURED or ESTIMATED)")
	}
	return checkText("gpu_type", m.GpuType, false)
}

// ValidateAttributes applies the attribute limits; a key given twice is refused.
func ValidateAttributes(attrs []Attr) error {
	if len(attrs) > MaxAttributes {
		return bad(ReasonOversize, "%d attributes; the limit is %d", len(attrs), MaxAttributes)
	}
	seen := make(map[string]bool, len(attrs))
	for _, a := range attrs {
		if !utf8.ValidString(a.Key) || !utf8.ValidString(a.Value) {
			return bad("invalid_attributes", "attribute %q is not valid UTF-8", a.Key)
		}
		if utf8.RuneCountInString(a.Key) > MaxIDLen || utf8.RuneCountInString(a.Value) > MaxAttributeLen {
			return bad(ReasonOversize, "attribute %.40q is too long (key <= %d, value <= %d chars)", a.Key, MaxIDLen, MaxAttributeLen)
		}
		if seen[a.Key] {
			return bad("invalid_attributes", "attribute %q given twice", a.Key)
		}
		seen[a.Key] = true
	}
	return nil
}

func checkStatus(s Status) error {
	if _, ok := statusIndex(s); !ok {
		return bad("invalid_status", "status must be OK, ERROR or PARTIAL, got %q", s)
	}
	return nil
}

func checkTime(t time.Time) error {
	if t.IsZero() {
		return bad("invalid_time", "event_time is required")
	}
	return nil
}

// ValidateUsageEvent refuses what the worker would dead-letter (the clock-skew
// and stored-range rules are checked by the Meter, which has a clock).
func ValidateUsageEvent(e *UsageEvent) error {
	if err := ValidateTenant(e.Tenant); err != nil {
		return err
	}
	for _, f := range []struct{ name, v string }{
		{"event_id", e.EventID}, {"request_id", e.RequestID}, {"node_id", e.NodeID}, {"span_id", e.SpanID},
	} {
		if err := checkText(f.name, f.v, true); err != nil {
			return err
		}
	}
	for _, f := range []struct {
		name string
		v    *string
	}{
		{"parent_span_id", e.ParentSpanID}, {"model", e.Model}, {"provider", e.Provider},
		{"trace_id", e.TraceID}, {"non_billable_reason", e.NonBillableReason},
	} {
		if err := checkOpt(f.name, f.v); err != nil {
			return err
		}
	}
	for _, f := range []struct{ name, v string }{
		{"workflow", e.Workflow}, {"producer", e.Producer}, {"branch_path", e.BranchPath},
	} {
		if err := checkText(f.name, f.v, false); err != nil {
			return err
		}
	}
	if e.Sequence < 0 || e.Sequence > MaxSequence {
		return bad("invalid_sequence", "sequence must be 0..%d, got %d", MaxSequence, e.Sequence)
	}
	if err := checkStatus(e.Status); err != nil {
		return err
	}
	if err := checkTime(e.EventTime); err != nil {
		return err
	}
	if err := ValidateMeters(e.Meters); err != nil {
		return err
	}
	return ValidateAttributes(e.Attributes)
}

// ValidateRequestEnd refuses a request end the worker would dead-letter.
func ValidateRequestEnd(e *RequestEnd) error {
	if err := ValidateTenant(e.Tenant); err != nil {
		return err
	}
	for _, f := range []struct{ name, v string }{
		{"event_id", e.EventID}, {"request_id", e.RequestID}, {"root_span_id", e.RootSpanID},
	} {
		if err := checkText(f.name, f.v, true); err != nil {
			return err
		}
	}
	if !utf8.ValidString(e.Workflow) {
		return bad("invalid_workflow", "workflow is not valid UTF-8")
	}
	if err := checkStatus(e.Status); err != nil {
		return err
	}
	if e.SpanCount < 0 {
		return bad("invalid_span_count", "span_count must not be negative, got %d", e.SpanCount)
	}
	if e.SpanCount > MaxSpanCount {
		return bad("absurd_quantity", "span_count=%d is absurd", e.SpanCount)
	}
	if err := checkTime(e.EventTime); err != nil {
		return err
	}
	return ValidateAttributes(e.Attributes)
}

// checkClock is the clock-skew rule and the worker's stored range: more than skew
// after now is future_event_time; before 2000 or from 2200 on is invalid_time.
func checkClock(t, now time.Time, skew time.Duration) error {
	if t.After(now.Add(skew)) {
		return bad("future_event_time", "event_time %s is more than %s ahead of this host's clock (%s)",
			t.Format(time.RFC3339Nano), skew, now.Format(time.RFC3339Nano))
	}
	if t.Before(minEventTime) || !t.Before(endEventTime) {
		return bad("invalid_time", "event_time %s is outside 2000-01-01 .. 2200-01-01", t.Format(time.RFC3339Nano))
	}
	return nil
}

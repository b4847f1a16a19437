package nodemeter

import "encoding/binary"

// Fingerprints (CRC-64-AVRO of the Parsing Canonical Form, little-endian on the
// wire) of the schemas this SDK writes; codec_test.go recomputes them from
// schemas/vectors/schemas.json.
const (
	FingerprintUsageEventV2 uint64 = 0x2ffc0c151f07cf71
	FingerprintRequestEndV1 uint64 = 0x58eee2a3bdeead02
)

var magic = [2]byte{0xc3, 0x01}

// CRC64Avro is the Avro spec's "Rabin" fingerprint of a schema's canonical form.
func CRC64Avro(data []byte) uint64 {
	const empty uint64 = 0xc15d213aa4d7a795
	fp := empty
	for _, b := range data {
		fp = (fp >> 8) ^ crc64Table[byte(fp)^b]
	}
	return fp
}

var crc64Table = func() (t [256]uint64) {
	const empty uint64 = 0xc15d213aa4d7a795
	for i := range t {
		fp := uint64(i)
		for j := 0; j < 8; j++ {
			fp = (fp >> 1) ^ (empty & -(fp & 1))
		}
		t[i] = fp
	}
	return t
}()

type writer struct{ b []byte }

func (w *writer) long(n int64) {
	w.b = binary.AppendUvarint(w.b, uint64((n<<1)^(n>>63)))
}

func (w *writer) str(s string) {
	w.long(int64(len(s)))
	w.b = append(w.b, s...)
}

func (w *writer) optStr(s *string) {
	if s == nil {
		w.b = append(w.b, 0)
		return
	}
	w.b = append(w.b, 2)
	w.str(*s)
}

func (w *writer) boolean(v bool) {
	if v {
		w.b = append(w.b, 1)
	} else {
		w.b = append(w.b, 0)
	}
}

func (w *writer) attrs(a []Attr) {
	if len(a) > 0 {
		w.long(int64(len(a)))
		for _, kv := range a {
			w.str(kv.Key)
			w.str(kv.Value)
		}
	}
	w.b = append(w.b, 0)
}

func (w *writer) header(fp uint64) {
	w.b = append(w.b, magic[:]...)
	w.b = binary.LittleEndian.AppendUint64(w.b, fp)
}

func statusIndex(s Status) (int64, bool) {
	switch s {
	case "", StatusOK:
		return 0, true
	case StatusError:
		return 1, true
	case StatusPartial:
		return 2, true
	}
	return 0, false
}

func gpuSourceIndex(s GpuSource) (int64, bool) {
	switch s {
	case "", GpuNone:
		return 0, true
	case GpuMeasured:
		return 1, true
	case GpuEstimated:
		return 2, true
	}
	return 0, false
}

// EncodeUsageEvent writes the Avro single-object encoding of e (schema
// usage_event v2) without validating it: use Meter for checked sends.
func EncodeUsageEvent(e *UsageEvent) []byte {
	w := writer{b: make([]byte, 0, 256)}
	w.header(FingerprintUsageEventV2)
	w.str(e.EventID)
	w.str(e.Tenant)
	w.str(e.RequestID)
	w.str(e.NodeID)
	w.str(e.SpanID)
	w.optStr(e.ParentSpanID)
	w.str(e.BranchPath)
	w.str(e.Workflow)
	w.optStr(e.Model)
	w.optStr(e.Provider)
	w.long(e.Sequence)
	m := &e.Meters
	w.long(m.InputTokens)
	w.long(m.OutputTokens)
	w.long(m.CachedInputTokens)
	w.long(m.CacheWriteTokens)
	w.long(m.GpuMs)
	w.str(m.GpuType)
	gs, _ := gpuSourceIndex(m.GpuSource)
	w.long(gs)
	w.long(m.CpuMs)
	w.long(m.APICalls)
	if len(m.Custom) > 0 {
		w.long(int64(len(m.Custom)))
		for _, c := range m.Custom {
			w.str(c.Name)
			w.long(c.Quantity)
		}
	}
	w.b = append(w.b, 0)
	st, _ := statusIndex(e.Status)
	w.long(st)
	w.boolean(!e.NotBillable)
	w.optStr(e.NonBillableReason)
	w.long(e.EventTime.UnixMicro())
	w.optStr(e.TraceID)
	w.str(e.Producer)
	w.attrs(e.Attributes)
	return w.b
}

// EncodeRequestEnd writes the Avro single-object encoding of e (request_end v1).
func EncodeRequestEnd(e *RequestEnd) []byte {
	w := writer{b: make([]byte, 0, 128)}
	w.header(FingerprintRequestEndV1)
	w.str(e.EventID)
	w.str(e.Tenant)
	w.str(e.RequestID)
	w.str(e.Workflow)
	w.str(e.RootSpanID)
	w.long(e.SpanCount)
	st, _ := statusIndex(e.Status)
	w.long(st)
	w.long(e.EventTime.UnixMicro())
	w.attrs(e.Attributes)
	return w.b
}

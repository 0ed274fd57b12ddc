package telemetry

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"strings"

	"github.com/prometheus/client_golang/prometheus"
)

// TraceHeader is the W3C trace-context header; gRPC carries it as metadata under the same name, and
// Envoy sidecars propagate it unchanged.
const TraceHeader = "traceparent"

// Trace identifies a request across services: TraceID is shared by every hop, SpanID is this hop's.
type Trace struct {
	TraceID string
	SpanID  string
}

type traceKey struct{}

// NewTrace continues the trace of a traceparent header value, or starts a new one when the value is
// missing or malformed; either way it returns a fresh span id for this hop.
func NewTrace(traceparent string) Trace {
	t := Trace{SpanID: randomHex(8)}
	if id, ok := parseTraceparent(traceparent); ok {
		t.TraceID = id
	} else {
		t.TraceID = randomHex(16)
	}
	return t
}

// Traceparent renders t as a traceparent header value (version 00, sampled).
func (t Trace) Traceparent() string { return "00-" + t.TraceID + "-" + t.SpanID + "-01" }

// WithTrace returns ctx carrying t.
func WithTrace(ctx context.Context, t Trace) context.Context {
	return context.WithValue(ctx, traceKey{}, t)
}

// TraceFrom returns the trace in ctx, if any.
func TraceFrom(ctx context.Context) (Trace, bool) {
	t, ok := ctx.Value(traceKey{}).(Trace)
	return t, ok
}

// TraceID returns the trace id in ctx, or "".
func TraceID(ctx context.Context) string {
	t, _ := TraceFrom(ctx)
	return t.TraceID
}

// Exemplar returns the exemplar labels for an observation made under ctx: {trace_id}, or nil when
// ctx carries no trace.
func Exemplar(ctx context.Context) prometheus.Labels {
	if id := TraceID(ctx); id != "" {
		return prometheus.Labels{"trace_id": id}
	}
	return nil
}

// parseTraceparent extracts the trace id of "00-<32 hex>-<16 hex>-<2 hex>", without allocating unless
// the id has upper-case digits.
func parseTraceparent(v string) (string, bool) {
	v = strings.TrimSpace(v)
	// Four fields of 2, 32, 16 and 2 characters; only the trace id must be hex.
	if len(v) != 55 || v[2] != '-' || v[35] != '-' || v[52] != '-' || strings.Count(v, "-") != 3 || !isHex(v[3:35]) {
		return "", false
	}
	id := strings.ToLower(v[3:35])
	if id == zeroTraceID {
		return "", false
	}
	return id, true
}

const zeroTraceID = "00000000000000000000000000000000"

func isHex(s string) bool {
	for i := range len(s) {
		switch c := s[i]; {
		case '0' <= c && c <= '9', 'a' <= c && c <= 'f', 'A' <= c && c <= 'F':
		default:
			return false
		}
	}
	return true
}

// randomHex returns n random bytes as 2n hex digits (n <= 16), allocating only the string.
func randomHex(n int) string {
	var raw [16]byte
	var digits [32]byte
	_, _ = rand.Read(raw[:n]) // crypto/rand.Read never fails on supported platforms
	hex.Encode(digits[:], raw[:n])
	return string(digits[:2*n])
}

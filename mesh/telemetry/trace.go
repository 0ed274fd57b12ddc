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

// parseTraceparent extracts the trace id of "00-<32 hex>-<16 hex>-<2 hex>".
func parseTraceparent(v string) (string, bool) {
	parts := strings.Split(strings.TrimSpace(v), "-")
	if len(parts) != 4 || len(parts[0]) != 2 || len(parts[1]) != 32 || len(parts[2]) != 16 || len(parts[3]) != 2 {
		return "", false
	}
	id := strings.ToLower(parts[1])
	if _, err := hex.DecodeString(id); err != nil || id == strings.Repeat("0", 32) {
		return "", false
	}
	return id, true
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b) // crypto/rand.Read never fails on supported platforms
	return hex.EncodeToString(b)
}

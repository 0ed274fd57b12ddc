// Package httpmw is the HTTP middleware of a Meshplane edge service — trace context, access logs,
// panic recovery, body limits — and the JSON request/response helpers that turn bad input into a 400
// naming the field.
package httpmw

import (
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"time"

	"meshplane.dev/mesh/telemetry"
)

// Chain wraps h in mws; the first one is outermost.
func Chain(h http.Handler, mws ...func(http.Handler) http.Handler) http.Handler {
	for i := len(mws) - 1; i >= 0; i-- {
		h = mws[i](h)
	}
	return h
}

// TraceIDHeader is the response header that tells a client the trace id of its request, the key to
// its logs in Loki and its exemplars in Prometheus.
const TraceIDHeader = "X-Trace-Id"

// Trace continues the caller's W3C trace context (or starts one), puts it in the request context and
// returns the trace id in X-Trace-Id. It is the one middleware that replaces the request, so it goes
// outermost: the others must hand the same request to the ServeMux, which records the route in it.
func Trace(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		t := telemetry.NewTrace(r.Header.Get(telemetry.TraceHeader))
		w.Header().Set(TraceIDHeader, t.TraceID)
		next.ServeHTTP(w, r.WithContext(telemetry.WithTrace(r.Context(), t)))
	})
}

// AccessLog logs one line per request after it finished, with route, status and duration.
func AccessLog(logger *slog.Logger) func(http.Handler) http.Handler {
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			start := time.Now()
			sw := &statusWriter{ResponseWriter: w}
			next.ServeHTTP(sw, r)
			level := slog.LevelInfo
			if sw.Status() >= 500 {
				level = slog.LevelError
			}
			logger.LogAttrs(r.Context(), level, "http request",
				slog.String("method", r.Method),
				slog.String("route", telemetry.Route(r.Pattern)),
				slog.String("path", r.URL.Path),
				slog.Int("status", sw.Status()),
				slog.Float64("duration_ms", float64(time.Since(start).Microseconds())/1000),
			)
		})
	}
}

// Recover answers 500 instead of dropping the connection when a handler panics, and logs the panic.
// http.ErrAbortHandler is re-raised: it is the standard way to abort a response on purpose.
func Recover(logger *slog.Logger) func(http.Handler) http.Handler {
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			defer func() {
				v := recover()
				if v == nil {
					return
				}
				if err, ok := v.(error); ok && errors.Is(err, http.ErrAbortHandler) {
					panic(v)
				}
				logger.ErrorContext(r.Context(), "handler panicked", slog.String("panic", fmt.Sprint(v)))
				WriteError(w, http.StatusInternalServerError, Error{Message: "internal error"})
			}()
			next.ServeHTTP(w, r)
		})
	}
}

// MaxBodyBytes is the request body cap of every Meshplane HTTP API.
const MaxBodyBytes = 1 << 20

// LimitBody caps request bodies at n bytes; reading past it fails with *http.MaxBytesError, which
// DecodeJSON turns into 413.
func LimitBody(n int64) func(http.Handler) http.Handler {
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			r.Body = http.MaxBytesReader(w, r.Body, n)
			next.ServeHTTP(w, r)
		})
	}
}

type statusWriter struct {
	http.ResponseWriter
	status int
}

func (w *statusWriter) WriteHeader(code int) {
	if w.status == 0 {
		w.status = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	return w.ResponseWriter.Write(b)
}

func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

func (w *statusWriter) Status() int {
	if w.status == 0 {
		return http.StatusOK
	}
	return w.status
}

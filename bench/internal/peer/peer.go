// Package peer assembles, around the hot-path bench's handlers, the stack a Go team would otherwise put
// together from the ecosystem's most common parts, to measure Meshplane's mesh stack against it:
//
//   - traces and metrics: OpenTelemetry's own instrumentation, otelhttp on the HTTP edge and otelgrpc's
//     stats handlers on the gRPC server and client, with the OpenTelemetry SDK (every trace sampled, W3C
//     trace context propagated) and its Prometheus exporter, whose histograms carry trace exemplars;
//   - logs: log/slog JSON lines, one access line per HTTP request with the trace id, and go-grpc-middleware
//     v2's logging interceptors (one line per finished call, trace id from the span) on server and client;
//   - resilience: go-grpc-middleware's recovery interceptor, a recovering HTTP middleware and a body
//     limit; on the client a sony/gobreaker circuit breaker and a default deadline.
//
// Why OpenTelemetry rather than go-grpc-middleware's interceptors with grpc-ecosystem's Prometheus
// provider: the mesh stack is itself built from the latter (mesh/rpc, mesh/telemetry), so that peer
// would measure Meshplane against a subset of itself. OpenTelemetry is what a team starting today
// reaches for: the vendor-neutral API, with otelhttp and otelgrpc maintained alongside it, the tracing
// that go-grpc-middleware v2 dropped its own interceptors for, and one instrumentation giving traces,
// metrics and exemplars together. Logs and resilience have no OpenTelemetry answer in Go, so they come
// from the standard library and the most used packages (go-grpc-middleware v2, sony/gobreaker).
//
// It ships no logs itself: such a team has an agent (Promtail, Alloy) tail stdout outside the process,
// whose cost this bench does not count. Spans are recorded and dropped at the end (no exporter), as the
// mesh stack exports none either.
package peer

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"time"

	"github.com/grpc-ecosystem/go-grpc-middleware/v2/interceptors/logging"
	"github.com/grpc-ecosystem/go-grpc-middleware/v2/interceptors/recovery"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/sony/gobreaker/v2"
	"go.opentelemetry.io/contrib/instrumentation/google.golang.org/grpc/otelgrpc"
	"go.opentelemetry.io/contrib/instrumentation/net/http/otelhttp"
	otelprom "go.opentelemetry.io/otel/exporters/prometheus"
	"go.opentelemetry.io/otel/propagation"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
)

// Stack is one process's observability and resilience, the peer way.
type Stack struct {
	// Registry holds the OpenTelemetry Prometheus exporter's metrics.
	Registry *prometheus.Registry
	// Logger writes JSON lines.
	Logger *slog.Logger

	tracer      *sdktrace.TracerProvider
	meter       *sdkmetric.MeterProvider
	propagators propagation.TextMapPropagator
}

// New builds the stack, its log lines going to logs.
func New(logs io.Writer) (*Stack, error) {
	reg := prometheus.NewRegistry()
	exporter, err := otelprom.New(otelprom.WithRegisterer(reg))
	if err != nil {
		return nil, fmt.Errorf("peer: prometheus exporter: %w", err)
	}
	return &Stack{
		Registry:    reg,
		Logger:      slog.New(slog.NewJSONHandler(logs, nil)),
		tracer:      sdktrace.NewTracerProvider(sdktrace.WithSampler(sdktrace.AlwaysSample())),
		meter:       sdkmetric.NewMeterProvider(sdkmetric.WithReader(exporter)),
		propagators: propagation.TraceContext{},
	}, nil
}

// Close flushes and stops the providers.
func (s *Stack) Close(ctx context.Context) error {
	return errors.Join(s.tracer.Shutdown(ctx), s.meter.Shutdown(ctx))
}

// HTTP wraps mux: otelhttp outermost (span, http.server.request.duration), then the access log,
// recovery and the body limit.
func (s *Stack) HTTP(mux http.Handler, maxBodyBytes int64) http.Handler {
	h := limitBody(mux, maxBodyBytes)
	h = s.recoverHTTP(h)
	h = s.accessLog(h)
	return otelhttp.NewHandler(h, "http.server",
		otelhttp.WithTracerProvider(s.tracer), otelhttp.WithMeterProvider(s.meter), otelhttp.WithPropagators(s.propagators))
}

// GRPCServerOptions returns the server's stats handler and interceptors.
func (s *Stack) GRPCServerOptions() []grpc.ServerOption {
	return []grpc.ServerOption{
		grpc.StatsHandler(otelgrpc.NewServerHandler(
			otelgrpc.WithTracerProvider(s.tracer), otelgrpc.WithMeterProvider(s.meter), otelgrpc.WithPropagators(s.propagators))),
		grpc.ChainUnaryInterceptor(
			logging.UnaryServerInterceptor(interceptorLogger(s.Logger), logOptions()...),
			recovery.UnaryServerInterceptor(recovery.WithRecoveryHandlerContext(func(ctx context.Context, p any) error {
				s.Logger.ErrorContext(ctx, "grpc handler panicked", slog.String("panic", fmt.Sprint(p)))
				return status.Error(codes.Internal, "internal error")
			})),
		),
	}
}

// DialOptions returns the options of a connection to dependency: stats handler, deadline, breaker and
// call log.
func (s *Stack) DialOptions(dependency string, timeout time.Duration) []grpc.DialOption {
	cb := gobreaker.NewCircuitBreaker[struct{}](gobreaker.Settings{Name: dependency})
	return []grpc.DialOption{
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithStatsHandler(otelgrpc.NewClientHandler(
			otelgrpc.WithTracerProvider(s.tracer), otelgrpc.WithMeterProvider(s.meter), otelgrpc.WithPropagators(s.propagators))),
		grpc.WithChainUnaryInterceptor(
			deadline(timeout),
			breaker(cb),
			logging.UnaryClientInterceptor(interceptorLogger(s.Logger), logOptions()...),
		),
	}
}

// interceptorLogger is go-grpc-middleware's documented slog adapter.
func interceptorLogger(l *slog.Logger) logging.Logger {
	return logging.LoggerFunc(func(ctx context.Context, lvl logging.Level, msg string, fields ...any) {
		l.Log(ctx, slog.Level(lvl), msg, fields...)
	})
}

// logOptions log one line per finished call, with the trace id, as go-grpc-middleware's examples do.
func logOptions() []logging.Option {
	return []logging.Option{
		logging.WithLogOnEvents(logging.FinishCall),
		logging.WithFieldsFromContext(func(ctx context.Context) logging.Fields {
			if sc := trace.SpanContextFromContext(ctx); sc.IsSampled() {
				return logging.Fields{"trace_id", sc.TraceID().String()}
			}
			return nil
		}),
	}
}

func (s *Stack) accessLog(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		sw := &statusWriter{ResponseWriter: w, status: http.StatusOK}
		next.ServeHTTP(sw, r)
		level := slog.LevelInfo
		if sw.status >= 500 {
			level = slog.LevelError
		}
		s.Logger.LogAttrs(r.Context(), level, "http request",
			slog.String("method", r.Method), slog.String("route", r.Pattern), slog.String("path", r.URL.Path),
			slog.Int("status", sw.status), slog.Duration("duration", time.Since(start)),
			slog.String("trace_id", trace.SpanContextFromContext(r.Context()).TraceID().String()))
	})
}

func (s *Stack) recoverHTTP(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		defer func() {
			if v := recover(); v != nil {
				if err, ok := v.(error); ok && errors.Is(err, http.ErrAbortHandler) {
					panic(v)
				}
				s.Logger.ErrorContext(r.Context(), "handler panicked", slog.String("panic", fmt.Sprint(v)))
				http.Error(w, "internal error", http.StatusInternalServerError)
			}
		}()
		next.ServeHTTP(w, r)
	})
}

func limitBody(next http.Handler, n int64) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		r.Body = http.MaxBytesReader(w, r.Body, n)
		next.ServeHTTP(w, r)
	})
}

type statusWriter struct {
	http.ResponseWriter
	status      int
	wroteHeader bool
}

func (w *statusWriter) WriteHeader(code int) {
	if !w.wroteHeader {
		w.status, w.wroteHeader = code, true
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

func deadline(d time.Duration) grpc.UnaryClientInterceptor {
	return func(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
		if _, ok := ctx.Deadline(); !ok {
			var cancel context.CancelFunc
			ctx, cancel = context.WithTimeout(ctx, d)
			defer cancel()
		}
		return invoker(ctx, method, req, reply, cc, opts...)
	}
}

// breaker counts Unavailable, DeadlineExceeded and Internal as failures, the rest as answers.
func breaker(cb *gobreaker.CircuitBreaker[struct{}]) grpc.UnaryClientInterceptor {
	return func(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
		var callErr error
		_, err := cb.Execute(func() (struct{}, error) {
			callErr = invoker(ctx, method, req, reply, cc, opts...)
			switch status.Code(callErr) {
			case codes.Unavailable, codes.DeadlineExceeded, codes.Internal:
				return struct{}{}, callErr
			}
			return struct{}{}, nil
		})
		if callErr != nil {
			return callErr
		}
		if err != nil {
			return status.Error(codes.Unavailable, err.Error())
		}
		return nil
	}
}

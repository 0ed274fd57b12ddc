// Package rpc assembles the interceptor chains of Meshplane's gRPC servers and clients: trace
// propagation, the ecosystem's Prometheus metrics and panic recovery from go-grpc-middleware, a
// call log, fault injection on servers and a circuit breaker plus a default deadline on clients. It returns options rather than servers and connections, so the same chains apply to a
// plain grpc.Server today and to gRPC's xDS server (proxyless mesh) later.
package rpc

import (
	"context"
	"fmt"
	"log/slog"
	"runtime"
	"time"

	grpcprom "github.com/grpc-ecosystem/go-grpc-middleware/providers/prometheus"
	"github.com/grpc-ecosystem/go-grpc-middleware/v2/interceptors/recovery"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"meshplane.dev/mesh/breaker"
	"meshplane.dev/mesh/fault"
	"meshplane.dev/mesh/telemetry"
)

// ServerOptions returns the options every Meshplane gRPC server is built with. Order matters: the
// trace comes first so everything after it sees it; metrics wrap the fault injector, so injected
// failures show up in the server's own metrics exactly as real ones would.
func ServerOptions(logger *slog.Logger, metrics *grpcprom.ServerMetrics, faults *fault.Injector) []grpc.ServerOption {
	exemplar := grpcprom.WithExemplarFromContext(telemetry.Exemplar)
	return []grpc.ServerOption{
		// A worker per CPU serves calls on goroutines that keep their grown stacks; otherwise every call
		// gets a new goroutine whose stack grows through the interceptor chain again (`make bench`:
		// stack copying was a seventh of a call's CPU).
		grpc.NumStreamWorkers(uint32(runtime.GOMAXPROCS(0))),
		grpc.ChainUnaryInterceptor(
			serverTrace,
			metrics.UnaryServerInterceptor(exemplar),
			serverCallLog(logger),
			recovery.UnaryServerInterceptor(recovery.WithRecoveryHandlerContext(func(ctx context.Context, p any) error {
				logger.ErrorContext(ctx, "grpc handler panicked", slog.String("panic", fmt.Sprint(p)))
				return status.Error(codes.Internal, "internal error")
			})),
			faults.UnaryServerInterceptor(),
		),
		grpc.ChainStreamInterceptor(
			metrics.StreamServerInterceptor(exemplar),
			serverStreamLog(logger),
		),
	}
}

// ClientOptions returns the options of a connection to one dependency. The breaker sits in front of
// the metrics, so calls it rejects never count as sent; timeout applies to calls whose context has no
// deadline of its own.
func ClientOptions(logger *slog.Logger, metrics *grpcprom.ClientMetrics, b *breaker.Breaker, timeout time.Duration) []grpc.DialOption {
	exemplar := grpcprom.WithExemplarFromContext(telemetry.Exemplar)
	unary := []grpc.UnaryClientInterceptor{clientTrace, defaultDeadline(timeout)}
	if b != nil {
		unary = append(unary, b.UnaryClientInterceptor())
	}
	unary = append(unary,
		metrics.UnaryClientInterceptor(exemplar),
		clientCallLog(logger),
	)
	return []grpc.DialOption{
		// Plaintext: inside a mesh the sidecar (or, proxyless, xDS credentials) provides mTLS.
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithChainUnaryInterceptor(unary...),
		grpc.WithChainStreamInterceptor(metrics.StreamClientInterceptor(exemplar)),
	}
}

func defaultDeadline(d time.Duration) grpc.UnaryClientInterceptor {
	return func(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
		if _, ok := ctx.Deadline(); !ok && d > 0 {
			var cancel context.CancelFunc
			ctx, cancel = context.WithTimeout(ctx, d)
			defer cancel()
		}
		return invoker(ctx, method, req, reply, cc, opts...)
	}
}

// serverTrace continues the caller's trace from the traceparent metadata, or starts one.
func serverTrace(ctx context.Context, req any, _ *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	var parent string
	if md, ok := metadata.FromIncomingContext(ctx); ok {
		if v := md.Get(telemetry.TraceHeader); len(v) > 0 {
			parent = v[0]
		}
	}
	return handler(telemetry.WithTrace(ctx, telemetry.NewTrace(parent)), req)
}

// clientTrace sends the current trace on as traceparent metadata.
func clientTrace(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
	if t, ok := telemetry.TraceFrom(ctx); ok {
		ctx = metadata.AppendToOutgoingContext(ctx, telemetry.TraceHeader, t.Traceparent())
	}
	return invoker(ctx, method, req, reply, cc, opts...)
}

package rpc

import (
	"context"
	"log/slog"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// The call log: one line per finished call, with go-grpc-middleware's field names. Its own rather than
// go-grpc-middleware's logging interceptors, which build every field of a line (about 70 allocations a
// call) before the level decides whether it is written: `make bench` found them the largest part of
// the mesh stack's cost per call, mostly for client lines at debug that are never written.

// serverLevel is the level of a finished call a server answered with code, as go-grpc-middleware's
// DefaultServerCodeToLevel has it: the caller's mistakes at info, trouble at warn, bugs at error.
func serverLevel(c codes.Code) slog.Level {
	switch c {
	case codes.OK, codes.Canceled, codes.InvalidArgument, codes.NotFound, codes.AlreadyExists, codes.Unauthenticated:
		return slog.LevelInfo
	case codes.Unknown, codes.Unimplemented, codes.Internal, codes.DataLoss:
		return slog.LevelError
	}
	return slog.LevelWarn
}

// clientLevel logs failed calls to dependencies at warn, successful ones at debug.
func clientLevel(c codes.Code) slog.Level {
	if c == codes.OK {
		return slog.LevelDebug
	}
	return slog.LevelWarn
}

// logCall writes the line of one finished call, building nothing when its level is off.
func logCall(ctx context.Context, logger *slog.Logger, level func(codes.Code) slog.Level, component, fullMethod, kind string, start time.Time, err error) {
	st := status.Convert(err)
	lvl := level(st.Code())
	if !logger.Enabled(ctx, lvl) {
		return
	}
	service, method, _ := strings.Cut(strings.TrimPrefix(fullMethod, "/"), "/")
	attrs := make([]slog.Attr, 0, 8)
	attrs = append(attrs,
		slog.String("protocol", "grpc"),
		slog.String("grpc.component", component),
		slog.String("grpc.service", service),
		slog.String("grpc.method", method),
		slog.String("grpc.method_type", kind),
		slog.String("grpc.code", st.Code().String()),
		slog.Float64("grpc.time_ms", float64(time.Since(start).Microseconds())/1000),
	)
	if err != nil {
		attrs = append(attrs, slog.String("grpc.error", st.Message()))
	}
	logger.LogAttrs(ctx, lvl, "finished call", attrs...)
}

func serverCallLog(logger *slog.Logger) grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		start := time.Now()
		resp, err := handler(ctx, req)
		logCall(ctx, logger, serverLevel, "server", info.FullMethod, "unary", start, err)
		return resp, err
	}
}

func serverStreamLog(logger *slog.Logger) grpc.StreamServerInterceptor {
	return func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
		start := time.Now()
		err := handler(srv, ss)
		kind := "server_stream"
		switch {
		case info.IsClientStream && info.IsServerStream:
			kind = "bidi_stream"
		case info.IsClientStream:
			kind = "client_stream"
		}
		logCall(ss.Context(), logger, serverLevel, "server", info.FullMethod, kind, start, err)
		return err
	}
}

func clientCallLog(logger *slog.Logger) grpc.UnaryClientInterceptor {
	return func(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
		start := time.Now()
		err := invoker(ctx, method, req, reply, cc, opts...)
		logCall(ctx, logger, clientLevel, "client", method, "unary", start, err)
		return err
	}
}

package breaker

import (
	"context"
	"errors"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// ErrorDomain is the ErrorInfo domain of Meshplane's dependency errors.
const ErrorDomain = "meshplane.dev"

// Reasons carried in ErrorInfo for a failed dependency.
const (
	// ReasonCircuitOpen: the caller's breaker for the dependency rejected the call without sending it.
	ReasonCircuitOpen = "CIRCUIT_OPEN"
	// ReasonUnavailable: the dependency was called and failed.
	ReasonUnavailable = "DEPENDENCY_UNAVAILABLE"
)

// DependencyError returns a gRPC status error of code that names the dependency which failed, so
// every caller up the chain (and finally the HTTP edge) can say which one it was.
func DependencyError(code codes.Code, dependency, reason, msg string) error {
	st := status.New(code, msg)
	if withInfo, err := st.WithDetails(&errdetails.ErrorInfo{
		Reason: reason, Domain: ErrorDomain, Metadata: map[string]string{"dependency": dependency},
	}); err == nil {
		st = withInfo
	}
	return st.Err()
}

// FailedDependency returns the dependency and reason named by a DependencyError anywhere down the
// chain, if err carries one.
func FailedDependency(err error) (dependency, reason string, ok bool) {
	st, ok := status.FromError(err)
	if !ok {
		return "", "", false
	}
	for _, d := range st.Details() {
		if info, isInfo := d.(*errdetails.ErrorInfo); isInfo && info.GetDomain() == ErrorDomain && info.GetMetadata()["dependency"] != "" {
			return info.GetMetadata()["dependency"], info.GetReason(), true
		}
	}
	return "", "", false
}

// GRPCClassifier classifies errors of calls to dependency target: codes that mean the server is in
// trouble are failures; answers (NotFound, InvalidArgument, ...) are successes; cancellation by the
// caller is excluded, and so is a failure the server reports of one of its own dependencies, because
// the server itself answered — its own breaker deals with it.
func GRPCClassifier(target string) func(error) Result {
	return func(err error) Result {
		if err == nil {
			return Success
		}
		if errors.Is(err, context.Canceled) {
			return Excluded
		}
		if dep, _, ok := FailedDependency(err); ok && dep != target {
			return Excluded
		}
		switch status.Code(err) {
		case codes.Canceled:
			return Excluded
		case codes.Unavailable, codes.DeadlineExceeded, codes.ResourceExhausted, codes.Internal,
			codes.Unknown, codes.DataLoss, codes.Unimplemented:
			return Failure
		}
		return Success
	}
}

// UnaryClientInterceptor runs each call through b; a rejected call fails at once with Unavailable and
// a DependencyError naming b's dependency and reason CIRCUIT_OPEN.
func (b *Breaker) UnaryClientInterceptor() grpc.UnaryClientInterceptor {
	return func(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
		done, err := b.Allow()
		if err != nil {
			return DependencyError(codes.Unavailable, b.name, ReasonCircuitOpen, err.Error())
		}
		err = invoker(ctx, method, req, reply, cc, opts...)
		done(err)
		return err
	}
}

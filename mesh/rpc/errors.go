package rpc

import (
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// InvalidField returns an INVALID_ARGUMENT status error carrying a BadRequest field violation, so
// the HTTP edge can answer 400 naming the field of the client's request.
func InvalidField(field, problem string) error {
	st := status.New(codes.InvalidArgument, field+": "+problem)
	if d, err := st.WithDetails(&errdetails.BadRequest{FieldViolations: []*errdetails.BadRequest_FieldViolation{
		{Field: field, Description: problem},
	}}); err == nil {
		st = d
	}
	return st.Err()
}

// FieldViolation returns the first field violation err carries.
func FieldViolation(err error) (field, problem string, ok bool) {
	st, isStatus := status.FromError(err)
	if !isStatus {
		return "", "", false
	}
	for _, d := range st.Details() {
		if br, isBR := d.(*errdetails.BadRequest); isBR && len(br.GetFieldViolations()) > 0 {
			v := br.GetFieldViolations()[0]
			return v.GetField(), v.GetDescription(), true
		}
	}
	return "", "", false
}

// Reason returns the ErrorInfo reason err carries, if any.
func Reason(err error) string {
	st, ok := status.FromError(err)
	if !ok {
		return ""
	}
	for _, d := range st.Details() {
		if info, isInfo := d.(*errdetails.ErrorInfo); isInfo {
			return info.GetReason()
		}
	}
	return ""
}

// WithReason returns a status error of code carrying ErrorInfo{reason, domain meshplane.dev}.
func WithReason(code codes.Code, reason, msg string) error {
	st := status.New(code, msg)
	if d, err := st.WithDetails(&errdetails.ErrorInfo{Reason: reason, Domain: "meshplane.dev"}); err == nil {
		st = d
	}
	return st.Err()
}

package v1alpha1

import (
	"fmt"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"k8s.io/apimachinery/pkg/util/validation/field"
)

// The rules of spec.routes and spec.fault, mirroring the CRD's markers and CEL rules one for one, as
// validate.go does for the rest of the spec.

// Limits of spec.routes, as the CRD declares them; they keep CEL's cost estimate within the API
// server's budget.
const (
	maxRoutes       = 16
	maxHeaders      = 4
	maxPathLength   = 256
	maxGRPCName     = 256
	maxHeaderName   = 128
	maxHeaderValue  = 256
	maxRouteNameLen = 63
)

// DefaultRouteName names the generated route that takes every call no spec route matches.
const DefaultRouteName = "default"

var (
	grpcMethodPattern  = regexp.MustCompile(`^([A-Za-z_][A-Za-z0-9_]*([.][A-Za-z_][A-Za-z0-9_]*)*/)?[A-Za-z_][A-Za-z0-9_]*$`)
	grpcServicePattern = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*([.][A-Za-z_][A-Za-z0-9_]*)*$`)
	pathPattern        = regexp.MustCompile(`^/[^\s?#]*$`)
	headerNamePattern  = regexp.MustCompile(`^[a-z0-9][-a-z0-9_.]*$`)
	routeNamePattern   = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]*[a-z0-9])?$`)
)

// HTTPMethods are the methods a route may match.
var HTTPMethods = []HTTPMethod{"GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "PATCH"}

// GRPCCodes are the gRPC codes an abort may return: every code but OK, by Istio's names.
var GRPCCodes = []string{"CANCELLED", "UNKNOWN", "INVALID_ARGUMENT", "DEADLINE_EXCEEDED", "NOT_FOUND",
	"ALREADY_EXISTS", "PERMISSION_DENIED", "RESOURCE_EXHAUSTED", "FAILED_PRECONDITION", "ABORTED", "OUT_OF_RANGE",
	"UNIMPLEMENTED", "INTERNAL", "UNAVAILABLE", "DATA_LOSS", "UNAUTHENTICATED"}

// reservedHeaders are the header-match keys Istio ignores.
var reservedHeaders = []string{"method", "uri", "scheme", "authority"}

// MatchesEverything reports whether m selects every HTTP request: no method, no headers, and no path or
// the prefix /.
func (m *HTTPMatch) MatchesEverything() bool {
	return m.Method == nil && m.Headers == nil && m.matchesEveryPath()
}

func (m *HTTPMatch) matchesEveryPath() bool {
	return m.Path == nil || (m.Path.Type == PathPrefix && m.Path.Value == "/")
}

// SameCalls reports whether m and other select exactly the same calls, as the CRD's rule on spec.routes
// compares them: equal gRPC matches, or HTTP matches with the same path (none and the prefix / alike),
// method and set of headers.
func (m RouteMatch) SameCalls(other RouteMatch) bool {
	a, b := m, other
	switch {
	case a.GRPC != nil && b.GRPC != nil:
		return *a.GRPC == *b.GRPC
	case a.HTTP != nil && b.HTTP != nil:
		x, y := a.HTTP, b.HTTP
		if x.matchesEveryPath() != y.matchesEveryPath() {
			return false
		}
		if !x.matchesEveryPath() && *x.Path != *y.Path {
			return false
		}
		if (x.Method == nil) != (y.Method == nil) || (x.Method != nil && *x.Method != *y.Method) {
			return false
		}
		if (x.Headers == nil) != (y.Headers == nil) || len(x.Headers) != len(y.Headers) {
			return false
		}
		for _, h := range x.Headers {
			if !slices.Contains(y.Headers, h) {
				return false
			}
		}
		return true
	}
	return false
}

func validateRoutes(s *TrafficPolicySpec, path *field.Path) field.ErrorList {
	routes := s.Routes
	var errs field.ErrorList
	switch {
	case len(routes) == 0:
		return field.ErrorList{field.Required(path, "list at least one route, or leave routes unset")}
	case len(routes) > maxRoutes:
		errs = append(errs, field.TooMany(path, len(routes), maxRoutes))
	}
	for i := range routes {
		p := path.Index(i)
		errs = append(errs, routes[i].validate(p)...)
		if routes[i].Name != "" && slices.ContainsFunc(routes[:i], func(o Route) bool { return o.Name == routes[i].Name }) {
			errs = append(errs, field.Duplicate(p, map[string]any{"name": routes[i].Name}))
		}
	}

	// Routes that select the same calls: all of them are named, as the CRD's rule does. A match without
	// exactly one of grpc and http is reported on its own.
	var same []string
	for _, a := range routes {
		if (a.Match.GRPC == nil) == (a.Match.HTTP == nil) {
			continue
		}
		n := 0
		for _, b := range routes {
			if a.Match.SameCalls(b.Match) {
				n++
			}
		}
		if n != 1 {
			same = append(same, a.Name)
		}
	}
	if len(same) > 0 {
		errs = append(errs, field.Invalid(path, field.OmitValueType{},
			fmt.Sprintf("routes %s match the same calls: only the first would ever apply; merge them or tell their matches apart", celList(same))))
	}

	// A route inherits what it leaves unset; each attempt must still fit in the whole request.
	if s.Timeout != nil {
		if timeout, ok := s.Timeout.wellFormed(); ok {
			var over []string
			for _, r := range routes {
				if r.Timeout != nil || r.Retries == nil || r.Retries.PerTryTimeout == nil {
					continue
				}
				if perTry, ok := r.Retries.PerTryTimeout.wellFormed(); ok && perTry > timeout {
					over = append(over, r.Name)
				}
			}
			if len(over) > 0 {
				errs = append(errs, field.Invalid(path, field.OmitValueType{}, fmt.Sprintf("routes %s set retries.perTryTimeout above spec.timeout (%s), which they inherit: "+
					"each attempt must fit in the whole request; give them a timeout of their own or a shorter perTryTimeout", celList(over), *s.Timeout)))
			}
		}
	}
	if s.Retries != nil && s.Retries.PerTryTimeout != nil {
		if perTry, ok := s.Retries.PerTryTimeout.wellFormed(); ok {
			var under []string
			for _, r := range routes {
				if r.Timeout == nil || r.Retries != nil {
					continue
				}
				if timeout, ok := r.Timeout.wellFormed(); ok && perTry > timeout {
					under = append(under, r.Name)
				}
			}
			if len(under) > 0 {
				errs = append(errs, field.Invalid(path, field.OmitValueType{}, fmt.Sprintf("routes %s set a timeout below spec.retries.perTryTimeout (%s), which they inherit: "+
					"each attempt must fit in the whole request; give them retries of their own", celList(under), *s.Retries.PerTryTimeout)))
			}
		}
	}
	return errs
}

// celList writes names as CEL's format() writes a list of strings: ["a", "b"].
func celList(names []string) string {
	quoted := make([]string, len(names))
	for i, n := range names {
		quoted[i] = strconv.Quote(n)
	}
	return "[" + strings.Join(quoted, ", ") + "]"
}

func (r *Route) validate(path *field.Path) field.ErrorList {
	var errs field.ErrorList
	name := path.Child("name")
	switch r.Name {
	case "":
		errs = append(errs, field.Required(name, "a DNS label naming the route"))
	default:
		if len(r.Name) > maxRouteNameLen {
			errs = append(errs, field.TooLong(name, r.Name, maxRouteNameLen))
		}
		if !routeNamePattern.MatchString(r.Name) {
			errs = append(errs, field.Invalid(name, r.Name, "must be a DNS label: lowercase alphanumerics and -, starting and ending with an alphanumeric"))
		}
		if r.Name == DefaultRouteName {
			errs = append(errs, field.Invalid(name, r.Name, "default is the name of the route that takes every other call; choose another"))
		}
	}
	if r.Timeout == nil && r.Retries == nil && r.Fault == nil && r.Idempotent == nil {
		errs = append(errs, field.Required(name, "sets nothing of its own: give it a timeout, retries, fault or idempotent, or remove it"))
	}
	errs = append(errs, r.Match.validate(path.Child("match"))...)
	if r.Timeout != nil {
		errs = append(errs, r.Timeout.validate(path.Child("timeout"))...)
	}
	if r.Retries != nil {
		errs = append(errs, r.Retries.validate(path.Child("retries"))...)
		if r.Timeout != nil && r.Retries.PerTryTimeout != nil {
			errs = append(errs, validatePerTryWithinTimeout(r.Timeout, r.Retries, path.Child("retries", "perTryTimeout"),
				"retries.perTryTimeout ("+string(*r.Retries.PerTryTimeout)+") must not exceed the timeout of the route (%s): each attempt must fit in the whole request")...)
		}
	}
	if r.Fault != nil {
		errs = append(errs, r.Fault.validate(path.Child("fault"))...)
	}
	return errs
}

func (m *RouteMatch) validate(path *field.Path) field.ErrorList {
	var errs field.ErrorList
	if (m.GRPC == nil) == (m.HTTP == nil) {
		errs = append(errs, field.Invalid(path, field.OmitValueType{}, "set exactly one of grpc (gRPC calls by method or service) and http (HTTP requests by path, method and headers)"))
	}
	if m.GRPC != nil {
		errs = append(errs, m.GRPC.validate(path.Child("grpc"))...)
	}
	if m.HTTP != nil {
		errs = append(errs, m.HTTP.validate(path.Child("http"))...)
	}
	return errs
}

func (m *GRPCMatch) validate(path *field.Path) field.ErrorList {
	var errs field.ErrorList
	if (m.Method == "") == (m.Service == "") {
		errs = append(errs, field.Invalid(path, field.OmitValueType{}, "set exactly one of method (Charge, or package.Service/Charge) and service (package.Service)"))
	}
	if m.Method != "" {
		p := path.Child("method")
		if len(m.Method) > maxGRPCName {
			errs = append(errs, field.TooLong(p, m.Method, maxGRPCName))
		}
		if !grpcMethodPattern.MatchString(m.Method) {
			errs = append(errs, field.Invalid(p, m.Method, "must be a method name such as Charge, or service/method such as meshplane.payments.v1.PaymentService/Charge"))
		}
	}
	if m.Service != "" {
		p := path.Child("service")
		if len(m.Service) > maxGRPCName {
			errs = append(errs, field.TooLong(p, m.Service, maxGRPCName))
		}
		if !grpcServicePattern.MatchString(m.Service) {
			errs = append(errs, field.Invalid(p, m.Service, "must be a full service name such as meshplane.payments.v1.PaymentService"))
		}
	}
	return errs
}

func (m *HTTPMatch) validate(path *field.Path) field.ErrorList {
	var errs field.ErrorList
	if m.Path != nil {
		p := path.Child("path")
		switch m.Path.Type {
		case "":
			errs = append(errs, field.Required(p.Child("type"), "Exact or Prefix"))
		case PathExact, PathPrefix:
		default:
			errs = append(errs, field.NotSupported(p.Child("type"), m.Path.Type, []PathMatchType{PathExact, PathPrefix}))
		}
		v := p.Child("value")
		switch m.Path.Value {
		case "":
			errs = append(errs, field.Required(v, "the path, starting with /"))
		default:
			if len(m.Path.Value) > maxPathLength {
				errs = append(errs, field.TooLong(v, m.Path.Value, maxPathLength))
			}
			if !pathPattern.MatchString(m.Path.Value) {
				errs = append(errs, field.Invalid(v, m.Path.Value, "must start with / and hold no spaces, query (?) or fragment (#)"))
			}
		}
	}
	if m.Method != nil && !slices.Contains(HTTPMethods, *m.Method) {
		errs = append(errs, field.NotSupported(path.Child("method"), *m.Method, HTTPMethods))
	}
	if m.Headers != nil {
		headers := path.Child("headers")
		switch {
		case len(m.Headers) == 0:
			errs = append(errs, field.Required(headers, "list at least one header, or leave headers unset"))
		case len(m.Headers) > maxHeaders:
			errs = append(errs, field.TooMany(headers, len(m.Headers), maxHeaders))
		}
		for i, h := range m.Headers {
			p := headers.Index(i)
			name := p.Child("name")
			switch h.Name {
			case "":
				errs = append(errs, field.Required(name, "the header name in lowercase"))
			default:
				if len(h.Name) > maxHeaderName {
					errs = append(errs, field.TooLong(name, h.Name, maxHeaderName))
				}
				if !headerNamePattern.MatchString(h.Name) {
					errs = append(errs, field.Invalid(name, h.Name, "must be a header name in lowercase: alphanumerics, -, _ and ."))
				}
				if slices.Contains(reservedHeaders, h.Name) {
					errs = append(errs, field.Invalid(name, h.Name, "Istio ignores header matches on method, uri, scheme and authority: use match.http.method or match.http.path"))
				}
			}
			if h.Name != "" && slices.ContainsFunc(m.Headers[:i], func(o HeaderMatch) bool { return o.Name == h.Name }) {
				errs = append(errs, field.Duplicate(p, map[string]any{"name": h.Name}))
			}
			value := p.Child("value")
			switch {
			case h.Value == "":
				errs = append(errs, field.Required(value, "the exact value the header must have"))
			case len(h.Value) > maxHeaderValue:
				errs = append(errs, field.TooLong(value, h.Value, maxHeaderValue))
			}
		}
	}
	if m.MatchesEverything() {
		errs = append(errs, field.Invalid(path, field.OmitValueType{}, "matches every request: set a path other than the prefix /, a method or headers, or set these fields at the top level of spec"))
	}
	return errs
}

func (f *Fault) validate(path *field.Path) field.ErrorList {
	var errs field.ErrorList
	if f.Delay == nil && f.Abort == nil {
		return field.ErrorList{field.Required(path, "set delay, abort or both, or leave fault unset")}
	}
	if d := f.Delay; d != nil {
		p := path.Child("delay")
		if d.FixedDelay == "" {
			errs = append(errs, field.Required(p.Child("fixedDelay"), "how long delayed calls wait, e.g. 2s"))
		} else {
			errs = append(errs, d.FixedDelay.validate(p.Child("fixedDelay"))...)
		}
		errs = append(errs, validatePercentage(d.Percentage, p.Child("percentage"), "delayed")...)
	}
	if a := f.Abort; a != nil {
		p := path.Child("abort")
		errs = append(errs, validatePercentage(a.Percentage, p.Child("percentage"), "aborted")...)
		code := p.Child("code")
		switch a.Code {
		case "":
			errs = append(errs, field.Required(code, "what aborted calls fail with: a gRPC code such as UNAVAILABLE, or an HTTP status such as \"503\""))
		default:
			if len(a.Code) > 32 {
				errs = append(errs, field.TooLong(code, string(a.Code), 32))
			}
			if _, ok := a.Code.HTTPStatus(); !ok && !slices.Contains(GRPCCodes, string(a.Code)) {
				errs = append(errs, field.Invalid(code, string(a.Code), string(a.Code)+" is not a gRPC code other than OK ("+strings.Join(GRPCCodes, ", ")+") nor an HTTP status from 400 to 599 such as 503, written as a string"))
			}
		}
	}
	return errs
}

var abortStatusPattern = regexp.MustCompile(`^[45][0-9][0-9]$`)

// HTTPStatus returns the HTTP status c denotes, if it is one.
func (c AbortCode) HTTPStatus() (int32, bool) {
	if !abortStatusPattern.MatchString(string(c)) {
		return 0, false
	}
	n, _ := strconv.Atoi(string(c))
	return int32(n), true
}

func validatePercentage(v *int32, path *field.Path, what string) field.ErrorList {
	switch {
	case v == nil:
		return field.ErrorList{field.Required(path, "the percentage of calls "+what+", 0 to 100")}
	case *v < 0 || *v > 100:
		return field.ErrorList{field.Invalid(path, *v, "must be between 0 and 100")}
	}
	return nil
}

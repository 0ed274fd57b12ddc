// Package fault injects failures into a service on purpose — an error rate and added latency per
// gRPC method or HTTP route — so breakers, retries, outlier detection and dashboards can be shown
// working on real traffic. Rules are set at start (FAULTS, a JSON array) and replaced at runtime
// through the admin port (GET/PUT/DELETE /admin/faults) with the same JSON.
package fault

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Rule is one fault. JSON: {"target": "Charge", "errorRate": 1, "delay": "200ms", "grpcCode":
// "UNAVAILABLE", "httpStatus": 503}.
type Rule struct {
	// Target is a gRPC full method ("/payments.v1.PaymentService/Charge"), a method name ("Charge"),
	// an HTTP route pattern ("POST /v1/orders"), an event subject a consumer processes
	// ("orders.placed"), or "*" for everything.
	Target string `json:"target"`
	// ErrorRate is the fraction of matching calls that fail, 0 to 1.
	ErrorRate float64 `json:"errorRate,omitempty"`
	// Delay is added before every matching call (and before its injected error, if any).
	Delay Duration `json:"delay,omitempty"`
	// GRPCCode is the code of injected gRPC errors; default UNAVAILABLE.
	GRPCCode string `json:"grpcCode,omitempty"`
	// HTTPStatus is the status of injected HTTP errors; default 503.
	HTTPStatus int `json:"httpStatus,omitempty"`
}

// Duration is a time.Duration written as "200ms" in JSON.
type Duration time.Duration

// MarshalJSON implements json.Marshaler.
func (d Duration) MarshalJSON() ([]byte, error) { return json.Marshal(time.Duration(d).String()) }

// UnmarshalJSON implements json.Unmarshaler.
func (d *Duration) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return errors.New(`want a duration string such as "200ms"`)
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		return fmt.Errorf("want a duration such as \"200ms\", got %q", s)
	}
	*d = Duration(v)
	return nil
}

// MaxDelay bounds injected latency, so a typo cannot hang a service for hours.
const MaxDelay = time.Minute

var codeByName = func() map[string]codes.Code {
	m := map[string]codes.Code{}
	for c := codes.OK + 1; c <= codes.Unauthenticated; c++ {
		m[strings.ToUpper(codeName(c))] = c
	}
	return m
}()

// codeName turns codes.Unavailable into "UNAVAILABLE" style names.
func codeName(c codes.Code) string {
	s := c.String()
	var b strings.Builder
	for i, r := range s {
		if i > 0 && r >= 'A' && r <= 'Z' {
			b.WriteByte('_')
		}
		b.WriteRune(r)
	}
	return strings.ToUpper(b.String())
}

// Validate reports the first invalid field of rule i, by name.
func (r Rule) validate(i int) error {
	at := fmt.Sprintf("faults[%d]", i)
	switch {
	case strings.TrimSpace(r.Target) == "":
		return fmt.Errorf("%s.target: required (a gRPC method, an HTTP route such as \"GET /v1/products\", or \"*\")", at)
	case r.ErrorRate < 0 || r.ErrorRate > 1:
		return fmt.Errorf("%s.errorRate: %v is not between 0 and 1", at, r.ErrorRate)
	case r.Delay < 0 || time.Duration(r.Delay) > MaxDelay:
		return fmt.Errorf("%s.delay: %s is not between 0 and %s", at, time.Duration(r.Delay), MaxDelay)
	case r.HTTPStatus != 0 && (r.HTTPStatus < 400 || r.HTTPStatus > 599):
		return fmt.Errorf("%s.httpStatus: %d is not an error status (400-599)", at, r.HTTPStatus)
	}
	if r.GRPCCode != "" {
		if _, ok := codeByName[strings.ToUpper(r.GRPCCode)]; !ok {
			return fmt.Errorf("%s.grpcCode: %q is not a gRPC error code (e.g. UNAVAILABLE, INTERNAL)", at, r.GRPCCode)
		}
	}
	return nil
}

// Parse decodes and validates a JSON array of rules; unknown fields are errors that name the field.
// Empty input is no rules.
func Parse(data []byte) ([]Rule, error) {
	if len(bytes.TrimSpace(data)) == 0 {
		return nil, nil
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	var rules []Rule
	if err := dec.Decode(&rules); err != nil {
		return nil, fmt.Errorf("faults: %w", err)
	}
	if dec.More() {
		return nil, errors.New("faults: want one JSON array of rules")
	}
	for i, r := range rules {
		if err := r.validate(i); err != nil {
			return nil, err
		}
	}
	return rules, nil
}

// Rules is a list of rules settable from an environment variable (it implements
// encoding.TextUnmarshaler for the config package).
type Rules []Rule

// UnmarshalText implements encoding.TextUnmarshaler.
func (rs *Rules) UnmarshalText(b []byte) error {
	r, err := Parse(b)
	if err != nil {
		return err
	}
	*rs = r
	return nil
}

// String renders the rules as JSON ("" when there are none).
func (rs *Rules) String() string {
	if rs == nil || len(*rs) == 0 {
		return ""
	}
	b, _ := json.Marshal([]Rule(*rs))
	return string(b)
}

// Injector applies the current rules. It is safe for concurrent use.
type Injector struct {
	mu    sync.RWMutex
	rules []Rule
	// roll returns a number in [0, 1); replaceable in tests.
	roll func() float64
}

// New returns an injector with rules.
func New(rules []Rule) *Injector { return &Injector{rules: rules, roll: rand.Float64} }

// Set replaces the rules.
func (in *Injector) Set(rules []Rule) {
	in.mu.Lock()
	in.rules = rules
	in.mu.Unlock()
}

// Rules returns a copy of the current rules.
func (in *Injector) Rules() []Rule {
	in.mu.RLock()
	defer in.mu.RUnlock()
	return append([]Rule{}, in.rules...)
}

// match returns the first rule for any of names (most specific first) and whether to fail.
func (in *Injector) match(names ...string) (Rule, bool, bool) {
	in.mu.RLock()
	defer in.mu.RUnlock()
	for _, n := range append(names, "*") {
		for _, r := range in.rules {
			if r.Target == n {
				return r, r.ErrorRate > 0 && in.roll() < r.ErrorRate, true
			}
		}
	}
	return Rule{}, false, false
}

// delay waits d or until ctx ends.
func delay(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Apply injects the fault of target into work that is neither a gRPC call nor an HTTP route — a
// consumer processing an event of a subject, say: it waits the rule's delay (or until ctx ends) and
// returns an error when the rule's error rate says this one fails.
func (in *Injector) Apply(ctx context.Context, target string) error {
	r, fail, ok := in.match(target)
	if !ok {
		return nil
	}
	if err := delay(ctx, time.Duration(r.Delay)); err != nil {
		return err
	}
	if fail {
		return fmt.Errorf("injected fault on %s", target)
	}
	return nil
}

// UnaryServerInterceptor injects faults into unary gRPC calls matching the full method or its
// method name.
func (in *Injector) UnaryServerInterceptor() grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		method := info.FullMethod[strings.LastIndexByte(info.FullMethod, '/')+1:]
		r, fail, ok := in.match(info.FullMethod, method)
		if !ok {
			return handler(ctx, req)
		}
		if err := delay(ctx, time.Duration(r.Delay)); err != nil {
			return nil, status.FromContextError(err).Err()
		}
		if fail {
			code := codes.Unavailable
			if r.GRPCCode != "" {
				code = codeByName[strings.ToUpper(r.GRPCCode)]
			}
			return nil, status.Errorf(code, "injected fault on %s", info.FullMethod)
		}
		return handler(ctx, req)
	}
}

// HTTP wraps the handler of route (its ServeMux pattern) with the faults that match it.
func (in *Injector) HTTP(route string, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		r, fail, ok := in.match(route)
		if !ok {
			next.ServeHTTP(w, req)
			return
		}
		if err := delay(req.Context(), time.Duration(r.Delay)); err != nil {
			return // the client is gone
		}
		if fail {
			code := http.StatusServiceUnavailable
			if r.HTTPStatus != 0 {
				code = r.HTTPStatus
			}
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(code)
			_ = json.NewEncoder(w).Encode(map[string]string{"error": "injected fault on " + route})
			return
		}
		next.ServeHTTP(w, req)
	})
}

// maxAdminBody caps PUT /admin/faults bodies.
const maxAdminBody = 1 << 20

// AdminHandler serves GET (list), PUT (replace, JSON array) and DELETE (clear) of the rules. A bad
// PUT answers 400 naming the field and leaves the current rules untouched.
func (in *Injector) AdminHandler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.Method {
		case http.MethodGet:
		case http.MethodPut:
			var buf bytes.Buffer
			if _, err := buf.ReadFrom(http.MaxBytesReader(w, r.Body, maxAdminBody)); err != nil {
				writeJSON(w, http.StatusRequestEntityTooLarge, map[string]string{"error": "faults: " + err.Error()})
				return
			}
			rules, err := Parse(buf.Bytes())
			if err != nil {
				writeJSON(w, http.StatusBadRequest, map[string]string{"error": err.Error()})
				return
			}
			in.Set(rules)
		case http.MethodDelete:
			in.Set(nil)
		default:
			w.Header().Set("Allow", "GET, PUT, DELETE")
			writeJSON(w, http.StatusMethodNotAllowed, map[string]string{"error": "method not allowed"})
			return
		}
		writeJSON(w, http.StatusOK, in.Rules())
	})
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v)
}

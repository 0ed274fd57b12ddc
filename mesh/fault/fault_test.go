package fault

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

func TestParseNamesTheBadField(t *testing.T) {
	tests := []struct {
		name, in, wantErr string
	}{
		{"empty is no rules", "", ""},
		{"valid", `[{"target":"Charge","errorRate":0.5,"delay":"10ms","grpcCode":"INTERNAL"}]`, ""},
		{"unknown field", `[{"target":"Charge","errorRat":1}]`, `unknown field "errorRat"`},
		{"rate above 1", `[{"target":"Charge","errorRate":2}]`, "faults[0].errorRate"},
		{"missing target", `[{"errorRate":1}]`, "faults[0].target"},
		{"bad delay", `[{"target":"x","delay":"soon"}]`, `"soon"`},
		{"negative delay", `[{"target":"x","delay":"-1s"}]`, "faults[0].delay"},
		{"bad code", `[{"target":"x","grpcCode":"NOPE"}]`, "faults[0].grpcCode"},
		{"bad status", `[{"target":"x","httpStatus":200}]`, "faults[0].httpStatus"},
		{"not an array", `{"target":"x"}`, "cannot unmarshal"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse([]byte(tt.in))
			switch {
			case tt.wantErr == "" && err != nil:
				t.Errorf("Parse(%s): got %v, want no error", tt.in, err)
			case tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)):
				t.Errorf("Parse(%s): got %v, want an error containing %q", tt.in, err, tt.wantErr)
			}
		})
	}
}

func TestGRPCInterceptorMatchesMethodAndInjectsCode(t *testing.T) {
	in := New([]Rule{{Target: "Charge", ErrorRate: 1, GRPCCode: "RESOURCE_EXHAUSTED"}})
	icpt := in.UnaryServerInterceptor()
	handled := 0
	handler := func(context.Context, any) (any, error) { handled++; return "ok", nil }

	_, err := icpt(context.Background(), nil, &grpc.UnaryServerInfo{FullMethod: "/payments.v1.PaymentService/Charge"}, handler)
	if status.Code(err) != codes.ResourceExhausted || handled != 0 {
		t.Errorf("Charge: got %v (handled %d), want RESOURCE_EXHAUSTED without reaching the handler", err, handled)
	}
	if _, err := icpt(context.Background(), nil, &grpc.UnaryServerInfo{FullMethod: "/payments.v1.PaymentService/Refund"}, handler); err != nil || handled != 1 {
		t.Errorf("Refund: got %v (handled %d), want untouched", err, handled)
	}
	in.Set(nil)
	if _, err := icpt(context.Background(), nil, &grpc.UnaryServerInfo{FullMethod: "/payments.v1.PaymentService/Charge"}, handler); err != nil {
		t.Errorf("after clearing: got %v, want no fault", err)
	}
}

func TestErrorRateIsAFraction(t *testing.T) {
	in := New([]Rule{{Target: "*", ErrorRate: 0.25}})
	rolls := []float64{0.1, 0.3, 0.2, 0.9}
	i := 0
	in.roll = func() float64 { r := rolls[i%len(rolls)]; i++; return r }
	icpt := in.UnaryServerInterceptor()
	var failed []bool
	for range rolls {
		_, err := icpt(context.Background(), nil, &grpc.UnaryServerInfo{FullMethod: "/a.B/C"}, func(context.Context, any) (any, error) { return nil, nil })
		failed = append(failed, err != nil)
	}
	if diff := cmp.Diff([]bool{true, false, true, false}, failed); diff != "" {
		t.Errorf("failures for rolls %v (-want +got):\n%s", rolls, diff)
	}
}

func TestAdminHandlerReplacesRulesOrKeepsThemOnBadInput(t *testing.T) {
	in := New([]Rule{{Target: "GET /v1/products", HTTPStatus: 500, ErrorRate: 1}})
	h := in.AdminHandler()
	do := func(method, body string) *httptest.ResponseRecorder {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest(method, "/admin/faults", strings.NewReader(body)))
		return rec
	}

	rec := do(http.MethodPut, `[{"target":"Charge","errorRate":1,"bogus":true}]`)
	if rec.Code != http.StatusBadRequest || !strings.Contains(rec.Body.String(), "bogus") {
		t.Errorf("bad PUT: got %d %s, want 400 naming the field", rec.Code, rec.Body)
	}
	if got := in.Rules(); len(got) != 1 || got[0].Target != "GET /v1/products" {
		t.Errorf("rules after a bad PUT: got %+v, want the old ones kept", got)
	}
	if rec := do(http.MethodPut, `[{"target":"Charge","errorRate":1}]`); rec.Code != http.StatusOK {
		t.Errorf("PUT: got %d %s", rec.Code, rec.Body)
	}
	if diff := cmp.Diff([]Rule{{Target: "Charge", ErrorRate: 1}}, in.Rules()); diff != "" {
		t.Errorf("rules after PUT (-want +got):\n%s", diff)
	}
	if rec := do(http.MethodDelete, ""); rec.Code != http.StatusOK || len(in.Rules()) != 0 {
		t.Errorf("DELETE: got %d, rules %v; want none", rec.Code, in.Rules())
	}
}

func TestHTTPFaultAnswersConfiguredStatus(t *testing.T) {
	in := New([]Rule{{Target: "POST /v1/orders", ErrorRate: 1, HTTPStatus: 502}})
	ok := http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusCreated) })
	rec := httptest.NewRecorder()
	in.HTTP("POST /v1/orders", ok).ServeHTTP(rec, httptest.NewRequest("POST", "/v1/orders", nil))
	if rec.Code != 502 {
		t.Errorf("POST /v1/orders: got %d want 502", rec.Code)
	}
	rec = httptest.NewRecorder()
	in.HTTP("GET /v1/products", ok).ServeHTTP(rec, httptest.NewRequest("GET", "/v1/products", nil))
	if rec.Code != http.StatusCreated {
		t.Errorf("GET /v1/products: got %d, want untouched", rec.Code)
	}
}

// Apply injects faults into work that is not a request, such as processing an event of a subject.
func TestApplyInjectsIntoOtherWork(t *testing.T) {
	in := New([]Rule{{Target: "orders.placed", ErrorRate: 1, Delay: Duration(20 * time.Millisecond)}})
	began := time.Now()
	if err := in.Apply(context.Background(), "orders.placed"); err == nil || !strings.Contains(err.Error(), "orders.placed") {
		t.Errorf("Apply(orders.placed): got %v, want the injected fault naming it", err)
	}
	if took := time.Since(began); took < 20*time.Millisecond {
		t.Errorf("Apply took %s, want the rule's 20ms delay first", took)
	}
	if err := in.Apply(context.Background(), "orders.cancelled"); err != nil {
		t.Errorf("Apply(another subject): got %v, want nil", err)
	}
}

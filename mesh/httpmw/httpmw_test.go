package httpmw_test

import (
	"bytes"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"meshplane.dev/mesh/httpmw"
)

type item struct {
	ProductID string `json:"productId"`
	Quantity  int    `json:"quantity"`
}

type order struct {
	Items []item `json:"items"`
}

func decodeHandler(w http.ResponseWriter, r *http.Request) {
	var o order
	if err := httpmw.DecodeJSON(r, &o); err != nil {
		httpmw.WriteError(w, err.Status, *err)
		return
	}
	httpmw.WriteJSON(w, http.StatusOK, o)
}

func TestDecodeJSONAnswers400NamingTheField(t *testing.T) {
	tests := []struct {
		name   string
		body   string
		status int
		want   httpmw.Error
	}{
		{"unknown field", `{"items":[],"coupon":"x"}`, 400, httpmw.Error{Message: `unknown field "coupon"`, Field: "coupon"}},
		{"wrong type", `{"items":[{"productId":"p1","quantity":"two"}]}`, 400, httpmw.Error{Field: "items.quantity"}},
		{"malformed", `{"items":`, 400, httpmw.Error{Message: "malformed JSON: unexpected end of body"}},
		{"empty", ``, 400, httpmw.Error{Message: "body is empty: want a JSON object"}},
		{"two objects", `{"items":[]}{"items":[]}`, 400, httpmw.Error{Message: "body must contain a single JSON object"}},
		{"too large", `{"items":[` + strings.Repeat(`{"productId":"p","quantity":1},`, 40000) + `{}]}`, 413, httpmw.Error{Message: "body larger than 1048576 bytes"}},
	}
	h := httpmw.LimitBody(httpmw.MaxBodyBytes)(http.HandlerFunc(decodeHandler))
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, httptest.NewRequest("POST", "/v1/orders", strings.NewReader(tt.body)))
			if rec.Code != tt.status {
				t.Fatalf("status: got %d want %d (%s)", rec.Code, tt.status, rec.Body)
			}
			var got httpmw.Error
			if err := json.NewDecoder(rec.Body).Decode(&got); err != nil {
				t.Fatal(err)
			}
			if tt.want.Message == "" { // type errors: only the field is stable across Go versions
				got.Message = ""
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("error body (-want +got):\n%s", diff)
			}
		})
	}
}

func TestRecoverAnswers500AndLogs(t *testing.T) {
	var logs bytes.Buffer
	logger := slog.New(slog.NewJSONHandler(&logs, nil))
	h := httpmw.Chain(http.HandlerFunc(func(http.ResponseWriter, *http.Request) { panic("nil map") }),
		httpmw.Trace, httpmw.AccessLog(logger), httpmw.Recover(logger))
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest("GET", "/x", nil))
	if rec.Code != 500 {
		t.Errorf("status: got %d want 500", rec.Code)
	}
	traceID := rec.Header().Get(httpmw.TraceIDHeader)
	if len(traceID) != 32 {
		t.Errorf("X-Trace-Id: got %q, want 32 hex digits", traceID)
	}
	lines := strings.Split(strings.TrimSpace(logs.String()), "\n")
	if len(lines) != 2 || !strings.Contains(lines[0], "nil map") || !strings.Contains(lines[1], `"status":500`) {
		t.Errorf("logs: got %q, want the panic then an access line with status 500", lines)
	}
}

func TestAccessLogRecordsRoute(t *testing.T) {
	var logs bytes.Buffer
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/products/{id}", func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, "{}") })
	h := httpmw.Chain(mux, httpmw.Trace, httpmw.AccessLog(slog.New(slog.NewJSONHandler(&logs, nil))))
	h.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest("GET", "/v1/products/p1", nil))
	var line map[string]any
	if err := json.Unmarshal(logs.Bytes(), &line); err != nil {
		t.Fatal(err)
	}
	if line["route"] != "/v1/products/{id}" || line["path"] != "/v1/products/p1" || line["status"] != float64(200) {
		t.Errorf("access log: got %v", line)
	}
}

package main

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"

	"meshplane.dev/mesh/devkit/runtest"
)

// A bounded run against a gateway stand-in makes exactly REQUESTS requests, returns by itself and prints
// its summary on stdout (logs go to stderr).
func TestRunBoundedPrintsSummary(t *testing.T) {
	var served atomic.Int64
	gateway := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		served.Add(1)
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(`{"products":[{"id":"moka-pot"}]}`))
	}))
	defer gateway.Close()
	var stdout, stderr strings.Builder
	env := runtest.Env{"TARGET_URL": gateway.URL, "REQUESTS": "6", "RATE": "100", "SCENARIOS": "browse=1",
		"ADMIN_ADDR": runtest.Addrs(t, 1)[0], "LOG_LEVEL": "warn"}
	if err := run(context.Background(), nil, env.Getenv, &stdout, &stderr); err != nil {
		t.Fatalf("run: %v\nstderr:\n%s", err, stderr.String())
	}
	if served.Load() != 6 || !strings.Contains(stdout.String(), "loadgen: 6 runs") || !strings.Contains(stdout.String(), "browse") {
		t.Errorf("gateway served %d requests, stdout:\n%s\nwant 6 requests and a summary of 6 browse runs", served.Load(), stdout.String())
	}
}

func TestRunRejectsBadSettingsNamingThem(t *testing.T) {
	for name, env := range map[string]runtest.Env{
		"RATE":       {"RATE": "0"},
		"SCENARIOS":  {"SCENARIOS": "shop=1"},
		"TARGET_URL": {"TARGET_URL": "gateway"},
	} {
		err := run(context.Background(), nil, env.Getenv, &strings.Builder{}, &strings.Builder{})
		if err == nil || !strings.Contains(err.Error(), name) {
			t.Errorf("%v: run returned %v, want an error naming %s", env, err, name)
		}
	}
}

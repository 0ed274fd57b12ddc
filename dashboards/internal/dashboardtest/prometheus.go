package dashboardtest

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"meshplane.dev/mesh/devkit/devserver"
)

// BackfilledPrometheus turns openMetrics into TSDB blocks with `promtool tsdb create-blocks-from
// openmetrics`, puts them in a new Prometheus's data directory, and starts that Prometheus on loopback
// with config and files (e.g. rule files), stopped when the test ends.
func BackfilledPrometheus(t testing.TB, openMetrics []byte, config []byte, files map[string][]byte) *devserver.Server {
	t.Helper()
	promtool, err := devserver.Binary("promtool", "prometheus")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	input := filepath.Join(dir, "series.om")
	if err := os.WriteFile(input, openMetrics, 0o644); err != nil {
		t.Fatal(err)
	}
	data := filepath.Join(dir, "prometheus", "data")
	if err := os.MkdirAll(data, 0o755); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(promtool, "tsdb", "create-blocks-from", "openmetrics", "--quiet", input, data).CombinedOutput()
	if err != nil {
		t.Fatalf("promtool tsdb create-blocks-from openmetrics: %v\n%s", err, out)
	}
	s, err := devserver.StartPrometheus(context.Background(), devserver.Options{Dir: filepath.Join(dir, "prometheus"), ReadyTimeout: 90 * time.Second}, config, files)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = s.Stop()
		if t.Failed() {
			t.Logf("--- prometheus log tail ---\n%s", s.LogTail(4000))
		}
	})
	return s
}

// Prom asks a Prometheus's HTTP API.
type Prom struct {
	URL string
}

var httpClient = &http.Client{Timeout: 30 * time.Second}

// QueryRange runs expr over [start, end] and returns how many series have at least one finite value:
// NaN (0/0) is what Grafana shows as no value too.
func (p Prom) QueryRange(ctx context.Context, expr string, start, end time.Time, step time.Duration) (int, error) {
	v := url.Values{
		"query": {expr},
		"start": {strconv.FormatInt(start.Unix(), 10)},
		"end":   {strconv.FormatInt(end.Unix(), 10)},
		"step":  {strconv.FormatFloat(step.Seconds(), 'f', -1, 64)},
	}
	var data struct {
		Result []struct {
			Values [][2]any `json:"values"`
		} `json:"result"`
	}
	if err := p.get(ctx, "/api/v1/query_range", v, &data); err != nil {
		return 0, err
	}
	n := 0
	for _, r := range data.Result {
		for _, pair := range r.Values {
			s, _ := pair[1].(string)
			if f, err := strconv.ParseFloat(s, 64); err == nil && !math.IsNaN(f) && !math.IsInf(f, 0) {
				n++
				break
			}
		}
	}
	return n, nil
}

// Series returns how many series match the selector between start and end (what label_values lists).
func (p Prom) Series(ctx context.Context, match string, start, end time.Time) (int, error) {
	v := url.Values{
		"match[]": {match},
		"start":   {strconv.FormatInt(start.Unix(), 10)},
		"end":     {strconv.FormatInt(end.Unix(), 10)},
	}
	var data []map[string]string
	if err := p.get(ctx, "/api/v1/series", v, &data); err != nil {
		return 0, err
	}
	return len(data), nil
}

func (p Prom) get(ctx context.Context, path string, v url.Values, data any) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, p.URL+path+"?"+v.Encode(), nil)
	if err != nil {
		return err
	}
	resp, err := httpClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return err
	}
	var r struct {
		Status string          `json:"status"`
		Error  string          `json:"error"`
		Data   json.RawMessage `json:"data"`
	}
	if err := json.Unmarshal(body, &r); err != nil {
		return fmt.Errorf("GET %s: %s: %s", path, resp.Status, body)
	}
	if r.Status != "success" {
		return fmt.Errorf("GET %s: %s", path, r.Error)
	}
	return json.Unmarshal(r.Data, data)
}

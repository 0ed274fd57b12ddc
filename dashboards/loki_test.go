package dashboards_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"testing"
	"time"

	"meshplane.dev/dashboards/internal/dashboardtest"
	"meshplane.dev/mesh/devkit/devservertest"
	"meshplane.dev/mesh/devkit/wait"
)

// TestLogQLOnLoki runs every LogQL query of the dashboards against a real Loki holding log lines shaped
// like the services' (slog JSON, stream labels service, namespace and level): each must parse and
// return data, and each Loki variable must list values.
func TestLogQLOnLoki(t *testing.T) {
	if testing.Short() {
		t.Skip("starts Loki")
	}
	loki := devservertest.Loki(t)
	end := time.Now()
	if err := pushLines(loki.URL(), end); err != nil {
		t.Fatal(err)
	}
	wait.For(t, 30*time.Second, func() error {
		n, err := lokiQuery(loki.URL(), `count_over_time({service="orders"}[10m])`, end, false)
		if err == nil && n == 0 {
			err = fmt.Errorf("lines not queryable yet")
		}
		return err
	})

	checked := 0
	for _, f := range dashboardtest.Load(t) {
		values, err := dashboardtest.Values(f.Dashboard, singles)
		if err != nil {
			t.Fatal(err)
		}
		targets, err := dashboardtest.Targets(f.Dashboard)
		if err != nil {
			t.Fatal(err)
		}
		for _, tg := range targets {
			if tg.Datasource != "loki" {
				continue
			}
			expr, err := dashboardtest.Substitute(tg.Expr, values)
			if err != nil {
				t.Errorf("%s: %v", tg, err)
				continue
			}
			checked++
			n, err := lokiQuery(loki.URL(), expr, end, tg.Instant)
			if err != nil {
				t.Errorf("%s: %v\n%s", tg, err, expr)
			} else if n == 0 {
				t.Errorf("%s returns no data\n%s", tg, expr)
			}
		}
		for _, v := range f.Dashboard.Templating.List {
			if v.Datasource == nil || deref(v.Datasource.Type) != "loki" || v.Query == nil {
				continue
			}
			m := labelValues.FindStringSubmatch("label_values(x, " + deref(v.Query.String)[len("label_values("):])
			if m == nil {
				t.Errorf("%s variable %s: query %q is not label_values(label)", *f.Dashboard.Uid, v.Name, deref(v.Query.String))
				continue
			}
			var labels []string
			if err := lokiGet(loki.URL()+"/loki/api/v1/label/"+m[2]+"/values?"+url.Values{
				"start": {strconv.FormatInt(end.Add(-10*time.Minute).UnixNano(), 10)},
			}.Encode(), &labels); err != nil || len(labels) == 0 {
				t.Errorf("%s variable %s lists no values (%v, %v)", *f.Dashboard.Uid, v.Name, labels, err)
			}
		}
	}
	if checked == 0 {
		t.Fatal("no LogQL queries found")
	}
	t.Logf("%d LogQL queries returned data from Loki", checked)
}

// pushLines writes five minutes of log lines for two services at every level, up to end.
func pushLines(base string, end time.Time) error {
	type stream struct {
		Stream map[string]string `json:"stream"`
		Values [][2]string       `json:"values"`
	}
	var streams []stream
	for _, svc := range []string{"gateway", "orders"} {
		for _, level := range []string{"debug", "info", "warn", "error"} {
			s := stream{Stream: map[string]string{"service": svc, "namespace": "shop", "level": level}}
			for i := 300; i >= 0; i -= 5 {
				ts := end.Add(-time.Duration(i) * time.Second)
				line, _ := json.Marshal(map[string]string{
					"time": ts.Format(time.RFC3339Nano), "level": level, "msg": "charge failed",
					"trace_id": fmt.Sprintf("%032x", i), "request_id": fmt.Sprintf("r-%d", i),
				})
				s.Values = append(s.Values, [2]string{strconv.FormatInt(ts.UnixNano(), 10), string(line)})
			}
			streams = append(streams, s)
		}
	}
	body, err := json.Marshal(map[string]any{"streams": streams})
	if err != nil {
		return err
	}
	resp, err := http.Post(base+"/loki/api/v1/push", "application/json", bytes.NewReader(body))
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		b, _ := io.ReadAll(resp.Body)
		return fmt.Errorf("push: %s: %s", resp.Status, b)
	}
	return nil
}

// lokiQuery runs a LogQL query — instant at end, or over the ten minutes before end — and returns the
// number of series or streams in the result; Loki's error (a parse error included) is returned as is.
func lokiQuery(base, expr string, end time.Time, instant bool) (int, error) {
	v := url.Values{"query": {expr}}
	path := "/loki/api/v1/query_range"
	if instant {
		path = "/loki/api/v1/query"
		v.Set("time", strconv.FormatInt(end.UnixNano(), 10))
	} else {
		v.Set("start", strconv.FormatInt(end.Add(-10*time.Minute).UnixNano(), 10))
		v.Set("end", strconv.FormatInt(end.Add(time.Second).UnixNano(), 10))
		v.Set("step", "15s")
	}
	var data struct {
		Result []json.RawMessage `json:"result"`
	}
	if err := lokiGet(base+path+"?"+v.Encode(), &data); err != nil {
		return 0, err
	}
	return len(data.Result), nil
}

func lokiGet(u string, data any) error {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s: %s", resp.Status, bytes.TrimSpace(b))
	}
	var r struct {
		Status string          `json:"status"`
		Data   json.RawMessage `json:"data"`
	}
	if err := json.Unmarshal(b, &r); err != nil {
		return err
	}
	if r.Status != "success" {
		return fmt.Errorf("status %s: %s", r.Status, b)
	}
	return json.Unmarshal(r.Data, data)
}

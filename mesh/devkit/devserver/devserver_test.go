package devserver_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/grafana/loki-client-go/loki"
	consul "github.com/hashicorp/consul/api"
	"github.com/prometheus/client_golang/api"
	promv1 "github.com/prometheus/client_golang/api/prometheus/v1"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/prometheus/common/model"

	"meshplane.dev/mesh/devkit/devservertest"
	"meshplane.dev/mesh/devkit/wait"
)

func TestConsulCatalogAndHealth(t *testing.T) {
	srv := devservertest.Consul(t)
	client, err := consul.NewClient(&consul.Config{Address: srv.Addr})
	if err != nil {
		t.Fatal(err)
	}
	reg := &consul.AgentServiceRegistration{
		ID: "orders-1", Name: "orders", Port: 8080, Address: "127.0.0.1",
		Tags: []string{"smoke"},
		Meta: map[string]string{"version": "v1"},
		Check: &consul.AgentServiceCheck{
			CheckID: "orders-1-ttl", TTL: "1m", Status: consul.HealthPassing,
		},
	}
	if err := client.Agent().ServiceRegister(reg); err != nil {
		t.Fatalf("register: %v", err)
	}

	wait.For(t, 10*time.Second, func() error {
		svcs, _, err := client.Catalog().Service("orders", "", nil)
		if err != nil {
			return err
		}
		if len(svcs) != 1 {
			return fmt.Errorf("catalog has %d orders instances, want 1", len(svcs))
		}
		got := svcs[0]
		if got.ServiceID != "orders-1" || got.ServicePort != 8080 || got.ServiceMeta["version"] != "v1" || !slices.Contains(got.ServiceTags, "smoke") {
			return fmt.Errorf("catalog entry = %+v, want id orders-1 port 8080 meta version=v1 tag smoke", got)
		}
		return nil
	})

	entries, _, err := client.Health().Service("orders", "", true, nil)
	if err != nil {
		t.Fatalf("health: %v", err)
	}
	if len(entries) != 1 || entries[0].Service.ID != "orders-1" {
		t.Fatalf("passing instances = %d, want orders-1 only", len(entries))
	}

	// A failing check must take the instance out of the passing set: proves health is really evaluated.
	if err := client.Agent().UpdateTTL("orders-1-ttl", "down", consul.HealthCritical); err != nil {
		t.Fatalf("update ttl: %v", err)
	}
	wait.For(t, 10*time.Second, func() error {
		entries, _, err := client.Health().Service("orders", "", true, nil)
		if err != nil {
			return err
		}
		if len(entries) != 0 {
			return fmt.Errorf("passing instances = %d after check went critical, want 0", len(entries))
		}
		return nil
	})
}

func TestPrometheusScrapesCounter(t *testing.T) {
	reg := prometheus.NewRegistry()
	orders := prometheus.NewCounter(prometheus.CounterOpts{Name: "meshplane_smoke_orders_total", Help: "Orders placed in the smoke test."})
	reg.MustRegister(orders)
	orders.Add(42)
	target := httptest.NewServer(promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	t.Cleanup(target.Close)

	cfg := fmt.Sprintf(`global:
  scrape_interval: 1s
scrape_configs:
  - job_name: smoke
    static_configs:
      - targets: [%q]
`, strings.TrimPrefix(target.URL, "http://"))
	srv := devservertest.Prometheus(t, 0, []byte(cfg), nil)

	client, err := api.NewClient(api.Config{Address: srv.URL()})
	if err != nil {
		t.Fatal(err)
	}
	prom := promv1.NewAPI(client)
	wait.For(t, 30*time.Second, func() error {
		v, _, _, err := prom.Query(context.Background(), `meshplane_smoke_orders_total{job="smoke"}`, time.Now())
		if err != nil {
			return err
		}
		vec, ok := v.(model.Vector)
		if !ok || len(vec) != 1 {
			return fmt.Errorf("query result %v, want one sample", v)
		}
		if vec[0].Value != 42 {
			return fmt.Errorf("scraped value %v, want 42", vec[0].Value)
		}
		return nil
	})
}

func TestLokiPushAndQueryRange(t *testing.T) {
	srv := devservertest.Loki(t)
	cfg, err := loki.NewDefaultConfig(srv.URL() + "/loki/api/v1/push")
	if err != nil {
		t.Fatal(err)
	}
	cfg.BatchWait = 100 * time.Millisecond
	client, err := loki.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(client.Stop)

	line := fmt.Sprintf(`{"msg":"smoke","request_id":"%d"}`, time.Now().UnixNano())
	start := time.Now().Add(-time.Minute)
	if err := client.Handle(model.LabelSet{"service": "smoke", "level": "info"}, time.Now(), line); err != nil {
		t.Fatal(err)
	}

	wait.For(t, 30*time.Second, func() error {
		q := url.Values{
			"query": {`{service="smoke"}`},
			"start": {strconv.FormatInt(start.UnixNano(), 10)},
			"end":   {strconv.FormatInt(time.Now().Add(time.Minute).UnixNano(), 10)},
			"limit": {"10"},
		}
		resp, err := http.Get(srv.URL() + "/loki/api/v1/query_range?" + q.Encode())
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		var body struct {
			Data struct {
				Result []struct {
					Stream map[string]string `json:"stream"`
					Values [][2]string       `json:"values"`
				} `json:"result"`
			} `json:"data"`
		}
		if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
			return fmt.Errorf("decode query_range (%s): %w", resp.Status, err)
		}
		for _, r := range body.Data.Result {
			for _, v := range r.Values {
				if v[1] == line {
					if r.Stream["level"] != "info" {
						return fmt.Errorf("stream labels %v, want level=info", r.Stream)
					}
					return nil
				}
			}
		}
		return fmt.Errorf("line not returned yet (%d streams)", len(body.Data.Result))
	})
}

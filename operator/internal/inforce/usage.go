package inforce

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"meshplane.dev/operator/api/v1alpha1"
	"meshplane.dev/operator/internal/desiredstate"
)

// A route whose match no call ever takes (a misspelt method, a method the service does not have) is a
// mistake neither the API server nor the operator can see: they do not know the Service's methods.
// Nor does istiod, which hands routes out without counting what they match. The servers do: every gRPC
// server built on mesh/ counts the calls it handled per method (grpc_server_handled_total), so the
// calls a route takes can be counted from them, for gRPC routes. HTTP servers count by their own route
// patterns ("GET /v1/products/{id}"), which a path match cannot be set against exactly, so HTTP routes
// are not counted.

// Calls holds how many calls the Service's servers handled, by path (/package.Service/Method).
type Calls map[string]float64

// CallSource reads a Service's Calls.
type CallSource interface {
	// Calls returns the calls the servers of namespace/service handled since they started.
	Calls(ctx context.Context, namespace, service string) (Calls, error)
	// String names the source in the report, e.g. "Prometheus at http://127.0.0.1:9090".
	String() string
}

// Prometheus reads Calls from a Prometheus that scrapes the servers with the labels service and
// namespace, as the platform's does (the local platform's and the cluster manifests').
type Prometheus struct {
	URL    string
	Client *http.Client
}

func (p Prometheus) String() string { return "Prometheus at " + p.URL }

// Calls sums grpc_server_handled_total by service and method over the Service's servers.
func (p Prometheus) Calls(ctx context.Context, namespace, service string) (Calls, error) {
	q := fmt.Sprintf(`sum by (grpc_service, grpc_method) (grpc_server_handled_total{namespace=%q, service=%q})`, namespace, service)
	u := strings.TrimSuffix(p.URL, "/") + "/api/v1/query?" + url.Values{"query": {q}}.Encode()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, err
	}
	c := p.Client
	if c == nil {
		c = &http.Client{Timeout: 10 * time.Second}
	}
	resp, err := c.Do(req)
	if err != nil {
		return nil, fmt.Errorf("prometheus query: %w", err)
	}
	defer resp.Body.Close()
	var body struct {
		Status string `json:"status"`
		Error  string `json:"error"`
		Data   struct {
			Result []struct {
				Metric map[string]string `json:"metric"`
				Value  [2]any            `json:"value"`
			} `json:"result"`
		} `json:"data"`
	}
	if err := json.NewDecoder(io.LimitReader(resp.Body, 8<<20)).Decode(&body); err != nil {
		return nil, fmt.Errorf("prometheus query: %s: %w", resp.Status, err)
	}
	if body.Status != "success" {
		return nil, fmt.Errorf("prometheus query %s: %s", q, body.Error)
	}
	out := Calls{}
	for _, r := range body.Data.Result {
		s, _ := r.Value[1].(string)
		var v float64
		if _, err := fmt.Sscan(s, &v); err != nil {
			return nil, fmt.Errorf("prometheus query: value %q: %w", s, err)
		}
		out["/"+r.Metric["grpc_service"]+"/"+r.Metric["grpc_method"]] += v
	}
	return out, nil
}

// Scrape reads Calls from the servers' own /metrics endpoints, e.g. their admin ports.
type Scrape struct {
	URLs   []string
	Client *http.Client
}

func (s Scrape) String() string { return "the servers' /metrics" }

// Calls sums grpc_server_handled_total by service and method over the URLs.
func (s Scrape) Calls(ctx context.Context, _, _ string) (Calls, error) {
	c := s.Client
	if c == nil {
		c = &http.Client{Timeout: 10 * time.Second}
	}
	out := Calls{}
	for _, u := range s.URLs {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
		if err != nil {
			return nil, err
		}
		req.Header.Set("Accept", "text/plain")
		resp, err := c.Do(req)
		if err != nil {
			return nil, fmt.Errorf("metrics %s: %w", u, err)
		}
		parser := expfmt.NewTextParser(model.UTF8Validation)
		mfs, err := parser.TextToMetricFamilies(resp.Body)
		resp.Body.Close()
		if err != nil {
			return nil, fmt.Errorf("metrics %s: %w", u, err)
		}
		for _, m := range mfs["grpc_server_handled_total"].GetMetric() {
			labels := map[string]string{}
			for _, l := range m.GetLabel() {
				labels[l.GetName()] = l.GetValue()
			}
			out["/"+labels["grpc_service"]+"/"+labels["grpc_method"]] += m.GetCounter().GetValue()
		}
	}
	return out, nil
}

// RouteUse is how many calls the servers handled that one route takes.
type RouteUse struct {
	// Name and Match are the route's, as in status.
	Name, Match string
	// Counted is false for routes whose calls cannot be counted (HTTP routes).
	Counted bool
	// Calls the route took: calls its match selects and no route before it does.
	Calls float64
	// Paths are the methods the route took calls of, sorted.
	Paths []string
}

// Use sets each of p's routes against calls: a gRPC route takes the calls whose path it matches and
// no route tried before it matches.
func Use(p *v1alpha1.TrafficPolicy, calls Calls) []RouteUse {
	var out []RouteUse
	taken := map[string]bool{}
	for _, r := range desiredstate.Ordered(p.Spec.Routes) {
		u := RouteUse{Name: r.Name, Match: desiredstate.MatchText(r.Match)}
		if r.Match.GRPC != nil {
			u.Counted = true
			for _, path := range slices.Sorted(maps.Keys(calls)) {
				if taken[path] || !grpcMatches(r.Match.GRPC, path) {
					continue
				}
				taken[path] = true
				u.Calls += calls[path]
				u.Paths = append(u.Paths, path)
			}
		}
		out = append(out, u)
	}
	return out
}

// grpcMatches reports whether m selects calls to path (/package.Service/Method) as the generated
// match does: exact service/method, the method of any service, or every method of a service.
func grpcMatches(m *v1alpha1.GRPCMatch, path string) bool {
	service, method, ok := strings.Cut(strings.TrimPrefix(path, "/"), "/")
	if !ok || strings.Contains(method, "/") {
		return false
	}
	switch {
	case m.Service != "":
		return service == m.Service
	case strings.Contains(m.Method, "/"):
		return service+"/"+method == m.Method
	default:
		return method == m.Method
	}
}

// WriteUse writes the routes' use as a table; a counted route that took no call is marked UNUSED.
func WriteUse(w io.Writer, source string, uses []RouteUse) error {
	if _, err := fmt.Fprintf(w, "\nroutes by the calls the servers handled since they started (grpc_server_handled_total, from %s):\n", source); err != nil {
		return err
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ROUTE\tMATCH\tCALLS\tMETHODS\tNOTE")
	for _, u := range uses {
		calls, note := fmt.Sprintf("%.0f", u.Calls), ""
		switch {
		case !u.Counted:
			calls, note = "-", "HTTP route: HTTP servers count calls by their own route patterns, not by path"
		case u.Calls == 0:
			note = "UNUSED: no server handled a call this route takes; check the method or service name against the Service's proto"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", u.Name, u.Match, calls, strings.Join(u.Paths, " "), note)
	}
	return tw.Flush()
}

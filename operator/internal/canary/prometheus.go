package canary

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"
	"text/template"
	"time"

	promapi "github.com/prometheus/client_golang/api"
	promv1 "github.com/prometheus/client_golang/api/prometheus/v1"
	"github.com/prometheus/common/model"
)

// Queries are the PromQL templates a check runs for each subset, each returning one number: the calls
// the subset served over the window, those that failed on the server's side, and a quantile of their
// duration in seconds. A template sees .Namespace and .Service (the policy's target), .Version (the
// subset's version label), .Window (the interval, as PromQL writes durations) and .Quantile.
type Queries struct {
	// Name is how --canary-queries selects the set.
	Name string
	// Doc says where the metrics come from, for --help and the docs.
	Doc                                string
	Requests, Errors, Latency          string
	requestsTpl, errorsTpl, latencyTpl *template.Template
}

// serverErrorCodes are the gRPC codes that mean the server failed, not the caller (the shop's SLOs count
// the same ones); serverErrorStatuses are their numbers, as Istio's grpc_response_status has them.
const (
	serverErrorCodes    = "Unknown|DeadlineExceeded|Unimplemented|Internal|Unavailable|DataLoss"
	serverErrorStatuses = "2|4|12|13|14|15"
)

// istioSelector selects the requests Istio's sidecars report on the Service's side for one version.
const istioSelector = `reporter="destination",destination_service_namespace="{{.Namespace}}",destination_service_name="{{.Service}}",destination_version="{{.Version}}"`

// IstioQueries read Istio's standard metrics, as every sidecar in a cluster reports them: requests by
// destination service and version (the pods' version label); errors are HTTP 5xx, and gRPC server-side
// codes behind any other HTTP status.
var IstioQueries = Queries{
	Name:     "istio",
	Doc:      "Istio's standard metrics (istio_requests_total, istio_request_duration_milliseconds) by destination_service_name and destination_version",
	Requests: `sum(increase(istio_requests_total{` + istioSelector + `}[{{.Window}}]))`,
	Errors: `sum(increase(istio_requests_total{` + istioSelector + `,response_code=~"5.."}[{{.Window}}]) or increase(istio_requests_total{` +
		istioSelector + `,response_code!~"5..",grpc_response_status=~"` + serverErrorStatuses + `"}[{{.Window}}]))`,
	Latency: `histogram_quantile({{.Quantile}}, sum by (le) (rate(istio_request_duration_milliseconds_bucket{` + istioSelector + `}[{{.Window}}]))) / 1000`,
}

// grpcSelector selects a version's gRPC server metrics, the health service aside; namespace, service and
// version are the scrape's target labels.
const grpcSelector = `namespace="{{.Namespace}}",service="{{.Service}}",version="{{.Version}}",grpc_service!="grpc.health.v1.Health"`

// GRPCQueries read the services' own gRPC server metrics (go-grpc-middleware's), which a mesh without
// sidecars — proxyless gRPC, the local platform — has: the scrape configuration must label each target
// with namespace, service and version.
var GRPCQueries = Queries{
	Name:     "grpc",
	Doc:      "the services' own gRPC server metrics (grpc_server_handled_total, grpc_server_handling_seconds) by the targets' namespace, service and version labels",
	Requests: `sum(increase(grpc_server_handled_total{` + grpcSelector + `}[{{.Window}}]))`,
	Errors:   `sum(increase(grpc_server_handled_total{` + grpcSelector + `,grpc_code=~"` + serverErrorCodes + `"}[{{.Window}}]))`,
	Latency:  `histogram_quantile({{.Quantile}}, sum by (le) (rate(grpc_server_handling_seconds_bucket{` + grpcSelector + `}[{{.Window}}])))`,
}

// QuerySets are the query sets --canary-queries chooses from.
var QuerySets = []Queries{IstioQueries, GRPCQueries}

// LookupQueries returns the query set called name.
func LookupQueries(name string) (Queries, error) {
	for _, q := range QuerySets {
		if q.Name == name {
			return q, nil
		}
	}
	names := make([]string, len(QuerySets))
	for i, q := range QuerySets {
		names[i] = q.Name
	}
	return Queries{}, fmt.Errorf("no canary query set %q: want one of %s", name, strings.Join(names, ", "))
}

// parse compiles the templates once.
func (q *Queries) parse() error {
	var errs []error
	for _, t := range []struct {
		name string
		text string
		dst  **template.Template
	}{{"requests", q.Requests, &q.requestsTpl}, {"errors", q.Errors, &q.errorsTpl}, {"latency", q.Latency, &q.latencyTpl}} {
		tpl, err := template.New(t.name).Option("missingkey=error").Parse(t.text)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s query: %w", t.name, err))
		}
		*t.dst = tpl
	}
	return errors.Join(errs...)
}

// QueryInput is what a template sees.
type QueryInput struct {
	Namespace, Service, Version, Window, Quantile string
}

// Render returns the three queries for in, for a check and for the docs.
func (q Queries) Render(in QueryInput) (requests, errs, latency string, err error) {
	if q.requestsTpl == nil {
		if err := q.parse(); err != nil {
			return "", "", "", err
		}
	}
	out := make([]string, 3)
	for i, t := range []*template.Template{q.requestsTpl, q.errorsTpl, q.latencyTpl} {
		var b bytes.Buffer
		if err := t.Execute(&b, in); err != nil {
			return "", "", "", err
		}
		out[i] = b.String()
	}
	return out[0], out[1], out[2], nil
}

// Target is what a check measures: the two subsets of a Service, by their labels.
type Target struct {
	Namespace, Service string
	Stable, Candidate  map[string]string
	// Quantile is the latency quantile to measure; 0 measures no latency.
	Quantile float64
}

// VersionLabels are the pod labels Istio takes destination_version from, in its order of preference; the
// queries tell a canary's subsets apart by the first of them a subset selects.
var VersionLabels = []string{"version", "app.kubernetes.io/version"}

func version(subset string, labels map[string]string) (string, error) {
	for _, k := range VersionLabels {
		if v, ok := labels[k]; ok && v != "" {
			return v, nil
		}
	}
	return "", fmt.Errorf("subset %s selects no %s label: the queries tell the subsets apart by it", subset, strings.Join(VersionLabels, " or "))
}

// Prometheus measures a canary's subsets over Prometheus' HTTP API.
type Prometheus struct {
	api     promv1.API
	queries Queries
	// Timeout bounds the queries of one check together.
	Timeout time.Duration
}

// NewPrometheus returns a source reading the Prometheus at url with queries.
func NewPrometheus(url string, queries Queries) (*Prometheus, error) {
	c, err := promapi.NewClient(promapi.Config{Address: url})
	if err != nil {
		return nil, fmt.Errorf("prometheus client for %s: %w", url, err)
	}
	if err := queries.parse(); err != nil {
		return nil, fmt.Errorf("canary queries %s: %w", queries.Name, err)
	}
	return &Prometheus{api: promv1.NewAPI(c), queries: queries, Timeout: 10 * time.Second}, nil
}

// Measure returns what both subsets of t served over the window ending at at. An answer without a value
// means no calls (a series that does not exist yet has none); an error means no answer at all.
func (p *Prometheus) Measure(ctx context.Context, t Target, window time.Duration, at time.Time) (Measurement, error) {
	ctx, cancel := context.WithTimeout(ctx, p.Timeout)
	defer cancel()
	var m Measurement
	for _, s := range []struct {
		name   string
		labels map[string]string
		dst    *Subset
	}{{"candidate", t.Candidate, &m.Candidate}, {"stable", t.Stable, &m.Stable}} {
		v, err := version(s.name, s.labels)
		if err != nil {
			return Measurement{}, err
		}
		in := QueryInput{Namespace: t.Namespace, Service: t.Service, Version: v, Window: model.Duration(window).String(),
			Quantile: strconv.FormatFloat(t.Quantile, 'f', -1, 64)}
		requests, errs, latency, err := p.queries.Render(in)
		if err != nil {
			return Measurement{}, err
		}
		if s.dst.Requests, _, err = p.scalar(ctx, requests, at); err != nil {
			return Measurement{}, err
		}
		if s.dst.Errors, _, err = p.scalar(ctx, errs, at); err != nil {
			return Measurement{}, err
		}
		if t.Quantile > 0 {
			seconds, ok, err := p.scalar(ctx, latency, at)
			if err != nil {
				return Measurement{}, err
			}
			if ok && !math.IsNaN(seconds) && !math.IsInf(seconds, 0) {
				s.dst.Latency, s.dst.HasLatency = time.Duration(seconds*float64(time.Second)), true
			}
		}
	}
	return m, nil
}

// scalar runs an instant query that returns at most one sample and returns its value; no sample is 0
// (and false).
func (p *Prometheus) scalar(ctx context.Context, query string, at time.Time) (float64, bool, error) {
	v, _, _, err := p.api.Query(ctx, query, at)
	if err != nil {
		return 0, false, fmt.Errorf("prometheus query %s: %w", query, err)
	}
	vec, ok := v.(model.Vector)
	if !ok {
		return 0, false, fmt.Errorf("prometheus query %s: got a %s, want a vector", query, v.Type())
	}
	switch len(vec) {
	case 0:
		return 0, false, nil
	case 1:
		return float64(vec[0].Value), true, nil
	}
	labels := make([]string, len(vec))
	for i, s := range vec {
		labels[i] = s.Metric.String()
	}
	slices.Sort(labels)
	return 0, false, fmt.Errorf("prometheus query %s: %d series (%s), want one", query, len(vec), strings.Join(labels, ", "))
}

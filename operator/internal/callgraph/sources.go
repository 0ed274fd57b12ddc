package callgraph

import (
	"errors"
	"fmt"
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/labels"
	"sigs.k8s.io/yaml"

	"meshplane.dev/operator/api/v1alpha1"
)

// FromAllow returns the calls the policies' allow lists declare: every allowed service account calls
// the policy's Service. Its limits: a service account stands for the Service of the same name in its
// namespace (the shop's convention: each workload runs as its own service account), or for a caller
// without a Service when none has that name; a policy without allow says nothing about its callers; and
// an allowed caller may never call.
func FromAllow(policies []*v1alpha1.TrafficPolicy) Graph {
	var g Graph
	for _, p := range policies {
		to := Service{Namespace: p.Namespace, Name: p.Spec.TargetRef.Name}
		for _, c := range p.Spec.Allow {
			ns := c.Namespace
			if ns == "" {
				ns = p.Namespace
			}
			g.Calls = append(g.Calls, Call{From: Service{Namespace: ns, Name: c.ServiceAccount}, To: to, Sources: []string{SourceAllow}})
		}
	}
	return Merge(g)
}

// file is a graph file as written.
type file struct {
	// Namespace completes names written without one; empty means the namespace given to ParseFile.
	Namespace string        `json:"namespace,omitempty"`
	Services  []fileService `json:"services,omitempty"`
	Calls     []fileCall    `json:"calls,omitempty"`
}

type fileService struct {
	Name string `json:"name"`
	// Idempotent false: no call to the Service may be repeated.
	Idempotent *bool `json:"idempotent,omitempty"`
	// NonIdempotentMethods lists the methods whose calls must not be repeated.
	NonIdempotentMethods []string `json:"nonIdempotentMethods,omitempty"`
}

type fileCall struct {
	From       string `json:"from"`
	To         string `json:"to"`
	Method     string `json:"method,omitempty"`
	Idempotent *bool  `json:"idempotent,omitempty"`
}

// ParseFile reads a graph file (YAML or JSON):
//
//	namespace: shop                # for names without one (default: namespace)
//	services:                      # optional: callers without a Service, and what must not be repeated
//	- {name: payments, idempotent: false}
//	- {name: orders, nonIdempotentMethods: [PlaceOrder]}
//	- {name: loadgen}
//	calls:
//	- {from: gateway, to: orders, method: PlaceOrder}
//	- {from: orders, to: payments, idempotent: false}
//
// Names are "name" or "namespace/name". Every problem is reported at once, each naming the file and
// the entry; unknown fields are problems.
func ParseFile(name string, data []byte, namespace string) (Graph, error) {
	var f file
	if err := yaml.UnmarshalStrict(data, &f); err != nil {
		msg := err.Error()
		for _, prefix := range []string{"error unmarshaling JSON: while decoding JSON: json: ", "error converting YAML to JSON: "} {
			msg = strings.TrimPrefix(msg, prefix)
		}
		return Graph{}, fmt.Errorf("%s: %s", name, msg)
	}
	if f.Namespace != "" {
		namespace = f.Namespace
	}
	var g Graph
	var errs []error
	problem := func(where, format string, args ...any) {
		errs = append(errs, fmt.Errorf("%s: %s: %s", name, where, fmt.Sprintf(format, args...)))
	}
	service := func(where, s string) (Service, bool) {
		if strings.TrimSpace(s) == "" {
			problem(where, "required")
			return Service{}, false
		}
		svc, err := ParseService(s, namespace)
		if err != nil {
			problem(where, "%v", err)
			return Service{}, false
		}
		return svc, true
	}
	for i, s := range f.Services {
		svc, ok := service(fmt.Sprintf("services[%d].name", i), s.Name)
		if !ok {
			continue
		}
		g.Services = append(g.Services, svc)
		if s.Idempotent != nil && !*s.Idempotent {
			g.NonIdempotent = append(g.NonIdempotent, Target{Service: svc})
		}
		for j, m := range s.NonIdempotentMethods {
			if strings.TrimSpace(m) == "" || strings.ContainsAny(m, " \t") {
				problem(fmt.Sprintf("services[%d].nonIdempotentMethods[%d]", i, j), "%q is not a method name", m)
				continue
			}
			g.NonIdempotent = append(g.NonIdempotent, Target{Service: svc, Method: m})
		}
	}
	for i, c := range f.Calls {
		from, okFrom := service(fmt.Sprintf("calls[%d].from", i), c.From)
		to, okTo := service(fmt.Sprintf("calls[%d].to", i), c.To)
		if c.Method != "" && strings.ContainsAny(c.Method, " \t") {
			problem(fmt.Sprintf("calls[%d].method", i), "%q is not a method name", c.Method)
			okTo = false
		}
		if okFrom && okTo {
			g.Calls = append(g.Calls, Call{From: from, To: to, Method: c.Method, Idempotent: c.Idempotent, Sources: []string{SourceFile}})
		}
	}
	if err := errors.Join(errs...); err != nil {
		return Graph{}, err
	}
	return Merge(g), nil
}

// Observed is a client that asked istiod for a Service's routes: a caller of that Service.
type Observed struct {
	// Name and Namespace identify the client (its pod or WorkloadEntry name, istiod's proxy id).
	Name, Namespace string
	// Labels are the client's labels, to find the Service it belongs to.
	Labels map[string]string
	// Host is the callee's host, <service>.<namespace>.svc.<cluster domain>.
	Host string
}

// FromObserved returns the calls istiod knows of. The caller is the Service in the client's namespace
// whose selector matches its labels (the first by name if several do), else its app label, else its
// own name. Hosts that are not Services of the cluster domain are left out. Its limits: only proxyless
// gRPC clients ask istiod for routes per Service (an Envoy sidecar asks per port, for every Service on
// it), a client watches what it dialled whether or not it still calls it, and it says nothing of
// methods.
func FromObserved(observed []Observed, services []*corev1.Service, clusterDomain string) Graph {
	var g Graph
	suffix := ".svc." + clusterDomain
	for _, o := range observed {
		name, ns, ok := strings.Cut(strings.TrimSuffix(o.Host, suffix), ".")
		if !ok || !strings.HasSuffix(o.Host, suffix) || strings.Contains(ns, ".") {
			continue
		}
		g.Calls = append(g.Calls, Call{From: callerService(o, services), To: Service{Namespace: ns, Name: name}, Sources: []string{SourceIstiod}})
	}
	return Merge(g)
}

func callerService(o Observed, services []*corev1.Service) Service {
	var matching []string
	for _, s := range services {
		if s.Namespace == o.Namespace && len(s.Spec.Selector) > 0 &&
			labels.SelectorFromValidatedSet(s.Spec.Selector).Matches(labels.Set(o.Labels)) {
			matching = append(matching, s.Name)
		}
	}
	if len(matching) > 0 {
		slices.Sort(matching)
		return Service{Namespace: o.Namespace, Name: matching[0]}
	}
	if app := o.Labels["app"]; app != "" {
		return Service{Namespace: o.Namespace, Name: app}
	}
	return Service{Namespace: o.Namespace, Name: o.Name}
}

// PlainHTTP says whether every port of svc speaks HTTP/1 (appProtocol http, or no appProtocol and a
// name of http or http-*), so no gRPC status ever comes back and gRPC retry conditions never fire.
// HTTP/2 ports may carry gRPC and do not count.
func PlainHTTP(svc *corev1.Service) bool {
	if len(svc.Spec.Ports) == 0 {
		return false
	}
	for _, p := range svc.Spec.Ports {
		switch {
		case p.AppProtocol != nil:
			if *p.AppProtocol != "http" {
				return false
			}
		case p.Name != "http" && !strings.HasPrefix(p.Name, "http-"):
			return false
		}
	}
	return true
}

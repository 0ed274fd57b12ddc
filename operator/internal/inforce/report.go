package inforce

import (
	"context"
	"fmt"
	"io"
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"meshplane.dev/operator/api/v1alpha1"
	"meshplane.dev/operator/internal/desiredstate"
)

// Client is one mesh client of the service and what it holds.
type Client struct {
	Received *Received
	Rows     []Row
}

// ServerState is one server of the service and how it holds the policy's server side (mtls, allow).
type ServerState struct {
	Server Server
	Rows   []Row
}

// Report is, for one Service port, the governing TrafficPolicy, every connected client that called the
// service, and every connected server of it.
type Report struct {
	// Host is the Service's host, Port the port reported.
	Host string
	Port int
	// Policy is the TrafficPolicy governing the Service; nil when there is none (rows then compare
	// with Istio's behaviour without one: the operator's retry defaults do not apply).
	Policy  *v1alpha1.TrafficPolicy
	Clients []Client
	// Servers are the Service's instances connected to istiod (its selector matches their labels),
	// with what their inbound listeners hold of mtls and allow.
	Servers []ServerState
	// Uses are the policy's routes by the calls the servers handled, when Options.Calls is set.
	Uses []RouteUse
	// UseSource names where the calls were read.
	UseSource string
}

// Differs reports whether any client or server holds a value other than declared, or a server cannot
// hold what is declared at all (Missing).
func (r *Report) Differs() bool {
	var rows [][]Row
	for _, c := range r.Clients {
		rows = append(rows, c.Rows)
	}
	for _, s := range r.Servers {
		rows = append(rows, s.Rows)
	}
	for _, rs := range rows {
		for _, row := range rs {
			if row.Verdict == Differs || row.Verdict == Missing {
				return true
			}
		}
	}
	return false
}

// Options selects what to report.
type Options struct {
	Istiod Istiod
	// Kube reads the Service and its TrafficPolicies.
	Kube client.Reader
	// Namespace and Service name the service; Port its port (0: the first port).
	Namespace, Service string
	Port               int
	// Proxy, if set, reports only that client (name.namespace).
	Proxy string
	// ClusterDomain is the cluster's DNS domain; empty means cluster.local.
	ClusterDomain string
	// Calls, if set, counts the calls the servers handled, to show which routes take any.
	Calls CallSource
}

// Build reads the Service, its TrafficPolicy and, from istiod, every connected client that holds a
// route for the Service, and compares each with the policy.
func Build(ctx context.Context, o Options) (*Report, error) {
	svc := &corev1.Service{}
	if err := o.Kube.Get(ctx, client.ObjectKey{Namespace: o.Namespace, Name: o.Service}, svc); err != nil {
		return nil, fmt.Errorf("get service %s/%s: %w", o.Namespace, o.Service, err)
	}
	port := o.Port
	if port == 0 {
		if len(svc.Spec.Ports) == 0 {
			return nil, fmt.Errorf("service %s/%s has no ports", o.Namespace, o.Service)
		}
		port = int(svc.Spec.Ports[0].Port)
	}
	if !slices.ContainsFunc(svc.Spec.Ports, func(p corev1.ServicePort) bool { return int(p.Port) == port }) {
		return nil, fmt.Errorf("service %s/%s has no port %d", o.Namespace, o.Service, port)
	}
	domain := o.ClusterDomain
	if domain == "" {
		domain = desiredstate.PlatformDefaults().ClusterDomain
	}
	r := &Report{Host: desiredstate.Host(o.Service, o.Namespace, domain), Port: port}
	policy, err := governing(ctx, o.Kube, o.Namespace, o.Service)
	if err != nil {
		return nil, err
	}
	r.Policy = policy
	var def *v1alpha1.EffectivePolicy
	if policy == nil {
		policy = &v1alpha1.TrafficPolicy{ObjectMeta: metav1.ObjectMeta{Namespace: o.Namespace}}
		// Without a policy Istio's own default applies: 2 retries (istio/api HTTPRetry).
		def = &v1alpha1.EffectivePolicy{Attempts: 2, RetryOn: []string{"connect-failure", "refused-stream", "unavailable", "cancelled", "retriable-status-codes", "503"}}
	} else if policy.Status.Effective == nil {
		if state, err := desiredstate.Build(policy, svc, desiredstate.PlatformDefaults()); err == nil {
			def = &state.Effective
		}
	}
	callers := []string{o.Proxy}
	if o.Proxy == "" {
		if callers, err = o.Istiod.Callers(ctx, r.Host, port); err != nil {
			return nil, err
		}
	}
	for _, id := range callers {
		rec, err := o.Istiod.Received(ctx, id, r.Host, port)
		if err != nil {
			return nil, err
		}
		r.Clients = append(r.Clients, Client{Received: rec, Rows: Compare(policy, def, rec)})
	}
	servers, err := o.Istiod.Servers(ctx, o.Namespace, svc.Spec.Selector)
	if err != nil {
		return nil, err
	}
	for _, srv := range servers {
		r.Servers = append(r.Servers, ServerState{Server: srv, Rows: CompareServer(policy, desiredstate.PlatformDefaults().TrustDomain, srv)})
	}
	if o.Calls != nil && r.Policy != nil && len(r.Policy.Spec.Routes) > 0 {
		calls, err := o.Calls.Calls(ctx, o.Namespace, o.Service)
		if err != nil {
			return nil, fmt.Errorf("calls of %s/%s from %s: %w", o.Namespace, o.Service, o.Calls, err)
		}
		r.Uses, r.UseSource = Use(r.Policy, calls), o.Calls.String()
	}
	return r, nil
}

// governing returns the TrafficPolicy the operator accepted for the Service, or nil.
func governing(ctx context.Context, c client.Reader, ns, service string) (*v1alpha1.TrafficPolicy, error) {
	var list v1alpha1.TrafficPolicyList
	if err := c.List(ctx, &list, client.InNamespace(ns)); err != nil {
		return nil, fmt.Errorf("list trafficpolicies in %s: %w", ns, err)
	}
	var candidates []*v1alpha1.TrafficPolicy
	for i := range list.Items {
		p := &list.Items[i]
		if p.Spec.TargetRef.Name != service {
			continue
		}
		if c := meta.FindStatusCondition(p.Status.Conditions, v1alpha1.ConditionAccepted); c != nil && c.Status == metav1.ConditionTrue {
			return p, nil
		}
		candidates = append(candidates, p)
	}
	if len(candidates) == 0 {
		return nil, nil
	}
	// None accepted yet: the one the operator will pick, the oldest.
	slices.SortFunc(candidates, func(a, b *v1alpha1.TrafficPolicy) int {
		if c := a.CreationTimestamp.Compare(b.CreationTimestamp.Time); c != 0 {
			return c
		}
		return strings.Compare(a.Name, b.Name)
	})
	return candidates[0], nil
}

// Write prints the report: the policy and, per client, its push state and the table.
func (r *Report) Write(w io.Writer) error {
	ew := &errWriter{w: w}
	if r.Policy == nil {
		ew.printf("%s:%d — no TrafficPolicy; compared with Istio's defaults\n", r.Host, r.Port)
	} else {
		ready := "not Ready"
		if c := meta.FindStatusCondition(r.Policy.Status.Conditions, v1alpha1.ConditionReady); c != nil && c.Status == metav1.ConditionTrue {
			ready = "Ready"
		}
		ew.printf("%s:%d — TrafficPolicy %s/%s (generation %d, %s)\n", r.Host, r.Port, r.Policy.Namespace, r.Policy.Name,
			r.Policy.Generation, ready)
	}
	if len(r.Clients) == 0 {
		ew.printf("no connected client has called it yet\n")
	}
	for _, c := range r.Clients {
		state := "ACKed its last push"
		if !c.Received.Proxy.Synced() {
			state = fmt.Sprintf("push not ACKed: %v %v", c.Received.Proxy.Unacked, c.Received.Proxy.Errors)
		}
		ew.printf("\nclient %s (%s)\n", c.Received.Proxy.ID, state)
		if ew.err == nil {
			ew.err = WriteTable(w, c.Rows)
		}
	}
	for _, srv := range r.Servers {
		if len(srv.Rows) == 0 {
			continue
		}
		state := "ACKed its last push"
		if !srv.Server.Proxy.Synced() {
			state = fmt.Sprintf("push not ACKed: %v %v", srv.Server.Proxy.Unacked, srv.Server.Proxy.Errors)
		}
		ew.printf("\nserver %s (%s)\n", srv.Server.Proxy.ID, state)
		if ew.err == nil {
			ew.err = WriteTable(w, srv.Rows)
		}
	}
	if r.Uses != nil && ew.err == nil {
		ew.err = WriteUse(w, r.UseSource, r.Uses)
	}
	return ew.err
}

type errWriter struct {
	w   io.Writer
	err error
}

func (e *errWriter) printf(format string, args ...any) {
	if e.err == nil {
		_, e.err = fmt.Fprintf(e.w, format, args...)
	}
}

package inforce

import (
	"cmp"
	"fmt"
	"io"
	"maps"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"meshplane.dev/operator/api/v1alpha1"
)

// Verdict says how a declared field stands in a proxyless gRPC client.
type Verdict string

// Verdicts, from what the client does to what it cannot do.
const (
	// InForce: the client received the declared value and gRPC's xDS client enforces it.
	InForce Verdict = "in force"
	// Partly: received; gRPC enforces part of it (named in Row.Note) and ignores the rest.
	Partly Verdict = "partly"
	// Ignored: received, but gRPC's xDS client does not implement the field.
	Ignored Verdict = "ignored by gRPC"
	// NotSent: istiod sends proxyless gRPC nothing for the field; only Envoy sidecars get it.
	NotSent Verdict = "not sent to gRPC"
	// ServerSide: enforced by the servers (gRPC's xDS server), not by callers.
	ServerSide Verdict = "server side"
	// Differs: the client holds another value than declared: a push not yet ACKed, or something
	// else (another VirtualService or DestinationRule) decides the host.
	Differs Verdict = "DIFFERS"
	// HTTPOnly: received, but the route matches HTTP requests only (by method), so gRPC calls never
	// take it; Envoy sidecars do.
	HTTPOnly Verdict = "HTTP only"
	// Missing: nothing could hold the field: the server does not run gRPC's xDS server, so no inbound
	// policy reaches it.
	Missing Verdict = "MISSING"
)

// Row is one declared field next to what one client received.
type Row struct {
	// Field is the TrafficPolicy field, e.g. retries.attempts.
	Field string
	// Declared is its value in the policy (or the operator's default).
	Declared string
	// Received is the xDS field and value the client got, e.g. "route num_retries=3".
	Received string
	Verdict  Verdict
	// Note explains a verdict other than InForce.
	Note string
}

// gRPCRetryOn are the retry_on conditions gRPC's xDS client honours (gRFC A44); it ignores the rest.
var gRPCRetryOn = []string{"cancelled", "deadline-exceeded", "internal", "resource-exhausted", "unavailable"}

// gRPCMaxRetries is gRPC's cap: at most 5 attempts, whatever num_retries says.
const gRPCMaxRetries = 4

// Compare sets what p declares next to what r holds. p's status.effective supplies the retry policy
// the operator applied (its defaults when the policy sets none); without it, def does.
func Compare(p *v1alpha1.TrafficPolicy, def *v1alpha1.EffectivePolicy, r *Received) []Row {
	eff := def
	if p.Status.Effective != nil {
		eff = p.Status.Effective
	}
	if eff == nil {
		eff = &v1alpha1.EffectivePolicy{}
	}
	route := r.Route
	if route == nil {
		route = &Route{}
	}
	var rows []Row
	add := func(row Row) { rows = append(rows, row) }

	// timeout → route max_stream_duration (Istio sets it for proxyless clients; gRPC ignores timeout).
	declared := "none"
	var want time.Duration
	if p.Spec.Timeout != nil {
		want, _ = p.Spec.Timeout.Parse()
		declared = want.String()
	}
	add(exact("timeout", declared, "route max_stream_duration="+durationOrNone(route.Timeout), want == route.Timeout))

	rows = append(rows, retryRows("", retriesDeclared{attempts: eff.Attempts, retryOn: eff.RetryOn, perTry: eff.PerTryTimeout,
		platformDefault: eff.DefaultRetries}, route)...)
	if eff.Fault != "" || route.Fault != nil {
		add(faultRow("fault", eff.Fault, route, r.FaultFilter))
	}

	// split → weighted clusters over subset clusters.
	wantWeights := map[string]uint32{"": 100}
	if len(p.Spec.Split) > 0 {
		wantWeights = map[string]uint32{}
		for _, s := range p.Spec.Split {
			if s.Weight != nil && *s.Weight > 0 {
				wantWeights[s.Subset] = uint32(*s.Weight)
			}
		}
	}
	add(exact("split", weights(wantWeights), "route weighted_clusters "+weights(route.Weights), maps.Equal(wantWeights, route.Weights)))

	if cb := p.Spec.CircuitBreaker; cb != nil {
		if cb.MaxRequests != nil && *cb.MaxRequests > 0 {
			got := clusterValues(r, func(c *Cluster) string { return strconv.Itoa(int(c.MaxRequests)) })
			same := len(got) > 0 && allEqual(got, strconv.Itoa(int(*cb.MaxRequests)))
			add(exact("circuitBreaker.maxRequests", strconv.Itoa(int(*cb.MaxRequests)),
				"cluster circuit_breakers.max_requests="+strings.Join(got, ","), same))
		}
		for _, f := range []struct {
			name string
			v    *int32
		}{{"maxConnections", cb.MaxConnections}, {"maxPendingRequests", cb.MaxPendingRequests},
			{"maxRequestsPerConnection", cb.MaxRequestsPerConnection}, {"maxRetries", cb.MaxRetries}} {
			if f.v != nil && *f.v > 0 {
				add(Row{Field: "circuitBreaker." + f.name, Declared: strconv.Itoa(int(*f.v)), Received: otherLimits(r),
					Verdict: NotSent, Note: "istiod gives gRPC only max_requests (gRFC A32); Envoy sidecars enforce this"})
			}
		}
		outlier := []string{}
		if cb.ConsecutiveErrors != nil {
			outlier = append(outlier, "consecutiveErrors="+strconv.Itoa(int(*cb.ConsecutiveErrors)))
		}
		for _, d := range []struct {
			name string
			v    *v1alpha1.Duration
		}{{"interval", cb.Interval}, {"baseEjectionTime", cb.BaseEjectionTime}} {
			if d.v != nil {
				outlier = append(outlier, d.name+"="+string(*d.v))
			}
		}
		if cb.MaxEjectionPercent != nil {
			outlier = append(outlier, "maxEjectionPercent="+strconv.Itoa(int(*cb.MaxEjectionPercent)))
		}
		if len(outlier) > 0 {
			row := Row{Field: "circuitBreaker (outlier detection)", Declared: strings.Join(outlier, " "),
				Received: "cluster outlier_detection: none"}
			if got := clusterValues(r, func(c *Cluster) string {
				if c.Outlier == nil {
					return ""
				}
				return "set"
			}); allEqual(got, "set") && len(got) > 0 {
				row.Received = "cluster outlier_detection: set"
				row.Verdict, row.Note = Partly, "gRPC ejects only by success rate or failure percentage (gRFC A50), never on consecutive errors"
			} else {
				row.Verdict, row.Note = NotSent, "istiod's gRPC generator sends no outlier_detection (istio/istio#48022); a failing instance keeps its share"
			}
			add(row)
		}
	}
	if m := p.Spec.MTLS; m != nil {
		// The operator tells callers ISTIO_MUTUAL under STRICT and nothing otherwise (desiredstate's
		// callerTLS); a gRPC client does mTLS only from that explicit setting.
		tls := "plaintext"
		if got := clusterValues(r, func(c *Cluster) string { return strconv.FormatBool(c.MTLS) }); len(got) > 0 && allEqual(got, "true") {
			tls = "ISTIO_MUTUAL"
		}
		want := "plaintext"
		if m.Mode == v1alpha1.MTLSStrict {
			want = "ISTIO_MUTUAL"
		}
		row := exact("mtls.mode", string(m.Mode)+" (callers "+want+")", "cluster transport_socket: "+tls, tls == want)
		if row.Verdict == InForce && m.Mode == v1alpha1.MTLSPermissive {
			row.Note = "gRPC has no auto-mTLS: it calls plaintext, which a PERMISSIVE gRPC server takes; Envoy callers use auto-mTLS"
		}
		if row.Verdict == Differs && want == "ISTIO_MUTUAL" {
			row.Note = "the client would call in plaintext, which the STRICT servers refuse: its push is not ACKed, or another DestinationRule decides the host"
		}
		add(row)
	}
	if len(p.Spec.Allow) > 0 {
		add(Row{Field: "allow", Declared: strings.Join(allowed(p, ""), ","), Received: "(inbound: the servers' RBAC)", Verdict: ServerSide,
			Note: "enforced by the servers' gRPC xDS server as RBAC on the caller's mTLS identity: see the servers below"})
	}
	declaredRoutes := map[string]bool{}
	for _, rt := range eff.Routes {
		declaredRoutes[rt.Name] = true
		if rt.Name != v1alpha1.DefaultRouteName {
			rows = append(rows, routeRows(rt, r)...)
		}
	}
	// A route the client holds that the policy does not declare is a previous policy's: the push that
	// removes it has not arrived (or another VirtualService adds it).
	for i, got := range r.Routes {
		if got != r.Route && !declaredRoutes[got.Name] {
			add(Row{Field: "routes[" + got.Name + "]", Declared: "none", Received: fmt.Sprintf("route #%d %s", i+1, cmp.Or(got.Match, "(any call)")),
				Verdict: Differs, Note: "the client holds a route the policy does not declare"})
		}
	}
	return rows
}

// retriesDeclared is a route's declared retry policy.
type retriesDeclared struct {
	attempts        int32
	retryOn         []string
	perTry          string
	platformDefault bool
}

// retryRows compares a declared retry policy with a received route's; field names start with prefix
// (e.g. "routes[charge]." or "" for the default route).
func retryRows(prefix string, d retriesDeclared, route *Route) []Row {
	var rows []Row
	// retries.attempts → route retry_policy.num_retries.
	gotRetries := uint32(0)
	if route.Retry != nil {
		gotRetries = route.Retry.NumRetries
	}
	attempts := Row{Field: prefix + "retries.attempts", Declared: strconv.Itoa(int(d.attempts)), Received: "route retry_policy: none"}
	if d.platformDefault {
		attempts.Declared += " (operator default)"
	}
	if route.Retry != nil {
		attempts.Received = fmt.Sprintf("route num_retries=%d", gotRetries)
	}
	honoured := intersect(retryOnOf(route), gRPCRetryOn)
	switch {
	case uint32(d.attempts) != gotRetries:
		attempts.Verdict, attempts.Note = Differs, "the client's retry policy is not the declared one"
	case gotRetries > 0 && len(honoured) == 0:
		attempts.Verdict, attempts.Note = Ignored, "no retryOn condition gRPC understands, so gRPC drops the retry policy"
	case gotRetries > gRPCMaxRetries:
		attempts.Verdict, attempts.Note = Partly, fmt.Sprintf("gRPC caps a call at 5 attempts (%d retries)", gRPCMaxRetries)
	default:
		attempts.Verdict = InForce
	}
	rows = append(rows, attempts)

	if d.attempts > 0 {
		declaredOn := strings.Join(d.retryOn, ",")
		got := strings.Join(retryOnOf(route), ",")
		row := Row{Field: prefix + "retries.retryOn", Declared: declaredOn, Received: "route retry_on=" + got}
		if route.Retry != nil && len(route.Retry.StatusCodes) > 0 {
			row.Received += fmt.Sprintf(" retriable_status_codes=%v", route.Retry.StatusCodes)
		}
		ignored := difference(d.retryOn, gRPCRetryOn)
		switch {
		case !sameConditions(d.retryOn, retryOnOf(route), route):
			row.Verdict, row.Note = Differs, "the client's retry conditions are not the declared ones"
		case len(ignored) == 0:
			row.Verdict = InForce
		case len(intersect(d.retryOn, gRPCRetryOn)) == 0:
			row.Verdict, row.Note = Ignored, "gRPC retries only on status codes cancelled, deadline-exceeded, internal, resource-exhausted, unavailable"
		default:
			row.Verdict, row.Note = Partly, "gRPC honours "+strings.Join(intersect(d.retryOn, gRPCRetryOn), ",")+
				"; ignores "+strings.Join(ignored, ",")+" (HTTP/TCP conditions)"
		}
		rows = append(rows, row)
	}
	if d.perTry != "" {
		got := time.Duration(0)
		if route.Retry != nil {
			got = route.Retry.PerTryTimeout
		}
		want, _ := time.ParseDuration(d.perTry)
		row := Row{Field: prefix + "retries.perTryTimeout", Declared: d.perTry, Received: "route per_try_timeout=" + durationOrNone(got)}
		if got != want {
			row.Verdict, row.Note = Differs, "the client's per-try timeout is not the declared one"
		} else {
			row.Verdict, row.Note = Ignored, "gRPC's xDS retry support has no per-try timeout: every attempt may use what is left of timeout"
		}
		rows = append(rows, row)
	}
	return rows
}

// faultRow compares a declared fault (in status's words) with a received route's.
func faultRow(field, declared string, route *Route, filter bool) Row {
	row := Row{Field: field, Declared: cmp.Or(declared, "none"), Received: "route typed_per_filter_config fault: " + cmp.Or(route.Fault.String(), "none")}
	switch {
	case declared != route.Fault.String():
		row.Verdict, row.Note = Differs, "the client's fault is not the declared one"
	case !filter:
		row.Verdict, row.Note = NotSent, "the client's listener has no fault filter, so the route's fault does nothing"
	default:
		row.Verdict, row.Note = InForce, "gRPC's fault filter (gRFC A33) injects it before the call leaves"
	}
	return row
}

// routeRows compares one declared route other than the default with the client's route of that name:
// received at all, with the match, timeout, retries and fault declared. A route that matches on the
// :method pseudo-header (the safe-retry rule's) is for HTTP requests: gRPC's xDS client matches
// headers against the call's metadata, which holds no :method, so it never takes that route.
func routeRows(rt v1alpha1.EffectiveRoute, r *Received) []Row {
	prefix := "routes[" + rt.Name + "]."
	i := slices.IndexFunc(r.Routes, func(got *Route) bool { return got.Name == rt.Name })
	if i < 0 {
		return []Row{{Field: "routes[" + rt.Name + "]", Declared: rt.Match, Received: "no route of that name", Verdict: Differs,
			Note: "the client has not received the route"}}
	}
	got := r.Routes[i]
	match := Row{Field: "routes[" + rt.Name + "]", Declared: rt.Match, Received: fmt.Sprintf("route #%d %s", i+1, cmp.Or(got.Match, "(any call)")),
		Verdict: InForce}
	if slices.Contains(got.HeaderNames, ":method") {
		match.Verdict, match.Note = HTTPOnly, "matches the HTTP :method, which gRPC calls' metadata never holds: Envoy sidecars apply this route, gRPC clients skip it"
		return []Row{match}
	}
	rows := []Row{match}
	want := time.Duration(0)
	if rt.Timeout != "" {
		want, _ = time.ParseDuration(rt.Timeout)
	}
	rows = append(rows, exact(prefix+"timeout", cmp.Or(rt.Timeout, "none"), "route max_stream_duration="+durationOrNone(got.Timeout), want == got.Timeout))
	rows = append(rows, retryRows(prefix, retriesDeclared{attempts: rt.Attempts, retryOn: rt.RetryOn, perTry: rt.PerTryTimeout}, got)...)
	if rt.Fault != "" || got.Fault != nil {
		rows = append(rows, faultRow(prefix+"fault", rt.Fault, got, r.FaultFilter))
	}
	return rows
}

// allowed lists p's allowed callers as <ns>/<sa>, or, with a trust domain, as the SPIFFE ids their
// certificates carry (spiffe://<trust domain>/ns/<ns>/sa/<sa>), sorted and unique.
func allowed(p *v1alpha1.TrafficPolicy, trustDomain string) []string {
	var out []string
	for _, c := range p.Spec.Allow {
		id := cmp.Or(c.Namespace, p.Namespace) + "/" + c.ServiceAccount
		if trustDomain != "" {
			ns, sa, _ := strings.Cut(id, "/")
			id = "spiffe://" + trustDomain + "/ns/" + ns + "/sa/" + sa
		}
		out = append(out, id)
	}
	slices.Sort(out)
	return slices.Compact(out)
}

// CompareServer sets what p declares for the Service's own side — mtls (PeerAuthentication) and allow
// (AuthorizationPolicy) — next to what one of its servers holds in its inbound listener. trustDomain
// completes the allowed callers' identities.
func CompareServer(p *v1alpha1.TrafficPolicy, trustDomain string, srv Server) []Row {
	var rows []Row
	notXDS := "no inbound listener"
	if m := p.Spec.MTLS; m != nil {
		row := Row{Field: "mtls.mode", Declared: string(m.Mode), Received: notXDS}
		switch {
		case srv.Listener == "":
			row.Verdict, row.Note = Missing, "the server does not run gRPC's xDS server (XDS_SERVER=true), so no inbound policy reaches it"
		case !srv.Generated:
			row.Received = "no listener generated"
			row.Verdict, row.Note = Missing, notGenerated
		case srv.MTLS:
			row.Received = "listener DownstreamTlsContext require_client_certificate"
			row.Verdict = InForce
			if m.Mode != v1alpha1.MTLSStrict {
				row.Verdict, row.Note = Differs, "the server still requires mTLS: its push is not ACKed, or another PeerAuthentication decides"
			}
		default:
			row.Received = "listener plaintext filter chain"
			row.Verdict = InForce
			switch m.Mode {
			case v1alpha1.MTLSStrict:
				row.Verdict, row.Note = Differs, "the server takes plaintext: its push is not ACKed, or another PeerAuthentication decides"
			case v1alpha1.MTLSPermissive:
				row.Note = "a gRPC server cannot take both on one port: istiod serves PERMISSIVE as plaintext"
			}
		}
		rows = append(rows, row)
	}
	want := allowed(p, trustDomain)
	if len(want) > 0 || srv.RBAC {
		row := Row{Field: "allow", Declared: cmp.Or(strings.Join(want, ","), "any caller"), Received: notXDS}
		switch {
		case srv.Listener == "":
			row.Verdict, row.Note = Missing, "the server does not run gRPC's xDS server (XDS_SERVER=true): nothing checks its callers"
		case !srv.Generated:
			row.Received = "no listener generated"
			row.Verdict, row.Note = Missing, notGenerated
		case !srv.RBAC:
			row.Received = "listener RBAC: none"
			row.Verdict, row.Note = Differs, "the server lets every caller through: its push is not ACKed"
		default:
			row.Received = "listener RBAC ALLOW " + cmp.Or(strings.Join(srv.Principals, ","), "nobody")
			row.Verdict = InForce
			if !slices.Equal(want, srv.Principals) {
				row.Verdict, row.Note = Differs, "the server allows other callers: its push is not ACKed, or another AuthorizationPolicy selects it"
			} else if !srv.MTLS {
				row.Note = "principals match mTLS identities only: this server takes plaintext (mtls is not STRICT), so every plaintext caller is refused"
			}
		}
		rows = append(rows, row)
	}
	return rows
}

// notGenerated explains a server istiod generates no inbound listener for.
const notGenerated = "istiod generates no inbound listener for this server — it is none of the Service's instances in istiod's registry (an unhealthy WorkloadEntry counts as absent) — so it serves nothing"

// ServersConverged reports whether every server ACKed its last push, serves (istiod generates the
// inbound listener it asked for) and holds what p declares.
func ServersConverged(servers []Server, rows [][]Row) error {
	for i, srv := range servers {
		if !srv.Proxy.Synced() {
			return fmt.Errorf("server %s has not ACKed %v (errors %v)", srv.Proxy.ID, srv.Proxy.Unacked, srv.Proxy.Errors)
		}
		if srv.Listener != "" && !srv.Generated {
			return fmt.Errorf("server %s: %s", srv.Proxy.ID, notGenerated)
		}
		for _, row := range rows[i] {
			if row.Verdict == Differs || row.Verdict == Missing {
				return fmt.Errorf("server %s: %s declared %s, holds %s (%s)", srv.Proxy.ID, row.Field, row.Declared, row.Received, row.Note)
			}
		}
	}
	return nil
}

// Converged reports whether every row that gRPC could hold does hold the declared value, and the
// client ACKed its last push: the policy is as in force as it can be proxyless.
func Converged(r *Received, rows []Row) error {
	if !r.Proxy.Synced() {
		return fmt.Errorf("proxy %s has not ACKed %v (errors %v)", r.Proxy.ID, r.Proxy.Unacked, r.Proxy.Errors)
	}
	if r.Route == nil {
		return fmt.Errorf("proxy %s holds no route %s: it has not called the service", r.Proxy.ID, r.RouteName)
	}
	for _, row := range rows {
		if row.Verdict == Differs {
			return fmt.Errorf("proxy %s: %s declared %s, received %s", r.Proxy.ID, row.Field, row.Declared, row.Received)
		}
	}
	return nil
}

// WriteTable writes rows as an aligned table.
func WriteTable(w io.Writer, rows []Row) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "FIELD\tDECLARED\tRECEIVED (xDS)\tVERDICT\tNOTE")
	for _, r := range rows {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", r.Field, r.Declared, r.Received, r.Verdict, r.Note)
	}
	return tw.Flush()
}

func exact(field, declared, received string, same bool) Row {
	r := Row{Field: field, Declared: declared, Received: received, Verdict: InForce}
	if !same {
		r.Verdict, r.Note = Differs, "the client holds another value"
	}
	return r
}

func durationOrNone(d time.Duration) string {
	if d == 0 {
		return "none"
	}
	return d.String()
}

func weights(m map[string]uint32) string {
	if len(m) == 0 {
		return "none"
	}
	var parts []string
	for _, k := range slices.Sorted(maps.Keys(m)) {
		name := k
		if name == "" {
			name = "(all)"
		}
		parts = append(parts, fmt.Sprintf("%s=%d", name, m[k]))
	}
	return strings.Join(parts, " ")
}

func retryOnOf(r *Route) []string {
	if r.Retry == nil {
		return nil
	}
	return r.Retry.RetryOn
}

// sameConditions compares declared retryOn with the route's: Istio moves numeric conditions into
// retriable_status_codes and adds retriable-status-codes to retry_on.
func sameConditions(declared, got []string, r *Route) bool {
	var want []string
	var codes []uint32
	for _, c := range declared {
		if n, err := strconv.Atoi(c); err == nil {
			codes = append(codes, uint32(n))
			continue
		}
		want = append(want, c)
	}
	if len(codes) > 0 && !slices.Contains(want, "retriable-status-codes") {
		want = append(want, "retriable-status-codes")
	}
	var gotCodes []uint32
	if r.Retry != nil {
		gotCodes = r.Retry.StatusCodes
	}
	return equalSets(want, got) && equalSets(codes, gotCodes)
}

func equalSets[T comparable](a, b []T) bool {
	set := map[T]bool{}
	for _, x := range a {
		set[x] = true
	}
	other := map[T]bool{}
	for _, x := range b {
		other[x] = true
	}
	return maps.Equal(set, other)
}

func intersect(a, b []string) []string {
	var out []string
	for _, x := range a {
		if slices.Contains(b, x) {
			out = append(out, x)
		}
	}
	return out
}

func difference(a, b []string) []string {
	var out []string
	for _, x := range a {
		if !slices.Contains(b, x) {
			out = append(out, x)
		}
	}
	return out
}

// clusterValues returns f of every cluster the route sends to (or of the default cluster).
func clusterValues(r *Received, f func(*Cluster) string) []string {
	var out []string
	subsets := []string{""}
	if r.Route != nil && len(r.Route.Weights) > 0 {
		subsets = slices.Sorted(maps.Keys(r.Route.Weights))
	}
	for _, s := range subsets {
		if c := r.Clusters[s]; c != nil {
			out = append(out, f(c))
		}
	}
	return out
}

func allEqual(vs []string, want string) bool {
	for _, v := range vs {
		if v != want {
			return false
		}
	}
	return true
}

func otherLimits(r *Received) string {
	var other []string
	for _, c := range r.Clusters {
		other = append(other, c.Other...)
	}
	if len(other) == 0 {
		return "cluster circuit_breakers: only max_requests"
	}
	slices.Sort(other)
	return "cluster " + strings.Join(slices.Compact(other), " ")
}

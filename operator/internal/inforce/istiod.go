// Package inforce reads what istiod actually sent a mesh client, from istiod's own debug endpoints
// (/debug/syncz for which connected clients ACKed their last push, /debug/config_dump?proxyID=… for the
// routes and clusters generated for that connection), and sets it next to what a TrafficPolicy
// declares: "declared vs. in force". For proxyless gRPC clients it also says which fields gRPC's xDS
// client honours, which it ignores and which istiod never sends it.
package inforce

import (
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	adminv3 "github.com/envoyproxy/go-control-plane/envoy/admin/v3"
	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	faultv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/fault/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"
	"google.golang.org/protobuf/types/known/emptypb"
)

// xDS type URLs, as syncz keys them.
const (
	typeCluster  = "type.googleapis.com/envoy.config.cluster.v3.Cluster"
	typeListener = "type.googleapis.com/envoy.config.listener.v3.Listener"
	typeRoute    = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration"
	typeEndpoint = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment"
)

// Istiod reads an istiod's debug endpoints (its HTTP port, 8080 in a cluster).
type Istiod struct {
	// URL is the base URL, e.g. http://127.0.0.1:15080.
	URL string
	// Client is the HTTP client; nil uses one with a 10s timeout.
	Client *http.Client
}

// Proxy is one client connected to istiod and the state of its last push.
type Proxy struct {
	// ID is istiod's id of the connection, name.namespace (e.g. orders-0.shop).
	ID string
	// Type is istiod's node type, "sidecar" for proxyless gRPC too.
	Type string
	// Unacked lists the resource types (CDS, LDS, RDS, EDS) pushed but not yet ACKed.
	Unacked []string
	// Errors holds the NACK message of each type the client rejected.
	Errors map[string]string
}

// Synced reports whether the client ACKed everything sent and rejected nothing.
func (p Proxy) Synced() bool { return len(p.Unacked) == 0 && len(p.Errors) == 0 }

// syncStatus is one entry of /debug/syncz.
type syncStatus struct {
	ProxyID   string `json:"proxy"`
	ProxyType string `json:"proxy_type"`
	Resources map[string]struct {
		Sent      string `json:"sent"`
		Acked     string `json:"acked"`
		LastError string `json:"lastError"`
	} `json:"resources"`
}

var shortTypes = map[string]string{typeCluster: "CDS", typeListener: "LDS", typeRoute: "RDS", typeEndpoint: "EDS"}

// Proxies lists the clients connected to istiod, sorted by id. A client with several ADS streams
// (gRPC opens one per channel target) is listed once, synced only when every stream is.
func (d Istiod) Proxies(ctx context.Context) ([]Proxy, error) {
	body, err := d.get(ctx, "/debug/syncz", nil)
	if err != nil {
		return nil, err
	}
	var status []syncStatus
	if err := json.Unmarshal(body, &status); err != nil {
		return nil, fmt.Errorf("istiod /debug/syncz: %w", err)
	}
	byID := map[string]*Proxy{}
	for _, s := range status {
		p := byID[s.ProxyID]
		if p == nil {
			p = &Proxy{ID: s.ProxyID, Type: s.ProxyType}
			byID[s.ProxyID] = p
		}
		for typ, r := range s.Resources {
			short := shortTypes[typ]
			if short == "" {
				continue
			}
			if r.Sent != "" && r.Sent != r.Acked && !slices.Contains(p.Unacked, short) {
				p.Unacked = append(p.Unacked, short)
			}
			if r.LastError != "" {
				if p.Errors == nil {
					p.Errors = map[string]string{}
				}
				p.Errors[short] = r.LastError
			}
		}
	}
	out := make([]Proxy, 0, len(byID))
	for _, p := range byID {
		slices.Sort(p.Unacked)
		out = append(out, *p)
	}
	slices.SortFunc(out, func(a, b Proxy) int { return strings.Compare(a.ID, b.ID) })
	return out, nil
}

// stream is one ADS stream: its connection id (proxy id, "-", a counter), the client's labels and node
// metadata, and the resources it watches.
type stream struct {
	ID       string              `json:"connectionId"`
	Labels   map[string]string   `json:"labels"`
	Metadata streamMetadata      `json:"metadata"`
	Watches  map[string][]string `json:"watches"`
}

// streamMetadata is the part of the client's node metadata (its bootstrap) Clients reads.
type streamMetadata struct {
	Name      string            `json:"NAME"`
	Namespace string            `json:"NAMESPACE"`
	Labels    map[string]string `json:"LABELS"`
}

func (s stream) proxyID() string {
	if i := strings.LastIndexByte(s.ID, '-'); i > 0 {
		return s.ID[:i]
	}
	return s.ID
}

// streams lists every ADS stream istiod holds (/debug/adsz).
func (d Istiod) streams(ctx context.Context) ([]stream, error) {
	body, err := d.get(ctx, "/debug/adsz", nil)
	if err != nil {
		return nil, err
	}
	var doc struct {
		Clients []stream `json:"clients"`
	}
	if err := json.Unmarshal(body, &doc); err != nil {
		return nil, fmt.Errorf("istiod /debug/adsz: %w", err)
	}
	return doc.Clients, nil
}

// Callers returns the ids of the connected clients that asked istiod for host:port's routes: the
// service's callers.
func (d Istiod) Callers(ctx context.Context, host string, port int) ([]string, error) {
	streams, err := d.streams(ctx)
	if err != nil {
		return nil, err
	}
	route := clusterName(host, port, "")
	var out []string
	for _, s := range streams {
		if slices.Contains(s.Watches[typeRoute], route) && !slices.Contains(out, s.proxyID()) {
			out = append(out, s.proxyID())
		}
	}
	slices.Sort(out)
	return out, nil
}

// Watcher is a client connected to istiod and the Services it asked istiod for the routes of: the
// Services it calls, as far as istiod knows.
type Watcher struct {
	// ID is istiod's proxy id, name.namespace.
	ID string
	// Name and Namespace come from the client's node metadata, else from its id.
	Name, Namespace string
	// Labels are the client's labels.
	Labels map[string]string
	// Hosts are the hosts of the route configurations it watches, sorted.
	Hosts []string
}

// Watchers lists the connected clients and the hosts whose routes they watch (/debug/adsz), sorted by id.
// A proxyless gRPC client asks for one route configuration per target it dialled,
// outbound|<port>||<host>; an Envoy sidecar asks for routes by port and is listed without hosts.
func (d Istiod) Watchers(ctx context.Context) ([]Watcher, error) {
	streams, err := d.streams(ctx)
	if err != nil {
		return nil, err
	}
	byID := map[string]*Watcher{}
	for _, s := range streams {
		id := s.proxyID()
		c := byID[id]
		if c == nil {
			name, ns, _ := strings.Cut(id, ".")
			c = &Watcher{ID: id, Name: cmp.Or(s.Metadata.Name, name), Namespace: cmp.Or(s.Metadata.Namespace, ns)}
			byID[id] = c
		}
		if c.Labels == nil {
			c.Labels = s.Labels
		}
		if c.Labels == nil {
			c.Labels = s.Metadata.Labels
		}
		for _, route := range s.Watches[typeRoute] {
			parts := strings.Split(route, "|")
			if len(parts) == 4 && parts[0] == "outbound" && parts[3] != "" && !slices.Contains(c.Hosts, parts[3]) {
				c.Hosts = append(c.Hosts, parts[3])
			}
		}
	}
	out := make([]Watcher, 0, len(byID))
	for _, c := range byID {
		slices.Sort(c.Hosts)
		out = append(out, *c)
	}
	slices.SortFunc(out, func(a, b Watcher) int { return strings.Compare(a.ID, b.ID) })
	return out, nil
}

// Received is what istiod generated for one client's connection for one Service port: the route
// configuration named after it and its clusters (the default one and one per subset). It is what the
// client received if Proxy.Synced.
type Received struct {
	// Proxy is the client.
	Proxy Proxy
	// RouteName is outbound|<port>||<host>, the route configuration gRPC asks for.
	RouteName string
	// Route is the default route, the one that takes every call no other route matches (named default,
	// or else the last); nil when the client never asked for the Service (it does not call it).
	Route *Route
	// Routes are every route of the Service's virtual host, in the order the client tries them.
	Routes []*Route
	// Clusters are keyed by subset; "" is the Service's default cluster.
	Clusters map[string]*Cluster
	// FaultFilter is true when the client's listener for the Service has the HTTP fault filter, without
	// which a route's fault does nothing.
	FaultFilter bool
}

// Route is one route of the Service's virtual host.
type Route struct {
	// Name is the route's name, the VirtualService http[] route's.
	Name string
	// Match is the route's match as received, e.g. "path=/pkg.Service/Method" or "regex=/[^/]+/Charge
	// header :method=~POST|PATCH"; empty for a route that takes everything (prefix /).
	Match string
	// HeaderNames are the headers the match looks at, pseudo-headers such as :method included.
	HeaderNames []string
	// Timeout is max_stream_duration, the only timeout gRPC reads; 0 means none.
	Timeout time.Duration
	// Retry is nil when the route has no retry policy.
	Retry *Retry
	// Weights maps a subset ("" for the default cluster) to its weight.
	Weights map[string]uint32
	// Fault is nil when the route injects none.
	Fault *Fault
}

// Fault is a route's fault injection as received.
type Fault struct {
	// Delay and DelayPercent: calls held back; Delay 0 means no delay.
	Delay        time.Duration
	DelayPercent float64
	// AbortCode is the gRPC code name or HTTP status aborted calls get; empty means no abort.
	AbortCode    string
	AbortPercent float64
}

// String says what f injects, as status.effective does: "delay 2s to 10%, abort UNAVAILABLE to 5%".
func (f *Fault) String() string {
	if f == nil {
		return ""
	}
	var parts []string
	if f.Delay > 0 {
		parts = append(parts, fmt.Sprintf("delay %s to %s%%", f.Delay, strconv.FormatFloat(f.DelayPercent, 'f', -1, 64)))
	}
	if f.AbortCode != "" {
		parts = append(parts, fmt.Sprintf("abort %s to %s%%", f.AbortCode, strconv.FormatFloat(f.AbortPercent, 'f', -1, 64)))
	}
	return strings.Join(parts, ", ")
}

// Retry is a route's retry policy.
type Retry struct {
	// RetryOn lists the retry_on conditions.
	RetryOn []string
	// StatusCodes are retriable HTTP status codes.
	StatusCodes []uint32
	// NumRetries is the number of retries (attempts after the first).
	NumRetries uint32
	// PerTryTimeout is 0 when unset.
	PerTryTimeout time.Duration
}

// Cluster is the policy-relevant part of one cluster.
type Cluster struct {
	// Name is outbound|<port>|<subset>|<host>.
	Name string
	// MaxRequests is circuit_breakers' max_requests, 0 when unset.
	MaxRequests uint32
	// Outlier is nil when the cluster has no outlier_detection.
	Outlier *clusterv3.OutlierDetection
	// LB is the lb_policy.
	LB string
	// MTLS is true when the cluster carries a TLS transport socket (istiod's ISTIO_MUTUAL for gRPC).
	MTLS bool
	// Other lists other connection-pool limits set (max_connections, max_pending_requests, max_retries).
	Other []string
}

// Received reads what istiod generated for proxyID's (name.namespace) connection for host:port, e.g.
// payments.shop.svc.cluster.local:9030. The proxy must be connected; Route is nil when it never asked
// for the service.
func (d Istiod) Received(ctx context.Context, proxyID, host string, port int) (*Received, error) {
	proxies, err := d.Proxies(ctx)
	if err != nil {
		return nil, err
	}
	i := slices.IndexFunc(proxies, func(p Proxy) bool { return p.ID == proxyID })
	if i < 0 {
		return nil, fmt.Errorf("proxy %s is not connected to istiod", proxyID)
	}
	r := &Received{Proxy: proxies[i], RouteName: clusterName(host, port, ""), Clusters: map[string]*Cluster{}}
	streams, err := d.streams(ctx)
	if err != nil {
		return nil, err
	}
	// gRPC keeps one ADS stream per channel target, all with the same node id; config_dump takes a
	// connection id, so ask for a stream that watches the service's route.
	for _, s := range streams {
		if s.proxyID() != proxyID || !slices.Contains(s.Watches[typeRoute], r.RouteName) {
			continue
		}
		if err := d.dump(ctx, s.ID, host, port, r); err != nil {
			return nil, err
		}
		if r.Route != nil {
			break
		}
	}
	return r, nil
}

// dump reads connection id's routes and clusters for host:port into r.
func (d Istiod) dump(ctx context.Context, id, host string, port int, r *Received) error {
	body, err := d.get(ctx, "/debug/config_dump", url.Values{"proxyID": {id}, "types": {"lds,rds,cds"}})
	if err != nil {
		return err
	}
	dump := &adminv3.ConfigDump{}
	if err := (protojson.UnmarshalOptions{DiscardUnknown: true, Resolver: lenientTypes{}}).Unmarshal(body, dump); err != nil {
		return fmt.Errorf("istiod config_dump for %s: %w", id, err)
	}
	for _, a := range dump.GetConfigs() {
		msg, err := a.UnmarshalNew()
		if err != nil {
			continue // a type this binary does not know: not one we read
		}
		switch m := msg.(type) {
		case *routev3.RouteConfiguration:
			if m.GetName() == r.RouteName {
				r.Routes = routes(m, host, port)
				r.Route = defaultRoute(r.Routes)
			}
		case *listenerv3.Listener:
			if m.GetName() == host+":"+strconv.Itoa(port) {
				r.FaultFilter = hasFaultFilter(m)
			}
		case *clusterv3.Cluster:
			if subset, ok := subsetOf(m.GetName(), host, port); ok {
				r.Clusters[subset] = cluster(m)
			}
		}
	}
	return nil
}

func (d Istiod) get(ctx context.Context, path string, q url.Values) ([]byte, error) {
	u := strings.TrimSuffix(d.URL, "/") + path
	if len(q) > 0 {
		u += "?" + q.Encode()
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, err
	}
	c := d.Client
	if c == nil {
		c = &http.Client{Timeout: 10 * time.Second}
	}
	resp, err := c.Do(req)
	if err != nil {
		return nil, fmt.Errorf("istiod %s: %w", path, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 32<<20))
	if err != nil {
		return nil, fmt.Errorf("istiod %s: %w", path, err)
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("istiod %s: %s: %s", path, resp.Status, strings.TrimSpace(string(body)))
	}
	return body, nil
}

// clusterName is istiod's outbound cluster (and route configuration) name.
func clusterName(host string, port int, subset string) string {
	return "outbound|" + strconv.Itoa(port) + "|" + subset + "|" + host
}

// subsetOf parses outbound|port|subset|host for the given host and port.
func subsetOf(name, host string, port int) (string, bool) {
	parts := strings.Split(name, "|")
	if len(parts) != 4 || parts[0] != "outbound" || parts[1] != strconv.Itoa(port) || parts[3] != host {
		return "", false
	}
	return parts[2], true
}

// routes returns every route of host's virtual host in rc, in order; nil when there is none.
func routes(rc *routev3.RouteConfiguration, host string, port int) []*Route {
	for _, vh := range rc.GetVirtualHosts() {
		if !slices.Contains(vh.GetDomains(), host) && !slices.Contains(vh.GetDomains(), host+":"+strconv.Itoa(port)) {
			continue
		}
		out := []*Route{}
		for _, r := range vh.GetRoutes() {
			out = append(out, route(r, host, port))
		}
		return out
	}
	return nil
}

// defaultRoute is the route named default, or else the last one: the route that takes every call no
// other route matches. Nil for nil routes; an empty route when the virtual host has none.
func defaultRoute(routes []*Route) *Route {
	if routes == nil {
		return nil
	}
	if i := slices.IndexFunc(routes, func(r *Route) bool { return r.Name == "default" }); i >= 0 {
		return routes[i]
	}
	if len(routes) == 0 {
		return &Route{}
	}
	return routes[len(routes)-1]
}

func route(r *routev3.Route, host string, port int) *Route {
	a := r.GetRoute()
	out := &Route{Name: r.GetName(), Match: matchText(r.GetMatch()), Timeout: a.GetMaxStreamDuration().GetMaxStreamDuration().AsDuration(),
		Weights: map[string]uint32{}}
	for _, h := range r.GetMatch().GetHeaders() {
		out.HeaderNames = append(out.HeaderNames, h.GetName())
	}
	if a.GetMaxStreamDuration().GetMaxStreamDuration() == nil {
		out.Timeout = 0
	}
	if wc := a.GetWeightedClusters(); wc != nil {
		for _, c := range wc.GetClusters() {
			subset, _ := subsetOf(c.GetName(), host, port)
			out.Weights[subset] += c.GetWeight().GetValue()
		}
	} else if subset, ok := subsetOf(a.GetCluster(), host, port); ok {
		out.Weights[subset] = 100
	}
	if rp := a.GetRetryPolicy(); rp != nil {
		out.Retry = &Retry{NumRetries: 1, StatusCodes: rp.GetRetriableStatusCodes()}
		if rp.GetNumRetries() != nil {
			out.Retry.NumRetries = rp.GetNumRetries().GetValue()
		}
		for _, s := range strings.Split(rp.GetRetryOn(), ",") {
			if s = strings.TrimSpace(s); s != "" {
				out.Retry.RetryOn = append(out.Retry.RetryOn, s)
			}
		}
		if rp.GetPerTryTimeout() != nil {
			out.Retry.PerTryTimeout = rp.GetPerTryTimeout().AsDuration()
		}
	}
	if cfg := r.GetTypedPerFilterConfig()[faultFilterName]; cfg != nil {
		f := &faultv3.HTTPFault{}
		if cfg.UnmarshalTo(f) == nil && (f.GetDelay() != nil || f.GetAbort() != nil) {
			out.Fault = fault(f)
		}
	}
	return out
}

// faultFilterName is the HTTP fault filter's name, which istiod keys a route's fault config by.
const faultFilterName = "envoy.filters.http.fault"

func fault(f *faultv3.HTTPFault) *Fault {
	out := &Fault{}
	if d := f.GetDelay(); d != nil {
		out.Delay = d.GetFixedDelay().AsDuration()
		out.DelayPercent = percent(d.GetPercentage())
	}
	if a := f.GetAbort(); a != nil {
		out.AbortPercent = percent(a.GetPercentage())
		switch t := a.GetErrorType().(type) {
		case *faultv3.FaultAbort_GrpcStatus:
			out.AbortCode = grpcCodeName(t.GrpcStatus)
		case *faultv3.FaultAbort_HttpStatus:
			out.AbortCode = strconv.Itoa(int(t.HttpStatus))
		}
	}
	return out
}

func percent(p *typev3.FractionalPercent) float64 {
	n := float64(p.GetNumerator())
	switch p.GetDenominator() {
	case typev3.FractionalPercent_TEN_THOUSAND:
		return n / 100
	case typev3.FractionalPercent_MILLION:
		return n / 10000
	}
	return n
}

// grpcCodeName writes a gRPC code as Istio and the TrafficPolicy API do: UNAVAILABLE, not Unavailable.
func grpcCodeName(code uint32) string {
	var b strings.Builder
	for i, r := range codes.Code(code).String() {
		if i > 0 && r >= 'A' && r <= 'Z' {
			b.WriteByte('_')
		}
		b.WriteRune(r)
	}
	name := strings.ToUpper(b.String())
	if name == "CANCELED" {
		return "CANCELLED"
	}
	return name
}

// matchText writes a route match as received: the path condition, then each header condition.
func matchText(m *routev3.RouteMatch) string {
	var parts []string
	switch p := m.GetPathSpecifier().(type) {
	case *routev3.RouteMatch_Path:
		parts = append(parts, "path="+p.Path)
	case *routev3.RouteMatch_Prefix:
		if p.Prefix != "/" {
			parts = append(parts, "prefix="+p.Prefix)
		}
	case *routev3.RouteMatch_SafeRegex:
		parts = append(parts, "regex="+p.SafeRegex.GetRegex())
	}
	for _, h := range m.GetHeaders() {
		op := "="
		value := ""
		switch {
		case h.GetPresentMatch():
			op = " present"
		case h.GetStringMatch().GetExact() != "":
			value = h.GetStringMatch().GetExact()
		case h.GetStringMatch().GetPrefix() != "":
			op, value = "^=", h.GetStringMatch().GetPrefix()
		case h.GetStringMatch().GetSafeRegex() != nil:
			op, value = "=~", h.GetStringMatch().GetSafeRegex().GetRegex()
		}
		if h.GetInvertMatch() {
			op = " not" + op
		}
		parts = append(parts, "header "+h.GetName()+op+value)
	}
	return strings.Join(parts, " ")
}

// hasFaultFilter reports whether l's HTTP connection manager runs the fault filter.
func hasFaultFilter(l *listenerv3.Listener) bool {
	hcm := &hcmv3.HttpConnectionManager{}
	if l.GetApiListener().GetApiListener().UnmarshalTo(hcm) != nil {
		return false
	}
	return slices.ContainsFunc(hcm.GetHttpFilters(), func(f *hcmv3.HttpFilter) bool { return f.GetName() == faultFilterName })
}

func cluster(c *clusterv3.Cluster) *Cluster {
	out := &Cluster{Name: c.GetName(), Outlier: c.GetOutlierDetection(), LB: c.GetLbPolicy().String(),
		MTLS: c.GetTransportSocket() != nil}
	for _, t := range c.GetCircuitBreakers().GetThresholds() {
		if t.GetMaxRequests() != nil {
			out.MaxRequests = t.GetMaxRequests().GetValue()
		}
		if t.GetMaxConnections() != nil {
			out.Other = append(out.Other, fmt.Sprintf("max_connections=%d", t.GetMaxConnections().GetValue()))
		}
		if t.GetMaxPendingRequests() != nil {
			out.Other = append(out.Other, fmt.Sprintf("max_pending_requests=%d", t.GetMaxPendingRequests().GetValue()))
		}
		if t.GetMaxRetries() != nil {
			out.Other = append(out.Other, fmt.Sprintf("max_retries=%d", t.GetMaxRetries().GetValue()))
		}
	}
	return out
}

// lenientTypes resolves the Any types this binary knows and reads any other as an empty message, so
// an extension istiod adds (a filter, a load-balancing policy) cannot make the whole dump unreadable.
type lenientTypes struct{}

func (lenientTypes) FindMessageByName(name protoreflect.FullName) (protoreflect.MessageType, error) {
	if mt, err := protoregistry.GlobalTypes.FindMessageByName(name); err == nil {
		return mt, nil
	}
	return (&emptypb.Empty{}).ProtoReflect().Type(), nil
}

func (lenientTypes) FindMessageByURL(u string) (protoreflect.MessageType, error) {
	if mt, err := protoregistry.GlobalTypes.FindMessageByURL(u); err == nil {
		return mt, nil
	}
	return (&emptypb.Empty{}).ProtoReflect().Type(), nil
}

func (lenientTypes) FindExtensionByName(field protoreflect.FullName) (protoreflect.ExtensionType, error) {
	return protoregistry.GlobalTypes.FindExtensionByName(field)
}

func (lenientTypes) FindExtensionByNumber(message protoreflect.FullName, field protoreflect.FieldNumber) (protoreflect.ExtensionType, error) {
	return protoregistry.GlobalTypes.FindExtensionByNumber(message, field)
}

// Package discovery finds the instances of a downstream service and registers this one.
//
// The gRPC target chosen by configuration decides how: "dns:///payments.shop.svc.cluster.local:9030"
// (in a cluster, where the sidecar balances), "consul:///payments" (locally: this package's resolver
// over the Consul health API, passing instances only, kept current with blocking queries), a plain
// "host:port", or — with gRPC's xDS package linked in — "xds:///payments.shop.svc.cluster.local:9030",
// where istiod drives routing and balancing.
//
// When no instance of a service passes its check, the Consul resolver hands gRPC every instance Consul
// still lists (Envoy's panic routing, at a threshold of zero). Every instance failing at once most likely
// shares a failing dependency — orders' database — and calling them gets that dependency's named error
// (503 {"dependency":"postgres"}), spread over all of them, and each takes traffic again the moment it
// recovers. Reporting "no passing instances" instead left gRPC on its last good set — the last instance to
// fail took every call — and failed a client that had never resolved any. A draining instance
// deregisters first, so it is never called this way.
package discovery

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	consul "github.com/hashicorp/consul/api"
	"google.golang.org/grpc"
	"google.golang.org/grpc/resolver"
)

// Scheme is the gRPC target scheme of Consul discovery: consul:///<service>[?tag=<tag>].
const Scheme = "consul"

// roundRobin is the service config that spreads calls over every resolved instance; gRPC's default,
// pick_first, would send everything to one.
const roundRobin = `{"loadBalancingConfig": [{"round_robin": {}}]}`

// DialOptions returns the options target needs: the Consul resolver (consul may be nil when no
// target uses it) and round-robin balancing, except for xds targets whose balancing comes from
// istiod.
func DialOptions(target string, c *consul.Client, logger *slog.Logger) ([]grpc.DialOption, error) {
	u, err := url.Parse(target)
	scheme := ""
	if err == nil {
		scheme = u.Scheme
	}
	var opts []grpc.DialOption
	switch scheme {
	case Scheme:
		if c == nil {
			return nil, fmt.Errorf("target %s: Consul discovery needs a Consul address", target)
		}
		if strings.Trim(u.Path, "/") == "" {
			return nil, fmt.Errorf("target %s: want consul:///<service>", target)
		}
		opts = append(opts, grpc.WithResolvers(&consulBuilder{client: c, logger: logger}))
	case "xds":
		return nil, nil
	}
	return append(opts, grpc.WithDefaultServiceConfig(roundRobin)), nil
}

type consulBuilder struct {
	client *consul.Client
	logger *slog.Logger
}

func (b *consulBuilder) Scheme() string { return Scheme }

func (b *consulBuilder) Build(t resolver.Target, cc resolver.ClientConn, _ resolver.BuildOptions) (resolver.Resolver, error) {
	service := strings.Trim(t.Endpoint(), "/")
	if service == "" {
		return nil, fmt.Errorf("consul target %q: no service name", t.String())
	}
	ctx, cancel := context.WithCancel(context.Background())
	r := &consulResolver{
		service: service, tag: t.URL.Query().Get("tag"), client: b.client, cc: cc, cancel: cancel,
		logger: b.logger.With(slog.String("dependency", service)), done: make(chan struct{}),
	}
	go r.watch(ctx)
	return r, nil
}

type consulResolver struct {
	service, tag string
	client       *consul.Client
	cc           resolver.ClientConn
	logger       *slog.Logger
	cancel       context.CancelFunc
	done         chan struct{}
}

// ResolveNow is a no-op: the blocking query already returns as soon as the instances change.
func (r *consulResolver) ResolveNow(resolver.ResolveNowOptions) {}

// Close stops the watch and waits for it.
func (r *consulResolver) Close() {
	r.cancel()
	<-r.done
}

// Bounds of the watch loop: how long one blocking query may wait for a change, the least time between
// two queries (so an idempotent write storm cannot spin it), and the back-off after an error.
const (
	blockingWait = 5 * time.Minute
	minInterval  = 50 * time.Millisecond
	maxBackoff   = 5 * time.Second
)

// watch follows Consul's blocking-query rules: reset the index when it goes backwards (a restored
// snapshot or restarted dev agent), never send 0 after a response, and rate-limit the loop.
func (r *consulResolver) watch(ctx context.Context) {
	defer close(r.done)
	var index uint64
	backoff := 100 * time.Millisecond
	var last []string
	first := true
	for {
		start := time.Now()
		q := (&consul.QueryOptions{WaitIndex: index, WaitTime: blockingWait}).WithContext(ctx)
		entries, meta, err := r.client.Health().Service(r.service, r.tag, false, q)
		if ctx.Err() != nil {
			return
		}
		if err != nil {
			r.logger.Warn("consul discovery query failed", slog.String("error", err.Error()))
			r.cc.ReportError(fmt.Errorf("discover %s in consul: %w", r.service, err))
			if !sleep(ctx, backoff) {
				return
			}
			backoff = min(backoff*2, maxBackoff)
			continue
		}
		backoff = 100 * time.Millisecond
		switch {
		case meta.LastIndex < index:
			index = 0
		default:
			index = max(meta.LastIndex, 1)
		}
		addrs, panicking := addresses(passing(entries)), false
		if len(addrs) == 0 && len(entries) > 0 {
			addrs, panicking = addresses(entries), true
		}
		if first || !slices.Equal(addrs, last) {
			first = false
			last = addrs
			if panicking {
				r.logger.Warn("no instance passes its check: calling every registered instance", slog.Int("instances", len(addrs)), slog.Any("addresses", addrs))
			} else {
				r.logger.Info("consul discovery update", slog.Int("instances", len(addrs)), slog.Any("addresses", addrs))
			}
			if len(addrs) == 0 {
				r.cc.ReportError(fmt.Errorf("no instances of %s in consul", r.service))
			} else {
				eps := make([]resolver.Endpoint, len(addrs))
				for i, a := range addrs {
					eps[i] = resolver.Endpoint{Addresses: []resolver.Address{{Addr: a}}}
				}
				if err := r.cc.UpdateState(resolver.State{Endpoints: eps}); err != nil {
					r.logger.Warn("resolver update rejected", slog.String("error", err.Error()))
				}
			}
		}
		if !sleep(ctx, minInterval-time.Since(start)) {
			return
		}
	}
}

// passing keeps the entries whose every check passes.
func passing(entries []*consul.ServiceEntry) []*consul.ServiceEntry {
	var out []*consul.ServiceEntry
	for _, e := range entries {
		if e.Checks.AggregatedStatus() == consul.HealthPassing {
			out = append(out, e)
		}
	}
	return out
}

// addresses returns the sorted host:port of each entry; a service without its own address uses the
// node's.
func addresses(entries []*consul.ServiceEntry) []string {
	out := make([]string, 0, len(entries))
	for _, e := range entries {
		host := e.Service.Address
		if host == "" && e.Node != nil {
			host = e.Node.Address
		}
		out = append(out, net.JoinHostPort(host, strconv.Itoa(e.Service.Port)))
	}
	slices.Sort(out)
	return slices.Compact(out)
}

func sleep(ctx context.Context, d time.Duration) bool {
	if d <= 0 {
		return ctx.Err() == nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

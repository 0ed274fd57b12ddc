package discovery

import (
	"context"
	"fmt"
	"net"
	"strconv"
	"time"

	consul "github.com/hashicorp/consul/api"
)

// Registration describes this instance to Consul.
type Registration struct {
	// Service is the Consul service name, e.g. "payments".
	Service string
	// ID is unique per instance; empty means "<service>-<host>-<port>".
	ID string
	// Addr is the host:port other services dial.
	Addr string
	// AdminAddr is the host:port of the admin server: Consul checks its /readyz, and Prometheus finds
	// /metrics there through the metrics_port meta key.
	AdminAddr string
	// Tags and Meta are passed through; Meta gains metrics_port and metrics_path.
	Tags []string
	Meta map[string]string
	// CheckInterval is how often Consul probes /readyz; 0 means 2s.
	CheckInterval time.Duration
}

// Register registers the instance with the local Consul agent, with an HTTP check on its admin
// /readyz so the instance leaves the passing set as soon as it drains. The returned function
// deregisters it.
func Register(ctx context.Context, c *consul.Client, r Registration) (deregister func(context.Context) error, err error) {
	host, port, err := splitHostPort(r.Addr)
	if err != nil {
		return nil, fmt.Errorf("register %s: address: %w", r.Service, err)
	}
	adminHost, adminPort, err := splitHostPort(r.AdminAddr)
	if err != nil {
		return nil, fmt.Errorf("register %s: admin address: %w", r.Service, err)
	}
	id := r.ID
	if id == "" {
		id = fmt.Sprintf("%s-%s-%d", r.Service, host, port)
	}
	interval := r.CheckInterval
	if interval <= 0 {
		interval = 2 * time.Second
	}
	meta := map[string]string{"metrics_port": strconv.Itoa(adminPort), "metrics_path": "/metrics"}
	for k, v := range r.Meta {
		meta[k] = v
	}
	reg := &consul.AgentServiceRegistration{
		ID: id, Name: r.Service, Address: host, Port: port, Tags: r.Tags, Meta: meta,
		Check: &consul.AgentServiceCheck{
			CheckID:                        id + "-ready",
			Name:                           "readiness",
			HTTP:                           "http://" + net.JoinHostPort(adminHost, strconv.Itoa(adminPort)) + "/readyz",
			Interval:                       interval.String(),
			Timeout:                        "1s",
			DeregisterCriticalServiceAfter: "1m",
		},
	}
	if err := c.Agent().ServiceRegisterOpts(reg, consul.ServiceRegisterOpts{}.WithContext(ctx)); err != nil {
		return nil, fmt.Errorf("register %s in consul: %w", id, err)
	}
	return func(ctx context.Context) error {
		q := (&consul.QueryOptions{}).WithContext(ctx)
		if err := c.Agent().ServiceDeregisterOpts(id, q); err != nil {
			return fmt.Errorf("deregister %s from consul: %w", id, err)
		}
		return nil
	}, nil
}

func splitHostPort(addr string) (string, int, error) {
	host, p, err := net.SplitHostPort(addr)
	if err != nil {
		return "", 0, err
	}
	port, err := strconv.Atoi(p)
	if err != nil || port <= 0 {
		return "", 0, fmt.Errorf("port %q of %s is not a port number", p, addr)
	}
	if host == "" || host == "0.0.0.0" || host == "::" {
		return "", 0, fmt.Errorf("%s has no routable host: set an advertise address", addr)
	}
	return host, port, nil
}

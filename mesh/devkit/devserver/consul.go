package devserver

import (
	"bytes"
	"context"
	"strconv"
)

// StartConsul starts `consul agent -dev` (a single in-memory server) on loopback and waits until it has
// a leader. Only the HTTP API listens where clients can use it; DNS and gRPC are off.
func StartConsul(ctx context.Context, o Options) (*Server, error) {
	bin, err := Binary("consul", "consul")
	if err != nil {
		return nil, err
	}
	p, err := ports(&o, 3)
	if err != nil {
		return nil, err
	}
	addr := hostPort(o.Port)
	args := []string{
		"agent", "-dev",
		"-node", "meshplane-dev",
		"-bind", "127.0.0.1", "-client", "127.0.0.1",
		"-http-port", strconv.Itoa(o.Port),
		"-serf-lan-port", strconv.Itoa(p[0]),
		"-serf-wan-port", strconv.Itoa(p[1]),
		"-server-port", strconv.Itoa(p[2]),
		"-dns-port", "-1", "-grpc-port", "-1", "-grpc-tls-port", "-1",
		"-log-level", "warn",
	}
	// A leader address in the body means the catalog accepts writes.
	hasLeader := func(b []byte) bool { return len(bytes.Trim(bytes.TrimSpace(b), `"`)) > 0 }
	return Run(ctx, o, Program{Name: "consul", Bin: bin, Args: args, Addr: addr,
		Ready: httpReady("http://"+addr+"/v1/status/leader", hasLeader)})
}

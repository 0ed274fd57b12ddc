// Package localplatform runs the whole Meshplane platform on one machine without a cluster: a real
// kube-apiserver and etcd with our and Istio's CRDs, the operator (with the Consul catalog sync), a Consul
// dev agent, the shop's services as processes registered through the real sync, Prometheus with the
// generated rules, Loki, and a gentle load. `meshplane up` starts a supervisor in the background and
// returns once everything is ready; `status`, `drill` and `down` talk to it through its state file.
package localplatform

import (
	"errors"
	"fmt"
	"maps"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Ports are the fixed, user-facing ports of the platform by component name. Internal ports (etcd, Consul's
// gossip and RPC, Loki's gRPC) are picked free at start.
type Ports map[string]int

// DefaultPorts are the services' own defaults plus the usual ports of the servers.
func DefaultPorts() Ports {
	return Ports{
		"apiserver": 6443, "consul": 8500, "prometheus": 9090, "loki": 3100, "postgres": 5432,
		"operator-metrics": 8480, "operator-probes": 8481,
		// istiod's HTTP port (/ready, /debug/*; 8080 in a cluster, taken here by the gateway). Its xDS
		// and monitoring ports are internal.
		"istiod":  15080,
		"gateway": 8080, "gateway-admin": 8081,
		"catalog": 9010, "catalog-admin": 9011,
		"catalog-v2": 9012, "catalog-v2-admin": 9013,
		"orders": 9020, "orders-admin": 9021,
		"orders-2": 9022, "orders-2-admin": 9023,
		"payments": 9030, "payments-admin": 9031,
		"payments-v2": 9032, "payments-v2-admin": 9033,
		"fulfillment": 9040, "fulfillment-admin": 9041,
		"fulfillment-2": 9042, "fulfillment-2-admin": 9043,
		// NATS's client port and its monitoring port (/healthz, /jsz: make status reads the streams there).
		"nats": 4222, "nats-monitor": 8222,
		"loadgen-admin": 8090,
	}
}

// String lists the ports as name=port, sorted (flag.Value).
func (p Ports) String() string {
	var parts []string
	for _, k := range slices.Sorted(maps.Keys(p)) {
		parts = append(parts, fmt.Sprintf("%s=%d", k, p[k]))
	}
	return strings.Join(parts, ",")
}

// Set overrides ports from "name=port[,name=port...]" (flag.Value).
func (p Ports) Set(v string) error {
	for item := range strings.SplitSeq(v, ",") {
		name, num, ok := strings.Cut(strings.TrimSpace(item), "=")
		if !ok {
			return fmt.Errorf("port %q: want name=port", item)
		}
		if _, known := DefaultPorts()[name]; !known {
			return fmt.Errorf("port %q: unknown component %q (known: %s)", item, name, strings.Join(slices.Sorted(maps.Keys(DefaultPorts())), ", "))
		}
		n, err := strconv.Atoi(num)
		if err != nil || n < 1 || n > 65535 {
			return fmt.Errorf("port %q: %q is not a port number", item, num)
		}
		p[name] = n
	}
	return nil
}

// Addr is 127.0.0.1:<port of name>.
func (p Ports) Addr(name string) string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(p[name])) }

// CheckFree fails fast, naming the component and the port, when a port is taken.
func (p Ports) CheckFree() error {
	var errs []error
	seen := map[int]string{}
	for _, name := range slices.Sorted(maps.Keys(p)) {
		port := p[name]
		if other, dup := seen[port]; dup {
			errs = append(errs, fmt.Errorf("%s and %s both want port %d", other, name, port))
			continue
		}
		seen[port] = name
		l, err := net.Listen("tcp", ":"+strconv.Itoa(port))
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: port %d is in use (choose another with --port %s=N)", name, port, name))
			continue
		}
		l.Close()
	}
	return errors.Join(errs...)
}

// Config is everything `up` needs.
type Config struct {
	// Repo is the repository root (holds go.work).
	Repo string
	// Dir holds the state, logs and data of a run (default <repo>/.local).
	Dir   string
	Ports Ports
	// Host is the machine's address the shop's endpoints carry: the apiserver refuses loopback addresses
	// in EndpointSlices (as in a cluster), so the services listen on all interfaces and are published at
	// this one. Default: the first non-loopback IPv4 address.
	Host string
	// LoadRate is loadgen's requests per second; 0 starts no load.
	LoadRate float64
	// Discovery is how the shop's services find each other: DiscoveryXDS (through istiod, so
	// TrafficPolicies act on every call) or DiscoveryConsul (Consul's health API, no istiod).
	Discovery string
	// ReadyTimeout bounds the whole start.
	ReadyTimeout time.Duration
}

// Discovery modes of Config.Discovery.
const (
	DiscoveryXDS    = "xds"
	DiscoveryConsul = "consul"
)

// Mesh reports whether the platform runs istiod and the shop calls through it.
func (c Config) Mesh() bool { return c.Discovery != DiscoveryConsul }

// ValidateDiscovery names the flag's allowed values.
func ValidateDiscovery(d string) error {
	if d != DiscoveryXDS && d != DiscoveryConsul {
		return fmt.Errorf("--discovery %q: want %s or %s", d, DiscoveryXDS, DiscoveryConsul)
	}
	return nil
}

// Paths under Dir.
func (c Config) statePath() string    { return filepath.Join(c.Dir, "state.json") }
func (c Config) progressPath() string { return filepath.Join(c.Dir, "progress.log") }
func (c Config) logDir() string       { return filepath.Join(c.Dir, "logs") }
func (c Config) binDir() string       { return filepath.Join(c.Dir, "bin") }

// pgpassPath is the run's PostgreSQL password file (libpq's .pgpass format), for psql.
func (c Config) pgpassPath() string { return filepath.Join(c.Dir, "postgres.pgpass") }
func (c Config) dataDir(name string) string {
	return filepath.Join(c.Dir, "data", name)
}
func (c Config) logFile(name string) string { return filepath.Join(c.logDir(), name+".log") }

// Kubeconfig is the admin kubeconfig of the local apiserver.
func (c Config) Kubeconfig() string { return filepath.Join(c.Dir, "kubeconfig") }

// HostAddress returns the first up, non-loopback IPv4 address of the machine.
func HostAddress() (string, error) {
	ifaces, err := net.Interfaces()
	if err != nil {
		return "", err
	}
	for _, i := range ifaces {
		if i.Flags&net.FlagUp == 0 || i.Flags&net.FlagLoopback != 0 {
			continue
		}
		addrs, err := i.Addrs()
		if err != nil {
			continue
		}
		for _, a := range addrs {
			if n, ok := a.(*net.IPNet); ok && n.IP.To4() != nil && !n.IP.IsLinkLocalUnicast() {
				return n.IP.String(), nil
			}
		}
	}
	return "", errors.New("no non-loopback IPv4 address on this machine: the shop's EndpointSlices need one (the apiserver refuses loopback); pass --host")
}

// FindRepo walks up from dir to the directory holding go.work.
func FindRepo(dir string) (string, error) {
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.work")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("not inside the Meshplane repository (no go.work above the working directory); use --repo")
		}
		dir = parent
	}
}

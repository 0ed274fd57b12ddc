package devserver

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
)

// natsConfig is a single NATS server with JetStream on file storage: clients on 127.0.0.1:%[1]d, the
// monitoring endpoints (/healthz, /varz, /jsz) on 127.0.0.1:%[2]d. A cluster runs three of these with
// routes between them (manifests/components/nats); one is enough to show every delivery guarantee on
// one machine, since JetStream acknowledges a publish only once the message is stored.
const natsConfig = `server_name: meshplane-dev
listen: 127.0.0.1:%[1]d
http: 127.0.0.1:%[2]d
jetstream {
  store_dir: %[3]q
  max_memory_store: 64MB
  max_file_store: 1GB
}
`

// NATS is a running NATS server with JetStream.
type NATS struct {
	*Server
	// MonitorAddr is host:port of the monitoring endpoints: /healthz, /varz, /jsz.
	MonitorAddr string
	// StoreDir holds JetStream's streams and consumers; it survives Stop and Start.
	StoreDir string

	opts   Options
	bin    string
	config string
}

// StartNATS starts nats-server (built by `make tools`) with JetStream on file storage in o.Dir, clients
// on 127.0.0.1:o.Port and monitoring on 127.0.0.1:monitorPort (0 picks a free port for either), and
// waits until /healthz says JetStream is up. Stop ends it (SIGTERM: a clean shutdown that syncs the store); Start
// runs it again on the same ports and store, with every stream and durable consumer as they were.
func StartNATS(ctx context.Context, o Options, monitorPort int) (*NATS, error) {
	bin, err := Binary("nats-server", "nats")
	if err != nil {
		return nil, err
	}
	p, err := ports(&o, 1)
	if err != nil {
		return nil, err
	}
	if monitorPort != 0 {
		p[0] = monitorPort
	}
	if err := os.MkdirAll(o.Dir, 0o755); err != nil {
		return nil, fmt.Errorf("start nats: %w", err)
	}
	store, err := filepath.Abs(filepath.Join(o.Dir, "jetstream"))
	if err != nil {
		return nil, fmt.Errorf("start nats: %w", err)
	}
	n := &NATS{MonitorAddr: hostPort(p[0]), StoreDir: store, opts: o, bin: bin, config: filepath.Join(o.Dir, "nats.conf")}
	if err := os.WriteFile(n.config, fmt.Appendf(nil, natsConfig, o.Port, p[0], store), 0o644); err != nil {
		return nil, fmt.Errorf("start nats: %w", err)
	}
	if err := n.Start(ctx); err != nil {
		return nil, err
	}
	return n, nil
}

// Start runs nats-server on the server's ports and store: the first time from StartNATS, again after
// Stop (clients configured with its URL reconnect).
func (n *NATS) Start(ctx context.Context) error {
	// /healthz answers 200 once the server accepts clients and JetStream has recovered its store.
	isOK := func(b []byte) bool { return bytes.Contains(b, []byte(`"ok"`)) }
	s, err := Run(ctx, n.opts, Program{Name: "nats", Bin: n.bin, Args: []string{"-c", n.config}, Addr: hostPort(n.opts.Port),
		Ready: httpReady("http://"+n.MonitorAddr+"/healthz", isOK)})
	if err != nil {
		return err
	}
	n.Server = s
	return nil
}

// ClientURL is the URL clients connect to: nats://127.0.0.1:port.
func (n *NATS) ClientURL() string { return "nats://" + hostPort(n.opts.Port) }

// MonitorURL is the base URL of the monitoring endpoints.
func (n *NATS) MonitorURL() string { return "http://" + n.MonitorAddr }

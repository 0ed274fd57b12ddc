package devserver

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
)

// lokiConfig is a single-binary Loki: filesystem storage, an in-memory ring, no memberlist, no usage
// reporting, and no readiness delays, so it answers push and query_range within seconds on loopback.
const lokiConfig = `auth_enabled: false
server:
  http_listen_address: 127.0.0.1
  http_listen_port: %[1]d
  grpc_listen_address: 127.0.0.1
  grpc_listen_port: %[2]d
  log_level: warn
common:
  instance_addr: 127.0.0.1
  path_prefix: %[3]s
  replication_factor: 1
  storage:
    filesystem:
      chunks_directory: %[3]s/chunks
      rules_directory: %[3]s/rules
  ring:
    kvstore:
      store: inmemory
ingester:
  lifecycler:
    min_ready_duration: 0s
    final_sleep: 0s
schema_config:
  configs:
    - from: 2024-01-01
      store: tsdb
      object_store: filesystem
      schema: v13
      index:
        prefix: index_
        period: 24h
limits_config:
  allow_structured_metadata: true
  volume_enabled: true
pattern_ingester:
  enabled: false
analytics:
  reporting_enabled: false
`

// StartLoki starts a single-binary Loki with its data in o.Dir and waits for /ready.
func StartLoki(ctx context.Context, o Options) (*Server, error) {
	bin, err := Binary("loki", "loki")
	if err != nil {
		return nil, err
	}
	p, err := ports(&o, 1)
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(o.Dir, 0o755); err != nil {
		return nil, fmt.Errorf("start loki: %w", err)
	}
	data, err := filepath.Abs(filepath.Join(o.Dir, "data"))
	if err != nil {
		return nil, fmt.Errorf("start loki: %w", err)
	}
	cfg := filepath.Join(o.Dir, "loki.yaml")
	if err := os.WriteFile(cfg, fmt.Appendf(nil, lokiConfig, o.Port, p[0], data), 0o644); err != nil {
		return nil, fmt.Errorf("start loki: %w", err)
	}
	addr := hostPort(o.Port)
	isReady := func(b []byte) bool { return bytes.Equal(bytes.TrimSpace(b), []byte("ready")) }
	return Run(ctx, o, Program{Name: "loki", Bin: bin, Args: []string{"-config.file=" + cfg}, Addr: addr,
		Ready: httpReady("http://"+addr+"/ready", isReady)})
}

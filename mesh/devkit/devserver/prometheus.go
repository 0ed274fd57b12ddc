package devserver

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
)

// StartPrometheus starts Prometheus with the given configuration file content, TSDB in o.Dir/data, the
// lifecycle API on (POST /-/reload), and waits for /-/ready. files (name → content) are written into
// o.Dir first, so the configuration can name rule files relative to it.
func StartPrometheus(ctx context.Context, o Options, config []byte, files map[string][]byte) (*Server, error) {
	bin, err := Binary("prometheus", "prometheus")
	if err != nil {
		return nil, err
	}
	if _, err := ports(&o, 0); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(o.Dir, 0o755); err != nil {
		return nil, fmt.Errorf("start prometheus: %w", err)
	}
	for name, content := range files {
		if err := os.WriteFile(filepath.Join(o.Dir, name), content, 0o644); err != nil {
			return nil, fmt.Errorf("start prometheus: %w", err)
		}
	}
	cfg := filepath.Join(o.Dir, "prometheus.yml")
	if err := os.WriteFile(cfg, config, 0o644); err != nil {
		return nil, fmt.Errorf("start prometheus: %w", err)
	}
	addr := hostPort(o.Port)
	args := []string{
		"--config.file=" + cfg,
		"--storage.tsdb.path=" + filepath.Join(o.Dir, "data"),
		"--web.listen-address=" + addr,
		"--web.enable-lifecycle",
		"--log.level=warn",
	}
	return Run(ctx, o, Program{Name: "prometheus", Bin: bin, Args: args, Addr: addr, Ready: httpReady("http://"+addr+"/-/ready", nil)})
}

package shoptest

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"meshplane.dev/mesh/devkit/devserver"
	"meshplane.dev/mesh/devkit/devservertest"
	"meshplane.dev/mesh/devkit/metricstest"
)

// binDir holds the service binaries, built once for the package by TestMain.
var binDir string

func TestMain(m *testing.M) {
	code, err := buildAndRun(m)
	if err != nil {
		fmt.Fprintln(os.Stderr, "shoptest:", err)
		os.Exit(1)
	}
	os.Exit(code)
}

func buildAndRun(m *testing.M) (int, error) {
	dir, err := os.MkdirTemp("", "shoptest-bin-")
	if err != nil {
		return 0, err
	}
	defer func() { _ = os.RemoveAll(dir) }()
	for _, name := range []string{"catalog", "payments", "orders", "fulfillment", "gateway", "loadgen"} {
		src, err := filepath.Abs(filepath.Join("..", name))
		if err != nil {
			return 0, err
		}
		cmd := exec.Command("go", "build", "-o", filepath.Join(dir, name), ".")
		cmd.Dir = src
		if out, err := cmd.CombinedOutput(); err != nil {
			return 0, fmt.Errorf("build %s: %w\n%s", name, err, out)
		}
	}
	binDir = dir
	return m.Run(), nil
}

// proc is a running service process.
type proc struct {
	*devserver.Server
	admin string // host:port of its admin server
}

// start runs service name with env (and nothing else from the test's environment) until the test ends.
func start(t *testing.T, name string, env map[string]string) *proc {
	t.Helper()
	return &proc{Server: devservertest.Service(t, filepath.Join(binDir, name), env), admin: env["ADMIN_ADDR"]}
}

// ready reports nil once /readyz answers 200.
func (p *proc) ready() error {
	if done, err := p.Exited(); done {
		return fmt.Errorf("%s exited: %w\n%s", p.Name, err, p.LogTail(2000))
	}
	code, _, err := request(http.MethodGet, "http://"+p.admin+"/readyz", "", nil)
	if err != nil {
		return err
	}
	if code != http.StatusOK {
		return fmt.Errorf("%s /readyz: %d", p.Name, code)
	}
	return nil
}

func (p *proc) metrics(t *testing.T) metricstest.Families {
	t.Helper()
	f, err := metricstest.Scrape(context.Background(), "http://"+p.admin+"/metrics")
	if err != nil {
		t.Fatalf("scrape %s: %v", p.Name, err)
	}
	return f
}

// setFaults replaces p's fault rules through its admin port.
func (p *proc) setFaults(t *testing.T, rules string) {
	t.Helper()
	method := http.MethodPut
	if rules == "" {
		method = http.MethodDelete
	}
	code, body, err := request(method, "http://"+p.admin+"/admin/faults", rules, nil)
	if err != nil || code != http.StatusOK {
		t.Fatalf("%s faults %s: %d %s %v", p.Name, rules, code, body, err)
	}
}

var client = &http.Client{Timeout: 20 * time.Second}

// request sends one request and returns status, body and headers folded into the body's caller.
func request(method, url, body string, header map[string]string) (int, string, error) {
	code, b, _, err := requestH(method, url, body, header)
	return code, b, err
}

func requestH(method, url, body string, header map[string]string) (int, string, http.Header, error) {
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	if err != nil {
		return 0, "", nil, err
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	for k, v := range header {
		req.Header.Set(k, v)
	}
	resp, err := client.Do(req)
	if err != nil {
		return 0, "", nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil && !errors.Is(err, io.EOF) {
		return 0, "", nil, err
	}
	return resp.StatusCode, string(b), resp.Header, nil
}

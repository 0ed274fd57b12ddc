package shoptest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"meshplane.dev/mesh/telemetry/metricstest"
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
	for _, name := range []string{"catalog", "payments", "orders", "gateway", "loadgen"} {
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

// syncBuffer collects a process's output for failure messages.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) tail(n int) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	b := s.b.Bytes()
	if len(b) > n {
		b = b[len(b)-n:]
	}
	return string(b)
}

// proc is a running service process.
type proc struct {
	name  string
	admin string // host:port of its admin server
	cmd   *exec.Cmd
	out   *syncBuffer
	done  chan struct{}
	err   error
}

// start runs service name with env (and nothing else from the test's environment) and stops it at
// cleanup if it still runs.
func start(t *testing.T, name string, env map[string]string) *proc {
	t.Helper()
	p := &proc{name: name, admin: env["ADMIN_ADDR"], out: &syncBuffer{}, done: make(chan struct{})}
	p.cmd = exec.Command(filepath.Join(binDir, name))
	keys := make([]string, 0, len(env))
	for k := range env {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		p.cmd.Env = append(p.cmd.Env, k+"="+env[k])
	}
	p.cmd.Stdout, p.cmd.Stderr = p.out, p.out
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	go func() { p.err = p.cmd.Wait(); close(p.done) }()
	t.Cleanup(func() {
		_ = p.stop(10 * time.Second)
		if t.Failed() {
			t.Logf("--- %s output (tail) ---\n%s", name, p.out.tail(3000))
		}
	})
	return p
}

// stop sends SIGTERM and waits up to timeout for the exit, then kills; it returns the exit error.
func (p *proc) stop(timeout time.Duration) error {
	select {
	case <-p.done:
		return p.err
	default:
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
		return p.err
	case <-time.After(timeout):
		_ = p.cmd.Process.Kill()
		<-p.done
		return fmt.Errorf("%s did not exit within %s of SIGTERM", p.name, timeout)
	}
}

func (p *proc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// ready reports nil once /readyz answers 200.
func (p *proc) ready() error {
	if p.exited() {
		return fmt.Errorf("%s exited: %w\n%s", p.name, p.err, p.out.tail(2000))
	}
	code, _, err := request(http.MethodGet, "http://"+p.admin+"/readyz", "", nil)
	if err != nil {
		return err
	}
	if code != http.StatusOK {
		return fmt.Errorf("%s /readyz: %d", p.name, code)
	}
	return nil
}

func (p *proc) metrics(t *testing.T) metricstest.Families {
	t.Helper()
	f, err := metricstest.Scrape(context.Background(), "http://"+p.admin+"/metrics")
	if err != nil {
		t.Fatalf("scrape %s: %v", p.name, err)
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
		t.Fatalf("%s faults %s: %d %s %v", p.name, rules, code, body, err)
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

// Package runtest runs a service's run function in-process for a test, the way its main does: with a
// fake environment instead of the process's, on free loopback ports, until the test cancels the context.
// It is how each service proves its wiring (settings, listeners, readiness, drain) without a build.
package runtest

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"sync"
	"testing"
	"time"

	"meshplane.dev/mesh/devkit/devserver"
	"meshplane.dev/mesh/devkit/wait"
)

// Run is a service's run function.
type Run func(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error

// Env is a fake environment: the only variables run sees.
type Env map[string]string

// Getenv is Env's os.Getenv.
func (e Env) Getenv(key string) string { return e[key] }

// Addrs returns n free loopback addresses (127.0.0.1:port), failing the test if there are none.
func Addrs(t testing.TB, n int) []string {
	t.Helper()
	ports, err := devserver.FreePorts(n)
	if err != nil {
		t.Fatal(err)
	}
	addrs := make([]string, n)
	for i, p := range ports {
		addrs[i] = "127.0.0.1:" + strconv.Itoa(p)
	}
	return addrs
}

// Process is a run function running in the background.
type Process struct {
	cancel context.CancelFunc
	done   chan struct{}
	err    error
	mu     sync.Mutex
	out    bytes.Buffer
}

// Start runs run with env and args in the background and waits until the admin server at
// env["ADMIN_ADDR"] reports ready, failing the test (with run's error or output) if it never does. The
// process is stopped when the test ends if the test has not stopped it.
func Start(t testing.TB, run Run, env Env, args ...string) *Process {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	p := &Process{cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(p.done)
		p.err = run(ctx, args, env.Getenv, p.writer(), p.writer())
	}()
	t.Cleanup(func() { _ = p.Stop() })
	wctx, wcancel := context.WithTimeout(ctx, 30*time.Second)
	defer wcancel()
	err := wait.Until(wctx, 50*time.Millisecond, func(context.Context) error {
		select {
		case <-p.done:
			return wait.Stop(fmt.Errorf("run returned before it was ready: %w", p.err))
		default:
		}
		resp, err := http.Get("http://" + env["ADMIN_ADDR"] + "/readyz")
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("/readyz: %s", resp.Status)
		}
		return nil
	})
	if err != nil {
		t.Fatalf("%v\noutput:\n%s", err, p.Output())
	}
	return p
}

// Stop cancels run's context, as SIGTERM would, and returns run's error once it has returned; it gives
// up after 30 s.
func (p *Process) Stop() error {
	p.cancel()
	select {
	case <-p.done:
		return p.err
	case <-time.After(30 * time.Second):
		return fmt.Errorf("run did not return within 30s of its context ending")
	}
}

// Output returns what run wrote to stdout and stderr so far.
func (p *Process) Output() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.out.String()
}

func (p *Process) writer() io.Writer { return lockedWriter{p} }

type lockedWriter struct{ p *Process }

func (w lockedWriter) Write(b []byte) (int, error) {
	w.p.mu.Lock()
	defer w.p.mu.Unlock()
	return w.p.out.Write(b)
}

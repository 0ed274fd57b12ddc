// Package devserver starts real Consul, Prometheus, Loki, PostgreSQL, NATS and istiod processes on loopback, each with its
// own data directory and free ports, and waits until they answer. Tests use it through devservertest;
// the local platform (`make up`) uses it directly. The binaries come from `make tools`.
package devserver

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"meshplane.dev/mesh/devkit/wait"
)

// BinDir returns the directory `make tools` installs binaries into: $MESHPLANE_BIN, else
// $MESHPLANE_CACHE/bin, else the user cache directory's meshplane/bin (as scripts/tools.sh computes it).
func BinDir() string {
	if d := os.Getenv("MESHPLANE_BIN"); d != "" {
		return d
	}
	if d := os.Getenv("MESHPLANE_CACHE"); d != "" {
		return filepath.Join(d, "bin")
	}
	d, err := os.UserCacheDir()
	if err != nil {
		d = filepath.Join(os.TempDir(), "cache")
	}
	return filepath.Join(d, "meshplane", "bin")
}

// Binary returns the path of a tool built by `make tools`, or an error that says how to build it.
// tool is the scripts/tools.sh target that builds it.
func Binary(name, tool string) (string, error) {
	p := filepath.Join(BinDir(), name)
	if _, err := os.Stat(p); err != nil {
		return "", fmt.Errorf("%s not found in %s: build it with `make tools` (or `scripts/tools.sh %s`)", name, BinDir(), tool)
	}
	return p, nil
}

// FreePorts reserves n distinct free TCP ports, free on every interface. They are chosen at random
// below the kernel's ephemeral range (ip_local_port_range), where the source port of some other
// process's outgoing connection cannot take one between this call and the server's listen — with ":0"
// that happened (a service failed with "address already in use" under a parallel test run). The
// listeners are held until all n are chosen, so the ports differ from each other.
func FreePorts(n int) ([]int, error) {
	ports := make([]int, 0, n)
	var ls []net.Listener
	defer func() {
		for _, l := range ls {
			l.Close()
		}
	}()
	lo, hi := 20000, ephemeralStart() // above the `make up` defaults and the well-known ports
	for tries := 0; len(ports) < n; tries++ {
		if tries == 100*n {
			return nil, fmt.Errorf("reserve free port: no free port in [%d, %d) after %d tries", lo, hi, tries)
		}
		l, err := net.Listen("tcp", ":"+strconv.Itoa(lo+rand.IntN(hi-lo)))
		if err != nil {
			continue // taken; try another
		}
		ls = append(ls, l)
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}

// ephemeralStart is the first port the kernel hands out as a source port (Linux's default where
// ip_local_port_range cannot be read or leaves too little room above 20000).
func ephemeralStart() int {
	if b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range"); err == nil {
		if f := strings.Fields(string(b)); len(f) == 2 {
			if v, err := strconv.Atoi(f[0]); err == nil && v > 21000 {
				return v
			}
		}
	}
	return 32768
}

// Options says where a server runs.
type Options struct {
	// Dir holds the server's data and its log file (server.log). Required.
	Dir string
	// Port is the main HTTP port; 0 picks a free one.
	Port int
	// ReadyTimeout bounds the wait for the server to answer; 0 means 60s.
	ReadyTimeout time.Duration
	// Log, when set, also receives the server's output.
	Log io.Writer
	// LogFile receives the server's output; empty means Dir/server.log.
	LogFile string
}

func (o Options) readyTimeout() time.Duration {
	if o.ReadyTimeout > 0 {
		return o.ReadyTimeout
	}
	return 60 * time.Second
}

// Server is a running server process.
type Server struct {
	// Name is the component name, e.g. "consul".
	Name string
	// Addr is host:port of the server's HTTP API.
	Addr string
	// LogPath is the file holding the server's stdout and stderr.
	LogPath string

	cmd        *exec.Cmd
	stopSignal os.Signal
	done       chan struct{}
	waitErr    error
	stop       sync.Once
	stopErr    error
}

// URL is the base URL of the server's HTTP API.
func (s *Server) URL() string { return "http://" + s.Addr }

// Port is the port of Addr.
func (s *Server) Port() int {
	_, p, _ := net.SplitHostPort(s.Addr)
	n, _ := strconv.Atoi(p)
	return n
}

// Done is closed when the process has exited.
func (s *Server) Done() <-chan struct{} { return s.done }

// Pid is the process id.
func (s *Server) Pid() int { return s.cmd.Process.Pid }

// Stop sends SIGTERM, waits up to 15s for the process to exit, then kills it. Safe to call twice. It
// returns nil however the process ended (a server stopped by a signal exits non-zero); StopWithin says how.
func (s *Server) Stop() error {
	_ = s.StopWithin(15 * time.Second)
	return nil
}

// StopWithin sends SIGTERM (or the program's StopSignal), waits up to d, then kills. It returns the exit
// error, or an error saying the process had to be killed; a later call returns the same and signals
// nothing.
func (s *Server) StopWithin(d time.Duration) error {
	s.stop.Do(func() {
		_ = s.cmd.Process.Signal(s.stopSignal)
		select {
		case <-s.done:
		case <-time.After(d):
			_ = s.cmd.Process.Kill()
			<-s.done
			s.stopErr = fmt.Errorf("%s did not exit within %s of SIGTERM", s.Name, d)
		}
	})
	if s.stopErr != nil {
		return s.stopErr
	}
	return s.waitErr
}

// Signal sends sig without waiting, for tests of what a process does while it drains.
func (s *Server) Signal(sig os.Signal) error { return s.cmd.Process.Signal(sig) }

// Exited reports whether the process has ended, and its exit error.
func (s *Server) Exited() (bool, error) {
	select {
	case <-s.done:
		return true, s.waitErr
	default:
		return false, nil
	}
}

// LogTail returns the last n bytes of the server's log, for error messages.
func (s *Server) LogTail(n int) string {
	b, err := os.ReadFile(s.LogPath)
	if err != nil {
		return ""
	}
	if len(b) > n {
		b = b[len(b)-n:]
	}
	return string(b)
}

// Program is any other process to run like the servers here: output to a log file, started once Ready
// says so, stopped by Server.Stop.
type Program struct {
	// Name is the component name, for messages.
	Name string
	// Bin is the executable's path.
	Bin  string
	Args []string
	// Env is added to this process's environment.
	Env []string
	// OnlyEnv runs the program with Env and nothing else, so a test's service cannot pick up the
	// developer's own settings (LOKI_URL, a bootstrap file) from the environment.
	OnlyEnv bool
	// Addr is the host:port the program serves.
	Addr string
	// Ready returns nil once the program serves; HTTPReady builds the usual probe. Nil does not wait.
	Ready func(context.Context) error
	// Credential, when set, runs the program as that user (PostgreSQL refuses to run as root).
	Credential *syscall.Credential
	// WorkDir is the program's working directory; empty means Options.Dir. A program run as another user
	// needs one that user may enter.
	WorkDir string
	// StopSignal is what Stop sends first; nil means SIGTERM.
	StopSignal os.Signal
}

// HTTPReady is a readiness probe that wants 200 from url.
func HTTPReady(url string) func(context.Context) error { return httpReady(url, nil) }

// Run starts p with its working directory and log in o (o.Port is not used) and waits until it is ready.
func Run(ctx context.Context, o Options, p Program) (*Server, error) {
	if o.Dir == "" {
		return nil, fmt.Errorf("start %s: Options.Dir is required", p.Name)
	}
	if err := os.MkdirAll(o.Dir, 0o755); err != nil {
		return nil, fmt.Errorf("start %s: %w", p.Name, err)
	}
	logPath := o.LogFile
	if logPath == "" {
		logPath = filepath.Join(o.Dir, "server.log")
	}
	logFile, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, fmt.Errorf("start %s: %w", p.Name, err)
	}
	var out io.Writer = logFile
	if o.Log != nil {
		out = io.MultiWriter(logFile, o.Log)
	}
	// Not CommandContext: the server outlives ctx, which only bounds the start; Stop ends it.
	cmd := exec.Command(p.Bin, p.Args...)
	cmd.Dir = o.Dir
	if p.WorkDir != "" {
		cmd.Dir = p.WorkDir
	}
	switch {
	case p.OnlyEnv:
		cmd.Env = append([]string{}, p.Env...)
	case len(p.Env) > 0:
		cmd.Env = append(os.Environ(), p.Env...)
	}
	cmd.Stdout = out
	cmd.Stderr = out
	// Own process group, so a Ctrl-C meant for the parent reaches the server only through Stop.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL, Credential: p.Credential}
	if err := cmd.Start(); err != nil {
		logFile.Close()
		return nil, fmt.Errorf("start %s: %w", p.Name, err)
	}
	stopSignal := p.StopSignal
	if stopSignal == nil {
		stopSignal = syscall.SIGTERM
	}
	s := &Server{Name: p.Name, Addr: p.Addr, LogPath: logPath, cmd: cmd, stopSignal: stopSignal, done: make(chan struct{})}
	go func() {
		s.waitErr = cmd.Wait()
		logFile.Close()
		close(s.done)
	}()

	if p.Ready == nil {
		return s, nil
	}
	ctx, cancel := context.WithTimeout(ctx, o.readyTimeout())
	defer cancel()
	// A process that exits while starting will never be ready: stop waiting at once.
	ctx, exited := context.WithCancelCause(ctx)
	defer exited(nil)
	go func() {
		select {
		case <-s.done:
			exited(errors.New("process exited before it was ready"))
		case <-ctx.Done():
		}
	}()
	if err := wait.Until(ctx, 100*time.Millisecond, p.Ready); err != nil {
		_ = s.Stop()
		return nil, fmt.Errorf("start %s on %s: %w\n--- %s log tail ---\n%s", p.Name, p.Addr, err, p.Name, s.LogTail(3000))
	}
	return s, nil
}

// httpReady returns a readiness probe that wants a 200 from url, and, if want is non-empty, a body
// containing it.
func httpReady(url string, want func(body []byte) bool) func(context.Context) error {
	client := &http.Client{Timeout: 2 * time.Second}
	return func(ctx context.Context) error {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if err != nil {
			return err
		}
		resp, err := client.Do(req)
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("GET %s: %s: %s", url, resp.Status, bytes.TrimSpace(body))
		}
		if want != nil && !want(body) {
			return fmt.Errorf("GET %s: not ready: %s", url, bytes.TrimSpace(body))
		}
		return nil
	}
}

func hostPort(port int) string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(port)) }

// ports fills in o.Port and returns it plus extra free ports.
func ports(o *Options, extra int) ([]int, error) {
	need := extra
	if o.Port == 0 {
		need++
	}
	p, err := FreePorts(need)
	if err != nil {
		return nil, err
	}
	if o.Port == 0 {
		o.Port, p = p[0], p[1:]
	}
	return p, nil
}

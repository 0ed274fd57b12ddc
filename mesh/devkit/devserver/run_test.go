package devserver_test

import (
	"errors"
	"net"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"meshplane.dev/mesh/devkit/devserver"
	"meshplane.dev/mesh/devkit/devservertest"
	"meshplane.dev/mesh/devkit/wait"
)

// A test's service must see only the environment the test gives it: a developer's LOKI_URL or
// bootstrap file would otherwise change what the test measures.
func TestRunOnlyEnv(t *testing.T) {
	t.Setenv("MESHPLANE_RUN_TEST_LEAK", "1")
	for _, only := range []bool{true, false} {
		p := devservertest.Run(t, devserver.Program{Name: "env", Bin: "/usr/bin/env", Env: []string{"WANTED=1"}, OnlyEnv: only})
		select {
		case <-p.Done():
		case <-time.After(30 * time.Second):
			t.Fatal("env did not exit")
		}
		if done, err := p.Exited(); !done || err != nil {
			t.Fatalf("env: exited %v, %v; want a clean exit", done, err)
		}
		out := p.LogTail(1 << 20)
		if !strings.Contains(out, "WANTED=1\n") {
			t.Errorf("OnlyEnv=%v: the program's environment lacks WANTED=1:\n%s", only, out)
		}
		if leaked := strings.Contains(out, "MESHPLANE_RUN_TEST_LEAK=1"); leaked == only {
			t.Errorf("OnlyEnv=%v: the test's own variable reached the program: %v", only, leaked)
		}
	}
}

// StopWithin reports how the process ended, so a test of graceful drain can tell exit 0 from a kill.
func TestStopWithinReportsExit(t *testing.T) {
	// The shell runs its trap once the sleep in progress ends: on a loaded machine that can take a while,
	// so the processes that exit get a long window, and only the one that never exits a short one.
	for _, c := range []struct {
		script string
		within time.Duration
		want   string
	}{
		{"trap 'exit 0' TERM; echo trapped; while :; do sleep 0.05; done", 20 * time.Second, ""},
		{"trap 'exit 3' TERM; echo trapped; while :; do sleep 0.05; done", 20 * time.Second, "exit status 3"},
		{"trap '' TERM; echo trapped; while :; do sleep 0.05; done", 300 * time.Millisecond, "did not exit within 300ms"},
	} {
		p := devservertest.Run(t, devserver.Program{Name: "sh", Bin: "/bin/sh", Args: []string{"-c", c.script}})
		// Before the trap is set, SIGTERM would end the shell at once.
		wait.For(t, 10*time.Second, func() error {
			if !strings.Contains(p.LogTail(100), "trapped") {
				return errors.New("the shell has not set its trap yet")
			}
			return nil
		})
		err := p.StopWithin(c.within)
		if c.want == "" && err != nil || c.want != "" && (err == nil || !strings.Contains(err.Error(), c.want)) {
			t.Errorf("%q: StopWithin = %v, want %q", c.script, err, c.want)
		}
		if again := p.StopWithin(time.Millisecond); (again == nil) != (err == nil) {
			t.Errorf("%q: a second StopWithin = %v, want the first's %v", c.script, again, err)
		}
	}
}

// Ports from FreePorts must stay out of the kernel's ephemeral range, where any outgoing connection's
// source port could take one before the server listens.
func TestFreePortsBelowEphemeralRange(t *testing.T) {
	b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range")
	if err != nil {
		t.Fatal(err)
	}
	ephemeral, err := strconv.Atoi(strings.Fields(string(b))[0])
	if err != nil {
		t.Fatal(err)
	}
	ports, err := devserver.FreePorts(50)
	if err != nil {
		t.Fatal(err)
	}
	seen := map[int]bool{}
	for _, p := range ports {
		if p >= ephemeral || seen[p] {
			t.Errorf("port %d: want distinct ports below the ephemeral range (from %d)", p, ephemeral)
		}
		seen[p] = true
		l, err := net.Listen("tcp", ":"+strconv.Itoa(p))
		if err != nil {
			t.Errorf("port %d is not free on every interface: %v", p, err)
			continue
		}
		l.Close()
	}
}

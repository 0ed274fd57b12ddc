package events_test

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"meshplane.dev/mesh/devkit/devserver"
	"meshplane.dev/mesh/devkit/metricstest"
	"meshplane.dev/mesh/devkit/wait"
	"meshplane.dev/mesh/events"
)

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// A service starts while the broker is down and carries on: the connection comes up by itself once the
// broker runs, goes down with it and comes back again, and the gauge and the log say so each time.
func TestConnectRidesOutTheBroker(t *testing.T) {
	ports, err := devserver.FreePorts(1)
	if err != nil {
		t.Fatal(err)
	}
	var logs syncBuffer
	reg := prometheus.NewRegistry()
	cfg := events.Config{NATSURL: fmt.Sprintf("nats://127.0.0.1:%d", ports[0]), NATSReconnectWait: 100 * time.Millisecond}
	nc, err := events.Connect("test", cfg, slog.New(slog.NewJSONHandler(&logs, nil)), reg)
	if err != nil {
		t.Fatalf("connect with the broker down: %v, want a connection that keeps trying", err)
	}
	defer nc.Close()
	connectedIs := func(want float64) func() error {
		return func() error {
			f, err := metricstest.Gather(reg)
			if err != nil {
				return err
			}
			if got := f.Value(events.MetricConnected, nil); got != want {
				return fmt.Errorf("%s: %v, want %v", events.MetricConnected, got, want)
			}
			return nil
		}
	}
	wait.For(t, time.Second, connectedIs(0))

	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	n, err := devserver.StartNATS(ctx, devserver.Options{Dir: t.TempDir(), Port: ports[0]}, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = n.Stop() }()
	wait.For(t, 10*time.Second, connectedIs(1))
	if err := n.StopWithin(10 * time.Second); err != nil {
		t.Fatal(err)
	}
	wait.For(t, 10*time.Second, connectedIs(0))
	if err := n.Start(ctx); err != nil {
		t.Fatal(err)
	}
	wait.For(t, 10*time.Second, connectedIs(1))
	for _, want := range []string{"event broker unreachable at start", "event broker disconnected", "event broker reconnected"} {
		if !strings.Contains(logs.String(), want) {
			t.Errorf("log lacks %q:\n%s", want, logs.String())
		}
	}
}

func TestConfigValidateNamesTheSetting(t *testing.T) {
	for _, c := range []struct {
		cfg  events.Config
		want string
	}{
		{events.Config{NATSURL: "", NATSReconnectWait: time.Second}, "NATS_URL"},
		{events.Config{NATSURL: "http://127.0.0.1:4222", NATSReconnectWait: time.Second}, "NATS_URL"},
		{events.Config{NATSURL: "nats://127.0.0.1:4222"}, "NATS_RECONNECT_WAIT"},
	} {
		if err := c.cfg.Validate(); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%+v: got %v, want an error naming %s", c.cfg, err, c.want)
		}
	}
	if err := events.DefaultConfig().Validate(); err != nil {
		t.Errorf("defaults: %v", err)
	}
}

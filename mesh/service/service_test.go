package service_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"meshplane.dev/mesh/devkit/wait"
	"meshplane.dev/mesh/proxyless"
	"meshplane.dev/mesh/service"
)

func get(url string) (int, error) {
	resp, err := http.Get(url)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, resp.Body)
	return resp.StatusCode, nil
}

func TestServeDrainsReadinessFirstThenFinishesInFlight(t *testing.T) {
	cfg := service.DefaultConfig("127.0.0.1:0")
	rt, err := service.Start("demo", cfg, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	defer rt.Close()
	lis, err := service.Listen("http", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	started, release := make(chan struct{}), make(chan struct{})
	mux := http.NewServeMux()
	mux.HandleFunc("GET /slow", func(w http.ResponseWriter, _ *http.Request) {
		close(started)
		<-release
		_, _ = io.WriteString(w, "done")
	})
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() {
		served <- rt.Serve(ctx, service.Traffic{Server: service.HTTPServer{Server: &http.Server{Handler: mux, ReadHeaderTimeout: time.Second}}, Listener: lis})
	}()
	admin := "http://" + rt.AdminAddr()
	wait.For(t, 5*time.Second, func() error {
		if code, err := get(admin + "/readyz"); err != nil || code != 200 {
			return fmt.Errorf("readyz: %d %w", code, err)
		}
		return nil
	})

	slow := make(chan string, 1)
	go func() {
		resp, err := http.Get("http://" + lis.Addr().String() + "/slow")
		if err != nil {
			slow <- err.Error()
			return
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		slow <- fmt.Sprint(resp.StatusCode, " ", string(b))
	}()
	<-started
	cancel()
	wait.For(t, 5*time.Second, func() error {
		code, err := get(admin + "/readyz")
		if err != nil || code != http.StatusServiceUnavailable {
			return fmt.Errorf("readyz while draining: %d %w", code, err)
		}
		return nil
	})
	select {
	case got := <-slow:
		t.Fatalf("in-flight request ended before it was released: %s", got)
	default:
	}
	close(release)
	if got := <-slow; got != "200 done" {
		t.Errorf("in-flight request: got %q want 200 done", got)
	}
	if err := <-served; err != nil {
		t.Errorf("Serve: got %v, want nil after a clean drain", err)
	}
}

func TestStartFailsNamingATakenPort(t *testing.T) {
	lis, err := service.Listen("taken", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer lis.Close()
	_, err = service.Start("demo", service.DefaultConfig(lis.Addr().String()), io.Discard)
	if err == nil || !strings.Contains(err.Error(), "admin listener on "+lis.Addr().String()) {
		t.Errorf("got %v, want an error naming the admin listener and its address", err)
	}
}

func TestValidTarget(t *testing.T) {
	for target, ok := range map[string]bool{
		"consul:///payments": true, "dns:///payments.shop.svc.cluster.local:9030": true,
		"xds:///payments.shop.svc.cluster.local:9030": true, "127.0.0.1:9030": true, "localhost:9030": true,
		"": false, "http://payments": false, "payments": false,
	} {
		if err := service.ValidTarget("PAYMENTS_TARGET", target); (err == nil) != ok {
			t.Errorf("ValidTarget(%q): got %v, want ok=%v", target, err, ok)
		}
		if err := service.ValidTarget("PAYMENTS_TARGET", target); err != nil && !strings.Contains(err.Error(), "PAYMENTS_TARGET") {
			t.Errorf("error %v does not name the setting", err)
		}
	}
}

// xds:/// targets and the xDS server need the bootstrap gRPC reads; without one the service says so at
// start instead of failing its first call through the mesh.
func TestXDSNeedsABootstrap(t *testing.T) {
	cfg := service.DefaultConfig("127.0.0.1:0")
	cfg.XDSBootstrap = filepath.Join(t.TempDir(), "missing.json")
	if _, err := service.Start("demo", cfg, io.Discard); err == nil || !strings.Contains(err.Error(), "GRPC_XDS_BOOTSTRAP") {
		t.Errorf("missing bootstrap file: got %v, want an error naming GRPC_XDS_BOOTSTRAP", err)
	}

	rt, err := service.Start("demo", service.DefaultConfig("127.0.0.1:0"), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	defer rt.Close()
	if _, err := rt.NewGRPCServer(service.GRPCServerConfig{XDSServer: true}); err == nil || !strings.Contains(err.Error(), "GRPC_XDS_BOOTSTRAP") {
		t.Errorf("XDS_SERVER without a bootstrap: got %v, want an error naming GRPC_XDS_BOOTSTRAP", err)
	}
	_, err = rt.Dial("payments", "xds:///payments.shop.svc.cluster.local:9030", service.DefaultClientConfig())
	if err == nil || !strings.Contains(err.Error(), "GRPC_XDS_BOOTSTRAP") || !strings.Contains(err.Error(), "payments") {
		t.Errorf("xds target without a bootstrap: got %v, want an error naming the dependency and GRPC_XDS_BOOTSTRAP", err)
	}
}

// An xDS server that has not received its listener from istiod refuses every call, so the process is not
// ready: /readyz says what it waits for, while the plain admin server answers.
func TestXDSServerNotReadyWithoutItsListener(t *testing.T) {
	bootstrap := os.Getenv(proxyless.BootstrapEnv)
	if bootstrap == "" {
		// gRPC reads the bootstrap's variable once, when the process starts: run this test again in a
		// process of its own that has it, pointing at an xDS server nobody answers at.
		dead, err := service.Listen("dead xds", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		deadAddr := dead.Addr().String()
		dead.Close()
		bootstrap = filepath.Join(t.TempDir(), "bootstrap.json")
		node := proxyless.Node{Name: "demo-v1", Namespace: "shop", IP: "127.0.0.1", ServiceAccount: "demo"}
		if err := (proxyless.Bootstrap{Node: node, XDSAddr: deadAddr}).Write(bootstrap); err != nil {
			t.Fatal(err)
		}
		cmd := exec.Command(os.Args[0], "-test.run=^"+t.Name()+"$", "-test.v")
		cmd.Env = append(os.Environ(), proxyless.BootstrapEnv+"="+bootstrap)
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("%s in its own process: %v\n%s", t.Name(), err, out)
		}
		return
	}
	cfg := service.DefaultConfig("127.0.0.1:0")
	cfg.XDSBootstrap = bootstrap
	rt, err := service.Start("demo", cfg, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	defer rt.Close()
	srv, err := rt.NewGRPCServer(service.GRPCServerConfig{XDSServer: true})
	if err != nil {
		t.Fatal(err)
	}
	lis, err := service.Listen("grpc", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- rt.Serve(ctx, service.Traffic{Server: service.GRPC(srv), Listener: lis}) }()
	defer func() { cancel(); <-served }()

	admin := "http://" + rt.AdminAddr()
	var body string
	wait.For(t, 5*time.Second, func() error {
		resp, err := http.Get(admin + "/readyz")
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		if body = string(b); resp.StatusCode != http.StatusServiceUnavailable {
			return fmt.Errorf("readyz: %s %s", resp.Status, body)
		}
		return nil
	})
	if !strings.Contains(body, "xds-listener") {
		t.Errorf("readyz says %q, want it to name the xds listener it waits for", body)
	}
	if code, err := get(admin + "/readyz?exclude=xds-listener"); err != nil || code != http.StatusOK {
		t.Errorf("readyz?exclude=xds-listener: %d %v, want 200: nothing else is missing", code, err)
	}
}

// Package controlplane runs a real Kubernetes control plane on this machine: kube-apiserver and etcd
// (started through controller-runtime's envtest, binaries from `make tools`) with Meshplane's CRDs and
// Istio's own CRD schemas installed, and optionally a real kube-controller-manager for garbage collection.
// `meshplane up` runs one as the local platform's API server; tests start one per package through
// operator/test/envtest.
package controlplane

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	networkingv1 "istio.io/client-go/pkg/apis/networking/v1"
	securityv1 "istio.io/client-go/pkg/apis/security/v1"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	"k8s.io/apimachinery/pkg/runtime"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"

	"meshplane.dev/mesh/devkit/devserver"
	"meshplane.dev/operator/api/v1alpha1"
)

// Options selects what runs beside the apiserver.
type Options struct {
	// GarbageCollector also runs kube-controller-manager with the garbage-collector and namespace
	// controllers, so owner references and namespace deletion behave as in a cluster.
	GarbageCollector bool
	// Dir holds the kubeconfig and logs; empty means a new temporary directory removed by Stop.
	Dir string
	// ExtraAPIServerArgs are appended to the apiserver's flags.
	ExtraAPIServerArgs map[string]string
	// APIServerPort is the apiserver's port on 127.0.0.1; 0 picks a free one.
	APIServerPort int
}

// Env is a running control plane.
type Env struct {
	// Config reaches the apiserver as cluster admin.
	Config *rest.Config
	// Client is a controller-runtime client with Scheme.
	Client client.Client
	// Scheme knows the built-in kinds, Istio's networking and security v1 kinds, and CRDs.
	Scheme *runtime.Scheme
	// Kubeconfig is the path of an admin kubeconfig file, for kubectl and other processes.
	Kubeconfig string
	// Dir holds the kubeconfig and the logs.
	Dir string
	// APIServerLog, EtcdLog and ControllerManagerLog are the paths of the components' output in Dir
	// (ControllerManagerLog only with Options.GarbageCollector).
	APIServerLog, EtcdLog, ControllerManagerLog string

	env     *envtest.Environment
	logs    []*os.File
	kcm     *exec.Cmd
	kcmDone chan struct{}
	tempDir bool
}

// NewScheme returns a scheme with the built-in kinds, Istio's networking/security v1, CRDs and
// Meshplane's TrafficPolicy.
func NewScheme() *runtime.Scheme {
	s := runtime.NewScheme()
	utilruntime.Must(clientgoscheme.AddToScheme(s))
	utilruntime.Must(apiextensionsv1.AddToScheme(s))
	utilruntime.Must(networkingv1.AddToScheme(s))
	utilruntime.Must(securityv1.AddToScheme(s))
	utilruntime.Must(v1alpha1.AddToScheme(s))
	return s
}

// Start starts etcd and kube-apiserver, installs the CRDs and, if asked, the controller-manager.
func Start(o Options) (*Env, error) {
	bin := devserver.BinDir()
	for _, name := range []string{"kube-apiserver", "etcd", "kubectl"} {
		if _, err := devserver.Binary(name, "kube"); err != nil {
			return nil, err
		}
	}
	crds, err := CRDPaths()
	if err != nil {
		return nil, err
	}
	e := &Env{Scheme: NewScheme(), Dir: o.Dir}
	if e.Dir == "" {
		if e.Dir, err = os.MkdirTemp("", "meshplane-envtest-"); err != nil {
			return nil, err
		}
		e.tempDir = true
	} else if err := os.MkdirAll(e.Dir, 0o755); err != nil {
		return nil, err
	}
	e.env = &envtest.Environment{
		BinaryAssetsDirectory: bin,
		Scheme:                e.Scheme,
		CRDInstallOptions:     envtest.CRDInstallOptions{Paths: crds, ErrorIfPathMissing: true},
		// Istio's CRD file alone holds ~15 CRDs; a cold etcd on 2 cores can take a while.
		ControlPlaneStartTimeout: 2 * time.Minute,
		ControlPlaneStopTimeout:  time.Minute,
	}
	e.env.ControlPlane.KubectlPath = filepath.Join(bin, "kubectl")
	api := e.env.ControlPlane.GetAPIServer()
	if o.APIServerPort != 0 {
		api.Address = "127.0.0.1"
		api.Port = strconv.Itoa(o.APIServerPort)
	}
	for k, v := range o.ExtraAPIServerArgs {
		api.Configure().Set(strings.TrimPrefix(k, "--"), v)
	}
	// envtest discards its processes' output; a user of the local platform reads it when something fails.
	e.APIServerLog, e.EtcdLog = filepath.Join(e.Dir, "kube-apiserver.log"), filepath.Join(e.Dir, "etcd.log")
	apiLog, err := e.createLog(e.APIServerLog)
	if err != nil {
		return nil, err
	}
	etcdLog, err := e.createLog(e.EtcdLog)
	if err != nil {
		return nil, err
	}
	api.Out, api.Err = apiLog, apiLog
	if e.env.ControlPlane.Etcd == nil {
		e.env.ControlPlane.Etcd = &envtest.Etcd{}
	}
	e.env.ControlPlane.Etcd.Out, e.env.ControlPlane.Etcd.Err = etcdLog, etcdLog
	if e.Config, err = e.env.Start(); err != nil {
		_ = e.Stop()
		return nil, fmt.Errorf("start envtest (binaries in %s): %w", bin, err)
	}
	e.Kubeconfig = filepath.Join(e.Dir, "kubeconfig")
	if err := os.WriteFile(e.Kubeconfig, e.env.KubeConfig, 0o600); err != nil {
		_ = e.Stop()
		return nil, err
	}
	if e.Client, err = client.New(e.Config, client.Options{Scheme: e.Scheme}); err != nil {
		_ = e.Stop()
		return nil, err
	}
	if o.GarbageCollector {
		if err := e.startControllerManager(); err != nil {
			_ = e.Stop()
			return nil, err
		}
	}
	return e, nil
}

// startControllerManager runs only the controllers a test needs from a cluster: the garbage collector
// (owner references) and the namespace controller (namespace deletion finishes).
func (e *Env) startControllerManager() error {
	bin, err := devserver.Binary("kube-controller-manager", "kube")
	if err != nil {
		return err
	}
	e.ControllerManagerLog = filepath.Join(e.Dir, "kube-controller-manager.log")
	log, err := os.Create(e.ControllerManagerLog)
	if err != nil {
		return err
	}
	e.kcm = exec.Command(bin,
		"--kubeconfig="+e.Kubeconfig,
		"--controllers=garbagecollector,namespace",
		"--leader-elect=false",
		"--secure-port=0",
		"--concurrent-gc-syncs=5",
		"-v=1",
	)
	e.kcm.Stdout, e.kcm.Stderr = log, log
	e.kcm.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := e.kcm.Start(); err != nil {
		log.Close()
		return fmt.Errorf("start kube-controller-manager: %w", err)
	}
	e.kcmDone = make(chan struct{})
	go func() {
		_ = e.kcm.Wait()
		log.Close()
		close(e.kcmDone)
	}()
	return nil
}

// Stop stops the controller-manager, the apiserver and etcd, and removes a temporary Dir.
func (e *Env) Stop() error {
	var errs []error
	if e.kcm != nil && e.kcm.Process != nil {
		_ = e.kcm.Process.Signal(syscall.SIGTERM)
		select {
		case <-e.kcmDone:
		case <-time.After(10 * time.Second):
			_ = e.kcm.Process.Kill()
			<-e.kcmDone
		}
	}
	if e.env != nil {
		errs = append(errs, e.env.Stop())
	}
	for _, f := range e.logs {
		_ = f.Close()
	}
	if e.tempDir {
		errs = append(errs, os.RemoveAll(e.Dir))
	}
	return errors.Join(errs...)
}

func (e *Env) createLog(path string) (*os.File, error) {
	f, err := os.Create(path)
	if err != nil {
		_ = e.Stop()
		return nil, err
	}
	e.logs = append(e.logs, f)
	return f, nil
}

// ControllerManagerPID is the kube-controller-manager's process id, 0 when it does not run.
func (e *Env) ControllerManagerPID() int {
	if e.kcm == nil || e.kcm.Process == nil {
		return 0
	}
	return e.kcm.Process.Pid
}

// Kubectl runs the kubectl matching the apiserver against this environment and returns stdout, or an
// error carrying stderr.
func (e *Env) Kubectl(ctx context.Context, stdin io.Reader, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, filepath.Join(devserver.BinDir(), "kubectl"), append([]string{"--kubeconfig=" + e.Kubeconfig}, args...)...)
	cmd.Stdin = stdin
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return stdout.String(), fmt.Errorf("kubectl %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
	}
	return stdout.String(), nil
}

// CRDPaths returns the CRD files to install: Meshplane's generated CRDs (config/crd/bases, if generated
// yet) and Istio's CRDs from the istio.io/api module the operator builds against.
func CRDPaths() ([]string, error) {
	root, err := ModuleRoot()
	if err != nil {
		return nil, err
	}
	var paths []string
	ours := filepath.Join(root, "config", "crd", "bases")
	if _, err := os.Stat(ours); err == nil {
		paths = append(paths, ours)
	}
	istio, err := IstioCRDFile()
	if err != nil {
		return nil, err
	}
	return append(paths, istio), nil
}

// IstioCRDFile returns the path of customresourcedefinitions.gen.yaml in the istio.io/api module the
// operator module requires, so the schemas always match the Go types.
func IstioCRDFile() (string, error) {
	root, err := ModuleRoot()
	if err != nil {
		return "", err
	}
	cmd := exec.Command("go", "list", "-m", "-f", "{{.Dir}}", "istio.io/api")
	cmd.Dir = root
	out, err := cmd.Output()
	if err != nil {
		return "", fmt.Errorf("locate istio.io/api module: %w", err)
	}
	p := filepath.Join(strings.TrimSpace(string(out)), "kubernetes", "customresourcedefinitions.gen.yaml")
	if _, err := os.Stat(p); err != nil {
		return "", fmt.Errorf("istio CRDs: %w", err)
	}
	return p, nil
}

// ModuleRoot returns the operator module's directory, found by walking up from the working directory.
func ModuleRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if b, err := os.ReadFile(filepath.Join(dir, "go.mod")); err == nil && bytes.HasPrefix(b, []byte("module meshplane.dev/operator\n")) {
			return dir, nil
		}
		if b, err := os.ReadFile(filepath.Join(dir, "go.work")); err == nil && len(b) > 0 {
			// The repository root: the operator module is below it.
			return filepath.Join(dir, "operator"), nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("operator module not found above the working directory")
		}
		dir = parent
	}
}

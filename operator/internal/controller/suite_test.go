package controller_test

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/protobuf/proto"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/selection"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	"meshplane.dev/mesh/devkit/wait"
	"meshplane.dev/operator/api/v1alpha1"
	"meshplane.dev/operator/internal/controller"
	"meshplane.dev/operator/internal/desiredstate"
	"meshplane.dev/operator/test/envtest"
)

var (
	env      *envtest.Env
	k8s      client.Client
	metrics  *controller.Metrics
	registry = prometheus.NewRegistry()
	logs     syncBuffer
)

// syncBuffer collects the manager's log; a failing test prints it.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// TestMain runs one API server with our CRD and Istio's, a real kube-controller-manager (garbage
// collection: deleting a policy must really delete what it owns) and the operator's manager in-process,
// with both its controllers: one reconcile per policy, and the call-graph check of all of them.
func TestMain(m *testing.M) {
	env = envtest.MustStart(envtest.Options{GarbageCollector: true})
	utilruntime.Must(v1alpha1.AddToScheme(env.Scheme))
	k8s = env.Client
	ctx, cancel := context.WithCancel(context.Background())
	logger := zap.New(zap.WriteTo(&logs))
	ctrl.SetLogger(logger)
	prom = newRecordedTraffic()
	mgr, err := ctrl.NewManager(env.Config, ctrl.Options{
		Scheme:                 env.Scheme,
		Logger:                 logger,
		Metrics:                metricsserver.Options{BindAddress: "0"},
		HealthProbeBindAddress: "0",
		// Policies a test runs its own manager for are not this one's (canary_test.go).
		Cache: cache.Options{ByObject: map[client.Object]cache.ByObject{
			&v1alpha1.TrafficPolicy{}: {Label: labels.NewSelector().Add(*mustRequirement(ownManagerLabel, selection.DoesNotExist))},
		}},
	})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	metrics = controller.NewMetrics(mgr.GetClient())
	utilruntime.Must(metrics.Register(registry))
	callGraphConditions := controller.NewCallGraphConditions()
	r := &controller.TrafficPolicyReconciler{
		Client:    mgr.GetClient(),
		APIReader: mgr.GetAPIReader(),
		Scheme:    mgr.GetScheme(),
		Recorder:  mgr.GetEventRecorder("meshplane"),
		Defaults:  desiredstate.PlatformDefaults(),
		Metrics:   metrics,
		// The canary checks measure the traffic each test sets (canary_test.go).
		CanaryMetrics: prom,
		CallGraph:     callGraphConditions,
	}
	if err := r.SetupWithManager(ctx, mgr); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	check := &controller.CallGraphReconciler{
		Client: mgr.GetClient(), Recorder: mgr.GetEventRecorder("meshplane"), Defaults: desiredstate.PlatformDefaults(), Metrics: metrics,
		Conditions: callGraphConditions,
	}
	if err := check.SetupWithManager(mgr); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	done := make(chan error, 1)
	go func() { done <- mgr.Start(ctx) }()

	code := m.Run()
	cancel()
	if err := <-done; err != nil {
		fmt.Fprintln(os.Stderr, "manager:", err)
		code = 1
	}
	if err := env.Stop(); err != nil {
		code = 1
	}
	os.Exit(code)
}

// namespace creates a namespace for the test and prints the manager's log if the test fails.
func namespace(t *testing.T) string {
	t.Helper()
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("manager log:\n%s", logs.String())
		}
	})
	return envtest.Namespace(t, env)
}

func create(t *testing.T, objs ...client.Object) {
	t.Helper()
	for _, obj := range objs {
		if err := k8s.Create(context.Background(), obj); err != nil {
			t.Fatalf("create %T %s: %v", obj, obj.GetName(), err)
		}
	}
}

// update re-reads a policy and changes it, retrying on conflicts with the operator's status writes.
func update(t *testing.T, p *v1alpha1.TrafficPolicy, change func(*v1alpha1.TrafficPolicy)) {
	t.Helper()
	wait.For(t, 10*time.Second, func() error {
		if err := k8s.Get(context.Background(), client.ObjectKeyFromObject(p), p); err != nil {
			return err
		}
		change(p)
		return k8s.Update(context.Background(), p)
	})
}

func get(t *testing.T, p *v1alpha1.TrafficPolicy) *v1alpha1.TrafficPolicy {
	t.Helper()
	out := &v1alpha1.TrafficPolicy{}
	if err := k8s.Get(context.Background(), client.ObjectKeyFromObject(p), out); err != nil {
		t.Fatal(err)
	}
	return out
}

// condition returns an error unless the policy's current generation has condition typ with status and
// reason.
func condition(p *v1alpha1.TrafficPolicy, typ string, status metav1.ConditionStatus, reason string) error {
	live := &v1alpha1.TrafficPolicy{}
	if err := k8s.Get(context.Background(), client.ObjectKeyFromObject(p), live); err != nil {
		return err
	}
	c := meta.FindStatusCondition(live.Status.Conditions, typ)
	switch {
	case live.Status.ObservedGeneration != live.Generation:
		return fmt.Errorf("observedGeneration %d, generation %d", live.Status.ObservedGeneration, live.Generation)
	case c == nil:
		return fmt.Errorf("no %s condition in %+v", typ, live.Status.Conditions)
	case c.Status != status || c.Reason != reason:
		return fmt.Errorf("%s=%s (%s: %s), want %s (%s)", typ, c.Status, c.Reason, c.Message, status, reason)
	}
	return nil
}

// inSync returns nil once the cluster holds exactly the objects desiredstate.Build wants for the
// policy as it is now (same specs, controlled by it) and none of the kinds it does not want, and the
// policy is Ready for its current generation.
func inSync(p *v1alpha1.TrafficPolicy) error {
	ctx := context.Background()
	live := &v1alpha1.TrafficPolicy{}
	if err := k8s.Get(ctx, client.ObjectKeyFromObject(p), live); err != nil {
		return err
	}
	svc := &corev1.Service{}
	if err := k8s.Get(ctx, client.ObjectKey{Namespace: live.Namespace, Name: live.Spec.TargetRef.Name}, svc); err != nil {
		return err
	}
	want, err := desiredstate.Build(live, svc, desiredstate.PlatformDefaults())
	if err != nil {
		return err
	}
	wanted := map[string]client.Object{}
	for _, obj := range want.Objects() {
		wanted[obj.GetObjectKind().GroupVersionKind().Kind] = obj
	}
	for _, kind := range desiredstate.Kinds {
		got := desiredstate.New(kind)
		err := k8s.Get(ctx, client.ObjectKeyFromObject(live), got)
		w := wanted[kind]
		switch {
		case w == nil && apierrors.IsNotFound(err):
		case w == nil && err == nil:
			return fmt.Errorf("%s %s still exists", kind, live.Name)
		case err != nil:
			return fmt.Errorf("%s: %w", kind, err)
		case !metav1.IsControlledBy(got, live):
			return fmt.Errorf("%s %s is not controlled by the policy: %v", kind, live.Name, got.GetOwnerReferences())
		case !proto.Equal(desiredstate.Spec(got), desiredstate.Spec(w)):
			return fmt.Errorf("%s spec\n got %v\nwant %v", kind, desiredstate.Spec(got), desiredstate.Spec(w))
		}
	}
	return condition(live, v1alpha1.ConditionReady, metav1.ConditionTrue, v1alpha1.ReasonApplied)
}

package localplatform

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"meshplane.dev/mesh/devkit/devserver"
	"meshplane.dev/mesh/devkit/wait"
	"meshplane.dev/mesh/proxyless"
	"meshplane.dev/operator/api/v1alpha1"
	"meshplane.dev/operator/localplatform/workload"
)

// shopService is one of the shop's services: a Kubernetes Service and the processes behind it.
type shopService struct {
	name string
	// proto is the traffic port's protocol: grpc or http (the Istio port-name prefix).
	proto string
	// calls are the gRPC services it calls, each configured by its <NAME>_TARGET setting.
	calls []string
	// listen is the setting that takes the traffic port's listen address.
	listen string
	// versions are its instances' version labels; each but the first has its own ports, keyed
	// <name>-<version> (catalog-v2, catalog-v2-admin).
	versions []string
	// replicas is the number of instances of each version (0 means 1); each but the first has its own
	// ports, keyed <name>[-<version>]-<n> (orders-2, orders-2-admin).
	replicas int
	// database is the PostgreSQL database the service keeps its state in, if any.
	database string
	// events is set for a service that publishes or consumes events: it gets NATS_URL.
	events bool
	// env of an instance beyond the common settings, by version.
	env map[string][]string
}

// shop lists the services in dependency order: each starts after what it calls. catalog and payments
// run a second version, so canary splits and per-instance scenarios have somewhere to go, as the
// cluster's canary-catalog-v2 component does for catalog (v2 without the read cache). orders runs two
// replicas, so a retried order really can land on another process; it, payments and fulfillment keep
// their state in PostgreSQL, shared by their instances. orders relays its events to NATS from its
// outbox; fulfillment's two replicas consume them.
var shop = []shopService{
	{name: "catalog", proto: "grpc", listen: "GRPC_ADDR", versions: []string{"v1", "v2"},
		env: map[string][]string{"v2": {"CACHE_TTL=0"}}},
	{name: "payments", proto: "grpc", listen: "GRPC_ADDR", versions: []string{"v1", "v2"}, database: "payments"},
	{name: "orders", proto: "grpc", listen: "GRPC_ADDR", versions: []string{"v1"}, replicas: 2, database: "orders",
		calls: []string{"catalog", "payments"}, events: true},
	// Two replicas share one durable consumer; a short ack wait, so the drill sees a killed replica's
	// events delivered again within seconds (30s in a cluster).
	{name: "fulfillment", proto: "grpc", listen: "GRPC_ADDR", versions: []string{"v1"}, replicas: 2, database: "fulfillment",
		events: true, env: map[string][]string{"v1": {"CONSUMER_ACK_WAIT=5s", "CONSUMER_LAG_INTERVAL=1s"}}},
	{name: "gateway", proto: "http", listen: "HTTP_ADDR", versions: []string{"v1"}, calls: []string{"catalog", "orders", "fulfillment"}},
}

// shopInstance is one process of a shop service.
type shopInstance struct {
	svc     shopService
	version string
	// key names the component and its ports: catalog (the first version), catalog-v2, orders-2 (the
	// second replica), ...
	key string
	// replica is the instance's number within its version, from 1.
	replica int
	// meshIP is the address its WorkloadEntry carries: istiod tells instances apart by address, so
	// each gets its own on the loopback interface (Linux routes all of 127/8 there).
	meshIP string
}

// meshIPPrefix is the /24 the instances' WorkloadEntries and the drill's caller take addresses from.
const meshIPPrefix = "127.0.100."

// shopInstances lists every process of the shop in start order.
func shopInstances() []shopInstance {
	var out []shopInstance
	for _, svc := range shop {
		for i, v := range svc.versions {
			for r := 1; r <= max(svc.replicas, 1); r++ {
				key := svc.name
				if i > 0 {
					key += "-" + v
				}
				if r > 1 {
					key += "-" + strconv.Itoa(r)
				}
				out = append(out, shopInstance{svc: svc, version: v, key: key, replica: r, meshIP: meshIPPrefix + strconv.Itoa(len(out)+1)})
			}
		}
	}
	return out
}

// podName is the pod its EndpointSlice's endpoint names, as a cluster's would: the sync registers it as
// the instance's k8s-pod meta, and Prometheus labels the instance's metrics with its version from it.
func (in shopInstance) podName() string { return in.key + "-local" }

// instances are the WorkloadEntries of svc.
func (svc shopService) instances(p Ports) []workload.Instance {
	var out []workload.Instance
	for _, in := range shopInstances() {
		if in.svc.name == svc.name {
			out = append(out, in.workload(p))
		}
	}
	return out
}

func (in shopInstance) workload(p Ports) workload.Instance {
	name := in.svc.name + "-" + in.version
	if in.replica > 1 {
		name += "-" + strconv.Itoa(in.replica)
	}
	return workload.Instance{
		Name: name, IP: in.meshIP, Labels: map[string]string{"version": in.version},
		Ports: map[string]uint32{in.svc.proto: uint32(p[in.key]), "http-metrics": uint32(p[in.key+"-admin"])},
	}
}

// service is how the platform registers svc for istiod: a Service selecting app=<name> with the traffic
// port (named for its protocol) and the admin port, and, with the mesh on, WorkloadEntries whose health
// follows their process's readiness, as istio-agent's health checks do for VMs.
func (s *supervisor) service(svc shopService) workload.Service {
	return workload.Service{
		Name: svc.name, Namespace: ShopNamespace, HealthChecks: s.cfg.Mesh(),
		Ports: []workload.Port{{Name: svc.proto, Port: int32(s.cfg.Ports[svc.name])}, {Name: "http-metrics", Port: int32(s.cfg.Ports[svc.name+"-admin"])}},
	}
}

// target is how a caller reaches dependency name: through istiod (xds:///, the Service's port) with the
// mesh on, else through Consul's health API.
func (s *supervisor) target(name string) string {
	if s.cfg.Mesh() {
		return proxyless.Target(name, ShopNamespace, s.cfg.Ports[name], "")
	}
	return "consul:///" + name
}

// startShop registers each service (Service, ServiceAccount, WorkloadEntries) and starts its instances
// as processes, each with an EndpointSlice in the local apiserver. The operator's catalog sync
// registers them in Consul from there — the same path as in a cluster; with the mesh on the callers
// find their dependencies through istiod, else through Consul. The EndpointSlice's ready condition and
// the WorkloadEntry's health follow the process's /readyz, as the kubelet and EndpointSlice controller,
// or istio-agent, would make them.
func (s *supervisor) startShop(ctx context.Context) error {
	var all []shopInstance
	for _, svc := range shop {
		var wes []workload.Instance
		if s.cfg.Mesh() {
			wes = svc.instances(s.cfg.Ports)
		}
		if err := workload.Apply(ctx, s.env.Client, s.service(svc), wes...); err != nil {
			return err
		}
		for _, in := range shopInstances() {
			if in.svc.name != svc.name {
				continue
			}
			if err := s.startInstance(ctx, in); err != nil {
				return err
			}
			all = append(all, in)
		}
	}
	go s.mirrorReadiness(ctx, all)
	if s.cfg.Mesh() {
		s.say("shop", "%d istio-agents got their certificates in %s together: what they add to the start-up",
			len(all), time.Duration(s.agentStartup.Load()).Round(10*time.Millisecond))
	}
	return nil
}

// anyAddr listens on every interface: the services are published at the machine's address (see
// Config.Host) and reached by people at 127.0.0.1.
func anyAddr(p Ports, name string) string { return ":" + strconv.Itoa(p[name]) }

func (s *supervisor) commonEnv(key string) []string {
	return []string{
		"ADMIN_ADDR=" + anyAddr(s.cfg.Ports, key+"-admin"),
		"NAMESPACE=" + ShopNamespace,
		"LOKI_URL=http://" + s.cfg.Ports.Addr("loki"),
		"CONSUL_HTTP_ADDR=" + s.cfg.Ports.Addr("consul"),
		"CONSUL_REGISTER=false", // the catalog sync registers it, from its EndpointSlice
		"DRAIN_DELAY=1s",
	}
}

func (s *supervisor) startInstance(ctx context.Context, in shopInstance) error {
	if err := s.applyEndpoints(ctx, in, false); err != nil {
		return err
	}
	env := append(s.commonEnv(in.key), in.svc.listen+"="+anyAddr(s.cfg.Ports, in.key))
	for _, dep := range in.svc.calls {
		env = append(env, strings.ToUpper(dep)+"_TARGET="+s.target(dep))
	}
	if in.svc.database != "" {
		env = append(env, "DATABASE_URL="+s.postgres.URL(in.svc.database), "DATABASE_PASSWORD="+s.postgres.Password)
	}
	if in.svc.events {
		env = append(env, "NATS_URL="+s.nats.ClientURL())
	}
	env = append(env, in.svc.env[in.version]...)
	how := "Consul discovery"
	// The process is ready for the registries once it serves but for its xDS listener: istiod sends
	// the listener only to a healthy WorkloadEntry (see setReady).
	readyz := "/readyz"
	if s.cfg.Mesh() {
		// The agent first: the process starts once its certificate exists.
		agent, err := s.startAgent(ctx, in)
		if err != nil {
			return err
		}
		// The bootstrap joins the process to the mesh as its WorkloadEntry: same address, labels and
		// service account; xDS with istiod's TLS port, authenticated by the agent's certificate, which
		// is also the process's own for mTLS.
		bootstrap := filepath.Join(s.cfg.dataDir(in.key), "xds-bootstrap.json")
		node := s.service(in.svc).Node(in.workload(s.cfg.Ports))
		if err := agent.Bootstrap(node, 0).Write(bootstrap); err != nil {
			return err
		}
		env = append(env, proxyless.BootstrapEnv+"="+bootstrap)
		if in.svc.proto == "grpc" {
			// gRPC's xDS server: inbound mTLS and RBAC from istiod.
			env = append(env, "XDS_SERVER=true")
			readyz = "/readyz?exclude=xds-listener"
		}
		how = "proxyless gRPC through istiod as " + node.ProxyID()
	}
	what := fmt.Sprintf("%s %s", in.svc.name, in.version)
	if in.replica > 1 {
		what += fmt.Sprintf(" replica %d", in.replica)
	}
	if in.svc.database != "" {
		what += fmt.Sprintf(", state in PostgreSQL database %s", in.svc.database)
	}
	if in.svc.events {
		what += ", events through NATS"
	}
	if len(in.svc.calls) > 0 {
		what += fmt.Sprintf(", calling %s by %s", strings.Join(in.svc.calls, ", "), how)
	}
	admin := "http://" + s.cfg.Ports.Addr(in.key+"-admin")
	run := func(ctx context.Context) (*devserver.Server, error) {
		return devserver.Run(ctx, s.opts(in.key, 0), devserver.Program{
			Name: in.key, Bin: filepath.Join(s.cfg.binDir(), in.svc.name),
			Env:   env,
			Addr:  s.cfg.Ports.Addr(in.key),
			Ready: devserver.HTTPReady(admin + readyz),
		})
	}
	srv, err := s.server(ctx, in.key, what+" (waits for "+readyz+")", run, url(in, s.cfg.Ports), admin+"/readyz")
	if err != nil {
		return err
	}
	// A process that exits (the database drill kills one) comes back, as a Deployment's pod would.
	var current atomic.Pointer[devserver.Server]
	current.Store(srv)
	s.replaceStop(func() {
		s.say(in.key, "stopping")
		_ = current.Load().Stop()
	})
	s.keepRunning(in.key, &current, run)
	if err := s.setReady(ctx, in, true); err != nil {
		return err
	}
	if readyz != "/readyz" {
		t := time.Now()
		if err := wait.Until(ctx, 100*time.Millisecond, devserver.HTTPReady(admin+"/readyz")); err != nil {
			return fmt.Errorf("%s never received its inbound listener from istiod: %w", in.key, err)
		}
		s.say(in.key, "serving: its xDS server has its inbound listener from istiod (%s)", time.Since(t).Round(100*time.Millisecond))
	}
	s.say(in.key, "registered by the catalog sync (waits for Consul to list it passing)")
	return s.waitPassing(ctx, in.svc.name, s.cfg.Host, s.cfg.Ports[in.key])
}

// startAgent runs the istio-agent beside instance in, as a kubelet and Istio's injector would beside a
// pod: a token for its ServiceAccount from the TokenRequest API, istiod's root from the namespace, the
// real pilot-agent in the instance's own working directory, waiting until it holds the instance's
// certificate from istiod's CA. It is kept running like the instance, and stopped after it.
func (s *supervisor) startAgent(ctx context.Context, in shopInstance) (*devserver.Agent, error) {
	name := in.key + "-agent"
	svc, inst := s.service(in.svc), in.workload(s.cfg.Ports)
	o := s.opts(name, 0)
	o.ReadyTimeout = 30 * time.Second
	// The agent's environment holds only its settings: add the run's marker, by which `down` finds
	// what a crashed supervisor left behind.
	ao := workload.AgentOptions{Istiod: s.secureXDSAddr, Env: []string{markerEnv + "=" + os.Getenv(markerEnv)}}
	start := func(ctx context.Context) (*devserver.Agent, error) {
		return workload.StartAgent(ctx, s.env.Client, svc, inst, o, ao)
	}
	s.say(name, "starting istio-agent (pilot-agent) for spiffe://cluster.local/ns/%s/sa/%s (waits for its certificate from istiod's CA)",
		svc.Namespace, svc.Name)
	t := time.Now()
	a, err := start(ctx)
	if err != nil {
		return nil, err
	}
	took := time.Since(t)
	s.agentStartup.Add(int64(took))
	s.say(name, "certificate from istiod's CA in %s (%s)", a.CertDir, took.Round(10*time.Millisecond))
	var current atomic.Pointer[devserver.Server]
	current.Store(a.Server)
	s.record(Component{Name: name, URL: "http://" + a.StatusAddr + "/healthz/ready", Health: "http://" + a.StatusAddr + "/healthz/ready",
		PID: a.Pid(), Log: a.LogPath}, func() {
		s.say(name, "stopping")
		_ = current.Load().Stop()
	})
	s.keepRunning(name, &current, func(ctx context.Context) (*devserver.Server, error) {
		a, err := start(ctx)
		if err != nil {
			return nil, err
		}
		return a.Server, nil
	})
	return a, nil
}

func url(in shopInstance, p Ports) string {
	if in.svc.proto == "http" {
		return "http://" + p.Addr(in.key)
	}
	return "grpc://" + p.Addr(in.key)
}

// setReady publishes an instance's readiness: its EndpointSlice's ready condition (for the Consul
// sync) and, with the mesh on, its WorkloadEntry's health (for istiod). Both follow
// /readyz?exclude=xds-listener for an xDS server: istiod treats an unhealthy WorkloadEntry as absent and
// sends it no inbound listener, so its health cannot wait for that listener; a caller's gRPC takes an
// instance only once a connection to it succeeds, which a server without its listener refuses.
func (s *supervisor) setReady(ctx context.Context, in shopInstance, ready bool) error {
	if err := s.applyEndpoints(ctx, in, ready); err != nil {
		return err
	}
	if !s.cfg.Mesh() {
		return nil
	}
	return workload.SetHealthy(ctx, s.env.Client, ShopNamespace, in.workload(s.cfg.Ports).Name, ready)
}

// applyEndpoints writes the one-endpoint EndpointSlice of a local process: its traffic port (if proto
// is set) and its admin port as http-metrics, at the machine's address. The Pod it names does not
// exist, so istiod, which finds the instance by its WorkloadEntry, skips it.
func (s *supervisor) applyEndpoints(ctx context.Context, in shopInstance, ready bool) error {
	var ports []discoveryv1.EndpointPort
	if in.svc.proto != "" {
		ports = append(ports, discoveryv1.EndpointPort{Name: ptr.To(in.svc.proto), Port: ptr.To(int32(s.cfg.Ports[in.key]))})
	}
	ports = append(ports, discoveryv1.EndpointPort{Name: ptr.To("http-metrics"), Port: ptr.To(int32(s.cfg.Ports[in.key+"-admin"]))})
	slice := &discoveryv1.EndpointSlice{ObjectMeta: metav1.ObjectMeta{Name: in.key + "-local", Namespace: ShopNamespace}}
	_, err := createOrUpdate(ctx, s.env.Client, slice, func() {
		slice.Labels = map[string]string{discoveryv1.LabelServiceName: in.svc.name, discoveryv1.LabelManagedBy: "meshplane-up"}
		slice.AddressType = discoveryv1.AddressTypeIPv4
		slice.Ports = ports
		slice.Endpoints = []discoveryv1.Endpoint{{
			Addresses:  []string{s.cfg.Host},
			Conditions: discoveryv1.EndpointConditions{Ready: ptr.To(ready), Serving: ptr.To(ready)},
			TargetRef:  &corev1.ObjectReference{Kind: "Pod", Namespace: ShopNamespace, Name: in.podName()},
		}}
	})
	if err != nil {
		return fmt.Errorf("endpointslice %s: %w", slice.Name, err)
	}
	return nil
}

// createOrUpdate gets obj by its key, lets mutate set the desired fields, and creates or updates it.
func createOrUpdate(ctx context.Context, c client.Client, obj client.Object, mutate func()) (bool, error) {
	if err := c.Get(ctx, client.ObjectKeyFromObject(obj), obj); err != nil {
		if client.IgnoreNotFound(err) != nil {
			return false, err
		}
		mutate()
		return true, c.Create(ctx, obj)
	}
	mutate()
	return false, c.Update(ctx, obj)
}

// mirrorReadiness keeps each instance's published readiness (setReady) equal to its process's /readyz
// until ctx ends, so a service that stops or drains leaves Consul's passing set through the real sync
// and istiod's endpoints. It acts on changes only: a drill that marks a WorkloadEntry unhealthy on
// purpose is not overruled.
func (s *supervisor) mirrorReadiness(ctx context.Context, instances []shopInstance) {
	last := map[string]bool{}
	for _, in := range instances {
		last[in.key] = true
	}
	t := time.NewTicker(2 * time.Second)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		for _, in := range instances {
			readyz := "/readyz"
			if s.cfg.Mesh() && in.svc.proto == "grpc" {
				readyz += "?exclude=xds-listener"
			}
			ready := httpGetOK(ctx, "http://"+s.cfg.Ports.Addr(in.key+"-admin")+readyz) == nil
			if ready == last[in.key] {
				continue
			}
			if err := s.setReady(ctx, in, ready); err == nil {
				last[in.key] = ready
				s.say(in.key, "readiness changed: ready=%v", ready)
			}
		}
	}
}

// startLoadgen runs the load generator at the configured rate until the platform stops.
func (s *supervisor) startLoadgen(ctx context.Context) error {
	if s.cfg.LoadRate <= 0 {
		s.say("loadgen", "skipped (rate 0)")
		return nil
	}
	// A Service with only the admin port, so the sync registers it and Prometheus finds its metrics.
	lg := shopInstance{svc: shopService{name: "loadgen"}, key: "loadgen"}
	if err := workload.Apply(ctx, s.env.Client, workload.Service{Name: "loadgen", Namespace: ShopNamespace,
		Ports: []workload.Port{{Name: "http-metrics", Port: int32(s.cfg.Ports["loadgen-admin"])}}}); err != nil {
		return err
	}
	if err := s.applyEndpoints(ctx, lg, true); err != nil {
		return err
	}
	admin := "http://" + s.cfg.Ports.Addr("loadgen-admin")
	_, err := s.server(ctx, "loadgen", fmt.Sprintf("the load generator at %g requests/s through the gateway", s.cfg.LoadRate), func(ctx context.Context) (*devserver.Server, error) {
		return devserver.Run(ctx, s.opts("loadgen", 0), devserver.Program{
			Name: "loadgen", Bin: filepath.Join(s.cfg.binDir(), "loadgen"),
			Env: []string{
				"TARGET_URL=http://" + s.cfg.Ports.Addr("gateway"),
				"RATE=" + strconv.FormatFloat(s.cfg.LoadRate, 'f', -1, 64),
				"ADMIN_ADDR=" + anyAddr(s.cfg.Ports, "loadgen-admin"),
				"NAMESPACE=" + ShopNamespace,
				"LOKI_URL=http://" + s.cfg.Ports.Addr("loki"),
			},
			Addr:  s.cfg.Ports.Addr("loadgen-admin"),
			Ready: devserver.HTTPReady(admin + "/readyz"),
		})
	}, admin+"/metrics", admin+"/readyz")
	return err
}

// applyPolicies applies the example TrafficPolicies (operator/config/samples) and waits until the
// operator reports each Ready.
func (s *supervisor) applyPolicies(ctx context.Context) error {
	names, err := applySamples(ctx, s.env.Client, s.cfg.Repo, "*")
	if err != nil {
		return err
	}
	s.say("policies", "applied %s (waits for Ready)", strings.Join(names, ", "))
	return waitReady(ctx, s.env.Client, names...)
}

// policyManager is the field manager the platform applies TrafficPolicies with. The drill uses it
// too, so each policy it applies replaces the whole spec (fields it leaves out are dropped) and
// re-applying the sample restores it exactly.
const policyManager = "meshplane-up"

// applySamples server-side-applies the sample TrafficPolicies matching
// operator/config/samples/traffic_*_<glob>.yaml into the shop namespace and returns their names.
func applySamples(ctx context.Context, c client.Client, repo, glob string) ([]string, error) {
	files, err := filepath.Glob(filepath.Join(repo, "operator", "config", "samples", "traffic_*_"+glob+".yaml"))
	if err != nil {
		return nil, err
	}
	if len(files) == 0 {
		return nil, fmt.Errorf("no sample TrafficPolicies operator/config/samples/traffic_*_%s.yaml", glob)
	}
	var names []string
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			return nil, err
		}
		name, err := applyPolicy(ctx, c, b)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", filepath.Base(f), err)
		}
		names = append(names, name)
	}
	return names, nil
}

// applyPolicy server-side-applies one TrafficPolicy (YAML) into the shop namespace as policyManager.
func applyPolicy(ctx context.Context, c client.Client, manifest []byte) (string, error) {
	u := &unstructured.Unstructured{}
	if err := yaml.Unmarshal(manifest, &u.Object); err != nil {
		return "", err
	}
	// Status is the operator's; a typed policy marshals an empty one.
	delete(u.Object, "status")
	unstructured.RemoveNestedField(u.Object, "metadata", "creationTimestamp")
	u.SetNamespace(ShopNamespace)
	if err := c.Apply(ctx, client.ApplyConfigurationFromUnstructured(u), client.FieldOwner(policyManager), client.ForceOwnership); err != nil {
		return "", fmt.Errorf("apply trafficpolicy %s: %w", u.GetName(), err)
	}
	return u.GetName(), nil
}

// waitReady waits until the operator reports every named policy Ready for its generation.
func waitReady(ctx context.Context, c client.Client, names ...string) error {
	return wait.Until(ctx, 200*time.Millisecond, func(ctx context.Context) error {
		for _, n := range names {
			var p v1alpha1.TrafficPolicy
			if err := c.Get(ctx, client.ObjectKey{Namespace: ShopNamespace, Name: n}, &p); err != nil {
				return err
			}
			if !isReady(&p) {
				return fmt.Errorf("TrafficPolicy %s not Ready", n)
			}
		}
		return nil
	})
}

func isReady(p *v1alpha1.TrafficPolicy) bool {
	for _, c := range p.Status.Conditions {
		if c.Type == v1alpha1.ConditionReady {
			return c.Status == metav1.ConditionTrue && p.Status.ObservedGeneration == p.Generation
		}
	}
	return false
}

package scenario

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	"meshplane.dev/mesh/devkit/wait"
	"meshplane.dev/operator/api/v1alpha1"
	"meshplane.dev/operator/internal/inforce"
)

// Instance is one process of the service under test, observed through its admin port.
type Instance struct {
	// Name is the instance's name, e.g. payments-v1.
	Name string
	// Subset is the value of its version label, the subset a split routes to.
	Subset string
	// Admin is host:port of its admin server (/metrics, /admin/faults).
	Admin string
	// Addr is host:port of its gRPC server, where a caller outside the mesh dials it.
	Addr string
}

// Mesh is a running local mesh: a service with instances, istiod, and a caller whose gRPC xDS client
// the scenarios drive.
type Mesh struct {
	// Namespace and Service name the service under test and its TrafficPolicy's target.
	Namespace, Service string
	// Port is the Service's port the caller dials.
	Port int
	// Method is the gRPC method Call invokes and faults target, e.g. Charge.
	Method string
	// Instances are the service's processes.
	Instances []Instance
	// Istiod reads what the caller received.
	Istiod inforce.Istiod
	// CallerID is the caller's proxy id in istiod (name.namespace, proxyless.Node.ProxyID).
	CallerID string
	// CallerIdentity is the SPIFFE id of the caller's certificate (spiffe://cluster.local/ns/<ns>/sa/<sa>);
	// empty when the caller has none.
	CallerIdentity string
	// Call makes one call of Method through the caller's xDS client.
	Call func(ctx context.Context) error
	// Callers are other clients of the service, by name, for steps that set who calls (Step.Caller):
	// CallerPlaintext, a process without certificates dialling the instances directly, and clients with
	// other mTLS identities (e.g. "orders"). A step naming one that is missing fails.
	Callers map[string]Caller
	// Calls makes one call of another method of the service by name (e.g. GetCharge), for scenarios
	// that set two methods side by side; nil when there is none.
	Calls map[string]func(ctx context.Context) error
	// Apply applies a manifest (e.g. kubectl apply -f -).
	Apply func(ctx context.Context, manifest []byte) error
	// Client reads the live TrafficPolicy (its Ready condition and status.effective).
	Client client.Reader
	// SetHealthy marks an instance healthy or not in istiod's registry (nil: scenarios that need it fail).
	SetHealthy func(ctx context.Context, instance string, healthy bool) error
	// HTTP reaches the admin ports; nil uses a client with a 5s timeout.
	HTTP *http.Client
	// Settle bounds each wait for a policy to be in force; 0 means 60s.
	Settle time.Duration
	// Selector selects the service's instances by label, to find its servers in istiod; nil means
	// app=<Service>.
	Selector map[string]string
}

// Caller is one client of the service.
type Caller struct {
	// Identity is the SPIFFE id its certificate carries; empty for a caller without certificates.
	Identity string
	// Call makes one call of the Mesh's Method.
	Call func(ctx context.Context) error
}

// CallerPlaintext names the caller without certificates: a process outside the mesh that dials the
// instances' addresses in plaintext, as a pod without a sidecar would.
const CallerPlaintext = "plaintext"

// Step is one configuration of a scenario: a policy, faults, and a bounded number of calls.
type Step struct {
	// Label names the step in tables, e.g. "retries.attempts: 0".
	Label string
	// Policy is applied first and waited for until the caller runs it.
	Policy *v1alpha1.TrafficPolicy
	// Faults maps an instance name to its fault rules (JSON, as PUT /admin/faults takes); "*" means
	// every instance. They are cleared after the step.
	Faults map[string]string
	// Unhealthy instances are marked unhealthy for the step (and healthy again after it).
	Unhealthy []string
	// Method is the method the step calls and counts on the servers; empty means Mesh.Method.
	Method string
	// Caller names the client that makes the step's calls (a key of Mesh.Callers); empty means the
	// Mesh's own caller.
	Caller string
	// Calls bounds the calls made; Concurrency of them are in flight at once (at least 1).
	Calls, Concurrency int
	// Deadline is each call's own deadline, as the caller's application would set it.
	Deadline time.Duration
	// Predict states what Istio's semantics predict for the step and checks the observation; the
	// error names the field and what was off.
	Predict func(Observed) Prediction
}

// Prediction is what a step should show, and whether it did.
type Prediction struct {
	// Expected is the prediction in words, e.g. "v1 share 0.80 ± 0.08".
	Expected string
	// Measured is what the prediction was checked against, when the table's other columns do not show
	// it, e.g. "v1 share 0.79".
	Measured string
	// Err is nil when the observation matches.
	Err error
}

// Observed summarises a step's calls.
type Observed struct {
	Step string
	// Method is the method called.
	Method string
	// Calls made and how many succeeded.
	Calls, OK int
	// Codes counts the calls' gRPC codes.
	Codes map[codes.Code]int
	// Errors holds the first error message seen for each failing code, for explaining a failure.
	Errors map[codes.Code]string
	// Served counts the calls each instance handled (from its own metrics; retries count again).
	Served map[string]int
	// Peers counts the calls the instances handled by the identity the server saw in the TLS handshake:
	// the caller's SPIFFE id, or "plaintext" (meshplane_grpc_server_calls_by_peer_total).
	Peers map[string]int
	// Caller names who made the calls ("" for the Mesh's own caller) and CallerIdentity its SPIFFE id.
	Caller, CallerIdentity string
	// Latency of the calls, sorted ascending.
	Latency []time.Duration
	// Elapsed is the wall time of the calls.
	Elapsed time.Duration
}

// SuccessRate is OK / Calls.
func (o Observed) SuccessRate() float64 {
	if o.Calls == 0 {
		return 0
	}
	return float64(o.OK) / float64(o.Calls)
}

// Attempts is the number of calls every instance handled together: each attempt of each call.
func (o Observed) Attempts() int {
	n := 0
	for _, v := range o.Served {
		n += v
	}
	return n
}

// Share is the fraction of the attempts served by the instances of subset.
func (o Observed) Share(instances []Instance, subset string) float64 {
	total, in := 0, 0
	for _, i := range instances {
		total += o.Served[i.Name]
		if i.Subset == subset {
			in += o.Served[i.Name]
		}
	}
	if total == 0 {
		return 0
	}
	return float64(in) / float64(total)
}

// Quantile returns the q-quantile latency (0 ≤ q ≤ 1).
func (o Observed) Quantile(q float64) time.Duration {
	if len(o.Latency) == 0 {
		return 0
	}
	i := int(q * float64(len(o.Latency)-1))
	return o.Latency[i]
}

// Outcome is one step's observation and verdict.
type Outcome struct {
	Observed
	Prediction
	// InForce is what the caller held while the calls ran ("declared vs. in force").
	InForce []inforce.Row
}

// Scenario is a named experiment whose steps run in order.
type Scenario struct {
	// Name is a short title, e.g. "retries".
	Name string
	// Field names the Istio field the scenario proves.
	Field string
	Steps []Step
}

// Run runs every step of s: apply its policy, wait until the caller has it, set faults, drive the
// calls, clear the faults, check the prediction. It stops at the first step it cannot run (an error),
// not at a failed prediction (in the Outcome).
func (m *Mesh) Run(ctx context.Context, s Scenario) ([]Outcome, error) {
	var out []Outcome
	for _, st := range s.Steps {
		o, err := m.runStep(ctx, st)
		if err != nil {
			return out, fmt.Errorf("scenario %s, step %q: %w", s.Name, st.Label, err)
		}
		out = append(out, o)
	}
	return out, nil
}

func (m *Mesh) runStep(ctx context.Context, st Step) (Outcome, error) {
	rows, err := m.ApplyAndWait(ctx, st.Policy)
	if err != nil {
		return Outcome{}, err
	}
	for _, name := range st.Unhealthy {
		if m.SetHealthy == nil {
			return Outcome{}, errors.New("the step marks instances unhealthy but the mesh cannot")
		}
		if err := m.SetHealthy(ctx, name, false); err != nil {
			return Outcome{}, err
		}
		defer func() { _ = m.SetHealthy(context.WithoutCancel(ctx), name, true) }()
	}
	if len(st.Unhealthy) > 0 {
		// The policy is in force; now wait until the caller's endpoints are too.
		if err := m.waitEndpoints(ctx, st.Unhealthy); err != nil {
			return Outcome{}, err
		}
	}
	defer func() { _ = m.clearFaults(context.WithoutCancel(ctx)) }()
	for name, rules := range st.Faults {
		for _, inst := range m.Instances {
			if name == "*" || name == inst.Name {
				if err := m.setFaults(ctx, inst, rules); err != nil {
					return Outcome{}, err
				}
			}
		}
	}
	method := cmp.Or(st.Method, m.Method)
	before, peersBefore, err := m.handled(ctx, method)
	if err != nil {
		return Outcome{}, err
	}
	obs, err := m.drive(ctx, st)
	if err != nil {
		return Outcome{}, err
	}
	after, peersAfter, err := m.handled(ctx, method)
	if err != nil {
		return Outcome{}, err
	}
	obs.Served = map[string]int{}
	for name, n := range after {
		obs.Served[name] = n - before[name]
	}
	obs.Peers = map[string]int{}
	for peer, n := range peersAfter {
		if d := n - peersBefore[peer]; d > 0 {
			obs.Peers[peer] = d
		}
	}
	o := Outcome{Observed: obs, InForce: rows}
	if st.Predict != nil {
		o.Prediction = st.Predict(obs)
	}
	return o, nil
}

// ApplyAndWait applies p, waits until the operator reports it Ready for its generation, then until the
// caller has ACKed a push holding every field gRPC can hold as declared. It returns the comparison.
func (m *Mesh) ApplyAndWait(ctx context.Context, p *v1alpha1.TrafficPolicy) ([]inforce.Row, error) {
	manifest, err := yaml.Marshal(p)
	if err != nil {
		return nil, err
	}
	if err := m.Apply(ctx, manifest); err != nil {
		return nil, fmt.Errorf("apply trafficpolicy %s: %w", p.Name, err)
	}
	settle := m.Settle
	if settle == 0 {
		settle = time.Minute
	}
	wctx, cancel := context.WithTimeout(ctx, settle)
	defer cancel()
	live := &v1alpha1.TrafficPolicy{}
	err = wait.Until(wctx, 100*time.Millisecond, func(ctx context.Context) error {
		if err := m.Client.Get(ctx, client.ObjectKeyFromObject(p), live); err != nil {
			return err
		}
		c := meta.FindStatusCondition(live.Status.Conditions, v1alpha1.ConditionReady)
		if live.Status.ObservedGeneration != live.Generation || c == nil || c.Status != metav1.ConditionTrue {
			return fmt.Errorf("trafficpolicy %s not Ready for generation %d: %+v", p.Name, live.Generation, live.Status.Conditions)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	var rows []inforce.Row
	err = wait.Until(wctx, 100*time.Millisecond, func(ctx context.Context) error {
		// A call makes sure the caller has asked istiod for the service at all.
		cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		_ = m.Call(cctx)
		cancel()
		r, err := m.Istiod.Received(ctx, m.CallerID, m.host(), m.Port)
		if err != nil {
			return err
		}
		rows = inforce.Compare(live, nil, r)
		if err := inforce.Converged(r, rows); err != nil {
			return err
		}
		return m.serversConverged(ctx, live)
	})
	return rows, err
}

// serversConverged reports whether every server of the service connected to istiod holds the policy's
// server side (mtls, allow) — or, where the policy sets no mtls, serves plaintext, the mesh's default
// for gRPC here (no namespace-wide PeerAuthentication): a server still requiring mTLS from an earlier
// step would refuse a plaintext caller the step expects through.
func (m *Mesh) serversConverged(ctx context.Context, p *v1alpha1.TrafficPolicy) error {
	selector := m.Selector
	if selector == nil {
		selector = map[string]string{"app": m.Service}
	}
	servers, err := m.Istiod.Servers(ctx, m.Namespace, selector)
	if err != nil {
		return err
	}
	rows := make([][]inforce.Row, len(servers))
	for i, srv := range servers {
		rows[i] = inforce.CompareServer(p, trustDomain, srv)
		if p.Spec.MTLS == nil && srv.MTLS {
			return fmt.Errorf("server %s still requires mTLS, which the policy no longer sets", srv.Proxy.ID)
		}
	}
	return inforce.ServersConverged(servers, rows)
}

// trustDomain is the local mesh's (devserver.DefaultMeshConfig).
const trustDomain = "cluster.local"

func (m *Mesh) host() string { return m.Service + "." + m.Namespace + ".svc.cluster.local" }

// waitEndpoints waits until the caller has ACKed a push after the instances turned unhealthy: calls
// reach none of them for a run of 20 calls.
func (m *Mesh) waitEndpoints(ctx context.Context, unhealthy []string) error {
	settle := m.Settle
	if settle == 0 {
		settle = time.Minute
	}
	wctx, cancel := context.WithTimeout(ctx, settle)
	defer cancel()
	return wait.Until(wctx, 100*time.Millisecond, func(ctx context.Context) error {
		before, err := m.served(ctx, m.Method)
		if err != nil {
			return err
		}
		if _, err := m.drive(ctx, Step{Calls: 20, Concurrency: 1, Deadline: 2 * time.Second}); err != nil {
			return err
		}
		after, err := m.served(ctx, m.Method)
		if err != nil {
			return err
		}
		for _, name := range unhealthy {
			if n := after[name] - before[name]; n > 0 {
				return fmt.Errorf("unhealthy instance %s still served %d of 20 calls", name, n)
			}
		}
		return nil
	})
}

// ReachEvery waits until the caller's calls reach every instance, for a policy that routes to all of
// them. After the servers change how they accept connections (STRICT to plaintext), the caller's
// connection to one of them may have failed and be backing off for seconds while the others serve
// every call, since round robin skips it: a scenario started then would see one instance serve nothing.
func (m *Mesh) ReachEvery(ctx context.Context) error {
	settle := m.Settle
	if settle == 0 {
		settle = time.Minute
	}
	wctx, cancel := context.WithTimeout(ctx, settle)
	defer cancel()
	return wait.Until(wctx, 200*time.Millisecond, func(ctx context.Context) error {
		before, err := m.served(ctx, m.Method)
		if err != nil {
			return err
		}
		if _, err := m.drive(ctx, Step{Calls: 20, Concurrency: 1, Deadline: 2 * time.Second}); err != nil {
			return err
		}
		after, err := m.served(ctx, m.Method)
		if err != nil {
			return err
		}
		for _, in := range m.Instances {
			if after[in.Name] == before[in.Name] {
				return fmt.Errorf("instance %s served none of 20 calls", in.Name)
			}
		}
		return nil
	})
}

// drive makes st.Calls calls of st.Method, st.Concurrency at a time.
func (m *Mesh) drive(ctx context.Context, st Step) (Observed, error) {
	conc := max(st.Concurrency, 1)
	deadline := st.Deadline
	if deadline == 0 {
		deadline = 5 * time.Second
	}
	call := m.Call
	if st.Method != "" && st.Method != m.Method {
		if call = m.Calls[st.Method]; call == nil {
			return Observed{}, fmt.Errorf("the mesh cannot call %s", st.Method)
		}
	}
	identity := m.CallerIdentity
	if st.Caller != "" {
		c, ok := m.Callers[st.Caller]
		if !ok {
			return Observed{}, fmt.Errorf("the mesh has no caller %q", st.Caller)
		}
		call, identity = c.Call, c.Identity
	}
	obs := Observed{Step: st.Label, Method: cmp.Or(st.Method, m.Method), Calls: st.Calls, Codes: map[codes.Code]int{},
		Caller: st.Caller, CallerIdentity: identity, Errors: map[codes.Code]string{}}
	var mu sync.Mutex
	var wg sync.WaitGroup
	next := make(chan struct{})
	start := time.Now()
	for range conc {
		wg.Go(func() {
			for range next {
				cctx, cancel := context.WithTimeout(ctx, deadline)
				t0 := time.Now()
				err := call(cctx)
				d := time.Since(t0)
				cancel()
				mu.Lock()
				obs.Codes[status.Code(err)]++
				if err == nil {
					obs.OK++
				} else if _, seen := obs.Errors[status.Code(err)]; !seen {
					obs.Errors[status.Code(err)] = status.Convert(err).Message()
				}
				obs.Latency = append(obs.Latency, d)
				mu.Unlock()
			}
		})
	}
	for range st.Calls {
		next <- struct{}{}
	}
	close(next)
	wg.Wait()
	obs.Elapsed = time.Since(start)
	slices.Sort(obs.Latency)
	return obs, nil
}

func (m *Mesh) httpClient() *http.Client {
	if m.HTTP != nil {
		return m.HTTP
	}
	return &http.Client{Timeout: 5 * time.Second}
}

func (m *Mesh) setFaults(ctx context.Context, inst Instance, rules string) error {
	method := http.MethodPut
	if rules == "" {
		method = http.MethodDelete
	}
	req, err := http.NewRequestWithContext(ctx, method, "http://"+inst.Admin+"/admin/faults", strings.NewReader(rules))
	if err != nil {
		return err
	}
	resp, err := m.httpClient().Do(req)
	if err != nil {
		return fmt.Errorf("faults on %s: %w", inst.Name, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("faults on %s: %s: %s", inst.Name, resp.Status, strings.TrimSpace(string(body)))
	}
	return nil
}

func (m *Mesh) clearFaults(ctx context.Context) error {
	var errs []error
	for _, inst := range m.Instances {
		errs = append(errs, m.setFaults(ctx, inst, ""))
	}
	return errors.Join(errs...)
}

// served reads how many calls of method each instance has handled, from grpc_server_handled_total.
func (m *Mesh) served(ctx context.Context, method string) (map[string]int, error) {
	out, _, err := m.handled(ctx, method)
	return out, err
}

// Served reads how many calls of the Mesh's Method each instance has handled so far, by instance name
// (grpc_server_handled_total): what a test following a rollout counts between two moments.
func (m *Mesh) Served(ctx context.Context) (map[string]int, error) { return m.served(ctx, m.Method) }

// SetFaults sets an instance's fault rules (JSON, as PUT /admin/faults takes); "" clears them.
func (m *Mesh) SetFaults(ctx context.Context, instance, rules string) error {
	for _, inst := range m.Instances {
		if inst.Name == instance {
			return m.setFaults(ctx, inst, rules)
		}
	}
	return fmt.Errorf("no instance %s", instance)
}

// handled reads how many calls of method each instance has handled (grpc_server_handled_total) and how
// many all of them handled by the caller's identity (meshplane_grpc_server_calls_by_peer_total).
func (m *Mesh) handled(ctx context.Context, method string) (map[string]int, map[string]int, error) {
	out, peers := map[string]int{}, map[string]int{}
	for _, inst := range m.Instances {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+inst.Admin+"/metrics", nil)
		if err != nil {
			return nil, nil, err
		}
		req.Header.Set("Accept", "text/plain")
		resp, err := m.httpClient().Do(req)
		if err != nil {
			return nil, nil, fmt.Errorf("metrics of %s: %w", inst.Name, err)
		}
		p := expfmt.NewTextParser(model.UTF8Validation)
		mfs, err := p.TextToMetricFamilies(resp.Body)
		resp.Body.Close()
		if err != nil {
			return nil, nil, fmt.Errorf("metrics of %s: %w", inst.Name, err)
		}
		n := 0.0
		for _, metric := range mfs["grpc_server_handled_total"].GetMetric() {
			if label(metric, "grpc_method") == method {
				n += metric.GetCounter().GetValue()
			}
		}
		out[inst.Name] = int(n)
		for _, metric := range mfs["meshplane_grpc_server_calls_by_peer_total"].GetMetric() {
			if label(metric, "grpc_method") == method {
				peers[label(metric, "peer")] += int(metric.GetCounter().GetValue())
			}
		}
	}
	return out, peers, nil
}

func label(m *dto.Metric, name string) string {
	for _, l := range m.GetLabel() {
		if l.GetName() == name {
			return l.GetValue()
		}
	}
	return ""
}

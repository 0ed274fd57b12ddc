package consulsync

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	consulapi "github.com/hashicorp/consul/api"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/events"
	"k8s.io/klog/v2"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	crcontroller "sigs.k8s.io/controller-runtime/pkg/controller"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	logf "sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
	"sigs.k8s.io/controller-runtime/pkg/source"
)

// ToConsul registers Kubernetes Services into Consul. Every instance lives on one synthetic node per cluster
// (registered through the catalog API, so no agent's anti-entropy removes it) and carries MetaOwner; only
// instances with this cluster's owner mark on this node are ever changed or deleted. It keeps the node's
// actual state from a blocking query and writes only differences: a resync with nothing changed writes
// nothing.
type ToConsul struct {
	Client   client.Client
	Consul   *consulapi.Client
	Settings Settings
	// Node is the synthetic Consul node's name.
	Node    string
	Metrics *Metrics
	// Recorder, if set, receives Warning events for Services with bad annotations.
	Recorder events.EventRecorder
	// ResyncPeriod re-checks every Service against Consul this often (0: never); drift is normally seen
	// through the blocking query at once.
	ResyncPeriod time.Duration

	state      nodeState
	writer     *catalogWriter
	reconciled atomic.Int64
	events     chan event.TypedGenericEvent[*corev1.Service]
	pending    sync.Map // Service key → time of the oldest change not yet written, for the lag metric
}

// SetupWithManager registers the reconciler (Services, their EndpointSlices, and changes seen in Consul)
// and the node watcher with mgr.
func (r *ToConsul) SetupWithManager(mgr ctrl.Manager) error {
	r.events = make(chan event.TypedGenericEvent[*corev1.Service], 1024)
	r.state.reset(nil)
	r.state.writtenAt = map[string]uint64{}
	// A label selector scans every EndpointSlice of the namespace; an index finds a Service's at once.
	if err := mgr.GetFieldIndexer().IndexField(context.Background(), &discoveryv1.EndpointSlice{}, indexServiceName, func(o client.Object) []string {
		if name := o.GetLabels()[discoveryv1.LabelServiceName]; name != "" {
			return []string{name}
		}
		return nil
	}); err != nil {
		return fmt.Errorf("index endpointslices by service: %w", err)
	}
	if err := mgr.Add(&nodeWatcher{r: r}); err != nil {
		return err
	}
	r.writer = newCatalogWriter(r.Consul, r.Node, r.nodeMeta(), &r.state, r.Metrics)
	if err := mgr.Add(r.writer); err != nil {
		return err
	}
	noted := func(key types.NamespacedName) []reconcile.Request {
		r.pending.LoadOrStore(key.String(), time.Now())
		return []reconcile.Request{{NamespacedName: key}}
	}
	return ctrl.NewControllerManagedBy(mgr).
		Named("consul-sync-to-consul").
		// A reconcile waits for its Service's transaction; many in flight fill each transaction.
		WithOptions(crcontroller.Options{MaxConcurrentReconciles: concurrentServiceReconciles}).
		Watches(&corev1.Service{}, handler.EnqueueRequestsFromMapFunc(func(_ context.Context, o client.Object) []reconcile.Request {
			return noted(client.ObjectKeyFromObject(o))
		})).
		Watches(&discoveryv1.EndpointSlice{}, handler.EnqueueRequestsFromMapFunc(func(_ context.Context, o client.Object) []reconcile.Request {
			svc := o.GetLabels()[discoveryv1.LabelServiceName]
			if svc == "" {
				return nil
			}
			return noted(types.NamespacedName{Namespace: o.GetNamespace(), Name: svc})
		})).
		WatchesRawSource(source.Channel(r.events, &handler.TypedEnqueueRequestForObject[*corev1.Service]{})).
		Complete(r)
}

// Reconciled counts Services checked against Consul without error since start.
func (r *ToConsul) Reconciled() int64 { return r.reconciled.Load() }

// Resync re-checks every Service and every registration this sync owns against Consul.
func (r *ToConsul) Resync(ctx context.Context) error {
	var svcs corev1.ServiceList
	if err := r.Client.List(ctx, &svcs); err != nil {
		return err
	}
	keys := map[types.NamespacedName]bool{}
	for _, s := range svcs.Items {
		keys[client.ObjectKeyFromObject(&s)] = true
	}
	for _, k := range r.state.keys() {
		keys[k] = true
	}
	for k := range keys {
		r.enqueue(ctx, k)
	}
	return nil
}

func (r *ToConsul) enqueue(ctx context.Context, key types.NamespacedName) {
	select {
	case r.events <- event.TypedGenericEvent[*corev1.Service]{Object: &corev1.Service{ObjectMeta: metaFor(key)}}:
	case <-ctx.Done():
	}
}

// Reconcile makes the Consul registrations of one Service match it: register or update first, then
// deregister, so an endpoint that stays never disappears in between.
func (r *ToConsul) Reconcile(ctx context.Context, req ctrl.Request) (res ctrl.Result, err error) {
	log := logf.FromContext(ctx)
	if !r.state.loaded() {
		// Until Consul's state is known every instance would look missing and be written again.
		return ctrl.Result{RequeueAfter: 200 * time.Millisecond}, nil
	}
	defer func() {
		if err == nil {
			r.reconciled.Add(1)
		}
	}()
	desired, keep, err := r.desired(ctx, req.NamespacedName)
	if err != nil {
		return ctrl.Result{}, err
	}
	if keep {
		return ctrl.Result{}, nil
	}
	actual := r.state.forService(req.NamespacedName)

	change := &catalogChange{}
	for _, d := range desired {
		if a, ok := actual[d.ID]; !ok || !a.Equal(d) {
			change.register = append(change.register, d)
		}
	}
	for id, a := range actual {
		if !slices.ContainsFunc(desired, func(d Instance) bool { return d.ID == id }) {
			change.deregister = append(change.deregister, a)
		}
	}
	slices.SortFunc(change.deregister, func(a, b Instance) int { return strings.Compare(a.ID, b.ID) })
	writes := len(change.register) + len(change.deregister)
	if writes > 0 {
		if err := r.writer.write(ctx, change); err != nil {
			r.Metrics.Errors.WithLabelValues(DirectionToConsul).Inc()
			if refused, ok := errors.AsType[*refusedError](err); ok {
				r.warnRefused(ctx, req.NamespacedName, refused.reasons)
			}
			return ctrl.Result{}, fmt.Errorf("sync service %s to consul: %w", req.NamespacedName, err)
		}
	}
	if t, ok := r.pending.LoadAndDelete(req.String()); ok && writes > 0 {
		r.Metrics.Lag.WithLabelValues(DirectionToConsul).Observe(time.Since(t.(time.Time)).Seconds())
	}
	if writes > 0 {
		log.V(1).Info("Synced service to Consul", "service", klog.KRef(req.Namespace, req.Name), "instances", len(desired), "writes", writes)
	}
	r.Metrics.Services.WithLabelValues(DirectionToConsul).Set(float64(r.state.serviceCount()))
	return ctrl.Result{}, nil
}

// desired returns the instances a Service should have; keep means leave Consul as it is (a bad
// annotation: nothing already registered is lost to a typo).
func (r *ToConsul) desired(ctx context.Context, key types.NamespacedName) ([]Instance, bool, error) {
	var svc corev1.Service
	if err := r.Client.Get(ctx, key, &svc); err != nil {
		if apierrors.IsNotFound(err) {
			return nil, false, nil
		}
		return nil, false, err
	}
	if !svc.DeletionTimestamp.IsZero() {
		return nil, false, nil
	}
	ok, err := ShouldSync(&svc, r.Settings)
	if err != nil {
		r.warn(&svc, err)
		return nil, true, nil
	}
	if !ok {
		return nil, false, nil
	}
	var endpointSlices discoveryv1.EndpointSliceList
	if err := r.Client.List(ctx, &endpointSlices, client.InNamespace(key.Namespace), client.MatchingFields{indexServiceName: key.Name}); err != nil {
		return nil, false, err
	}
	desired, err := DesiredInstances(&svc, endpointSlices.Items, r.Settings)
	if err != nil {
		r.warn(&svc, err)
		return nil, true, nil
	}
	return desired, false, nil
}

func (r *ToConsul) warn(svc *corev1.Service, err error) {
	if r.Recorder != nil {
		r.Recorder.Eventf(svc, nil, corev1.EventTypeWarning, "ConsulSyncSkipped", "SyncToConsul", "%v", err)
	}
}

// warnRefused tells the Service's owners what Consul refused to register.
func (r *ToConsul) warnRefused(ctx context.Context, key types.NamespacedName, reasons []string) {
	var svc corev1.Service
	if r.Recorder == nil || r.Client.Get(ctx, key, &svc) != nil {
		return
	}
	r.Recorder.Eventf(&svc, nil, corev1.EventTypeWarning, "ConsulRefused", "SyncToConsul", "%s", strings.Join(reasons, "; "))
}

func (r *ToConsul) nodeMeta() map[string]string {
	return map[string]string{MetaExternalSource: "kubernetes", MetaOwner: r.Settings.Cluster, MetaCluster: r.Settings.Cluster}
}

func checkID(serviceID string) string { return serviceID + ":k8s-readiness" }

// nodeState is the sync's view of the instances it owns on its node. Writes update it at once; the
// node watcher replaces it with what Consul reports. It is indexed by Service and by Consul name, so a
// reconcile costs the same with 20 Services as with 20,000 (`make bench` found each one scanning every
// instance: quadratic work for a full sync).
type nodeState struct {
	mu        sync.Mutex
	instances map[string]Instance
	byService map[types.NamespacedName]map[string]bool // instance IDs
	names     map[string]int                           // instances per Consul service name
	synced    bool
	// written is the number of the sync's own writes so far; writtenAt holds, by instance ID, the number of
	// the last write to it, for writes a read of the node may not show yet (see replace).
	written   uint64
	writtenAt map[string]uint64
}

func serviceKey(in Instance) types.NamespacedName {
	return types.NamespacedName{Namespace: in.Meta[MetaNamespace], Name: in.Meta[MetaService]}
}

// reset replaces every instance; the caller holds mu or has the state to itself.
func (s *nodeState) reset(instances map[string]Instance) {
	s.instances = map[string]Instance{}
	s.byService = map[types.NamespacedName]map[string]bool{}
	s.names = map[string]int{}
	for _, in := range instances {
		s.putLocked(in)
	}
}

func (s *nodeState) putLocked(in Instance) {
	if old, ok := s.instances[in.ID]; ok {
		s.removeLocked(old.ID)
	}
	s.instances[in.ID] = in
	key := serviceKey(in)
	if s.byService[key] == nil {
		s.byService[key] = map[string]bool{}
	}
	s.byService[key][in.ID] = true
	s.names[in.Service]++
}

func (s *nodeState) removeLocked(id string) {
	in, ok := s.instances[id]
	if !ok {
		return
	}
	delete(s.instances, id)
	key := serviceKey(in)
	if delete(s.byService[key], id); len(s.byService[key]) == 0 {
		delete(s.byService, key)
	}
	if s.names[in.Service]--; s.names[in.Service] <= 0 {
		delete(s.names, in.Service)
	}
}

func (s *nodeState) loaded() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.synced
}

// put and remove record the sync's own committed writes.
func (s *nodeState) put(in Instance) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.putLocked(in)
	s.noteWrite(in.ID)
}

func (s *nodeState) remove(id string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.removeLocked(id)
	s.noteWrite(id)
}

func (s *nodeState) noteWrite(id string) {
	s.written++
	if s.writtenAt == nil {
		s.writtenAt = map[string]uint64{}
	}
	s.writtenAt[id] = s.written
}

// writes returns the number of the sync's own writes so far: a read of the node that starts now shows
// every one of them.
func (s *nodeState) writes() uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.written
}

func (s *nodeState) forService(key types.NamespacedName) map[string]Instance {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := map[string]Instance{}
	for id := range s.byService[key] {
		out[id] = s.instances[id]
	}
	return out
}

func (s *nodeState) keys() []types.NamespacedName {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Collect(maps.Keys(s.byService))
}

func (s *nodeState) serviceCount() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.names)
}

// replace swaps in Consul's view, read after the sync's first `since` writes, and returns the Services whose
// instances differ from what the sync believed: changes by someone else, or a Consul that came back empty.
// The sync's own later writes may be missing from that view (a read of thousands of instances takes a
// while, and transactions commit meanwhile): for those instances the sync's view stands until a later read,
// or every one of them would look changed and be written again (`make bench` counted 1,000 such writes
// in a sync of 4,000 instances).
func (s *nodeState) replace(observed map[string]Instance, since uint64) []types.NamespacedName {
	s.mu.Lock()
	defer s.mu.Unlock()
	for id, at := range s.writtenAt {
		if at <= since {
			delete(s.writtenAt, id)
			continue
		}
		if in, ok := s.instances[id]; ok {
			observed[id] = in
		} else {
			delete(observed, id)
		}
	}
	changed := map[types.NamespacedName]bool{}
	for id, in := range s.instances {
		if o, ok := observed[id]; !ok || !o.Equal(in) {
			changed[serviceKey(in)] = true
		}
	}
	for id, o := range observed {
		if _, ok := s.instances[id]; !ok {
			changed[serviceKey(o)] = true
		}
	}
	s.reset(observed)
	first := !s.synced
	s.synced = true
	if first {
		// Everything owned here is checked once after start: registrations of Services deleted while the
		// sync was down are found and removed.
		for _, in := range observed {
			changed[serviceKey(in)] = true
		}
	}
	return slices.Collect(maps.Keys(changed))
}

// nodeWait bounds a blocking query on the sync's node, and so how long the sync may take to notice a
// Consul that restarted empty between two reads (nodeReadInterval): the new server's index is below
// ours, and a query waiting for ours blocks until this passes; its answer's lower index then starts
// the sync over. An idle node costs one read per nodeWait.
const nodeWait = 10 * time.Second

// nodeReadInterval is the shortest time between two reads of the sync's node: how late a change made
// to it by someone else (or a Consul that lost its data) may be noticed, at most.
const nodeReadInterval = time.Second

// readShare: reads of the node are at least this many times their own duration apart, so that on a node
// of tens of thousands of instances they take at most a fifth of the sync's time (and of Consul's).
const readShare = 5

// concurrentServiceReconciles is how many Services are reconciled at once. Each waits for the transaction
// holding its writes, so enough must be in flight to fill one transaction (63 single-instance Services)
// while the one before it commits.
const concurrentServiceReconciles = 128

// indexServiceName indexes EndpointSlices by the Service they belong to.
const indexServiceName = "consulsync.serviceName"

// nodeWatcher follows the sync's node with a blocking query and feeds differences back as reconciles.
type nodeWatcher struct{ r *ToConsul }

// NeedLeaderElection: only the leader writes, so only the leader needs to know the node.
func (w *nodeWatcher) NeedLeaderElection() bool { return true }

func (w *nodeWatcher) Start(ctx context.Context) error {
	r := w.r
	log := logf.FromContext(ctx).WithValues("node", r.Node)
	b := backoff{min: 100 * time.Millisecond, max: 10 * time.Second}
	var index uint64
	var resync <-chan time.Time
	if r.ResyncPeriod > 0 {
		t := time.NewTicker(r.ResyncPeriod)
		defer t.Stop()
		resync = t.C
	}
	go func() {
		for {
			select {
			case <-ctx.Done():
				return
			case <-resync:
				if err := r.Resync(ctx); err != nil && ctx.Err() == nil {
					r.Metrics.Errors.WithLabelValues(DirectionToConsul).Inc()
					log.Error(err, "Resync of Services to Consul failed; the next period tries again")
				}
			}
		}
	}()
	var lastRead time.Time
	var interval time.Duration
	for ctx.Err() == nil {
		// Every registration, the sync's own included, ends the blocking query, and each read returns
		// the whole node: reading after every write of a full sync is quadratic (`make bench`: most of
		// the sync's CPU). So reads are nodeReadInterval apart at least, and further apart on a node so
		// large that reading it takes long; what changes meanwhile is in the next one, as the index
		// carries on. An idle node is followed by one query always in flight.
		if pause := interval - time.Since(lastRead); pause > 0 {
			select {
			case <-time.After(pause):
			case <-ctx.Done():
				return nil
			}
		}
		lastRead = time.Now()
		since := r.state.writes()
		observed, meta, cost, err := w.read(ctx, index)
		interval = max(nodeReadInterval, readShare*cost)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			r.Metrics.Errors.WithLabelValues(DirectionToConsul).Inc()
			log.Error(err, "Reading Consul node failed; retrying")
			// After an error Consul may be a new, empty server whose index is below ours: start over.
			index = 0
			b.wait(ctx)
			continue
		}
		b.reset()
		for _, k := range r.state.replace(observed, since) {
			r.enqueue(ctx, k)
		}
		// Blocking-query rules: an index that goes backwards means a restore or a new server; never wait
		// on 0 after a response.
		if meta.LastIndex < index {
			index = 0
		} else {
			index = max(meta.LastIndex, 1)
		}
	}
	return nil
}

// read returns the owned instances on the node with their check status, blocking until the node's
// services change past index (or Consul's wait time), and what reading it costs: twice the time of its
// second query, which does not block and returns as much.
func (w *nodeWatcher) read(ctx context.Context, index uint64) (map[string]Instance, *consulapi.QueryMeta, time.Duration, error) {
	r := w.r
	q := (&consulapi.QueryOptions{WaitIndex: index, WaitTime: nodeWait}).WithContext(ctx)
	list, meta, err := r.Consul.Catalog().NodeServiceList(r.Node, q)
	if err != nil {
		return nil, nil, 0, err
	}
	start := time.Now()
	checks, _, err := r.Consul.Health().Node(r.Node, (&consulapi.QueryOptions{}).WithContext(ctx))
	if err != nil {
		return nil, nil, 0, err
	}
	status := map[string]string{}
	for _, c := range checks {
		if c.ServiceID != "" && c.CheckID == checkID(c.ServiceID) {
			status[c.ServiceID] = c.Status
		}
	}
	out := map[string]Instance{}
	if list == nil {
		return out, meta, 2 * time.Since(start), nil
	}
	for _, s := range list.Services {
		if s.Meta[MetaOwner] != r.Settings.Cluster {
			continue
		}
		tags := slices.Clone(s.Tags)
		slices.Sort(tags)
		out[s.ID] = Instance{
			ID: s.ID, Service: s.Service, Address: s.Address, Port: s.Port,
			Tags: tags, Meta: s.Meta, Status: status[s.ID],
		}
	}
	return out, meta, 2 * time.Since(start), nil
}

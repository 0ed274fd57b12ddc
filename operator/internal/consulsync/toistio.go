package consulsync

import (
	"context"
	"fmt"
	"maps"
	"sync"
	"time"

	"github.com/go-logr/logr"
	consulapi "github.com/hashicorp/consul/api"
	"google.golang.org/protobuf/proto"
	networkingv1 "istio.io/client-go/pkg/apis/networking/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/klog/v2"
	"sigs.k8s.io/controller-runtime/pkg/client"
	logf "sigs.k8s.io/controller-runtime/pkg/log"

	"meshplane.dev/operator/internal/desiredstate"
)

// FieldManager is the server-side-apply field manager of the Consul → Istio direction.
const FieldManager = "meshplane-consul-sync"

// ToIstio mirrors Consul services that did not come from Kubernetes into Istio ServiceEntries in one
// namespace, following Consul with blocking queries: one on the list of services with an instance from
// outside Kubernetes, one per such service on its health. It writes only when the desired ServiceEntry
// differs from the one in the cluster.
type ToIstio struct {
	Client    client.Client
	Consul    *consulapi.Client
	Namespace string
	Metrics   *Metrics

	mu       sync.Mutex
	watchers map[string]*watcher
	imported map[string]bool
}

type watcher struct {
	cancel context.CancelFunc
	done   chan struct{}
}

// NeedLeaderElection: one writer per cluster.
func (s *ToIstio) NeedLeaderElection() bool { return true }

// Start runs until ctx ends.
func (s *ToIstio) Start(ctx context.Context) error {
	log := logf.FromContext(ctx).WithValues("direction", DirectionToIstio, "namespace", s.Namespace)
	ctx = logf.IntoContext(ctx, log)
	s.watchers = map[string]*watcher{}
	s.imported = map[string]bool{}
	b := backoff{min: 100 * time.Millisecond, max: 10 * time.Second}
	var index uint64
	cleaned := false
	var lastList time.Time
	for ctx.Err() == nil {
		// Every catalog write ends this blocking query, and Consul answers it by evaluating the filter on
		// every instance of every service: during a full sync of thousands of Services into Consul,
		// answering at once would spend Consul's CPU on this list while the sync writes. New services to
		// import are seen within listInterval; the endpoints of imported ones are followed at once by
		// their own queries.
		if pause := listInterval - time.Since(lastList); pause > 0 {
			select {
			case <-time.After(pause):
			case <-ctx.Done():
				continue // the loop ends, and its watchers with it
			}
		}
		lastList = time.Now()
		q := (&consulapi.QueryOptions{WaitIndex: index, WaitTime: 5 * time.Minute, Filter: notFromKubernetes}).WithContext(ctx)
		names, meta, err := s.Consul.Catalog().Services(q)
		if err != nil {
			if ctx.Err() != nil {
				break
			}
			s.Metrics.Errors.WithLabelValues(DirectionToIstio).Inc()
			log.Error(err, "Listing Consul services failed; retrying")
			index = 0
			b.wait(ctx)
			continue
		}
		b.reset()
		s.follow(ctx, names)
		if !cleaned {
			// Only after Consul's full list is known: ServiceEntries of services deregistered while the
			// operator was down are removed, nothing else.
			if err := s.removeOrphans(ctx, names); err != nil {
				log.Error(err, "Removing orphaned ServiceEntries failed")
			} else {
				cleaned = true
			}
		}
		if meta.LastIndex < index {
			index = 0
		} else {
			index = max(meta.LastIndex, 1)
		}
	}
	s.mu.Lock()
	for _, w := range s.watchers {
		w.cancel()
	}
	s.mu.Unlock()
	return nil
}

// listInterval is the shortest time between two lists of Consul's services.
const listInterval = time.Second

// notFromKubernetes keeps the Consul services with at least one instance that did not come from
// Kubernetes: only those can be imported (see Imported). Services synced from Kubernetes get no watcher:
// a blocking query per service holds a connection per service, and Consul refuses more than 200 per
// client (http_max_conns_per_client) — `make bench` with 2,000 Services saw every call of the operator,
// both directions, answered 429.
const notFromKubernetes = `ServiceMeta["` + MetaExternalSource + `"] != "kubernetes"`

// follow starts a watcher for each new Consul service and stops (and cleans up after) each one gone.
func (s *ToIstio) follow(ctx context.Context, names map[string][]string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for name := range names {
		if name == "consul" {
			continue
		}
		if _, ok := s.watchers[name]; ok {
			continue
		}
		wctx, cancel := context.WithCancel(ctx)
		w := &watcher{cancel: cancel, done: make(chan struct{})}
		s.watchers[name] = w
		go func() {
			defer close(w.done)
			s.watch(wctx, name)
		}()
	}
	for name, w := range s.watchers {
		if _, ok := names[name]; ok {
			continue
		}
		w.cancel()
		delete(s.watchers, name)
		delete(s.imported, name)
		// Delete only once the watcher has stopped, so an apply in flight cannot bring the entry back.
		go func() {
			<-w.done
			s.mu.Lock()
			_, back := s.watchers[name]
			s.mu.Unlock()
			if back {
				return // re-registered meanwhile: its new watcher owns the entry
			}
			if err := s.delete(ctx, name); err != nil {
				s.Metrics.Errors.WithLabelValues(DirectionToIstio).Inc()
				logf.FromContext(ctx).Error(err, "Deleting ServiceEntry failed", "consulService", name)
			}
		}()
	}
	s.Metrics.Services.WithLabelValues(DirectionToIstio).Set(float64(countTrue(s.imported)))
}

// watch follows one Consul service's health until ctx ends.
func (s *ToIstio) watch(ctx context.Context, name string) {
	log := logf.FromContext(ctx).WithValues("consulService", name)
	b := backoff{min: 100 * time.Millisecond, max: 10 * time.Second}
	var index uint64
	for ctx.Err() == nil {
		q := (&consulapi.QueryOptions{WaitIndex: index, WaitTime: 5 * time.Minute}).WithContext(ctx)
		entries, meta, err := s.Consul.Health().Service(name, "", false, q)
		if err == nil {
			err = s.apply(ctx, log, name, entries)
		}
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			s.Metrics.Errors.WithLabelValues(DirectionToIstio).Inc()
			log.Error(err, "Syncing Consul service to Istio failed; retrying")
			index = 0
			b.wait(ctx)
			continue
		}
		b.reset()
		if meta.LastIndex < index {
			index = 0
		} else {
			index = max(meta.LastIndex, 1)
		}
	}
}

// apply writes the ServiceEntry for name if it differs from the cluster's, or deletes it when the service
// is no longer imported (e.g. it turned out to come from Kubernetes).
func (s *ToIstio) apply(ctx context.Context, log logr.Logger, name string, entries []*consulapi.ServiceEntry) error {
	imported := Imported(name, entries)
	s.mu.Lock()
	if _, following := s.watchers[name]; following {
		s.imported[name] = imported
	}
	s.Metrics.Services.WithLabelValues(DirectionToIstio).Set(float64(countTrue(s.imported)))
	s.mu.Unlock()
	if !imported {
		return s.delete(ctx, name)
	}
	desired, err := DesiredServiceEntry(name, entries, s.Namespace)
	if err != nil {
		// A name Istio cannot use: report, but do not retry in a loop.
		log.Error(err, "Consul service not imported")
		return nil
	}
	var current networkingv1.ServiceEntry
	err = s.Client.Get(ctx, client.ObjectKeyFromObject(desired), &current)
	switch {
	case err == nil:
		if proto.Equal(&current.Spec, &desired.Spec) && subset(desired.Labels, current.Labels) && subset(desired.Annotations, current.Annotations) {
			return nil
		}
	case !apierrors.IsNotFound(err):
		return fmt.Errorf("get serviceentry %s: %w", desired.Name, err)
	}
	u, err := desiredstate.Unstructured(desired)
	if err != nil {
		return err
	}
	if err := s.Client.Apply(ctx, client.ApplyConfigurationFromUnstructured(u), client.FieldOwner(FieldManager), client.ForceOwnership); err != nil {
		return fmt.Errorf("apply serviceentry %s: %w", desired.Name, err)
	}
	s.Metrics.Writes.WithLabelValues(DirectionToIstio, "apply").Inc()
	log.Info("Applied ServiceEntry", "serviceEntry", klog.KObj(desired), "endpoints", len(desired.Spec.Endpoints))
	return nil
}

// delete removes the ServiceEntry of a Consul service, if this sync wrote it.
func (s *ToIstio) delete(ctx context.Context, name string) error {
	key := types.NamespacedName{Namespace: s.Namespace, Name: ServiceEntryName(name)}
	var se networkingv1.ServiceEntry
	if err := s.Client.Get(ctx, key, &se); err != nil {
		return client.IgnoreNotFound(err)
	}
	if se.Labels[LabelManagedBy] != ManagedBy || se.Annotations[AnnotationConsulService] != name {
		return nil
	}
	if err := s.Client.Delete(ctx, &se, client.Preconditions{UID: &se.UID}); err != nil {
		return client.IgnoreNotFound(err)
	}
	s.Metrics.Writes.WithLabelValues(DirectionToIstio, "delete").Inc()
	logf.FromContext(ctx).Info("Deleted ServiceEntry", "serviceEntry", klog.KObj(&se))
	return nil
}

// removeOrphans deletes ServiceEntries this sync wrote for Consul services that no longer exist, or no
// longer have an instance from outside Kubernetes.
func (s *ToIstio) removeOrphans(ctx context.Context, names map[string][]string) error {
	var list networkingv1.ServiceEntryList
	if err := s.Client.List(ctx, &list, client.InNamespace(s.Namespace), client.HasLabels{LabelConsulService}, client.MatchingLabels{LabelManagedBy: ManagedBy}); err != nil {
		return err
	}
	for _, se := range list.Items {
		name := se.Annotations[AnnotationConsulService]
		if _, ok := names[name]; ok {
			continue
		}
		if err := s.delete(ctx, name); err != nil {
			return err
		}
	}
	return nil
}

func subset(want, have map[string]string) bool {
	for k, v := range want {
		if have[k] != v {
			return false
		}
	}
	return true
}

func countTrue(m map[string]bool) int {
	n := 0
	for v := range maps.Values(m) {
		if v {
			n++
		}
	}
	return n
}

func metaFor(key types.NamespacedName) metav1.ObjectMeta {
	return metav1.ObjectMeta{Namespace: key.Namespace, Name: key.Name}
}

package controller_test

import (
	"context"
	"fmt"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"

	networkingv1 "istio.io/client-go/pkg/apis/networking/v1"
	"k8s.io/apimachinery/pkg/watch"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"meshplane.dev/mesh/devkit/wait"
	"meshplane.dev/operator/api/v1alpha1"
	pt "meshplane.dev/operator/test/policytest"
)

// write is one change of a VirtualService or DestinationRule as the API server recorded it.
type write struct {
	rv      int64
	kind    string
	deleted bool
	subsets []string // DestinationRule: subsets defined; VirtualService: subsets routed to
}

func (w write) String() string {
	op := "write"
	if w.deleted {
		op = "delete"
	}
	return fmt.Sprintf("rv=%d %s %s %v", w.rv, op, w.kind, w.subsets)
}

// recorder watches the VirtualServices and DestinationRules of a namespace and keeps every change.
type recorder struct {
	mu     sync.Mutex
	writes []write
}

func (r *recorder) watch(ctx context.Context, t *testing.T, ns string, list client.ObjectList) {
	t.Helper()
	wc, err := client.NewWithWatch(env.Config, client.Options{Scheme: env.Scheme})
	if err != nil {
		t.Fatal(err)
	}
	w, err := wc.Watch(ctx, list, client.InNamespace(ns))
	if err != nil {
		t.Fatal(err)
	}
	go func() {
		defer w.Stop()
		for e := range w.ResultChan() {
			obj, ok := e.Object.(client.Object)
			if !ok {
				continue
			}
			rv, _ := strconv.ParseInt(obj.GetResourceVersion(), 10, 64)
			rec := write{rv: rv, deleted: e.Type == watch.Deleted}
			switch o := obj.(type) {
			case *networkingv1.VirtualService:
				rec.kind = "VirtualService"
				for _, d := range o.Spec.Http[0].Route {
					if s := d.GetDestination().GetSubset(); s != "" {
						rec.subsets = append(rec.subsets, s)
					}
				}
			case *networkingv1.DestinationRule:
				rec.kind = "DestinationRule"
				for _, s := range o.Spec.Subsets {
					rec.subsets = append(rec.subsets, s.Name)
				}
			}
			r.mu.Lock()
			r.writes = append(r.writes, rec)
			r.mu.Unlock()
		}
	}()
}

// inOrder returns the writes in the order the API server made them. Resource versions are etcd
// revisions, which are global and increasing: that orders writes across the two watches. (Clients may
// not rely on this in general; this test, against etcd, may.)
func (r *recorder) inOrder() []write {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := slices.Clone(r.writes)
	sort.Slice(out, func(i, j int) bool { return out[i].rv < out[j].rv })
	return out
}

// Adding, swapping and removing canary subsets never leaves the VirtualService routing to a subset the
// DestinationRule lacks at that moment, judged from the order of writes the API server recorded (no
// timing involved).
func TestSubsetChangesAreMakeBeforeBreak(t *testing.T) {
	ns := namespace(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	rec := &recorder{}
	rec.watch(ctx, t, ns, &networkingv1.VirtualServiceList{})
	rec.watch(ctx, t, ns, &networkingv1.DestinationRuleList{})

	p := pt.Policy(ns, "catalog", pt.Split("v1", 100))
	create(t, pt.Service(ns, "catalog"), p)
	wait.For(t, timeout, func() error { return inSync(p) })
	for _, change := range []Option{
		pt.Split("v1", 90, "v2", 10),                           // add a canary
		pt.Split("v2", 100),                                    // promote it, drop v1
		pt.Split("v3", 100),                                    // swap one subset for another at once
		pt.Split("v3", 50, "v4", 50),                           // add again
		func(p *v1alpha1.TrafficPolicy) { p.Spec.Split = nil }, // no split: the DestinationRule goes
	} {
		update(t, p, change)
		wait.For(t, timeout, func() error { return inSync(p) })
	}

	// Wait for the watches to deliver the last writes: the DestinationRule's deletion and the
	// VirtualService's current version.
	vs := &networkingv1.VirtualService{}
	if err := k8s.Get(context.Background(), client.ObjectKeyFromObject(p), vs); err != nil {
		t.Fatal(err)
	}
	last, _ := strconv.ParseInt(vs.ResourceVersion, 10, 64)
	wait.For(t, timeout, func() error {
		ws := rec.inOrder()
		if !slices.ContainsFunc(ws, func(w write) bool { return w.kind == "DestinationRule" && w.deleted }) ||
			!slices.ContainsFunc(ws, func(w write) bool { return w.kind == "VirtualService" && w.rv >= last }) {
			return fmt.Errorf("watches have not delivered the last writes yet: %v", ws)
		}
		return nil
	})

	var defined []string // the DestinationRule's subsets at each point
	var log []string
	routedAtDelete := false
	for _, w := range rec.inOrder() {
		log = append(log, w.String())
		switch {
		case w.kind == "DestinationRule" && w.deleted:
			defined = nil
		case w.kind == "DestinationRule":
			defined = w.subsets
		case w.kind == "VirtualService" && !w.deleted:
			for _, s := range w.subsets {
				if !slices.Contains(defined, s) {
					t.Errorf("VirtualService routed to subset %q while the DestinationRule defined only %v:\n%s", s, defined, strings.Join(log, "\n"))
				}
			}
			routedAtDelete = len(w.subsets) > 0
		}
		if w.kind == "DestinationRule" && w.deleted && routedAtDelete {
			t.Errorf("DestinationRule deleted while the VirtualService still routed to its subsets:\n%s", strings.Join(log, "\n"))
		}
	}
	if n := len(log); n < 10 {
		t.Errorf("saw only %d writes, expected the DestinationRule and VirtualService to change at every step:\n%s", n, strings.Join(log, "\n"))
	}
	t.Logf("writes in API server order:\n%s", strings.Join(log, "\n"))
}

// Option is a policy change, as the policytest builders make.
type Option = pt.Option

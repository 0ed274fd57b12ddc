package consulsync

import (
	"maps"
	"slices"
	"testing"

	"github.com/google/go-cmp/cmp"
	"k8s.io/apimachinery/pkg/types"
)

// A read of the node that started before the sync's own writes committed may not show them; the sync's
// view of those instances stands until a read that started after them, so they are not written again. What
// a later read shows (someone else's deletion) counts.
func TestNodeReadDoesNotUndoLaterWrites(t *testing.T) {
	in := func(id, svc string) Instance {
		return Instance{ID: id, Service: svc, Meta: map[string]string{MetaNamespace: "shop", MetaService: svc}}
	}
	var s nodeState
	s.reset(nil)
	if changed := s.replace(map[string]Instance{}, s.writes()); len(changed) != 0 {
		t.Fatalf("first read of an empty node changed %v", changed)
	}
	before := s.writes()
	s.put(in("orders-1", "orders"))
	s.put(in("payments-1", "payments"))
	s.remove("payments-1")

	// The read started before those writes and shows none of them.
	if changed := s.replace(map[string]Instance{"payments-1": in("payments-1", "payments")}, before); len(changed) != 0 {
		t.Errorf("a read that started before the sync's writes changed %v; want nothing", changed)
	}
	if got := slices.Collect(maps.Keys(s.forService(types.NamespacedName{Namespace: "shop", Name: "orders"}))); !slices.Equal(got, []string{"orders-1"}) {
		t.Errorf("orders instances after the early read = %v, want [orders-1]", got)
	}

	// A read that started after them, without orders-1: someone else removed it.
	changed := s.replace(map[string]Instance{}, s.writes())
	if diff := cmp.Diff([]types.NamespacedName{{Namespace: "shop", Name: "orders"}}, changed); diff != "" {
		t.Errorf("Services changed by a later read (-want +got):\n%s", diff)
	}
}

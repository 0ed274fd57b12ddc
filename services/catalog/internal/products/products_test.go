package products

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/prometheus/client_golang/prometheus"
)

// countingRepo counts reads that reach the store behind the cache.
type countingRepo struct {
	Repository
	gets, lists int
}

func (c *countingRepo) Get(ctx context.Context, id string) (Product, error) {
	c.gets++
	return c.Repository.Get(ctx, id)
}

func (c *countingRepo) List(ctx context.Context) ([]Product, error) {
	c.lists++
	return c.Repository.List(ctx)
}

func TestCacheServesWithinTTLAndRefetchesAfter(t *testing.T) {
	store := &countingRepo{Repository: NewMemory(Seed())}
	now := time.Unix(1000, 0)
	c := NewCache(store, time.Minute, prometheus.NewRegistry())
	c.now = func() time.Time { return now }
	ctx := context.Background()

	for range 3 {
		if _, err := c.Get(ctx, "moka-pot"); err != nil {
			t.Fatal(err)
		}
		if _, err := c.List(ctx); err != nil {
			t.Fatal(err)
		}
	}
	now = now.Add(2 * time.Minute)
	if _, err := c.Get(ctx, "moka-pot"); err != nil {
		t.Fatal(err)
	}
	for range 2 {
		if _, err := c.Get(ctx, "no-such"); !errors.Is(err, ErrNotFound) {
			t.Errorf("unknown id: got %v want ErrNotFound", err)
		}
	}
	if diff := cmp.Diff([2]int{4, 1}, [2]int{store.gets, store.lists}); diff != "" {
		t.Errorf("reads reaching the store [gets lists] (-want +got):\n%s\n(1 get + 1 after expiry + 2 uncached misses; 1 list)", diff)
	}
}

func TestMemoryListIsOrderedByID(t *testing.T) {
	ps, _ := NewMemory(Seed()).List(context.Background())
	for i := 1; i < len(ps); i++ {
		if ps[i-1].ID >= ps[i].ID {
			t.Fatalf("List not ordered: %s before %s", ps[i-1].ID, ps[i].ID)
		}
	}
}

// Package products stores the catalog's products behind a small repository interface, with an
// in-memory implementation seeded at start and a read cache in front of it.
package products

import (
	"context"
	"errors"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Product is something the shop sells.
type Product struct {
	ID          string
	Name        string
	Description string
	PriceCents  int64
	Currency    string
}

// ErrNotFound is returned for an unknown product id.
var ErrNotFound = errors.New("product not found")

// Repository reads products.
type Repository interface {
	// List returns every product ordered by id.
	List(ctx context.Context) ([]Product, error)
	// Get returns one product or ErrNotFound.
	Get(ctx context.Context, id string) (Product, error)
}

// Seed is the catalog the shop starts with.
func Seed() []Product {
	return []Product{
		{ID: "espresso-cup", Name: "Espresso cup", Description: "Thick-walled porcelain, 80 ml.", PriceCents: 1200, Currency: "EUR"},
		{ID: "moka-pot", Name: "Moka pot", Description: "Stovetop brewer for three cups.", PriceCents: 3400, Currency: "EUR"},
		{ID: "hand-grinder", Name: "Hand grinder", Description: "Conical steel burrs, 40 clicks.", PriceCents: 8900, Currency: "EUR"},
		{ID: "pour-over-kettle", Name: "Pour-over kettle", Description: "Gooseneck, 1 litre.", PriceCents: 4500, Currency: "EUR"},
		{ID: "paper-filters", Name: "Paper filters", Description: "Pack of 100, size 02.", PriceCents: 600, Currency: "EUR"},
		{ID: "bean-tin", Name: "Bean tin", Description: "Airtight, keeps 250 g.", PriceCents: 1800, Currency: "EUR"},
		{ID: "milk-jug", Name: "Milk jug", Description: "Stainless steel, 350 ml.", PriceCents: 1500, Currency: "EUR"},
		{ID: "tamper", Name: "Tamper", Description: "58 mm, walnut handle.", PriceCents: 2900, Currency: "EUR"},
	}
}

// Memory is a Repository held in memory.
type Memory struct {
	byID map[string]Product
	ids  []string
}

// NewMemory returns a Memory holding ps.
func NewMemory(ps []Product) *Memory {
	m := &Memory{byID: map[string]Product{}}
	for _, p := range ps {
		m.byID[p.ID] = p
		m.ids = append(m.ids, p.ID)
	}
	slices.SortFunc(m.ids, strings.Compare)
	return m
}

// List implements Repository.
func (m *Memory) List(context.Context) ([]Product, error) {
	out := make([]Product, 0, len(m.ids))
	for _, id := range m.ids {
		out = append(out, m.byID[id])
	}
	return out, nil
}

// Get implements Repository.
func (m *Memory) Get(_ context.Context, id string) (Product, error) {
	p, ok := m.byID[id]
	if !ok {
		return Product{}, ErrNotFound
	}
	return p, nil
}

// Cache is a read cache in front of a Repository: reads within ttl of the last fetch are served from
// memory. Misses (ErrNotFound) are not cached, so a product added later is found at once.
type Cache struct {
	next    Repository
	ttl     time.Duration
	now     func() time.Time
	lookups *prometheus.CounterVec

	mu     sync.Mutex
	list   []Product
	listAt time.Time
	byID   map[string]Product
	byIDAt map[string]time.Time
}

// NewCache wraps next; ttl 0 turns caching off. It registers meshplane_catalog_cache_lookups_total
// {result=hit|miss} in reg.
func NewCache(next Repository, ttl time.Duration, reg prometheus.Registerer) *Cache {
	c := &Cache{next: next, ttl: ttl, now: time.Now, byID: map[string]Product{}, byIDAt: map[string]time.Time{},
		lookups: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "meshplane_catalog_cache_lookups_total",
			Help: "Catalog read-cache lookups by result: hit or miss.",
		}, []string{"result"})}
	reg.MustRegister(c.lookups)
	return c
}

func (c *Cache) fresh(at time.Time) bool { return c.ttl > 0 && !at.IsZero() && c.now().Sub(at) < c.ttl }

// List implements Repository.
func (c *Cache) List(ctx context.Context) ([]Product, error) {
	c.mu.Lock()
	if c.fresh(c.listAt) {
		ps := slices.Clone(c.list)
		c.mu.Unlock()
		c.lookups.WithLabelValues("hit").Inc()
		return ps, nil
	}
	c.mu.Unlock()
	c.lookups.WithLabelValues("miss").Inc()
	ps, err := c.next.List(ctx)
	if err != nil {
		return nil, err
	}
	c.mu.Lock()
	c.list, c.listAt = slices.Clone(ps), c.now()
	c.mu.Unlock()
	return ps, nil
}

// Get implements Repository.
func (c *Cache) Get(ctx context.Context, id string) (Product, error) {
	c.mu.Lock()
	if p, ok := c.byID[id]; ok && c.fresh(c.byIDAt[id]) {
		c.mu.Unlock()
		c.lookups.WithLabelValues("hit").Inc()
		return p, nil
	}
	c.mu.Unlock()
	c.lookups.WithLabelValues("miss").Inc()
	p, err := c.next.Get(ctx, id)
	if err != nil {
		return Product{}, err
	}
	c.mu.Lock()
	c.byID[id], c.byIDAt[id] = p, c.now()
	c.mu.Unlock()
	return p, nil
}

// Package store keeps orders, their items, the idempotency keys that placed them and the outbox of
// their events in PostgreSQL.
// Every replica shares it, so a key places one order however retries are spread (see the migrations
// for the states an order goes through).
package store

import (
	"context"
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"time"

	"github.com/jackc/pgx/v5"

	"meshplane.dev/mesh/pgstore"
)

//go:embed migrations/*.sql
var migrationFiles embed.FS

// Migrations are orders' schema versions, applied by pgstore.Open.
func Migrations() fs.FS {
	sub, err := fs.Sub(migrationFiles, "migrations")
	if err != nil {
		panic(err) // the embedded tree is fixed at build time
	}
	return sub
}

// Component names orders' schema in meshplane_schema_migrations.
const Component = "orders"

// Operation labels of orders' database metrics.
const (
	OpCreate   = "create_order"
	OpByKey    = "order_by_key"
	OpGet      = "get_order"
	OpClaim    = "claim_order"
	OpMarkPaid = "mark_paid"
	OpRelease  = "release_order"
	OpDelete   = "delete_order"
	// The outbox relay's.
	OpRelay   = "relay_events"
	OpBacklog = "outbox_backlog"
	OpPrune   = "prune_outbox"
)

// Operations are every operation label, so their series exist from the start.
var Operations = []string{OpCreate, OpByKey, OpGet, OpClaim, OpMarkPaid, OpRelease, OpDelete, OpRelay, OpBacklog, OpPrune}

// Order statuses.
const (
	StatusPending = "pending"
	StatusPaid    = "paid"
)

// Item is one line of an order.
type Item struct {
	ProductID      string
	Quantity       int32
	UnitPriceCents int64
}

// Order is an order as stored.
type Order struct {
	ID             string
	IdempotencyKey string
	Fingerprint    string
	Status         string
	Currency       string
	TotalCents     int64
	ChargeID       string
	Items          []Item
	CreatedAt      time.Time
	// Leased reports whether a placement holds the order's lease now (by the database's clock).
	Leased bool
}

// ErrNotFound is the answer for an order that does not exist. It wraps pgx.ErrNoRows, which pgstore
// passes through as an answer rather than a database failure.
var ErrNotFound = fmt.Errorf("order not found: %w", pgx.ErrNoRows)

// Store is orders' database.
type Store struct{ db *pgstore.Store }

// New wraps an opened pgstore.
func New(db *pgstore.Store) *Store { return &Store{db: db} }

// Create records o as pending with its items, leased for lease to the caller, in one transaction —
// unless an order with its key exists: then it returns that order and false, and records nothing.
// A concurrent Create with the same key waits for this transaction to end, then sees its order.
func (s *Store) Create(ctx context.Context, o Order, lease time.Duration) (Order, bool, error) {
	var existing Order
	created := false
	err := s.db.Tx(ctx, OpCreate, func(ctx context.Context, tx pgstore.DB) error {
		err := tx.QueryRow(ctx, `INSERT INTO orders (id, idempotency_key, request_fingerprint, status, currency, total_cents, lease_until)
			VALUES ($1, $2, $3, 'pending', $4, $5, now() + $6 * interval '1 millisecond')
			ON CONFLICT (idempotency_key) DO NOTHING RETURNING created_at`,
			o.ID, o.IdempotencyKey, o.Fingerprint, o.Currency, o.TotalCents, lease.Milliseconds()).Scan(&o.CreatedAt)
		if errors.Is(err, pgx.ErrNoRows) {
			existing, err = get(ctx, tx, "idempotency_key", o.IdempotencyKey)
			return err
		}
		if err != nil {
			return err
		}
		products, quantities, prices := make([]string, len(o.Items)), make([]int32, len(o.Items)), make([]int64, len(o.Items))
		for i, it := range o.Items {
			products[i], quantities[i], prices[i] = it.ProductID, it.Quantity, it.UnitPriceCents
		}
		if _, err := tx.Exec(ctx, `INSERT INTO order_items (order_id, position, product_id, quantity, unit_price_cents)
			SELECT $1, p.ord - 1, p.product_id, p.quantity, p.price
			FROM unnest($2::text[], $3::int[], $4::bigint[]) WITH ORDINALITY AS p(product_id, quantity, price, ord)`,
			o.ID, products, quantities, prices); err != nil {
			return err
		}
		created = true
		return nil
	})
	if err != nil {
		return Order{}, false, err
	}
	if created {
		o.Status, o.Leased = StatusPending, true
		return o, true, nil
	}
	return existing, false, nil
}

// Get returns the order with id, or ErrNotFound.
func (s *Store) Get(ctx context.Context, id string) (Order, error) {
	return s.read(ctx, OpGet, "id", id)
}

// ByKey returns the order placed with idempotency key key, or ErrNotFound.
func (s *Store) ByKey(ctx context.Context, key string) (Order, error) {
	return s.read(ctx, OpByKey, "idempotency_key", key)
}

func (s *Store) read(ctx context.Context, op, column, value string) (Order, error) {
	var o Order
	err := s.db.Do(ctx, op, func(ctx context.Context, db pgstore.DB) error {
		var err error
		o, err = get(ctx, db, column, value)
		return err
	})
	return o, err
}

// get reads the order whose column (id or idempotency_key) is value, with its items.
func get(ctx context.Context, db pgstore.DB, column, value string) (Order, error) {
	var o Order
	var chargeID *string
	err := db.QueryRow(ctx, `SELECT id, idempotency_key, request_fingerprint, status, currency, total_cents, charge_id, created_at,
			coalesce(lease_until > now(), false)
		FROM orders WHERE `+column+` = $1`, value).
		Scan(&o.ID, &o.IdempotencyKey, &o.Fingerprint, &o.Status, &o.Currency, &o.TotalCents, &chargeID, &o.CreatedAt, &o.Leased)
	if errors.Is(err, pgx.ErrNoRows) {
		return Order{}, ErrNotFound
	}
	if err != nil {
		return Order{}, err
	}
	if chargeID != nil {
		o.ChargeID = *chargeID
	}
	rows, err := db.Query(ctx, "SELECT product_id, quantity, unit_price_cents FROM order_items WHERE order_id = $1 ORDER BY position", o.ID)
	if err != nil {
		return Order{}, err
	}
	o.Items, err = pgx.CollectRows(rows, func(r pgx.CollectableRow) (Item, error) {
		var it Item
		return it, r.Scan(&it.ProductID, &it.Quantity, &it.UnitPriceCents)
	})
	return o, err
}

// Claim takes the lease of pending order id for lease if nobody holds it (it passed, or was released),
// reporting whether it did: the claimant then resumes the placement.
func (s *Store) Claim(ctx context.Context, id string, lease time.Duration) (bool, error) {
	return s.update(ctx, OpClaim, `UPDATE orders SET lease_until = now() + $2 * interval '1 millisecond'
		WHERE id = $1 AND status = 'pending' AND (lease_until IS NULL OR lease_until <= now())`, id, lease.Milliseconds())
}

// MarkPaid records pending order id as paid by charge chargeID and returns the order as stored, and
// whether this call paid it: false when another placement got there first (with the same charge, which
// payments deduplicated). The call that pays the order also writes ev to the outbox, in the same
// transaction: the event exists if and only if the order was paid, once.
func (s *Store) MarkPaid(ctx context.Context, id, chargeID string, ev Event) (Order, bool, error) {
	var o Order
	paid := false
	err := s.db.Tx(ctx, OpMarkPaid, func(ctx context.Context, tx pgstore.DB) error {
		tag, err := tx.Exec(ctx, `UPDATE orders SET status = 'paid', charge_id = $2, paid_at = now(), lease_until = NULL
			WHERE id = $1 AND status = 'pending'`, id, chargeID)
		if err != nil {
			return err
		}
		if paid = tag.RowsAffected() > 0; paid {
			if _, err := tx.Exec(ctx, `INSERT INTO outbox (id, subject, event_type, payload, trace_id, order_id)
				VALUES ($1, $2, $3, $4, $5, $6)`, ev.ID, ev.Subject, ev.Type, ev.Payload, ev.TraceID, id); err != nil {
				return err
			}
		}
		o, err = get(ctx, tx, "id", id)
		return err
	})
	if err != nil {
		return Order{}, false, err
	}
	return o, paid, nil
}

// Release gives up the lease of pending order id, so that a retry may resume it at once.
func (s *Store) Release(ctx context.Context, id string) error {
	_, err := s.update(ctx, OpRelease, "UPDATE orders SET lease_until = NULL WHERE id = $1 AND status = 'pending'", id)
	return err
}

// Delete removes pending order id and its items: its charge was refused, so nothing was charged and a
// retry with the same key starts afresh.
func (s *Store) Delete(ctx context.Context, id string) error {
	_, err := s.update(ctx, OpDelete, "DELETE FROM orders WHERE id = $1 AND status = 'pending'", id)
	return err
}

func (s *Store) update(ctx context.Context, op, sql string, args ...any) (bool, error) {
	changed := false
	err := s.db.Do(ctx, op, func(ctx context.Context, db pgstore.DB) error {
		tag, err := db.Exec(ctx, sql, args...)
		changed = tag.RowsAffected() > 0
		return err
	})
	return changed, err
}

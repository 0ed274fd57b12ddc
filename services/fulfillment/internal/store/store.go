// Package store keeps fulfillment's shipments, and the record of every event it processed, in its own
// PostgreSQL database: the record is what makes processing an event idempotent (see the migrations).
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

// Migrations are fulfillment's schema versions, applied by pgstore.Open.
func Migrations() fs.FS {
	sub, err := fs.Sub(migrationFiles, "migrations")
	if err != nil {
		panic(err) // the embedded tree is fixed at build time
	}
	return sub
}

// Component names fulfillment's schema in meshplane_schema_migrations.
const Component = "fulfillment"

// Operation labels of fulfillment's database metrics.
const (
	OpProcess     = "process_event"
	OpGetShipment = "get_shipment"
)

// Operations are every operation label, so their series exist from the start.
var Operations = []string{OpProcess, OpGetShipment}

// StatusPreparing is a new shipment's status: ready to pick and pack.
const StatusPreparing = "preparing"

// Item is one line of a shipment.
type Item struct {
	ProductID string `json:"productId"`
	Quantity  int32  `json:"quantity"`
}

// Shipment is a shipment as stored.
type Shipment struct {
	ID            string
	OrderID       string
	EventID       string
	Status        string
	Items         []Item
	TotalCents    int64
	Currency      string
	TraceID       string
	OrderPlacedAt time.Time
	CreatedAt     time.Time
	// Deliveries is how many times the event had been delivered when it was processed.
	Deliveries int
}

// Delivery is where an event came from: its subject and JetStream metadata.
type Delivery struct {
	Subject        string
	StreamSequence uint64
	Deliveries     int
}

// ErrNotFound is the answer for an order without a shipment. It wraps pgx.ErrNoRows, which pgstore
// passes through as an answer rather than a database failure.
var ErrNotFound = fmt.Errorf("shipment not found: %w", pgx.ErrNoRows)

// Store is fulfillment's database.
type Store struct{ db *pgstore.Store }

// New wraps an opened pgstore.
func New(db *pgstore.Store) *Store { return &Store{db: db} }

// Process records event eventID as processed and creates shipment sh for it, in one transaction —
// unless the event was processed before, or the order already has its shipment: then it changes
// nothing and reports false. Concurrent calls for one event (a redelivery to another replica while the
// first still works on it) wait on each other's row lock; one creates, the other reports false.
func (s *Store) Process(ctx context.Context, eventID string, d Delivery, sh Shipment) (bool, error) {
	created := false
	err := s.db.Tx(ctx, OpProcess, func(ctx context.Context, tx pgstore.DB) error {
		tag, err := tx.Exec(ctx, `INSERT INTO processed_events (event_id, subject, stream_sequence, deliveries)
			VALUES ($1, $2, $3, $4) ON CONFLICT (event_id) DO NOTHING`, eventID, d.Subject, int64(d.StreamSequence), d.Deliveries) //nolint:gosec // stream sequences stay far below 2^63
		if err != nil || tag.RowsAffected() == 0 {
			return err
		}
		tag, err = tx.Exec(ctx, `INSERT INTO shipments (id, order_id, event_id, status, items, total_cents, currency, trace_id, order_placed_at)
			VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) ON CONFLICT (order_id) DO NOTHING`,
			sh.ID, sh.OrderID, eventID, StatusPreparing, sh.Items, sh.TotalCents, sh.Currency, sh.TraceID, sh.OrderPlacedAt)
		created = err == nil && tag.RowsAffected() > 0
		return err
	})
	return created, err
}

// Shipment returns the shipment of order orderID, or ErrNotFound.
func (s *Store) Shipment(ctx context.Context, orderID string) (Shipment, error) {
	var sh Shipment
	err := s.db.Do(ctx, OpGetShipment, func(ctx context.Context, db pgstore.DB) error {
		err := db.QueryRow(ctx, `SELECT s.id, s.order_id, s.event_id, s.status, s.items, s.total_cents, s.currency, s.trace_id,
				s.order_placed_at, s.created_at, e.deliveries
			FROM shipments s JOIN processed_events e USING (event_id) WHERE s.order_id = $1`, orderID).
			Scan(&sh.ID, &sh.OrderID, &sh.EventID, &sh.Status, &sh.Items, &sh.TotalCents, &sh.Currency, &sh.TraceID,
				&sh.OrderPlacedAt, &sh.CreatedAt, &sh.Deliveries)
		if errors.Is(err, pgx.ErrNoRows) {
			return ErrNotFound
		}
		return err
	})
	return sh, err
}

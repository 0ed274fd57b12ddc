// Package store keeps payments' charges in PostgreSQL, one per idempotency key.
package store

import (
	"context"
	"embed"
	"errors"
	"io/fs"
	"time"

	"github.com/jackc/pgx/v5"

	"meshplane.dev/mesh/pgstore"
)

//go:embed migrations/*.sql
var migrationFiles embed.FS

// Migrations are payments' schema versions, applied by pgstore.Open.
func Migrations() fs.FS {
	sub, err := fs.Sub(migrationFiles, "migrations")
	if err != nil {
		panic(err) // the embedded tree is fixed at build time
	}
	return sub
}

// Component names payments' schema in meshplane_schema_migrations.
const Component = "payments"

// Operations are the operation labels of payments' database metrics.
var Operations = []string{OpInsertCharge, OpChargeByKey}

// Operation labels.
const (
	OpInsertCharge = "insert_charge"
	OpChargeByKey  = "charge_by_key"
)

// Charge is a charge made.
type Charge struct {
	ID             string
	IdempotencyKey string
	AmountCents    int64
	Currency       string
	Reference      string
	CreatedAt      time.Time
}

// Store is payments' database.
type Store struct{ db *pgstore.Store }

// New wraps an opened pgstore.
func New(db *pgstore.Store) *Store { return &Store{db: db} }

// Insert records c unless a charge with its key exists: it returns c and true when c was recorded, or
// the existing charge and false. A concurrent Insert with the same key waits for this one's
// transaction, then returns its charge.
func (s *Store) Insert(ctx context.Context, c Charge) (Charge, bool, error) {
	var out Charge
	inserted := false
	err := s.db.Do(ctx, OpInsertCharge, func(ctx context.Context, db pgstore.DB) error {
		err := db.QueryRow(ctx, `INSERT INTO charges (id, idempotency_key, amount_cents, currency, reference)
			VALUES ($1, $2, $3, $4, $5) ON CONFLICT (idempotency_key) DO NOTHING RETURNING created_at`,
			c.ID, c.IdempotencyKey, c.AmountCents, c.Currency, c.Reference).Scan(&c.CreatedAt)
		if err == nil {
			out, inserted = c, true
			return nil
		}
		if !errors.Is(err, pgx.ErrNoRows) {
			return err
		}
		out, err = byKey(ctx, db, c.IdempotencyKey)
		return err
	})
	return out, inserted, err
}

// ByKey returns the charge made with key, or ok false.
func (s *Store) ByKey(ctx context.Context, key string) (c Charge, ok bool, err error) {
	err = s.db.Do(ctx, OpChargeByKey, func(ctx context.Context, db pgstore.DB) error {
		c, err = byKey(ctx, db, key)
		return err
	})
	if errors.Is(err, pgx.ErrNoRows) {
		return Charge{}, false, nil
	}
	return c, err == nil, err
}

func byKey(ctx context.Context, db pgstore.DB, key string) (Charge, error) {
	var c Charge
	err := db.QueryRow(ctx, `SELECT id, idempotency_key, amount_cents, currency, reference, created_at
		FROM charges WHERE idempotency_key = $1`, key).Scan(&c.ID, &c.IdempotencyKey, &c.AmountCents, &c.Currency, &c.Reference, &c.CreatedAt)
	return c, err
}

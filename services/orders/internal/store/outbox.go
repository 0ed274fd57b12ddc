package store

import (
	"context"
	"time"

	"github.com/jackc/pgx/v5"

	"meshplane.dev/mesh/pgstore"
)

// Event is a row of the outbox: an event to publish.
type Event struct {
	// ID is the event id, the message's Nats-Msg-Id.
	ID      string
	Subject string
	// Type is the payload's protobuf message name, the Meshplane-Event-Type header.
	Type    string
	Payload []byte
	TraceID string
	// CreatedAt is when the transaction that wrote the event ran.
	CreatedAt time.Time
}

// Relay locks up to limit pending events, oldest first, skipping those another relay has locked
// (FOR UPDATE SKIP LOCKED), hands them to publish, and marks sent the ones publish returns, in one
// transaction; the others stay pending, with failure recorded against them. The locks last until the
// transaction ends, so publish must return within the database deadline (DATABASE_QUERY_TIMEOUT). It
// returns how many events it locked and how many were sent.
func (s *Store) Relay(ctx context.Context, limit int, publish func(context.Context, []Event) (sent []string, failure error)) (locked, sent int, err error) {
	err = s.db.Tx(ctx, OpRelay, func(ctx context.Context, tx pgstore.DB) error {
		rows, err := tx.Query(ctx, `SELECT id, subject, event_type, payload, trace_id, created_at FROM outbox
			WHERE sent_at IS NULL ORDER BY seq LIMIT $1 FOR UPDATE SKIP LOCKED`, limit)
		if err != nil {
			return err
		}
		evs, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (Event, error) {
			var e Event
			return e, r.Scan(&e.ID, &e.Subject, &e.Type, &e.Payload, &e.TraceID, &e.CreatedAt)
		})
		if err != nil || len(evs) == 0 {
			return err
		}
		locked = len(evs)
		ids, failure := publish(ctx, evs)
		sent = len(ids)
		if _, err := tx.Exec(ctx, "UPDATE outbox SET sent_at = now() WHERE id = ANY($1)", ids); err != nil {
			return err
		}
		if failure != nil && sent < locked {
			unsent := make([]string, 0, locked-sent)
			done := make(map[string]bool, sent)
			for _, id := range ids {
				done[id] = true
			}
			for _, e := range evs {
				if !done[e.ID] {
					unsent = append(unsent, e.ID)
				}
			}
			if _, err := tx.Exec(ctx, "UPDATE outbox SET attempts = attempts + 1, last_error = $2 WHERE id = ANY($1)",
				unsent, failure.Error()); err != nil {
				return err
			}
		}
		return nil
	})
	return locked, sent, err
}

// Backlog returns how many events are pending and how long the oldest has waited (by the database's
// clock), 0 when none is.
func (s *Store) Backlog(ctx context.Context) (pending int, oldest time.Duration, err error) {
	err = s.db.Do(ctx, OpBacklog, func(ctx context.Context, db pgstore.DB) error {
		var ageMs float64
		if err := db.QueryRow(ctx, `SELECT count(*), coalesce(extract(epoch FROM now() - min(created_at)) * 1000, 0)
			FROM outbox WHERE sent_at IS NULL`).Scan(&pending, &ageMs); err != nil {
			return err
		}
		oldest = time.Duration(ageMs * float64(time.Millisecond))
		return nil
	})
	return pending, oldest, err
}

// Prune deletes the events sent longer than retention ago, returning how many.
func (s *Store) Prune(ctx context.Context, retention time.Duration) (int64, error) {
	var n int64
	err := s.db.Do(ctx, OpPrune, func(ctx context.Context, db pgstore.DB) error {
		tag, err := db.Exec(ctx, "DELETE FROM outbox WHERE sent_at < now() - $1 * interval '1 millisecond'", retention.Milliseconds())
		n = tag.RowsAffected()
		return err
	})
	return n, err
}

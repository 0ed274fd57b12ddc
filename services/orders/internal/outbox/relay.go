// Package outbox relays the events orders writes to its outbox table to NATS JetStream. The table is
// the source of truth: an event is pending until the broker acknowledged storing it. The relay never
// stands between a request and its answer, so a broker outage grows the backlog (meshplane_outbox_pending)
// and never blocks or fails an order; the backlog drains once the broker is back.
package outbox

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"meshplane.dev/mesh/events"
	eventsv1 "meshplane.dev/services/proto/events/v1"

	"meshplane.dev/services/orders/internal/store"
)

// Metric names; dashboards/signal declares them.
const (
	MetricPending         = "meshplane_outbox_pending"
	MetricOldestAge       = "meshplane_outbox_oldest_pending_age_seconds"
	MetricPublished       = "meshplane_outbox_published_total"
	MetricPublishDuration = "meshplane_outbox_publish_duration_seconds"
)

// Settings tune the relay; orders' Config holds them.
type Settings struct {
	// Interval is how often the relay looks for pending events that no request of this replica woke it
	// for (another replica's, or ones a failed publish left behind), and refreshes the backlog gauges.
	Interval time.Duration
	// BatchSize is the most events one transaction locks and publishes.
	BatchSize int
	// PublishTimeout bounds the wait for the broker's acknowledgements of one batch; shorter than the
	// database deadline, which bounds the transaction holding the batch's locks.
	PublishTimeout time.Duration
	// Retention is how long sent events stay in the table (for an operator's questions) before pruning.
	Retention time.Duration
	// StreamReplicas is how many servers of a NATS cluster store the ORDERS stream (1 on one server).
	StreamReplicas int
	// DuplicateWindow is how long JetStream remembers an event id to drop a republished copy.
	DuplicateWindow time.Duration
}

// Relay publishes the outbox's pending events.
type Relay struct {
	logger   *slog.Logger
	store    *store.Store
	nc       *nats.Conn
	js       jetstream.JetStream
	settings Settings
	wake     chan struct{}

	pending   prometheus.Gauge
	oldest    prometheus.Gauge
	published *prometheus.CounterVec
	duration  prometheus.Histogram
}

// New returns a relay of st's outbox over connection nc, registering its metrics in reg.
func New(logger *slog.Logger, reg prometheus.Registerer, st *store.Store, nc *nats.Conn, s Settings) (*Relay, error) {
	js, err := jetstream.New(nc, jetstream.WithPublishAsyncMaxPending(max(s.BatchSize, 1)))
	if err != nil {
		return nil, fmt.Errorf("jetstream: %w", err)
	}
	r := &Relay{
		logger: logger.With(slog.String("component", "outbox-relay")), store: st, nc: nc, js: js, settings: s,
		wake: make(chan struct{}, 1),
		pending: prometheus.NewGauge(prometheus.GaugeOpts{Name: MetricPending,
			Help: "Events in orders' outbox not yet acknowledged by the broker (every replica reports the whole table; take max)."}),
		oldest: prometheus.NewGauge(prometheus.GaugeOpts{Name: MetricOldestAge,
			Help: "Age of the oldest event in orders' outbox not yet acknowledged by the broker, 0 when none is pending."}),
		published: prometheus.NewCounterVec(prometheus.CounterOpts{Name: MetricPublished,
			Help: "Outbox events this replica published, by result: ok (the broker stored it, or already had it), error (no acknowledgement; the event stays pending)."},
			[]string{"result"}),
		duration: prometheus.NewHistogram(prometheus.HistogramOpts{Name: MetricPublishDuration,
			Help:    "Time from publishing an outbox event to the broker's acknowledgement.",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5}}),
	}
	for _, res := range []string{"ok", "error"} {
		r.published.WithLabelValues(res)
	}
	for _, c := range []prometheus.Collector{r.pending, r.oldest, r.published, r.duration} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	return r, nil
}

// Notify wakes the relay at once: a request of this replica committed an event. It never blocks.
func (r *Relay) Notify() {
	select {
	case r.wake <- struct{}{}:
	default:
	}
}

// Run relays until ctx ends: whenever woken, and every Interval.
func (r *Relay) Run(ctx context.Context) {
	tick := time.NewTicker(r.settings.Interval)
	defer tick.Stop()
	var lastPrune, lastBacklog time.Time
	streamReady := false
	failing := false
	for {
		// Woken by every order, the relay reads the backlog at most twice an interval.
		if time.Since(lastBacklog) >= r.settings.Interval/2 {
			lastBacklog = time.Now()
			r.refreshBacklog(ctx)
		}
		if r.nc.IsConnected() {
			if !streamReady {
				if err := r.ensureStream(ctx); err != nil {
					r.logger.Warn("stream not ready: events stay in the outbox", slog.String("stream", eventsv1.OrdersStream), slog.String("error", err.Error()))
				} else {
					streamReady = true
				}
			}
			if streamReady {
				err := r.drain(ctx)
				switch {
				case err != nil && !failing:
					r.logger.Warn("outbox relay failing: events stay in the outbox", slog.String("error", err.Error()))
				case err == nil && failing:
					r.logger.Info("outbox relay publishing again")
				}
				failing = err != nil
				if errors.Is(err, jetstream.ErrNoStreamResponse) {
					streamReady = false // the stream is gone (a broker whose store was wiped): create it again
				}
			}
		}
		if time.Since(lastPrune) > time.Minute {
			lastPrune = time.Now()
			if n, err := r.store.Prune(ctx, r.settings.Retention); err == nil && n > 0 {
				r.logger.Debug("outbox pruned", slog.Int64("events", n))
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-r.wake:
		case <-tick.C:
		}
	}
}

// ensureStream creates the ORDERS stream, or updates it to the relay's settings.
func (r *Relay) ensureStream(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	_, err := r.js.CreateOrUpdateStream(ctx, jetstream.StreamConfig{
		Name:        eventsv1.OrdersStream,
		Description: "orders' events, published from its outbox",
		Subjects:    []string{eventsv1.OrdersSubjects},
		Storage:     jetstream.FileStorage,
		Replicas:    r.settings.StreamReplicas,
		Duplicates:  r.settings.DuplicateWindow,
		Retention:   jetstream.LimitsPolicy,
		MaxAge:      7 * 24 * time.Hour,
	})
	return err
}

// drain relays batches until the outbox is empty (a batch comes back short) or a batch fails.
func (r *Relay) drain(ctx context.Context) error {
	for ctx.Err() == nil {
		locked, sent, err := r.store.Relay(ctx, r.settings.BatchSize, r.publish)
		if err != nil {
			return err
		}
		if sent < locked {
			return fmt.Errorf("%d of %d events not acknowledged", locked-sent, locked)
		}
		if locked < r.settings.BatchSize {
			return nil
		}
	}
	return nil
}

// publish sends a batch without waiting between messages and collects the acknowledgements within
// PublishTimeout, returning the ids the broker acknowledged.
func (r *Relay) publish(ctx context.Context, evs []store.Event) ([]string, error) {
	type inFlight struct {
		id    string
		began time.Time
		ack   jetstream.PubAckFuture
	}
	deadline := time.NewTimer(r.settings.PublishTimeout)
	defer deadline.Stop()
	var sent []string
	var failure error
	flights := make([]inFlight, 0, len(evs))
	for _, e := range evs {
		msg := nats.NewMsg(e.Subject)
		msg.Data = e.Payload
		msg.Header.Set(eventsv1.HeaderMsgID, e.ID)
		msg.Header.Set(eventsv1.HeaderEventType, e.Type)
		if e.TraceID != "" {
			msg.Header.Set(eventsv1.HeaderTraceparent, "00-"+e.TraceID+"-"+spanID(e.ID)+"-01")
		}
		ack, err := r.js.PublishMsgAsync(msg)
		if err != nil {
			failure = err
			break // keep the rest for the next round, in order
		}
		flights = append(flights, inFlight{id: e.ID, began: time.Now(), ack: ack})
	}
	for i, f := range flights {
		select {
		case <-f.ack.Ok():
			r.duration.Observe(time.Since(f.began).Seconds())
			r.published.WithLabelValues("ok").Inc()
			sent = append(sent, f.id)
			continue
		case err := <-f.ack.Err():
			failure = err
		case <-deadline.C:
			failure = fmt.Errorf("no acknowledgement within OUTBOX_PUBLISH_TIMEOUT (%s)", r.settings.PublishTimeout)
		case <-ctx.Done():
			failure = ctx.Err()
		}
		r.published.WithLabelValues("error").Add(float64(len(flights) - i))
		break
	}
	if failure != nil {
		failure = fmt.Errorf("publish to %s: %w", events.Dependency, failure)
	}
	return sent, failure
}

// refreshBacklog sets the backlog gauges from the table.
func (r *Relay) refreshBacklog(ctx context.Context) {
	n, age, err := r.store.Backlog(ctx)
	if err != nil {
		return // the database's own metrics and readiness say it is unreachable
	}
	r.pending.Set(float64(n))
	r.oldest.Set(age.Seconds())
}

// spanID derives the relay's span id from the event id, so a republished copy carries the same
// traceparent.
func spanID(eventID string) string {
	const hex = "0123456789abcdef"
	var h uint64 = 14695981039346656037
	for i := 0; i < len(eventID); i++ {
		h = (h ^ uint64(eventID[i])) * 1099511628211
	}
	b := make([]byte, 16)
	for i := range b {
		b[i] = hex[(h>>(60-4*i))&0xf]
	}
	return string(b)
}

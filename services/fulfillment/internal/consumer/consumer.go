// Package consumer runs a durable JetStream pull consumer: explicit acks, at most MaxInFlight events
// being processed by this process at once, a retry with growing delay for an event whose processing
// failed, and after MaxDeliveries a copy on the dead-letter subject with the reason, so one poison event
// never stops the others. Delivery is at least once; the handler makes the effect once (fulfillment's
// processing record). Lag — events stored but not yet delivered, delivered but not acknowledged, and the
// age of the oldest not yet acknowledged — is read from the broker and exported as metrics.
package consumer

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"meshplane.dev/mesh/telemetry"
	eventsv1 "meshplane.dev/services/proto/events/v1"
)

// Metric names; dashboards/signal declares them. Every one has the label consumer (the durable name).
const (
	MetricConsumed           = "meshplane_events_consumed_total"
	MetricRedelivered        = "meshplane_events_redelivered_total"
	MetricProcessingDuration = "meshplane_events_processing_duration_seconds"
	MetricPending            = "meshplane_events_consumer_pending"
	MetricAckPending         = "meshplane_events_consumer_ack_pending"
	MetricLag                = "meshplane_events_consumer_lag_seconds"
)

// Results of meshplane_events_consumed_total.
const (
	// ResultProcessed: the handler acted on the event; acknowledged.
	ResultProcessed = "processed"
	// ResultDuplicate: the handler had acted on it before (a redelivery); acknowledged, nothing done.
	ResultDuplicate = "duplicate"
	// ResultFailed: processing failed; the event is delivered again after a delay.
	ResultFailed = "failed"
	// ResultDeadLettered: the last delivery failed too; the event went to the dead-letter subject.
	ResultDeadLettered = "dead_lettered"
)

// Settings tune the consumer; fulfillment's Config holds them.
type Settings struct {
	// Name is the durable consumer's name, shared by every replica: each event goes to one of them.
	Name string
	// Stream and Subject are what it reads.
	Stream, Subject string
	// MaxInFlight is the most events this process holds at once (pulled and not yet acknowledged).
	MaxInFlight int
	// MaxAckPending is the most events all replicas together hold at once (the broker's bound).
	MaxAckPending int
	// MaxDeliveries is how many deliveries an event gets before it is dead-lettered.
	MaxDeliveries int
	// AckWait is how long the broker waits for an acknowledgement before delivering an event again
	// (to any replica): a replica that died holding events loses them to the others after this.
	AckWait time.Duration
	// RetryDelay is the delay before the second delivery of a failed event; it doubles with every
	// further failure, up to 30s.
	RetryDelay time.Duration
	// LagInterval is how often the consumer's state is read from the broker for the lag metrics.
	LagInterval time.Duration
	// StreamReplicas is how many servers store the dead-letter stream, which the consumer creates.
	StreamReplicas int
}

// Message is an event as the handler sees it.
type Message struct {
	Subject string
	Header  nats.Header
	Data    []byte
	// StreamSequence is the event's position in its stream.
	StreamSequence uint64
	// Deliveries is 1 the first time the event is delivered, more when redelivered.
	Deliveries int
}

// Handler processes one event: it reports whether the effect had already happened (duplicate), or an
// error to have the event delivered again later.
type Handler func(ctx context.Context, m Message) (duplicate bool, err error)

// Consumer is a running durable consumer.
type Consumer struct {
	logger   *slog.Logger
	js       jetstream.JetStream
	settings Settings
	handle   Handler

	consumed   *prometheus.CounterVec
	redeliv    prometheus.Counter
	duration   prometheus.Observer
	pending    prometheus.Gauge
	ackPending prometheus.Gauge
	lag        prometheus.Gauge
}

// New returns a consumer over connection nc, registering its metrics in reg.
func New(logger *slog.Logger, reg prometheus.Registerer, nc *nats.Conn, s Settings, handle Handler) (*Consumer, error) {
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, fmt.Errorf("jetstream: %w", err)
	}
	label := prometheus.Labels{"consumer": s.Name}
	consumed := prometheus.NewCounterVec(prometheus.CounterOpts{Name: MetricConsumed,
		Help: "Deliveries of events by result: processed, duplicate (acted on before: nothing done), failed (delivered again later), dead_lettered (gave up; copied to the dead-letter subject with the reason)."},
		[]string{"consumer", "result"})
	redeliv := prometheus.NewCounterVec(prometheus.CounterOpts{Name: MetricRedelivered,
		Help: "Deliveries of events delivered before (a failed attempt, or a replica that died or took longer than the ack wait)."}, []string{"consumer"})
	duration := prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: MetricProcessingDuration,
		Help:    "Time to process one delivered event, whatever the result.",
		Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5}}, []string{"consumer"})
	gauge := func(name, help string) *prometheus.GaugeVec {
		return prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: name, Help: help}, []string{"consumer"})
	}
	pending := gauge(MetricPending, "Events stored in the stream that the consumer has not delivered yet (the broker's count; every replica reports it: take max).")
	ackPending := gauge(MetricAckPending, "Events delivered to a replica and not yet acknowledged (the broker's count).")
	lag := gauge(MetricLag, "Age of the oldest event not yet acknowledged, by the time the broker stored it; 0 when the consumer is caught up.")
	for _, c := range []prometheus.Collector{consumed, redeliv, duration, pending, ackPending, lag} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	for _, r := range []string{ResultProcessed, ResultDuplicate, ResultFailed, ResultDeadLettered} {
		consumed.WithLabelValues(s.Name, r)
	}
	return &Consumer{
		logger: logger.With(slog.String("consumer", s.Name), slog.String("subject", s.Subject)), js: js, settings: s, handle: handle,
		consumed: consumed, redeliv: redeliv.With(label), duration: duration.With(label),
		pending: pending.With(label), ackPending: ackPending.With(label), lag: lag.With(label),
	}, nil
}

// Run consumes until ctx ends, then finishes the events it holds (each is acknowledged, or left to be
// delivered again) and returns. While the stream does not exist yet, or the broker is unreachable, it
// waits and tries again; it never exits for that.
func (c *Consumer) Run(ctx context.Context) {
	var cons jetstream.Consumer
	var stream jetstream.Stream
	warned := false
	for cons == nil {
		var err error
		if stream, cons, err = c.setUp(ctx); err != nil {
			if !warned {
				c.logger.Warn("consumer not ready: trying again every second", slog.String("error", err.Error()))
				warned = true
			}
			select {
			case <-ctx.Done():
				return
			case <-time.After(time.Second):
			}
		}
	}
	c.logger.Info("consuming", slog.String("stream", c.settings.Stream), slog.Int("max_in_flight", c.settings.MaxInFlight),
		slog.Int("max_deliveries", c.settings.MaxDeliveries))

	lagDone := make(chan struct{})
	go func() { defer close(lagDone); c.watchLag(ctx, stream, cons) }()
	defer func() { <-lagDone }()

	msgs, err := cons.Messages(jetstream.PullMaxMessages(c.settings.MaxInFlight))
	if err != nil {
		c.logger.Error("consumer stopped: cannot pull", slog.String("error", err.Error()))
		return
	}
	go func() {
		<-ctx.Done()
		msgs.Drain() // stop pulling; Next returns what is buffered, then ErrMsgIteratorClosed
	}()
	inFlight := make(chan struct{}, c.settings.MaxInFlight)
	var wg sync.WaitGroup
	defer wg.Wait()
	for {
		msg, err := msgs.Next()
		if errors.Is(err, jetstream.ErrMsgIteratorClosed) || errors.Is(err, nats.ErrConnectionClosed) {
			return
		}
		if err != nil {
			c.logger.Debug("pull", slog.String("error", err.Error()))
			continue
		}
		inFlight <- struct{}{}
		wg.Go(func() {
			defer func() { <-inFlight }()
			// Processing an event is not cut short by shutdown: it ends with an ack or a nak.
			c.deliver(context.WithoutCancel(ctx), msg)
		})
	}
}

// setUp finds the stream (its producer creates it), creates or updates the durable consumer, and
// creates the dead-letter stream.
func (c *Consumer) setUp(ctx context.Context) (jetstream.Stream, jetstream.Consumer, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if _, err := c.js.CreateOrUpdateStream(ctx, jetstream.StreamConfig{
		Name: eventsv1.DeadLetterStream, Description: "events consumers gave up on, with the reason",
		Subjects: []string{eventsv1.DeadLetterSubjects}, Storage: jetstream.FileStorage, Replicas: c.settings.StreamReplicas,
		Duplicates: 10 * time.Minute, MaxAge: 30 * 24 * time.Hour,
	}); err != nil {
		return nil, nil, fmt.Errorf("dead-letter stream %s: %w", eventsv1.DeadLetterStream, err)
	}
	stream, err := c.js.Stream(ctx, c.settings.Stream)
	if err != nil {
		return nil, nil, fmt.Errorf("stream %s (its producer creates it): %w", c.settings.Stream, err)
	}
	cons, err := stream.CreateOrUpdateConsumer(ctx, jetstream.ConsumerConfig{
		Durable: c.settings.Name, Description: "fulfillment: a shipment per placed order",
		FilterSubject: c.settings.Subject, DeliverPolicy: jetstream.DeliverAllPolicy,
		AckPolicy: jetstream.AckExplicitPolicy, AckWait: c.settings.AckWait, MaxAckPending: c.settings.MaxAckPending,
		// The consumer counts deliveries itself and dead-letters at MaxDeliveries; the broker never
		// drops an event on its own (it would, silently, at a MaxDeliver of its own).
		MaxDeliver: -1,
	})
	if err != nil {
		return nil, nil, fmt.Errorf("consumer %s on %s: %w", c.settings.Name, c.settings.Stream, err)
	}
	return stream, cons, nil
}

// deliver processes one delivered event and acknowledges it, has it delivered again later, or
// dead-letters it.
func (c *Consumer) deliver(ctx context.Context, msg jetstream.Msg) {
	began := time.Now()
	m := Message{Subject: msg.Subject(), Header: msg.Headers(), Data: msg.Data(), Deliveries: 1}
	if meta, err := msg.Metadata(); err == nil {
		m.StreamSequence, m.Deliveries = meta.Sequence.Stream, int(meta.NumDelivered) //nolint:gosec // deliveries stay small
	}
	if m.Header == nil {
		m.Header = nats.Header{}
	}
	// The event's trace: this process's log lines about it carry the trace id of the request that
	// placed the order.
	ctx = telemetry.WithTrace(ctx, telemetry.NewTrace(m.Header.Get(eventsv1.HeaderTraceparent)))
	logger := c.logger.With(slog.String("event_id", m.Header.Get(eventsv1.HeaderMsgID)), slog.Uint64("stream_sequence", m.StreamSequence),
		slog.Int("deliveries", m.Deliveries))
	if m.Deliveries > 1 {
		c.redeliv.Inc()
	}
	defer func() { c.duration.Observe(time.Since(began).Seconds()) }()

	if m.Deliveries > c.settings.MaxDeliveries {
		// The previous delivery neither acknowledged nor failed it: the replica died holding it, or took
		// longer than the ack wait. Give up rather than risk a crash loop on it.
		c.deadLetter(ctx, logger, msg, m, fmt.Sprintf("delivered %d times without being acknowledged (a replica died or exceeded the ack wait of %s while processing it)",
			m.Deliveries-1, c.settings.AckWait))
		return
	}
	duplicate, err := c.handle(ctx, m)
	switch {
	case err == nil:
		if aerr := msg.Ack(); aerr != nil {
			// Processed but not acknowledged: it comes back, and the handler finds it done.
			logger.WarnContext(ctx, "ack failed: the event will be delivered again", slog.String("error", aerr.Error()))
		}
		result := ResultProcessed
		if duplicate {
			result = ResultDuplicate
		}
		c.consumed.WithLabelValues(c.settings.Name, result).Inc()
	case m.Deliveries >= c.settings.MaxDeliveries:
		c.deadLetter(ctx, logger, msg, m, err.Error())
	default:
		delay := c.retryDelay(m.Deliveries)
		logger.WarnContext(ctx, "event processing failed: delivering it again later", slog.String("error", err.Error()),
			slog.Duration("retry_in", delay))
		c.consumed.WithLabelValues(c.settings.Name, ResultFailed).Inc()
		_ = msg.NakWithDelay(delay)
	}
}

func (c *Consumer) retryDelay(deliveries int) time.Duration {
	d := c.settings.RetryDelay
	for i := 1; i < deliveries && d < 30*time.Second; i++ {
		d *= 2
	}
	return min(d, 30*time.Second)
}

// deadLetter publishes a copy of the event on the dead-letter subject with reason, then terminates it
// (the broker delivers it no more). Should the copy fail, the event is delivered again and the next
// delivery dead-letters it; the copy keeps the event's Nats-Msg-Id, so the dead-letter stream holds
// it once.
func (c *Consumer) deadLetter(ctx context.Context, logger *slog.Logger, msg jetstream.Msg, m Message, reason string) {
	dead := nats.NewMsg(eventsv1.DeadLetterSubject(c.settings.Name, m.Subject))
	dead.Data = m.Data
	for k, v := range m.Header {
		dead.Header[k] = v
	}
	if dead.Header.Get(eventsv1.HeaderMsgID) == "" {
		dead.Header.Set(eventsv1.HeaderMsgID, c.settings.Stream+"-"+strconv.FormatUint(m.StreamSequence, 10))
	}
	dead.Header.Set(eventsv1.HeaderDeadLetterReason, reason)
	dead.Header.Set(eventsv1.HeaderDeliveries, strconv.Itoa(m.Deliveries))
	dead.Header.Set(eventsv1.HeaderStreamSequence, strconv.FormatUint(m.StreamSequence, 10))
	pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if _, err := c.js.PublishMsg(pctx, dead); err != nil {
		logger.ErrorContext(ctx, "dead-lettering failed: delivering the event again to retry", slog.String("reason", reason), slog.String("error", err.Error()))
		c.consumed.WithLabelValues(c.settings.Name, ResultFailed).Inc()
		_ = msg.NakWithDelay(c.settings.RetryDelay)
		return
	}
	if err := msg.Term(); err != nil {
		logger.WarnContext(ctx, "dead-lettered event not terminated: it may be dead-lettered again (once in the stream)", slog.String("error", err.Error()))
	}
	c.consumed.WithLabelValues(c.settings.Name, ResultDeadLettered).Inc()
	logger.ErrorContext(ctx, "event dead-lettered", slog.String("reason", reason), slog.String("dead_letter_subject", dead.Subject))
}

// watchLag reads the consumer's state every LagInterval and sets the lag gauges.
func (c *Consumer) watchLag(ctx context.Context, stream jetstream.Stream, cons jetstream.Consumer) {
	t := time.NewTicker(c.settings.LagInterval)
	defer t.Stop()
	for {
		c.readLag(ctx, stream, cons)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

func (c *Consumer) readLag(ctx context.Context, stream jetstream.Stream, cons jetstream.Consumer) {
	ctx, cancel := context.WithTimeout(ctx, c.settings.LagInterval)
	defer cancel()
	info, err := cons.Info(ctx)
	if err != nil {
		return // the broker is unreachable: the gauges keep their last values, events_broker_connected says why
	}
	c.pending.Set(float64(info.NumPending))
	c.ackPending.Set(float64(info.NumAckPending))
	if info.NumPending == 0 && info.NumAckPending == 0 {
		c.lag.Set(0)
		return
	}
	// Every event up to the ack floor is acknowledged, so the first one after it on the subject is the
	// oldest that is not.
	oldest, err := stream.GetMsg(ctx, info.AckFloor.Stream+1, jetstream.WithGetMsgSubject(c.settings.Subject))
	if err != nil {
		return
	}
	c.lag.Set(max(time.Since(oldest.Time).Seconds(), 0))
}

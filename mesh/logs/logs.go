// Package logs gives a process its structured logger: log/slog JSON lines on stdout and, when a Loki
// URL is configured, the same lines pushed to Loki's HTTP push API.
//
// Shipping must never slow a request down, so a bounded queue sits between the logger and the
// Loki client: logging never waits for Loki; when the queue is full a line is dropped and counted in
// meshplane_log_lines_dropped_total{reason="queue_full"}. Stream labels are service, namespace and
// level only; trace ids travel inside the JSON line.
//
// Under pressure the queue sheds routine lines first: while it is over three quarters full, only one
// in sampleEvery lines below warn goes to Loki (none once it is seven eighths full, leaving the last
// places to warnings and errors) and the others are counted in
// meshplane_log_lines_sampled_out_total (they are still on stdout), so a Loki slower than the access
// log keeps every warning and error and a sample of the rest instead of losing lines at random.
//
// Lines reach Loki's push API as snappy-compressed protobuf, from one shipper per process that fills
// the next batch while it pushes the last one (see shipper). A push Loki refuses, or that stays
// unanswered through its retries, counts its lines as reason="send_failed".
package logs

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"meshplane.dev/mesh/telemetry"
)

// Options configures a Sink.
type Options struct {
	// Service and Namespace become the Loki stream labels service and namespace.
	Service   string
	Namespace string
	// Level is the minimum level logged.
	Level slog.Level
	// Stdout receives every line. Required.
	Stdout io.Writer
	// LokiURL is Loki's base URL (e.g. http://127.0.0.1:3100); empty ships nothing.
	LokiURL string
	// QueueSize bounds the lines waiting for Loki; 0 means 1024.
	QueueSize int
	// BatchWait is the longest a line waits in the Loki client before its batch is pushed; 0 means 1s.
	BatchWait time.Duration
	// Registerer receives the log metrics. Required.
	Registerer prometheus.Registerer
}

// Sink owns a process's logger and its Loki shipping.
type Sink struct {
	logger *slog.Logger
	out    *output
}

// sampleEvery is the share of lines below warn shipped while the queue is over its high-water mark
// (three quarters of its size): one in sampleEvery.
const sampleEvery = 10

type entry struct {
	// warn is true for warn and error lines, which the sampling under pressure never sheds.
	warn  bool
	level string
	t     time.Time
	line  string
}

// output is shared by every handler derived from the root one (WithAttrs/WithGroup).
type output struct {
	stdoutMu sync.Mutex
	stdout   io.Writer
	labels   map[string]string
	opts     *slog.HandlerOptions

	mu      sync.RWMutex // guards closed and sends on queue against close
	closed  bool
	queue   chan entry
	shipper *shipper
	done    chan struct{} // closed when the shipping goroutine ends

	lines     *prometheus.CounterVec
	lineCount [len(levels)]prometheus.Counter // lines' children by level index, resolved once
	dropped   *prometheus.CounterVec
	queueFull prometheus.Counter
	// sampledOut counts lines below warn kept from Loki under pressure; highWater is where that starts,
	// lastPlaces where the queue's remaining places are left to warnings and errors alone.
	sampledOut prometheus.Counter
	highWater  int
	lastPlaces int
	sampleSeq  atomic.Uint64
}

// levels are the level label's values, in the order of levelIndex.
var levels = [...]string{"debug", "info", "warn", "error"}

// New builds a Sink. With a LokiURL it starts the goroutine that feeds the Loki client; call Close to
// flush and stop it.
func New(o Options) (*Sink, error) {
	if o.Stdout == nil || o.Registerer == nil {
		return nil, errors.New("logs: Options.Stdout and Options.Registerer are required")
	}
	out := &output{
		stdout: o.Stdout,
		opts:   &slog.HandlerOptions{Level: o.Level},
		labels: map[string]string{"service": o.Service, "namespace": o.Namespace},
		lines: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "meshplane_log_lines_total",
			Help: "Log lines written, by level.",
		}, []string{"level"}),
		dropped: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "meshplane_log_lines_dropped_total",
			Help: droppedHelp,
		}, []string{"reason"}),
		sampledOut: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "meshplane_log_lines_sampled_out_total",
			Help: "Log lines below warn not shipped to Loki (still written to stdout) because its queue was over three quarters full: meanwhile one in ten of them is shipped (none over seven eighths), and every warning and error.",
		}),
		done: make(chan struct{}),
	}
	for i, l := range levels {
		out.lineCount[i] = out.lines.WithLabelValues(l)
	}
	for _, r := range []string{"queue_full", "send_failed", "shutdown"} {
		out.dropped.WithLabelValues(r)
	}
	out.queueFull = out.dropped.WithLabelValues("queue_full")
	queueLen := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "meshplane_log_queue_length",
		Help: "Log lines waiting to be handed to the Loki client.",
	}, func() float64 {
		if out.queue == nil {
			return 0
		}
		return float64(len(out.queue))
	})
	if err := registerAll(o.Registerer, out.lines, out.dropped, out.sampledOut, queueLen); err != nil {
		return nil, err
	}
	if o.LokiURL == "" {
		close(out.done)
	} else {
		if err := out.startLoki(o); err != nil {
			return nil, err
		}
	}
	return &Sink{logger: slog.New(newHandler(out, nil)), out: out}, nil
}

func registerAll(reg prometheus.Registerer, cs ...prometheus.Collector) error {
	for _, c := range cs {
		if err := reg.Register(c); err != nil {
			return fmt.Errorf("register log metrics: %w", err)
		}
	}
	return nil
}

func (o *output) startLoki(opts Options) error {
	size := opts.QueueSize
	if size <= 0 {
		size = 1024
	}
	wait := opts.BatchWait
	if wait <= 0 {
		wait = time.Second
	}
	sh, err := newShipper(opts.LokiURL, o.labels, wait, func(reason string, n int) {
		o.dropped.WithLabelValues(reason).Add(float64(n))
	})
	if err != nil {
		return err
	}
	o.shipper = sh
	o.queue = make(chan entry, size)
	o.highWater, o.lastPlaces = size*3/4, size*7/8
	go func() {
		defer close(o.done)
		o.shipper.run(o.queue)
	}()
	return nil
}

const droppedHelp = "Log lines not shipped to Loki: queue_full when Loki was too slow or down, send_failed when Loki refused a batch or stayed unreachable through the retries, shutdown when still unsent at exit."

// enqueue offers a line to the Loki queue without waiting.
func (o *output) enqueue(e entry) {
	if o.queue == nil {
		return
	}
	o.mu.RLock()
	defer o.mu.RUnlock()
	if o.closed {
		o.dropped.WithLabelValues("shutdown").Inc()
		return
	}
	if !e.warn {
		if n := len(o.queue); n >= o.highWater && (n >= o.lastPlaces || o.sampleSeq.Add(1)%sampleEvery != 0) {
			o.sampledOut.Inc()
			return
		}
	}
	select {
	case o.queue <- e:
	default:
		o.queueFull.Inc()
	}
}

// Logger returns the process's logger.
func (s *Sink) Logger() *slog.Logger { return s.logger }

// Close stops accepting lines for Loki, hands the queued ones to the client and flushes it, giving up
// when ctx ends: lines still queued then are counted as dropped with reason shutdown. Lines keep
// going to stdout after Close.
func (s *Sink) Close(ctx context.Context) error {
	o := s.out
	if o.queue == nil {
		return nil
	}
	o.mu.Lock()
	if o.closed {
		o.mu.Unlock()
		return nil
	}
	o.closed = true
	close(o.queue)
	o.mu.Unlock()

	// The shipper pushes what is queued; once ctx ends it stops, abandoning a push in flight, and counts
	// the rest as dropped at shutdown.
	o.shipper.stopBy(ctx, o.done)
	select {
	case <-o.done:
		if n := o.shipper.lost(); n > 0 {
			return fmt.Errorf("flush logs to Loki: %d lines unsent when the deadline passed: %w", n, context.Cause(ctx))
		}
		return nil
	case <-ctx.Done():
		return fmt.Errorf("flush logs to Loki: %d lines still queued when the deadline passed: %w", len(o.queue), context.Cause(ctx))
	}
}

// handler is the slog.Handler: it renders each record once as a JSON line, writes it to stdout and
// offers it to the Loki queue.
type handler struct {
	out *output
	// ops replays WithAttrs/WithGroup calls on a JSON handler, in order.
	ops []func(slog.Handler) slog.Handler
	// encoders holds JSON handlers with ops applied, each writing into its own buffer: a record is
	// rendered without a lock and without redoing the logger's With attributes every time.
	encoders *sync.Pool
}

// encoder is a JSON handler and the buffer it renders into.
type encoder struct {
	buf bytes.Buffer
	j   slog.Handler
}

func newHandler(out *output, ops []func(slog.Handler) slog.Handler) *handler {
	h := &handler{out: out, ops: ops}
	h.encoders = &sync.Pool{New: func() any {
		e := &encoder{}
		e.j = slog.NewJSONHandler(&e.buf, out.opts)
		for _, op := range ops {
			e.j = op(e.j)
		}
		return e
	}}
	return h
}

func (h *handler) Enabled(_ context.Context, l slog.Level) bool { return l >= h.out.opts.Level.Level() }

func (h *handler) Handle(ctx context.Context, r slog.Record) error {
	if id := telemetry.TraceID(ctx); id != "" {
		r.AddAttrs(slog.String("trace_id", id))
	}
	e := h.encoders.Get().(*encoder)
	defer h.encoders.Put(e)
	e.buf.Reset()
	if err := e.j.Handle(ctx, r); err != nil {
		return err
	}
	level := levelIndex(r.Level)
	h.out.lineCount[level].Inc()
	h.out.stdoutMu.Lock()
	_, err := h.out.stdout.Write(e.buf.Bytes())
	h.out.stdoutMu.Unlock()
	if h.out.queue != nil {
		h.out.enqueue(entry{warn: r.Level >= slog.LevelWarn, level: levels[level], t: r.Time, line: string(bytes.TrimSuffix(e.buf.Bytes(), []byte("\n")))})
	}
	return err
}

func (h *handler) WithAttrs(as []slog.Attr) slog.Handler {
	return h.with(func(j slog.Handler) slog.Handler { return j.WithAttrs(as) })
}

func (h *handler) WithGroup(name string) slog.Handler {
	return h.with(func(j slog.Handler) slog.Handler { return j.WithGroup(name) })
}

func (h *handler) with(op func(slog.Handler) slog.Handler) *handler {
	ops := make([]func(slog.Handler) slog.Handler, len(h.ops), len(h.ops)+1)
	copy(ops, h.ops)
	return newHandler(h.out, append(ops, op))
}

// levelIndex places l in levels.
func levelIndex(l slog.Level) int {
	switch {
	case l < slog.LevelInfo:
		return 0
	case l < slog.LevelWarn:
		return 1
	case l < slog.LevelError:
		return 2
	}
	return 3
}

// ParseLevel turns debug|info|warn|error into a slog.Level.
func ParseLevel(s string) (slog.Level, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(s)); err != nil {
		return 0, fmt.Errorf("log level %q: want debug, info, warn or error", s)
	}
	return l, nil
}

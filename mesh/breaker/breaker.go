// Package breaker puts a github.com/sony/gobreaker/v2 circuit breaker in front of each downstream
// dependency and exports what it does: state (read from the breaker at scrape time), transitions
// (counted in gobreaker's OnStateChange, which runs under the breaker's lock and so never calls back
// into it) and per-call outcomes, including the calls it rejected.
package breaker

import (
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/sony/gobreaker/v2"
)

// Settings configures a breaker; zero values take the defaults noted on each field.
type Settings struct {
	// ConsecutiveFailures trips the breaker after this many failures in a row; 0 means 5.
	ConsecutiveFailures uint32
	// FailureRatio, when > 0, also trips it once at least MinRequests calls in the current Interval
	// failed at this ratio or more.
	FailureRatio float64
	// MinRequests is the smallest sample FailureRatio is judged on; 0 means 20.
	MinRequests uint32
	// Interval is how long the closed state accumulates counts before clearing them; 0 means 10s.
	Interval time.Duration
	// OpenTimeout is how long the breaker stays open before letting probes through; 0 means 5s.
	OpenTimeout time.Duration
	// HalfOpenRequests is how many probes are allowed while half-open, and how many must succeed to
	// close again; 0 means 1.
	HalfOpenRequests uint32
}

func (s Settings) withDefaults() Settings {
	if s.ConsecutiveFailures == 0 {
		s.ConsecutiveFailures = 5
	}
	if s.MinRequests == 0 {
		s.MinRequests = 20
	}
	if s.Interval == 0 {
		s.Interval = 10 * time.Second
	}
	if s.OpenTimeout == 0 {
		s.OpenTimeout = 5 * time.Second
	}
	if s.HalfOpenRequests == 0 {
		s.HalfOpenRequests = 1
	}
	return s
}

// Validate reports the first setting out of range, by name.
func (s Settings) Validate() error {
	switch {
	case s.FailureRatio < 0 || s.FailureRatio > 1:
		return fmt.Errorf("breaker failure ratio %v: want 0 (off) to 1", s.FailureRatio)
	case s.Interval < 0:
		return fmt.Errorf("breaker interval %s: must not be negative", s.Interval)
	case s.OpenTimeout < 0:
		return fmt.Errorf("breaker open timeout %s: must not be negative", s.OpenTimeout)
	}
	return nil
}

// Result classifies the outcome of a call for the breaker and its metrics.
type Result int

// Results of a call, as counted in meshplane_circuit_breaker_requests_total{result}.
const (
	// Success counts toward closing; the dependency answered (a client error is an answer).
	Success Result = iota
	// Failure counts toward tripping.
	Failure
	// Excluded counts as neither, e.g. the caller gave up.
	Excluded
)

func (r Result) String() string {
	switch r {
	case Success:
		return "success"
	case Failure:
		return "failure"
	}
	return "excluded"
}

// State names, as in the state label.
const (
	StateClosed   = "closed"
	StateHalfOpen = "half_open"
	StateOpen     = "open"
)

var states = []string{StateClosed, StateHalfOpen, StateOpen}

func stateName(s gobreaker.State) string {
	switch s {
	case gobreaker.StateOpen:
		return StateOpen
	case gobreaker.StateHalfOpen:
		return StateHalfOpen
	}
	return StateClosed
}

// ErrOpen is returned, wrapped, when a breaker rejects a call.
var ErrOpen = errors.New("circuit breaker open")

// Breaker guards calls to one dependency.
type Breaker struct {
	name     string
	cb       *gobreaker.TwoStepCircuitBreaker[struct{}]
	classify func(error) Result
	m        *Metrics
}

// Metrics exports every breaker created with it. Register it once per registry.
type Metrics struct {
	transitions *prometheus.CounterVec
	requests    *prometheus.CounterVec
	stateDesc   *prometheus.Desc

	mu       sync.Mutex
	breakers []*Breaker
}

// NewMetrics creates and registers the breaker metrics in reg.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		transitions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "meshplane_circuit_breaker_transitions_total",
			Help: "Circuit breaker state changes.",
		}, []string{"name", "from", "to"}),
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "meshplane_circuit_breaker_requests_total",
			Help: "Calls through a circuit breaker by result: success, failure, excluded, rejected_open, rejected_half_open.",
		}, []string{"name", "result"}),
		stateDesc: prometheus.NewDesc("meshplane_circuit_breaker_state",
			"1 for the breaker's current state (closed, half_open, open), 0 for the others.", []string{"name", "state"}, nil),
	}
	reg.MustRegister(m.transitions, m.requests, m)
	return m
}

// Describe implements prometheus.Collector for the state gauge.
func (m *Metrics) Describe(ch chan<- *prometheus.Desc) { ch <- m.stateDesc }

// Collect implements prometheus.Collector: it asks each breaker for its state now, which is also
// what moves an expired open breaker to half-open in gobreaker.
func (m *Metrics) Collect(ch chan<- prometheus.Metric) {
	m.mu.Lock()
	bs := append([]*Breaker(nil), m.breakers...)
	m.mu.Unlock()
	for _, b := range bs {
		cur := b.State()
		for _, s := range states {
			v := 0.0
			if s == cur {
				v = 1
			}
			ch <- prometheus.MustNewConstMetric(m.stateDesc, prometheus.GaugeValue, v, b.name, s)
		}
	}
}

// New creates the breaker for dependency name. classify decides what an error means for it; nil
// counts every error as a failure.
func New(name string, s Settings, classify func(error) Result, m *Metrics) *Breaker {
	s = s.withDefaults()
	if classify == nil {
		classify = func(err error) Result {
			if err != nil {
				return Failure
			}
			return Success
		}
	}
	b := &Breaker{name: name, classify: classify, m: m}
	b.cb = gobreaker.NewTwoStepCircuitBreaker[struct{}](gobreaker.Settings{
		Name:        name,
		MaxRequests: s.HalfOpenRequests,
		Interval:    s.Interval,
		Timeout:     s.OpenTimeout,
		ReadyToTrip: func(c gobreaker.Counts) bool {
			if c.ConsecutiveFailures >= s.ConsecutiveFailures {
				return true
			}
			return s.FailureRatio > 0 && c.Requests >= s.MinRequests &&
				float64(c.TotalFailures)/float64(c.Requests) >= s.FailureRatio
		},
		// Runs under gobreaker's mutex: only touch our own counter here.
		OnStateChange: func(name string, from, to gobreaker.State) {
			m.transitions.WithLabelValues(name, stateName(from), stateName(to)).Inc()
		},
		IsSuccessful: func(err error) bool { return classify(err) != Failure },
		IsExcluded:   func(err error) bool { return classify(err) == Excluded },
	})
	for _, r := range []string{"success", "failure", "excluded", "rejected_open", "rejected_half_open"} {
		m.requests.WithLabelValues(name, r)
	}
	for _, from := range states {
		for _, to := range states {
			if from != to {
				m.transitions.WithLabelValues(name, from, to)
			}
		}
	}
	m.mu.Lock()
	m.breakers = append(m.breakers, b)
	m.mu.Unlock()
	return b
}

// Name is the dependency the breaker guards.
func (b *Breaker) Name() string { return b.name }

// State is closed, half_open or open.
func (b *Breaker) State() string { return stateName(b.cb.State()) }

// Allow asks to make a call. If the breaker lets it through, call done with the call's error when it
// finishes; otherwise the error wraps ErrOpen.
func (b *Breaker) Allow() (done func(error), err error) {
	d, err := b.cb.Allow()
	if err != nil {
		result := "rejected_open"
		if errors.Is(err, gobreaker.ErrTooManyRequests) {
			result = "rejected_half_open"
		}
		b.m.requests.WithLabelValues(b.name, result).Inc()
		return nil, fmt.Errorf("%s: %w (%w)", b.name, ErrOpen, err)
	}
	return func(err error) {
		b.m.requests.WithLabelValues(b.name, b.classify(err).String()).Inc()
		d(err)
	}, nil
}

// Do runs call through the breaker.
func (b *Breaker) Do(call func() error) error {
	done, err := b.Allow()
	if err != nil {
		return err
	}
	err = call()
	done(err)
	return err
}

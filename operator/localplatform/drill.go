package localplatform

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"meshplane.dev/mesh/devkit/metricstest"
)

// DrillOptions shape the payments failure drill.
type DrillOptions struct {
	// Baseline, Fault and Recovery are the phases' lengths: normal traffic, payments failing every
	// charge, and after the fault is cleared (ended early once the breaker has closed for a while).
	Baseline, Fault, Recovery time.Duration
	// Every is the table's row interval.
	Every time.Duration
	// OrderRate is the orders per second the drill places itself, on top of loadgen.
	OrderRate float64
	// Scenarios are run in order: ScenarioBreaker (the payments failure drill above), ScenarioDatabase
	// (an orders replica killed and PostgreSQL restarted under load), ScenarioEvents (the broker frozen,
	// a consumer killed, a poison event) and the mesh scenarios (MeshScenarios), which need the
	// platform's istiod.
	Scenarios []string
}

// ScenarioBreaker is the payments failure drill: orders' client-side breaker opening and closing.
const ScenarioBreaker = "breaker"

// DefaultDrill is the breaker drill (about 90 seconds), the database drill (about 45 seconds), the events
// drill (about a minute) and every mesh scenario (about a minute, and two more for the canary rollouts).
func DefaultDrill() DrillOptions {
	return DrillOptions{Baseline: 15 * time.Second, Fault: 30 * time.Second, Recovery: 45 * time.Second, Every: 5 * time.Second, OrderRate: 4,
		Scenarios: append([]string{ScenarioBreaker, ScenarioDatabase, ScenarioEvents}, MeshScenarios...)}
}

// Validate names an unknown scenario.
func (o DrillOptions) Validate() error {
	known := append([]string{ScenarioBreaker, ScenarioDatabase, ScenarioEvents}, MeshScenarios...)
	if len(o.Scenarios) == 0 {
		return fmt.Errorf("--scenarios: at least one of %s", strings.Join(known, ","))
	}
	for _, sc := range o.Scenarios {
		if !slices.Contains(known, sc) {
			return fmt.Errorf("--scenarios: unknown scenario %q (known: %s)", sc, strings.Join(known, ","))
		}
	}
	return nil
}

// drillRow is one line of the table.
type drillRow struct {
	at                   time.Duration
	phase                string
	ok, failed           int64 // orders placed by the drill in this row's interval
	errRatio             float64
	breaker              string
	rejected, paymentsRS float64
}

// Drill runs o.Scenarios against the running platform, in order, and fails when one could not run
// or its prediction did not hold.
func Drill(ctx context.Context, cfg Config, o DrillOptions, out io.Writer) error {
	if err := o.Validate(); err != nil {
		return err
	}
	st, err := ReadState(cfg.Dir)
	if err != nil {
		return err
	}
	if st == nil || !alive(st.SupervisorPID) || st.Phase != PhaseReady {
		return fmt.Errorf("%w: start it with make up", ErrNotRunning)
	}
	var errs []error
	var mesh []string
	for _, sc := range o.Scenarios {
		switch sc {
		case ScenarioBreaker:
			if err := breakerDrill(ctx, st, o, out); err != nil {
				errs = append(errs, fmt.Errorf("breaker drill: %w", err))
			}
			fmt.Fprintln(out)
			continue
		case ScenarioDatabase:
			if err := databaseDrill(ctx, cfg, st, o, out); err != nil {
				errs = append(errs, fmt.Errorf("database drill: %w", err))
			}
			fmt.Fprintln(out)
			continue
		case ScenarioEvents:
			if err := eventsDrill(ctx, cfg, st, o, out); err != nil {
				errs = append(errs, fmt.Errorf("events drill: %w", err))
			}
			fmt.Fprintln(out)
			continue
		}
		mesh = append(mesh, sc)
	}
	if len(mesh) > 0 {
		if err := meshDrill(ctx, st, mesh, out); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// breakerDrill injects payment failures into every payments instance and prints how the error rate
// rises, orders' breaker opens and requests fail fast without reaching payments, then how it all
// recovers after the fault is cleared. Every column covers the same window, the row's interval: the
// drill's own orders as it counts them, everything else from the processes' own /metrics (the endpoints
// Prometheus scrapes) read at each row, so no column lags behind another by a scrape or a rate window.
// It fails if the breaker never opened or never closed again.
func breakerDrill(ctx context.Context, st *State, o DrillOptions, out io.Writer) error {
	var faults []string
	metrics := map[string][]string{} // service → its instances' /metrics URLs
	for _, in := range shopInstances() {
		admin := "http://" + st.Ports.Addr(in.key+"-admin")
		metrics[in.svc.name] = append(metrics[in.svc.name], admin+"/metrics")
		if in.svc.name == "payments" {
			faults = append(faults, admin+"/admin/faults")
		}
	}
	setFaults := func(ctx context.Context, method string, body []byte) error {
		var errs []error
		for _, f := range faults {
			errs = append(errs, send(ctx, method, f, body))
		}
		return errors.Join(errs...)
	}
	gateway := "http://" + st.Ports.Addr("gateway")
	defer func() { _ = setFaults(context.Background(), http.MethodDelete, nil) }()

	fmt.Fprintf(out, "Payments failure drill: %s normal traffic, %s with every payments instance failing every charge, up to %s of recovery.\n",
		o.Baseline, o.Fault, o.Recovery)
	fmt.Fprintf(out, "The drill places %g orders/s through the gateway. Each row covers the %s before it: the drill's orders,\n"+
		"and the gateway's 5xx share (all its traffic, loadgen's too), orders' breaker and payments' charges\n"+
		"from each process's own /metrics.\n\n", o.OrderRate, o.Every)

	var ok, failed atomic.Int64
	ctx, stopLoad := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Go(func() { placeOrders(ctx, gateway, o.OrderRate, &ok, &failed) })
	defer func() { stopLoad(); wg.Wait() }()

	const rowFormat = "%5s  %-8s  %9s  %13s  %11s  %-23s  %10s  %18s\n"
	fmt.Fprintf(out, rowFormat, "t", "phase", "orders ok", "orders failed", "gateway 5xx", "orders→payments breaker", "rejected/s", "payments charges/s")
	began := time.Now()
	var rows []drillRow
	var lastOK, lastFailed int64
	last, lastAt := readCounters(ctx, metrics), time.Now()
	row := func(phase string) {
		now := readCounters(ctx, metrics)
		at := time.Now()
		seconds := at.Sub(lastAt).Seconds()
		r := drillRow{at: at.Sub(began), phase: phase}
		r.ok, r.failed = ok.Load()-lastOK, failed.Load()-lastFailed
		lastOK, lastFailed = lastOK+r.ok, lastFailed+r.failed
		r.errRatio = ratio(now.gateway5xx-last.gateway5xx, now.gatewayAll-last.gatewayAll)
		r.breaker = now.breaker
		r.rejected = rate(now.rejected-last.rejected, seconds)
		r.paymentsRS = rate(now.charges-last.charges, seconds)
		last, lastAt = now, at
		rows = append(rows, r)
		fmt.Fprintf(out, rowFormat, fmt.Sprintf("%.0fs", r.at.Seconds()), r.phase, strconv.FormatInt(r.ok, 10), strconv.FormatInt(r.failed, 10),
			pct(r.errRatio), r.breaker, num(r.rejected), num(r.paymentsRS))
	}
	phase := func(name string, d time.Duration, done func() bool) error {
		end := time.Now().Add(d)
		t := time.NewTicker(o.Every)
		defer t.Stop()
		for time.Now().Before(end) {
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-t.C:
			}
			row(name)
			if done != nil && done() {
				return nil
			}
		}
		return nil
	}

	if err := phase("baseline", o.Baseline, nil); err != nil {
		return err
	}
	if err := setFaults(ctx, http.MethodPut, []byte(`[{"target":"Charge","errorRate":1}]`)); err != nil {
		return fmt.Errorf("inject payments fault: %w", err)
	}
	faultAt := time.Since(began)
	if err := phase("FAULT", o.Fault, nil); err != nil {
		return err
	}
	if err := setFaults(ctx, http.MethodDelete, nil); err != nil {
		return fmt.Errorf("clear payments fault: %w", err)
	}
	clearAt := time.Since(began)
	closedRows := 0
	if err := phase("recovery", o.Recovery, func() bool {
		if rows[len(rows)-1].breaker == "closed" {
			closedRows++
		} else {
			closedRows = 0
		}
		return closedRows >= 3
	}); err != nil {
		return err
	}
	return summarize(out, rows, o.Every, faultAt, clearAt)
}

// counters are the drill's readings of the processes' metrics at one moment. A reading that failed is
// NaN, so the row shows "-" rather than a made-up rate.
type counters struct {
	gateway5xx, gatewayAll float64 // HTTP requests the gateway answered
	rejected               float64 // calls orders' breakers for payments refused
	charges                float64 // Charge calls payments' instances handled
	breaker                string  // orders' breakers for payments: their states
}

func readCounters(ctx context.Context, metrics map[string][]string) counters {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	c := counters{gateway5xx: math.NaN(), gatewayAll: math.NaN(), rejected: math.NaN(), charges: math.NaN(), breaker: "?"}
	read := func(service string) []metricstest.Families {
		var all []metricstest.Families
		for _, u := range metrics[service] {
			f, err := metricstest.Scrape(ctx, u)
			if err != nil {
				return nil
			}
			all = append(all, f)
		}
		return all
	}
	if gw := read("gateway"); gw != nil {
		c.gateway5xx, c.gatewayAll = 0, 0
		for _, f := range gw {
			for series, v := range f.Series("http_server_request_duration_seconds") {
				c.gatewayAll += v
				if strings.Contains(series, `http_response_status_code="5`) {
					c.gateway5xx += v
				}
			}
		}
	}
	if orders := read("orders"); orders != nil {
		c.rejected = 0
		states := map[string]int{} // breaker state → orders replicas in it
		for _, f := range orders {
			for series, v := range f.Series("meshplane_circuit_breaker_requests_total") {
				if strings.Contains(series, `name="payments"`) && strings.Contains(series, `result="rejected_`) {
					c.rejected += v
				}
			}
			for series, v := range f.Series("meshplane_circuit_breaker_state") {
				if v == 1 && strings.Contains(series, `name="payments"`) {
					if _, rest, ok := strings.Cut(series, `state="`); ok {
						state, _, _ := strings.Cut(rest, `"`)
						states[state]++
					}
				}
			}
		}
		c.breaker = breakerStates(states)
	}
	if payments := read("payments"); payments != nil {
		c.charges = 0
		for _, f := range payments {
			c.charges += f.Value("grpc_server_handled_total", map[string]string{"grpc_method": "Charge"})
		}
	}
	return c
}

// breakerStates names the orders replicas' breaker states: one state when they agree, else each with its
// count of replicas, most severe first ("open×1 closed×1").
func breakerStates(states map[string]int) string {
	switch len(states) {
	case 0:
		return "?"
	case 1:
		for st := range states {
			return st
		}
	}
	var parts []string
	for _, st := range []string{"open", "half_open", "closed"} {
		if n := states[st]; n > 0 {
			parts = append(parts, fmt.Sprintf("%s×%d", st, n))
		}
	}
	return strings.Join(parts, " ")
}

func ratio(part, whole float64) float64 {
	if whole <= 0 {
		return math.NaN()
	}
	return part / whole
}

func rate(delta, seconds float64) float64 {
	if seconds <= 0 {
		return math.NaN()
	}
	return delta / seconds
}

func num(f float64) string {
	if math.IsNaN(f) {
		return "-"
	}
	return fmt.Sprintf("%.2f", f)
}

// summarize states when the breaker opened and closed, and fails when it did not.
func summarize(out io.Writer, rows []drillRow, every, faultAt, clearAt time.Duration) error {
	var opened, closed time.Duration = -1, -1
	for _, r := range rows {
		if opened < 0 && r.at > faultAt && r.breaker != "closed" && r.breaker != "?" {
			opened = r.at
		}
		if opened >= 0 && closed < 0 && r.at > clearAt && r.breaker == "closed" {
			closed = r.at
		}
	}
	fmt.Fprintln(out)
	var errs []error
	if opened < 0 {
		errs = append(errs, errors.New("orders' breaker for payments never left closed while payments failed"))
	} else {
		fmt.Fprintf(out, "Breaker opened within %.0fs of the fault (the drill reads it every %s).\n", (opened - faultAt).Seconds(), every)
	}
	if closed < 0 {
		errs = append(errs, errors.New("the breaker did not close after the fault was cleared"))
	} else {
		fmt.Fprintf(out, "Breaker closed within %.0fs of clearing the fault; traffic to payments resumed.\n", (closed - clearAt).Seconds())
	}
	return errors.Join(errs...)
}

func placeOrders(ctx context.Context, gateway string, rate float64, ok, failed *atomic.Int64) {
	t := time.NewTicker(time.Duration(float64(time.Second) / rate))
	defer t.Stop()
	c := &http.Client{Timeout: 5 * time.Second}
	for i := 0; ; i++ {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, gateway+"/v1/orders",
			bytes.NewReader([]byte(`{"items":[{"productId":"moka-pot","quantity":1}],"cardToken":"tok_visa"}`)))
		if err != nil {
			return
		}
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Idempotency-Key", "drill-"+strconv.FormatInt(time.Now().UnixNano(), 36)+"-"+strconv.Itoa(i))
		resp, err := c.Do(req)
		if err != nil {
			if ctx.Err() == nil {
				failed.Add(1)
			}
			continue
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode/100 == 2 {
			ok.Add(1)
		} else {
			failed.Add(1)
		}
	}
}

func send(ctx context.Context, method, url string, body []byte) error {
	req, err := http.NewRequestWithContext(ctx, method, url, bytes.NewReader(body))
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		return fmt.Errorf("%s %s: %s: %s", method, url, resp.Status, b)
	}
	return nil
}

func pct(f float64) string {
	if math.IsNaN(f) {
		return "-"
	}
	return fmt.Sprintf("%.0f%%", 100*f)
}

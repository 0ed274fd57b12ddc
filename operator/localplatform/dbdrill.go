package localplatform

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"

	"meshplane.dev/mesh/devkit/devserver"
	"meshplane.dev/mesh/devkit/wait"
)

// ScenarioDatabase is the database drill: an orders replica killed and PostgreSQL restarted under load,
// then the ledger checked for duplicates.
const ScenarioDatabase = "database"

// dbDrillClients is how many clients place orders at once, each retrying an order with its key until it
// is placed, as a client honouring Idempotency-Key does.
const dbDrillClients = 4

// dbAttempt is one request of the database drill.
type dbAttempt struct {
	at         time.Duration
	code       int
	dependency string
}

// databaseDrill places orders through the gateway with clients that retry each with its key, kills the
// orders replica orders-2 (the supervisor starts it again), stops PostgreSQL (the supervisor starts it
// again), and prints every interval what the clients saw. At the end it counts, in both databases, the
// drill's orders and their charges: it fails unless every order the clients were told was placed is
// paid with exactly one charge, and no order or charge is duplicated.
func databaseDrill(ctx context.Context, cfg Config, st *State, o DrillOptions, out io.Writer) error {
	gateway := "http://" + st.Ports.Addr("gateway")
	prefix := "dbdrill-" + strconv.FormatInt(time.Now().UnixNano(), 36)
	fmt.Fprintf(out, "Database drill: %d clients place orders through the gateway, each retrying an order with its Idempotency-Key until placed;\n", dbDrillClients)
	fmt.Fprintf(out, "%s normal, then orders-2 is killed (SIGKILL), then PostgreSQL is stopped (fast shutdown); the supervisor restarts both.\n\n", o.Baseline)

	began := time.Now()
	var mu sync.Mutex
	var attempts []dbAttempt
	placed := map[string]string{} // key → order id the gateway answered with
	loadCtx, stopLoad := context.WithCancel(ctx)
	var wg sync.WaitGroup
	for c := range dbDrillClients {
		wg.Go(func() {
			client := &http.Client{Timeout: 10 * time.Second}
			for n := 0; loadCtx.Err() == nil; n++ {
				key := fmt.Sprintf("%s-%d-%d", prefix, c, n)
				for {
					code, id, dep := postOrder(ctx, client, gateway, key)
					mu.Lock()
					attempts = append(attempts, dbAttempt{at: time.Since(began), code: code, dependency: dep})
					if code == http.StatusCreated {
						placed[key] = id
					}
					mu.Unlock()
					if code == http.StatusCreated || ctx.Err() != nil {
						break
					}
					time.Sleep(100 * time.Millisecond)
				}
				time.Sleep(time.Duration(float64(time.Second) * dbDrillClients / o.OrderRate))
			}
		})
	}
	defer func() { stopLoad(); wg.Wait() }()

	const rowFormat = "%5s  %-16s  %6s  %17s  %15s  %6s\n"
	fmt.Fprintf(out, rowFormat, "t", "phase", "placed", "503/504 postgres", "503/504 orders", "other")
	next := 0
	row := func(phase string) {
		mu.Lock()
		batch := attempts[next:]
		next = len(attempts)
		mu.Unlock()
		var ok, pg, orders, other int
		for _, a := range batch {
			switch {
			case a.code == http.StatusCreated:
				ok++
			case a.dependency == "postgres":
				pg++
			case a.dependency == "orders":
				orders++
			default:
				other++
			}
		}
		fmt.Fprintf(out, rowFormat, fmt.Sprintf("%.0fs", time.Since(began).Seconds()), phase, strconv.Itoa(ok), strconv.Itoa(pg), strconv.Itoa(orders), strconv.Itoa(other))
	}
	phase := func(name string, d time.Duration) error {
		end := time.Now().Add(d)
		for time.Now().Before(end) {
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(min(o.Every, time.Until(end))):
			}
			row(name)
		}
		return nil
	}

	if err := phase("baseline", o.Baseline); err != nil {
		return err
	}
	if err := signalComponent(cfg, "orders-2", syscall.SIGKILL); err != nil {
		return err
	}
	if err := phase("orders-2 killed", 2*o.Every); err != nil {
		return err
	}
	if err := signalComponent(cfg, "postgres", syscall.SIGINT); err != nil {
		return err
	}
	if err := phase("postgres stopped", 2*o.Every); err != nil {
		return err
	}
	if err := phase("recovery", o.Every); err != nil {
		return err
	}
	stopLoad()
	wg.Wait() // each client finishes the order it holds: retried until placed
	row("drain")

	mu.Lock()
	defer mu.Unlock()
	l, err := drillLedger(ctx, cfg, st, prefix)
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "\nOrders the clients were told were placed: %d (%d requests). In the databases: %d orders paid, %d pending, %d charges; duplicates: %d.\n",
		len(placed), len(attempts), l.paid, l.pending, l.charges, len(l.duplicates))
	var errs []error
	if len(l.duplicates) > 0 {
		errs = append(errs, fmt.Errorf("duplicates: %s", strings.Join(l.duplicates, "; ")))
	}
	if l.paid != len(placed) || l.charges != len(placed) || l.pending != 0 {
		errs = append(errs, fmt.Errorf("%d orders placed, but %d paid, %d pending and %d charges in the databases", len(placed), l.paid, l.pending, l.charges))
	}
	for key, id := range placed {
		if l.orderOfKey[key] != id {
			errs = append(errs, fmt.Errorf("key %s: the client got order %s, the database holds %q", key, id, l.orderOfKey[key]))
		}
	}
	return errors.Join(errs...)
}

// postOrder places one order with key and returns the status, the order id and the failed dependency.
func postOrder(ctx context.Context, client *http.Client, gateway, key string) (int, string, string) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, gateway+"/v1/orders",
		bytes.NewReader([]byte(`{"items":[{"productId":"moka-pot","quantity":1}],"cardToken":"tok_visa"}`)))
	if err != nil {
		return 0, "", ""
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Idempotency-Key", key)
	resp, err := client.Do(req)
	if err != nil {
		return 0, "", ""
	}
	defer resp.Body.Close()
	var body struct {
		ID         string `json:"id"`
		Dependency string `json:"dependency"`
	}
	_ = json.NewDecoder(io.LimitReader(resp.Body, 64<<10)).Decode(&body)
	return resp.StatusCode, body.ID, body.Dependency
}

// signalComponent sends sig to the running platform's component name (its pid in the state file).
func signalComponent(cfg Config, name string, sig syscall.Signal) error {
	st, err := ReadState(cfg.Dir)
	if err != nil {
		return err
	}
	for _, c := range st.Components {
		if c.Name == name && c.PID != 0 {
			if err := syscall.Kill(c.PID, sig); err != nil {
				return fmt.Errorf("signal %s (pid %d): %w", name, c.PID, err)
			}
			return nil
		}
	}
	return fmt.Errorf("no component %s with a pid in the state file", name)
}

// dbLedger is what the databases hold of the drill's orders.
type dbLedger struct {
	paid, pending, charges int
	orderOfKey             map[string]string
	duplicates             []string
}

// drillLedger reads the drill's orders (keys starting with prefix) and their charges, waiting for
// PostgreSQL to be back if it is not yet.
func drillLedger(ctx context.Context, cfg Config, st *State, prefix string) (dbLedger, error) {
	password, err := pgpassPassword(cfg.pgpassPath())
	if err != nil {
		return dbLedger{}, err
	}
	connect := func(db string) (*pgx.Conn, error) {
		c, err := pgx.ParseConfig("postgres://" + devserver.PostgresSuperuser + "@" + st.Ports.Addr("postgres") + "/" + db + "?sslmode=disable")
		if err != nil {
			return nil, err
		}
		c.Password = password
		var conn *pgx.Conn
		wctx, cancel := context.WithTimeout(ctx, time.Minute)
		defer cancel()
		err = wait.Until(wctx, 200*time.Millisecond, func(ctx context.Context) error {
			conn, err = pgx.ConnectConfig(ctx, c)
			return err
		})
		return conn, err
	}
	oc, err := connect("orders")
	if err != nil {
		return dbLedger{}, err
	}
	defer func() { _ = oc.Close(context.Background()) }()
	pc, err := connect("payments")
	if err != nil {
		return dbLedger{}, err
	}
	defer func() { _ = pc.Close(context.Background()) }()

	l := dbLedger{orderOfKey: map[string]string{}}
	rows, err := oc.Query(ctx, "SELECT idempotency_key, id, status FROM orders WHERE idempotency_key LIKE $1 || '-%'", prefix)
	if err != nil {
		return l, err
	}
	var ids []string
	for rows.Next() {
		var key, id, status string
		if err := rows.Scan(&key, &id, &status); err != nil {
			return l, err
		}
		l.orderOfKey[key] = id
		ids = append(ids, id)
		if status == "paid" {
			l.paid++
		} else {
			l.pending++
		}
	}
	if err := rows.Err(); err != nil {
		return l, err
	}
	rows, err = pc.Query(ctx, "SELECT reference, count(*) FROM charges WHERE reference = ANY($1) GROUP BY reference", ids)
	if err != nil {
		return l, err
	}
	for rows.Next() {
		var ref string
		var n int
		if err := rows.Scan(&ref, &n); err != nil {
			return l, err
		}
		l.charges += n
		if n > 1 {
			l.duplicates = append(l.duplicates, fmt.Sprintf("order %s charged %d times", ref, n))
		}
	}
	slices.Sort(l.duplicates)
	return l, rows.Err()
}

// pgpassPassword reads the password of the run's PostgreSQL from its password file.
func pgpassPassword(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", fmt.Errorf("the run's PostgreSQL password: %w", err)
	}
	defer f.Close()
	s := bufio.NewScanner(f)
	if s.Scan() {
		if fields := strings.Split(s.Text(), ":"); len(fields) == 5 {
			return fields[4], nil
		}
	}
	return "", fmt.Errorf("%s: no host:port:db:user:password line", path)
}

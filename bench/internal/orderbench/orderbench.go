// Package orderbench measures order placement with PostgreSQL: the real catalog, payments and orders
// processes over a real PostgreSQL, closed-loop PlaceOrder calls with fresh idempotency keys, beside the
// floor of the database itself — the same statements a placement runs, from a bare pgx client at the
// same concurrency against the same server and tables — interleaved in rounds so that noise from the
// shared machine hits both alike.
package orderbench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"meshplane.dev/bench/internal/report"
	"meshplane.dev/mesh/devkit/devserver"
	"meshplane.dev/mesh/devkit/load"
	ordersv1 "meshplane.dev/services/proto/orders/v1"
)

// Options configure the measurement.
type Options struct {
	// Services is the directory holding the catalog, payments and orders binaries.
	Services string
	// Dir receives PostgreSQL's data and every process's log.
	Dir string
	// Duration is how long each side is loaded per round, after Warmup.
	Duration, Warmup time.Duration
	// Rounds alternates the services and the floor this many times.
	Rounds int
	// Concurrency is the number of placements in flight (closed loop).
	Concurrency int
	// Log receives progress.
	Log io.Writer
}

const section = "Order placement (PostgreSQL)"

// Run starts PostgreSQL and the three services, measures both sides and returns the rows of the table.
func Run(ctx context.Context, o Options) ([]report.Row, error) {
	pg, err := devserver.StartPostgres(ctx, devserver.Options{Dir: filepath.Join(o.Dir, "postgres")})
	if err != nil {
		return nil, err
	}
	defer func() { _ = pg.Close() }()
	for _, db := range []string{"orders", "payments"} {
		if err := pg.CreateDatabase(ctx, db); err != nil {
			return nil, err
		}
	}
	ordersAddr, stop, err := startShop(ctx, pg, o)
	if err != nil {
		return nil, err
	}
	defer stop()

	conn, err := grpc.NewClient(ordersAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return nil, err
	}
	defer func() { _ = conn.Close() }()
	orders := ordersv1.NewOrderServiceClient(conn)
	floor, err := newFloor(ctx, pg, o.Concurrency)
	if err != nil {
		return nil, err
	}
	defer floor.close()

	var seq atomic.Int64
	key := func(prefix string) string { return prefix + strconv.FormatInt(seq.Add(1), 36) }
	runs := []struct {
		name string
		load func(ctx context.Context, d time.Duration) load.Result
	}{
		{"services", func(ctx context.Context, d time.Duration) load.Result {
			return load.Closed(ctx, o.Concurrency, d, func(ctx context.Context) error {
				r, err := orders.PlaceOrder(ctx, &ordersv1.PlaceOrderRequest{IdempotencyKey: key("bench-"), CardToken: "tok_visa",
					Items: []*ordersv1.LineItem{{ProductId: "moka-pot", Quantity: 1}, {ProductId: "paper-filters", Quantity: 2}}})
				if err == nil && r.GetOrder().GetStatus() != "paid" {
					err = fmt.Errorf("order %s is %s", r.GetOrder().GetId(), r.GetOrder().GetStatus())
				}
				return err
			})
		}},
		{"floor", func(ctx context.Context, d time.Duration) load.Result {
			return load.Closed(ctx, o.Concurrency, d, func(ctx context.Context) error { return floor.place(ctx, key("floor-")) })
		}},
	}
	results := map[string]*load.Result{}
	for round := range o.Rounds {
		for _, r := range runs {
			if w := r.load(ctx, o.Warmup); w.Err != nil {
				return nil, fmt.Errorf("order placement, %s warm-up: %w", r.name, w.Err)
			}
			res := r.load(ctx, o.Duration)
			if res.Err != nil {
				return nil, fmt.Errorf("order placement, %s: %w", r.name, res.Err)
			}
			fmt.Fprintf(o.Log, "order placement round %d, %s: %.0f/s, p50 %s, p99 %s\n", round+1, r.name, res.RPS(), ms(res.Percentile(50)), ms(res.Percentile(99)))
			if results[r.name] == nil {
				results[r.name] = &load.Result{}
			}
			results[r.name].Add(res)
		}
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	paid, duplicates, err := ledger(ctx, pg)
	if err != nil {
		return nil, err
	}
	svc, bare := results["services"], results["floor"]
	return []report.Row{
		{Section: section, Figure: fmt.Sprintf("gRPC PlaceOrder (catalog, a transaction, payments, mark paid): orders/s, %d in flight; floor: the same SQL from a bare pgx client", o.Concurrency),
			Value: fmt.Sprintf("%.0f", svc.RPS()), Floor: fmt.Sprintf("%.0f", bare.RPS()),
			Ratio: fmt.Sprintf("%.0f %%", 100*svc.RPS()/bare.RPS())},
		{Section: section, Figure: "PlaceOrder: latency p50 / p99",
			Value: ms(svc.Percentile(50)) + " / " + ms(svc.Percentile(99)),
			Floor: ms(bare.Percentile(50)) + " / " + ms(bare.Percentile(99)),
			Ratio: fmt.Sprintf("%.2f× / %.2f×", ratio(svc.Percentile(50), bare.Percentile(50)), ratio(svc.Percentile(99), bare.Percentile(99)))},
		{Section: section, Figure: "orders the services placed and paid / orders charged more than once",
			Value: fmt.Sprintf("%d / %d", paid, duplicates), Target: "0 charged twice", Met: yesNo(duplicates == 0 && paid > 0)},
	}, nil
}

// startShop runs catalog, payments and orders (each a process, the latter two over pg) on free ports and
// returns orders' gRPC address once all three are ready.
func startShop(ctx context.Context, pg *devserver.Postgres, o Options) (string, func(), error) {
	ports, err := devserver.FreePorts(6)
	if err != nil {
		return "", nil, err
	}
	addr := func(i int) string { return "127.0.0.1:" + strconv.Itoa(ports[i]) }
	db := func(name string) []string {
		return []string{"DATABASE_URL=" + pg.URL(name), "DATABASE_PASSWORD=" + pg.Password}
	}
	specs := []struct {
		name string
		env  []string
	}{
		{"catalog", []string{"GRPC_ADDR=" + addr(0), "ADMIN_ADDR=" + addr(1)}},
		{"payments", append([]string{"GRPC_ADDR=" + addr(2), "ADMIN_ADDR=" + addr(3)}, db("payments")...)},
		{"orders", append([]string{"GRPC_ADDR=" + addr(4), "ADMIN_ADDR=" + addr(5), "CATALOG_TARGET=" + addr(0), "PAYMENTS_TARGET=" + addr(2)}, db("orders")...)},
	}
	var servers []*devserver.Server
	stop := func() {
		for _, s := range servers {
			_ = s.Stop()
		}
	}
	for i, sp := range specs {
		admin := "http://" + addr(2*i+1)
		s, err := devserver.Run(ctx, devserver.Options{Dir: filepath.Join(o.Dir, sp.name)}, devserver.Program{
			Name: sp.name, Bin: filepath.Join(o.Services, sp.name), Env: append(sp.env, "LOG_LEVEL=info", "NAMESPACE=bench"), OnlyEnv: true,
			Addr: addr(2 * i), Ready: devserver.HTTPReady(admin + "/readyz"),
		})
		if err != nil {
			stop()
			return "", nil, err
		}
		servers = append(servers, s)
	}
	return addr(4), stop, nil
}

// floor runs what one placement asks of PostgreSQL, statement for statement as orders and payments run
// them (services/orders/internal/store, services/payments/internal/store), on pools of its own.
type floor struct {
	orders, payments *pgxpool.Pool
}

func newFloor(ctx context.Context, pg *devserver.Postgres, n int) (*floor, error) {
	pool := func(db string) (*pgxpool.Pool, error) {
		cfg, err := pgxpool.ParseConfig(pg.URL(db))
		if err != nil {
			return nil, err
		}
		cfg.ConnConfig.Password = pg.Password
		cfg.MaxConns = int32(n) //nolint:gosec // a handful of connections
		return pgxpool.NewWithConfig(ctx, cfg)
	}
	o, err := pool("orders")
	if err != nil {
		return nil, err
	}
	p, err := pool("payments")
	if err != nil {
		o.Close()
		return nil, err
	}
	return &floor{orders: o, payments: p}, nil
}

func (f *floor) close() {
	f.orders.Close()
	f.payments.Close()
}

func (f *floor) place(ctx context.Context, key string) error {
	id := "ord_" + key
	var found string
	err := f.orders.QueryRow(ctx, "SELECT id FROM orders WHERE idempotency_key = $1", key).Scan(&found)
	if !errors.Is(err, pgx.ErrNoRows) {
		return fmt.Errorf("lookup: %w", err)
	}
	err = pgx.BeginFunc(ctx, f.orders, func(tx pgx.Tx) error {
		var created time.Time
		if err := tx.QueryRow(ctx, `INSERT INTO orders (id, idempotency_key, request_fingerprint, status, currency, total_cents, lease_until)
			VALUES ($1, $2, 'fp', 'pending', 'EUR', 4200, now() + 5000 * interval '1 millisecond')
			ON CONFLICT (idempotency_key) DO NOTHING RETURNING created_at`, id, key).Scan(&created); err != nil {
			return err
		}
		_, err := tx.Exec(ctx, `INSERT INTO order_items (order_id, position, product_id, quantity, unit_price_cents)
			SELECT $1, p.ord - 1, p.product_id, p.quantity, p.price
			FROM unnest($2::text[], $3::int[], $4::bigint[]) WITH ORDINALITY AS p(product_id, quantity, price, ord)`,
			id, []string{"moka-pot", "paper-filters"}, []int32{1, 2}, []int64{3400, 400})
		return err
	})
	if err != nil {
		return fmt.Errorf("create: %w", err)
	}
	var at time.Time
	if err := f.payments.QueryRow(ctx, `INSERT INTO charges (id, idempotency_key, amount_cents, currency, reference)
		VALUES ($1, $2, 4200, 'EUR', $3) ON CONFLICT (idempotency_key) DO NOTHING RETURNING created_at`,
		"ch_"+key, "order/"+id, id).Scan(&at); err != nil {
		return fmt.Errorf("charge: %w", err)
	}
	if _, err := f.orders.Exec(ctx, `UPDATE orders SET status = 'paid', charge_id = $2, paid_at = now(), lease_until = NULL
		WHERE id = $1 AND status = 'pending'`, id, "ch_"+key); err != nil {
		return fmt.Errorf("mark paid: %w", err)
	}
	var status string
	if err := f.orders.QueryRow(ctx, "SELECT status FROM orders WHERE id = $1", id).Scan(&status); err != nil {
		return fmt.Errorf("read back: %w", err)
	}
	rows, err := f.orders.Query(ctx, "SELECT product_id, quantity, unit_price_cents FROM order_items WHERE order_id = $1 ORDER BY position", id)
	if err != nil {
		return fmt.Errorf("read items: %w", err)
	}
	rows.Close()
	return rows.Err()
}

// ledger counts the services' paid orders (the floor's rows are keyed floor-) and the orders charged
// more than once.
func ledger(ctx context.Context, pg *devserver.Postgres) (paid, duplicates int, err error) {
	oc, err := pg.Connect(ctx, "orders")
	if err != nil {
		return 0, 0, err
	}
	defer func() { _ = oc.Close(ctx) }()
	if err := oc.QueryRow(ctx, "SELECT count(*) FROM orders WHERE status = 'paid' AND idempotency_key LIKE 'bench-%'").Scan(&paid); err != nil {
		return 0, 0, err
	}
	pc, err := pg.Connect(ctx, "payments")
	if err != nil {
		return 0, 0, err
	}
	defer func() { _ = pc.Close(ctx) }()
	err = pc.QueryRow(ctx, "SELECT count(*) FROM (SELECT reference FROM charges GROUP BY reference HAVING count(*) > 1) AS twice").Scan(&duplicates)
	return paid, duplicates, err
}

func ratio(a, b time.Duration) float64 {
	if b == 0 {
		return 0
	}
	return float64(a) / float64(b)
}

func yesNo(ok bool) string {
	if ok {
		return "yes"
	}
	return "no"
}

func ms(d time.Duration) string { return fmt.Sprintf("%.2f ms", float64(d)/float64(time.Millisecond)) }

package consulsync

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/go-logr/logr"
	consulapi "github.com/hashicorp/consul/api"
	logf "sigs.k8s.io/controller-runtime/pkg/log"
)

// Catalog writes go to Consul in transactions (/v1/txn), many Services' at once: a full sync of 2,000
// Services made 4,000 catalog registrations one after the other before, each a Raft commit on the
// Consul servers (the CPU spikes consul-k8s users reported during large rollouts, hashicorp/consul-k8s#315).
//
// Each Service's reconcile hands its changes to one catalogWriter and waits for the outcome. The writer
// commits whatever is waiting as one transaction, and whatever arrives meanwhile goes into the next
// (group commit): an idle sync writes a single change at once, a busy one fills transactions, and no
// change waits longer than the transaction before it. A transaction is atomic, so the registrations and
// deregistrations of one Service that fit in one transaction take effect together; when they do not,
// registrations go in earlier transactions than deregistrations, so an endpoint that stays never
// disappears in between.

// maxTxnOps is Consul's limit of operations per transaction: maxTxnOps in agent/txn_endpoint.go (128 in
// Consul 1.22.5; not configurable). A larger transaction is refused whole (413).
const maxTxnOps = 128

// maxTxnBytes bounds a transaction's estimated size, half of Consul's default txn_max_req_len (512 KiB,
// Raft's suggested largest entry), so a server configured lower or an estimate that falls short still fits.
const maxTxnBytes = 256 << 10

// catalogChange is one Service's writes: instances to register or update, then instances to deregister.
// done receives the outcome once.
type catalogChange struct {
	register   []Instance
	deregister []Instance
	done       chan error

	// Owned by the writer's goroutine once submitted.
	unresolved     int
	errs           []error
	refused        []string // Consul's reasons for refused operations, for the Service's Warning event
	registerFailed bool
}

// refusedError is the outcome of a change some of whose operations Consul refused.
type refusedError struct {
	reasons []string
	err     error
}

func (e *refusedError) Error() string { return e.err.Error() }
func (e *refusedError) Unwrap() error { return e.err }

// opGroup is the operations of one instance: a registration (its service and its check) or a
// deregistration (deleting the service deletes its checks).
type opGroup struct {
	change *catalogChange
	// One of register and deregister is set.
	register, deregister *Instance
	size                 int
}

func (g opGroup) count() int {
	if g.register != nil {
		return 2
	}
	return 1
}

func (g opGroup) String() string {
	if g.register != nil {
		return "registration of instance " + g.register.ID
	}
	return "deregistration of instance " + g.deregister.ID
}

// estimatedSize over-estimates the JSON of an instance's operations: a fixed part for the field names and
// the check, and every string twice (the service and its check repeat the IDs and names).
func estimatedSize(in *Instance) int {
	n := 1024 + 2*(len(in.ID)+len(in.Service)+len(in.Address))
	for _, t := range in.Tags {
		n += len(t) + 4
	}
	for k, v := range in.Meta {
		n += len(k) + len(v) + 8
	}
	return n
}

// catalogWriter commits the changes of every Service's reconcile in transactions; see above.
type catalogWriter struct {
	consul   *consulapi.Client
	node     string
	nodeMeta map[string]string
	state    *nodeState
	metrics  *Metrics
	changes  chan *catalogChange
}

func newCatalogWriter(consul *consulapi.Client, node string, nodeMeta map[string]string, state *nodeState, metrics *Metrics) *catalogWriter {
	return &catalogWriter{consul: consul, node: node, nodeMeta: nodeMeta, state: state, metrics: metrics, changes: make(chan *catalogChange)}
}

// write submits a change and waits for its outcome: nil once every operation is committed, else an error
// naming what was not written (a *refusedError when Consul refused operations).
func (w *catalogWriter) write(ctx context.Context, c *catalogChange) error {
	c.done = make(chan error, 1)
	select {
	case w.changes <- c:
	case <-ctx.Done():
		return ctx.Err()
	}
	select {
	case err := <-c.done:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// NeedLeaderElection: only the leader writes.
func (w *catalogWriter) NeedLeaderElection() bool { return true }

// Start commits submitted changes until ctx ends.
func (w *catalogWriter) Start(ctx context.Context) error {
	log := logf.FromContext(ctx).WithValues("node", w.node)
	var queue []opGroup
	for {
		if len(queue) == 0 {
			select {
			case c := <-w.changes:
				queue = w.enqueue(queue, c)
			case <-ctx.Done():
				return nil
			}
		}
		// Group commit: what arrived while the last transaction was in flight goes into this one.
	gather:
		for {
			select {
			case c := <-w.changes:
				queue = w.enqueue(queue, c)
			default:
				break gather
			}
		}
		n := w.fit(queue)
		batch := slices.Clone(queue[:n])
		queue = slices.Delete(queue, 0, n)
		w.commit(ctx, log, batch)
		queue = w.dropBlocked(queue)
	}
}

// enqueue splits a change into its operation groups, registrations first. An instance too large for any
// transaction is refused here rather than sent.
func (w *catalogWriter) enqueue(queue []opGroup, c *catalogChange) []opGroup {
	c.unresolved = len(c.register) + len(c.deregister)
	if c.unresolved == 0 {
		c.done <- nil
		return queue
	}
	for i := range c.register {
		g := opGroup{change: c, register: &c.register[i], size: estimatedSize(&c.register[i])}
		if g.size > maxTxnBytes-4096 {
			c.registerFailed = true
			w.resolve(g, fmt.Errorf("%s: about %d bytes, more than one Consul transaction takes", g, g.size), "too large for a Consul transaction")
			continue
		}
		queue = append(queue, g)
	}
	for i := range c.deregister {
		in := &c.deregister[i]
		queue = append(queue, opGroup{change: c, deregister: in, size: 256 + 2*(len(in.ID)+len(in.Service))})
	}
	return w.dropBlocked(queue)
}

// fit returns how many groups from the front of queue go into one transaction (at least one).
func (w *catalogWriter) fit(queue []opGroup) int {
	ops, size := 1, 1024 // the node's operation
	for i, g := range queue {
		if ops+g.count() > maxTxnOps || size+g.size > maxTxnBytes {
			return max(i, 1)
		}
		ops, size = ops+g.count(), size+g.size
	}
	return len(queue)
}

// dropBlocked resolves and removes the deregistrations of changes whose registrations failed: they wait
// for the Service's next reconcile, so that an endpoint that stays never disappears.
func (w *catalogWriter) dropBlocked(groups []opGroup) []opGroup {
	return slices.DeleteFunc(groups, func(g opGroup) bool {
		if g.deregister == nil || !g.change.registerFailed {
			return false
		}
		w.resolve(g, fmt.Errorf("%s: held back until the Service's registrations succeed", g), "")
		return true
	})
}

// commit writes groups in one transaction. When Consul refuses operations it rolls the whole
// transaction back and says which: those are dropped (with the deregistrations of their Service) and the
// others committed again, so one bad operation never costs the others their write.
func (w *catalogWriter) commit(ctx context.Context, log logr.Logger, groups []opGroup) {
	for len(groups) > 0 {
		ops := consulapi.TxnOps{{Node: &consulapi.NodeTxnOp{Verb: consulapi.NodeSet,
			Node: consulapi.Node{Node: w.node, Address: "127.0.0.1", Meta: w.nodeMeta}}}}
		groupOf := []int{-1} // operation index → group index; -1 for the node
		for i, g := range groups {
			ops = append(ops, w.ops(g)...)
			for range g.count() {
				groupOf = append(groupOf, i)
			}
		}
		ok, resp, _, err := w.consul.Txn().Txn(ops, (&consulapi.QueryOptions{}).WithContext(ctx))
		switch {
		case err != nil && refusedWhole(err) && len(groups) > 1:
			// Refused as a whole (size or form): halves isolate the group that causes it.
			w.metrics.Transactions.WithLabelValues(TxnFailed).Inc()
			half := len(groups) / 2
			w.commit(ctx, log, groups[:half])
			w.commit(ctx, log, w.dropBlocked(groups[half:]))
			return
		case err != nil:
			w.metrics.Transactions.WithLabelValues(TxnFailed).Inc()
			reason := ""
			if refusedWhole(err) {
				reason = err.Error()
			}
			for _, g := range groups {
				if g.register != nil {
					g.change.registerFailed = true
				}
			}
			for _, g := range groups {
				w.resolve(g, fmt.Errorf("%s: consul transaction: %w", g, err), reason)
			}
			return
		case ok:
			w.metrics.Transactions.WithLabelValues(TxnCommitted).Inc()
			for _, g := range groups {
				if g.register != nil {
					w.state.put(*g.register)
					w.metrics.Writes.WithLabelValues(DirectionToConsul, "register").Inc()
				} else {
					w.state.remove(g.deregister.ID)
					w.metrics.Writes.WithLabelValues(DirectionToConsul, "deregister").Inc()
				}
				w.resolve(g, nil, "")
			}
			return
		}
		w.metrics.Transactions.WithLabelValues(TxnRolledBack).Inc()
		refused := map[int][]string{} // by group, Consul's reasons (a service refused also fails its check)
		for _, e := range resp.Errors {
			if e.OpIndex < 0 || e.OpIndex >= len(groupOf) || groupOf[e.OpIndex] < 0 {
				refused = nil // the node itself, or an answer that names no operation: nothing can be written
				break
			}
			refused[groupOf[e.OpIndex]] = append(refused[groupOf[e.OpIndex]], e.What)
		}
		if len(refused) == 0 {
			err := fmt.Errorf("consul rolled the transaction back: %s", txnErrors(resp.Errors))
			for _, g := range groups {
				w.resolve(g, fmt.Errorf("%s: %w", g, err), err.Error())
			}
			return
		}
		log.Info("Consul refused operations of a transaction; committing the others again", "refused", len(refused), "operations", len(ops))
		var rest []opGroup
		for i, g := range groups {
			reasons, bad := refused[i]
			if !bad {
				rest = append(rest, g)
				continue
			}
			if g.register != nil {
				g.change.registerFailed = true
			}
			what := strings.Join(reasons, "; ")
			w.resolve(g, fmt.Errorf("%s: consul refused it: %s", g, what), what)
		}
		groups = w.dropBlocked(rest)
	}
}

// ops are the transaction operations of a group.
func (w *catalogWriter) ops(g opGroup) consulapi.TxnOps {
	if g.register == nil {
		// Consul checks a deletion against the service's name (its ACL rule), so the name goes too.
		return consulapi.TxnOps{{Service: &consulapi.ServiceTxnOp{Verb: consulapi.ServiceDelete, Node: w.node,
			Service: consulapi.AgentService{ID: g.deregister.ID, Service: g.deregister.Service}}}}
	}
	in := g.register
	output := "Kubernetes endpoint is ready"
	if in.Status != consulapi.HealthPassing {
		output = "Kubernetes endpoint is not ready"
	}
	return consulapi.TxnOps{
		{Service: &consulapi.ServiceTxnOp{Verb: consulapi.ServiceSet, Node: w.node, Service: consulapi.AgentService{
			ID: in.ID, Service: in.Service, Address: in.Address, Port: in.Port, Tags: in.Tags, Meta: in.Meta,
			// The catalog register endpoint defaults weights to 1; a transaction stores what it is given.
			Weights: consulapi.AgentWeights{Passing: 1, Warning: 1},
		}}},
		{Check: &consulapi.CheckTxnOp{Verb: consulapi.CheckSet, Check: consulapi.HealthCheck{
			Node: w.node, CheckID: checkID(in.ID), Name: "Kubernetes readiness", Type: "kubernetes-readiness",
			ServiceID: in.ID, ServiceName: in.Service, Status: in.Status, Output: output,
		}}},
	}
}

// resolve records a group's outcome; the change's outcome goes out once all its groups have one. reason,
// when set, is what Consul refused, for the Service's Warning event.
func (w *catalogWriter) resolve(g opGroup, err error, reason string) {
	c := g.change
	if err != nil {
		c.errs = append(c.errs, err)
	}
	if reason != "" {
		c.refused = append(c.refused, fmt.Sprintf("%s: %s", g, reason))
	}
	if c.unresolved--; c.unresolved > 0 {
		return
	}
	err = errors.Join(c.errs...)
	if err != nil && len(c.refused) > 0 {
		err = &refusedError{reasons: c.refused, err: err}
	}
	c.done <- err
}

// refusedWhole reports whether Consul answered a transaction with an error for the request as a whole:
// too large or too many operations (413), or a body it could not parse (400). consul/api returns those as
// "Failed request: <Consul's message>", and transport errors otherwise.
func refusedWhole(err error) bool {
	msg := err.Error()
	return strings.HasPrefix(msg, "Failed request:") &&
		(strings.Contains(msg, "too large") || strings.Contains(msg, "too many operations") || strings.Contains(msg, "Failed to parse body"))
}

func txnErrors(errs consulapi.TxnErrors) string {
	parts := make([]string, len(errs))
	for i, e := range errs {
		parts[i] = fmt.Sprintf("operation %d: %s", e.OpIndex, e.What)
	}
	return strings.Join(parts, "; ")
}

package devserver_test

import (
	"context"
	"net/http"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"meshplane.dev/mesh/devkit/devservertest"
)

// A dev NATS server runs JetStream on file storage: a stream and a durable consumer, with the message
// stored in it, are still there after a stop and a start on the same port, and a client configured to
// reconnect finds the server again by itself.
func TestNATSKeepsStreamsAcrossRestart(t *testing.T) {
	began := time.Now()
	n := devservertest.NATS(t)
	t.Logf("start: %s", time.Since(began).Round(time.Millisecond))
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	resp, err := http.Get(n.MonitorURL() + "/jsz")
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /jsz: %v %v, want 200 (the monitoring port)", resp, err)
	}
	resp.Body.Close()

	nc, err := nats.Connect(n.ClientURL(), nats.MaxReconnects(-1), nats.ReconnectWait(100*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	stream, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "KEPT", Subjects: []string{"kept.>"}, Storage: jetstream.FileStorage})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := stream.CreateOrUpdateConsumer(ctx, jetstream.ConsumerConfig{Durable: "reader", AckPolicy: jetstream.AckExplicitPolicy}); err != nil {
		t.Fatal(err)
	}
	if _, err := js.Publish(ctx, "kept.one", []byte("before restart")); err != nil {
		t.Fatal(err)
	}

	began = time.Now()
	if err := n.StopWithin(10 * time.Second); err != nil {
		t.Errorf("stop: %v (want a clean shutdown)", err)
	}
	if err := n.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Logf("stop and start again: %s", time.Since(began).Round(time.Millisecond))

	cons, err := js.Consumer(ctx, "KEPT", "reader")
	if err != nil {
		t.Fatalf("durable consumer after restart: %v", err)
	}
	batch, err := cons.Fetch(1, jetstream.FetchMaxWait(10*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for m := range batch.Messages() {
		got = append(got, string(m.Data()))
		_ = m.Ack()
	}
	if len(got) != 1 || got[0] != "before restart" {
		t.Errorf("after restart the consumer read %q, want the one message published before", got)
	}
}

package main

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"meshplane.dev/mesh/devkit/devservertest"
	"meshplane.dev/mesh/devkit/runtest"
	"meshplane.dev/mesh/devkit/wait"
	eventsv1 "meshplane.dev/services/proto/events/v1"
	fulfillmentv1 "meshplane.dev/services/proto/fulfillment/v1"
)

// run with a fake environment migrates its database, consumes OrderPlaced from the ORDERS stream, answers
// GetShipment for the order on GRPC_ADDR (NOT_FOUND for an order it has not seen), and returns nil when
// its context ends.
func TestRunServesAndDrains(t *testing.T) {
	pg := devservertest.Postgres(t, "fulfillment")
	n := devservertest.NATS(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	nc, err := nats.Connect(n.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	// orders' relay creates the stream; here the test does.
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: eventsv1.OrdersStream, Subjects: []string{eventsv1.OrdersSubjects}}); err != nil {
		t.Fatal(err)
	}
	addrs := runtest.Addrs(t, 2)
	p := runtest.Start(t, run, runtest.Env{"GRPC_ADDR": addrs[0], "ADMIN_ADDR": addrs[1], "LOG_LEVEL": "warn",
		"DATABASE_URL": pg.URL("fulfillment"), "DATABASE_PASSWORD": pg.Password, "NATS_URL": n.ClientURL()})

	payload, err := proto.Marshal(&eventsv1.OrderPlaced{EventId: "evt_1", OrderId: "ord_1", TotalCents: 1200, Currency: "EUR",
		PlacedUnixMs: time.Now().UnixMilli(), Items: []*eventsv1.LineItem{{ProductId: "cup", Quantity: 1, UnitPriceCents: 1200}}})
	if err != nil {
		t.Fatal(err)
	}
	msg := nats.NewMsg(eventsv1.OrderPlacedSubject)
	msg.Data = payload
	msg.Header.Set(eventsv1.HeaderMsgID, "evt_1")
	msg.Header.Set(eventsv1.HeaderEventType, eventsv1.OrderPlacedType)
	if _, err := js.PublishMsg(ctx, msg); err != nil {
		t.Fatal(err)
	}

	conn, err := grpc.NewClient(addrs[0], grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = conn.Close() }()
	client := fulfillmentv1.NewFulfillmentServiceClient(conn)
	wait.For(t, 20*time.Second, func() error {
		sh, err := client.GetShipment(ctx, &fulfillmentv1.GetShipmentRequest{OrderId: "ord_1"})
		if err != nil {
			return err
		}
		if sh.GetStatus() != "preparing" || sh.GetEventId() != "evt_1" || sh.GetDeliveries() != 1 {
			return fmt.Errorf("shipment %v: want preparing, from evt_1, delivered once", sh)
		}
		return nil
	})
	if _, err := client.GetShipment(ctx, &fulfillmentv1.GetShipmentRequest{OrderId: "ord_unknown"}); status.Code(err) != codes.NotFound {
		t.Errorf("GetShipment(unknown order) = %v, want NotFound", err)
	}
	if err := p.Stop(); err != nil {
		t.Errorf("run returned %v after its context ended, want nil\noutput:\n%s", err, p.Output())
	}
}

func TestRunRejectsBadSettingsNamingThem(t *testing.T) {
	for env, value := range map[string]string{"GRPC_ADDR": "no-port", "NATS_URL": "http://nats", "CONSUMER_MAX_IN_FLIGHT": "0",
		"CONSUMER_MAX_ACK_PENDING": "1", "CONSUMER_ACK_WAIT": "10ms", "DATABASE_URL": "postgres://f:pw@db/f"} {
		err := run(context.Background(), nil, runtest.Env{env: value}.Getenv, &strings.Builder{}, &strings.Builder{})
		if err == nil || !strings.Contains(err.Error(), env) {
			t.Errorf("%s=%q: run returned %v, want an error naming %s", env, value, err, env)
		}
	}
}

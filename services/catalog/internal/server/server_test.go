package server_test

import (
	"context"
	"log/slog"
	"net"
	"testing"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/testing/protocmp"

	catalogv1 "meshplane.dev/services/proto/catalog/v1"

	"meshplane.dev/services/catalog/internal/products"
	"meshplane.dev/services/catalog/internal/server"
)

// client serves the catalog on a real loopback gRPC connection.
func client(t *testing.T) catalogv1.CatalogServiceClient {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer()
	catalogv1.RegisterCatalogServiceServer(srv, server.New(slog.New(slog.DiscardHandler), products.NewMemory([]products.Product{
		{ID: "b", Name: "B", PriceCents: 200, Currency: "EUR"},
		{ID: "a", Name: "A", PriceCents: 100, Currency: "EUR"},
	})))
	go func() { _ = srv.Serve(lis) }()
	t.Cleanup(srv.Stop)
	conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	return catalogv1.NewCatalogServiceClient(conn)
}

func TestListAndGet(t *testing.T) {
	c := client(t)
	ctx := context.Background()
	list, err := c.ListProducts(ctx, &catalogv1.ListProductsRequest{})
	if err != nil {
		t.Fatal(err)
	}
	want := []*catalogv1.Product{
		{Id: "a", Name: "A", PriceCents: 100, Currency: "EUR"},
		{Id: "b", Name: "B", PriceCents: 200, Currency: "EUR"},
	}
	if diff := cmp.Diff(want, list.GetProducts(), protocmp.Transform()); diff != "" {
		t.Errorf("ListProducts (-want +got):\n%s", diff)
	}
	p, err := c.GetProduct(ctx, &catalogv1.GetProductRequest{Id: "b"})
	if err != nil || p.GetPriceCents() != 200 {
		t.Errorf("GetProduct(b): got %v %v", p, err)
	}
	if _, err := c.GetProduct(ctx, &catalogv1.GetProductRequest{Id: "zz"}); status.Code(err) != codes.NotFound {
		t.Errorf("GetProduct(zz): got %v want NotFound", err)
	}
	if _, err := c.GetProduct(ctx, &catalogv1.GetProductRequest{}); status.Code(err) != codes.InvalidArgument {
		t.Errorf("GetProduct(): got %v want InvalidArgument", err)
	}
}

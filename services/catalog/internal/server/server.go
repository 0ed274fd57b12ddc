// Package server implements meshplane.catalog.v1.CatalogService over a products.Repository.
package server

import (
	"context"
	"errors"
	"log/slog"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"meshplane.dev/mesh/rpc"
	catalogv1 "meshplane.dev/services/proto/catalog/v1"

	"meshplane.dev/services/catalog/internal/products"
)

// Server is the CatalogService.
type Server struct {
	catalogv1.UnimplementedCatalogServiceServer
	logger *slog.Logger
	repo   products.Repository
}

// New returns the service reading from repo.
func New(logger *slog.Logger, repo products.Repository) *Server {
	return &Server{logger: logger, repo: repo}
}

// ListProducts implements CatalogService.ListProducts.
func (s *Server) ListProducts(ctx context.Context, _ *catalogv1.ListProductsRequest) (*catalogv1.ListProductsResponse, error) {
	ps, err := s.repo.List(ctx)
	if err != nil {
		s.logger.ErrorContext(ctx, "list products", slog.String("error", err.Error()))
		return nil, status.Error(codes.Internal, "list products failed")
	}
	out := &catalogv1.ListProductsResponse{Products: make([]*catalogv1.Product, 0, len(ps))}
	for _, p := range ps {
		out.Products = append(out.Products, toProto(p))
	}
	return out, nil
}

// GetProduct implements CatalogService.GetProduct.
func (s *Server) GetProduct(ctx context.Context, req *catalogv1.GetProductRequest) (*catalogv1.Product, error) {
	if req.GetId() == "" {
		return nil, rpc.InvalidField("id", "required")
	}
	p, err := s.repo.Get(ctx, req.GetId())
	if errors.Is(err, products.ErrNotFound) {
		return nil, status.Errorf(codes.NotFound, "product %q not found", req.GetId())
	}
	if err != nil {
		s.logger.ErrorContext(ctx, "get product", slog.String("id", req.GetId()), slog.String("error", err.Error()))
		return nil, status.Error(codes.Internal, "get product failed")
	}
	return toProto(p), nil
}

func toProto(p products.Product) *catalogv1.Product {
	return &catalogv1.Product{Id: p.ID, Name: p.Name, Description: p.Description, PriceCents: p.PriceCents, Currency: p.Currency}
}

// Package proto holds the protobuf contracts between Meshplane's shop services and the Go code
// generated from them (scripts/generate.sh, "Shop services: protobuf" section). Edit the .proto files;
// never the generated *.pb.go.
package proto

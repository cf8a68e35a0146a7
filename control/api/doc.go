// Package api is the gRPC control API of a running cluster (service
// qcluster.control.v1.Control): status, teardown, node lifecycle, faults,
// consoles, connections to node ports and logs. The launching process serves
// it (package control); the cluster command's subcommands call it. The Go
// code is generated from control.proto by scripts/genproto.sh (protoc from
// Debian plus pinned plugins); internal/protogen's TestGenerated checks that
// regenerating gives the committed bytes.
package api

//go:generate ../../scripts/genproto.sh control.proto

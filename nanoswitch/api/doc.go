// Package api is the gRPC control API of nanoswitch (service
// qcluster.nanoswitch.v1.Switch): ports, leases, faults and counters. The
// nanoswitch command serves it on a UNIX socket; nanoswitch/client.Client
// calls it. The Go code is generated from nanoswitch.proto by
// scripts/genproto.sh (protoc from Debian plus pinned plugins);
// internal/protogen's TestGenerated checks that regenerating gives the
// committed bytes.
package api

//go:generate ../../scripts/genproto.sh nanoswitch.proto

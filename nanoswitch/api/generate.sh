#!/bin/sh
# Regenerates the Go code for nanoswitch.proto into DIR (default: this folder).
# protoc comes from Debian (protobuf-compiler, installed by make deps); the two
# plugins are built at the versions pinned below, which the regeneration test
# keeps equal to go.mod's. Same protoc + same plugins = the same bytes.
set -eu
PROTOC_GEN_GO=google.golang.org/protobuf/cmd/protoc-gen-go@v1.36.12
PROTOC_GEN_GO_GRPC=google.golang.org/grpc/cmd/protoc-gen-go-grpc@v1.5.1

here=$(cd "$(dirname "$0")" && pwd)
out=${1:-$here}
bin=$(mktemp -d)
trap 'rm -rf "$bin"' EXIT
for p in "$PROTOC_GEN_GO" "$PROTOC_GEN_GO_GRPC"; do
  GOBIN=$bin GOFLAGS=-buildvcs=false go install "$p"
done
cd "$here"
protoc -I . \
  --plugin=protoc-gen-go="$bin/protoc-gen-go" \
  --plugin=protoc-gen-go-grpc="$bin/protoc-gen-go-grpc" \
  --go_out="$out" --go_opt=paths=source_relative \
  --go-grpc_out="$out" --go-grpc_opt=paths=source_relative \
  nanoswitch.proto

#!/bin/sh
# Regenerates the Go code of one .proto file: genproto.sh PROTO [OUTDIR], run
# in the proto's folder (go generate does that); OUTDIR defaults to it.
# protoc comes from Debian (protobuf-compiler, installed by make deps); the two
# plugins are built at the versions pinned below, which internal/protogen's
# test keeps equal to go.mod's. Same protoc + same plugins = the same bytes.
set -eu
PROTOC_GEN_GO=google.golang.org/protobuf/cmd/protoc-gen-go@v1.36.12
PROTOC_GEN_GO_GRPC=google.golang.org/grpc/cmd/protoc-gen-go-grpc@v1.5.1

proto=${1:?usage: genproto.sh PROTO [OUTDIR]}
out=${2:-.}
bin=$(mktemp -d)
trap 'rm -rf "$bin"' EXIT
for p in "$PROTOC_GEN_GO" "$PROTOC_GEN_GO_GRPC"; do
  GOBIN=$bin GOFLAGS=-buildvcs=false go install "$p"
done
protoc -I . \
  --plugin=protoc-gen-go="$bin/protoc-gen-go" \
  --plugin=protoc-gen-go-grpc="$bin/protoc-gen-go-grpc" \
  --go_out="$out" --go_opt=paths=source_relative \
  --go-grpc_out="$out" --go-grpc_opt=paths=source_relative \
  "$proto"

#!/usr/bin/env bash
# Runs every Go fuzz target in the module for a short while ($1, default 10s).
# Each target needs its own `go test -fuzz` run: go test takes one at a time.
set -euo pipefail
cd "$(dirname "$0")/.."
fuzztime=${1:-10s}
n=0
while read -r pkg; do
  dir=${pkg#github.com/qcluster/qcluster}
  for f in $(grep -ho '^func Fuzz[A-Za-z0-9_]*' ".$dir"/*_test.go 2>/dev/null | sed 's/^func //' | sort -u); do
    echo "fuzz: $pkg $f ($fuzztime)"
    go test -run '^$' -fuzz "^$f\$" -fuzztime "$fuzztime" "$pkg" >/dev/null
    n=$((n + 1))
  done
done < <(go list ./...)
echo "fuzz: $n targets ran, none failed"

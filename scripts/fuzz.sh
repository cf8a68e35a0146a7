#!/usr/bin/env bash
# Runs every Go fuzz target in the module for a short while ($1, default 10s).
# Each target needs its own `go test -fuzz` run: go test takes one at a time.
set -euo pipefail
cd "$(dirname "$0")/.."
fuzztime=${1:-10s}
n=0
log=$(mktemp)
trap 'rm -f "$log"' EXIT
while read -r pkg; do
  dir=${pkg#github.com/qcluster/qcluster}
  for f in $(grep -ho '^func Fuzz[A-Za-z0-9_]*' ".$dir"/*_test.go 2>/dev/null | sed 's/^func //' | sort -u); do
    echo "fuzz: $pkg $f ($fuzztime)"
    # go test -fuzz can end with a bare "context deadline exceeded" when the
    # fuzz time runs out under load, with no failing input: run that once more.
    if ! go test -run '^$' -fuzz "^$f\$" -fuzztime "$fuzztime" "$pkg" >"$log" 2>&1 &&
      { grep -q 'Failing input written' "$log" ||
        ! go test -run '^$' -fuzz "^$f\$" -fuzztime "$fuzztime" "$pkg" >"$log" 2>&1; }; then
      cat "$log" >&2
      echo "fuzz: $f failed; the input is in .$dir/testdata/fuzz/$f/ (keep it as a seed once fixed)" >&2
      exit 1
    fi
    n=$((n + 1))
  done
done < <(go list ./...)
echo "fuzz: $n targets ran, none failed"

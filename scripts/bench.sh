#!/usr/bin/env bash
# Every benchmark of the project in one report (make bench). Each part
# measures its own baseline in the same run and prints ratios:
#   1. Go benchmarks (go test -bench): formats, verified reads, disk writes, swtpm;
#   2. disk synthesis against cp and a qcow2 overlay (scripts/bench-disk.sh);
#   3. cluster launch against bare QEMU, teardown, launcher CPU (scripts/bench-launch.sh);
#   4. the launcher's scaling for N = 1, 2, 4, 8 nodes (scripts/bench-launch.sh --scaling);
#   5. warm clusters: restore against a cold launch, snapshots, memory (scripts/bench-warm.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p out
report=out/bench-report.txt
{
  echo "qcluster benchmarks, $(date -u +%FT%TZ), $(nproc) cores, $(uname -r)"
  echo
  echo "== 1. Go benchmarks"
  go test -run '^$' -bench . -benchtime 3x \
    ./imagebuild/... ./swtpm/... 2>&1 | grep -E '^(Benchmark|ok|FAIL|---)' || true
  echo
  echo "== 2. Disk synthesis"
  ./scripts/bench-disk.sh
  echo
  echo "== 3. Launch against bare QEMU"
  ./scripts/bench-launch.sh
  echo
  echo "== 4. Launcher scaling"
  ./scripts/bench-launch.sh --scaling
  echo
  echo "== 5. Warm clusters"
  ./scripts/bench-warm.sh
} 2>&1 | tee "$report"
echo "report written to $report"

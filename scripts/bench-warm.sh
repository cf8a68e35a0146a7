#!/usr/bin/env bash
# Warm clusters against cold ones, measured in the same run (issue 10):
#   1. for N = 1 and 3 nodes (with TPMs): a cold launch (`cluster --cold
#      --exit-when-ready`, start to all ready) against a restore of a
#      snapshot of the same cluster (`cluster --restore DIR
#      --exit-when-ready`, start to all ready): medians over RUNS runs
#      (default 3 cold, 5 restores), alternating, and the ratio;
#   2. snapshot time (the Snapshot call, and how long the nodes were
#      paused) and size (on disk, and the device-state streams);
#   3. memory: K (default 3) one-node clusters restored from one snapshot
#      against K cold ones, all running at once: the QEMUs' proportional
#      set size (PSS, shared pages split between sharers) and RSS, summed.
# Timings come from the command's own --json summary (launch_seconds).
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${RUNS:-3}
restores=${RESTORES:-5}
k=${CLUSTERS:-3}
bin=out/bin/cluster
[ -x "$bin" ] || { echo "bench-warm: $bin missing (make tools)" >&2; exit 1; }
mkdir -p out
work=$(mktemp -d "$PWD/out/bench-warm.XXXXXX")
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill -INT "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

json() { python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); print(eval(sys.argv[2]))' "$1" "$2"; }
median() { sort -n | awk '{a[NR]=$1} END {print (NR%2) ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2}'; }

for n in 1 3; do
  snap=$work/snap$n
  "$bin" --cold --nodes "$n" --snapshot "$snap" --exit-when-ready --json "$work/snap$n.json" </dev/null >/dev/null 2>"$work/snap$n.err" ||
    { cat "$work/snap$n.err" >&2; exit 1; }
  : >"$work/cold$n"; : >"$work/warm$n"
  for r in $(seq 1 "$restores"); do
    if [ "$r" -le "$runs" ]; then
      "$bin" --cold --nodes "$n" --exit-when-ready --json "$work/c.json" </dev/null >/dev/null 2>"$work/c.err" ||
        { cat "$work/c.err" >&2; exit 1; }
      json "$work/c.json" 'd["launch_seconds"]' >>"$work/cold$n"
    fi
    "$bin" --restore "$snap" --exit-when-ready --json "$work/w.json" </dev/null >/dev/null 2>"$work/w.err" ||
      { cat "$work/w.err" >&2; exit 1; }
    json "$work/w.json" 'd["launch_seconds"]' >>"$work/warm$n"
  done
  cold=$(median <"$work/cold$n"); warm=$(median <"$work/warm$n")
  echo "N=$n nodes with TPMs:"
  printf '  %-52s %8.3f s  (runs: %s)\n' "cold launch, start to all ready (median)" "$cold" "$(tr '\n' ' ' <"$work/cold$n")"
  printf '  %-52s %8.3f s  (runs: %s)\n' "restore, start to all ready (median)" "$warm" "$(tr '\n' ' ' <"$work/warm$n")"
  printf '  %-52s %8.1fx\n' "cold / restore" "$(awk -v a="$cold" -v b="$warm" "BEGIN {print a / b}")"
  printf '  %-52s %8.3f s  (nodes paused %.3f s)\n' "snapshot" "$(json "$work/snap$n.json" 'd["snapshot"]["seconds"]')" "$(json "$work/snap$n.json" 'd["snapshot"]["paused_seconds"]')"
  printf '  %-52s %8.1f MiB on disk, %.1f MiB device state\n' "snapshot size" \
    "$(json "$work/snap$n.json" 'd["snapshot"]["bytes"]/2**20')" "$(json "$work/snap$n.json" 'd["snapshot"]["state_bytes"]/2**20')"
  printf '  %-52s %s\n' "per-node restore (loaded / resumed / ready after QEMU start, s)" \
    "$(json "$work/w.json" '" ".join("%s %.3f/%.3f/%.3f" % (x["name"], x["state_loaded_seconds"], x["resumed_seconds"], x["ready_seconds"]) for x in d["nodes"])')"
done

# memory sums the PSS and RSS (KiB) of the QEMUs under the given launchers.
memory() {
  local pss=0 rss=0 p q v
  for p in "$@"; do
    for q in $(pgrep -P "$p" -f qemu-system || true); do
      v=$(awk '/^Pss:/ {print $2}' "/proc/$q/smaps_rollup"); pss=$((pss + v))
      v=$(awk '/^Rss:/ {print $2}' "/proc/$q/smaps_rollup"); rss=$((rss + v))
    done
  done
  echo "$pss $rss"
}
# start_k starts K one-node clusters with the given flags and waits until
# every one has written its summary (all nodes ready); prints their PIDs.
start_k() {
  local tag=$1; shift
  local i launched=()
  for i in $(seq 1 "$k"); do
    "$bin" "$@" --json "$work/$tag$i.json" </dev/null >/dev/null 2>"$work/$tag$i.err" &
    launched+=($!)
  done
  for i in $(seq 1 "$k"); do
    until [ -s "$work/$tag$i.json" ]; do
      kill -0 "${launched[$((i - 1))]}" 2>/dev/null || { cat "$work/$tag$i.err" >&2; exit 1; }
      sleep 0.2
    done
  done
  echo "${launched[@]}"
}
stop_all() { kill -INT "$@" 2>/dev/null || true; for p in "$@"; do wait "$p" 2>/dev/null || true; done; }

warm_pids=$(start_k w --restore "$work/snap1")
pids+=($warm_pids)
read -r wpss wrss <<<"$(memory $warm_pids)"
stop_all $warm_pids
cold_pids=$(start_k c --cold --nodes 1)
pids+=($cold_pids)
sleep 2 # let the cold guests settle as the restored ones had
read -r cpss crss <<<"$(memory $cold_pids)"
stop_all $cold_pids
echo "Memory, $k one-node clusters at once (QEMU processes, summed):"
printf '  %-52s %8d MiB PSS, %6d MiB RSS\n' "restored from one snapshot" $((wpss / 1024)) $((wrss / 1024))
printf '  %-52s %8d MiB PSS, %6d MiB RSS\n' "cold" $((cpss / 1024)) $((crss / 1024))
printf '  %-52s %8.2fx\n' "restored PSS / cold PSS" "$(awk -v a="$wpss" -v b="$cpss" "BEGIN {print a / b}")"

#!/usr/bin/env bash
# Cluster launch against bare QEMU, measured in the same run (issue 5):
#   (a) baseline: a shell script starts QEMU for three freshly synthesized
#       disks in parallel, with a swtpm each and the cluster's switch already
#       running, using the very command lines the launcher wrote (qemu.sh),
#       and waits for every agent's ready line on the serial consoles;
#   (b) the built launcher, `cluster --nodes 3 --exit-when-ready`, from exec
#       to every node ready (its whole run minus teardown): disks, TPM
#       manufacture, switch, QEMU, and the readiness probes over gRPC.
# Prints the medians, the ratio b/a, teardown time and the launcher's own CPU
# time per node (the launcher process alone, not QEMU's), over RUNS runs
# (default 3), alternating (a) and (b) so that load affects both alike.
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${RUNS:-3}
nodes=${NODES:-3}
bin=out/bin
for b in cluster nanoswitch; do
  [ -x "$bin/$b" ] || { echo "bench-launch: $bin/$b missing (make tools)" >&2; exit 1; }
done
mkdir -p out
work=$(mktemp -d "$PWD/out/bench-launch.XXXXXX")
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
go build -o "$work/mkdisk" ./imagebuild/cmd/mkdisk

ms() { date +%s%3N; }


baseline() {
  local run=$1 sockdir qsh i t0 t1 ready
  local -a qpids=()
  sockdir=$(grep -o 'addr.path=[^ ]*' "$work/ref/logs/node0/qemu.sh" | sed 's/addr.path=//; s#/net/node0.sock##')
  mkdir -p "$sockdir"
  local nodeargs=()
  for i in $(seq 0 $((nodes - 1))); do
    qsh=$work/ref/logs/node$i/qemu.sh
    nodeargs+=(--node "node$i=$(grep -o 'mac=[0-9a-f:]*' "$qsh" | sed 's/mac=//')")
    "$work/mkdisk" --image out/testos --loader out/loader.efi --unverified --seed "$name/node$i" \
      --out "$work/ref/node$i/disk.raw" >/dev/null
    cp /usr/share/OVMF/OVMF_VARS_4M.fd "$work/ref/node$i/vars.fd"
  done
  "$bin/nanoswitch" --dir "$sockdir/net" --cluster "$name" "${nodeargs[@]}" </dev/null >/dev/null 2>&1 &
  pids+=($!)
  local nspid=$!
  while [ ! -e "$sockdir/net/ready.json" ]; do sleep 0.02; done
  for i in $(seq 0 $((nodes - 1))); do
    swtpm socket --tpm2 --tpmstate "dir=$work/ref/node$i/tpm" --ctrl "type=unixio,path=$sockdir/node$i.tpm" --terminate </dev/null >/dev/null 2>&1 &
    pids+=($!)
  done
  for i in $(seq 0 $((nodes - 1))); do
    while [ ! -S "$sockdir/node$i.tpm" ]; do sleep 0.01; done
  done
  t0=$(ms)
  for i in $(seq 0 $((nodes - 1))); do
    : >"$work/a$run.node$i.log"
    # The launcher's command line, with the console to a file instead of the terminal.
    argv=$(tail -n1 "$work/ref/logs/node$i/qemu.sh" |
      sed "s#-chardev stdio,id=chr1,mux=on,signal=off -serial chardev:chr1 -mon chardev=chr1,mode=readline#-serial file:$work/a$run.node$i.log#")
    # exec: the background job's PID is QEMU's own, so that kill reaches it.
    eval "exec $argv" </dev/null >/dev/null 2>&1 &
    qpids+=($!)
    pids+=($!)
  done
  local deadline=$(( $(ms) + 600000 ))
  while :; do
    [ "$(ms)" -lt "$deadline" ] || { echo "bench-launch: bare QEMU run $run not ready in 10 minutes (logs: $work/a$run.node*.log)" >&2; return 1; }
    ready=0
    for i in $(seq 0 $((nodes - 1))); do
      grep -q 'qcluster-agent: ready' "$work/a$run.node$i.log" && ready=$((ready + 1))
    done
    [ "$ready" -eq "$nodes" ] && break
    sleep 0.05
  done
  t1=$(ms)
  kill "${qpids[@]}" "$nspid" 2>/dev/null || true
  wait "${qpids[@]}" "$nspid" 2>/dev/null || true
  # swtpm --terminate ends with QEMU's connection; make sure before the next run.
  pkill -f "ctrl type=unixio,path=$sockdir/" 2>/dev/null || true
  rm -rf "$sockdir"
  echo $((t1 - t0))
}

launcher() {
  local run=$1 t0 t1 td
  t0=$(ms)
  # The launcher's own CPU (utime+stime from /proc, sampled until it exits;
  # QEMU, swtpm and nanoswitch are not counted).
  "$bin/cluster" --cold --nodes "$nodes" --exit-when-ready --json "$work/b$run.json" </dev/null >/dev/null 2>"$work/b$run.err" &
  local pid=$!
  local cpu=0 stat
  while kill -0 "$pid" 2>/dev/null; do
    stat=$(cat /proc/$pid/stat 2>/dev/null) && cpu=$(echo "$stat" | awk '{print $14 + $15}')
    sleep 0.05
  done
  wait "$pid" || { cat "$work/b$run.err" >&2; exit 1; }
  t1=$(ms)
  td=$(sed -n 's/.*Tearing down (\([0-9.]*\)\(m\?s\)).*/\1 \2/p' "$work/b$run.err" | awk '{ if ($2=="ms") print $1; else print $1*1000 }')
  echo "$((t1 - t0)) ${td:-0} $cpu"
}

median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
hz=$(getconf CLK_TCK)

if [ "${1:-}" = "--scaling" ]; then
  # Wall time to all ready and the launcher's CPU per node for growing N.
  printf '  %5s %16s %22s\n' nodes "to all ready" "launcher CPU per node"
  for n in 1 2 4 8; do
    nodes=$n
    read -r total td cpu < <(launcher "s$n")
    printf '  %5d %13d ms %19.0f ms\n' "$n" "$((total - ${td%.*}))" "$(awk -v c="$cpu" -v hz="$hz" -v n="$n" 'BEGIN {print c*1000/hz/n}')"
  done
  exit 0
fi

# A kept cluster gives the command lines, parameters, TPM states and names.
"$bin/cluster" --cold --nodes "$nodes" --exit-when-ready --keep --state-dir "$work/ref" --json "$work/ref.json" >/dev/null 2>"$work/ref.err" ||
  { cat "$work/ref.err" >&2; exit 1; }
name=$(sed -n 's/^  "name": "\(.*\)",$/\1/p' "$work/ref.json" | head -n1)

: >"$work/a.txt"; : >"$work/b.txt"; : >"$work/td.txt"; : >"$work/cpu.txt"
for r in $(seq "$runs"); do
  a=$(baseline "$r") || exit 1
  echo "$a" >>"$work/a.txt"
  read -r total td cpu < <(launcher "$r")
  echo "$(awk -v t="$total" -v d="$td" 'BEGIN {print int(t - d)}')" >>"$work/b.txt"
  echo "$td" >>"$work/td.txt"
  echo "$cpu" >>"$work/cpu.txt"
  echo "run $r: bare QEMU ${a} ms, launcher ${total} ms (teardown ${td} ms)" >&2
done
a=$(median <"$work/a.txt"); b=$(median <"$work/b.txt"); td=$(median <"$work/td.txt"); cpu=$(median <"$work/cpu.txt")
printf '\nLaunch of %d nodes under %s, median of %d runs\n' "$nodes" "$(grep -o 'accel=[a-z]*' "$work/ref/logs/node0/qemu.sh" | head -n1 | cut -d= -f2)" "$runs"
printf '  %-58s %8s\n' "(a) bare QEMU, same disks and command lines, to ready lines" "$a ms"
printf '  %-58s %8s\n' "(b) cluster --exit-when-ready, start to all ready" "$b ms"
printf '  %-58s %8s\n' "ratio b/a (target <= 1.15)" "$(awk -v a="$a" -v b="$b" 'BEGIN {printf "%.2f", b/a}')"
printf '  %-58s %8s\n' "teardown of $nodes nodes (target <= 1000 ms)" "$td ms"
printf '  %-58s %8s\n' "launcher CPU time per node (user+sys of the launcher alone)" "$(awk -v c="$cpu" -v hz="$hz" -v n="$nodes" 'BEGIN {printf "%.0f ms", c*1000/hz/n}')"

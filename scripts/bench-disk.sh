#!/usr/bin/env bash
# Times node-disk synthesis (imagebuild/cmd/mkdisk, built once) for a 1 GiB
# system payload of random bytes plus a 16 MiB kernel.efi, against the two
# baselines it replaces, all in the same run:
#   - on ext4 (the repository's file system): mkdisk vs. cp --reflink=auto of
#     the system payload alone (a plain copy: ext4 has no reflinks);
#   - on XFS with reflink=1 (a loop-mounted file in the work dir): mkdisk vs.
#     qemu-img create -f qcow2 -b prebuilt.raw -F raw (the overlay it replaces).
# Each figure is the median wall time of RUNS runs (default 5), page cache
# warm, `sync` before each run. Needs root for the loop mount; without it
# only the ext4 rows are measured. Loop device and mount are removed on exit.
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${RUNS:-5}
mkdir -p out
work=$(mktemp -d "$PWD/out/bench-disk.XXXXXX")
mnt=$work/xfs
loopdev=""
cleanup() {
  mountpoint -q "$mnt" 2>/dev/null && umount "$mnt"
  [ -n "$loopdev" ] && losetup -d "$loopdev"
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

loader=third_party/cache/root/usr/lib/systemd/boot/efi/systemd-bootx64.efi
[ -f "$loader" ] || { echo "bench-disk: $loader missing (make fetch)" >&2; exit 1; }
for t in qemu-img mkfs.xfs losetup; do
  command -v "$t" >/dev/null || { echo "bench-disk: $t missing (make deps)" >&2; exit 1; }
done

go build -o "$work/mkdisk" ./imagebuild/cmd/mkdisk
go build -o "$work/mkoci" ./imagebuild/cmd/mkoci
head -c 1G /dev/urandom >"$work/system"
head -c 16M /dev/urandom >"$work/kernel.efi"

now() { date +%s%N; }

# median CMD...: runs CMD $runs times (after `sync`, output removed) and
# prints the median wall time in ms. CMD's stdout of the last run is kept in
# $work/last.out.
median() {
  local times=() t0 t1
  for _ in $(seq "$runs"); do
    rm -f "$target"
    sync
    t0=$(now); "$@" >"$work/last.out"; t1=$(now)
    times+=("$(( (t1 - t0) / 1000 ))")
  done
  printf '%s\n' "${times[@]}" | sort -n | awk -v n="$runs" '{a[NR]=$1} END {printf "%.1f", a[int((n+1)/2)]/1000}'
}

# image DIR: an uncompressed OS image of the payloads in DIR.
image() {
  cp --reflink=auto "$work/system" "$work/kernel.efi" "$1/"
  "$work/mkoci" --payload "kernel.efi=$1/kernel.efi" --payload "system=$1/system" \
    --product-id bench --product-version 1 --arch x86_64 --out "$1/image" >/dev/null 2>&1
}

# disk DIR: sets $took to the median mkdisk time for the image in DIR and
# $methods to the copy methods of its payloads.
disk() {
  target=$1/node.raw
  took=$(median "$work/mkdisk" --image "$1/image" --loader "$loader" --seed node0 --unverified --out "$target")
  methods=$(awk -F'\t' '$1=="SYSTEM-A" || $2=="EFI/Linux/qcluster-a.efi" {printf "%s%s: %s", sep, ($2==""?$1:"kernel.efi"), $4; sep=", "}' "$work/last.out")
}

mkdir -p "$work/ext4"
image "$work/ext4"
disk "$work/ext4"; ext4_disk=$took; ext4_methods=$methods
target=$work/ext4/copy
ext4_cp=$(median cp --reflink=auto "$work/ext4/system" "$target")
cp "$work/ext4/node.raw" "$work/ext4/prebuilt.raw"
target=$work/ext4/overlay.qcow2
ext4_qcow=$(median qemu-img create -q -f qcow2 -b "$work/ext4/prebuilt.raw" -F raw "$target")

xfs=""
if [ "$(id -u)" -eq 0 ] && [ -e /dev/loop-control ]; then
  truncate -s 4G "$work/xfs.img"
  mkfs.xfs -q -m reflink=1 "$work/xfs.img"
  loopdev=$(losetup --find --show "$work/xfs.img")
  mkdir -p "$mnt"
  mount -t xfs "$loopdev" "$mnt"
  image "$mnt"
  disk "$mnt"; xfs_disk=$took; xfs_methods=$methods
  target=$mnt/copy
  xfs_cp=$(median cp --reflink=auto "$mnt/system" "$target")
  cp --reflink=always "$mnt/node.raw" "$mnt/prebuilt.raw"
  target=$mnt/overlay.qcow2
  xfs_qcow=$(median qemu-img create -q -f qcow2 -b "$mnt/prebuilt.raw" -F raw "$target")
  xfs=1
else
  echo "bench-disk: not root or no loop devices: XFS rows skipped" >&2
fi

ratio() { awk -v a="$1" -v b="$2" 'BEGIN {printf "%.2f", a/b}'; }
echo "node disk: 3 GiB, 1 GiB random system payload, 16 MiB kernel.efi; median of $runs runs, wall ms"
printf '%-6s %-44s %10s\n' fs case ms
printf '%-6s %-44s %10s\n' ext4 "mkdisk --unverified" "$ext4_disk"
printf '%-6s %-44s %10s\n' ext4 "cp --reflink=auto system (plain copy)" "$ext4_cp"
printf '%-6s %-44s %10s\n' ext4 "qemu-img create -f qcow2 -b prebuilt.raw" "$ext4_qcow"
if [ -n "$xfs" ]; then
  printf '%-6s %-44s %10s\n' xfs "mkdisk --unverified" "$xfs_disk"
  printf '%-6s %-44s %10s\n' xfs "cp --reflink=auto system" "$xfs_cp"
  printf '%-6s %-44s %10s\n' xfs "qemu-img create -f qcow2 -b prebuilt.raw" "$xfs_qcow"
fi
echo "methods: ext4 $ext4_methods${xfs:+; xfs $xfs_methods}"
echo "ratio ext4 mkdisk / plain copy:      $(ratio "$ext4_disk" "$ext4_cp")  (target ≤ 1.2)"
[ -n "$xfs" ] && echo "ratio xfs mkdisk / qcow2 overlay:     $(ratio "$xfs_disk" "$xfs_qcow")  (target ≤ 1; xfs mkdisk target ≤ 10 ms)"
exit 0

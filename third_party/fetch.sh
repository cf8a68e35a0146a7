#!/usr/bin/env bash
# Fetches the Debian artifacts that go into the guest OS image, without
# installing them: `apt-get download` + `dpkg-deb -x` into third_party/cache.
# Idempotent: a package whose version is already unpacked is not fetched again.
#
# Layout of the cache:
#   cache/root/           every package unpacked over one tree
#   cache/versions.txt    "package version" per line, read into product info
#   cache/kernel          the kernel ABI (e.g. 6.1.0-56-cloud-amd64)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
cache=${QCLUSTER_THIRD_PARTY_CACHE:-$here/cache}
mkdir -p "$cache/debs" "$cache/root"

# Fast path: everything recorded is unpacked. `--refresh` asks apt for newer versions.
if [ "${1:-}" != "--refresh" ] && [ -f "$cache/versions.txt" ] && [ -f "$cache/kernel" ]; then
  ok=1
  while read -r p v; do
    [ "$(cat "$cache/debs/$p.version" 2>/dev/null)" = "$v" ] || ok=0
  done < "$cache/versions.txt"
  [ "$ok" = 1 ] && exit 0
fi

# The cloud kernel's metapackage names the ABI-specific package; follow it.
candidate() { apt-cache policy "$1" 2>/dev/null | awk '/Candidate:/ {print $2}'; }
if [ -z "$(candidate linux-image-cloud-amd64)" ] || [ "$(candidate linux-image-cloud-amd64)" = "(none)" ]; then
  apt-get update -qq
fi
kpkg=$(apt-cache depends linux-image-cloud-amd64 | awk '/Depends: linux-image-[0-9]/ {print $2; exit}')
[ -n "$kpkg" ] || { echo "fetch: cannot resolve linux-image-cloud-amd64 to an ABI package; run apt-get update" >&2; exit 1; }

pkgs=(
  "$kpkg"            # vmlinuz + modules
  systemd-boot-efi   # loader (systemd-bootx64.efi) and linuxx64.efi.stub
  ovmf               # firmware, for builds that do not use the host's
  e2fsprogs          # mke2fs for the guest's DATA partition
  libext2fs2 libcom-err2 libblkid1 libuuid1 libc6  # mke2fs's libraries (libe2p is in libext2fs2)
)

: > "$cache/versions.new"
for p in "${pkgs[@]}"; do
  v=$(candidate "$p")
  [ -n "$v" ] && [ "$v" != "(none)" ] || { echo "fetch: package $p has no candidate; run apt-get update" >&2; exit 1; }
  echo "$p $v" >> "$cache/versions.new"
  stamp="$cache/debs/$p.version"
  if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$v" ]; then continue; fi
  (cd "$cache/debs" && rm -f "${p}"_*.deb && apt-get download -q "$p=$v" 2>&1 | grep -v '^W: Download is performed unsandboxed' >&2 || true)
  deb=$(ls "$cache/debs/${p}"_*.deb 2>/dev/null | head -n1)
  [ -n "$deb" ] || { echo "fetch: apt-get download $p=$v produced no file" >&2; exit 1; }
  dpkg-deb -x "$deb" "$cache/root"
  echo "$v" > "$stamp"
done
mv "$cache/versions.new" "$cache/versions.txt"
echo "${kpkg#linux-image-}" > "$cache/kernel"

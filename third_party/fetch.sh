#!/usr/bin/env bash
# Fetches the Debian artifacts that go into the guest OS image, without
# installing them: `apt-get download` + `dpkg-deb -x` into third_party/cache.
# The versions are those of third_party/debian.lock, the one list Bazel's
# third_party/debian.bzl reads too; every .deb is checked against its sha256.
#
#   fetch.sh        fetch the pinned versions (`make fetch`). Idempotent: a
#                   package whose version is unpacked is not fetched again.
#                   A pinned version that has left the archive is replaced by
#                   the newest, with a one-line notice: run `make pin`.
#   fetch.sh --pin  pin the newest version of every package: rewrite
#                   debian.lock, then fetch (`make pin`).
#
# Layout of the cache:
#   cache/root/           every package unpacked over one tree
#   cache/versions.txt    "package version" per line, read into product info
#   cache/kernel          the kernel ABI (e.g. 6.1.0-57-cloud-amd64)
#   cache/debs/           the .deb files, and PKG.version stamps
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
cache=${QCLUSTER_THIRD_PARTY_CACHE:-$here/cache}
lock=${QCLUSTER_DEBIAN_LOCK:-$here/debian.lock}

pin=0
case "${1:-}" in
  "") ;;
  --pin) pin=1 ;;
  *) echo "fetch: unknown argument $1 (want none or --pin)" >&2; exit 2 ;;
esac
[ -f "$lock" ] || { echo "fetch: no $lock: restore it from git, or run make pin" >&2; exit 1; }
mkdir -p "$cache/debs" "$cache/root"

# The pins: "name version sha256 sha1 archive filename" per line.
pins() { grep -v -e '^#' -e '^[[:space:]]*$' "$lock"; }

# Fast path: the pinned versions are the ones unpacked.
if [ "$pin" = 0 ] && [ -f "$cache/versions.txt" ] && [ -f "$cache/kernel" ] &&
  [ "$(pins | awk '{print $1, $2}')" = "$(cat "$cache/versions.txt")" ]; then
  ok=1
  while read -r p v _; do
    [ "$(cat "$cache/debs/$p.version" 2>/dev/null)" = "$v" ] || ok=0
  done < <(pins)
  [ "$ok" = 1 ] && exit 0
fi

updated=0
apt_update() {
  if [ "$updated" = 0 ]; then
    apt-get update -qq
    updated=1
  fi
}
field() { apt-cache show "$1=$2" 2>/dev/null | awk -v f="$3:" '$1 == f {print $2; exit}'; }
candidate() { apt-cache policy "$1" 2>/dev/null | awk '/Candidate:/ {print $2}'; }

# newest NAME: "name version" of the newest package in NAME's place. A
# kernel's place is the cloud kernel's metapackage, which names the
# ABI-specific package.
newest() {
  local p=$1 v
  if [[ $p == linux-image-[0-9]* ]]; then
    p=$(apt-cache depends linux-image-cloud-amd64 2>/dev/null | awk '/Depends: linux-image-[0-9]/ {print $2; exit}')
    if [ -z "$p" ]; then
      apt_update
      p=$(apt-cache depends linux-image-cloud-amd64 | awk '/Depends: linux-image-[0-9]/ {print $2; exit}')
    fi
    [ -n "$p" ] || { echo "fetch: cannot resolve linux-image-cloud-amd64 to an ABI package; run apt-get update" >&2; return 1; }
  fi
  v=$(candidate "$p")
  if [ -z "$v" ] || [ "$v" = "(none)" ]; then
    apt_update
    v=$(candidate "$p")
  fi
  [ -n "$v" ] && [ "$v" != "(none)" ] || { echo "fetch: package $p has no candidate; run apt-get update" >&2; return 1; }
  echo "$p $v"
}

# download NAME VERSION: the .deb's path in cache/debs, or failure (the
# version is not in the archive). apt-get checks it against apt's index.
download() {
  local p=$1 v=$2 log
  log=$(mktemp)
  rm -f "$cache/debs/${p}"_*.deb
  if ! (cd "$cache/debs" && apt-get download -q "$p=$v") > "$log" 2>&1; then
    apt_update
    if ! (cd "$cache/debs" && apt-get download -q "$p=$v") > "$log" 2>&1; then
      rm -f "$log"
      return 1
    fi
  fi
  rm -f "$log"
  ls "$cache/debs/${p}"_*.deb 2>/dev/null | head -n1 | grep .
}

sums() { echo "$(sha256sum < "$1" | cut -d' ' -f1) $(sha1sum < "$1" | cut -d' ' -f1)"; }

# --pin: the newest of every package, recorded with its sums and archive path.
if [ "$pin" = 1 ]; then
  new=$(mktemp)
  trap 'rm -f "$new"' EXIT
  sed -n '/^#/p' "$lock" > "$new"
  while read -r p _; do
    nn=$(newest "$p") || exit 1
    read -r np nv <<< "$nn"
    deb=$(download "$np" "$nv") || { echo "fetch: apt-get download $np=$nv failed" >&2; exit 1; }
    filename=$(field "$np" "$nv" Filename)
    [ -n "$filename" ] || { echo "fetch: apt-cache show $np=$nv has no Filename" >&2; exit 1; }
    # Debian's security archive keeps its packages under pool/updates/.
    archive=debian
    [[ $filename == pool/updates/* ]] && archive=debian-security
    echo "$np $nv $(sums "$deb") $archive $filename" >> "$new"
  done < <(pins)
  if cmp -s "$lock" "$new"; then
    echo "fetch: $(basename "$lock") already pins the newest versions" >&2
  else
    cat "$new" > "$lock"
    echo "fetch: pinned the newest versions in $lock (review and commit it)" >&2
  fi
fi

: > "$cache/versions.new"
kernel=""
while read -r p v sha256 _; do
  stamp="$cache/debs/$p.version"
  if ! { [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$v" ]; }; then
    deb=$(ls "$cache/debs/${p}"_*.deb 2>/dev/null | head -n1 || true)
    if [ -z "$deb" ] || [ "$(sums "$deb" | cut -d' ' -f1)" != "$sha256" ]; then
      if deb=$(download "$p" "$v"); then
        got=$(sums "$deb" | cut -d' ' -f1)
        [ "$got" = "$sha256" ] || { rm -f "$deb"; echo "fetch: $deb has sha256 $got, but $(basename "$lock") pins $sha256 for $p $v" >&2; exit 1; }
      else
        nn=$(newest "$p") || exit 1
        read -r np nv <<< "$nn"
        deb=$(download "$np" "$nv") || { echo "fetch: apt-get download $np=$nv failed" >&2; exit 1; }
        echo "fetch: $p $v has left the archive; fetched the newest, $np $nv, instead: run make pin" >&2
        p=$np v=$nv stamp="$cache/debs/$np.version"
      fi
    fi
    dpkg-deb -x "$deb" "$cache/root"
    echo "$v" > "$stamp"
  fi
  echo "$p $v" >> "$cache/versions.new"
  [[ $p == linux-image-[0-9]* ]] && kernel=${p#linux-image-}
done < <(pins)
[ -n "$kernel" ] || { echo "fetch: $(basename "$lock") pins no linux-image-ABI package" >&2; exit 1; }
mv "$cache/versions.new" "$cache/versions.txt"
echo "$kernel" > "$cache/kernel"

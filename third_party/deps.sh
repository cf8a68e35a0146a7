#!/usr/bin/env bash
# Installs the Debian packages qcluster needs on the host, once. When every
# command is already there it returns at once without touching apt.
set -euo pipefail

# command → package that provides it
pkgs=(
  qemu-system-x86_64:qemu-system-x86
  qemu-img:qemu-utils
  swtpm:swtpm
  swtpm_setup:swtpm-tools
  sgdisk:gdisk
  fsck.fat:dosfstools
  mdir:mtools
  sfdisk:fdisk
  blkid:util-linux
  mkfs.xfs:xfsprogs
  veritysetup:cryptsetup-bin
  fsck.erofs:erofs-utils
  unsquashfs:squashfs-tools
  mke2fs:e2fsprogs
  dpkg-deb:dpkg
  losetup:mount
  filefrag:e2fsprogs
  protoc:protobuf-compiler
  cpio:cpio
  tcpdump:tcpdump
)
files=(
  /usr/share/OVMF/OVMF_CODE_4M.fd:ovmf
)

missing=()
for p in "${pkgs[@]}"; do
  command -v "${p%%:*}" >/dev/null 2>&1 || missing+=("${p#*:}")
done
for f in "${files[@]}"; do
  [ -e "${f%%:*}" ] || missing+=("${f#*:}")
done
[ ${#missing[@]} -eq 0 ] && exit 0

mapfile -t missing < <(printf '%s\n' "${missing[@]}" | sort -u)
echo "deps: installing ${missing[*]}" >&2
sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq
$sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null

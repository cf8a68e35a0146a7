#!/usr/bin/env bash
# Static checks of the Bazel side, which CI runs without Bazel:
#   1. gazelle in diff mode: every BUILD.bazel and MODULE.bazel's use_repo are
#      what scripts/gazelle.sh writes;
#   2. buildifier: every BUILD.bazel, .bzl and MODULE.bazel is formatted, and
#      its lint warnings are clean.
# Exits non-zero, saying which check failed, when either finds something.
#
# buildifier comes from npm (@bazel/buildifier ships the binary) and is
# installed once into $QCLUSTER_TOOLS (default ~/.cache/qcluster).
set -euo pipefail
cd "$(dirname "$0")/.."

BUILDIFIER_VERSION=8.2.1
tools=${QCLUSTER_TOOLS:-$HOME/.cache/qcluster}
npm_prefix=$tools/npm-buildifier-$BUILDIFIER_VERSION
buildifier=$npm_prefix/node_modules/.bin/buildifier

failed=()

./scripts/gazelle.sh --check || failed+=("gazelle (fix: scripts/gazelle.sh)")

if [ ! -x "$buildifier" ]; then
  echo "lint.sh: installing buildifier $BUILDIFIER_VERSION into $npm_prefix" >&2
  npm install --silent --no-audit --no-fund --prefix "$npm_prefix" "@bazel/buildifier@$BUILDIFIER_VERSION" >&2
fi
# buildifier -r would descend into third_party/cache and out; list the files.
files=()
while IFS= read -r -d '' f; do files+=("$f"); done < <(
  find . \( -path ./third_party/cache -o -path ./out -o -path './bazel-*' -o -path ./.git \) -prune -o \
    \( -name BUILD.bazel -o -name BUILD -o -name '*.bzl' -o -name MODULE.bazel -o -name WORKSPACE \) -print0 | sort -z)
if ! "$buildifier" -mode=check -lint=warn "${files[@]}"; then
  failed+=("buildifier (fix: $buildifier -mode=fix -lint=fix FILE..., then fix the warnings left by hand)")
fi

if [ ${#failed[@]} -gt 0 ]; then
  printf 'lint.sh: failed: %s\n' "${failed[@]}" >&2
  exit 1
fi
echo "lint.sh: gazelle and buildifier clean (${#files[@]} Bazel files)"

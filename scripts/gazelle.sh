#!/usr/bin/env bash
# Writes the Bazel files that follow from the Go code, without Bazel:
#   - every package's BUILD.bazel, by gazelle (update mode), resolving imports
#     the way `bazel run //:gazelle` does under Bzlmod: the modules of go.mod
#     as known repositories (-repo_config), static names for anything else;
#   - the use_repo(go_deps, ...) call in MODULE.bazel: the go.mod modules those
#     BUILD files refer to.
#
#   scripts/gazelle.sh           write the files
#   scripts/gazelle.sh --check   write nothing; print what would change and
#                                exit 1 if anything would (scripts/lint.sh)
#
# gazelle is built once with `go install` into $QCLUSTER_TOOLS
# (default ~/.cache/qcluster) from the Go module proxy.
set -euo pipefail
cd "$(dirname "$0")/.."

# The gazelle Bazel resolves: MODULE.bazel's bazel_dep, so that this script
# and `bazel run //:gazelle` write the same files.
GAZELLE_VERSION=v$(sed -n 's/^bazel_dep(name = "gazelle", version = "\([^"]*\)".*/\1/p' MODULE.bazel)
[ "$GAZELLE_VERSION" != v ] || { echo "gazelle.sh: MODULE.bazel has no bazel_dep(name = \"gazelle\", version = ...) line" >&2; exit 1; }
tools=${QCLUSTER_TOOLS:-$HOME/.cache/qcluster}
gazelle=$tools/gazelle-$GAZELLE_VERSION/gazelle

check=0
case "${1:-}" in
  "") ;;
  --check) check=1 ;;
  *) echo "gazelle.sh: unknown argument $1 (want none or --check)" >&2; exit 2 ;;
esac

if [ ! -x "$gazelle" ]; then
  echo "gazelle.sh: installing gazelle $GAZELLE_VERSION into $(dirname "$gazelle")" >&2
  GOBIN=$(dirname "$gazelle") GOFLAGS= go install "github.com/bazelbuild/bazel-gazelle/cmd/gazelle@$GAZELLE_VERSION"
fi

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# The modules go.mod requires, "path direct|indirect" per line. rules_go is
# left out: under Bazel it is the rules_go bazel_dep, not a go_deps repository.
go_mod_requires() {
  awk '
    /^require \(/ { block = 1; next }
    block && /^\)/ { block = 0; next }
    block && NF >= 2 && $1 !~ /^\/\// { print $1, ($0 ~ /\/\/ indirect/ ? "indirect" : "direct") }
    /^require [^(]/ { print $2, ($0 ~ /\/\/ indirect/ ? "indirect" : "direct") }
  ' go.mod | grep -v '^github.com/bazelbuild/rules_go '
}

# A module's repository name as go_deps gives it: the host's labels reversed,
# then the path, joined by "_", everything else not alphanumeric made "_",
# lower case (github.com/cenkalti/backoff/v4 -> com_github_cenkalti_backoff_v4).
repo_names() {
  awk '{
    n = split($1, seg, "/"); h = split(seg[1], host, ".")
    name = ""
    for (i = h; i >= 1; i--) name = name (name == "" ? "" : "_") host[i]
    for (i = 2; i <= n; i++) name = name "_" seg[i]
    name = tolower(name); gsub(/[^a-z0-9]/, "_", name)
    print name, $1, $2
  }'
}

go_mod_requires | repo_names | sort > "$tmp/modules" # repo path direct|indirect

# What go_deps hands gazelle under Bazel (bazel_gazelle_go_repository_config).
awk '{ printf "go_repository(\n    name = \"%s\",\n    importpath = \"%s\",\n)\n\n", $1, $2 }' \
  "$tmp/modules" > "$tmp/repo_config"

args=(update -bzlmod -repo_config "$tmp/repo_config" -external static)
status=0
if [ "$check" = 1 ]; then
  if ! "$gazelle" "${args[@]}" -mode diff > "$tmp/gazelle.diff" 2> "$tmp/gazelle.err"; then
    cat "$tmp/gazelle.diff" "$tmp/gazelle.err" >&2
    echo "gazelle.sh: BUILD.bazel files are not what gazelle writes: run scripts/gazelle.sh (or make gazelle)" >&2
    status=1
  fi
else
  "$gazelle" "${args[@]}" -mode fix
fi

# The external repositories the BUILD files name. A name that is neither a
# go.mod module nor one of ours means gazelle guessed a module wrongly: the
# import's module is missing from go.mod (go mod tidy).
find . \( -path ./third_party/cache -o -path ./out -o -path './bazel-*' -o -path ./.git \) -prune -o \
  -name BUILD.bazel -print0 |
  xargs -0 cat | grep -o '"@[A-Za-z0-9_.~+-]*//' | sed 's/^"@//; s|//$||' | sort -u > "$tmp/used"
unknown=$(grep -vxF -f <(awk '{print $1}' "$tmp/modules") "$tmp/used" |
  grep -vE '^(io_bazel_rules_go|bazel_gazelle|bazel_tools|debian_[a-z_]+)$' || true)
if [ -n "$unknown" ]; then
  echo "gazelle.sh: BUILD.bazel files refer to repositories that are not modules of go.mod: $(echo $unknown) (run go mod tidy?)" >&2
  status=1
fi

# MODULE.bazel's use_repo(go_deps, ...): replace the call's arguments.
{
  echo "use_repo("
  echo "    go_deps,"
  grep -xF -f "$tmp/used" <(awk '{print $1}' "$tmp/modules") | sed 's/.*/    "&",/'
  echo ")"
} > "$tmp/use_repo"
awk -v block="$tmp/use_repo" '
  held != "" {
    if ($0 == "    go_deps,") {
      while ((getline line < block) > 0) print line
      skip = 1; held = ""; found = 1; next
    }
    print held; held = ""
  }
  skip { if ($0 == ")") skip = 0; next }
  $0 == "use_repo(" { held = $0; next }
  { print }
  END { if (!found) exit 3 }
' MODULE.bazel > "$tmp/MODULE.bazel" || {
  echo "gazelle.sh: MODULE.bazel has no multi-line use_repo( call starting with go_deps," >&2
  exit 1
}
if ! cmp -s MODULE.bazel "$tmp/MODULE.bazel"; then
  if [ "$check" = 1 ]; then
    diff -u --label MODULE.bazel --label "MODULE.bazel (as scripts/gazelle.sh writes it)" \
      MODULE.bazel "$tmp/MODULE.bazel" >&2 || true
    echo "gazelle.sh: MODULE.bazel's use_repo(go_deps, ...) is out of date: run scripts/gazelle.sh (or make gazelle)" >&2
    status=1
  else
    cat "$tmp/MODULE.bazel" > MODULE.bazel
    echo "gazelle.sh: updated use_repo(go_deps, ...) in MODULE.bazel" >&2
  fi
fi

# go_deps takes the root module's direct dependencies from go.mod's
# "// indirect" marks; `bazel mod tidy` would drop a use_repo entry marked so.
indirect=$(grep -xF -f "$tmp/used" <(awk '$3 == "indirect" {print $1}' "$tmp/modules") || true)
if [ -n "$indirect" ]; then
  echo "gazelle.sh: warning: go.mod marks modules the code imports as indirect (run go mod tidy): $(echo $indirect)" >&2
fi
exit "$status"

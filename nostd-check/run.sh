#!/usr/bin/env bash
# Proof that relink builds and runs as #![no_std] + alloc with default
# features off. Exits non-zero on any failure. Works offline once the
# crates are in the local cargo cache (it falls back to fetching).
#
#  1. no crate in the normal dependency graph (proc macros excluded) has its
#     "std" feature enabled, relink's default features are off, and no
#     std-only crate (getrandom, tokio) is present;
#  2. builds a #![no_std] #![no_main] binary with its own panic handler and
#     global allocator (linking fails if any dependency links std, since
#     std's panic handler would clash with ours);
#  3. checks that the linked binary contains no std symbols (when nm exists);
#  4. runs it: handshake, data both ways, resume, clean close.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$here"
# Build inside the main crate's (git-ignored) target directory.
export CARGO_TARGET_DIR="${NOSTD_TARGET_DIR:-$here/../target/nostd-check}"

fail() {
    echo "nostd-check: FAIL: $*" >&2
    exit 1
}

cargo_offline() {
    cargo "$@" --offline 2>/dev/null || { cargo fetch >/dev/null && cargo "$@"; }
}

# 1. dependency graph
tree="$(cargo_offline tree -e normal,features,no-proc-macro --prefix none)" ||
    fail "cargo tree failed"
if grep -q 'feature "std"' <<<"$tree"; then
    grep 'feature "std"' <<<"$tree" | sort -u >&2
    fail "a dependency enables its std feature"
fi
if grep -qE '^relink feature' <<<"$tree"; then
    grep -E '^relink feature' <<<"$tree" | sort -u >&2
    fail "relink features enabled (expected default-features = false and none)"
fi
if grep -qE '^(getrandom|tokio|std) v' <<<"$tree"; then
    fail "std-only crate in the dependency graph"
fi
grep -q '^relink v' <<<"$tree" || fail "relink missing from the dependency graph"
echo "nostd-check: dependency graph has no std feature ($(grep -c ' v[0-9]' <<<"$(sort -u <<<"$tree")") crate entries)"

# 2. build the no_std binary
cargo_offline build --quiet || fail "build of the no_std binary failed"
bin="$CARGO_TARGET_DIR/debug/relink-nostd-check"
[ -x "$bin" ] || fail "binary $bin missing"

# 3. no std symbols linked
if command -v nm >/dev/null 2>&1; then
    if nm -C "$bin" | grep -q ' std::'; then
        nm -C "$bin" | grep ' std::' | head >&2
        fail "std symbols linked into the binary"
    fi
    echo "nostd-check: binary links no std symbols"
fi

# 4. run it
out="$("$bin" 2>&1)" || { echo "$out" >&2; fail "the no_std binary failed"; }
echo "$out"
grep -q 'all checks passed' <<<"$out" || fail "the no_std binary did not finish"
echo "nostd-check: OK"

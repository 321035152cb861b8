#!/usr/bin/env bash
# The whole test suite (what CI runs): formatting, lints, every test, and a
# build of the fuzz targets. `scripts/test.sh --fast` runs the tests only.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "${1:-}" = "--fast" ]; then
    exec cargo test --workspace --quiet
fi

echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy"
cargo clippy --workspace --all-targets --quiet -- -D warnings
echo "== cargo test"
cargo test --workspace
echo "== fuzz targets build"
(cd fuzz && cargo check --quiet --bins)

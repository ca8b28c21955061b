#!/usr/bin/env bash
# scripts/first-order.sh — how long a newcomer waits for the first Part A
# order: a fresh clone of this checkout's HEAD, an empty target directory,
# then the README's `cargo run --release --example sync_rest` and one
# `POST /order`, timed from the start of the build to the first answer.
#
# Usage: scripts/first-order.sh [EXAMPLE]   (default sync_rest; any of the
#        four examples is built the same way, but only sync_rest is asked
#        for an order)
#
# Crates come from cargo's registry cache when it has them (run
# `CARGO_HOME=$(mktemp -d) scripts/first-order.sh` to download them too).
# The ports are the README's (8000, 5001, 5002): stop anything on them.
set -euo pipefail
example="${1:-sync_rest}"
repo="$(cd "$(dirname "$0")/.." && pwd)"
work="$(mktemp -d)"
pid=""
cleanup() {
  if [[ -n "$pid" ]]; then kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; fi
  rm -rf "$work"
}
trap cleanup EXIT

git clone --quiet "$repo" "$work/campusfood"
cd "$work/campusfood"
export CARGO_TARGET_DIR="$work/target"
ms() { echo $(( $(date +%s%N) / 1000000 )); }
start=$(ms)
cargo build --quiet --release --example "$example"
built=$(ms)
if [[ "$example" == sync_rest ]]; then
  CAMPUSFOOD_DATA_DIR="$work/data" cargo run --quiet --release --example sync_rest >"$work/log" 2>&1 &
  pid=$!
  until curl -sf -XPOST 127.0.0.1:8000/order -H 'content-type: application/json' \
      -d '{"item":"burger","qty":1}' >"$work/answer"; do
    kill -0 "$pid" 2>/dev/null || { cat "$work/log" >&2; exit 1; }
    sleep 0.1
  done
  cat "$work/answer"; echo
fi
answered=$(ms)
echo "$example: build $(( (built - start) / 1000 )) s, first order $(( (answered - start) / 1000 )) s after the start ($(nproc) cores)"

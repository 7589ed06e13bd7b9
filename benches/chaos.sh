#!/usr/bin/env bash
# Fault drills (issue 16), end to end, against the release server and real PostgreSQL:
#
#   benches/chaos.sh
#
#   1. builds the release binary (`cargo build --release --bin palisade`);
#   2. runs the six drills of tests/api/drills.rs one after another, each starting that
#      binary (`PALISADE_DRILL_BIN`) with its own embedded cluster under a temporary
#      directory, on loopback, a few hundred requests at most:
#        restart    pg_ctl stop for 2 s under 4 clients (GET and POST .../projects), then start:
#                   /ready 503 and 200 times, slowest request, 503 count;
#        terminate  pg_terminate_backend on every pool connection with requests held
#                   in flight at a lock: how fast they fail, whether later ones succeed;
#        sigterm    SIGTERM with 200 POSTs in flight (bodies half sent): refusal of new
#                   connections, completion of the 200, exit status and time, cluster state;
#        freeze     SIGSTOP on every PostgreSQL process for 4 s (a partition: nothing
#                   fails fast), then SIGCONT: /ready times, slowest request;
#        drain      a request stalled mid-body at SIGTERM, cut at SHUTDOWN_TIMEOUT_SECONDS:
#                   exit status and time, cluster state;
#        pool       a pool of 2, both held: 20 requests beyond it, their 503 wait times;
#   3. prints one line per drill with its figures (and the failure, if a drill fails).
#
# Each drill asserts the issue's figures, so a regression fails the run (exit 1).
set -euo pipefail
cd "$(dirname "$0")/.."
echo "==> cargo build --release --bin palisade" >&2
cargo build --release --bin palisade >&2
out=$(mktemp)
trap 'rm -f "$out"' EXIT
echo "==> the drills (tests/api/drills.rs) against target/release/palisade" >&2
status=0
PALISADE_DRILL_BIN="$PWD/target/release/palisade" \
    cargo test --test api drills -- --nocapture --test-threads=1 >"$out" 2>&1 || status=$?
# libtest prints `test <name> ... ` on stdout and the drill's line right after it.
grep -oE 'drill [a-z-]+: .*' "$out" || true
if [ "$status" -ne 0 ]; then
    grep -E "panicked|^test .*FAILED|error" "$out" | head -20
    exit 1
fi

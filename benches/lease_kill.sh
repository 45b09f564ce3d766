#!/usr/bin/env bash
# kill -9 of the daemon running a connector (holding its lease), with a second daemon on the same
# PostgreSQL database, TRIALS times during a pull and TRIALS times during a push (default 10 each):
# tests/postgres.rs `a_lease_holder_killed_mid_run_leaves_the_work_to_another_daemon` with
# CONSENTD_LEASE_TRIALS, which starts a private PostgreSQL, a remote consent system on 127.0.0.1 and
# the daemons, and fails on any consent lost or applied twice. Prints one line per trial (when the
# kill came, how long the other daemon took to finish), then a summary.
# Usage: benches/lease_kill.sh [TRIALS]
set -euo pipefail
cd "$(dirname "$0")/.."
TRIALS=${1:-10}
OUT=$(mktemp)
trap 'rm -f "$OUT"' EXIT
CONSENTD_LEASE_TRIALS=$TRIALS cargo test --quiet --test postgres a_lease_holder_killed_mid_run -- --nocapture 2>&1 | tee "$OUT" | grep -E '^(pull|push) trial|test result|panicked'
awk '/^(pull|push) trial/ { k = $1; n[k]++; t = $(NF - 2); s[k] += t; if (t > m[k]) m[k] = t }
  END { for (k in n) printf "%s: %d trials, nothing lost or doubled; the other daemon finished %.1f s after the kill on average, at most %.1f s\n", k, n[k], s[k] / n[k], m[k] }' "$OUT"
grep -q "test result: ok" "$OUT"

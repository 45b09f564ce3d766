#!/usr/bin/env bash
# Peak memory of an import, against the size of the file and the size of the store. Makes 10×N
# consents with shared/bench/gen_consents.py, then imports with the release binary:
#   1. the first N rows into a fresh store;
#   2. all 10×N rows into a fresh store;
#   3. the first 9×N rows into a fresh store, then (measured) the last N rows into that store.
# Prints wall time and peak RSS of each; nothing here passes or fails. If 3 peaks like 2 and not like
# 1, what grows is the store's bookkeeping, not the import's. Usage: benches/memory.sh [N]
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-1000000}
GEN=${GEN:-../shared/bench/gen_consents.py}
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
cargo build --release --quiet
BIN=${CARGO_TARGET_DIR:-target}/release/consentd
python3 "$GEN" $((10 * N)) csv > "$WORK/all.csv"
head -n $((N + 1)) "$WORK/all.csv" > "$WORK/first.csv"
head -n $((9 * N + 1)) "$WORK/all.csv" > "$WORK/nine.csv"
{ head -n 1 "$WORK/all.csv"; tail -n +$((9 * N + 2)) "$WORK/all.csv"; } > "$WORK/last.csv"
echo "input: $((10 * N)) consents, $(du -m "$WORK/all.csv" | cut -f1) MB"

# Runs an import, prints its wall time and peak RSS.
measure() {
  local label=$1
  shift
  python3 - "$label" "$@" <<'PY'
import resource, subprocess, sys, time
label, cmd = sys.argv[1], sys.argv[2:]
t = time.perf_counter()
p = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
dt = time.perf_counter() - t
rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
if p.returncode != 0:
    sys.stderr.write(p.stderr.decode()[-2000:])
print(f"{label:<44} {dt:7.2f} s  peak RSS {rss:6.0f} MB  (exit {p.returncode})")
PY
}

export CONSENTD_LOG=warn
measure "$N rows, fresh store" $BIN --data-dir "$WORK/a" import --mapping generic-csv "$WORK/first.csv"
rm -rf "$WORK/a"
measure "$((10 * N)) rows, fresh store" $BIN --data-dir "$WORK/b" import --mapping generic-csv "$WORK/all.csv"
rm -rf "$WORK/b"
$BIN --data-dir "$WORK/c" import --mapping generic-csv "$WORK/nine.csv" > /dev/null || [ $? -eq 2 ]
measure "$N rows into a store of $((9 * N))" $BIN --data-dir "$WORK/c" import --mapping generic-csv "$WORK/last.csv"

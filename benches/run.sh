#!/usr/bin/env bash
# The import/export/search benchmark: makes N consents with shared/bench/gen_consents.py, then
# measures the release binary's import (indexes, change feed and audit included), re-import, export
# and searches, printing records/s and peak memory. Usage: benches/run.sh [N] [csv|ndjson|json|xml]
# Prints figures only; nothing here passes or fails.
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-1000000}
FMT=${2:-csv}
GEN=${GEN:-../shared/bench/gen_consents.py}
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
cargo build --release --quiet
BIN=${CARGO_TARGET_DIR:-target}/release/consentd
python3 "$GEN" "$N" "$FMT" > "$WORK/in.$FMT"
echo "input: $N consents, $FMT, $(du -m "$WORK/in.$FMT" | cut -f1) MB"

# Runs a command, prints its wall time and peak RSS.
measure() {
  local label=$1
  shift
  python3 - "$label" "$N" "$@" <<'PY'
import resource, subprocess, sys, time
label, n, cmd = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
t = time.perf_counter()
p = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
dt = time.perf_counter() - t
rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
if p.returncode not in (0,):
    sys.stderr.write(p.stderr.decode()[-2000:])
print(f"{label:<28} {dt:7.2f} s  {n / dt:>12,.0f} records/s  peak RSS {rss:6.0f} MB  (exit {p.returncode})")
PY
}

export CONSENTD_LOG=warn
D="$WORK/data"
measure "import (fresh store)" $BIN --data-dir "$D" import --mapping "generic-$FMT" "$WORK/in.$FMT"
measure "re-import (all unchanged)" $BIN --data-dir "$D" import --mapping "generic-$FMT" "$WORK/in.$FMT"
measure "export csv (all)" $BIN --data-dir "$D" export --mapping generic-csv --output "$WORK/out.csv"
measure "export $FMT (all)" $BIN --data-dir "$D" export --mapping "generic-$FMT" --output "$WORK/out.$FMT"
echo "store size on disk: $(du -sm "$D" | cut -f1) MB"
NUM=$(sed -n 2p "$WORK/out.csv" | cut -d, -f1)
for q in "--number $NUM" "--digits ${NUM: -4}" "--created-from 2024-06-01 --created-to 2024-06-01"; do
  # Whole process (start, open store, search, print); the in-process figure is in `cargo bench --bench store`.
  python3 - "$BIN" "$D" "$q" <<'PY'
import subprocess, sys, time
bin, d, q = sys.argv[1], sys.argv[2], sys.argv[3].split()
best = 1e9
for _ in range(5):
    t = time.perf_counter()
    out = subprocess.run([bin, "--data-dir", d, "search", *q, "--limit", "100"], capture_output=True)
    best = min(best, time.perf_counter() - t)
print(f"search {' '.join(q):<45} {best * 1000:7.1f} ms whole process, {len(out.stdout.splitlines()) - 1} rows")
PY
done

#!/usr/bin/env bash
# The PostgreSQL backend's figures, each next to its peer in the same run on the same private server
# (initdb into a temp dir, Unix socket only: pg_cluster.sh, as peers.sh starts it):
#   1. PostgreSQL's own `\copy` of the generator's CSV into a table with a primary key and a
#      creation-time index (peers.sh's table), then consentd importing the same file through the
#      postgres backend (`consentd import`, CONSENTD_STORE_BACKEND=postgres), then into sled;
#   2. `consentd store copy` of the sled store just made into PostgreSQL, and of that back into sled;
#   3. with WRK=1 (wrk installed): the recording check (benches/api.sh's Lua script) against one
#      daemon on sled, one on PostgreSQL, and two on the same PostgreSQL database.
# Usage: benches/pg.sh [N] (default 1,000,000). Prints figures only; nothing here passes or fails.
# A figure is wall time; `server` is PostgreSQL's CPU time (its processes' user + system) in the step.
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-1000000}
PG_BIN=${PG_BIN:-$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1)}
WORK=$(mktemp -d)
chmod 755 "$WORK"
PGDATA=$WORK/pg RUN=$WORK/run
# shellcheck source=benches/pg_cluster.sh
. benches/pg_cluster.sh
PIDS=()
trap 'for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; pg_stop; rm -rf "$WORK"' EXIT
cargo build --release --quiet --bin consentd
BIN=$PWD/target/release/consentd
# The generator writes 4 of its 10 country prefixes with a digit too many for their numbering plans;
# mended here (as benches/sync.sh does) so consentd stores every row the peer stores.
python3 ../shared/bench/gen_consents.py "$N" csv 7 | sed -e 's/+1212/+121/; s/+1415/+141/; s/+3312/+331/; s/+3461/+346/' > "$WORK/in.csv"
pg_start bench
PSQL=("$PG_BIN/psql" -h "$RUN" -U bench -X -q -v ON_ERROR_STOP=1)
url() { echo "host=$RUN user=bench dbname=$1"; }
db() { "${PSQL[@]}" -d postgres -c "CREATE DATABASE $1" >/dev/null; }
server_cpu() { # CPU seconds of every PostgreSQL process so far (clock ticks of /proc/PID/stat)
  local t=0
  for p in $(pgrep -u postgres postgres || pgrep postgres); do
    t=$((t + $(awk '{print $14 + $15 + $16 + $17}' "/proc/$p/stat" 2>/dev/null || echo 0)))
  done
  echo "$t"
}
# step NAME CMD...: runs CMD, prints its wall time and the server's CPU time in it.
step() {
  local name=$1; shift
  local c0 t0 t1 c1
  c0=$(server_cpu); t0=$(date +%s.%N)
  "$@" > "$WORK/out" 2> "$WORK/err" || { echo "$name: failed: $(tail -n 2 "$WORK/err")"; return 1; }
  t1=$(date +%s.%N); sleep 1; c1=$(server_cpu)  # the client's backends gone, their time counted
  printf '%-44s %7.2f s   server %6.2f s CPU\n' "$name" "$(echo "$t1 - $t0" | bc)" "$(echo "($c1 - $c0) / $(getconf CLK_TCK)" | bc -l)"
}
echo "PostgreSQL $("$PG_BIN/postgres" --version | awk '{print $3}'), $N consents ($(du -h "$WORK/in.csv" | cut -f1) CSV)"

db peer
"${PSQL[@]}" -d peer -c "create table consents(phone text, channel text, consent boolean, created_at timestamptz,
  updated_at timestamptz, primary key (phone, channel)); create index consents_created_at on consents(created_at);"
step "peer: psql \\copy (key + creation index)" "${PSQL[@]}" -d peer -c "\\copy consents from '$WORK/in.csv' csv header"
db imported
step "consentd import, postgres backend" env CONSENTD_STORE_BACKEND=postgres CONSENTD_DATABASE_URL="$(url imported)" \
  CONSENTD_LOG=warn "$BIN" --data-dir "$WORK/unused" import --mapping generic-csv --quiet "$WORK/in.csv"
grep -m 1 Imported "$WORK/out" || cat "$WORK/out" "$WORK/err"
# The floor of consentd's schema: PostgreSQL's own COPY of the rows that import left (names, consents
# with their three indexes, journal with its two), out to files and into a freshly migrated database.
for t in names consents journal; do "${PSQL[@]}" -d imported -c "\\copy $t to '$WORK/$t.copy'"; done
db floor
CONSENTD_LOG=warn CONSENTD_DATABASE_URL="$(url floor)" "$BIN" --data-dir "$WORK/unused" store migrate > /dev/null
step "floor: psql \\copy of those rows, our schema" "${PSQL[@]}" -d floor -1 -c "\\copy names from '$WORK/names.copy'" \
  -c "\\copy consents from '$WORK/consents.copy'" -c "\\copy journal from '$WORK/journal.copy'"
step "consentd import, sled backend" env CONSENTD_LOG=warn "$BIN" --data-dir "$WORK/sled" import --mapping generic-csv --quiet "$WORK/in.csv"
db copied
step "store copy sled -> postgres" env CONSENTD_LOG=warn "$BIN" --data-dir "$WORK/unused" store copy \
  --from "sled:$WORK/sled" --to "postgres:$(url copied)"
tr -d '\n ' < "$WORK/out"; echo
step "store copy postgres -> sled" env CONSENTD_LOG=warn "$BIN" --data-dir "$WORK/unused" store copy \
  --from "postgres:$(url copied)" --to "sled:$WORK/back"
tr -d '\n ' < "$WORK/out"; echo
echo "sizes: sled $(du -sh "$WORK/sled" | cut -f1), postgres $("${PSQL[@]}" -d copied -Atc "select pg_size_pretty(pg_database_size('copied'))"), peer table $("${PSQL[@]}" -d peer -Atc "select pg_size_pretty(pg_total_relation_size('consents'))")"

[ "${WRK:-0}" = 1 ] || exit 0
command -v wrk >/dev/null || { echo "wrk: not installed (apt-get install wrk)"; exit 0; }
# The recording check as benches/api.sh loads it: wrk -t2 -c64, random stored numbers (and some not held).
awk -F, 'NR > 1 && NR % 97 == 0 { sub(/^\+/, "", $1); print $1 } NR % 1000 == 0 { print "49170" NR }' "$WORK/in.csv" > "$WORK/numbers"
cat > "$WORK/check.lua" <<LUA
local numbers = {}
for line in io.lines("$WORK/numbers") do numbers[#numbers + 1] = line end
wrk.headers["Authorization"] = "Bearer bench-secret"
request = function()
  return wrk.format("GET", "/v1/checks/recording/%2B" .. numbers[math.random(#numbers)])
end
LUA
printf '[[tokens]]\nname = "bench"\ntoken_env = "BENCH_TOKEN"\nrights = ["view"]\n' > "$WORK/config.toml"
serve() { # serve NAME ENV...: a daemon on a free port; its URL in $WORK/NAME.url
  local name=$1; shift
  env CONSENTD_LOG=warn BENCH_TOKEN=bench-secret CONSENTD_LISTEN=127.0.0.1:0 "$@" \
    "$BIN" --config "$WORK/config.toml" --data-dir "$WORK/$name" serve > "$WORK/$name.addr" 2>&1 &
  PIDS+=($!)
  for _ in $(seq 300); do grep -q listening "$WORK/$name.addr" && break; sleep 0.1; done
  echo "http://$(sed -n 's/^listening on //p' "$WORK/$name.addr")" > "$WORK/$name.url"
}
load() { # load LABEL NAME...: 64 connections in all, split over the daemons named, 10 s
  local label=$1; shift
  local c=$((64 / $#)) n=0 w=()
  for name in "$@"; do
    wrk -t2 -c"$c" -d10s --latency -s "$WORK/check.lua" "$(cat "$WORK/$name.url")" > "$WORK/wrk.$((n += 1))" &
    w+=($!)
  done
  wait "${w[@]}"
  awk -v l="$label" '/Requests\/sec/ {r += $2} /^ +99%/ {p = p " " $2} /Non-2xx/ {bad += $NF}
    END {printf "%-44s %9.0f req/s  p99%s%s\n", l, r, p, (bad ? "  non-2xx " bad : "")}' "$WORK"/wrk.*
  rm -f "$WORK"/wrk.*
}
serve back
serve pg1 CONSENTD_STORE_BACKEND=postgres CONSENTD_DATABASE_URL="$(url copied)"
serve pg2 CONSENTD_STORE_BACKEND=postgres CONSENTD_DATABASE_URL="$(url copied)"
load "recording check, sled" back
load "recording check, postgres, one daemon" pg1
load "recording check, postgres, two daemons" pg1 pg2

#!/usr/bin/env bash
# Peer figures for benches/run.sh: loads the same consent CSV into PostgreSQL (`\copy`) and SQLite
# (`.import`) and prints, per peer, the wall time of the load alone and the row count it then holds.
# Usage: benches/peers.sh FILE.csv   (columns phone,channel,consent,created_at,updated_at + header)
#
# Both peers get consentd's shape: primary key (phone, channel) like its number+usage key, plus an
# index on created_at like its creation-time index, both created before the load. Plain \copy into
# the keyed table is honest here because gen_consents.py never repeats a (phone, channel) pair (its
# number is (i*7919) mod 89,999,999 with 7919 coprime to the modulus, so phones are unique for
# N < 90M); a file with duplicates makes the peer fail on the key rather than silently drop rows.
# Durability stays comparable to consentd, which flushes to disk at the end: PostgreSQL keeps
# fsync=on and synchronous_commit=on (COPY's commit waits for the WAL flush); SQLite keeps its
# default rollback journal with synchronous=FULL, and .import runs as one transaction.
# Bulk-load settings, moderately raised: PostgreSQL shared_buffers 256MB (default 128MB) and
# max_wal_size 2GB (default 1GB, so a 1M-row load does not force extra checkpoints); SQLite page
# cache 256 MiB (default 2 MiB) to match. The private PostgreSQL cluster (initdb, unix socket only,
# run as the postgres OS user when we are root) is started and stopped outside the timed part.
# A peer that fails prints `peer <name>: failed (<reason>)` and no figure; the exit status is then 1.
# Override PG_BIN / SQLITE to point at other binaries.
set -euo pipefail
[ $# -eq 1 ] && [ -r "$1" ] || { echo "usage: $0 FILE.csv" >&2; exit 2; }
FILE=$(realpath "$1")
EXPECT=$(($(wc -l < "$FILE") - 1))   # data rows (the generator writes no embedded newlines)
PG_BIN=${PG_BIN:-/usr/lib/postgresql/15/bin}
SQLITE=${SQLITE:-/usr/bin/sqlite3}
SCHEMA='create table consents(phone text, channel text, consent boolean, created_at timestamptz,
  updated_at timestamptz, primary key (phone, channel));
create index consents_created_at on consents(created_at);'
WORK=$(mktemp -d)
chmod 755 "$WORK"
PGDATA=$WORK/pg RUN=$WORK/run FAILED=0

# shellcheck source=benches/pg_cluster.sh
. "$(dirname "$0")/pg_cluster.sh"
trap 'pg_stop; rm -rf "$WORK"' EXIT
trap 'exit 130' INT TERM

now() { date +%s.%N; }
# figure NAME T0 T1 ROWS: checks ROWS against the file, then prints the line (run.sh's column layout).
figure() {
  [ "$4" -eq "$EXPECT" ] || { echo "loaded $4 of $EXPECT rows" >&2; exit 1; }
  awk -v n="peer $1" -v t0="$2" -v t1="$3" -v r="$4" 'BEGIN {
    t = t1 - t0; s = sprintf("%.0f", r / t); for (rate = ""; length(s) > 3; s = substr(s, 1, length(s) - 3))
      rate = "," substr(s, length(s) - 2) rate; rate = s rate
    printf "%-28s %7.2f s  %12s records/s  rows %d\n", n, t, rate, r }'
}

peer_pg() {
  [ -x "$PG_BIN/postgres" ] && [ -x "$PG_BIN/psql" ] || { echo "no PostgreSQL binaries in $PG_BIN" >&2; exit 1; }
  pg_start bench || exit 1
  cd "$WORK"
  psql() { "$PG_BIN/psql" -X -q -v ON_ERROR_STOP=1 -h "$RUN" -U bench -d postgres "$@"; }
  psql -c "$SCHEMA"
  t0=$(now)
  psql -c "\\copy consents FROM '${FILE//\'/\'\'}' WITH (FORMAT csv, HEADER true)"
  t1=$(now)
  rows=$(psql -At -c 'select count(*) from consents')
  figure "$1" "$t0" "$t1" "$rows"
}

peer_sqlite() {
  [ -x "$SQLITE" ] || { echo "no sqlite3 at $SQLITE" >&2; exit 1; }
  db=$WORK/sqlite.db
  "$SQLITE" -bail "$db" "$SCHEMA"
  t0=$(now)
  "$SQLITE" -bail "$db" 'pragma cache_size = -262144' .mode\ csv ".import --skip 1 '$FILE' consents"
  t1=$(now)
  rows=$("$SQLITE" -bail "$db" 'select count(*) from consents')
  figure "$1" "$t0" "$t1" "$rows"
}

# Runs a peer in a subshell with errexit in force; on failure prints the reason instead of a figure.
run_peer() {
  local name=$1 rc reason
  set +e
  ( set -e; "$2" "$name" ) 2>"$WORK/err"
  rc=$?
  set -e
  if [ "$rc" -ne 0 ]; then
    reason=$(grep -m 1 -E 'ERROR|FATAL|[Ee]rror' "$WORK/err" || grep -v '^\s*$' "$WORK/err" | tail -n 1 || true)
    echo "peer $name: failed (${reason:0:100})"
    FAILED=1
  fi
}

run_peer 'postgresql 15 \copy' peer_pg
pg_stop
run_peer 'sqlite3 .import' peer_sqlite
exit "$FAILED"

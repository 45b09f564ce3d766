#!/usr/bin/env bash
# The PostgreSQL store's figures (benches/pg_store.rs): starts a private PostgreSQL (initdb into a temp
# dir, Unix socket only: pg_cluster.sh, as peers.sh), runs the bench against it
# and stops it. Usage: benches/pg.sh [N]. Prints figures only; nothing here passes or fails. The
# bench's own CPU time is printed last: what is not in it is the server's.
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-1000000}
PG_BIN=${PG_BIN:-$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1)}
WORK=$(mktemp -d)
chmod 755 "$WORK"
PGDATA=$WORK/pg RUN=$WORK/run
# shellcheck source=benches/pg_cluster.sh
. benches/pg_cluster.sh
trap 'pg_stop; rm -rf "$WORK"' EXIT
cargo build --release --quiet --bench pg_store
pg_start bench
echo "PostgreSQL $("$PG_BIN/postgres" --version | awk '{print $3}'), $N consents"
CONSENTD_DATABASE_URL="host=$RUN user=bench dbname=postgres" /usr/bin/time -f "client user %U s, sys %S s, wall %e s" $(ls -t target/release/deps/pg_store-* | grep -v "\.d$" | head -n 1) "$N"

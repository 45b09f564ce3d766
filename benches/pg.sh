#!/usr/bin/env bash
# The PostgreSQL store's figures (benches/pg_store.rs): starts a private PostgreSQL (initdb into a temp
# dir, Unix socket only, as the postgres OS user when we are root; the same settings as peers.sh:
# fsync and synchronous_commit on, shared_buffers 256MB, max_wal_size 2GB), runs the bench against it
# and stops it. Usage: benches/pg.sh [N]. Prints figures only; nothing here passes or fails. The
# bench's own CPU time is printed last: what is not in it is the server's.
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-1000000}
PG_BIN=${PG_BIN:-$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1)}
WORK=$(mktemp -d)
chmod 755 "$WORK"
PGDATA=$WORK/pg RUN=$WORK/run
as_pg() { if [ "$(id -u)" -eq 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
pg_stop() { [ -f "$PGDATA/postmaster.pid" ] && as_pg "$PG_BIN/pg_ctl" -D "$PGDATA" -m fast stop >/dev/null 2>&1 || true; }
trap 'pg_stop; rm -rf "$WORK"' EXIT
cargo build --release --quiet --bench pg_store
mkdir -m 700 "$PGDATA" "$RUN"
[ "$(id -u)" -ne 0 ] || chown postgres: "$PGDATA" "$RUN"
(cd "$WORK" && as_pg "$PG_BIN/initdb" -D "$PGDATA" -U bench --auth=trust -E UTF8 --locale=C >"$RUN/initdb.log")
cat >> "$PGDATA/postgresql.conf" <<CONF
listen_addresses = ''
unix_socket_directories = '$RUN'
fsync = on
synchronous_commit = on
shared_buffers = 256MB
max_wal_size = 2GB
CONF
(cd "$WORK" && as_pg "$PG_BIN/pg_ctl" -D "$PGDATA" -l "$RUN/server.log" -w start >/dev/null)
echo "PostgreSQL $("$PG_BIN/postgres" --version | awk '{print $3}'), $N consents"
CONSENTD_DATABASE_URL="host=$RUN user=bench dbname=postgres" /usr/bin/time -f "client user %U s, sys %S s, wall %e s" $(ls -t target/release/deps/pg_store-* | grep -v "\.d$" | head -n 1) "$N"

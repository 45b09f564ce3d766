# A private PostgreSQL server for the benchmarks (sourced by peers.sh and pg.sh): initdb into $PGDATA,
# a Unix socket in $RUN only, run as the postgres OS user when we are root, with the bulk-load
# settings both use: fsync and synchronous_commit on, shared_buffers 256MB (default 128MB),
# max_wal_size 2GB (default 1GB, so a 1M-row load does not force extra checkpoints).
# Needs PG_BIN, PGDATA, RUN set; `pg_start USER` starts it with a trust superuser USER, `pg_stop`
# stops it.
as_pg() { if [ "$(id -u)" -eq 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
pg_stop() { [ -f "$PGDATA/postmaster.pid" ] && as_pg "$PG_BIN/pg_ctl" -D "$PGDATA" -m fast stop >/dev/null 2>&1 || true; }
pg_start() {
  mkdir -m 700 "$PGDATA" "$RUN"
  [ "$(id -u)" -ne 0 ] || chown postgres: "$PGDATA" "$RUN"
  (cd "$RUN" && as_pg "$PG_BIN/initdb" -D "$PGDATA" -U "$1" --auth=trust -E UTF8 --locale=C >"$RUN/initdb.log") \
    || { tail -n 3 "$RUN/initdb.log" >&2; return 1; }
  cat >> "$PGDATA/postgresql.conf" <<CONF
listen_addresses = ''
unix_socket_directories = '$RUN'
fsync = on
synchronous_commit = on
shared_buffers = 256MB
max_wal_size = 2GB
CONF
  (cd "$RUN" && as_pg "$PG_BIN/pg_ctl" -D "$PGDATA" -l "$RUN/server.log" -w start >/dev/null) \
    || { grep -E 'FATAL|ERROR' "$RUN/server.log" | tail -n 1 >&2; return 1; }
}

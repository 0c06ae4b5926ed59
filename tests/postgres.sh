#!/usr/bin/env bash
# A throwaway PostgreSQL for the tests, on loopback, with its own data directory, user,
# database and port. Nothing else on the machine is touched.
#
#   bash tests/postgres.sh start DIR PORT   # init (first time) and start; prints the URL
#   bash tests/postgres.sh restart DIR [S]  # pg_ctl stop, S seconds down (default 0), start
#                                           # (by its data directory; fault tests)
#   bash tests/postgres.sh stop DIR         # stop the server whose pid is in DIR (by PID)
#
# Run as root (CI), the server runs as the `postgres` system user (PostgreSQL refuses root).
# With PG_TLS_DIR (holding server.crt and server.key) the server speaks TLS and accepts TCP
# connections only over it (hostssl).
set -euo pipefail

bindir() {
  if command -v pg_ctl >/dev/null 2>&1 && [ -x "$(dirname "$(readlink -f "$(command -v pg_ctl)")")/initdb" ]; then
    dirname "$(readlink -f "$(command -v pg_ctl)")"
    return
  fi
  local d
  d=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1 || true)
  [ -n "$d" ] || { echo "postgres.sh: PostgreSQL is not installed (bash .ci/deps.sh)" >&2; exit 1; }
  echo "$d"
}

as_owner() {
  if [ "$(id -u)" -eq 0 ]; then
    runuser -u postgres -- "$@"
  else
    "$@"
  fi
}

cmd=${1:?start|stop}
dir=${2:?data dir}
case "$cmd" in
  start)
    port=${3:?port}
    bin=$(bindir)
    mkdir -p "$dir"
    if [ "$(id -u)" -eq 0 ]; then chown postgres "$dir"; fi
    if [ ! -f "$dir/data/PG_VERSION" ]; then
      echo tollgate-test > "$dir/pw"
      if [ "$(id -u)" -eq 0 ]; then chown postgres "$dir/pw"; fi
      as_owner "$bin/initdb" -D "$dir/data" -U tollgate --pwfile="$dir/pw" \
        --auth-local=scram-sha-256 --auth-host=scram-sha-256 -E UTF8 --no-sync >"$dir/initdb.log" 2>&1 \
        || { cat "$dir/initdb.log" >&2; exit 1; }
      cat >>"$dir/data/postgresql.conf" <<EOF
listen_addresses = '127.0.0.1'
port = $port
unix_socket_directories = '$dir'
fsync = off
synchronous_commit = off
full_page_writes = off
max_connections = 200
shared_buffers = 64MB
log_min_messages = warning
EOF
      if [ -n "${PG_TLS_DIR:-}" ]; then
        cp "$PG_TLS_DIR/server.crt" "$PG_TLS_DIR/server.key" "$dir/data/"
        chmod 600 "$dir/data/server.key"
        if [ "$(id -u)" -eq 0 ]; then chown postgres "$dir/data/server.crt" "$dir/data/server.key"; fi
        printf "ssl = on\nssl_cert_file = 'server.crt'\nssl_key_file = 'server.key'\n" >>"$dir/data/postgresql.conf"
        printf "local all all scram-sha-256\nhostssl all all 127.0.0.1/32 scram-sha-256\n" >"$dir/data/pg_hba.conf"
      fi
    fi
    if [ -n "${PG_TLS_DIR:-}" ]; then export PGSSLMODE=require; fi
    as_owner "$bin/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 60 start >/dev/null \
      || { tail -20 "$dir/server.log" >&2; exit 1; }
    if ! PGPASSWORD=tollgate-test "$bin/psql" -h 127.0.0.1 -p "$port" -U tollgate -d postgres -tAc \
        "SELECT 1 FROM pg_database WHERE datname = 'tollgate'" | grep -q 1; then
      PGPASSWORD=tollgate-test "$bin/psql" -h 127.0.0.1 -p "$port" -U tollgate -d postgres -qc \
        "CREATE DATABASE tollgate" >/dev/null
    fi
    echo "postgres://tollgate:tollgate-test@127.0.0.1:$port/tollgate?sslmode=disable"
    ;;
  restart)
    bin=$(bindir)
    as_owner "$bin/pg_ctl" -D "$dir/data" -m fast -w -t 60 stop >/dev/null
    sleep "${3:-0}"
    as_owner "$bin/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 60 start >/dev/null \
      || { tail -20 "$dir/server.log" >&2; exit 1; }
    ;;
  stop)
    pidfile="$dir/data/postmaster.pid"
    [ -f "$pidfile" ] || exit 0
    pid=$(head -1 "$pidfile")
    # SIGINT: PostgreSQL's fast shutdown. Only the server we started, by its PID.
    kill -INT "$pid" 2>/dev/null || exit 0
    for _ in $(seq 1 100); do
      kill -0 "$pid" 2>/dev/null || exit 0
      sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null || true
    ;;
  *)
    echo "usage: postgres.sh start DIR PORT | restart DIR | stop DIR" >&2
    exit 2
    ;;
esac

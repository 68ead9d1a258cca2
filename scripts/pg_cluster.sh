#!/usr/bin/env bash
# A throwaway PostgreSQL server for kdgat's tests and demos (Debian's postgresql-15 binaries), on 127.0.0.1.
#
#   scripts/pg_cluster.sh start DIR [PORT]   initdb (once) and start; prints `export KDGAT_PG_URI=postgresql://...`
#   scripts/pg_cluster.sh replica DIR PRIMARY_DIR [PORT]
#                                            a hot-standby replica of the server in PRIMARY_DIR (pg_basebackup -R,
#                                            streaming), started in DIR; stop it with `stop DIR`
#   scripts/pg_cluster.sh stop DIR           stop only the server this script started (by its recorded pid)
#   scripts/pg_cluster.sh status DIR         exit 0 when the recorded server is alive
#   scripts/pg_cluster.sh env DIR            print the export line again
#
# The superuser is `postgres` with trust authentication on loopback only; a role `mlflow` (password `mlflow`) owns a
# database `mlflow`. PORT defaults to a free port. As root, initdb and the server run as the `postgres` user (initdb
# refuses root). $DIR/pid records the postmaster's pid; `stop` signals that pid only. Facts: ../shared/notes/postgres.md.
set -euo pipefail

# The server inherits the caller's open descriptors (a pytest pipe would never close): drop them.
for fd_path in /proc/$$/fd/*; do
  fd=${fd_path##*/}
  case "$fd" in 0|1|2|255) ;; *) eval "exec ${fd}>&-" 2>/dev/null || true ;; esac
done

ACTION=${1:-status}
STATE=${2:?usage: pg_cluster.sh start|replica|stop|status|env DIR [PORT]}
PGBIN=${KDGAT_PGBIN:-$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)}
log() { echo "pg_cluster: $*" >&2; }
die() { log "$*"; exit 1; }
[[ -x $PGBIN/postgres ]] || die "no PostgreSQL server binaries (apt-get install postgresql)"

as_pg() { if [[ $(id -u) == 0 ]]; then runuser -u postgres -- "$@"; else "$@"; fi; }

alive() {  # alive PID: the pid exists and runs postgres
  local comm
  comm=$(cat "/proc/$1/comm" 2>/dev/null) || return 1
  [[ $comm == postgres* ]]
}

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}

print_env() { echo "export KDGAT_PG_URI=postgresql://mlflow:mlflow@127.0.0.1:$(cat "$STATE/port")/mlflow"; }

case "$ACTION" in
  start)
    mkdir -p "$STATE"
    if [[ -s $STATE/pid ]] && alive "$(cat "$STATE/pid")"; then print_env; exit 0; fi
    [[ $(id -u) == 0 ]] && chown postgres:postgres "$STATE"
    PORT=${3:-$(free_port)}
    echo "$PORT" > "$STATE/port"
    if [[ ! -s $STATE/data/PG_VERSION ]]; then
      as_pg "$PGBIN/initdb" -D "$STATE/data" -U postgres -A trust -E UTF8 --locale=C --no-sync >"$STATE/initdb.log" 2>&1 \
        || die "initdb failed; see $STATE/initdb.log"
      # loopback only, password login for the other roles (trust for the superuser kept local to this dir)
      cat > "$STATE/data/pg_hba.conf" <<EOF
local all postgres trust
host all postgres 127.0.0.1/32 trust
host all all 127.0.0.1/32 scram-sha-256
host replication postgres 127.0.0.1/32 trust
EOF
      NEW=1
    fi
    as_pg "$PGBIN/pg_ctl" -D "$STATE/data" -l "$STATE/server.log" -w -t 30 \
      -o "-c listen_addresses=127.0.0.1 -p $PORT -k $STATE -c fsync=off -c max_connections=200 -c wal_level=replica" start >/dev/null \
      || die "the server did not start; see $STATE/server.log"
    head -1 "$STATE/data/postmaster.pid" > "$STATE/pid"
    if [[ ${NEW:-0} == 1 ]]; then
      as_pg "$PGBIN/psql" -q -h 127.0.0.1 -p "$PORT" -U postgres -d postgres \
        -c "CREATE ROLE mlflow LOGIN PASSWORD 'mlflow'" -c "CREATE DATABASE mlflow OWNER mlflow" >/dev/null
    fi
    print_env
    ;;
  replica)
    PRIMARY=${3:?usage: pg_cluster.sh replica DIR PRIMARY_DIR [PORT]}
    [[ -s $PRIMARY/pid ]] && alive "$(cat "$PRIMARY/pid")" || die "no server running in $PRIMARY"
    mkdir -p "$STATE"
    if [[ -s $STATE/pid ]] && alive "$(cat "$STATE/pid")"; then print_env; exit 0; fi
    [[ $(id -u) == 0 ]] && chown postgres:postgres "$STATE"
    PORT=${4:-$(free_port)}
    echo "$PORT" > "$STATE/port"
    if [[ ! -s $STATE/data/PG_VERSION ]]; then
      # -R writes standby.signal and primary_conninfo: the copy starts as a streaming hot standby
      as_pg "$PGBIN/pg_basebackup" -h 127.0.0.1 -p "$(cat "$PRIMARY/port")" -U postgres -D "$STATE/data" \
        -R -X stream -c fast --no-sync >"$STATE/basebackup.log" 2>&1 || die "pg_basebackup failed; see $STATE/basebackup.log"
    fi
    # max_connections must be at least the primary's; feedback keeps the primary's vacuum from cancelling our reads
    as_pg "$PGBIN/pg_ctl" -D "$STATE/data" -l "$STATE/server.log" -w -t 30 \
      -o "-c listen_addresses=127.0.0.1 -p $PORT -k $STATE -c fsync=off -c max_connections=200 -c hot_standby=on \
          -c hot_standby_feedback=on" start >/dev/null \
      || die "the replica did not start; see $STATE/server.log"
    head -1 "$STATE/data/postmaster.pid" > "$STATE/pid"
    print_env
    ;;
  stop)
    [[ -s $STATE/pid ]] || exit 0
    pid=$(cat "$STATE/pid")
    if alive "$pid"; then
      kill -INT "$pid"  # fast shutdown of this postmaster only
      for _ in $(seq 100); do alive "$pid" || break; sleep 0.1; done
      alive "$pid" && kill -QUIT "$pid"
    fi
    rm -f "$STATE/pid"
    ;;
  status)
    [[ -s $STATE/pid ]] && alive "$(cat "$STATE/pid")"
    ;;
  env) print_env ;;
  *) die "unknown action $ACTION (start|replica|stop|status|env)" ;;
esac

# bench/cluster.sh -- throwaway PostgreSQL 15 cluster for the mq benchmarks.
# Sourced by run.sh and explain.sh; not meant to be run directly.
#
# cluster_start [extra postgresql.conf lines...]
#     initdb in a fresh mktemp directory as the `postgres` OS user (initdb and
#     postgres refuse to run as root), start it on $PORT with a unix socket in
#     that directory only (no TCP), create database "bench".
# cluster_stop
#     stop the server and remove the directory (installed as an EXIT trap).
# q SQL...   run SQL through psql in database bench, unaligned, tuples only.

PGBIN=${PGBIN:-/usr/lib/postgresql/15/bin}
PORT=${PORT:-55434}
PGUSER_OS=postgres

CLUSTER_DIR=
PGDATA_DIR=
SOCK_DIR=

cluster_start() {
    CLUSTER_DIR=$(mktemp -d /tmp/mq-bench.XXXXXX)
    PGDATA_DIR=$CLUSTER_DIR/data
    SOCK_DIR=$CLUSTER_DIR
    chown "$PGUSER_OS": "$CLUSTER_DIR"
    chmod 0755 "$CLUSTER_DIR"
    runuser -u "$PGUSER_OS" -- "$PGBIN/initdb" -D "$PGDATA_DIR" -U postgres \
        --auth=trust --encoding=UTF8 --locale=C.UTF-8 >"$CLUSTER_DIR/initdb.log" 2>&1 \
        || { cat "$CLUSTER_DIR/initdb.log" >&2; return 1; }
    {
        echo "port = $PORT"
        echo "listen_addresses = ''"
        echo "unix_socket_directories = '$SOCK_DIR'"
        echo "max_connections = 40"
        echo "shared_buffers = 256MB"
        echo "effective_cache_size = 4GB"
        echo "work_mem = 16MB"
        echo "maintenance_work_mem = 256MB"
        echo "wal_buffers = 16MB"
        # Checkpoints only when run.sh asks for one (before every measured run).
        echo "max_wal_size = 16GB"
        echo "min_wal_size = 1GB"
        echo "checkpoint_timeout = 30min"
        # Durable commits as in production: fsync and synchronous_commit stay on.
        echo "synchronous_commit = on"
        echo "jit = off"
        # autovacuum keeps its defaults (a queue has to live with it); log what it does.
        echo "log_autovacuum_min_duration = 0"
        echo "log_line_prefix = '%m [%p] %a '"
        for line in "$@"; do echo "$line"; done
    } >>"$PGDATA_DIR/postgresql.conf"
    runuser -u "$PGUSER_OS" -- "$PGBIN/pg_ctl" -D "$PGDATA_DIR" -l "$CLUSTER_DIR/server.log" \
        -w -t 60 start >/dev/null || { cat "$CLUSTER_DIR/server.log" >&2; return 1; }
    "$PGBIN/createdb" -h "$SOCK_DIR" -p "$PORT" -U postgres bench
}

cluster_stop() {
    [ -n "$PGDATA_DIR" ] || return 0
    if [ -f "$PGDATA_DIR/postmaster.pid" ]; then
        runuser -u "$PGUSER_OS" -- "$PGBIN/pg_ctl" -D "$PGDATA_DIR" -m immediate -w stop >/dev/null 2>&1
    fi
    rm -rf "$CLUSTER_DIR"
    PGDATA_DIR=
}

q() {
    "$PGBIN/psql" -h "$SOCK_DIR" -p "$PORT" -U postgres -d bench -X -q -At -v ON_ERROR_STOP=1 "$@"
}

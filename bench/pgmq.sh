#!/usr/bin/env bash
# bench/pgmq.sh -- mq's pgmq-compatible API (CREATE EXTENSION mq_pgmq) against
# real pgmq, the same pgbench scripts in two databases of one cluster.
#
# usage: bench/pgmq.sh --pgmq-sql FILE [--seconds S] [--rounds R]
#
#   --pgmq-sql FILE  pgmq's install script, pgmq-extension/sql/pgmq.sql of a
#                    clone of github.com/pgmq/pgmq (pgmq is plain SQL: it is
#                    run with psql into database "pgmq", not shipped here)
#   --seconds S      seconds per run (default 10)
#   --rounds R       interleaved rounds per workload, median reported (default 3)
#
# Workloads (8 clients, pgbench -M prepared, payload ~100 bytes):
#   send          pgmq.send, one message per transaction (pgmq_send.sql)
#   read+delete   pgmq.read 1 + pgmq.delete in one statement (pgmq_read_delete.sql)
#                 on a queue of FILL messages
#   read+archive  the same with pgmq.archive (pgmq_read_archive.sql)
#   delayed head  read+delete behind HEAD messages sent with a 1-hour delay
#                 (pgmq keeps one table ordered by msg_id; mq a delayed table)
# Each round runs both sides on freshly created queues; ratio = mq_pgmq / pgmq.
# Install mq first (make install); run as root (the cluster runs as postgres).
set -eu -o pipefail
shopt -s inherit_errexit

HERE=$(cd "$(dirname "$0")" && pwd)
. "$HERE/lib.sh"
PORT=${PORT:-55446}
. "$HERE/cluster.sh"

PGMQ_SQL=
SECS=10
ROUNDS=3
FILL=${FILL:-200000}
HEAD=${HEAD:-100000}
while [ $# -gt 0 ]; do
    case "$1" in
        --pgmq-sql) PGMQ_SQL=$2; shift ;;
        --seconds) SECS=$2; shift ;;
        --rounds) ROUNDS=$2; shift ;;
        -h|--help) sed -n '2,22p' "$0"; exit 0 ;;
        *) echo "unknown argument: $1 (see --help)" >&2; exit 2 ;;
    esac
    shift
done
[ -r "$PGMQ_SQL" ] || { echo "bench/pgmq.sh: --pgmq-sql FILE (pgmq's pgmq-extension/sql/pgmq.sql) is required" >&2; exit 2; }

PAYLOAD='{"template":"welcome","user_id":123456789,"email":"ana.example@example.com","locale":"en-US","n":1}'
RES=$HERE/results/pgmq-$(date -u +%Y%m%dT%H%M%SZ)
mkdir -p "$RES"
trap 'cluster_stop' EXIT
cluster_start "shared_preload_libraries = 'mq'"

# db DATABASE SQL...: psql in another database of the cluster
db() { local d=$1; shift; "$PGBIN/psql" -h "$SOCK_DIR" -p "$PORT" -U postgres -d "$d" -X -q -At -v ON_ERROR_STOP=1 "$@"; }
"$PGBIN/createdb" -h "$SOCK_DIR" -p "$PORT" -U postgres pgmq
db pgmq -f "$PGMQ_SQL" >/dev/null
db bench -c "CREATE EXTENSION mq" -c "CREATE EXTENSION mq_pgmq"
PGMQ_VERSION=$(grep -m1 -o "default_version = '[^']*'" "$(dirname "$PGMQ_SQL")/../pgmq.control" 2>/dev/null || echo "version unknown")

# fresh DATABASE READY DELAYED: queue bench with DELAYED messages 1 hour out, then READY ones
fresh() {
    db "$1" -c "SELECT pgmq.drop_queue('bench')" >/dev/null 2>&1 || true
    db "$1" -c "SELECT pgmq.create('bench')" >/dev/null
    db "$1" -v payload="$PAYLOAD" -v ready="$2" -v delayed="$3" >/dev/null <<'SQL'
SELECT pgmq.send_batch('bench', array_agg(:'payload'::jsonb), 3600)
  FROM generate_series(1, :delayed) g GROUP BY g / 10000;
SELECT pgmq.send_batch('bench', array_agg(:'payload'::jsonb))
  FROM generate_series(1, :ready) g GROUP BY g / 10000;
VACUUM ANALYZE;
CHECKPOINT;
SQL
}

# run DATABASE SCRIPT LABEL: 8 clients for SECS; echoes tps
run() {
    "$PGBIN/pgbench" -h "$SOCK_DIR" -p "$PORT" -U postgres -n -M prepared -c 8 -j 2 -T "$SECS" \
        -D payload="$PAYLOAD" -f "$HERE/$2" "$1" >"$RES/$3.log" 2>&1 || { echo ERR; return; }
    tps_of "$RES/$3.log"
}

{
    echo "mq_pgmq vs pgmq ($PGMQ_VERSION), started $(date -u '+%Y-%m-%d %H:%M') UTC, $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg)"
    echo "8 clients, pgbench -M prepared, ${SECS}s per run, $ROUNDS interleaved rounds (median tps); fsync and synchronous_commit on"
    printf '%-44s %10s %10s %7s\n' workload pgmq mq_pgmq ratio
} | tee "$RES/summary.txt"
for w in "send:pgmq_send.sql:0:0" "read+delete:pgmq_read_delete.sql:$FILL:0" \
         "read+archive:pgmq_read_archive.sql:$FILL:0" \
         "read+delete, $HEAD delayed ahead:pgmq_read_delete.sql:$FILL:$HEAD"; do
    IFS=: read -r name script ready delayed <<<"$w"
    A=() B=()
    for r in $(seq "$ROUNDS"); do
        for side in pgmq bench; do
            fresh $side "$ready" "$delayed"
            t=$(run $side "$script" "${name// /_}-$side-$r")
            log "$name $side round $r: $t tps"
            if [ $side = pgmq ]; then A+=("$t"); else B+=("$t"); fi
        done
    done
    a=$(median "${A[@]}"); b=$(median "${B[@]}")
    printf '%-44s %10s %10s %7s\n' "$name" "$a" "$b" "$(ratio "$a" "$b")" | tee -a "$RES/summary.txt"
done
echo "raw pgbench output: $RES" | tee -a "$RES/summary.txt"

#!/usr/bin/env bash
# bench/profile.sh -- where does mq spend its time? (for investigating a missed target)
#
# usage: bench/profile.sh [--seconds S] [1|2|2b|3|4|b1|b2|b3|b4]...   (default: 1 2 3, 10 s each)
#
# Starts a throwaway cluster like run.sh, but with pg_stat_statements
# (track = all, so the SQL that mq runs internally through SPI is counted too)
# and auto_explain (log_nested_statements, log_analyze, buffers).  For each
# workload it runs the mq pgbench script for S seconds (8 clients), prints the
# statements that took the most time, then runs the operation a few times in
# one session with auto_explain on and prints the plans of the nested
# statements from the server log.  Workload 4 profiles workload 2 while a
# REPEATABLE READ snapshot is held.  b1..b4 profile the baseline (plain
# table) script of the same workload, for comparison (blocks per call etc.).
# Needs `make install` like run.sh.
# Output is kept in bench/results/profile-<UTC timestamp>/.
set -eu -o pipefail
shopt -s inherit_errexit

HERE=$(cd "$(dirname "$0")" && pwd)
. "$HERE/cluster.sh"

SECS=10
WORKLOADS=()
while [ $# -gt 0 ]; do
    case "$1" in
        --seconds) SECS=$2; shift ;;
        -h|--help) sed -n '2,14p' "$0"; exit 0 ;;
        *) WORKLOADS+=("$1") ;;
    esac
    shift
done
[ ${#WORKLOADS[@]} -gt 0 ] || WORKLOADS=(1 2 3)

PAYLOAD='{"template":"welcome","user_id":123456789,"email":"ana.example@example.com","locale":"en-US","n":1}'
RES=$HERE/results/profile-$(date -u +%Y%m%dT%H%M%SZ)
mkdir -p "$RES"
HOLDER_PID=
trap '[ -n "$HOLDER_PID" ] && kill $HOLDER_PID 2>/dev/null; [ -n "$PGDATA_DIR" ] && cp "$CLUSTER_DIR/server.log" "$RES/" 2>/dev/null; cluster_stop' EXIT

cluster_start "shared_preload_libraries = 'pg_stat_statements,auto_explain,mq'" "mq.database = 'bench'" \
    "pg_stat_statements.track = all" \
    "pg_stat_statements.max = 2000" \
    "auto_explain.log_nested_statements = on" \
    "auto_explain.log_analyze = on" \
    "auto_explain.log_buffers = on" \
    "auto_explain.log_min_duration = -1"
q -c "CREATE EXTENSION pg_stat_statements"
q -c "CREATE EXTENSION mq"
q -c "CREATE TABLE baseline(id bigserial primary key, payload jsonb not null,
                            created_at timestamptz not null default clock_timestamp())"

prefill() {
    if [ "$2" = baseline ]; then
        q -c "TRUNCATE baseline RESTART IDENTITY"
        q -v payload="$PAYLOAD" -v n="$1" <<<"INSERT INTO baseline(payload) SELECT :'payload'::jsonb FROM generate_series(1, :n)"
        q -c "VACUUM ANALYZE"
        return
    fi
    q -c "SELECT mq.drop_queue('bench')" >/dev/null
    q -c "SELECT mq.create_queue('bench', notify => false)" >/dev/null
    q -v payload="$PAYLOAD" -v n="$1" <<'SQL'
SELECT set_config('bench.payload', :'payload', false), set_config('bench.n', :'n', false) \g /dev/null
DO $$
DECLARE n int := current_setting('bench.n')::int; p jsonb := current_setting('bench.payload')::jsonb; done int := 0;
BEGIN
    WHILE done < n LOOP
        PERFORM mq.send_batch('bench', array_fill(p, ARRAY[least(10000, n - done)]));
        done := done + least(10000, n - done);
    END LOOP;
END $$;
SQL
    q -c "VACUUM ANALYZE"
}

top_statements() {
    q -F ' | ' -c "SELECT round(total_exec_time::numeric, 0) AS ms,
                          round((100 * total_exec_time / sum(total_exec_time) OVER ())::numeric, 1) AS pct,
                          calls, round(mean_exec_time::numeric, 4) AS mean_ms,
                          round(rows::numeric / greatest(calls, 1), 1) AS rows_per_call,
                          shared_blks_hit + shared_blks_read AS blks,
                          regexp_replace(left(query, 160), '\s+', ' ', 'g')
                     FROM pg_stat_statements
                    WHERE dbid = (SELECT oid FROM pg_database WHERE datname = 'bench')
                      AND query !~* 'pg_stat_statements|pg_stat_activity|VACUUM|CHECKPOINT'
                    ORDER BY total_exec_time DESC LIMIT 12"
}

# explain_calls SQL: run SQL 3 times in one session with auto_explain on; print the plans
explain_calls() {
    local before; before=$(wc -l <"$CLUSTER_DIR/server.log")
    q <<SQL >/dev/null
SET auto_explain.log_min_duration = 0;
$1;
$1;
$1;
SQL
    sleep 0.5
    tail -n +"$((before + 1))" "$CLUSTER_DIR/server.log" | sed -n '/duration: .* plan:/,$p' | tail -n 80
}

for w in "${WORKLOADS[@]}"; do
    case "$w" in
        1) script=send_mq.sql; n=0; op="SELECT mq.send('bench', '$PAYLOAD'::jsonb)" ;;
        2|4) script=read1_mq.sql; n=$(( SECS * 30000 )); op="SELECT mq.ack('bench', m.msg_id) FROM mq.read('bench', 1) m" ;;
        2b) script=read1_mq_2stmt.sql; n=$(( SECS * 30000 )); op="SELECT mq.ack('bench', m.msg_id) FROM mq.read('bench', 1) m" ;;
        3) script=read100_mq.sql; n=$(( SECS * 250000 )); op="SELECT mq.ack('bench', array_agg(m.msg_id)) FROM mq.read('bench', 100) m" ;;
        b1) script=send_baseline.sql; n=0; op="INSERT INTO baseline(payload) VALUES ('$PAYLOAD'::jsonb)" ;;
        b2|b4) script=read1_baseline.sql; n=$(( SECS * 30000 )); op=$(grep -v '^--' "$HERE/$script" | tr '\n' ' ' | sed 's/; *$//') ;;
        b3) script=read100_baseline.sql; n=$(( SECS * 250000 )); op=$(grep -v '^--' "$HERE/$script" | tr '\n' ' ' | sed 's/; *$//') ;;
        *) echo "unknown workload $w" >&2; exit 2 ;;
    esac
    {
        echo "=== workload $w: $script, ${SECS}s, 8 clients"
        case "$w" in b*) prefill "$n" baseline ;; *) prefill "$n" mq ;; esac
        if [ "$w" = 4 ] || [ "$w" = b4 ]; then
            PGAPPNAME=mq-bench-holder "$PGBIN/psql" -h "$SOCK_DIR" -p "$PORT" -U postgres -d bench -X -q \
                -c "BEGIN ISOLATION LEVEL REPEATABLE READ" -c "SELECT 1 FROM baseline LIMIT 1" \
                -c "SELECT pg_sleep($((SECS + 30)))" >/dev/null 2>&1 &
            HOLDER_PID=$!
            sleep 1
        fi
        q -c "SELECT pg_stat_statements_reset()" >/dev/null
        "$PGBIN/pgbench" -h "$SOCK_DIR" -p "$PORT" -U postgres -n -M prepared -c 8 -j 2 -T "$SECS" \
            -D payload="$PAYLOAD" -f "$HERE/$script" bench 2>&1 | grep -E '^(tps|number of failed|latency average)'
        echo "--- top statements (pg_stat_statements, track=all): ms | % | calls | mean ms | rows/call | blocks | query"
        top_statements
        echo "--- auto_explain of the nested statements of: $op"
        explain_calls "$op"
        if [ -n "$HOLDER_PID" ]; then
            q -c "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = 'mq-bench-holder'" >/dev/null
            wait "$HOLDER_PID" 2>/dev/null || true; HOLDER_PID=
        fi
        echo
    } 2>&1 | tee -a "$RES/profile.txt"
done
echo "kept in $RES"

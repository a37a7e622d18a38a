# bench/lib.sh: helpers shared by the bench scripts (sourced).

# median of the arguments (ERR values are ignored)
median() {
    printf '%s\n' "$@" | { grep -v ERR || true; } | sort -g |
        awk '{a[NR]=$1} END{ if (NR==0) print "ERR";
             else if (NR%2) printf "%.1f\n", a[(NR+1)/2];
             else printf "%.1f\n", (a[NR/2]+a[NR/2+1])/2 }'
}

# ratio A B: B/A with two decimals, "-" when either is missing or A is 0
ratio() {
    if [ "$1" = ERR ] || [ "$2" = ERR ]; then echo -; return; fi
    awk -v a="$1" -v b="$2" 'BEGIN{ if (a+0 == 0) print "-"; else printf "%.2f\n", b/a }'
}

# verdict RATIO TARGET: PASS or below
verdict() {
    if [ "$1" = - ]; then echo n/a; return; fi
    awk -v r="$1" -v t="$2" 'BEGIN{ print (r+0 >= t+0) ? "PASS" : "below" }'
}

# ------------------------------------------------------------------------
# Helpers for scripts running on bench/cluster.sh's cluster (they use its q
# and expect $RES, the results directory). Used by shapes.sh.

log() { echo "[$(date -u +%H:%M:%S)] $*" >&2; }

# tps_of PGBENCH_OUTPUT: the tps pgbench printed, one decimal, or ERR
tps_of() {
    local tps
    tps=$(awk '/^tps = /{print $3; exit}' "$1")
    if [ -z "$tps" ]; then echo ERR; else printf '%.1f\n' "$tps"; fi
}

# tx_of PGBENCH_OUTPUT: "number of transactions actually processed", or ERR
tx_of() {
    local n
    n=$(awk -F': ' '/^number of transactions actually processed/{ split($2, a, "/"); print a[1]; exit }' "$1")
    echo "${n:-ERR}"
}

# mq_fill QUEUE N PAYLOAD [DELAY]: N messages into a work queue through the
# public API, mq.send_batch of 10,000 per statement, each sent with DELAY
# (an interval, default '0').
mq_fill() {
    q -v queue="$1" -v n="$2" -v payload="$3" -v delay="${4:-0}" <<'SQL'
SELECT set_config('bench.queue', :'queue', false), set_config('bench.n', :'n', false),
       set_config('bench.payload', :'payload', false), set_config('bench.delay', :'delay', false) \g /dev/null
DO $$
DECLARE
    qn    text := current_setting('bench.queue');
    n     int := current_setting('bench.n')::int;
    p     jsonb := current_setting('bench.payload')::jsonb;
    d     interval := current_setting('bench.delay')::interval;
    done  int := 0;
    chunk int;
BEGIN
    WHILE done < n LOOP
        chunk := least(10000, n - done);
        PERFORM mq.send_batch(qn, array_fill(p, ARRAY[chunk]), delay => d);
        done := done + chunk;
    END LOOP;
END $$;
SQL
}

# rel_stats CONDITION: "dead_tuples total_bytes autovacuum_count" summed over
# the tables (relkind r or m) of pg_class c / pg_namespace n matching the SQL
# CONDITION, e.g. "n.nspname = 'mq'" (every table of the schema, whatever the
# storage calls them) or "c.oid = 'baseline'::regclass". Bytes include indexes
# and TOAST (pg_total_relation_size).
rel_stats() {
    q -F ' ' -c "SELECT coalesce(sum(s.n_dead_tup), 0), coalesce(sum(pg_total_relation_size(c.oid)), 0),
                        coalesce(sum(s.autovacuum_count), 0)
                   FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                   LEFT JOIN pg_stat_all_tables s ON s.relid = c.oid
                  WHERE c.relkind IN ('r', 'm') AND ($1)"
}

# rel_list CONDITION: one line per table as rel_stats: "name live dead bytes"
rel_list() {
    q -F ' ' -c "SELECT c.relname, coalesce(s.n_live_tup, 0), coalesce(s.n_dead_tup, 0), pg_total_relation_size(c.oid)
                   FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                   LEFT JOIN pg_stat_all_tables s ON s.relid = c.oid
                  WHERE c.relkind IN ('r', 'm') AND ($1) ORDER BY 1"
}

# Held snapshot: holder_start TAG SECONDS starts a session (application_name
# mq-bench-holder) that runs BEGIN ISOLATION LEVEL REPEATABLE READ; SELECT 1
# FROM pg_class LIMIT 1; and then idles in its transaction (pg_sleep) for
# SECONDS, so the xmin horizon cannot advance; it returns once the session's
# snapshot is held. holder_stop ends it (pg_terminate_backend).
HOLDER_PID=
holder_start() {
    PGAPPNAME=mq-bench-holder "$PGBIN/psql" -h "$SOCK_DIR" -p "$PORT" -U postgres -d bench -X -q \
        >"$RES/$1-holder.log" 2>&1 <<SQL &
BEGIN ISOLATION LEVEL REPEATABLE READ;
SELECT 1 FROM pg_class LIMIT 1;
SELECT pg_sleep($2);
COMMIT;
SQL
    HOLDER_PID=$!
    local i
    for i in $(seq 100); do
        if [ "$(q -c "SELECT count(*) FROM pg_stat_activity
                       WHERE application_name = 'mq-bench-holder' AND backend_xmin IS NOT NULL")" = 1 ]; then
            return 0
        fi
        sleep 0.1
    done
    log "the REPEATABLE READ holder did not start"; return 1
}
holder_stop() {
    [ -n "$HOLDER_PID" ] || return 0
    q -c "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
           WHERE application_name = 'mq-bench-holder'" >/dev/null
    wait "$HOLDER_PID" 2>/dev/null || true
    HOLDER_PID=
}

# sleep_until EPOCH: sleep until the given Unix time (fractions allowed)
sleep_until() {
    local s
    s=$(awk -v t="$1" -v now="$(date +%s.%N)" 'BEGIN{ d = t - now; printf "%.3f\n", (d > 0) ? d : 0 }')
    sleep "$s"
}

# ------------------------------------------------------------------------
# The wake-up benchmarks (push.sh, notify.sh): pgbench producers and
# bench/latency.c's clients in the background, on a cluster with mq preloaded
# and commit timestamps on (a delivery's latency is its claim's time minus
# its producer's commit time). They expect $HERE (bench/), $RES and $PAYLOAD.

# wake_bench_start: exit 1 unless mq is installed in $PGBIN's server; build
# latency.c into $LAT ($RES/latency); install the EXIT trap (kill the clients
# in BG_PIDS, keep the server log in $RES, cluster_stop); start the cluster
# (cluster_start, with mq.database = 'bench') and point PG* and the clients'
# libpq at it; CREATE EXTENSION mq, the tables latency.c fills (lat_sent,
# lat_recv) and the one the scripts compute into (lat_result); $NOTES, empty.
wake_bench_start() {
    if [ ! -f "$("$PGBIN/pg_config" --sharedir)/extension/mq.control" ]; then
        echo "mq is not installed in $PGBIN's server; run 'make install' first" >&2
        exit 1
    fi
    cc -O2 -Wall -o "$RES/latency" "$HERE/latency.c" -I"$("$PGBIN/pg_config" --includedir)" \
        -L"$("$PGBIN/pg_config" --libdir)" -lpq
    LAT=$RES/latency
    BG_PIDS=()
    trap wake_bench_exit EXIT
    trap 'exit 130' INT TERM
    export PGOPTIONS="${PGOPTIONS:-} -c client_min_messages=warning"   # no NOTICEs from drop_queue

    cluster_start "shared_preload_libraries = 'mq'" "mq.database = 'bench'" "track_commit_timestamp = on"
    log "cluster up: $CLUSTER_DIR port $PORT; results in $RES"
    export PGHOST=$SOCK_DIR PGPORT=$PORT PGUSER=postgres PGDATABASE=bench
    # latency was linked against $PGBIN's libpq (a private copy, say)
    LD_LIBRARY_PATH=$("$PGBIN/pg_config" --libdir)${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
    export LD_LIBRARY_PATH
    q -c "CREATE EXTENSION mq"
    q -c "CREATE TABLE lat_sent(msg_id bigint PRIMARY KEY)"
    q -c "CREATE TABLE lat_recv(msg_id bigint NOT NULL, recv_at timestamptz NOT NULL, mode text NOT NULL)"
    q -c "CREATE TABLE lat_result(mode text, round int, ms double precision)"
    NOTES=$RES/notes.txt; : >"$NOTES"
}
wake_bench_exit() {
    local p
    for p in "${BG_PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    if [ -n "$PGDATA_DIR" ] && [ -f "$CLUSTER_DIR/server.log" ]; then
        cp "$CLUSTER_DIR/server.log" "$RES/server.log" 2>/dev/null || true
    fi
    cluster_stop
}

# pgbench_tps LABEL SCRIPT DURATION [pgbench args...]: pgbench -M prepared
# running bench/SCRIPT in database bench for DURATION s with :payload =
# $PAYLOAD, output in $RES/LABEL.log; echoes the tps, or ERR (and logs the
# output's tail). Also under shapes.sh's pgb.
pgbench_tps() {
    local label=$1 script=$2 dur=$3; shift 3
    local out=$RES/$label.log rc=0 tps
    "$PGBIN/pgbench" -n -M prepared -T "$dur" -D payload="$PAYLOAD" "$@" \
        -f "$HERE/$script" bench >"$out" 2>&1 || rc=$?
    tps=$(tps_of "$out")
    if [ $rc != 0 ] || [ "$tps" = ERR ]; then
        log "pgbench $label failed (rc=$rc), see $out:"; tail -5 "$out" >&2
        echo ERR
    else
        echo "$tps"
    fi
}

# wait_backends APPNAME N: until N sessions with that application_name are
# connected (10 s at most: then logged, and false)
wait_backends() {
    local i
    for i in $(seq 100); do
        [ "$(q -c "SELECT count(*) FROM pg_stat_activity WHERE application_name = '$1'")" -ge "$2" ] && return 0
        sleep 0.1
    done
    log "only $(q -c "SELECT count(*) FROM pg_stat_activity WHERE application_name = '$1'") of $2 '$1' sessions connected"
    return 1
}

# note TEXT: a line under the results ($NOTES, a file: most callers run in
# $(...) subshells), logged as well
note() { echo "$*" >>"$NOTES"; log "$*"; }

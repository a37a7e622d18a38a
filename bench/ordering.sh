#!/usr/bin/env bash
# bench/ordering.sh -- issue 3 benchmarks: keyed work queues and partitioned queues.
#
# usage: bench/ordering.sh [--quick] [--only N[,M...]] [--rounds R]
#
#   --quick      short runs (5 s; workload 2: 4 s) instead of 15 s (workload 2: 10 s)
#   --only N     run only workload N (1..3); a comma list is fine: --only 1,3
#   --rounds R   measured runs per side, interleaved (default 3; the table shows the median)
#
# Workloads (8 pgbench clients, -M prepared, queues created with notify => false):
#   1  keyed work queue (ordering => 'key', 1,000 keys) vs the same queue unkeyed:
#      read 1 + ack in one statement (ord_read1.sql); tps; target keyed/unkeyed >= 0.8
#   2  partitioned queue (8 partitions) consumed by one consumer group of 8 members
#      (ord_poll100.sql: poll 100 + commit per transaction) vs the work queue's read
#      100 + array ack (ord_read100.sql); messages/s, the partitioned side counted from
#      the committed offsets it advanced; target partitioned/work >= 5
#   3  send, one keyed message per transaction, into a partitioned queue
#      (ord_send_log.sql) vs the plain-table INSERT (ord_send_baseline.sql); tps
#
# It installs nothing: build and install the extension first
#     cd /work/main && make && make install
# then run as root (the cluster runs as the `postgres` OS user). A throwaway
# cluster (bench/cluster.sh) with shared_preload_libraries = 'mq' listens on
# the unix socket of a mktemp directory, port $PORT (default 55441), and is
# removed on exit. Raw output in bench/results/ordering-<UTC timestamp>/.
set -eu -o pipefail
shopt -s inherit_errexit

HERE=$(cd "$(dirname "$0")" && pwd)
. "$HERE/lib.sh"
PORT=${PORT:-55441}
. "$HERE/cluster.sh"

QUICK=0
ONLY=1,2,3
ROUNDS=3
while [ $# -gt 0 ]; do
    case "$1" in
        --quick) QUICK=1 ;;
        --only) ONLY=$2; shift ;;
        --only=*) ONLY=${1#--only=} ;;
        --rounds) ROUNDS=$2; shift ;;
        -h|--help) sed -n '2,26p' "$0"; exit 0 ;;
        *) echo "unknown argument: $1 (see --help)" >&2; exit 2 ;;
    esac
    shift
done

CLIENTS=8
THREADS=2
if [ $QUICK = 1 ]; then
    DUR=${DUR:-5}; DUR2=${DUR2:-4}
else
    DUR=${DUR:-15}; DUR2=${DUR2:-10}
fi
WARM=2                 # workload 2: warm-up seconds of a new consumer group (joins, rebalance)
NKEYS=1000
PREFILL_1=${PREFILL_1:-$(( DUR * 14000 ))}       # workload 1 (read 1 per tx)
PREFILL_100=${PREFILL_100:-$(( DUR2 * 130000 ))} # workload 2, work queue (read 100 per tx)
PREFILL_LOG=${PREFILL_LOG:-$(( (DUR2 + WARM + 1) * 400000 ))} # workload 2, the log (read once per round by a new group)
PAYLOAD='{"template":"welcome","user_id":123456789,"email":"ana.example@example.com","locale":"en-US","n":1}'

want() { case ",$ONLY," in *",$1,"*) return 0 ;; *) return 1 ;; esac; }

RES=$HERE/results/ordering-$(date -u +%Y%m%dT%H%M%SZ)
mkdir -p "$RES"
SUMMARY=$RES/summary.txt

SHAREDIR=$("$PGBIN/pg_config" --sharedir)
if [ ! -f "$SHAREDIR/extension/mq.control" ]; then
    echo "mq is not installed; run 'make && make install' in the repo first" >&2
    exit 1
fi

on_exit() {
    if [ -n "$PGDATA_DIR" ] && [ -f "$CLUSTER_DIR/server.log" ]; then
        cp "$CLUSTER_DIR/server.log" "$RES/server.log" 2>/dev/null || true
    fi
    cluster_stop
}
trap on_exit EXIT
trap 'exit 130' INT TERM

log() { echo "[$(date -u +%H:%M:%S)] $*" >&2; }
export PGOPTIONS="${PGOPTIONS:-} -c client_min_messages=warning"   # no NOTICEs from drop_queue

cluster_start "shared_preload_libraries = 'mq'" "mq.database = 'bench'"
log "cluster up: $CLUSTER_DIR port $PORT; results in $RES"
q -c "CREATE TABLE baseline(id bigserial primary key, payload jsonb not null,
                            created_at timestamptz not null default clock_timestamp())"
q -c "CREATE EXTENSION mq"

# ---------------------------------------------------------------- helpers

# fill QUEUE N: N messages with keys 1..NKEYS round-robin, send_batch in chunks of 10 000
fill() {
    q -v payload="$PAYLOAD" -v n="$2" -v queue="$1" -v nkeys=$NKEYS <<'SQL'
SELECT set_config('bench.payload', :'payload', false), set_config('bench.n', :'n', false),
       set_config('bench.queue', :'queue', false), set_config('bench.nkeys', :'nkeys', false) \g /dev/null
DO $$
DECLARE
    n     int := current_setting('bench.n')::int;
    nk    int := current_setting('bench.nkeys')::int;
    qn    text := current_setting('bench.queue');
    p     jsonb := current_setting('bench.payload')::jsonb;
    done  int := 0;
    chunk int;
BEGIN
    WHILE done < n LOOP
        chunk := least(10000, n - done);
        PERFORM mq.send_batch(qn, array_fill(p, ARRAY[chunk]),
                              ARRAY(SELECT ((done + i) % nk + 1)::text FROM generate_series(1, chunk) i));
        done := done + chunk;
    END LOOP;
END $$;
SQL
}

settle() { q -c "VACUUM ANALYZE"; q -c "CHECKPOINT"; }

# pgb LABEL SCRIPT DURATION [pgbench args...]: echoes tps or ERR
pgb() {
    local label=$1 script=$2 dur=$3; shift 3
    local out=$RES/$label.log rc=0 tps
    "$PGBIN/pgbench" -h "$SOCK_DIR" -p "$PORT" -U postgres -n -M prepared \
        -c $CLIENTS -j $THREADS -T "$dur" -D payload="$PAYLOAD" "$@" \
        -f "$HERE/$script" bench >"$out" 2>&1 || rc=$?
    tps=$(awk '/^tps = /{print $3; exit}' "$out")
    if [ $rc != 0 ] || [ -z "$tps" ]; then
        log "pgbench $label failed (rc=$rc), see $out:"; tail -5 "$out" >&2
        echo ERR
    else
        printf '%.1f\n' "$tps"
    fi
}
ROWS=()
row() { ROWS+=("$(printf '%-46s %12s %12s %8s %8s  %s' "$@")"); }
NOTES=$RES/notes.txt; : >"$NOTES"
note() { echo "$*" >>"$NOTES"; log "$*"; }

# ---------------------------------------------------------------- header
{
    echo "mq ordering bench $(date -u '+%Y-%m-%d %H:%M UTC'), host $(hostname), $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg)"
    echo "$("$PGBIN/postgres" --version); installed mq.so $(date -u -r "$("$PGBIN/pg_config" --pkglibdir)/mq.so" '+%H:%M:%S UTC'); repo commit $(git -C "$HERE/.." rev-parse --short HEAD 2>/dev/null || echo ?)$(git -C "$HERE/.." diff --quiet HEAD -- src sql 2>/dev/null || echo '+dirty(src)')"
    echo "pgbench -M prepared -n -c $CLIENTS -j $THREADS; ${DUR}s per run (workload 2: ${DUR2}s after ${WARM}s warm-up), $ROUNDS interleaved rounds, median shown"
    echo "shared_preload_libraries=mq, shared_buffers=256MB, fsync=on, synchronous_commit=on; queues notify => false; payload ${#PAYLOAD} bytes"
} | tee "$SUMMARY" >&2

# ---------------------------------------------------------------- workload 1
# keyed vs unkeyed work queue, same messages (keys 1..1000 round-robin in both;
# the unkeyed queue ignores them for ordering).
run_w1() {     # run_w1 SIDE ROUND -> tps
    local side=$1 r=$2 tps left ord=none
    [ "$side" = keyed ] && ord=key
    q -c "SELECT mq.drop_queue('bench')" >/dev/null
    q -c "SELECT mq.create_queue('bench', ordering => '$ord', notify => false)" >/dev/null
    fill bench "$PREFILL_1"
    settle
    tps=$(pgb "w1-$side-$r" ord_read1.sql "$DUR")
    left=$(q -c "SELECT depth + blocked FROM mq.metrics('bench')")
    if [ "$left" -lt $(( CLIENTS * 2 )) ]; then
        note "WARNING w1-$side-$r: queue DRAINED (left $left of $PREFILL_1); raise PREFILL_1"
    fi
    log "w1 $side round $r: $tps tps, $left left"
    echo "$tps"
}
if want 1; then
    u=(); k=()
    for r in $(seq "$ROUNDS"); do
        u+=("$(run_w1 unkeyed "$r")")
        k+=("$(run_w1 keyed "$r")")
    done
    U=$(median "${u[@]}"); K=$(median "${k[@]}"); R=$(ratio "$U" "$K")
    row "1 read+ack 1/tx: unkeyed | keyed 1000 keys (tps)" "$U" "$K" "$R" ">=0.80" "$(verdict "$R" 0.8)"
    note "w1 runs (tps): unkeyed ${u[*]}; keyed ${k[*]}"
fi

# ---------------------------------------------------------------- workload 2
# The log is filled once; each round a new consumer group g<round> reads it
# from the earliest offset (a new group starts there), so no refill is needed.
# Messages consumed = sum over partitions of the committed offset advanced
# during the measured run (not tps x 100: polls that get less than 100 or
# whose commits were fenced do not count).
committed() { q -c "SELECT coalesce(sum(committed_offset), 0) FROM mq.consumer_groups WHERE consumer_group = '$1'"; }
if want 2; then
    q -c "SELECT mq.create_queue('log', partitions => 8, retention => '1 day', notify => false)" >/dev/null
    log "w2: filling the log with $PREFILL_LOG messages"
    fill log "$PREFILL_LOG"
    w=(); p=()
    for r in $(seq "$ROUNDS"); do
        # work queue: read 100 + ack, fresh prefilled queue
        q -c "SELECT mq.drop_queue('bench')" >/dev/null
        q -c "SELECT mq.create_queue('bench', notify => false)" >/dev/null
        fill bench "$PREFILL_100"
        settle
        tps=$(pgb "w2-work-$r" ord_read100.sql "$DUR2")
        left=$(q -c "SELECT depth FROM mq.metrics('bench')")
        [ "$left" -lt $(( CLIENTS * 200 )) ] && note "WARNING w2-work-$r: queue DRAINED (left $left); raise PREFILL_100"
        w+=("$(awk -v t="$tps" 'BEGIN{ if (t == "ERR") print t; else printf "%.1f\n", t * 100 }')")
        log "w2 work queue round $r: $tps tps = ${w[-1]} msg/s, $left left"

        # partitioned: new group, warm-up (members join, partitions get spread), measure
        settle
        g=g$r
        pgb "w2-log-warm-$r" ord_poll100.sql "$WARM" -D grp=$g >/dev/null
        c0=$(committed $g)
        t0=$(date +%s.%N)
        tps=$(pgb "w2-log-$r" ord_poll100.sql "$DUR2" -D grp=$g)
        t1=$(date +%s.%N)
        c1=$(committed $g)
        q -F ' ' -c "SELECT partition, member, committed_offset, lag FROM mq.consumer_groups
                      WHERE consumer_group = '$g' ORDER BY 1" >"$RES/w2-log-$r-groups.txt"
        lag=$(q -c "SELECT min(lag) FROM mq.consumer_groups WHERE consumer_group = '$g'")
        [ "$lag" -lt 200 ] && note "WARNING w2-log-$r: a partition was DRAINED (min lag $lag); raise PREFILL_LOG"
        # pgbench -T measures DUR2 seconds of transactions; divide by DUR2
        p+=("$(awk -v a="$c0" -v b="$c1" -v d="$DUR2" 'BEGIN{ printf "%.1f\n", (b - a) / d }')")
        owners=$(q -c "SELECT count(DISTINCT member) FROM mq.consumer_groups WHERE consumer_group = '$g'")
        note "w2 log round $r: $tps tps (x100 = $(awk -v t="$tps" 'BEGIN{printf "%.0f", t*100}')), committed offsets advanced $((c1 - c0)) in ${DUR2}s = ${p[-1]} msg/s; $owners members own the 8 partitions; wall $(awk -v a="$t0" -v b="$t1" 'BEGIN{printf "%.1f", b-a}')s"
    done
    W=$(median "${w[@]}"); P=$(median "${p[@]}"); R=$(ratio "$W" "$P")
    row "2 consume: work read+ack 100 | log poll+commit (msg/s)" "$W" "$P" "$R" ">=5.00" "$(verdict "$R" 5)"
    note "w2 runs (msg/s): work queue ${w[*]}; partitioned ${p[*]}"
    q -c "SELECT mq.drop_queue('log')" >/dev/null
fi

# ---------------------------------------------------------------- workload 3
if want 3; then
    b=(); m=()
    for r in $(seq "$ROUNDS"); do
        q -c "TRUNCATE baseline RESTART IDENTITY"; settle
        b+=("$(pgb "w3-baseline-$r" ord_send_baseline.sql "$DUR")"); log "w3 baseline round $r: ${b[-1]} tps"
        q -c "SELECT mq.drop_queue('logsend')" >/dev/null
        q -c "SELECT mq.create_queue('logsend', partitions => 8, retention => '1 day', notify => false)" >/dev/null
        settle
        m+=("$(pgb "w3-log-$r" ord_send_log.sql "$DUR")"); log "w3 partitioned send round $r: ${m[-1]} tps"
    done
    B=$(median "${b[@]}"); M=$(median "${m[@]}"); R=$(ratio "$B" "$M")
    row "3 send 1/tx: baseline INSERT | log keyed (tps)" "$B" "$M" "$R" "-" "info"
    note "w3 runs (tps): baseline ${b[*]}; partitioned send ${m[*]}"
fi

# ---------------------------------------------------------------- report
{
    echo
    printf '%-46s %12s %12s %8s %8s  %s\n' "workload: A | B" A B B/A target verdict
    printf '%s\n' "${ROWS[@]}"
    echo
    cat "$NOTES"
} | tee -a "$SUMMARY"

#!/usr/bin/env bash
# bench/shapes.sh -- the workloads the storage redesign is measured on
# (the "shapes": what is not ready must not be in the way, MVCC churn under a
# held snapshot, scaling with clients, metrics cost).
#
# usage: bench/shapes.sh [--quick | --long] [--only N[,M...]] [--rounds R]
#
#   (default)    the full mode: 15 s runs, 3 interleaved rounds, snapshots held 180 s
#   --quick      smoke test: 5 s runs, 1 round, snapshots held 60 s, 10 latency tries
#   --long       as the full mode, but snapshots held 600 s (shapes 3 and 6) and
#                shape 7 timed on 10,000,000 messages
#   --only N     shapes to run (1..7); a comma list is fine: --only 1,2. Shape 0 is
#                bench/run.sh --preload --only 1,2,3 (send, read+ack 1 and 100 per
#                transaction), run first on its own cluster; not in the default set
#   --rounds R   measured runs per variant, interleaved (default 3, --quick 1)
#
# Shapes (see bench/README.md, "Shapes", for the statements, setup and targets):
#   1  delayed head: 100k delayed / 100k nacked-with-backoff messages ahead of the
#      ready ones, read+ack 1/tx, 8 clients, vs the same queue without them; plus
#      how late a delayed message reaches a reader already waiting
#   2  in-flight head: 20k claimed messages ahead, vs without
#   3  held snapshot: 4 producers at 800 msg/s, 4 consumers read 10 + ack, while a
#      REPEATABLE READ snapshot is held; per 20-s window; beside the plain table
#   4  no anti-scaling: read+ack 1/tx with 8, 64 and 256 clients, mq and plain table
#   5  mixed: 4 unthrottled producers + 4 consumers at once, mq and plain table
#   6  partitioned queue (4 partitions, 1 group of 4 members) under a held snapshot
#   7  metrics cost: mq.metrics and mq.queues on a large queue, and read+ack while a
#      9th session calls mq.metrics every second
#
# It installs nothing: build and install the extension first, e.g.
#     make PG_CONFIG=$PGBIN/pg_config && make PG_CONFIG=$PGBIN/pg_config install
# then run as root (the cluster runs as the `postgres` OS user):
#     PGBIN=/path/to/postgresql/15/bin PORT=56010 bench/shapes.sh --quick
# A throwaway cluster (bench/cluster.sh) with shared_preload_libraries = 'mq'
# and max_connections = 300 listens on the unix socket of a mktemp directory,
# port $PORT (default 55443), and is removed on every exit.
# Raw output and summary.txt go to bench/results/shapes-<UTC timestamp>/ (git-ignored).
set -eu -o pipefail
shopt -s inherit_errexit

HERE=$(cd "$(dirname "$0")" && pwd)
. "$HERE/lib.sh"
PORT=${PORT:-55443}
. "$HERE/cluster.sh"

MODE=full
ONLY=1,2,3,4,5,6,7
ROUNDS=
while [ $# -gt 0 ]; do
    case "$1" in
        --quick) MODE=quick ;;
        --long) MODE=long ;;
        --only) ONLY=$2; shift ;;
        --only=*) ONLY=${1#--only=} ;;
        --rounds) ROUNDS=$2; shift ;;
        -h|--help) sed -n '2,37p' "$0"; exit 0 ;;
        *) echo "unknown argument: $1 (see --help)" >&2; exit 2 ;;
    esac
    shift
done
want() { case ",$ONLY," in *",$1,"*) return 0 ;; *) return 1 ;; esac; }

# ---------------------------------------------------------------- sizes and durations
if [ $MODE = quick ]; then
    DUR=${DUR:-5}; HOLD=${HOLD:-60}; RECOVER=${RECOVER:-20}; ROUNDS=${ROUNDS:-1}; LAT_TRIES=${LAT_TRIES:-10}
else
    DUR=${DUR:-15}; RECOVER=${RECOVER:-60}; ROUNDS=${ROUNDS:-3}; LAT_TRIES=${LAT_TRIES:-20}
    if [ $MODE = long ]; then HOLD=${HOLD:-600}; else HOLD=${HOLD:-180}; fi
fi
WIN=20                                   # shapes 3 and 6: window length (s)
if [ $(( HOLD % WIN )) != 0 ] || [ $(( RECOVER % WIN )) != 0 ] || [ "$HOLD" -lt $(( 3 * WIN )) ]; then
    echo "HOLD ($HOLD) and RECOVER ($RECOVER) must be multiples of $WIN s, HOLD at least $(( 3 * WIN ))" >&2
    exit 2
fi
THREADS=2
# shapes 1 and 2: ready messages behind the head (200,000, or more for long runs
# so that a run without a head cannot drain)
READY=${READY:-$(( DUR * 15000 > 200000 ? DUR * 15000 : 200000 ))}
HEAD_DELAYED=100000                      # shape 1
HEAD_INFLIGHT=20000                      # shape 2
PREFILL_4=${PREFILL_4:-$(( DUR * 35000 ))}   # shape 4: queue depth before each run
RATE=${RATE:-800}                        # shapes 3 and 6: producer rate, all 4 producers
SMALL=1000                               # shape 7: the small queue
BIG=${BIG:-$([ $MODE = long ] && echo 10000000 || echo 1000000)}  # shape 7: the big queue
RATE_FILL=${RATE_FILL:-1000000}          # shape 7: queue depth of the read+ack runs
TIMED=5                                  # shape 7: timed calls (after one warm-up)
PAYLOAD='{"template":"welcome","user_id":123456789,"email":"ana.example@example.com","locale":"en-US","n":1}'
# first/last part of a held-snapshot run compared for latency: a minute, or a
# third of the hold when it is shorter than 3 minutes (--quick)
FL=$(( HOLD >= 180 ? 60 : HOLD / 3 ))

RES=$HERE/results/shapes-$(date -u +%Y%m%dT%H%M%SZ)
mkdir -p "$RES"
SUMMARY=$RES/summary.txt

if [ ! -f "$("$PGBIN/pg_config" --sharedir)/extension/mq.control" ]; then
    echo "mq is not installed in $("$PGBIN/pg_config" --sharedir); run make install with PG_CONFIG=$PGBIN/pg_config first" >&2
    exit 1
fi

BG_PIDS=()
on_exit() {
    local p
    for p in "${BG_PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    if [ -n "$HOLDER_PID" ]; then kill "$HOLDER_PID" 2>/dev/null || true; fi
    if [ -n "$PGDATA_DIR" ] && [ -f "$CLUSTER_DIR/server.log" ]; then
        cp "$CLUSTER_DIR/server.log" "$RES/server.log" 2>/dev/null || true
    fi
    cluster_stop
}
trap on_exit EXIT
trap 'exit 130' INT TERM
export PGOPTIONS="${PGOPTIONS:-} -c client_min_messages=warning"   # no NOTICEs from drop_queue

ROWS=()
row() { ROWS+=("$(printf '%-52s %12s %12s %7s %8s  %s' "$@")"); }
section() { ROWS+=("" "$*"); }
NOTES=$RES/notes.txt; : >"$NOTES"
note() { echo "$*" >>"$NOTES"; log "$*"; }
TABLES=$RES/tables.txt; : >"$TABLES"

# what is measured, taken before anything runs
STARTED="$(date -u '+%Y-%m-%d %H:%M UTC'), mode $MODE, host $(hostname), $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg)"
BUILD="$("$PGBIN/postgres" --version); installed mq.so $(date -u -r "$("$PGBIN/pg_config" --pkglibdir)/mq.so" '+%Y-%m-%d %H:%M:%S UTC'); repo commit $(git -C "$HERE/.." rev-parse --short HEAD 2>/dev/null || echo ?)$(git -C "$HERE/.." diff --quiet HEAD -- src sql 2>/dev/null || echo '+dirty(src)')"

# ---------------------------------------------------------------- shape 0 (bench/run.sh)
if want 0; then
    log "shape 0: bench/run.sh --preload --only 1,2,3 $([ $MODE = quick ] && echo --quick)"
    PORT=$PORT PGBIN=$PGBIN "$HERE/run.sh" --preload --only 1,2,3 $([ $MODE = quick ] && echo --quick) \
        >"$RES/shape0-run.sh.out" 2>&1 || note "WARNING shape 0: bench/run.sh failed, see $RES/shape0-run.sh.out"
    {
        echo "0  plain workloads, bench/run.sh --preload --only 1,2,3 (its own cluster and summary):"
        sed -n '/^workload /,$p' "$RES/shape0-run.sh.out"
        echo
    } >>"$TABLES"
fi

cluster_start "shared_preload_libraries = 'mq'" "mq.database = 'bench'" \
    "max_connections = 300"
log "cluster up: $CLUSTER_DIR port $PORT; results in $RES"
export PGHOST=$SOCK_DIR PGPORT=$PORT PGUSER=postgres PGDATABASE=bench
q -c "CREATE EXTENSION mq"
q -c "CREATE TABLE baseline(id bigserial primary key, payload jsonb not null,
                            created_at timestamptz not null default clock_timestamp())"

{
    echo "mq shapes bench, started $STARTED"
    echo "$BUILD"
    echo "pgbench -M prepared -n -j $THREADS; ${DUR}s per run, $ROUNDS interleaved rounds (median); snapshots held ${HOLD}s, ${WIN}s windows"
    echo "shared_preload_libraries=mq, max_connections=300, shared_buffers=256MB, fsync=on, synchronous_commit=on, autovacuum default; payload ${#PAYLOAD} bytes"
} | tee "$SUMMARY" >&2

# ---------------------------------------------------------------- helpers
settle() { q -c "VACUUM ANALYZE" >/dev/null; q -c "CHECKPOINT"; }

# reset_mq [QUEUE]: drop and recreate the work queue (default 'bench'), empty
reset_mq() {
    q -c "SELECT mq.drop_queue('${1:-bench}')" >/dev/null
    q -c "SELECT mq.create_queue('${1:-bench}')" >/dev/null
}
# reset_plain N: the plain table with N rows
reset_plain() {
    q -c "TRUNCATE baseline RESTART IDENTITY"
    if [ "$1" -gt 0 ]; then
        q -v payload="$PAYLOAD" -v n="$1" <<<"INSERT INTO baseline(payload) SELECT :'payload'::jsonb FROM generate_series(1, :n)"
    fi
}
# emptied SIDE: drop the other side's data too (its leftovers would cost vacuum
# and mq's maintenance during the run)
emptied() {
    if [ "$1" = plain ]; then q -c "SELECT mq.drop_queue('bench')" >/dev/null; else q -c "TRUNCATE baseline"; fi
}
# ready_of: visible messages of queue bench; backlog_of SIDE: messages still queued
ready_of() { q -c "SELECT depth FROM mq.metrics('bench')"; }
backlog_of() {
    if [ "$1" = plain ]; then q -c "SELECT count(*) FROM baseline"
    else q -c "SELECT depth + in_flight + delayed + blocked FROM mq.metrics('bench')"; fi
}

# pgb LABEL SCRIPT DURATION CLIENTS [pgbench args...]: lib.sh's pgbench_tps
# with CLIENTS clients on $THREADS threads, in the foreground; echoes the tps
# or ERR
pgb() {
    local label=$1 script=$2 dur=$3 clients=$4; shift 4
    pgbench_tps "$label" "$script" "$dur" -c "$clients" -j $THREADS "$@"
}
# pgb_bg LABEL SCRIPT DURATION CLIENTS [pgbench args...]: the same in the
# background; its pid is appended to BG_PIDS (wait for it with bg_wait).
# PGB_OPTS (e.g. PGB_OPTS=$PLAIN_CONSUMER_OPTS pgb_bg ...) adds server settings.
#
# The plain-table consumers of the runs that start from an empty, just
# analyzed table (shapes 3 and 5) use the DELETE with its subquery as an array
# (shapes_read1_baseline.sql, shapes_read10_baseline.sql) and plan it with
# enable_seqscan and enable_sort off. With an empty table's statistics the
# cached plan of read1_baseline.sql's IN (...) form is a nested-loop semi join
# that re-runs the LIMIT subquery for every row: once the table has grown, one
# DELETE deletes the whole table and takes minutes (a 0.1.0 quick run had two
# consumer transactions running for 8 minutes). The settings give the
# textbook plan (oldest ids from the primary key, locked, deleted through the
# primary key) whatever the statistics say. A planner artefact of the
# reference is not the MVCC cost measured.
PLAIN_CONSUMER_OPTS="-c enable_seqscan=off -c enable_sort=off"
pgb_bg() {
    local label=$1 script=$2 dur=$3 clients=$4; shift 4
    PGOPTIONS="$PGOPTIONS ${PGB_OPTS:-}" "$PGBIN/pgbench" -n -M prepared -c "$clients" -j $THREADS -T "$dur" -D payload="$PAYLOAD" "$@" \
        -f "$HERE/$script" bench >"$RES/$label.log" 2>&1 &
    BG_PIDS+=($!)
}
bg_wait() {
    local p rc=0
    for p in "${BG_PIDS[@]}"; do wait "$p" || rc=$?; done
    BG_PIDS=()
    return $rc
}

# median_field FILE FIELD: the median of FIELD=value over the lines of FILE
# (latency.c's output, e.g. late_ms); max_field the largest
median_field() { sed -n "s/.*$2=\([-0-9.]*\).*/\1/p" "$1" | sort -g | awk '{a[NR]=$1} END{ if (NR==0) print "ERR"; else if (NR%2) printf "%.2f\n", a[(NR+1)/2]; else printf "%.2f\n", (a[NR/2]+a[NR/2+1])/2 }'; }
max_field() { sed -n "s/.*$2=\([-0-9.]*\).*/\1/p" "$1" | sort -g | tail -1; }

# ---------------------------------------------------------------- shapes 1 and 2: heads
# head_run VARIANT ROUND: queue bench with a head of not-ready messages, then
# READY ready ones; read+ack 1/tx, 8 clients, DUR s; echoes the tps
head_run() {
    local v=$1 r=$2 label=s$3-$1-$2 tps left n got
    emptied mq
    reset_mq
    case $v in
        delayed)  mq_fill bench $HEAD_DELAYED "$PAYLOAD" '1 hour' ;;
        nacked)   # claim them and nack each with a 1-hour backoff
                  mq_fill bench $HEAD_DELAYED "$PAYLOAD"
                  n=0
                  while [ $n -lt $HEAD_DELAYED ]; do
                      got=$(q -c "SELECT count(*) FILTER (WHERE mq.nack('bench', m.msg_id, m.receipt, delay => '1 hour'))
                                    FROM mq.read('bench', 10000) m")
                      [ "$got" -gt 0 ] || { log "nack head: read returned nothing"; return 1; }
                      n=$(( n + got ))
                  done ;;
        inflight) mq_fill bench $HEAD_INFLIGHT "$PAYLOAD"
                  n=0
                  while [ $n -lt $HEAD_INFLIGHT ]; do
                      got=$(q -c "SELECT count(*) FROM mq.read('bench', 10000, visibility_timeout => '1 hour')")
                      [ "$got" -gt 0 ] || { log "in-flight head: read returned nothing"; return 1; }
                      n=$(( n + got ))
                  done ;;
    esac
    mq_fill bench "$READY" "$PAYLOAD"
    settle
    echo "before: $(q -F ' ' -c "SELECT 'depth', depth, 'in_flight', in_flight, 'delayed', delayed FROM mq.metrics('bench')")" >"$RES/$label.state"
    tps=$(pgb "$label" read1_mq.sql "$DUR" 8)
    left=$(ready_of)
    echo "after: $(q -F ' ' -c "SELECT 'depth', depth, 'in_flight', in_flight, 'delayed', delayed FROM mq.metrics('bench')")" >>"$RES/$label.state"
    if [ "$left" -lt 16 ]; then
        note "WARNING $label: queue DRAINED (left $left of $READY ready); raise READY"
        tps="$tps(DRAINED)"
    fi
    log "$label: $tps tps, $left ready left"
    echo "${tps%(DRAINED)}"
}

if want 1; then
    section "1  delayed head: read+ack 1/tx, 8 clients; $HEAD_DELAYED not-ready messages ahead of $READY ready"
    n0=(); nd=(); nn=()
    for r in $(seq "$ROUNDS"); do
        n0+=("$(head_run none "$r" 1)")
        nd+=("$(head_run delayed "$r" 1)")
        nn+=("$(head_run nacked "$r" 1)")
    done
    N0=$(median "${n0[@]}"); ND=$(median "${nd[@]}"); NN=$(median "${nn[@]}")
    R=$(ratio "$N0" "$ND"); row "1a delayed 1 hour ahead (tps) | without" "$N0" "$ND" "$R" ">=0.90" "$(verdict "$R" 0.9)"
    R=$(ratio "$N0" "$NN"); row "1b nacked, 1 hour backoff, ahead (tps) | without" "$N0" "$NN" "$R" ">=0.90" "$(verdict "$R" 0.9)"
    note "s1 runs (tps): without ${n0[*]}; delayed head ${nd[*]}; nacked head ${nn[*]}"

    # latency of a delayed message to a reader already waiting
    cc -O2 -Wall -o "$RES/latency" "$HERE/latency.c" -I"$("$PGBIN/pg_config" --includedir)" \
        -L"$("$PGBIN/pg_config" --libdir)" -lpq
    emptied mq
    reset_mq lat
    "$RES/latency" delayed lat "$LAT_TRIES" 0 >"$RES/s1c-delay0.txt"
    "$RES/latency" delayed lat "$LAT_TRIES" 1000 >"$RES/s1c-delay1s.txt"
    "$RES/latency" delayed lat "$LAT_TRIES" 1000 250 >"$RES/s1c-delay1s-jitter.txt"
    q -c "SELECT mq.drop_queue('lat')" >/dev/null
    L0=$(median_field "$RES/s1c-delay0.txt" late_ms)
    L1=$(median_field "$RES/s1c-delay1s.txt" late_ms); L1s=$(median_field "$RES/s1c-delay1s.txt" late_server_ms)
    LJ=$(median_field "$RES/s1c-delay1s-jitter.txt" late_ms); LJs=$(median_field "$RES/s1c-delay1s-jitter.txt" late_server_ms)
    lv() { awk -v l="$1" 'BEGIN{ print (l != "ERR" && l + 0 < 10) ? "PASS" : "below" }'; }
    row "1c delay 1 s: ms after due (commit + 1 s), median" "$L0" "$L1" "-" "<10ms" "$(lv "$L1")"
    row "1c   the same, due = enqueued_at + 1 s" "" "$L1s" "-" "-" "info"
    row "1d delay 1-1.25 s (random): ms after due, median" "$L0" "$LJ" "-" "<10ms" "$(lv "$LJ")"
    row "1d   the same, due = enqueued_at + delay" "" "$LJs" "-" "-" "info"
    note "s1c reference column: delay 0, ms from the send's commit to the read's return (median of $LAT_TRIES)"
    note "s1c delay 1 s, $LAT_TRIES tries, ms late: $(sed -n 's/.*late_ms=\([-0-9.]*\).*/\1/p' "$RES/s1c-delay1s.txt" | tr '\n' ' ')$({ grep -c timeout "$RES/s1c-delay1s.txt" || true; } | sed 's/^0$//;s/.\+/ TIMEOUTS: &/')"
    note "s1d delay 1-1.25 s, $LAT_TRIES tries, ms late: $(sed -n 's/.*late_ms=\([-0-9.]*\).*/\1/p' "$RES/s1c-delay1s-jitter.txt" | tr '\n' ' ')$({ grep -c timeout "$RES/s1c-delay1s-jitter.txt" || true; } | sed 's/^0$//;s/.\+/ TIMEOUTS: &/'); max $(max_field "$RES/s1c-delay1s-jitter.txt" late_ms)"
fi

if want 2; then
    section "2  in-flight head: read+ack 1/tx, 8 clients; $HEAD_INFLIGHT claimed (vt 1 hour) ahead of $READY ready"
    n0=(); ni=()
    for r in $(seq "$ROUNDS"); do
        n0+=("$(head_run none "$r" 2)")
        ni+=("$(head_run inflight "$r" 2)")
    done
    N0=$(median "${n0[@]}"); NI=$(median "${ni[@]}")
    R=$(ratio "$N0" "$NI"); row "2  in flight ahead (tps) | without" "$N0" "$NI" "$R" ">=0.90" "$(verdict "$R" 0.9)"
    note "s2 runs (tps): without ${n0[*]}; in-flight head ${ni[*]}"
fi

# ---------------------------------------------------------------- shapes 3 and 6: held snapshot
# windows SAMPLES PRODLOG_PREFIX CONSLOG_PREFIX KIND: per-window table from the
# samples ("k epoch backlog_or_committed dead bytes avcount [lag]" lines), the
# producers' per-transaction pgbench logs and the consumers' 1-s aggregate logs.
# KIND backlog: consumed = produced - backlog growth; KIND committed: consumed =
# growth of the committed offsets (backlog column = lag).
windows() {
    awk -v kind="$4" -v hold="$5" -v t0="$6" '
        part == "samples" { k = $1; e[k] = $2; b[k] = $3; d[k] = $4; s[k] = $5; av[k] = $6
                            lg[k] = (NF >= 7) ? $7 : $3; if (k > K) K = k; next }
        part == "prod"    { te[++np] = $5 + $6 / 1e6; next }
        part == "cons"    { i = int($1); cn[i] += $2; cl[i] += $3; next }
        END {
            printf "%4s %8s %9s %9s %6s %9s %10s %9s %9s %s\n", "t(s)", "snapshot", "produced", "consumed", "c/p", "backlog", "claim_ms", "dead", "MB", "autovacuums"
            for (k = 1; k <= K; k++) {
                p = 0; for (j = 1; j <= np; j++) if (te[j] > e[k-1] && te[j] <= e[k]) p++
                c = (kind == "backlog") ? p - (b[k] - b[k-1]) : b[k] - b[k-1]
                n = 0; l = 0
                for (i = int(e[k-1]); i < int(e[k]); i++) { n += cn[i]; l += cl[i] }
                t = e[k] - t0
                printf "%4.0f %8s %9d %9d %6s %9d %10s %9d %9.1f %d\n", t, (t <= hold + 1) ? "held" : "released",
                       p, c, (p > 0) ? sprintf("%.2f", c / p) : "-", lg[k],
                       (n > 0) ? sprintf("%.3f", l / n / 1000) : "-", d[k], s[k] / 1048576, av[k]
            }
        }' part=samples "$1" part=prod "$2".* part=cons "$3".*
}
# lat_between PREFIX T0 FROM TO: mean transaction latency (ms) in the 1-s
# aggregate logs PREFIX.* over [T0 + FROM, T0 + TO)
lat_between() {
    awk -v a="$(( $2 + $3 ))" -v b="$(( $2 + $4 ))" '
        { i = int($1); if (i >= a && i < b) { n += $2; l += $3 } }
        END { if (n > 0) printf "%.3f\n", l / n / 1000; else print "ERR" }' "$1".*
}

# snapshot_run SHAPE SIDE: writes $RES/sSHAPE-SIDE-{samples,windows.txt,...}
#   shape 3: SIDE plain or mq (queue bench); shape 6: SIDE log (queue p, group g)
snapshot_run() {
    local shape=$1 side=$2 tag=s$1-$2 total t0 k cond prod cons extra=() recover
    local smp=$RES/s$1-$2-samples
    if [ "$shape" = 3 ]; then recover=$RECOVER; else recover=0; fi
    total=$(( HOLD + recover ))
    case $side in
        plain) reset_plain 0; emptied plain; cond="c.oid = 'baseline'::regclass"
               prod=send_baseline.sql; cons=shapes_read10_baseline.sql ;;
        mq)    emptied mq; reset_mq; cond="n.nspname = 'mq'"
               prod=send_mq.sql; cons=shapes_read10_mq.sql ;;
        log)   emptied plain; emptied mq; q -c "SELECT mq.drop_queue('p')" >/dev/null
               q -c "SELECT mq.create_queue('p', partitions => 4)" >/dev/null
               cond="n.nspname = 'mq'"; prod=shapes_psend.sql; cons=shapes_poll.sql ;;
    esac
    settle
    : >"$smp"
    sample() {  # sample K
        local v
        case $side in
            plain) v=$(q -F ' ' -c "SELECT extract(epoch FROM statement_timestamp()), count(*) FROM baseline") ;;
            mq)    v=$(q -F ' ' -c "SELECT extract(epoch FROM statement_timestamp()), depth + in_flight + delayed + blocked FROM mq.metrics('bench')") ;;
            log)   v=$(q -F ' ' -c "SELECT extract(epoch FROM statement_timestamp()), coalesce(sum(committed_offset), 0), coalesce(sum(lag), 0)
                                      FROM mq.consumer_groups WHERE queue_name = 'p' AND consumer_group = 'g'") ;;
        esac
        set -- $v
        local e=$1 b=$2 lag=${3:-}
        echo "$k $e $b $(rel_stats "$cond") $lag" >>"$smp"
        rel_list "$cond" | sed "s/^/$k /" >>"$RES/$tag-tables.txt"
    }
    : >"$RES/$tag-tables.txt"
    holder_start "$tag" $(( total + 120 ))
    t0=$(( $(date +%s) + 2 ))
    sleep_until "$t0"
    k=0; sample
    pgb_bg "$tag-producers" "$prod" "$total" 4 -R "$RATE" --log --log-prefix="$RES/$tag-prod"
    PGB_OPTS=$([ "$side" = plain ] && echo "$PLAIN_CONSUMER_OPTS") \
        pgb_bg "$tag-consumers" "$cons" "$total" 4 -P "$WIN" --log --aggregate-interval=1 --log-prefix="$RES/$tag-cons"
    for k in $(seq $(( total / WIN ))); do
        sleep_until $(( t0 + k * WIN ))
        sample
        if [ $(( k * WIN )) = "$HOLD" ]; then
            holder_stop
            log "$tag: snapshot released after ${HOLD}s"
        fi
        log "$tag t=$(( k * WIN ))s: $(tail -1 "$smp")"
    done
    bg_wait || note "WARNING $tag: a pgbench exited with an error, see $RES/$tag-*.log"
    holder_stop
    sleep 2    # let the last statistics land
    echo "end $(rel_stats "$cond")" >"$RES/$tag-after.txt"
    q -c "VACUUM" >/dev/null
    sleep 2
    echo "vacuum $(rel_stats "$cond")" >>"$RES/$tag-after.txt"
    rel_list "$cond" >"$RES/$tag-tables-after-vacuum.txt"
    windows "$smp" "$RES/$tag-prod" "$RES/$tag-cons" "$([ "$side" = log ] && echo committed || echo backlog)" "$HOLD" "$t0" \
        >"$RES/$tag-windows.txt"
    echo "$t0" >"$RES/$tag-t0"
}

# held_figures TAG: one line of the run's figures, from its windows table
# (columns: 5 c/p, 6 backlog, 8 dead, 9 MB) and logs:
#   min_c/p max_backlog backlog_at_release dead_w1 dead_release mb_w1 mb_release
#   lat_first lat_last dead_end mb_end dead_vacuum mb_vacuum
held_figures() {
    local tag=$1 t0
    t0=$(cat "$RES/$tag-t0")
    awk -v nh=$(( HOLD / WIN )) '
        NR > 1 && NR <= nh + 1 { r = ($5 == "-") ? 1 : $5; if (min == "" || r + 0 < min + 0) min = r
                                 if ($6 + 0 > mx) mx = $6; be = $6; if (NR == 2) { d1 = $8; s1 = $9 }; dh = $8; sh = $9 }
        END { printf "%s %d %d %d %d %.1f %.1f", (min == "") ? "ERR" : min, mx, be, d1, dh, s1, sh }' "$RES/$tag-windows.txt"
    echo " $(lat_between "$RES/$tag-cons" "$t0" 0 "$FL") $(lat_between "$RES/$tag-cons" "$t0" $(( HOLD - FL )) "$HOLD") $(awk '{ printf "%s %.1f ", $2, $3 / 1048576 }' "$RES/$tag-after.txt")"
}

grows() {   # grows FIRST LAST FLOOR: LAST / max(FIRST, FLOOR)
    awk -v a="$1" -v b="$2" -v f="$3" 'BEGIN{ m = (a + 0 > f + 0) ? a : f; printf "%.2f\n", b / m }'
}
verdict_le() { if [ "$1" = - ] || [ "$1" = ERR ]; then echo n/a; return; fi
               awk -v r="$1" -v t="$2" 'BEGIN{ print (r + 0 <= t + 0) ? "PASS" : "below" }'; }
came_down() { awk -v a="$1" -v b="$2" 'BEGIN{ print (b + 0 < a + 0) ? "yes" : "no" }'; }

if want 3; then
    BOUND=$(( RATE * 5 ))
    section "3  held snapshot ${HOLD}s: 4 producers at $RATE msg/s (-R), 4 consumers read 10 + ack; then ${RECOVER}s released; plain table | mq"
    snapshot_run 3 plain
    snapshot_run 3 mq
    read -r pmin pmx pbe pd1 pdh ps1 psh plf pll pde pse pdv psv < <(held_figures s3-plain)
    read -r mmin mmx mbe md1 mdh ms1 msh mlf mll mde mse mdv msv < <(held_figures s3-mq)
    row "3  consumed/produced, lowest ${WIN}-s window held" "$pmin" "$mmin" "-" ">=0.95" "$(verdict "$mmin" 0.95)"
    row "3  backlog, highest at a window end while held" "$pmx" "$mmx" "-" "<=$BOUND" "$(verdict_le "$mmx" "$BOUND")"
    row "3  backlog when the snapshot was released" "$pbe" "$mbe" "-" "-" "info"
    row "3  consumer latency ms, first ${FL}s" "$plf" "$mlf" "$(ratio "$plf" "$mlf")" "-" "info"
    row "3  consumer latency ms, last ${FL}s held" "$pll" "$mll" "$(ratio "$pll" "$mll")" "-" "info"
    PK=$(ratio "$plf" "$pll"); MK=$(ratio "$mlf" "$mll")
    row "3  consumer latency, last / first" "$PK" "$MK" "-" "<=1.50" "$(verdict_le "$MK" 1.5)"
    row "3  dead tuples, end of first window" "$pd1" "$md1" "-" "-" "info"
    row "3  dead tuples at release" "$pdh" "$mdh" "-" "-" "info"
    PG=$(grows "$pd1" "$pdh" 1000); MG=$(grows "$md1" "$mdh" 1000)
    row "3  dead tuples growth, release / first window" "$PG" "$MG" "-" "<=1.50" "$(verdict_le "$MG" 1.5)"
    row "3  size MB (tables+indexes), end of first window" "$ps1" "$ms1" "-" "-" "info"
    row "3  size MB at release" "$psh" "$msh" "-" "-" "info"
    PG=$(grows "$ps1" "$psh" 1); MG=$(grows "$ms1" "$msh" 1)
    row "3  size growth, release / first window" "$PG" "$MG" "-" "<=1.50" "$(verdict_le "$MG" 1.5)"
    row "3  dead tuples ${RECOVER}s after release (autovacuum)" "$pde" "$mde" "-" "-" "$(came_down "$mdh" "$mde")"
    row "3  dead tuples after plain VACUUM" "$pdv" "$mdv" "-" "-" "$(came_down "$mdh" "$mdv")"
    row "3  size MB ${RECOVER}s after release (autovacuum)" "$pse" "$mse" "-" "-" "$(came_down "$msh" "$mse")"
    row "3  size MB after plain VACUUM" "$psv" "$msv" "-" "-" "$(came_down "$msh" "$msv")"
    {
        echo "3  held snapshot, per ${WIN}-s window (t = end of the window; consumed = produced - backlog growth;"
        echo "   claim_ms = mean consumer transaction latency; dead, MB = n_dead_tup and size of the tables; autovacuums = their autovacuum_count)"
        echo "   plain table:"; sed 's/^/   /' "$RES/s3-plain-windows.txt"
        echo "   mq (every table of schema mq):"; sed 's/^/   /' "$RES/s3-mq-windows.txt"
        echo "   mq tables after the plain VACUUM (name live dead bytes): $(tr '\n' ';' <"$RES/s3-mq-tables-after-vacuum.txt")"
        echo
    } >>"$TABLES"
fi

# ---------------------------------------------------------------- shape 4: clients
if want 4; then
    section "4  no anti-scaling: read+ack 1/tx, 8 | 64 | 256 clients, -j $THREADS, $PREFILL_4 queued; plain table | mq"
    declare -A L4=()
    for r in $(seq "$ROUNDS"); do
        for c in 8 64 256; do
            for side in plain mq; do
                emptied $side
                if [ $side = plain ]; then reset_plain "$PREFILL_4"; sc=read1_baseline.sql
                else reset_mq; mq_fill bench "$PREFILL_4" "$PAYLOAD"; sc=read1_mq.sql; fi
                settle
                tps=$(pgb "s4-$side-c$c-$r" $sc "$DUR" $c)
                left=$(backlog_of $side)
                [ "$left" -lt $(( c * 2 )) ] && note "WARNING s4-$side-c$c-$r: queue DRAINED (left $left); raise PREFILL_4"
                log "s4 $side $c clients round $r: $tps tps, $left left"
                L4[$side-$c]+=" $tps"
            done
        done
    done
    for c in 8 64 256; do
        P=$(median ${L4[plain-$c]}); M=$(median ${L4[mq-$c]})
        eval "P$c=$P M$c=$M"
        row "4  $c clients (tps)" "$P" "$M" "$(ratio "$P" "$M")" "-" "info"
    done
    for c in 64 256; do
        eval "PR=\$(ratio \$P8 \$P$c) MR=\$(ratio \$M8 \$M$c)"
        row "4  $c / 8 clients" "$PR" "$MR" "-" ">=0.90" "$(verdict "$MR" 0.9)"
    done
    for c in 8 64 256; do note "s4 runs (tps) $c clients: plain${L4[plain-$c]}; mq${L4[mq-$c]}"; done
fi

# ---------------------------------------------------------------- shape 5: mixed
# mixed_run SIDE ROUND [RATE]: 4 producers (1 message/tx, unthrottled, or
# paced at RATE messages/s in all) and 4 consumers (read 1 + ack) at once for
# DUR s from an empty queue; echoes
# "produced/s consumed/s backlog_growth/s consumed/produced"
mixed_run() {
    local side=$1 r=$2 rate=${3:-} tag=s5-$1-$2${3:+-paced} ps cs produced left
    emptied $side
    if [ $side = plain ]; then reset_plain 0; ps=send_baseline.sql; cs=shapes_read1_baseline.sql
    else reset_mq; ps=send_mq.sql; cs=read1_mq.sql; fi
    settle
    pgb_bg "$tag-producers" $ps "$DUR" 4 ${rate:+-R "$rate"}
    PGB_OPTS=$([ $side = plain ] && echo "$PLAIN_CONSUMER_OPTS") pgb_bg "$tag-consumers" $cs "$DUR" 4
    bg_wait || note "WARNING $tag: a pgbench exited with an error, see $RES/$tag-*.log"
    produced=$(tx_of "$RES/$tag-producers.log")
    left=$(backlog_of $side)
    log "$tag: produced $produced, left $left, consumer tps $(tps_of "$RES/$tag-consumers.log")"
    awk -v p="$produced" -v l="$left" -v d="$DUR" 'BEGIN{ printf "%.1f %.1f %.1f %.3f\n", p / d, (p - l) / d, l / d, (p > 0) ? (p - l) / p : 0 }'
}
# median2 X...: the median with two decimals (lib.sh's median keeps one)
median2() { printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END{ printf "%.2f", (NR%2) ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2 }'; }
if want 5; then
    section "5  mixed: 4 producers (1 msg/tx, unthrottled) + 4 consumers (read 1 + ack) at once, ${DUR}s from empty; plain table | mq"
    declare -A L5=()
    for r in $(seq "$ROUNDS"); do
        for side in plain mq; do
            read -r a b c d < <(mixed_run $side "$r")
            L5[$side-p]+=" $a"; L5[$side-c]+=" $b"; L5[$side-g]+=" $c"; L5[$side-k]+=" $d"
        done
    done
    P=$(median ${L5[plain-p]}); M=$(median ${L5[mq-p]}); row "5  produced/s" "$P" "$M" "$(ratio "$P" "$M")" "-" "info"
    P=$(median ${L5[plain-c]}); M=$(median ${L5[mq-c]}); row "5  consumed/s" "$P" "$M" "$(ratio "$P" "$M")" "-" "info"
    P=$(median ${L5[plain-g]}); M=$(median ${L5[mq-g]}); row "5  backlog growth/s" "$P" "$M" "-" "-" "info"
    P=$(median2 ${L5[plain-k]}); M=$(median2 ${L5[mq-k]})
    row "5  consumed / produced, unthrottled (info)" "$P" "$M" "-" "-" "info"
    note "s5 runs (produced/s consumed/s): plain $(paste -d/ <(printf '%s\n' ${L5[plain-p]}) <(printf '%s\n' ${L5[plain-c]}) | tr '\n' ' '); mq $(paste -d/ <(printf '%s\n' ${L5[mq-p]}) <(printf '%s\n' ${L5[mq-c]}) | tr '\n' ' ')"
    # Unthrottled, neither side can keep up on a small machine: producers and
    # consumers share the cores, and a claim + ack costs more than a send
    # (the plain table's DELETE is about as cheap as its INSERT). Whether
    # consumers keep up is therefore asked at a rate that can be kept up
    # with: producers paced at 90 % of the plain table's consumed rate above.
    RATE5=$(awk -v c="$(median ${L5[plain-c]})" 'BEGIN{ printf "%d", c * 0.9 }')
    for r in $(seq "$ROUNDS"); do
        for side in plain mq; do
            read -r a b c d < <(mixed_run $side "$r" "$RATE5")
            L5[$side-pk]+=" $d"; L5[$side-pc]+=" $b"
        done
    done
    P=$(median2 ${L5[plain-pk]}); M=$(median2 ${L5[mq-pk]})
    row "5  consumed / produced, producers at ${RATE5}/s" "$P" "$M" "-" ">=0.95" "$(verdict "$M" 0.95)"
    note "s5 paced runs at ${RATE5}/s (consumed/produced): plain${L5[plain-pk]}; mq${L5[mq-pk]}"
fi

# ---------------------------------------------------------------- shape 6: partitioned under a held snapshot
if want 6; then
    section "6  partitioned queue (4 partitions) under a held snapshot ${HOLD}s: 4 keyed producers at $RATE msg/s, group of 4 members poll 100 + commit"
    snapshot_run 6 log
    read -r lmin lmx lbe ld1 ldh ls1 lsh llf lll lde lse ldv lsv < <(held_figures s6-log)
    row "6  poll+commit latency ms, first ${FL}s | last ${FL}s" "$llf" "$lll" "$(ratio "$llf" "$lll")" "<=1.50" "$(verdict_le "$(ratio "$llf" "$lll")" 1.5)"
    row "6  consumed/produced, lowest window" "" "$lmin" "-" "-" "info"
    row "6  lag (messages), highest at a window end" "" "$lmx" "-" "-" "info"
    row "6  dead tuples (schema mq), first window | release" "$ld1" "$ldh" "$(grows "$ld1" "$ldh" 1000)" "-" "info"
    row "6  size MB (schema mq), first window | release" "$ls1" "$lsh" "$(grows "$ls1" "$lsh" 1)" "-" "info"
    row "6  dead tuples after release | after plain VACUUM" "$lde" "$ldv" "-" "-" "info"
    nh=$(( HOLD / WIN ))
    {
        echo "6  partitioned queue under a held snapshot, per ${WIN}-s window (consumed = committed offsets advanced;"
        echo "   backlog = lag summed over partitions; claim_ms = mean poll+commit transaction latency)"
        sed 's/^/   /' "$RES/s6-log-windows.txt"
        echo "   tables of schema mq with dead tuples at release (name live dead bytes): $(awk -v k="$nh" '$1 == k && $4 > 0 { printf "%s %s %s %s; ", $2, $3, $4, $5 }' "$RES/s6-log-tables.txt")"
        echo "   the same after the plain VACUUM: $(awk '$3 > 0 { printf "%s %s %s %s; ", $1, $2, $3, $4 }' "$RES/s6-log-tables-after-vacuum.txt")"
        echo
    } >>"$TABLES"
    q -c "SELECT mq.drop_queue('p')" >/dev/null
fi

# ---------------------------------------------------------------- shape 7: metrics cost
# time_calls SQL: median ms of TIMED calls (psql \timing, after one warm-up)
time_calls() {
    { echo '\timing on'; for i in $(seq 0 $TIMED); do echo "$1"; done; } |
        q 2>&1 | awk '/^Time: / { if (n++) print $2 }' | sort -g |
        awk '{a[NR]=$1} END{ if (NR==0) print "ERR"; else if (NR%2) printf "%.2f\n", a[(NR+1)/2]; else printf "%.2f\n", (a[NR/2]+a[NR/2+1])/2 }'
}
if want 7; then
    section "7  metrics cost: queue of $SMALL | $BIG messages; read+ack 1/tx 8 clients on $RATE_FILL, without | with a 9th session calling mq.metrics every second"
    emptied mq
    reset_mq; mq_fill bench $SMALL "$PAYLOAD"; settle
    TMS=$(time_calls "SELECT * FROM mq.metrics('bench');"); TQS=$(time_calls "SELECT * FROM mq.queues;")
    reset_mq; log "s7: filling $BIG messages"; mq_fill bench "$BIG" "$PAYLOAD"; settle
    TMB=$(time_calls "SELECT * FROM mq.metrics('bench');"); TQB=$(time_calls "SELECT * FROM mq.queues;")
    R=$(ratio "$TMS" "$TMB"); row "7  SELECT * FROM mq.metrics (ms), small | big" "$TMS" "$TMB" "$R" "<=2.00" "$(verdict_le "$R" 2)"
    R=$(ratio "$TQS" "$TQB"); row "7  SELECT * FROM mq.queues (ms), small | big" "$TQS" "$TQB" "$R" "<=2.00" "$(verdict_le "$R" 2)"
    w0=(); w1=(); ml=()
    for r in $(seq "$ROUNDS"); do
        for v in without with; do
            reset_mq; mq_fill bench "$RATE_FILL" "$PAYLOAD"; settle
            [ $v = with ] && pgb_bg "s7-metrics-$r" shapes_metrics.sql "$DUR" 1
            tps=$(pgb "s7-read-$v-$r" read1_mq.sql "$DUR" 8)
            if [ $v = with ]; then
                bg_wait || note "WARNING s7-metrics-$r: pgbench failed"
                ml+=("$(awk '/^latency average/{printf "%.1f", $4 - 1000; exit}' "$RES/s7-metrics-$r.log")")
                w1+=("$tps")
            else
                w0+=("$tps")
            fi
            [ "$(ready_of)" -lt 16 ] && note "WARNING s7-read-$v-$r: queue DRAINED; raise RATE_FILL"
            log "s7 read+ack $v metrics session, round $r: $tps tps"
        done
    done
    W0=$(median "${w0[@]}"); W1=$(median "${w1[@]}"); R=$(ratio "$W0" "$W1")
    row "7  read+ack (tps), without | with mq.metrics each second" "$W0" "$W1" "$R" ">=0.90" "$(verdict "$R" 0.9)"
    note "s7 runs (tps): without ${w0[*]}; with ${w1[*]}; mean mq.metrics time of the 9th session under load (ms; pgbench latency average less the 1 s sleep): ${ml[*]}"
fi

# ---------------------------------------------------------------- report
{
    echo
    echo "ended $(date -u '+%Y-%m-%d %H:%M UTC'), load $(cut -d' ' -f1-3 /proc/loadavg)"
    printf '%-52s %12s %12s %7s %8s  %s\n' "shape / figure" "reference" "measured" "ratio" "target" "verdict"
    echo "(reference = the same workload without the obstacle / 8 clients / plain table / small queue, same run)"
    printf '%s\n' "${ROWS[@]}"
    echo
    cat "$TABLES"
    cat "$NOTES"
} | tee -a "$SUMMARY"
# charts of the held-snapshot runs next to the tables (needs gnuplot)
"$HERE/plot.sh" "$RES" || echo "bench/shapes.sh: bench/plot.sh failed; the tables above are complete" >&2

#!/usr/bin/env bash
# bench/run.sh -- throughput of mq against a plain-table queue, same machine, same run.
#
# usage: bench/run.sh [--quick] [--only N[,M...]] [--rounds R] [--preload] [--baseline-only]
#
#   --quick          5 s per measured run (workload 4: 20 s) instead of 15 s (60 s)
#   --only N         run only workload N (1..4); a comma list is fine: --only 2,3
#   --rounds R       measured runs per side and workload, interleaved baseline, mq,
#                    baseline, mq, ... (default 3; the table shows the median)
#   --preload        start the server with shared_preload_libraries = 'mq' and
#                    mq.database = 'bench' (mq's background worker and shared
#                    memory, as needed for long polling and partitioned queues)
#   --baseline-only  skip everything that needs mq (checks the harness itself)
#
# It installs nothing: build and install the extension first
#     cd /work/main && make && make install
# then run as root (the cluster is started as the `postgres` OS user):
#     bench/run.sh
# A throwaway cluster is created with initdb in a mktemp directory, listens on
# the unix socket in that directory only, port $PORT (default 55434), and is
# removed on exit. Raw pgbench output, the server log and summary.txt are kept
# in bench/results/<UTC timestamp>/ (git-ignored).
set -eu -o pipefail
shopt -s inherit_errexit    # an error inside $(...) stops the run too

HERE=$(cd "$(dirname "$0")" && pwd)
. "$HERE/lib.sh"
. "$HERE/cluster.sh"

QUICK=0
ONLY=1,2,3,4
ROUNDS=3
BASELINE_ONLY=0
PRELOAD=0
while [ $# -gt 0 ]; do
    case "$1" in
        --quick) QUICK=1 ;;
        --only) ONLY=$2; shift ;;
        --only=*) ONLY=${1#--only=} ;;
        --rounds) ROUNDS=$2; shift ;;
        --baseline-only) BASELINE_ONLY=1 ;;
        --preload) PRELOAD=1 ;;
        -h|--help) sed -n '2,23p' "$0"; exit 0 ;;
        *) echo "unknown argument: $1 (see --help)" >&2; exit 2 ;;
    esac
    shift
done

CLIENTS=8
THREADS=2
if [ $QUICK = 1 ]; then
    DUR=${DUR:-5}; LONG_DUR=${LONG_DUR:-20}
else
    DUR=${DUR:-15}; LONG_DUR=${LONG_DUR:-60}
fi
# Queue depth before each consuming run: enough that the queue never empties
# during the run (checked afterwards; a drained run is flagged DRAINED).
PREFILL_1=${PREFILL_1:-$(( DUR * 35000 ))}        # workload 2: read+ack 1 per tx
PREFILL_100=${PREFILL_100:-$(( DUR * 250000 ))}   # workload 3: read+ack 100 per tx
PREFILL_LONG=${PREFILL_LONG:-$(( LONG_DUR * 20000 ))} # workload 4
# one ~100-byte jsonb message
PAYLOAD='{"template":"welcome","user_id":123456789,"email":"ana.example@example.com","locale":"en-US","n":1}'

want() { case ",$ONLY," in *",$1,"*) return 0 ;; *) return 1 ;; esac; }

RES=$HERE/results/$(date -u +%Y%m%dT%H%M%SZ)
mkdir -p "$RES"
SUMMARY=$RES/summary.txt

SHAREDIR=$("$PGBIN/pg_config" --sharedir 2>/dev/null || pg_config --sharedir)
if [ $BASELINE_ONLY = 0 ] && [ ! -f "$SHAREDIR/extension/mq.control" ]; then
    echo "mq is not installed in $SHAREDIR/extension; run 'make && make install' in the repo first" >&2
    exit 1
fi

# The extension may be reinstalled under us by a concurrent `make install`;
# then new backends would load the new mq.so next to the old SQL objects.
# Stop rather than report figures from two builds. With --preload every
# backend inherits the mq.so the postmaster loaded at start, so a reinstall
# does not matter.
SO_FILE=$("$PGBIN/pg_config" --pkglibdir)/mq.so
so_stamp() { stat -c %Y "$SO_FILE" 2>/dev/null || echo none; }
SO_STAMP=$(so_stamp)
check_build() {
    if [ $PRELOAD = 0 ] && [ "$(so_stamp)" != "$SO_STAMP" ]; then
        echo "mq.so was reinstalled during the benchmark; figures would mix two builds. Run again." >&2
        exit 3
    fi
}

HOLDER_PID=
on_exit() {
    if [ -n "$HOLDER_PID" ]; then kill "$HOLDER_PID" 2>/dev/null || true; fi
    if [ -n "$PGDATA_DIR" ] && [ -f "$CLUSTER_DIR/server.log" ]; then
        cp "$CLUSTER_DIR/server.log" "$RES/server.log" 2>/dev/null || true
    fi
    cluster_stop
}
trap on_exit EXIT
trap 'exit 130' INT TERM

log() { echo "[$(date -u +%H:%M:%S)] $*" >&2; }

if [ $PRELOAD = 1 ]; then
    cluster_start "shared_preload_libraries = 'mq'" "mq.database = 'bench'"
else
    cluster_start
fi
log "cluster up: $CLUSTER_DIR port $PORT; results in $RES"
q -c "CREATE TABLE baseline(id bigserial primary key, payload jsonb not null,
                            created_at timestamptz not null default clock_timestamp())"
if [ $BASELINE_ONLY = 0 ]; then
    q -c "CREATE EXTENSION mq"
fi

# ---------------------------------------------------------------- helpers

# reset SIDE N: empty the baseline table / recreate queue 'bench', then put N
# messages in it, VACUUM ANALYZE and CHECKPOINT so every run starts alike.
reset() {
    local side=$1 n=$2
    check_build
    # Empty the other side too: leftovers would cost vacuum and mq's
    # background maintenance time during this run.
    q -c "TRUNCATE baseline RESTART IDENTITY"
    if [ $BASELINE_ONLY = 0 ]; then q -c "SELECT mq.drop_queue('bench')" >/dev/null; fi
    if [ "$side" = baseline ]; then
        if [ "$n" -gt 0 ]; then
            q -v payload="$PAYLOAD" -v n="$n" <<<"INSERT INTO baseline(payload)
                SELECT :'payload'::jsonb FROM generate_series(1, :n)"
        fi
    else
        if [ "$side" = mq-nonotify ]; then
            q -c "SELECT mq.create_queue('bench', notify => false)" >/dev/null
        else
            q -c "SELECT mq.create_queue('bench')" >/dev/null
        fi
        if [ "$n" -gt 0 ]; then
            q -v payload="$PAYLOAD" -v n="$n" <<'SQL'
SELECT set_config('bench.payload', :'payload', false), set_config('bench.n', :'n', false) \g /dev/null
DO $$
DECLARE
    n     int := current_setting('bench.n')::int;
    p     jsonb := current_setting('bench.payload')::jsonb;
    done  int := 0;
    chunk int;
BEGIN
    WHILE done < n LOOP
        chunk := least(10000, n - done);
        PERFORM mq.send_batch('bench', array_fill(p, ARRAY[chunk]));
        done := done + chunk;
    END LOOP;
END $$;
SQL
        fi
    fi
    q -c "VACUUM ANALYZE"
    q -c "CHECKPOINT"
}

# depth SIDE: messages left
depth() {
    if [ "$1" = baseline ]; then q -c "SELECT count(*) FROM baseline"
    else q -c "SELECT depth FROM mq.metrics('bench')"; fi
}

# pgb LABEL SCRIPT DURATION [pgbench args...]: run pgbench, keep its output in
# $RES/LABEL.log, print the tps (or "ERR" if the run was aborted).
pgb() {
    local label=$1 script=$2 dur=$3; shift 3
    local out=$RES/$label.log rc=0
    "$PGBIN/pgbench" -h "$SOCK_DIR" -p "$PORT" -U postgres -n -M prepared \
        -c $CLIENTS -j $THREADS -T "$dur" -D payload="$PAYLOAD" "$@" \
        -f "$HERE/$script" bench >"$out" 2>&1 || rc=$?
    local tps
    tps=$(awk '/^tps = /{print $3; exit}' "$out")
    if [ $rc != 0 ] || [ -z "$tps" ]; then
        log "pgbench $label failed (rc=$rc), see $out:"; tail -5 "$out" >&2
        echo ERR
    else
        printf '%.1f\n' "$tps"
    fi
}

times() { awk -v a="$1" -v k="$2" 'BEGIN{ if (a == "ERR") print a; else printf "%.1f\n", a*k }'; }

ROWS=()     # lines of the results table
row() { ROWS+=("$(printf '%-44s %12s %12s %8s %8s  %s' "$@")"); }
# per-run figures and warnings, printed under the table (a file, because
# most callers run in $(...) subshells)
NOTES=$RES/notes.txt; : >"$NOTES"
note() { echo "$*" >>"$NOTES"; log "$*"; }

# one measured consuming run: reset SIDE with N messages, run SCRIPT, check
# the queue did not drain; echoes the tps.
consume_run() {
    local side=$1 n=$2 label=$3 script=$4 k=$5 tps left
    reset "$side" "$n"
    tps=$(pgb "$label" "$script" "$DUR")
    left=$(depth "$side")
    if [ "$left" -lt $(( CLIENTS * k * 2 )) ]; then
        note "WARNING $label: queue DRAINED (left $left of $n); raise the prefill"
        tps="$tps(DRAINED)"
    fi
    log "$label: $tps tps, $left left"
    echo "${tps%(DRAINED)}"
}

# ---------------------------------------------------------------- header
{
    echo "mq bench $(date -u '+%Y-%m-%d %H:%M UTC'), host $(hostname), $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg)"
    echo "$("$PGBIN/postgres" --version); installed mq.so $(date -u -r "$("$PGBIN/pg_config" --pkglibdir)/mq.so" '+%H:%M:%S UTC' 2>/dev/null || echo '?'); repo commit $(git -C "$HERE/.." rev-parse --short HEAD 2>/dev/null || echo ?)$(git -C "$HERE/.." diff --quiet HEAD -- . ':!bench' 2>/dev/null || echo '+dirty')"
    echo "pgbench -M prepared -n -c $CLIENTS -j $THREADS; ${DUR}s per run (workload 4: ${LONG_DUR}s), $ROUNDS interleaved rounds, median shown"
    echo "shared_buffers=256MB, fsync=on, synchronous_commit=on, autovacuum default; payload ${#PAYLOAD} bytes$([ $PRELOAD = 1 ] && echo "; shared_preload_libraries=mq")"
} | tee "$SUMMARY" >&2

# ---------------------------------------------------------------- workload 1
# Queues NOTIFY their channel at commit by default (once per transaction);
# when create_queue has the notify parameter, 1b measures a queue without it.
HAS_NOTIFY=0
if [ $BASELINE_ONLY = 0 ] && [ "$(q -c "SELECT count(*) FROM pg_proc WHERE oid = 'mq.create_queue'::regproc
                                         AND 'notify' = ANY (proargnames)")" = 1 ]; then
    HAS_NOTIFY=1
fi

if want 1; then
    b=(); m=(); mn=()
    for r in $(seq "$ROUNDS"); do
        reset baseline 0; b+=("$(pgb w1-baseline-$r send_baseline.sql "$DUR")"); log "w1 baseline round $r: ${b[-1]} tps"
        if [ $BASELINE_ONLY = 0 ]; then
            reset mq 0; m+=("$(pgb w1-mq-$r send_mq.sql "$DUR")"); log "w1 mq round $r: ${m[-1]} tps"
        fi
        if [ $HAS_NOTIFY = 1 ]; then
            reset mq-nonotify 0; mn+=("$(pgb w1b-mq-$r send_mq.sql "$DUR")"); log "w1b mq notify => false round $r: ${mn[-1]} tps"
        fi
    done
    B=$(median "${b[@]}"); M=$(median "${m[@]:-ERR}"); R=$(ratio "$B" "$M")
    row "1 send, 1 msg/tx (tps)" "$B" "$M" "$R" ">=0.90" "$(verdict "$R" 0.9)"
    if [ $HAS_NOTIFY = 1 ]; then
        MN=$(median "${mn[@]}"); RN=$(ratio "$B" "$MN")
        row "1b send, queue with notify => false (tps)" "$B" "$MN" "$RN" "-" "info"
    fi
    note "w1 runs: baseline ${b[*]}; mq ${m[*]:-}; mq notify => false ${mn[*]:-}"
fi

# ---------------------------------------------------------------- workload 2
if want 2; then
    b=(); m=(); m2=()
    for r in $(seq "$ROUNDS"); do
        b+=("$(consume_run baseline "$PREFILL_1" w2-baseline-$r read1_baseline.sql 1)")
        if [ $BASELINE_ONLY = 0 ]; then
            m+=("$(consume_run mq "$PREFILL_1" w2-mq-$r read1_mq.sql 1)")
            m2+=("$(consume_run mq "$PREFILL_1" w2b-mq-$r read1_mq_2stmt.sql 1)")
        fi
    done
    B=$(median "${b[@]}"); M=$(median "${m[@]:-ERR}"); R=$(ratio "$B" "$M")
    row "2 read+ack 1/tx, one statement (tps)" "$B" "$M" "$R" ">=0.70" "$(verdict "$R" 0.7)"
    M2=$(median "${m2[@]:-ERR}"); R2=$(ratio "$B" "$M2")
    row "2b read+ack 1/tx, BEGIN;read;ack;COMMIT (tps)" "$B" "$M2" "$R2" "-" "info"
    note "w2 runs: baseline ${b[*]}; mq ${m[*]:-}; mq two statements ${m2[*]:-}"
fi

# ---------------------------------------------------------------- workload 3
if want 3; then
    b=(); m=()
    for r in $(seq "$ROUNDS"); do
        b+=("$(consume_run baseline "$PREFILL_100" w3-baseline-$r read100_baseline.sql 100)")
        if [ $BASELINE_ONLY = 0 ]; then
            m+=("$(consume_run mq "$PREFILL_100" w3-mq-$r read100_mq.sql 100)")
        fi
    done
    B=$(times "$(median "${b[@]}")" 100); M=$(times "$(median "${m[@]:-ERR}")" 100); R=$(ratio "$B" "$M")
    row "3 read+ack 100/tx (messages/s)" "$B" "$M" "$R" ">=0.60" "$(verdict "$R" 0.6)"
    note "w3 runs (tps, x100 = msg/s): baseline ${b[*]}; mq ${m[*]:-}"
fi

# ---------------------------------------------------------------- workload 4
# Workload 2 for LONG_DUR seconds while another session holds a REPEATABLE
# READ snapshot (so the xmin horizon cannot advance and nothing dead can be
# removed). Progress every 5 s; report first 10 s vs last 10 s and dead tuples.

start_holder() {
    PGAPPNAME=mq-bench-holder "$PGBIN/psql" -h "$SOCK_DIR" -p "$PORT" -U postgres -d bench -X -q \
        >"$RES/$1-holder.log" 2>&1 <<SQL &
BEGIN ISOLATION LEVEL REPEATABLE READ;
SELECT 1 FROM baseline LIMIT 1;
SELECT pg_sleep($(( LONG_DUR + 10 )));
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
stop_holder() {
    q -c "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
           WHERE application_name = 'mq-bench-holder'" >/dev/null
    wait "$HOLDER_PID" 2>/dev/null || true
    HOLDER_PID=
}

# long_run SIDE SCRIPT: one long run; writes "first10 last10 kept avg dead size"
# to $RES/w4-SIDE.result and the 5-second rates to $RES/w4-SIDE-timeline.txt
long_run() {
    local side=$1 script=$2 label=w4-$1 tps dead size left
    reset "$side" "$PREFILL_LONG"
    start_holder "$label"
    tps=$(pgb "$label" "$script" "$LONG_DUR" -P 5)
    sleep 1   # let the exited pgbench backends' statistics land
    if [ "$side" = baseline ]; then
        read -r dead size < <(q -F ' ' -c "SELECT n_dead_tup, pg_size_pretty(pg_total_relation_size(relid))
                                            FROM pg_stat_user_tables WHERE relname = 'baseline'")
    else
        # every table of schema mq (the queue's storage is mq.q_<id>...)
        q -F ' ' -c "SELECT c.relname, s.n_live_tup, s.n_dead_tup, pg_size_pretty(pg_total_relation_size(c.oid))
                       FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                       JOIN pg_stat_user_tables s ON s.relid = c.oid
                      WHERE n.nspname = 'mq' ORDER BY 1" >"$RES/$label-tables.txt"
        read -r dead size < <(q -F ' ' -c "SELECT sum(s.n_dead_tup), pg_size_pretty(sum(pg_total_relation_size(c.oid)))
                       FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                       JOIN pg_stat_user_tables s ON s.relid = c.oid
                      WHERE n.nspname = 'mq'")
    fi
    stop_holder
    left=$(depth "$side")
    if [ "$left" -lt $(( CLIENTS * 2 )) ]; then
        note "WARNING $label: queue DRAINED (left $left); raise PREFILL_LONG"
    fi
    awk '$1 == "progress:" { printf "%s ", $4 } END { print "" }' "$RES/$label.log" >"$RES/$label-timeline.txt"
    awk -v tps="$tps" -v dead="$dead" -v size="$size" '
        $1 == "progress:" { r[++n] = $4 }
        END {
            if (n < 4) { print "ERR ERR -", tps, dead, size; exit }
            f = (r[1] + r[2]) / 2; l = (r[n-1] + r[n]) / 2
            printf "%.1f %.1f %.2f %s %s %s\n", f, l, (f > 0 ? l / f : 0), tps, dead, size
        }' "$RES/$label.log" >"$RES/$label.result"
}

if want 4; then
    long_run baseline read1_baseline.sql
    read -r bf bl bk bavg bdead bsize <"$RES/w4-baseline.result"
    note "w4 baseline tps every 5 s: $(cat "$RES/w4-baseline-timeline.txt")"
    if [ $BASELINE_ONLY = 0 ]; then
        long_run mq read1_mq.sql
        read -r mf ml mk mavg mdead msize <"$RES/w4-mq.result"
        note "w4 mq tps every 5 s: $(cat "$RES/w4-mq-timeline.txt")"
        note "w4 mq tables (relname live dead size): $(tr '\n' ';' <"$RES/w4-mq-tables.txt")"
    else
        mf=ERR ml=ERR mk=- mavg=ERR mdead=- msize=-
    fi
    row "4 as 2, ${LONG_DUR}s, RR snapshot held: avg (tps)" "$bavg" "$mavg" "$(ratio "$bavg" "$mavg")" "-" "info"
    row "4   rate in first 10 s (tps)" "$bf" "$mf" "$(ratio "$bf" "$mf")" "-" "info"
    row "4   rate in last 10 s (tps)" "$bl" "$ml" "$(ratio "$bl" "$ml")" "-" "info"
    row "4   share kept, last 10 s / first 10 s" "$bk" "$mk" "" "-" "info"
    row "4   dead tuples after the run" "$bdead" "$mdead" "" "-" "info"
    row "4   table size after the run (incl. indexes)" "$bsize" "$msize" "" "-" "info"
fi

# ---------------------------------------------------------------- report
check_build
{
    echo
    printf '%-44s %12s %12s %8s %8s  %s\n' workload baseline mq mq/base target verdict
    printf '%s\n' "${ROWS[@]}"
    echo
    cat "$NOTES"
} | tee -a "$SUMMARY"

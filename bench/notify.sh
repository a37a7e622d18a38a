#!/usr/bin/env bash
# bench/notify.sh -- issue 13: wake-ups without the commit lock (the NOTIFY relay).
#
# usage: bench/notify.sh [--quick] [--rounds R] [--only N[,M]]
#
#   --quick      5 s runs, one round, instead of 15 s and 3 rounds
#   --rounds R   measured runs per variant, interleaved (default 3)
#   --only N     run only workload N (1 or 2)
#
# Workloads (mq preloaded: producers mark their queues at commit, the relay
# worker of the database NOTIFYs, src/relay.c):
#   1  producer throughput, 8 pgbench clients, one mq.send per transaction
#      (push_send.sql), three variants per round, interleaved:
#        off       queue notify => false, nobody listening
#        listen    notify => true, one session with a plain LISTEN "mq.bench"
#                  draining its notifications (bench/latency.c rawdrain)
#        nolisten  notify => true, nobody listening (the relay notifies anyway)
#      Target: listen >= 0.95x off (before the relay: 0.39-0.41x).  The
#      listener's notification count against the sends shows the coalescing.
#   2  commit-to-listener latency at a steady 500 messages/s (pgbench -R 500,
#      4 clients, push_produce.sql) with one listener that reads when notified
#      (bench/latency.c listen: mq.listen, then mq.read without wait whenever a
#      notification arrives): latency = clock_timestamp() right after the
#      claim - pg_xact_commit_timestamp() of the producer's transaction
#      (track_commit_timestamp = on), both server clocks, so it includes the
#      relay, the NOTIFY delivery and the listener's read.  Targets: p50 < 2 ms,
#      p99 < 10 ms.  Interleaved with the same load read by one long poll
#      (mq.read with wait, queue notify => false; woken through shared memory,
#      no NOTIFY): the floor that scheduling on the machine sets.
#
# It installs nothing: `make install` first (PGBIN points at the server's
# bindir, default /usr/lib/postgresql/15/bin). Run as root; a throwaway cluster
# (bench/cluster.sh, fsync and synchronous_commit on) on port $PORT (default
# 55443). Raw output in bench/results/notify-<UTC timestamp>/.
set -eu -o pipefail
shopt -s inherit_errexit

HERE=$(cd "$(dirname "$0")" && pwd)
. "$HERE/lib.sh"
PORT=${PORT:-55443}
. "$HERE/cluster.sh"

QUICK=0
ROUNDS=
ONLY=1,2
while [ $# -gt 0 ]; do
    case "$1" in
        --quick) QUICK=1 ;;
        --rounds) ROUNDS=$2; shift ;;
        --only) ONLY=$2; shift ;;
        -h|--help) sed -n '2,34p' "$0"; exit 0 ;;
        *) echo "unknown argument: $1 (see --help)" >&2; exit 2 ;;
    esac
    shift
done
if [ $QUICK = 1 ]; then DUR=${DUR:-5}; ROUNDS=${ROUNDS:-1}; else DUR=${DUR:-15}; ROUNDS=${ROUNDS:-3}; fi
RATE=${RATE:-500}
PAYLOAD='{"template":"welcome","user_id":123456789,"email":"ana.example@example.com","locale":"en-US","n":1}'
want() { case ",$ONLY," in *",$1,"*) return 0 ;; *) return 1 ;; esac; }

RES=$HERE/results/notify-$(date -u +%Y%m%dT%H%M%SZ)
mkdir -p "$RES"
SUMMARY=$RES/summary.txt
# mq, latency.c, the cluster and its tables, the exit trap (lib.sh)
wake_bench_start

{
    echo "mq notify relay bench $(date -u '+%Y-%m-%d %H:%M UTC'), $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg)"
    echo "$("$PGBIN/postgres" --version); repo commit $(git -C "$HERE/.." rev-parse --short HEAD 2>/dev/null || echo ?)"
    echo "shared_preload_libraries=mq, fsync=on, synchronous_commit=on; pgbench -M prepared; ${DUR}s runs, $ROUNDS interleaved rounds"
} | tee "$SUMMARY" >&2

# ---------------------------------------------------------------- workload 1
thr_run() {     # thr_run VARIANT ROUND -> tps
    local v=$1 r=$2 notify=true lpid= tps
    [ "$v" = off ] && notify=false
    q -c "SELECT mq.drop_queue('bench')" >/dev/null 2>&1 || true
    q -c "SELECT mq.create_queue('bench', notify => $notify)" >/dev/null
    q -c "VACUUM ANALYZE" -c "CHECKPOINT"
    if [ "$v" = listen ]; then
        PGAPPNAME=mq-listener "$LAT" rawdrain bench $(( DUR + 3 )) >"$RES/w1-$v-$r-listener.out" 2>&1 &
        lpid=$!; BG_PIDS+=($!)
        wait_backends mq-listener 1
        sleep 0.5
    fi
    ( sleep 2; rp=$(q -c "SELECT pid FROM pg_stat_activity WHERE backend_type = 'mq notify relay'")
      if [ -n "$rp" ]; then
          t0=$(awk '{print $14 + $15}' "/proc/$rp/stat"); sleep $(( DUR - 4 )); t1=$(awk '{print $14 + $15}' "/proc/$rp/stat")
          awk -v a="$t0" -v b="$t1" -v d=$(( DUR - 4 )) -v tck="$(getconf CLK_TCK)" 'BEGIN{ printf "%.1f\n", 100 * (b - a) / tck / d }'
      fi ) >"$RES/w1-$v-$r-relaycpu" 2>/dev/null &
    tps=$(pgbench_tps "w1-$v-$r" push_send.sql "$DUR" -c 8 -j 2)
    wait $! 2>/dev/null || true
    [ "$v" != off ] && note "w1 $v round $r: relay CPU $(cat "$RES/w1-$v-$r-relaycpu")% of a core"
    if [ -n "$lpid" ]; then
        wait "$lpid" || true
        BG_PIDS=()
        note "w1 listen round $r: the plain LISTEN got $(sed -n 's/.*notifies=\([0-9]*\).*/\1/p' "$RES/w1-$v-$r-listener.out") notifications for $(awk -v t="$tps" -v d="$DUR" 'BEGIN{printf "%.0f", t*d}') sends"
    fi
    echo "$tps"
}
if want 1; then
    off=(); on=(); nol=(); ron=(); rnol=()
    for r in $(seq "$ROUNDS"); do
        # the order rotates, so that no variant always runs first after a checkpoint
        for v in $(case $(( r % 3 )) in 1) echo off listen nolisten ;; 2) echo listen nolisten off ;; 0) echo nolisten off listen ;; esac); do
            t=$(thr_run "$v" "$r"); log "w1 $v round $r: $t tps"
            case $v in off) o=$t ;; listen) l=$t ;; nolisten) n=$t ;; esac
        done
        off+=("$o"); on+=("$l"); nol+=("$n"); ron+=("$(ratio "$o" "$l")"); rnol+=("$(ratio "$o" "$n")")
    done
    OFF=$(median "${off[@]}"); ON=$(median "${on[@]}"); NOL=$(median "${nol[@]}")
    # ratios keep two decimals (lib.sh's median rounds to one)
    med2() { printf '%s\n' "$@" | grep -v -- '^-$' | sort -g | awk '{a[NR]=$1} END{ if (NR==0) print "-"; else if (NR%2) printf "%.2f\n", a[(NR+1)/2]; else printf "%.2f\n", (a[NR/2]+a[NR/2+1])/2 }'; }
    RON=$(med2 "${ron[@]}"); RNOL=$(med2 "${rnol[@]}")
    {
        echo
        echo "1  producer throughput, 8 clients, 1 send/tx (tps, median of $ROUNDS)"
        printf '   %-48s %10s %8s %8s\n' variant tps "vs off" target
        printf '   %-48s %10s %8s %8s\n' "notify => false, nobody listening" "$OFF" 1.00 -
        printf '   %-48s %10s %8s %8s\n' "notify => true, one plain LISTEN (relay)" "$ON" "$(ratio "$OFF" "$ON")" \
            "$(verdict "$(ratio "$OFF" "$ON")" 0.95)"
        printf '   %-48s %10s %8s %8s\n' "notify => true, nobody listening (relay)" "$NOL" "$(ratio "$OFF" "$NOL")" -
        echo "   runs: off ${off[*]}; listen ${on[*]}; nolisten ${nol[*]}"
        echo "   ratio to off within each round (median): listen $RON ($(verdict "$RON" 0.95)), nolisten $RNOL; rounds: listen ${ron[*]}; nolisten ${rnol[*]}"
    } | tee -a "$SUMMARY" >&2
fi

# ---------------------------------------------------------------- workload 2
lat_round() {   # lat_round MODE ROUND
    local mode=$1 r=$2 lpid tps sent got notify=true
    [ "$mode" = longpoll ] && notify=false
    q -c "SELECT mq.drop_queue('lat')" >/dev/null 2>&1 || true
    q -c "SELECT mq.create_queue('lat', notify => $notify)" >/dev/null
    q -c "TRUNCATE lat_sent, lat_recv" -c "VACUUM ANALYZE lat_sent, lat_recv" -c "CHECKPOINT"
    PGAPPNAME=mq-lat "$LAT" "$mode" lat $(( DUR + 3 )) 5000 >"$RES/w2-$mode-$r-listener.out" 2>&1 &
    lpid=$!; BG_PIDS+=($!)
    wait_backends mq-lat 1
    sleep 0.5
    tps=$(pgbench_tps "w2-$mode-$r-producer" push_produce.sql "$DUR" -c 4 -j 2 -R "$RATE")
    wait "$lpid" || log "listener failed: $(cat "$RES/w2-$mode-$r-listener.out")"
    BG_PIDS=()
    q -c "INSERT INTO lat_result SELECT '$mode', $r, extract(epoch FROM r.recv_at - pg_xact_commit_timestamp(s.xmin)) * 1000
            FROM lat_sent s JOIN lat_recv r USING (msg_id)"
    sent=$(q -c "SELECT count(*) FROM lat_sent")
    got=$(q -c "SELECT count(DISTINCT msg_id) FROM lat_recv")
    note "w2 $mode round $r: producer $tps tps, $sent sent, $got received; $(q -F ' ' -c "SELECT 'p50', round(percentile_cont(0.5) WITHIN GROUP (ORDER BY ms)::numeric, 2), 'p99', round(percentile_cont(0.99) WITHIN GROUP (ORDER BY ms)::numeric, 2), 'max', round(max(ms)::numeric, 2), 'ms' FROM lat_result WHERE mode = '$mode' AND round = $r"); listener: $(cat "$RES/w2-$mode-$r-listener.out")"
}
if want 2; then
    for r in $(seq "$ROUNDS"); do lat_round listen "$r"; lat_round longpoll "$r"; done
    {
        echo
        echo "2  commit-to-delivery latency, $RATE msg/s, one consumer (ms, all rounds pooled)"
        printf '   %-44s %9s %8s %8s %8s %8s  %s\n' mode messages p50 p90 p99 max target
        for mode in listen longpoll; do
            read -r n p50 p90 p99 mx < <(q -F ' ' -c "SELECT count(*),
                round(percentile_cont(0.5) WITHIN GROUP (ORDER BY ms)::numeric, 2),
                round(percentile_cont(0.9) WITHIN GROUP (ORDER BY ms)::numeric, 2),
                round(percentile_cont(0.99) WITHIN GROUP (ORDER BY ms)::numeric, 2),
                round(max(ms)::numeric, 2) FROM lat_result WHERE mode = '$mode'")
            if [ $mode = listen ]; then
                label="listener woken by the relay's NOTIFY"
                tgt="p50<2: $(awk -v p="$p50" 'BEGIN{print (p < 2) ? "PASS" : "MISSED"}'), p99<10: $(awk -v p="$p99" 'BEGIN{print (p < 10) ? "PASS" : "MISSED"}')"
            else
                label="long poll (no NOTIFY; the machine's floor)"; tgt=-
            fi
            printf '   %-44s %9s %8s %8s %8s %8s  %s\n' "$label" "$n" "$p50" "$p90" "$p99" "$mx" "$tgt"
        done
    } | tee -a "$SUMMARY" >&2
fi

{ echo; cat "$NOTES"; } | tee -a "$SUMMARY" >&2

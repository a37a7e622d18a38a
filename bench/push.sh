#!/usr/bin/env bash
# bench/push.sh -- issue 4 benchmarks: wake-ups on commit, NOTIFY cost, idle cost.
#
# usage: bench/push.sh [--quick] [--only N[,M...]] [--rounds R]
#
#   --quick      5 s runs, one round, instead of 20 s (workload 2: 15 s) and 3 rounds
#   --only N     run only workload N (1..3); a comma list is fine: --only 1,3
#   --rounds R   measured runs per mode, interleaved (default 3, --quick 1)
#
# Workloads:
#   1  commit-to-delivery latency at a steady 500 messages/s (pgbench -R 500, 4
#      clients, push_produce.sql) with 2 waiting consumers (bench/latency.c), three ways:
#        longpoll  mq.read(..., wait => '5 s')           (queue notify => false)
#        listen    mq.listen + read on notification      (queue notify => true)
#        poll      mq.read without wait, sleep 100 ms when empty (notify => false)
#      latency = clock_timestamp() right after the claim - pg_xact_commit_timestamp()
#      of the producer's transaction (track_commit_timestamp = on), both server
#      clocks; p50/p99/max over all rounds. Target (longpoll): p50 < 2 ms.
#   2  producer throughput, 8 clients, one mq.send per transaction (push_send.sql):
#      notify => false | notify => true while one session listens through mq.listen
#      (and drains its notifications) | notify => true with nobody listening through
#      mq.listen (a probe session with a plain LISTEN counts what mq still notifies).
#      Since the NOTIFY relay (issue 13) a plain LISTEN is notified like mq.listen:
#      bench/notify.sh measures that; the probe here now sees every notification.
#   3  idle cost: 10 consumers on an empty queue for 20 s (--quick: 5 s), long
#      polling (wait => '5 s') vs plain polling every 100 ms: queries/s (client
#      count and pg_stat_database.xact_commit) and CPU (/proc/<pid>/stat) of their
#      backends, of the whole server and of the clients.
#
# It installs nothing: build and install the extension first
#     cd /work/main && make && make install
# then run as root (the cluster runs as the `postgres` OS user). A throwaway
# cluster (bench/cluster.sh) with shared_preload_libraries = 'mq' and
# track_commit_timestamp = on listens on the unix socket of a mktemp directory,
# port $PORT (default 55442), and is removed on exit. bench/latency.c is
# compiled with cc and libpq into the results directory,
# bench/results/push-<UTC timestamp>/, which also keeps the raw output.
set -eu -o pipefail
shopt -s inherit_errexit

HERE=$(cd "$(dirname "$0")" && pwd)
. "$HERE/lib.sh"
PORT=${PORT:-55442}
. "$HERE/cluster.sh"

QUICK=0
ONLY=1,2,3
ROUNDS=
while [ $# -gt 0 ]; do
    case "$1" in
        --quick) QUICK=1 ;;
        --only) ONLY=$2; shift ;;
        --only=*) ONLY=${1#--only=} ;;
        --rounds) ROUNDS=$2; shift ;;
        -h|--help) sed -n '2,33p' "$0"; exit 0 ;;
        *) echo "unknown argument: $1 (see --help)" >&2; exit 2 ;;
    esac
    shift
done
if [ $QUICK = 1 ]; then
    LAT_DUR=${LAT_DUR:-5}; THR_DUR=${THR_DUR:-5}; IDLE_DUR=${IDLE_DUR:-5}; ROUNDS=${ROUNDS:-1}
else
    LAT_DUR=${LAT_DUR:-20}; THR_DUR=${THR_DUR:-15}; IDLE_DUR=${IDLE_DUR:-20}; ROUNDS=${ROUNDS:-3}
fi
RATE=${RATE:-500}
IDLE_CLIENTS=10
LONGPOLL_MS=5000
PAYLOAD='{"template":"welcome","user_id":123456789,"email":"ana.example@example.com","locale":"en-US","n":1}'
TCK=$(getconf CLK_TCK)

want() { case ",$ONLY," in *",$1,"*) return 0 ;; *) return 1 ;; esac; }

RES=$HERE/results/push-$(date -u +%Y%m%dT%H%M%SZ)
mkdir -p "$RES"
SUMMARY=$RES/summary.txt

# mq, latency.c, the cluster and its tables, the exit trap (lib.sh)
wake_bench_start
PM_PID=$(head -1 "$PGDATA_DIR/postmaster.pid")

TABLES=$RES/tables.txt; : >"$TABLES"
table() { echo "$*" >>"$TABLES"; }

# ---------------------------------------------------------------- header
{
    echo "mq push bench $(date -u '+%Y-%m-%d %H:%M UTC'), host $(hostname), $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg)"
    echo "$("$PGBIN/postgres" --version); installed mq.so $(date -u -r "$("$PGBIN/pg_config" --pkglibdir)/mq.so" '+%H:%M:%S UTC'); repo commit $(git -C "$HERE/.." rev-parse --short HEAD 2>/dev/null || echo ?)$(git -C "$HERE/.." diff --quiet HEAD -- src sql 2>/dev/null || echo '+dirty(src)')"
    echo "shared_preload_libraries=mq, track_commit_timestamp=on, shared_buffers=256MB, fsync=on, synchronous_commit=on; pgbench -M prepared; $ROUNDS interleaved rounds"
} | tee "$SUMMARY" >&2

# ---------------------------------------------------------------- workload 1
lat_round() {   # lat_round MODE ROUND
    local mode=$1 r=$2 notify=false i pids=() sent got tps
    [ "$mode" = listen ] && notify=true
    q -c "SELECT mq.drop_queue('lat')" >/dev/null
    q -c "SELECT mq.create_queue('lat', notify => $notify)" >/dev/null
    q -c "TRUNCATE lat_sent, lat_recv"
    q -c "VACUUM ANALYZE lat_sent, lat_recv" -c "CHECKPOINT"
    for i in 1 2; do
        PGAPPNAME=mq-lat "$LAT" "$mode" lat $(( LAT_DUR + 3 )) $LONGPOLL_MS >"$RES/w1-$mode-$r-c$i.out" 2>&1 &
        pids+=($!); BG_PIDS+=($!)
    done
    wait_backends mq-lat 2
    sleep 0.5
    tps=$(pgbench_tps "w1-$mode-$r-producer" push_produce.sql "$LAT_DUR" -c 4 -j 2 -R "$RATE")
    for i in "${pids[@]}"; do wait "$i" || log "consumer $i failed: $(cat "$RES"/w1-$mode-$r-c*.out)"; done
    BG_PIDS=()
    q -c "INSERT INTO lat_result
          SELECT '$mode', $r, extract(epoch FROM r.recv_at - pg_xact_commit_timestamp(s.xmin)) * 1000
            FROM lat_sent s JOIN lat_recv r USING (msg_id)"
    sent=$(q -c "SELECT count(*) FROM lat_sent")
    got=$(q -c "SELECT count(DISTINCT msg_id) FROM lat_recv")
    [ "$sent" != "$got" ] && note "WARNING w1 $mode round $r: $sent sent, $got received"
    note "w1 $mode round $r: producer $tps tps, $sent sent, $got received; $(q -F ' ' -c "SELECT 'p50', round(percentile_cont(0.5) WITHIN GROUP (ORDER BY ms)::numeric, 2), 'p99', round(percentile_cont(0.99) WITHIN GROUP (ORDER BY ms)::numeric, 2), 'max', round(max(ms)::numeric, 2), 'ms' FROM lat_result WHERE mode = '$mode' AND round = $r"); consumers: $(cat "$RES"/w1-$mode-$r-c*.out | tr '\n' ' ')"
}
if want 1; then
    for r in $(seq "$ROUNDS"); do
        for mode in longpoll listen poll; do lat_round $mode "$r"; done
    done
    {
        echo "1  commit-to-delivery latency, $RATE msg/s, 2 consumers, ${LAT_DUR}s x $ROUNDS rounds (ms; all rounds pooled)"
        printf '   %-44s %9s %8s %8s %8s %8s  %s\n' mode messages p50 p90 p99 max "target"
        q -F ' ' -c "SELECT mode, count(*),
                            round(percentile_cont(0.5) WITHIN GROUP (ORDER BY ms)::numeric, 2),
                            round(percentile_cont(0.9) WITHIN GROUP (ORDER BY ms)::numeric, 2),
                            round(percentile_cont(0.99) WITHIN GROUP (ORDER BY ms)::numeric, 2),
                            round(max(ms)::numeric, 2)
                       FROM lat_result GROUP BY mode
                      ORDER BY array_position(ARRAY['longpoll','listen','poll'], mode)" |
        while read -r mode n p50 p90 p99 mx; do
            case $mode in
                longpoll) label="(a) long polling mq.read(wait => '5 s')"
                          tgt="p50<2ms: $(awk -v p="$p50" 'BEGIN{print (p < 2) ? "PASS" : "MISSED"}')" ;;
                listen)   label="(b) mq.listen + read on notification"; tgt="-" ;;
                poll)     label="(c) plain polling every 100 ms"; tgt="-" ;;
            esac
            printf '   %-44s %9s %8s %8s %8s %8s  %s\n' "$label" "$n" "$p50" "$p90" "$p99" "$mx" "$tgt"
        done
        echo
    } >>"$TABLES"
fi

# ---------------------------------------------------------------- workload 2
thr_run() {     # thr_run VARIANT ROUND -> tps
    local v=$1 r=$2 notify=true lpid= tps
    [ "$v" = off ] && notify=false
    q -c "SELECT mq.drop_queue('bench')" >/dev/null
    q -c "SELECT mq.create_queue('bench', notify => $notify)" >/dev/null
    q -c "VACUUM ANALYZE" -c "CHECKPOINT"
    if [ "$v" = listen ] || [ "$v" = nolisten ]; then
        # listen: a session listening through mq.listen, draining its notifications;
        # nolisten: a probe with a plain LISTEN on the channel, which mq does not
        # count as a listener: it only shows whether mq sent NOTIFY anyway
        PGAPPNAME=mq-listener "$LAT" $([ "$v" = listen ] && echo drain || echo rawdrain) bench $(( THR_DUR + 3 )) >"$RES/w2-$v-$r-listener.out" 2>&1 &
        lpid=$!; BG_PIDS+=($!)
        wait_backends mq-listener 1
        sleep 0.5
    fi
    tps=$(pgbench_tps "w2-$v-$r" push_send.sql "$THR_DUR" -c 8 -j 2)
    if [ -n "$lpid" ]; then
        wait "$lpid" || true
        BG_PIDS=()
        note "w2 $v round $r: $([ "$v" = listen ] && echo "listener (mq.listen)" || echo "probe (plain LISTEN, not counted by mq)") got $(sed -n 's/.*notifies=\([0-9]*\).*/\1/p' "$RES/w2-$v-$r-listener.out") notifications for $(awk -v t="$tps" -v d="$THR_DUR" 'BEGIN{printf "%.0f", t*d}') sends"
    fi
    echo "$tps"
}
if want 2; then
    off=(); on=(); nol=()
    for r in $(seq "$ROUNDS"); do
        off+=("$(thr_run off "$r")"); log "w2 notify=false round $r: ${off[-1]} tps"
        on+=("$(thr_run listen "$r")"); log "w2 notify=true + listener round $r: ${on[-1]} tps"
        nol+=("$(thr_run nolisten "$r")"); log "w2 notify=true, no listener round $r: ${nol[-1]} tps"
    done
    OFF=$(median "${off[@]}"); ON=$(median "${on[@]}"); NOL=$(median "${nol[@]}")
    {
        echo "2  producer throughput, 8 clients, 1 send/tx, ${THR_DUR}s x $ROUNDS rounds (tps, median)"
        printf '   %-44s %10s %10s\n' variant tps "vs off"
        printf '   %-44s %10s %10s\n' "notify => false" "$OFF" "1.00"
        printf '   %-44s %10s %10s\n' "notify => true, one session listening" "$ON" "$(ratio "$OFF" "$ON")"
        printf '   %-44s %10s %10s\n' "notify => true, nobody listening" "$NOL" "$(ratio "$OFF" "$NOL")"
        echo
    } >>"$TABLES"
    note "w2 runs (tps): notify=false ${off[*]}; notify=true+listener ${on[*]}; notify=true no listener ${nol[*]}"
fi

# ---------------------------------------------------------------- workload 3
# ticks PID...: "pid ticks" lines (utime + stime, in clock ticks)
ticks() {
    local p
    for p in "$@"; do
        [ -r "/proc/$p/stat" ] || continue
        awk -v p="$p" '{ sub(/^.*\) /, ""); print p, $12 + $13 }' "/proc/$p/stat" 2>/dev/null || true
    done
}
# cpu_delta FILE0 FILE1: CPU seconds used by the pids present in both
cpu_delta() {
    awk -v tck="$TCK" 'NR == FNR { a[$1] = $2; next } ($1 in a) { s += $2 - a[$1] } END { printf "%.3f\n", s / tck }' "$1" "$2"
}
idle_round() {  # idle_round MODE ROUND: writes "qps_client qps_server cpu_backends cpu_server cpu_clients"
    local mode=$1 r=$2 i pids=() bpids c0 c1 tag=w3-$1-$2
    q -c "SELECT mq.drop_queue('idle')" >/dev/null
    q -c "SELECT mq.create_queue('idle', notify => false)" >/dev/null
    for i in $(seq $IDLE_CLIENTS); do
        PGAPPNAME=mq-idle "$LAT" "$mode" idle $(( IDLE_DUR + 4 )) $LONGPOLL_MS >"$RES/$tag-c$i.out" 2>&1 &
        pids+=($!); BG_PIDS+=($!)
    done
    wait_backends mq-idle $IDLE_CLIENTS
    sleep 1
    bpids=$(q -c "SELECT pid FROM pg_stat_activity WHERE application_name = 'mq-idle'")
    ticks $bpids >"$RES/$tag-be0"; ticks "$PM_PID" $(ps --ppid "$PM_PID" -o pid=) >"$RES/$tag-srv0"; ticks "${pids[@]}" >"$RES/$tag-cl0"
    c0=$(q -c "SELECT xact_commit FROM pg_stat_database WHERE datname = 'bench'")
    sleep $(( IDLE_DUR / 2 ))
    note "$tag wait events of the 10 consumers (type event state count): $(q -F ' ' -c "SELECT coalesce(wait_event_type, '-'), coalesce(wait_event, '-'), state, count(*) FROM pg_stat_activity WHERE application_name = 'mq-idle' GROUP BY 1, 2, 3" | tr '\n' ';')"
    sleep $(( IDLE_DUR - IDLE_DUR / 2 ))
    ticks $bpids >"$RES/$tag-be1"; ticks "$PM_PID" $(ps --ppid "$PM_PID" -o pid=) >"$RES/$tag-srv1"; ticks "${pids[@]}" >"$RES/$tag-cl1"
    c1=$(q -c "SELECT xact_commit FROM pg_stat_database WHERE datname = 'bench'")
    for i in "${pids[@]}"; do wait "$i" || true; done
    BG_PIDS=()
    # client-side count: every consumer ran IDLE_DUR + 4 s
    local qc
    qc=$(cat "$RES"/$tag-c*.out | sed -n 's/.*queries=\([0-9]*\).*seconds=\([0-9.]*\).*/\1 \2/p' |
         awk '{ s += $1 / $2 } END { printf "%.2f\n", s }')
    echo "$qc $(awk -v a="$c0" -v b="$c1" -v d="$IDLE_DUR" 'BEGIN{ printf "%.2f", (b - a) / d }') $(cpu_delta "$RES/$tag-be0" "$RES/$tag-be1") $(cpu_delta "$RES/$tag-srv0" "$RES/$tag-srv1") $(cpu_delta "$RES/$tag-cl0" "$RES/$tag-cl1")" >"$RES/$tag.result"
    note "$tag: client queries/s, server xact_commit/s, CPU s of the 10 backends, of the whole server, of the 10 clients in ${IDLE_DUR}s: $(cat "$RES/$tag.result")"
}
if want 3; then
    for r in $(seq "$ROUNDS"); do
        for mode in longpoll poll; do idle_round $mode "$r"; done
    done
    {
        echo "3  idle cost: $IDLE_CLIENTS consumers on an empty queue, ${IDLE_DUR}s x $ROUNDS rounds (median of rounds)"
        printf '   %-38s %10s %12s %14s %14s %14s\n' mode "queries/s" "xact/s(srv)" "backends CPU%" "server CPU%" "clients CPU%"
        for mode in longpoll poll; do
            label="long polling, wait => '5 s'"; [ $mode = poll ] && label="plain polling every 100 ms"
            cols=()
            for k in 1 2 3 4 5; do
                vals=()
                for r in $(seq "$ROUNDS"); do vals+=("$(awk -v k=$k '{print $k}' "$RES/w3-$mode-$r.result")"); done
                m=$(printf '%s\n' "${vals[@]}" | sort -g | awk '{a[NR]=$1} END{ printf "%.3f", (NR%2) ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2 }')
                if [ $k -ge 3 ]; then m=$(awk -v s="$m" -v d="$IDLE_DUR" 'BEGIN{ printf "%.2f", 100 * s / d }'); fi
                cols+=("$m")
            done
            printf '   %-38s %10s %12s %14s %14s %14s\n' "$label" "${cols[@]}"
        done
        echo "   (CPU% = CPU seconds / wall seconds x 100, i.e. % of one core; server = postmaster and all its children)"
        echo
    } >>"$TABLES"
fi

# ---------------------------------------------------------------- report
{
    echo
    cat "$TABLES"
    cat "$NOTES"
} | tee -a "$SUMMARY"

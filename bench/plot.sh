#!/usr/bin/env bash
# bench/plot.sh RESULTS_DIR -- PNG charts next to the tables of a shapes.sh run.
#
# For every held-snapshot run in RESULTS_DIR (sN-SIDE-windows.txt: per window
# consumed and produced messages, backlog, claim latency, dead tuples), writes
# sN-over-time.png: consumed/s and produced/s over time, backlog, claim
# latency in ms and dead tuples, one line per side (plain table, mq, log).
# Needs gnuplot (Debian: gnuplot-nox); without it, says so and exits 0, so
# a benchmark run never fails for lack of charts.
set -eu -o pipefail

RES=${1:?usage: bench/plot.sh RESULTS_DIR}
command -v gnuplot >/dev/null || { echo "bench/plot.sh: gnuplot not installed (apt-get install --no-install-recommends gnuplot-nox): no charts" >&2; exit 0; }

for shape in $(ls "$RES" | sed -n 's/^s\([0-9]\)-.*-windows\.txt$/\1/p' | sort -u); do
    files=("$RES"/s"$shape"-*-windows.txt)
    win=$(awk 'NR == 2 { print $1; exit }' "${files[0]}")
    plots() {   # plots COLUMN_EXPRESSION: one line per side
        local sep="" f side
        for f in "${files[@]}"; do
            side=${f##*/s"$shape"-}; side=${side%-windows.txt}
            case $side in plain) side="plain table" ;; mq) side="mq work queue" ;; log) side="mq partitioned queue" ;; esac
            printf '%s"%s" using 1:(%s) every ::1 with linespoints title "%s"' "$sep" "$f" "$1" "$side"
            sep=", "
        done
    }
    gnuplot <<GP
set terminal pngcairo size 1000,900 font ",9"
set output "$RES/s$shape-over-time.png"
set multiplot layout 4,1 title "shape $shape: a snapshot held while producers and consumers run (${win}-s windows)"
set grid
set key outside right
set lmargin 10
set rmargin 30
set xlabel "seconds"
set ylabel "messages/s"
plot $(plots "\$4/$win"), $(plots "\$3/$win" | sed 's/title "\([^"]*\)"/title "\1 produced" dashtype 2/g')
set ylabel "backlog"
plot $(plots '$6')
set ylabel "claim ms"
plot $(plots '$7')
set ylabel "dead tuples"
plot $(plots '$8')
unset multiplot
GP
    echo "$RES/s$shape-over-time.png"
done

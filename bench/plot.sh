#!/bin/bash
# bench/plot.sh - the benchmark's plots, from bench/results/results.csv, with gnuplot.
#
#   bench/plot.sh [RESULTS.csv] [OUTDIR]    (default: bench/results/)
#
#   accepts_ex_poll_16.png   per-worker accepts, ex_poll, 16 workers, seq:
#                            no shim vs auto vs lock (clustered bars)
#   wakeups_vs_workers.png   wake-ups per connection vs workers, seq, one
#                            line per mode, ex_poll and ex_epoll side by side
#
# Installs gnuplot-nox with apt-get when gnuplot is missing and running as
# root; otherwise prints one "plots: skipped" line and exits 0.
set -u
here=$(cd "$(dirname "$0")" && pwd)
csv=${1:-$here/results/results.csv}
outdir=${2:-$here/results}

[ -s "$csv" ] || { echo "plots: skipped: $csv missing or empty (run bench/matrix.sh)"; exit 0; }
if ! command -v gnuplot >/dev/null; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        echo "plots: installing gnuplot-nox ..."
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q gnuplot-nox >/dev/null 2>&1 ||
            { apt-get update -q >/dev/null 2>&1 && DEBIAN_FRONTEND=noninteractive apt-get install -y -q gnuplot-nox >/dev/null 2>&1; }
    fi
    command -v gnuplot >/dev/null ||
        { echo "plots: skipped: gnuplot not installed (as root: apt-get install -y gnuplot-nox)"; exit 0; }
fi
if gnuplot -e 'set terminal' 2>&1 | grep -qw pngcairo; then
    term='pngcairo size 1100,620 font "DejaVu Sans,11"'
else
    term='png size 1100,620'
fi

work=$(mktemp -d "${TMPDIR:-/tmp}/thunder-plot.XXXXXX")
trap 'rm -rf "$work"' EXIT

# (a) per-worker accepts: one row per worker index, columns none auto lock.
awk -F, 'NR > 1 && $1 == "ex_poll" && $2 == 16 && $3 == "seq" && ($4 == "none" || $4 == "auto" || $4 == "lock") {
        n = split($NF, a, ";"); for (i = 1; i <= n; i++) v[$4, i] = a[i]; if (n > max) max = n; have[$4] = 1 }
    END {
        if (!("none" in have)) exit 1
        for (i = 1; i <= max; i++) printf "%d %s %s %s\n", i, v["none", i] + 0, v["auto", i] + 0, v["lock", i] + 0
    }' "$csv" >"$work/accepts.dat"
if [ -s "$work/accepts.dat" ]; then
    jains=$(awk -F, 'NR > 1 && $1 == "ex_poll" && $2 == 16 && $3 == "seq" { j[$4] = $10 }
        END { printf "no shim: Jain %s   auto: Jain %s   lock: Jain %s", j["none"], j["auto"], j["lock"] }' "$csv")
    if gnuplot >"$work/a.log" 2>&1 <<GP
set terminal $term
set output "$outdir/accepts_ex_poll_16.png"
set title "Accepts per worker: ex\\\\_poll (poll() on the listener), 16 workers, 2000 sequential connections\n{/*0.9 $jains}"
set style data histograms
set style histogram clustered gap 1
set style fill solid 0.85 border -1
set boxwidth 0.9
set xlabel "worker (in fork order)"
set ylabel "connections accepted"
set yrange [0:*]
set grid ytics
set key top left
plot "$work/accepts.dat" using 2:xtic(1) title "no shim" lc rgb "#c0392b", \
     "" using 3 title "libthunder auto" lc rgb "#2471a3", \
     "" using 4 title "libthunder lock" lc rgb "#7f8c8d"
GP
    then echo "plots: wrote $outdir/accepts_ex_poll_16.png"
    else echo "plots: error: accepts_ex_poll_16.png: $(head -n 3 "$work/a.log" | tr '\n' ' ')"
    fi
else
    echo "plots: skipped accepts_ex_poll_16.png: no ex_poll 16-worker seq rows in $csv"
fi

# (b) wake-ups per connection vs workers: one file per style, a column per mode.
# Drawn in this order: the thick lines first, so the lines that overlap them
# (observe on none, exclusive on auto) stay visible on top.
modes="none auto lock jitter observe exclusive"
plotted=0
for style in ex_poll ex_epoll; do
    awk -F, -v s="$style" -v modes="$modes" 'NR > 1 && $1 == s && $3 == "seq" { v[$2, $4] = $9; w[$2] = 1 }
        END {
            nm = split(modes, m, " ")
            n = 0; for (k in w) ws[++n] = k + 0
            for (i = 1; i <= n; i++) for (j = i + 1; j <= n; j++) if (ws[j] < ws[i]) { t = ws[i]; ws[i] = ws[j]; ws[j] = t }
            for (i = 1; i <= n; i++) {
                line = ws[i]
                for (j = 1; j <= nm; j++) line = line " " (((ws[i], m[j]) in v) ? v[ws[i], m[j]] : "NaN")
                print line
            }
        }' "$csv" >"$work/$style.dat"
    [ -s "$work/$style.dat" ] && plotted=$((plotted + 1))
done
if [ "$plotted" = 2 ]; then
    if gnuplot >"$work/b.log" 2>&1 <<GP
set terminal $term
set output "$outdir/wakeups_vs_workers.png"
set multiplot layout 1,2 title "Wake-ups per connection vs workers (2000 sequential connections; 1.0 is the limit, a herd is about N)"
set logscale xy 2
set xrange [3:80]
set yrange [0.7:110]
set xtics (4, 16, 64)
set ytics (1, 2, 4, 8, 16, 32, 64)
set xlabel "workers"
set ylabel "wake-ups per connection"
set grid
set key top left
set style line 1 lc rgb "#c0392b" lw 5 pt 7 ps 1.2
set style line 2 lc rgb "#2471a3" lw 5 pt 7 ps 1.2
set style line 3 lc rgb "#7f8c8d" lw 2 pt 9
set style line 4 lc rgb "#8e44ad" lw 2 pt 13 dt 3
set style line 5 lc rgb "#f5b041" lw 2 pt 5 dt 2
set style line 6 lc rgb "#2ecc71" lw 2 pt 11 dt 2
set title "ex\\\\_poll: poll() on the listener"
plot for [i=1:6] "$work/ex_poll.dat" using 1:(column(i+1)) with linespoints ls i title word("$modes", i)
set title "ex\\\\_epoll: one epoll instance per worker"
plot for [i=1:6] "$work/ex_epoll.dat" using 1:(column(i+1)) with linespoints ls i title word("$modes", i)
unset multiplot
GP
    then echo "plots: wrote $outdir/wakeups_vs_workers.png"
    else echo "plots: error: wakeups_vs_workers.png: $(head -n 3 "$work/b.log" | tr '\n' ' ')"
    fi
else
    echo "plots: skipped wakeups_vs_workers.png: no seq rows for ex_poll and ex_epoll in $csv"
fi
exit 0

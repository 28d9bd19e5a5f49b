#!/bin/bash
# bench/matrix.sh - the benchmark matrix (make bench; make bench-quick).
#
#   bench/matrix.sh [--quick] [--no-peers] [--no-plots]
#
# Every example style x mode (none = no shim, observe, lock, exclusive,
# jitter, auto) x workers (4, 16, 64) x workload:
#   seq   BENCH_SEQ_CONNS (2000) sequential connections, BENCH_GAP_US (200) apart
#   conc  4 concurrent clients, each BENCH_GAP_US apart, for BENCH_CONC_SECONDS (2)
#   sat   8 clients in a closed loop (no gap), for BENCH_SAT_SECONDS (2)
#   burst     BENCH_BURST_ROUNDS (50) rounds of K = 2N connections opened
#             together, 20 ms apart (thunder-loadgen --burst), none and auto
#   burst-io  the same with a handler that sleeps BENCH_BURST_SLEEP_MS (5):
#             round completion against ceil(K/N) x the sleep
# Each cell is one bench/lib.sh run_cell (seq) or run_cell_gap (conc, sat):
# loadgen's figures, and each figure as a ratio to the no-shim run of the
# same (style, workers, workload) in this invocation.
#
# The full run writes bench/results/ (results.csv, bursts.csv, the plots of
# bench/plot.sh) and bench/RESULTS.md, and runs bench/peers.sh (real
# servers: bench/results/peers.md) unless --no-peers.  --quick: ex_poll,
# ex_epoll, ex_epoll_shared, ex_greedy x none/auto x 16 workers x seq and
# both bursts (20 rounds), tables on stdout, nothing written under bench/
# (BENCH_STYLES, BENCH_WORKERS and BENCH_WORKLOADS change its styles,
# workers and workloads too).
# BENCH_STYLES, BENCH_MODES, BENCH_WORKERS, BENCH_WORKLOADS (space-separated)
# narrow the full matrix (the results are then marked as partial).  The
# full run ends with scale rows: ex_poll, 256 and 1024 workers, seq with 10
# connections per worker, none and auto (BENCH_SCALE_WORKERS changes them).
set -u
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=bench/lib.sh
. "$here/lib.sh"
root=$BENCH_ROOT

usage() { sed -n '2,20s/^# \{0,1\}//p' "$0"; }

quick=0 peers=1 plots=1
while [ $# -gt 0 ]; do
    case $1 in
        --quick) quick=1 ;;
        --no-peers) peers=0 ;;
        --no-plots) plots=0 ;;
        -h|--help) usage; exit 0 ;;
        *) echo "matrix.sh: unknown option '$1' (accepted: --quick --no-peers --no-plots)" >&2; exit 2 ;;
    esac
    shift
done

ALL_STYLES="ex_poll ex_select ex_epoll ex_epoll_excl ex_epoll_shared ex_threads ex_evloop ex_greedy ex_inherit ex_accept"
ALL_MODES="none observe lock exclusive jitter auto"
if [ "$quick" = 1 ]; then
    STYLES=${BENCH_STYLES:-ex_poll ex_epoll ex_epoll_shared ex_greedy} MODES="none auto"
    WORKERS=${BENCH_WORKERS:-16} WORKLOADS=${BENCH_WORKLOADS:-seq burst burst-io}
else
    STYLES=${BENCH_STYLES:-$ALL_STYLES}
    MODES=${BENCH_MODES:-$ALL_MODES}
    WORKERS=${BENCH_WORKERS:-4 16 64}
    WORKLOADS=${BENCH_WORKLOADS:-seq conc sat burst burst-io}
fi
# Bursts are measured without the shim and in the default mode only.
BURST_MODES=
for _m in none auto; do [[ " $MODES " == *" $_m "* ]] && BURST_MODES+="$_m "; done
is_burst() { [ "$1" = burst ] || [ "$1" = burst-io ]; }
partial=0
[ "$quick" = 0 ] && [ -n "${BENCH_STYLES:-}${BENCH_MODES:-}${BENCH_WORKERS:-}${BENCH_WORKLOADS:-}" ] && partial=1
SEQ_CONNS=${BENCH_SEQ_CONNS:-2000}
GAP_US=${BENCH_GAP_US:-200}
CONC_SECONDS=${BENCH_CONC_SECONDS:-2}
SAT_SECONDS=${BENCH_SAT_SECONDS:-2}
CONC_CLIENTS=4
SAT_CLIENTS=8
THREADS_PER_WORKER=4   # ex_threads -t
BURST_ROUNDS=${BENCH_BURST_ROUNDS:-50}
[ "$quick" = 1 ] && BURST_ROUNDS=${BENCH_BURST_ROUNDS:-20}     # keeps --quick under a minute more
BURST_SLEEP_MS=${BENCH_BURST_SLEEP_MS:-5}

for f in libthunder.so tools/thunder-loadgen; do
    [ -x "$root/$f" ] || [ -f "$root/$f" ] || { echo "matrix.sh: $root/$f missing: run make first" >&2; exit 1; }
done
for s in $STYLES; do
    [ -x "$root/examples/$s" ] || { echo "matrix.sh: examples/$s missing: run make first" >&2; exit 1; }
done

work=$(mktemp -d "${TMPDIR:-/tmp}/thunder-matrix.XXXXXX")
cleanup() { cell_cleanup; rm -rf "$work"; }
trap cleanup EXIT
trap 'exit 130' INT TERM
export BENCH_ERR=$work/server.err
# A private copy of the library: a rebuild during the run cannot mix versions.
cp "$BENCH_LIB" "$work/libthunder.so" && BENCH_LIB=$work/libthunder.so
export PEERS_LIB=$BENCH_LIB
# The commit the library was copied at (others may commit during the run).
commit=$(git -C "$root" rev-parse --short HEAD 2>/dev/null || echo unknown)
git -C "$root" diff --quiet HEAD -- shim 2>/dev/null || commit="$commit (+ uncommitted changes in shim/)"
[ "$root/libthunder.so" -ot "$root/shim" ] && commit="$commit (libthunder.so older than the last change in shim/)"
started=$(date +%s)

RAW_HEADER="style,workers,workload,mode,conns,ok,failed,seconds,wakeups_per_conn,jain,max_share,rps,p50_us,p99_us,cpu_ms_per_1000,workers_seen,accepts"
raw=$work/raw.csv
echo "$RAW_HEADER" >"$raw"
BURST_HEADER="style,workers,workload,mode,burst,rounds,sleep_ms,ok,failed,wakeups_per_conn,jain,round_max_share_mean,round_ms_mean,round_ms_p99,round_limit_ms,round_vs_limit,accepts"
bursts=$work/bursts.csv
echo "$BURST_HEADER" >"$bursts"

# One burst cell: K = 2N per round; appends to $bursts, prints a progress line.
run_burst_one() {
    local style=$1 workers=$2 workload=$3 mode=$4 threads='' sleep_ms=0 out=$work/cell.out o k
    [ "$style" = ex_threads ] && threads=$THREADS_PER_WORKER
    [ "$workload" = burst-io ] && sleep_ms=$BURST_SLEEP_MS
    run_burst_cell "$style" "$workers" "$mode" $((2 * workers)) "$BURST_ROUNDS" "$sleep_ms" $threads >"$out"
    o=$(cat "$out")
    local row
    row="$style,$workers,$workload,$mode,$((2 * workers)),$(cell_get rounds "$o"),$sleep_ms"
    for k in ok failed wakeups_per_conn jain round_max_share_mean round_ms_mean round_ms_p99 round_limit_ms round_vs_limit; do
        row+=",$(cell_get "$k" "$o")"
    done
    echo "$row,$(cell_accepts "$o")" >>"$bursts"
    if grep -q '^error=' <<<"$o"; then
        printf '%-16s %3s %-8s %-9s %s\n' "$style" "$workers" "$workload" "$mode" "$(cell_get error "$o")" >&2
    else
        printf '%-16s %3s %-8s %-9s wake/conn %7s  Jain %6s  round max share %6s  round ms %7s (p99 %7s)%s%s\n' \
            "$style" "$workers" "$workload" "$mode" "$(cell_get wakeups_per_conn "$o")" "$(cell_get jain "$o")" \
            "$(cell_get round_max_share_mean "$o")" "$(cell_get round_ms_mean "$o")" "$(cell_get round_ms_p99 "$o")" \
            "$([ "$sleep_ms" = 0 ] || echo "  limit $(cell_get round_limit_ms "$o")")" \
            "$( [ "$(cell_get failed "$o")" = 0 ] || echo "  FAILED $(cell_get failed "$o")")" >&2
    fi
}

# Runs one cell (seq: CONNS connections, default SEQ_CONNS), appends its row to $raw and prints a progress line.
run_one() {
    local style=$1 workers=$2 workload=$3 mode=$4 conns=${5:-$SEQ_CONNS} threads='' out=$work/cell.out
    [ "$style" = ex_threads ] && threads=$THREADS_PER_WORKER
    case $workload in
        seq)  run_cell "$style" "$workers" "$mode" "$conns" 1 60 $threads >"$out" ;;
        conc) run_cell_gap "$style" "$workers" "$mode" 1000000 "$CONC_CLIENTS" "$CONC_SECONDS" "$GAP_US" $threads >"$out" ;;
        sat)  run_cell_gap "$style" "$workers" "$mode" 1000000 "$SAT_CLIENTS" "$SAT_SECONDS" 0 $threads >"$out" ;;
    esac
    local o k row="$style,$workers,$workload,$mode"
    o=$(cat "$out")
    for k in conns ok failed seconds wakeups_per_conn jain max_share rps p50_us p99_us cpu_ms_per_1000 workers_seen; do
        row+=",$(cell_get "$k" "$o")"
    done
    row+=",$(cell_accepts "$o")"
    echo "$row" >>"$raw"
    if grep -q '^error=' <<<"$o"; then
        printf '%-16s %3s %-4s %-9s %s\n' "$style" "$workers" "$workload" "$mode" "$(cell_get error "$o")" >&2
    else
        printf '%-16s %3s %-4s %-9s wake/conn %8s  Jain %6s  req/s %8s  p99 %6s us%s\n' \
            "$style" "$workers" "$workload" "$mode" "$(cell_get wakeups_per_conn "$o")" \
            "$(cell_get jain "$o")" "$(cell_get rps "$o")" "$(cell_get p99_us "$o")" \
            "$( [ "$(cell_get failed "$o")" = 0 ] || echo "  FAILED $(cell_get failed "$o")")" >&2
    fi
}

# Adds the ratio columns (figure / the no-shim figure of the same style,
# workers and workload), keeping accepts last.  Reads and writes CSV.
add_ratios() {
    awk -F, -v OFS=, '
        function r(a, b) { return (a == "" || b == "" || b + 0 == 0) ? "" : sprintf("%.3f", a / b) }
        NR == FNR { if (FNR > 1 && $4 == "none") for (i = 9; i <= 15; i++) base[$1 SUBSEP $2 SUBSEP $3, i] = $i; next }
        FNR == 1 { $17 = "wakeups_ratio,jain_ratio,max_share_ratio,rps_ratio,p50_ratio,p99_ratio,cpu_ratio,accepts"; print; next }
        {
            acc = $17; k = $1 SUBSEP $2 SUBSEP $3; line = ""
            for (i = 1; i <= 16; i++) line = line (i > 1 ? OFS : "") $i
            for (i = 9; i <= 15; i++) line = line OFS r($i, base[k, i])
            print line OFS acc
        }' "$1" "$1"
}

modes_of() { if is_burst "$1"; then echo "$BURST_MODES"; else echo "$MODES"; fi; }
total=0
for _s in $STYLES; do for _w in $WORKERS; do for _l in $WORKLOADS; do for _m in $(modes_of "$_l"); do
    total=$((total + 1))
done; done; done; done
n=0
for style in $STYLES; do
    for workers in $WORKERS; do
        for workload in $WORKLOADS; do
            for mode in $(modes_of "$workload"); do
                n=$((n + 1))
                printf '[%d/%d] ' "$n" "$total" >&2
                if is_burst "$workload"; then
                    run_burst_one "$style" "$workers" "$workload" "$mode"
                else
                    run_one "$style" "$workers" "$workload" "$mode"
                fi
            done
        done
    done
done
# Scale rows (full run only, not --quick, not a narrowed matrix): poll
# workers all started at once, 10 sequential connections per worker, no
# shim vs the default (auto).  BENCH_SCALE_WORKERS="" leaves them out.
if [ "$quick" = 0 ] && [ "$partial" = 0 ]; then
    for workers in ${BENCH_SCALE_WORKERS-256 1024}; do
        for mode in none auto; do
            printf '[scale] ' >&2
            run_one ex_poll "$workers" seq "$mode" $((10 * workers))
        done
    done
fi
matrix_seconds=$(( $(date +%s) - started ))
add_ratios "$raw" >"$work/results.csv"

# A plain-text table of some rows of a results CSV (for --quick and logs).
text_table() {
    awk -F, 'NR == 1 { next }
        function d(v) { return v == "" ? "-" : v }
        BEGIN { printf "%-16s %4s %-5s %-9s %9s %7s %7s %9s %6s %6s %8s %7s %7s %7s\n", "style", "wkrs", "load", "mode",
                "wake/conn", "Jain", "max", "req/s", "p50us", "p99us", "cpu/1000", "wake x", "req/s x", "p99 x" }
        { printf "%-16s %4s %-5s %-9s %9s %7s %7s %9s %6s %6s %8s %7s %7s %7s\n", $1, $2, $3, $4, $9, $10, $11, $12, $13, $14, $15, d($17), d($20), d($22) }' "$1"
}

# The burst rows as plain text.
burst_text_table() {
    awk -F, 'NR == 1 { printf "%-16s %4s %-8s %-6s %4s %5s %9s %7s %9s %9s %9s %8s %6s\n", "style", "wkrs", "load", "mode",
                "K", "sleep", "wake/conn", "Jain", "max/round", "round ms", "p99 ms", "limit ms", "failed"; next }
        function d(v) { return v == "" ? "-" : v }
        { printf "%-16s %4s %-8s %-6s %4s %5s %9s %7s %9s %9s %9s %8s %6s\n", $1, $2, $3, $4, $5, $7, d($10), d($11), d($12),
                 d($13), d($14), ($15 == "" ? "-" : $15), $9 }' "$1"
}

if [ "$quick" = 1 ]; then
    echo "libthunder bench --quick: ${SEQ_CONNS} sequential connections ${GAP_US} us apart, workers: ${WORKERS} ($(nproc) CPUs, $(uname -r))"
    echo
    text_table "$work/results.csv"
    echo
    echo "x: ratio to the no-shim run of the same style."
    echo
    echo "Bursts: ${BURST_ROUNDS} rounds of K = 2N connections opened together, 20 ms apart; burst-io: the handler sleeps ${BURST_SLEEP_MS} ms (limit: ceil(K/N) x ${BURST_SLEEP_MS} ms)."
    echo "max/round: the mean over rounds of the largest share one worker took (ideal 1/N)."
    echo
    burst_text_table "$bursts"
    echo
    echo "Took ${matrix_seconds} s."
    exit 0
fi

# ---- the full run: CSV, peers, overhead, plots, RESULTS.md ------------------

out_dir=$here/results
mkdir -p "$out_dir"
cp "$work/results.csv" "$out_dir/results.csv.new"
cp "$bursts" "$out_dir/bursts.csv"
peers_csv=$work/peers.csv
peers_log=$work/peers.txt
peers_seconds=0
if [ "$peers" = 1 ]; then
    p0=$(date +%s)
    "$here/peers.sh" --csv "$peers_csv" 2>&1 | tee "$peers_log" >&2
    peers_seconds=$(( $(date +%s) - p0 ))
else
    echo "peers: skipped (--no-peers)" >"$peers_log"
fi
if [ -s "$peers_csv" ]; then
    add_ratios "$peers_csv" | tail -n +2 >>"$out_dir/results.csv.new"
fi
mv "$out_dir/results.csv.new" "$out_dir/results.csv"

overhead=$work/overhead.txt
if [ -x "$here/overhead" ] || [ -x "$here/overhead.sh" ]; then
    "$here/overhead.sh" >"$overhead" 2>&1 || echo "(bench/overhead.sh failed)" >>"$overhead"
else
    echo "(bench/overhead.sh not available)" >"$overhead"
fi

plot_log=$work/plot.txt
if [ "$plots" = 1 ]; then
    "$here/plot.sh" "$out_dir/results.csv" "$out_dir" >"$plot_log" 2>&1 || true
else
    echo "plots: skipped (--no-plots)" >"$plot_log"
fi
cat "$plot_log" >&2
total_seconds=$(( $(date +%s) - started ))

# ---- RESULTS.md ----------------------------------------------------------------

gcc_version=$(gcc --version 2>/dev/null | head -n 1)
glibc_version=$(ldd --version 2>/dev/null | head -n 1 | sed 's/^ldd //')

# Targets: wake-ups per connection (all workloads) and Jain (seq only), for
# auto and lock everywhere and for exclusive where it applies.
AWK_TARGETS='
function wtarget(style, mode) {
    # the event loop under the lock: its own two (accept, the client EOF)
    # and the hand-off that wakes the next holder
    if (mode == "lock") return style == "ex_evloop" ? 3.3 : 2.2
    if (mode != "auto" && mode != "exclusive") return ""
    if (style == "ex_evloop") return 2.2
    if (style == "ex_epoll_shared") return mode == "auto" ? 2.2 : ""
    # several threads on one instance: auto takes the lock (the kernel
    # level-triggered re-queue wakes a second thread with exclusive entries)
    if (style == "ex_threads") return mode == "auto" ? 2.2 : ""
    return 1.1
}
function jtarget(style, mode, workload) {
    if (workload != "seq" || wtarget(style, mode) == "") return ""
    return 0.99
}
function label(s) {
    if (s == "ex_poll") return "poll"
    if (s == "ex_select") return "select (+ pipe, gunicorn-like)"
    if (s == "ex_epoll") return "epoll per worker"
    if (s == "ex_epoll_excl") return "program-set EPOLLEXCLUSIVE"
    if (s == "ex_epoll_shared") return "shared epoll instance"
    if (s == "ex_threads") return "threads x processes (4 threads)"
    if (s == "ex_evloop") return "event loop, keep-alive clients"
    if (s == "ex_greedy") return "greedy event loop (accept until EAGAIN)"
    if (s == "ex_inherit") return "greedy loop, master-created epoll kept by one worker"
    if (s == "ex_accept") return "blocking accept"
    return s
}
function f3(x) { return x == "" ? "-" : sprintf("%.3f", x) }
function f4(x) { return x == "" ? "-" : sprintf("%.4f", x) }
'

headline() {
    awk -F, "$AWK_TARGETS"'
        NR == 1 { next }
        $3 == "seq" && ($2 == 16 || $2 == 64) { w[$1, $2, $4] = $9; j[$1, $2, $4] = $10; seen[$1] = 1 }
        END {
            print "| style | workers | no shim | auto | lock | target auto (wake-ups, Jain) | auto met | lock met (its target, >= 0.99) |"
            print "|---|---|---|---|---|---|---|---|"
            n = split(styles, order, " ")
            for (i = 1; i <= n; i++) {
                s = order[i]; if (!(s in seen)) continue
                for (k = 16; k <= 64; k += 48) {
                    if (!((s, k, "none") in w)) continue
                    t = wtarget(s, "auto"); met = "-"; lmet = "-"
                    if ((s, k, "auto") in w)
                        met = (w[s, k, "auto"] <= t && j[s, k, "auto"] >= 0.99) ? "yes" : "**no**"
                    if ((s, k, "lock") in w)
                        lmet = (w[s, k, "lock"] <= wtarget(s, "lock") && j[s, k, "lock"] >= 0.99) ? "yes" : "**no**"
                    printf "| %s | %d | %s / %s | %s / %s | %s / %s | <= %s, >= 0.99 | %s | %s |\n", label(s), k,
                        f3(w[s, k, "none"]), f4(j[s, k, "none"]), f3(w[s, k, "auto"]), f4(j[s, k, "auto"]),
                        f3(w[s, k, "lock"]), f4(j[s, k, "lock"]), t, met, lmet
                }
            }
        }' styles="$ALL_STYLES" "$1"
}

full_table() {  # $1 csv, $2 workload
    awk -F, -v wl="$2" "$AWK_TARGETS"'
        function x(v) { return v == "" ? "" : " (" v ")" }
        NR == 1 { print "| style | workers | mode | wake-ups/conn (x) | Jain (x) | max share | req/s (x) | p50 us (x) | p99 us (x) | CPU ms/1000 (x) | failed |"
                  print "|---|---|---|---|---|---|---|---|---|---|---|"; next }
        $3 == wl && $1 ~ /^ex_/ {
            if ($5 == "") { printf "| %s | %s | %s | error | | | | | | | |\n", $1, $2, $4; next }
            printf "| %s | %s | %s | %s%s | %s%s | %s | %s%s | %s%s | %s%s | %s%s | %s |\n", $1, $2, $4, $9, x($17), $10, x($18),
                $11, $12, x($20), $13, x($21), $14, x($22), $15, x($23), $7 }' "$1"
}

burst_md_table() {
    awk -F, 'NR == 1 { print "| style | workers | workload | mode | K | wake-ups/conn | Jain | max share / round | round ms (mean) | round ms (p99) | limit ms | mean / limit | failed |"
                       print "|---|---|---|---|---|---|---|---|---|---|---|---|---|"; next }
        function d(v) { return v == "" ? "-" : v }
        { printf "| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n", $1, $2, $3, $4, $5, d($10), d($11), d($12),
                 d($13), d($14), d($15), d($16), d($9) }' "$1"
}

# One line per cell that misses its target (or failed), with a reason
# where the cause is known.
misses() {
    awk -F, "$AWK_TARGETS"'
        # The causes below were established with separate runs when this
        # script was written (kernel 6.18, 2 CPUs); they are a guide, not
        # a measurement of this run.
        function reason(s, m, l, what) {
            if (s == "ex_threads" && what == "wake")
                return "threads share their process'"'"'s epoll instance: the kernel also wakes a second thread of the same process for the level-triggered listener, so auto uses the lock there (floor 2)"
            if (s == "ex_evloop" && m == "lock") return "event loop: accept, the client EOF and the lock hand-off: 3 when the EOF comes after the worker is back in its wait"
            if (m == "lock" && what == "wake") return "lock waiters wake periodically to check the holder is alive (THUNDER_CHECK_MS); this adds to the hand-off'"'"'s 2"
            if (l != "seq" && what == "wake") return "concurrent load: extra wake-ups from workers re-entering the wait while connections queue (not a herd: compare the no-shim ratio)"
            return ""
        }
        NR == 1 { next }
        $1 !~ /^ex_/ { next }
        {
            cell = sprintf("%s, %s workers, %s, %s", $1, $2, $3, $4)
            if ($5 == "") { print "- " cell ": the server did not start"; next }
            if ($7 + 0 > 0) print "- " cell ": " $7 " failed connections"
            t = wtarget($1, $4)
            if (t != "" && $9 + 0 > t) { r = reason($1, $4, $3, "wake"); print "- " cell ": " $9 " wake-ups per connection > " t (r == "" ? "" : " (" r ")") }
            t = jtarget($1, $4, $3)
            if (t != "" && $10 + 0 < t) { r = reason($1, $4, $3, "jain"); print "- " cell ": Jain " $10 " < " t (r == "" ? "" : " (" r ")") }
            # issue 12: the default mode costs no throughput when saturated
            if ($3 == "sat" && $4 == "auto" && $20 != "" && $20 + 0 < 1.0)
                print "- " cell ": saturated throughput " $20 "x < 1.0x the same program without the library (one run per side: see the interleaved pairs of bench/pairs.sh)"
        }' "$1"
}

# The same for the burst cells (issue 11), the default mode at 16 and 64
# workers: largest share of a round <= 0.15 at 16, Jain >= 0.98, a round
# with the sleeping handler within 1.5x its limit.  Each miss quotes the
# same cell without the library, measured in the same run.
burst_misses() {
    awk -F, '
        BEGIN { share_max = 0.15; jain_min = 0.98; round_max = 1.5 }
        NR == 1 { next }
        { key = $1 SUBSEP $2 SUBSEP $3 }
        $4 == "none" { none_share[key] = $12; none_jain[key] = $11; none_round[key] = $16; next }
        $4 != "auto" || ($2 != 16 && $2 != 64) { next }
        {
            cell = sprintf("%s, %s workers, %s, auto", $1, $2, $3)
            if ($9 + 0 > 0) print "- " cell ": " $9 " failed connections"
            if ($3 == "burst" && $2 == 16 && $12 + 0 > share_max)
                print "- " cell ": largest share of a round " $12 " > " share_max " (without the library " none_share[key] ")"
            if ($11 != "" && $11 + 0 < jain_min)
                print "- " cell ": Jain " $11 " < " jain_min " (without the library " none_jain[key] ")"
            if ($3 == "burst-io" && $16 != "" && $16 + 0 > round_max)
                print "- " cell ": round " $16 "x its limit > " round_max "x (without the library " none_round[key] "x)"
        }' "$1"
}

# Every miss of the run: the matrix's cells, then the bursts'.
all_misses() {
    misses "$1"
    [ -f "$2" ] && burst_misses "$2"
}

# The sections of the old RESULTS.md between "<!-- NAME..." and
# "<!-- /NAME -->" (other scripts' tables, measurements pasted with their
# commands): a new matrix does not replace them, so they are carried over.
kept_sections() {
    [ -f "$1" ] || return 0
    awk '/^<!-- [^\/]/ && !inside { inside = 1; print "" }
         inside { print }
         /^<!-- \// { inside = 0 }' "$1"
}

results=$out_dir/results.csv
md=$here/RESULTS.md
{
    echo "# libthunder benchmark results"
    echo
    echo "Regenerated by \`bench/matrix.sh\` (\`make bench\`); do not edit by hand."
    echo
    echo "| | |"
    echo "|---|---|"
    echo "| date | $(date -u '+%Y-%m-%d %H:%M UTC') |"
    echo "| kernel | $(uname -r) |"
    echo "| CPUs | $(nproc) |"
    echo "| gcc | ${gcc_version:-unknown} |"
    echo "| glibc | ${glibc_version:-unknown} |"
    echo "| libthunder commit | $commit |"
    echo "| command | \`bench/matrix.sh\` (\`make bench\`)$([ "$peers" = 0 ] && echo ' --no-peers') |"
    echo "| run time | ${total_seconds} s in all: matrix ${matrix_seconds} s ($total cells), peers ${peers_seconds} s |"
    [ "$partial" = 1 ] && echo "| partial | BENCH_STYLES='${BENCH_STYLES:-}' BENCH_MODES='${BENCH_MODES:-}' BENCH_WORKERS='${BENCH_WORKERS:-}' BENCH_WORKLOADS='${BENCH_WORKLOADS:-}' |"
    echo
    cat <<TXT
**How it is measured** (tools/thunder-loadgen, one server per cell, loopback only):
*wake-ups/conn* is the sum over all workers (all their threads) of the change
in \`voluntary_ctxt_switches\` divided by the connections answered (1.0 is the
limit, a herd is about one per worker); *Jain* is Jain's fairness index over
the per-worker accept counts (1.0 = even, 1/N = one worker takes all);
*max share* the largest worker's share; *CPU ms/1000* the workers' CPU time
(schedstat) per 1000 connections; *(x)* is the ratio to the no-shim run of
the same style, workers and workload in this invocation.

Workloads: **seq** ${SEQ_CONNS} sequential connections ${GAP_US} µs apart;
**conc** ${CONC_CLIENTS} concurrent clients, each ${GAP_US} µs between its
connections, for ${CONC_SECONDS} s; **sat** ${SAT_CLIENTS} clients in a closed
loop (no gap) for ${SAT_SECONDS} s. ex_threads runs ${THREADS_PER_WORKER} threads per worker.

**What was cut from issue #7's matrix to finish in under 20 minutes on 2
cores:** the concurrent (conc) workload runs for ${CONC_SECONDS} s and the
saturated (sat) one for ${SAT_SECONDS} s, instead of 5 s each; every style, mode,
worker count and workload is still measured. The conc clients keep the
${GAP_US} µs gap between their connections (a few concurrent clients, not
saturation: run_cell forces the gap to 0 with several clients, so this uses
\`run_cell_gap\` from bench/lib.sh).

Targets: auto wake-ups/conn ≤ 1.1 where the exclusive mechanism applies
(poll, select, per-process epoll, program-set EPOLLEXCLUSIVE, threads,
blocking accept), ≤ 2.2 where auto falls back to the lock (shared epoll
instance) and for the event loop (its floor is 2: accept + the client's
EOF); lock mode ≤ 2.2 (the event loop ≤ 3.3: its two and the hand-off);
exclusive mode as auto where it applies;
Jain ≥ 0.99 on the sequential workload. Wake-up targets are checked on every
workload, Jain on seq only.

## Headline: sequential workload, wake-ups per connection / Jain

TXT
    headline "$results"
    echo
    echo "## Peers: real servers (bench/peers.sh)"
    echo
    if [ -s "$peers_csv" ] && [ "$here/results/peers.md" -nt "$raw" ]; then
        echo "The \"Works with\" table of this run (sequential workload; the"
        echo "workloads, the floors and every run are in [results/peers.md](results/peers.md)):"
        echo
        sed -n '/^| server and configuration/,/^$/p' "$here/results/peers.md"
        grep -E '^peers: .*(skip|not )' "$peers_log" | sed 's/^/- /'
    else
        echo "Not measured:"
        echo
        sed 's/^/    /' "$peers_log"
    fi
    echo
    echo "## Targets missed"
    echo
    m=$(all_misses "$results" "$out_dir/bursts.csv")
    if [ -n "$m" ]; then echo "$m"; else echo "None: every cell with a target meets it."; fi
    if [ "$(wc -l <"$out_dir/bursts.csv")" -gt 1 ]; then
        echo
        echo "## Bursts (thunder-loadgen --burst)"
        echo
        cat <<TXT
A round opens K = 2N connections back-to-back (non-blocking connects, then
the requests, then the replies), then idles 20 ms; ${BURST_ROUNDS} rounds per cell,
without the shim and in the default mode. *Jain* is over the per-worker
totals; *max share / round* the mean over rounds of the largest share one
worker took of its round (ideal 2/K = 1/N); *round ms* from the round's first
connect to its last reply (mean, p99). **burst-io**: the handler sleeps
${BURST_SLEEP_MS} ms before answering (examples' \`-s\`), and *limit* is
ceil(K/N) x ${BURST_SLEEP_MS} ms, the shortest a round can take.

TXT
        burst_md_table "$out_dir/bursts.csv"
    fi
    for wl in $WORKLOADS; do
        is_burst "$wl" && continue
        echo
        case $wl in
            seq) echo "## Full table: seq (${SEQ_CONNS} sequential connections, ${GAP_US} µs apart)" ;;
            conc) echo "## Full table: conc (${CONC_CLIENTS} clients, ${GAP_US} µs gaps, ${CONC_SECONDS} s)" ;;
            sat) echo "## Full table: sat (${SAT_CLIENTS} clients, closed loop, ${SAT_SECONDS} s)" ;;
        esac
        echo
        full_table "$results" "$wl"
    done
    echo
    echo "## Plots"
    echo
    for png in accepts_ex_poll_16.png wakeups_vs_workers.png; do
        [ -f "$out_dir/$png" ] || continue
        case $png in
            accepts*) echo "Per-worker accepts, ex_poll, 16 workers, seq: no shim vs auto vs lock." ;;
            wakeups*) echo "Wake-ups per connection vs workers, seq, each mode (log scale): ex_poll and ex_epoll." ;;
        esac
        echo
        echo "![$png](results/$png)"
        echo
    done
    grep -i 'skip\|error\|fail' "$plot_log" | sed 's/^/- /'
    echo
    echo "## Pass-through overhead (bench/overhead.sh)"
    echo
    echo '```'
    cat "$overhead"
    echo '```'
    echo
    echo "## Files"
    echo
    echo "- bench/results/bursts.csv: one row per burst cell; round_* columns from thunder-loadgen --burst (round_ms: first connect to last reply; round_max_share_mean: the mean over rounds of the largest share one worker took of the round)."
    echo "- bench/results/results.csv: one row per cell (the peers too: style = a configuration of bench/peers/servers.sh), header row; *_ratio columns are relative to mode none of the same style, workers and workload; accepts is the per-worker accept counts in pid order, ';'-separated."
    echo "- Re-run: \`make bench\` (full, ~40 minutes), \`make bench-quick\` (< 1 minute, stdout only), \`bench/peers.sh\` alone."
    kept_sections "$md"
} >"$md.new" && mv "$md.new" "$md"

echo >&2
echo "matrix: ${total_seconds} s in all (matrix ${matrix_seconds} s, peers ${peers_seconds} s); wrote $results, $md" >&2
echo
headline "$results"
echo
[ -s "$peers_csv" ] && [ "$here/results/peers.md" -nt "$raw" ] && sed -n '/^| server and configuration/,/^$/p' "$here/results/peers.md"
echo
echo "Targets missed:"
all_misses "$results" "$out_dir/bursts.csv"

#!/bin/bash
# bench/burst-timeline.sh - where a burst round's time goes (issue 11).
#
#   bench/burst-timeline.sh STYLE WORKERS [MODE...]
#
# The burst cells (bench/matrix.sh, loadgen --burst) give one number per
# round: from the client's first connect to its last reply.  With a
# handler of TIMELINE_SLEEP_MS (5) that is at least ceil(K/N) handler
# times; this says what the rest is.  perf traces, in the whole machine,
# the client's connects and the workers' successful accepts during
# TIMELINE_ROUNDS (20) rounds of K = 2 x WORKERS connections, and prints
# the means over the rounds (the first and the last left out) of:
#   first accept      the first connection any worker accepted
#   workers started   the time by which every worker had accepted its first
#   connects end      the client's last connect of the round
#   last accept       the round's last accept
#   round             loadgen's own round time (round_ms_mean)
#   waited            the rounds whose first accept came after the
#                     client's last connect (no worker ran before it)
# all in ms from the round's first connect, for each MODE (default: none,
# then auto), one after the other.  A round starts at a connect that
# follows 10 ms without one (the rounds are 20 ms apart).
#
# Needs perf (Debian: linux-perf) and root or kernel.perf_event_paranoid
# <= 1 (tracepoints of every process).  Tracing slows the machine a
# little: compare the modes of one invocation, not with other tables.
set -u
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=bench/lib.sh
. "$here/lib.sh"
ROUNDS=${TIMELINE_ROUNDS:-20}
SLEEP_MS=${TIMELINE_SLEEP_MS:-5}

usage() { echo "usage: bench/burst-timeline.sh STYLE WORKERS [MODE...]" >&2; exit 2; }
[ $# -ge 2 ] || usage
style=$1 workers=$2
shift 2
[ -x "$BENCH_ROOT/examples/$style" ] || { echo "burst-timeline: no example $style (make first)" >&2; exit 2; }
[[ $workers =~ ^[1-9][0-9]*$ ]] || usage
[ $# -gt 0 ] || set -- none auto
if ! command -v perf >/dev/null; then
    echo "burst-timeline: perf is not installed (apt-get install linux-perf)" >&2
    exit 1
fi
if [ "$(id -u)" != 0 ] && [ "$(cat /proc/sys/kernel/perf_event_paranoid)" -gt 1 ]; then
    echo "burst-timeline: needs root or kernel.perf_event_paranoid <= 1" >&2
    exit 1
fi

work=$(mktemp -d "${TMPDIR:-/tmp}/thunder-timeline.XXXXXX")
perf_pid=''
trap 'cell_cleanup; [ -n "$perf_pid" ] && kill "$perf_pid" 2>/dev/null; rm -rf "$work"' EXIT
trap 'exit 130' INT TERM
if ! err=$(perf record -q -o "$work/probe.data" -a -e syscalls:sys_enter_connect -- true 2>&1 >/dev/null); then
    echo "burst-timeline: perf cannot trace system calls here: ${err:-no reason given}" >&2
    exit 1
fi

# The means over the rounds, from perf script's "comm pid time: event: ret" lines.
timeline() {
    awk -v pids="$1" '
        BEGIN { n = split(pids, p, ","); for (i = 1; i <= n; i++) worker[p[i]] = 1 }
        {
            t = $3; sub(":", "", t); t *= 1000
            if ($4 ~ /sys_enter_connect/ && $1 == "thunder-loadgen") {
                if (t - last > 10) { r++; t0[r] = t }
                last = t; cend[r] = t - t0[r]
            } else if ($4 ~ /sys_exit_accept/ && ($2 in worker) && r > 0 && $NF !~ /^0xf{8}/) {
                d = t - t0[r]
                if (!(r in first)) first[r] = d
                if (!((r, $2) in got)) { got[r, $2] = 1; started[r] = d }
                lastacc[r] = d
            }
        }
        END {
            for (i = 2; i < r; i++) {
                m++; f += first[i]; s += started[i]; c += cend[i]; l += lastacc[i]
                waited += first[i] >= cend[i]
            }
            if (m == 0) { print "burst-timeline: no complete round traced" > "/dev/stderr"; exit 1 }
            printf "%.2f %.2f %.2f %.2f %d/%d\n", f / m, s / m, c / m, l / m, waited, m
        }'
}

printf '| mode | first accept | workers started | connects end | last accept | round | waited |\n'
printf '|---|---|---|---|---|---|---|\n'
for mode in "$@"; do
    perf record -q -o "$work/perf.data" -a -e syscalls:sys_enter_connect \
        -e syscalls:sys_exit_accept4 -e syscalls:sys_exit_accept 2>/dev/null &
    perf_pid=$!
    sleep 1                     # perf is tracing before the first round
    out=$(run_burst_cell "$style" "$workers" "$mode" $((2 * workers)) "$ROUNDS" "$SLEEP_MS")
    kill -INT "$perf_pid"
    wait "$perf_pid" 2>/dev/null
    perf_pid=''
    # the workers that accepted, from loadgen's per-pid counts
    pids=$(sed -n 's/^pid=\([0-9]*\) .*/\1/p' <<<"$out" | paste -sd ,)
    read -r first started cend lastacc waited < <(perf script -i "$work/perf.data" \
        -F comm,pid,time,event,trace 2>/dev/null | timeline "$pids")
    printf '| %s | %s | %s | %s | %s | %s | %s |\n' "$mode" "${first:--}" "${started:--}" \
        "${cend:--}" "${lastacc:--}" "$(cell_get round_ms_mean "$out")" "${waited:--}"
done

#!/bin/bash
# bench/cpushare.sh - the library's share of a server's CPU, sampled (issue 12).
#
#   bench/cpushare.sh [TARGET...]
#
# Interleaved pairs of whole runs (bench/pairs.sh) cannot resolve a few
# percent of CPU per connection on a shared machine: their single ratios
# span 0.5-2.  This asks the workers themselves: perf samples their CPU
# (cpu-clock, CPUSHARE_HZ 20000 a second; a virtual machine has no
# hardware counters) while CPUSHARE_CONNS (6000) sequential connections,
# 200 us apart, are served, and prints the share of the samples that fell
# in libthunder.so, in the vDSO (clock reads: the program's and the
# library's) and in libc, each run under every library given, the runs
# interleaved CPUSHARE_RUNS (3) times.  The share is steadier than a
# ratio of times because the program's own work in the same run is the
# measure.  About half a point of it is the kernel's exit from the real
# wait, which lands on the library's next instruction (libc's without it).
#
# TARGET is peer:CONFIG:WORKERS (a real server, bench/peers/servers.sh) or
# STYLE:WORKERS (an example); MODE is CPUSHARE_MODE (auto).  Default:
# nginx default and accept_mutex on, 4 workers.  CPUSHARE_LIBS: the
# libraries to compare (default: the one built here).  Needs perf (Debian:
# linux-perf) and root or kernel.perf_event_paranoid <= 1.
set -u
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=bench/lib.sh
. "$here/lib.sh"
# shellcheck source=bench/peers/servers.sh
. "$here/peers/servers.sh"
CONNS=${CPUSHARE_CONNS:-6000}
RUNS=${CPUSHARE_RUNS:-3}
HZ=${CPUSHARE_HZ:-20000}
MODE=${CPUSHARE_MODE:-auto}
read -r -a LIBS <<<"${CPUSHARE_LIBS:-$BENCH_LIB}"
loadgen=$BENCH_ROOT/tools/thunder-loadgen

if ! command -v perf >/dev/null; then
    echo "cpushare: perf is not installed (apt-get install linux-perf)" >&2
    exit 1
fi
[ $# -gt 0 ] || set -- peer:nginx:4 peer:nginx-accept-mutex:4

work=$(mktemp -d "${TMPDIR:-/tmp}/thunder-cpushare.XXXXXX")
chmod 1777 "$work"     # nginx's and Apache's workers run as another user
peer_config='' peer_dir='' recorder=''
trap 'cell_cleanup; [ -n "$recorder" ] && kill -INT "$recorder" 2>/dev/null;
      [ -n "$peer_config" ] && peer_stop "$peer_config" "$peer_dir" >/dev/null 2>&1; rm -rf "$work"' EXIT
trap 'exit 130' INT TERM

# sample PIDS HTTP PORT: perf on PIDS while CONNS sequential requests are
# served; the shares of the runs' samples, "libthunder vdso libc"
sample() {
    local out
    perf record -q -e cpu-clock -F "$HZ" -p "$1" -o "$work/perf.data" >/dev/null 2>&1 &
    recorder=$!
    sleep 0.5
    out=$(timeout 120 "$loadgen" ${2:+-H} -p "$3" -n "$CONNS" -c 1 -g 200 -d 90 -P "$1")
    kill -INT "$recorder" 2>/dev/null
    wait "$recorder" 2>/dev/null
    recorder=''
    [ "$(cell_get ok "$out")" = "$CONNS" ] || { echo "cpushare: $(cell_get ok "$out") of $CONNS answered" >&2; return 1; }
    perf report -i "$work/perf.data" --sort dso --stdio 2>/dev/null | awk '
        /^ *[0-9.]+%/ { v = $1; sub("%", "", v)
                        if ($2 == "libthunder.so") t = v
                        else if ($2 == "[vdso]") d = v
                        else if ($2 == "libc.so.6") c = v }
        END { printf "%.2f %.2f %.2f\n", t, d, c }'
}

one_run() {  # TARGET LIB: "libthunder vdso libc" of one run
    local a b c port kids
    IFS=: read -r a b c <<<"$1"
    if [ "$a" = peer ]; then
        port=$(free_port)
        peer_config=$b peer_dir=$work/peer
        peer_start "$b" "$c" "$port" "$peer_dir" "LD_PRELOAD=$2" "THUNDER_MODE=$MODE" || return 1
        kids=$(peer_ready "$b" "$peer_dir" "$c" "$port" "$loadgen" 10) && sample "$kids" http "$port"
        peer_stop "$b" "$peer_dir" >/dev/null 2>&1
        peer_config=''
        rm -rf "$peer_dir"
    else
        BENCH_LIB=$2 cell_start "$a" "$MODE" -w "$b" || return 1
        sample "$cell_workers" "" "$cell_port"
        cell_cleanup
    fi
}

mean() { awk '{ s += $1; n++ } END { if (n) printf "%.2f", s / n; else print "-" }'; }

printf '| target | library | libthunder.so, mean | runs | vDSO, mean | libc, mean |\n|---|---|---|---|---|---|\n'
for target in "$@"; do
    if [[ $target == peer:* ]] && ! peer_installed "$(cut -d: -f2 <<<"$target")"; then
        echo "cpushare: $target not installed" >&2
        continue
    fi
    rm -f "$work"/r.*
    for _ in $(seq "$RUNS"); do
        for i in "${!LIBS[@]}"; do
            one_run "$target" "${LIBS[$i]}" >>"$work/r.$i" || echo "- - -" >>"$work/r.$i"
        done
    done
    for i in "${!LIBS[@]}"; do
        printf '| %s | %s | %s%% | %s | %s%% | %s%% |\n' "$target" "${LIBS[$i]}" \
            "$(awk '$1 != "-" { print $1 }' "$work/r.$i" | mean)" "$(awk '{ printf "%s ", $1 }' "$work/r.$i")" \
            "$(awk '$2 != "-" { print $2 }' "$work/r.$i" | mean)" "$(awk '$3 != "-" { print $3 }' "$work/r.$i" | mean)"
    done
done

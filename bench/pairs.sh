#!/bin/bash
# bench/pairs.sh - with/without ratios from interleaved runs (issue 12).
#
#   bench/pairs.sh [TARGET...]
#
# A shared, noisy machine makes one run of each side worthless for a 5%
# question, so each target runs in PAIRS_N pairs (default 3) of one run
# without the shim and one with it, the side that goes first alternating
# (without, with; with, without; ...) so that a drift of the machine
# during the pairs (load, TIME_WAIT sockets piling up) does not favour
# one side.  It reports the median of the per-pair ratios (with /
# without) of requests/s and of CPU time per connection (the workers'
# schedstat, from loadgen), with the interval that holds the true median
# at 90% or more (median_ci, below), and the ratio of the best runs (highest
# req/s, lowest CPU per connection), which interference from other
# processes can only make worse.
#
# A MODE of none runs the same program without the shim on both sides:
# its ratios are the noise floor the other rows should be read against
# (the defaults include one such control for the examples and one for
# the peers).  A MODE of off loads the shim and keeps it pass-through:
# the cost of being loaded.
#
# PAIRS_BASE_LIB=path/to/libthunder.so compares two builds instead: the
# "without" side then runs that library in the same mode, and the ratios
# are this build's (BENCH_LIB) over that one's.
#
# TARGET is
#   STYLE:WORKERS:MODE   an example under THUNDER_MODE=MODE, saturated:
#                        PAIRS_CLIENTS (8) clients in a closed loop for
#                        PAIRS_SECONDS (2) s, as bench/matrix.sh's sat
#   peer:CONFIG:WORKERS:WORKLOAD[:MODE]  a real server
#                        (bench/peers/servers.sh) in MODE (auto);
#                        WORKLOAD seq (PAIRS_SEQ_CONNS, 1000,
#                        sequential, 200 us apart) or sat
# Default: every example style at 4 workers in auto, lock and exclusive,
# ex_epoll_shared at 16 and 64 in auto and lock, and the four herd-free
# peers (nginx default and accept_mutex on, Apache prefork, uWSGI
# --thunder-lock) at 4 workers, seq; each group with its control (none
# on both sides).  Prints one table row per target.
set -u
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=bench/lib.sh
. "$here/lib.sh"
# shellcheck source=bench/peers/servers.sh
. "$here/peers/servers.sh"
root=$BENCH_ROOT
N=${PAIRS_N:-3}
SECONDS_SAT=${PAIRS_SECONDS:-2}
CLIENTS=${PAIRS_CLIENTS:-8}
SEQ_CONNS=${PAIRS_SEQ_CONNS:-1000}
BASE_LIB=${PAIRS_BASE_LIB:-}
loadgen=$root/tools/thunder-loadgen

if [ $# -eq 0 ]; then
    set -- ex_epoll_excl:4:none
    for style in ex_poll ex_select ex_epoll ex_epoll_excl ex_epoll_shared ex_threads ex_evloop ex_greedy ex_inherit ex_accept; do
        for mode in auto lock exclusive; do set -- "$@" "$style:4:$mode"; done
    done
    set -- "$@" ex_epoll_shared:16:auto ex_epoll_shared:16:lock ex_epoll_shared:64:auto ex_epoll_shared:64:lock
    set -- "$@" peer:nginx:4:seq:none
    for config in nginx nginx-accept-mutex apache-prefork uwsgi-thunder-lock; do
        set -- "$@" "peer:$config:4:seq"
    done
fi

work=$(mktemp -d "${TMPDIR:-/tmp}/thunder-pairs.XXXXXX")
chmod 755 "$work"
peer_config='' peer_dir=''
trap 'cell_cleanup; [ -n "$peer_config" ] && peer_stop "$peer_config" "$peer_dir" >/dev/null 2>&1; rm -rf "$work"' EXIT
trap 'exit 130' INT TERM

# one_example STYLE WORKERS MODE: "rps cpu" of one saturated run
one_example() {
    local threads=
    [ "$1" = ex_threads ] && threads=4
    local out
    out=$(run_cell_gap "$1" "$2" "$3" 100000000 "$CLIENTS" "$SECONDS_SAT" 0 "$threads")
    echo "$(cell_get rps "$out") $(cell_get cpu_ms_per_1000 "$out")"
}

# one_peer CONFIG WORKERS MODE WORKLOAD: "rps cpu" of one run
one_peer() {
    local port kids out
    local -a vars=()
    port=$(free_port)
    peer_config=$1 peer_dir=$work/peer
    [ "$3" != none ] && vars=("LD_PRELOAD=$BENCH_LIB" "THUNDER_MODE=$3")
    peer_start "$1" "$2" "$port" "$peer_dir" "${vars[@]}" || return 1
    if kids=$(peer_ready "$1" "$peer_dir" "$2" "$port" "$loadgen" 10); then
        case $4 in
            seq) out=$(timeout 90 "$loadgen" -H -p "$port" -n "$SEQ_CONNS" -c 1 -d 60 -g 200 -P "$kids") ;;
            *) out=$(timeout 60 "$loadgen" -H -p "$port" -n 100000000 -c "$CLIENTS" -d "$SECONDS_SAT" -g 0 -P "$kids") ;;
        esac
    fi
    peer_stop "$1" "$peer_dir" >/dev/null 2>&1
    peer_config=''
    rm -rf "$peer_dir"
    echo "$(cell_get rps "${out:-}") $(cell_get cpu_ms_per_1000 "${out:-}")"
}

median() { tr ' ' '\n' | grep -v '^$' | sort -g | awk '{ v[NR] = $1 } END { if (NR == 0) print "-"; else if (NR % 2) print v[(NR + 1) / 2]; else printf "%.3f\n", (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }

# The median's distribution-free confidence interval: the k-th smallest and
# k-th largest of n ratios cover the true median with probability
# 1 - 2 P(Binomial(n, 1/2) < k), whatever the ratios' distribution.  The
# widest k that still covers 90% is taken, and its coverage printed: 5
# pairs give their lowest and highest (94%), 11 the 3rd of each end (93%).
# A ratio can only be called above or below 1.0 when its interval is.
median_ci() {
    tr ' ' '\n' | grep -v '^$' | sort -g | awk '
        { v[NR] = $1 }
        END {
            n = NR
            if (n < 2) { print "-"; exit }
            tail = 0; choose = 1; k = 1      # tail: P(Binomial(n, 1/2) < k)
            for (;;) {
                tail += choose / 2 ^ n
                choose = choose * (n - k + 1) / k
                if (k + 1 > n - k || 1 - 2 * (tail + choose / 2 ^ n) < 0.90) break
                k++
            }
            printf "%.3f-%.3f (%.0f%%)", v[k], v[n - k + 1], 100 * (1 - 2 * tail)
        }'
}

best() {  # max|min of the numbers given
    tr ' ' '\n' | grep -v '^$' | sort -g | if [ "$1" = max ]; then tail -n 1; else head -n 1; fi
}
ratio_of() { awk -v a="${1:-0}" -v b="${2:-0}" 'BEGIN { if (a > 0 && b > 0) printf "%.3f", a / b; else print "-" }'; }

printf '| target | workload | req/s ratio (median) | its interval | CPU/conn ratio (median) | its interval | best req/s ratio | best CPU/conn ratio | req/s ratios | CPU ratios |\n|---|---|---|---|---|---|---|---|---|---|\n'
for target in "$@"; do
    IFS=: read -r a b c d e <<<"$target"
    if [ "$a" = peer ]; then with_mode=${e:-auto}; else with_mode=$c; fi
    rr='' cr='' r0s='' r1s='' c0s='' c1s='' i=0
    if [ "$a" = peer ] && ! peer_installed "$b"; then
        echo "pairs: $b not installed" >&2
        continue
    fi
    for _ in $(seq "$N"); do
        i=$((i + 1))
        for side in $( ((i % 2)) && echo "0 1" || echo "1 0"); do
            mode=none lib=$BENCH_LIB
            ((side)) && mode=$with_mode
            if ((!side)) && [ -n "$BASE_LIB" ]; then
                mode=$with_mode lib=$BASE_LIB
            fi
            # in this shell (not a subshell), so that an interrupt stops the server
            if [ "$a" = peer ]; then
                BENCH_LIB=$lib one_peer "$b" "$c" "$mode" "$d" >"$work/r$side"
            else
                BENCH_LIB=$lib one_example "$a" "$b" "$mode" >"$work/r$side"
            fi
        done
        read -r r0 c0 <"$work/r0"
        read -r r1 c1 <"$work/r1"
        rr+=" $(ratio_of "${r1:-}" "${r0:-}")"
        cr+=" $(ratio_of "${c1:-}" "${c0:-}")"
        r0s+=" ${r0:-}" r1s+=" ${r1:-}" c0s+=" ${c0:-}" c1s+=" ${c1:-}"
    done
    if [ "$a" = peer ]; then label="$b $c workers ($with_mode)" wl=$d; else label="$a $b workers $c" wl=sat; fi
    printf '| %s | %s | %s | %s | %s | %s | %s | %s |%s |%s |\n' "$label" "$wl" \
        "$(median <<<"$rr")" "$(median_ci <<<"$rr")" "$(median <<<"$cr")" "$(median_ci <<<"$cr")" \
        "$(ratio_of "$(best max <<<"$r1s")" "$(best max <<<"$r0s")")" \
        "$(ratio_of "$(best min <<<"$c1s")" "$(best min <<<"$c0s")")" "$rr" "$cr"
done

#!/bin/bash
# bench/syscalls.sh - system calls per connection, without and with the shim.
#
#   bench/syscalls.sh [--quick] [--no-peers] [--no-write]
#
# What the shim costs a server that needs nothing from it, counted by the
# kernel's own measure: strace -c -f attached to the workers (not the
# master, not the start-up) while SYSCALLS_CONNS (500) sequential
# connections, SYSCALLS_GAP_US (200) apart, are served by SYSCALLS_WORKERS
# (4) workers.  Every example style (examples/ex_*) runs without the shim,
# in auto mode and in lock mode; the real servers (bench/peers/servers.sh:
# nginx default and accept_mutex on, Apache prefork, uWSGI with and without
# --thunder-lock) without the shim and in auto mode.  glibc issues select()
# as pselect6: the counts are the kernel's names.
#
# Budget (extra calls per connection): where rotation applies (auto with
# fifo balance on an exclusive wait), its EPOLL_CTL_DEL + ADD, i.e. 2;
# nothing else anywhere in auto mode (a wait that holds no managed
# listener, an exclusive wait, a blocking accept).  Lock mode's budget is
# its own: the lock's hand-off (a futex wake and wait, or a doorbell
# datagram and its recv, and the holder's timed re-checks) plus the
# listener's exclusion on a mixed set.  The peers' limits (issue 12):
# nginx default <= +2.0, accept_mutex on <= +0.5, Apache prefork <= +0.2.
#
# Writes bench/results/syscalls.md (by name, every configuration) and
# bench/results/syscalls.csv, and the summary table into bench/RESULTS.md
# between the "syscalls" markers (unless --no-write).  --quick: 200
# connections, ex_poll, ex_epoll, ex_epoll_excl and nginx only.
# SYSCALLS_STYLES narrows the examples (with --no-peers --no-write and
# BENCH_LIB: an A/B of two builds).
set -u
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=bench/lib.sh
. "$here/lib.sh"
root=$BENCH_ROOT

quick=0 peers=1 write=1
while [ $# -gt 0 ]; do
    case $1 in
        --quick) quick=1 ;;
        --no-peers) peers=0 ;;
        --no-write) write=0 ;;
        -h|--help) sed -n '2,29s/^# \{0,1\}//p' "$0"; exit 0 ;;
        *) echo "syscalls.sh: unknown option '$1' (accepted: --quick --no-peers --no-write)" >&2; exit 2 ;;
    esac
    shift
done
CONNS=${SYSCALLS_CONNS:-500}
GAP_US=${SYSCALLS_GAP_US:-200}
WORKERS=${SYSCALLS_WORKERS:-4}
STYLES=${SYSCALLS_STYLES:-ex_poll ex_select ex_epoll ex_epoll_excl ex_epoll_shared ex_threads ex_evloop ex_accept}
PEERS="nginx nginx-accept-mutex apache-prefork uwsgi uwsgi-thunder-lock"
if [ "$quick" = 1 ]; then
    CONNS=200 STYLES="ex_poll ex_epoll ex_epoll_excl" PEERS=nginx write=0
fi

loadgen=$root/tools/thunder-loadgen
for need in "$loadgen" "$BENCH_LIB"; do
    [ -e "$need" ] || { echo "syscalls: $need missing (run make)" >&2; exit 2; }
done
command -v strace >/dev/null || { echo "syscalls: strace is not installed (apt-get install strace)" >&2; exit 2; }

work=$(mktemp -d "${TMPDIR:-/tmp}/thunder-syscalls.XXXXXX")
chmod 755 "$work"
tracer=
peer_config='' peer_dir=''
cleanup() {
    [ -n "$tracer" ] && kill -INT "$tracer" 2>/dev/null
    cell_cleanup
    [ -n "$peer_config" ] && peer_stop "$peer_config" "$peer_dir" >/dev/null 2>&1
    rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# count PIDS HTTP PORT OUT: strace -c -f on the workers while CONNS
# sequential connections are served; "name calls" lines into OUT.
count() {
    local pids=$1 http=$2 port=$3 out=$4 pid
    local -a attach=() load=("$loadgen" -p "$port" -c 1 -d 60 -g "$GAP_US")
    [ "$http" = 1 ] && load+=(-H)
    # warm up first: what each worker does once (attaching the listener's
    # segment, claiming its statistics slot) is not a per-connection cost
    "${load[@]}" -n $((WORKERS * 5)) >/dev/null 2>&1
    for pid in ${pids//,/ }; do attach+=(-p "$pid"); done
    strace -f -c -o "$work/strace.out" "${attach[@]}" 2>"$work/strace.err" &
    tracer=$!
    for _ in $(seq 100); do   # every thread attached
        [ "$(grep -c 'attached' "$work/strace.err")" -ge "$(tasks "$pids")" ] && break
        sleep 0.05
    done
    sleep 0.2
    timeout 90 "${load[@]}" -n "$CONNS" >"$work/load.out" 2>&1
    sleep 0.2
    kill -INT "$tracer" 2>/dev/null
    wait "$tracer" 2>/dev/null
    tracer=
    # "% time seconds usecs/call calls [errors] syscall": name and calls
    awk '$1 ~ /^[0-9.]+$/ && NF >= 5 && $NF != "total" { print $NF, $4 }' "$work/strace.out" >"$out"
    [ "$(cell_get ok "$(cat "$work/load.out")")" = "$CONNS" ] ||
        echo "syscalls: only $(cell_get ok "$(cat "$work/load.out")") of $CONNS connections answered" >&2
}

tasks() {  # threads of the given processes
    local pid n=0
    local -a t
    for pid in ${1//,/ }; do
        t=("/proc/$pid/task"/*)
        [ -e "${t[0]}" ] && n=$((n + ${#t[@]}))
    done
    echo "$n"
}

# One example: start it (MODE none = without the shim), count, stop.
example_counts() {  # example mode out
    local line port
    local -a env_cmd=(env)
    [ "$2" != none ] && env_cmd+=("LD_PRELOAD=$BENCH_LIB" "THUNDER_MODE=$2")
    cell_out=$(mktemp)
    "${env_cmd[@]}" "$root/examples/$1" -w "$WORKERS" >"$cell_out" 2>/dev/null &
    cell_master=$!
    for _ in $(seq 100); do
        line=$(head -n 1 "$cell_out" 2>/dev/null)
        [ -n "$line" ] && break
        sleep 0.05
    done
    port=$(sed -n 's/.*port=\([0-9]*\).*/\1/p' <<<"$line")
    cell_workers=$(sed -n 's/.*workers=\([0-9,]*\).*/\1/p' <<<"$line")
    [ -n "$port" ] || { echo "syscalls: $1 did not start" >&2; cell_cleanup; return 1; }
    count "$cell_workers" 0 "$port" "$3"
    cell_cleanup
}

peer_counts() {  # config mode out
    local port kids
    port=$(free_port)
    peer_config=$1 peer_dir=$work/peer-$1-$2
    local -a vars=()
    [ "$2" != none ] && vars=("LD_PRELOAD=$BENCH_LIB" "THUNDER_MODE=$2")
    peer_start "$1" "$WORKERS" "$port" "$peer_dir" "${vars[@]}" || return 1
    if ! kids=$(peer_ready "$1" "$peer_dir" "$WORKERS" "$port" "$loadgen" 10); then
        echo "syscalls: $1 did not start: $(tail -n 2 "$peer_dir/server.log" 2>/dev/null | tr '\n' ' ')" >&2
        peer_stop "$1" "$peer_dir" >/dev/null 2>&1
        peer_config=
        return 1
    fi
    count "$kids" 1 "$port" "$3"
    peer_stop "$1" "$peer_dir" >/dev/null 2>&1
    peer_config=
}

csv=$work/syscalls.csv
echo "config,mode,syscall,per_conn" >"$csv"
add_rows() {  # config mode file
    awk -v c="$1" -v m="$2" -v n="$CONNS" '{ printf "%s,%s,%s,%.3f\n", c, m, $1, $2 / n }' "$3" >>"$csv"
}

for style in $STYLES; do
    for mode in none auto lock; do
        echo "syscalls: $style $mode" >&2
        example_counts "$style" "$mode" "$work/c.txt" && add_rows "$style" "$mode" "$work/c.txt"
    done
done
if [ "$peers" = 1 ]; then
    # shellcheck source=bench/peers/servers.sh
    . "$here/peers/servers.sh"
    for config in $PEERS; do
        if ! peer_installed "$config"; then
            echo "syscalls: $config: not installed, skipped (apt-get install $(peer_packages "$config"))" >&2
            continue
        fi
        for mode in none auto; do
            echo "syscalls: $config $mode" >&2
            peer_counts "$config" "$mode" "$work/c.txt" && add_rows "$config" "$mode" "$work/c.txt"
        done
    done
fi

# budget CONFIG MODE: the extra calls per connection allowed
budget() {
    case $1/$2 in
        nginx/auto) echo 2.0 ;;
        nginx-accept-mutex/auto) echo 0.5 ;;
        apache-prefork/auto) echo 0.2 ;;
        uwsgi*/auto) echo 2.0 ;;
        ex_accept/*) echo 0.2 ;;       # a blocking accept is left alone
        ex_threads/auto | ex_epoll_shared/auto) echo lock ;;   # auto uses the lock there
        */auto) echo 2.0 ;;            # the rotation
        *) echo lock ;;
    esac
}

# The summary: total per connection without, with, the extra, and the
# names whose count moved by 0.05 or more.
summary() {
    echo "| server or example | mode | calls/conn without | with | extra | budget | met | what changed (per connection) |"
    echo "|---|---|---|---|---|---|---|---|"
    awk -F, -v budgets="$1" '
        BEGIN { while ((getline line < budgets) > 0) { split(line, b, " "); budget[b[1]] = b[2] } }
        NR > 1 { v[$1 "," $2 "," $3] = $4; tot[$1 "," $2] += $4; names[$1 "," $3] = 1
                 if (!($1 in seen)) { seen[$1] = 1; order[n++] = $1 }
                 if (!(($1 "," $2) in mseen) && $2 != "none") { mseen[$1 "," $2] = 1; modes[$1] = modes[$1] " " $2 } }
        END {
            for (i = 0; i < n; i++) {
                c = order[i]; k = split(modes[c], ms, " ")
                for (j = 1; j <= k; j++) {
                    m = ms[j]; extra = tot[c "," m] - tot[c ",none"]; what = ""
                    for (key in names) {
                        split(key, p, ","); if (p[1] != c) continue
                        d = v[c "," m "," p[2]] - v[c ",none," p[2]]
                        if (d >= 0.05 || d <= -0.05) what = what sprintf("%s %+.2f, ", p[2], d)
                    }
                    sub(/, $/, "", what)
                    bud = budget[c "/" m]; met = "-"
                    if (bud != "lock" && bud != "") met = (extra <= bud + 0.005) ? "yes" : "NO"
                    if (bud == "lock") bud = "lock (own)"; else bud = "+" bud
                    printf "| %s | %s | %.2f | %.2f | %+.2f | %s | %s | %s |\n", c, m, tot[c ",none"], tot[c "," m], extra, bud, met, what
                }
            }
        }' "$csv"
}

# The full table by name for one configuration.
by_name() {  # config
    local modes
    local -a ms
    modes=$(awk -F, -v c="$1" 'NR > 1 && $1 == c && !s[$2]++ { printf "%s ", $2 }' "$csv")
    read -r -a ms <<<"$modes"
    printf '| syscall |'; printf ' %s |' "${ms[@]}"; printf '\n|---|'; printf -- '---|%.0s' "${ms[@]}"; printf '\n'
    awk -F, -v c="$1" -v modes="$modes" 'NR > 1 && $1 == c { v[$2 "," $3] = $4; names[$3] = 1 }
        END { n = split(modes, m, " ")
              for (s in names) { printf "| %s |", s; for (i = 1; i <= n; i++) printf " %.2f |", v[m[i] "," s] + 0; printf "\n" } }' "$csv" | sort
}

budgets=$work/budgets
awk -F, 'NR > 1 { print $1 "/" $2 }' "$csv" | sort -u | while read -r cm; do
    echo "$cm $(budget "${cm%/*}" "${cm#*/}")"
done >"$budgets"

table=$(summary "$budgets")
echo "$table"
[ "$write" = 1 ] || exit 0

mkdir -p "$here/results"
cp "$csv" "$here/results/syscalls.csv"
{
    echo "# System calls per connection, by name"
    echo
    echo "Written by bench/syscalls.sh on $(date -u '+%Y-%m-%d %H:%M UTC'), libthunder $(git -C "$root" rev-parse --short HEAD 2>/dev/null || echo '?'):"
    echo "strace -c -f on the $WORKERS workers, $CONNS sequential connections $GAP_US µs apart."
    echo
    echo "$table"
    awk -F, 'NR > 1 && !s[$1]++ { print $1 }' "$csv" | while read -r config; do
        echo
        echo "## $config"
        echo
        by_name "$config"
    done
} >"$here/results/syscalls.md"

section=$work/section.md
{
    echo "<!-- syscalls: written by bench/syscalls.sh -->"
    echo "## System calls per connection (bench/syscalls.sh)"
    echo
    echo "strace -c -f on the $WORKERS workers while $CONNS sequential connections ($GAP_US µs apart) are served; $(date -u '+%Y-%m-%d %H:%M UTC'), libthunder $(git -C "$root" rev-parse --short HEAD 2>/dev/null || echo '?')."
    echo "Budget: auto adds at most the rotation's EPOLL_CTL_DEL + ADD (2) where it rotates, and nothing else, on every path where the wait holds no listener or the exclusive mechanism applies (the poll/select mirror turns the program's wait into an epoll_pwait, answered from its events when the listener woke it, else with a poll(…, 0) of the program's own array; a program that rotates its own EPOLLEXCLUSIVE entry, as nginx does, is not rotated again). Peers (issue 12): nginx default <= +2.0, accept_mutex on <= +0.5, Apache prefork <= +0.2."
    echo
    echo "Lock mode's own budget (also auto where it falls back to the lock: shared epoll instance, threads): a free lock costs nothing; a busy one a look first (the real wait with timeout 0, which serves a backlog unlocked; a waiter whose last wait found a backlog skips it and sleeps in the real wait unlocked for up to 5 ms, which returns at once what is ready; in a burst, a look that finds the listener ready just after this thread's accept also asks the listen queue's length, getsockopt TCP_INFO), then, queued, two rt_sigprocmask around the queued wait, the sleep (ppoll on the doorbell), the hand-off (the releaser's sendto to the doorbell, the grantee's two recvfrom to drain it; a futex wake only for waiters without a doorbell; in a burst with 24 or more threads queued, a grantee that waited 2 ms or more and whose wait found a backlog also asks TCP_INFO and rings up to four more doorbells, whose threads look once without the lock); and, with time rather than connections, the waiters' periodic looks at the holder (tgkill, and a /proc read for a zombie holder). By name: bench/results/syscalls.md."
    echo
    echo "$table"
    echo "<!-- /syscalls -->"
} >"$section"
results_section syscalls "$section"
echo "syscalls: wrote $here/results/syscalls.md, $here/results/syscalls.csv and the table in $here/RESULTS.md" >&2

#!/bin/bash
# bench/instructions.sh - the shim's own work per connection, counted, not timed (issue 12).
#
#   bench/instructions.sh [TARGET...]
#
# CPU time per connection on a shared machine moves by 10% between two
# runs of the same server (bench/pairs.sh's control rows), far more than
# a preload library's few hundred instructions.  This counts instead:
# the server runs under valgrind's cachegrind (instruction counts only),
# which counts every instruction its processes execute in user space, the
# shim's included, the same on every run.  Each side (without the shim,
# with it in MODE) runs twice, with INSTR_CONNS_A (100) and INSTR_CONNS_B
# (600) sequential connections (200 us apart); the difference, divided
# by the difference in connections, is the per-connection cost, free of
# start-up and shut-down.  What it leaves out is the kernel's side, which
# bench/syscalls.sh counts by system call, and cache misses.
#
# TARGET is STYLE:WORKERS:MODE (an example) or peer:CONFIG:WORKERS[:MODE]
# (a real server, bench/peers/servers.sh; MODE auto).  Default: the four
# herd-free peers (nginx default and accept_mutex on, Apache prefork,
# uWSGI --thunder-lock) and ex_epoll_excl, ex_poll, ex_epoll_shared and
# ex_accept, 4 workers, auto, whose table also goes into bench/RESULTS.md
# between the "instructions" markers; with TARGETs given it is only
# printed.  Prints one table row per target, then the start-up of a
# process that never listens (/bin/true), without and with the shim (the
# TARGET startup prints only that).
set -u
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=bench/lib.sh
. "$here/lib.sh"
# shellcheck source=bench/peers/servers.sh
. "$here/peers/servers.sh"
A=${INSTR_CONNS_A:-100}
B=${INSTR_CONNS_B:-600}
loadgen=$BENCH_ROOT/tools/thunder-loadgen

if ! command -v valgrind >/dev/null; then
    echo "instructions: valgrind is not installed (apt-get install valgrind)" >&2
    exit 1
fi
write=0
if [ $# -eq 0 ]; then
    write=1
    set -- peer:nginx:4 peer:nginx-accept-mutex:4 peer:apache-prefork:4 peer:uwsgi-thunder-lock:4 \
        ex_epoll_excl:4:auto ex_poll:4:auto ex_epoll_shared:4:auto ex_accept:4:auto
fi

work=$(mktemp -d "${TMPDIR:-/tmp}/thunder-instr.XXXXXX")
chmod 755 "$work"      # nginx's and Apache's workers run as another user
peer_config='' peer_dir=''
trap 'cell_cleanup; [ -n "$peer_config" ] && peer_stop "$peer_config" "$peer_dir" >/dev/null 2>&1; rm -rf "$work"' EXIT
trap 'exit 130' INT TERM

# What a side runs under: every process counted, one log each.
counted="valgrind --tool=cachegrind --cache-sim=no --cachegrind-out-file=/dev/null --trace-children=yes --log-file=$work/vg.%p"

# The instructions of every process of the last run, summed (each
# process's log ends with its "I refs" line when it exits).
sum_refs() {
    cat "$work"/vg.* 2>/dev/null | sed -n 's/.*I *refs: *//p' | tr -d , |
        awk '{ s += $1 } END { printf "%d\n", s }'
}

# drive PORT HTTP CONNS: CONNS sequential requests (HTTP ones if HTTP is
# not empty); prints how many were answered
drive() {
    local out
    out=$(timeout 300 "$loadgen" ${2:+-H} -p "$1" -n "$3" -c 1 -g 200 -d 240 -T 20000)
    cell_get ok "$out"
}

one_example() {  # STYLE WORKERS MODE CONNS
    local ok
    rm -f "$work"/vg.*
    BENCH_WRAP=$counted \
        cell_start "$1" "$3" -w "$2" || return 1
    ok=$(drive "$cell_port" "" "$4")
    cell_cleanup
    [ "$ok" = "$4" ] || { echo "instructions: $1 $3: $ok of $4 answered" >&2; return 1; }
    sum_refs
}

one_peer() {  # CONFIG WORKERS MODE CONNS
    local port kids ok=
    local -a vars=()
    port=$(free_port)
    peer_config=$1 peer_dir=$work/peer
    rm -f "$work"/vg.*
    [ "$3" != none ] && vars=("LD_PRELOAD=$BENCH_LIB" "THUNDER_MODE=$3")
    PEER_WRAP=$counted \
        peer_start "$1" "$2" "$port" "$peer_dir" "${vars[@]}" || return 1
    # up to a minute: valgrind starts slowly
    kids=$(peer_ready "$1" "$peer_dir" "$2" "$port" "$loadgen" 60) && ok=$(drive "$port" http "$4")
    peer_stop "$1" "$peer_dir" >/dev/null 2>&1
    peer_config=''
    rm -rf "$peer_dir"
    [ "$ok" = "$4" ] || { echo "instructions: $1 $3: ${ok:-0} of $4 answered" >&2; return 1; }
    sum_refs
}

# per_conn KIND ARGS... MODE: instructions per connection of one side
per_conn() {
    local kind=$1 x y
    shift
    x=$("$kind" "$@" "$A") || return 1
    y=$("$kind" "$@" "$B") || return 1
    awk -v x="$x" -v y="$y" -v n=$((B - A)) 'BEGIN { printf "%.0f\n", (y - x) / n }'
}

table=$work/table
printf '| target | mode | instructions/conn without | with | extra | ratio |\n|---|---|---|---|---|---|\n' | tee "$table"
for target in "$@"; do
    [ "$target" = startup ] && continue     # the start-up line alone, below
    IFS=: read -r a b c d <<<"$target"
    if [ "$a" = peer ]; then
        if ! peer_installed "$b"; then
            echo "instructions: $b not installed" >&2
            continue
        fi
        mode=${d:-auto} label="$b, $c workers" kind=(one_peer "$b" "$c")
    else
        mode=$c label="$a, $b workers" kind=(one_example "$a" "$b")
    fi
    without=$(per_conn "${kind[@]}" none) || continue
    with=$(per_conn "${kind[@]}" "$mode") || continue
    printf '| %s | %s | %s | %s | %+d | %s |\n' "$label" "$mode" "$without" "$with" $((with - without)) \
        "$(awk -v a="$with" -v b="$without" 'BEGIN { printf "%.3f", a / b }')" | tee -a "$table"
done

# A process's start-up under the shim: /bin/true, which never listens, as
# every command of a unit the library is put on (env, which execs it, is
# not counted: /bin/true's valgrind writes the same log over env's).
true_refs() {
    local -a wrap
    read -r -a wrap <<<"$counted"
    rm -f "$work"/vg.*
    "${wrap[@]}" env ${1:+LD_PRELOAD=$1} /bin/true      # one log: exec keeps the pid
    sum_refs
}
startup_without=$(true_refs) startup_with=$(true_refs "$BENCH_LIB")
startup="Start-up of a process that never listens (/bin/true): $startup_without instructions without the shim, $startup_with with it."
echo "$startup"
[ "$write" = 1 ] || exit 0

# The default table into bench/RESULTS.md, between its markers.
commit=$(git -C "$BENCH_ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)
section=$work/section
{
    echo "<!-- instructions: written by bench/instructions.sh -->"
    echo "## Instructions per connection (bench/instructions.sh)"
    echo
    echo "User-space instructions per connection, counted by valgrind's cachegrind over every process of the server (the shim's, the program's and libc's), without and with the shim: the difference between a run of $A and one of $B sequential connections, divided by $((B - A)), so start-up cancels. The counts do not depend on the machine's load; the kernel's side is in the system-call table. $(date -u '+%Y-%m-%d %H:%M UTC'), libthunder $commit."
    echo
    cat "$table"
    echo
    echo "$startup"
    echo "<!-- /instructions -->"
} >"$section"
results_section instructions "$section"
echo "instructions: wrote the table in $here/RESULTS.md" >&2

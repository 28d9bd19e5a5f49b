# shellcheck shell=bash
# shellcheck disable=SC2034  # variables set here are read by the .bats files
# Shared by every tests/*.bats file: start an example server under the shim,
# drive connections at it, measure it, and always clean up after it.
#
#   start_example NAME WORKERS [VAR=VALUE...] [ARG...]
#       starts examples/NAME -w WORKERS [ARG...] with LD_PRELOAD=libthunder.so
#       and the given variables (LD_PRELOAD= runs it without the shim);
#       sets PORT, MASTER, WORKERS (comma list), EX_OUT, EX_ERR (its stderr).
#   stop_example            SIGTERM to the master, bounded wait, then SIGKILL
#                           the master and each worker; sets EXAMPLE_STATUS.
#   socat_conns N           N sequential socat connections; answers in SOCAT_OUT
#   run_loadgen N [ARGS]    tools/thunder-loadgen against PORT, watching WORKERS; LG
#   lg KEY                  one value from the last loadgen run
#   ctxt_sum PIDS           voluntary context switches, all threads, summed
#   jain X...               Jain's fairness index (tools/lib/server.bash)
#
# Loopback only.  Only processes this file started are ever signalled, by
# pid.  Bats runs tests with errexit: a helper command that may fail for a
# harmless reason carries "|| true".  teardown() stops them and removes the segments of their listeners.

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# listener_inode, alive, segment_path, THUNDER_STAT
# shellcheck source=tests/lib/proc.bash
. "$ROOT/tests/lib/proc.bash"
# srv_start, srv_ready_line, srv_stop, jain: shared with thunder-ab and bench
# shellcheck source=tools/lib/server.bash
. "$ROOT/tools/lib/server.bash"
# In a sanitizer build (make check SAN=address,...) the ASan runtime must
# come first in LD_PRELOAD; the Makefile exports its path.
THUNDER_LIB=${TEST_ASAN_PRELOAD:+$TEST_ASAN_PRELOAD:}$ROOT/libthunder.so
EXAMPLES=$ROOT/examples
LOADGEN=$ROOT/tools/thunder-loadgen

# Results must not depend on what the caller's shell had set.
for _var in $(compgen -e); do
    case $_var in THUNDER_*) unset "$_var" ;; esac
done
unset _var LD_PRELOAD

STARTED=()          # "job:master:workers:inode" of every server this test started (empty fields allowed)
EXAMPLE_STATUS=
EX_SEQ=0

# Fail the test with a message (bats shows stderr of a failing test).
fail() {
    echo "FAIL: $*" >&2
    return 1
}

# A loopback TCP port nothing uses right now (for programs that need one given).
free_port() {
    local p i
    for ((i = 0; i < 100; i++)); do
        p=$((20000 + RANDOM % 40000))
        awk -v p="$(printf ':%04X' "$p")" 'substr($2, length($2) - 4) == p { f = 1 }
            END { exit !f }' /proc/net/tcp /proc/net/tcp6 2>/dev/null || { echo "$p"; return 0; }
    done
    return 1
}

# EX_WRAP, when set, is a command (word-split) the example runs under,
# e.g. strace; MASTER is still the example's master, from its ready line.
# With EX_WRAP_PRELOADS=1 the library is the one EX_WRAP preloads (an
# installed thunder-preload), not this tree's.
start_example() {
    local name=$1 workers=$2 arg job
    shift 2
    local -a envs=() args=(-w "$workers")
    # EX_WRAP_PRELOADS=1: the wrapper in EX_WRAP sets LD_PRELOAD itself
    [ -n "${EX_WRAP_PRELOADS:-}" ] || envs+=("LD_PRELOAD=$THUNDER_LIB")
    for arg in "$@"; do
        if [[ $arg =~ ^[A-Za-z_][A-Za-z0-9_]*= ]]; then envs+=("$arg"); else args+=("$arg"); fi
    done
    EX_SEQ=$((EX_SEQ + 1))
    EX_OUT=$BATS_TEST_TMPDIR/$name.$EX_SEQ.out
    EX_ERR=$BATS_TEST_TMPDIR/$name.$EX_SEQ.err
    # shellcheck disable=SC2086  # EX_WRAP is a command line
    srv_start "$EX_OUT" "$EX_ERR" ${EX_WRAP:-} env "${envs[@]}" "$EXAMPLES/$name" "${args[@]}"
    job=$SRV_JOB
    STARTED+=("$job:$job::")
    if ! srv_ready_line "$EX_OUT" "$job"; then
        cat "$EX_ERR" >&2
        fail "$name did not start (stdout: '$(head -n 1 "$EX_OUT" 2>/dev/null || true)')"
        return 1
    fi
    PORT=$SRV_PORT MASTER=$SRV_MASTER WORKERS=$SRV_WORKERS
    LISTEN_INODE=$(listener_inode "$PORT")
    STARTED[${#STARTED[@]} - 1]="$job:$MASTER:$WORKERS:$LISTEN_INODE"
}

# stop_one JOB MASTER WORKERS: srv_stop (SIGTERM to the master, 8 s, then
# SIGKILL to what is left); the job's exit status goes to EXAMPLE_STATUS.
stop_one() {
    srv_stop "$@"
    EXAMPLE_STATUS=$SRV_STATUS
}

# Stop the example started last (MASTER); EXAMPLE_STATUS is its exit status.
stop_example() {
    local entry job master workers inode
    EXAMPLE_STATUS=
    for entry in "${STARTED[@]}"; do
        IFS=: read -r job master workers inode <<<"$entry"
        [ "$master" = "$MASTER" ] && stop_one "$job" "$master" "$workers"
    done
    return 0
}

# Remove the segments of the listeners this test started: the shim removes
# them when the last process exits cleanly, but a killed server leaves them.
# Nobody else's segment is touched.
remove_segments() {
    local entry job master workers inode
    for entry in "${STARTED[@]}"; do
        IFS=: read -r job master workers inode <<<"$entry"
        [ -n "$inode" ] && rm -f "$(segment_path "$inode")"
    done
    return 0
}

# Stop everything this test started, its keep-alive client, its segments.
helpers_teardown() {
    local entry job master workers inode
    for entry in "${STARTED[@]}"; do
        IFS=: read -r job master workers inode <<<"$entry"
        stop_one "$job" "$master" "$workers"
    done
    if [ -n "${KEEPALIVE_PID:-}" ]; then
        kill -TERM "$KEEPALIVE_PID" 2>/dev/null || true
        wait "$KEEPALIVE_PID" 2>/dev/null || true
    fi
    remove_segments
    STARTED=()
}

# A file that needs more defines its own teardown and calls helpers_teardown.
teardown() {
    helpers_teardown
}

segment_of_listener() {
    segment_path "$LISTEN_INODE"
}

# ---- clients ----------------------------------------------------------------

# N sequential connections with socat; each answer (a pid) is one line of
# SOCAT_OUT, a connection without an answer gives a "FAILED" line.
socat_conns() {
    local n=$1 i answer
    SOCAT_OUT=$BATS_TEST_TMPDIR/socat.out
    : >"$SOCAT_OUT"
    for ((i = 0; i < n; i++)); do
        answer=$(socat -T5 - "TCP:127.0.0.1:$PORT" </dev/null 2>>"$BATS_TEST_TMPDIR/socat.err" || true)
        [[ $answer =~ ^[0-9]+$ ]] || answer=FAILED
        echo "$answer" >>"$SOCAT_OUT"
    done
}

# all_answered N [PIDS]: N answers, each from one of PIDS (default WORKERS).
all_answered() {
    local n=$1 pids=${2:-$WORKERS} line count=0
    while IFS= read -r line; do
        [[ ,$pids, == *,$line,* ]] || fail "answer '$line' is not one of the workers $pids" || return 1
        count=$((count + 1))
    done <"$SOCAT_OUT"
    [ "$count" -eq "$n" ] || fail "$count answers for $n connections"
}

# How many answers each worker gave, in WORKERS order, space separated.
answer_counts() {
    local pid
    for pid in ${WORKERS//,/ }; do
        grep -c "^$pid\$" "$SOCAT_OUT"
    done | tr '\n' ' '
}

# tools/thunder-loadgen: N connections against PORT, watching WORKERS.  Its
# figures go to the TAP output; the test asserts on them (lg ok, ...).
run_loadgen() {
    local n=$1
    shift
    LG=$(timeout 120 "$LOADGEN" -p "$PORT" -n "$n" -P "$WORKERS" "$@" || true)
    echo "# loadgen -n $n $*: $(grep -E '^(ok|failed|workers_seen|jain|max_share|wakeups_per_conn)=' <<<"$LG" | tr '\n' ' ')" >&3
}

lg() {
    sed -n "s/^$1=//p" <<<"$LG" | head -n 1
}

# Accept counts per worker from the last loadgen run (0 for workers unseen).
lg_counts() {
    local pid n
    for pid in ${WORKERS//,/ }; do
        n=$(sed -n "s/^pid=$pid accepts=//p" <<<"$LG")
        echo "${n:-0}"
    done | tr '\n' ' '
}

# Every worker accepted at least once in the last loadgen run.
every_worker_seen() {
    local counts
    counts=$(lg_counts)
    [[ " $counts" != *" 0 "* ]] || fail "a worker got no connection: $counts"
}

# ---- measurements --------------------------------------------------------------

# ctxt_sum PIDS...: pids as words or comma lists (WORKERS works as is).
ctxt_sum() {
    local pid f sum=0 n all="$*"
    for pid in ${all//,/ }; do
        for f in /proc/"$pid"/task/*/status; do
            n=$(awk '/^voluntary_ctxt_switches:/ { print $2 }' "$f" 2>/dev/null || true)
            sum=$((sum + ${n:-0}))
        done
    done
    echo "$sum"
}

# a <= b for decimals
le() {
    awk -v a="$1" -v b="$2" 'BEGIN { exit !(a + 0 <= b + 0) }'
}

# ---- the shim's stderr ------------------------------------------------------------

# Lines the shim wrote to the example's stderr (all start "libthunder: ").
shim_lines() {
    grep -c '^libthunder: ' "${1:-$EX_ERR}"
}

# thunder-stat, or skip the rest of the test when it is not built yet.
need_thunder_stat() {
    [ -x "$THUNDER_STAT" ] || skip "thunder-stat not built"
}

# The per-process statistics lines of this test's listener (thunder-stat --kv).
listener_stats() {
    "$THUNDER_STAT" --kv | grep -E "^port=[0-9]+ inode=$LISTEN_INODE "
}

# stat_sum FIELD: FIELD summed over the processes of this test's listener.
stat_sum() {
    listener_stats | awk -v f="$1" '{ for (i = 1; i <= NF; i++) { split($i, kv, "=");
        if (kv[1] == f) s += kv[2] } } END { print s + 0 }'
}

# Build a helper program from tests/progs (the Makefile builds them as
# tests/progs/NAME; until it does, compile it here into the test's tmpdir,
# with the segment core, as the Makefile does).
prog() {
    local name=$1 src=$ROOT/tests/progs/$1.c bin=$ROOT/tests/progs/$1
    if [ -x "$bin" ] && [ "$bin" -nt "$src" ]; then
        echo "$bin"
        return 0
    fi
    bin=$BATS_FILE_TMPDIR/$name
    if [ ! -x "$bin" ]; then
        ${CC:-cc} -std=gnu11 -O2 -Wall -Wextra -Wshadow -Wmissing-prototypes \
            -Wstrict-prototypes -Wformat=2 -pthread -I"$ROOT/shim" -o "$bin" "$src" \
            "$ROOT/shim/segcore.c" >&2 || return 1
    fi
    echo "$bin"
}

# The cost of a wait that holds no managed listener, measured the same way
# by tests/45-syscalls.bats (system calls) and 46-instructions.bats
# (instructions): tests/progs/waitloop runs its 6 waits ROUNDS times.
#
# waitloop_under WITH ROUNDS TOOL [ARG...]: TOOL ARG... waitloop ROUNDS,
# without (WITH=0) or with (1) the shim in auto mode
waitloop_under() {
    local with=$1 rounds=$2
    local -a env_cmd=(env)
    shift 2
    [ "$with" = 1 ] && env_cmd+=("LD_PRELOAD=$THUNDER_LIB" THUNDER_MODE=auto)
    "${env_cmd[@]}" "$@" "$(prog waitloop)" "$rounds"
}

# waitloop_extra MEASURE N1 N2: MEASURE ROUNDS WITH prints one count;
# prints "a b c d extra": the counts without and with the shim at N1
# rounds, the same at N2, and what the shim adds to the 6 x (N2 - N1)
# waits between them (start-up counts the same in both runs and cancels).
# Fails when a count is missing.
waitloop_extra() {
    local a b c d
    a=$("$1" "$2" 0) b=$("$1" "$2" 1) c=$("$1" "$3" 0) d=$("$1" "$3" 1)
    [ -n "$a" ] && [ -n "$b" ] && [ -n "$c" ] && [ -n "$d" ] || return 1
    echo "$a $b $c $d $(((d - c) - (b - a)))"
}

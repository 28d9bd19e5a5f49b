#!/usr/bin/env bats
# Faults of the environment (issue 16): a broken /dev/shm (full, out of
# inodes, read-only, absent) in a private mount namespace, the fd limit,
# system calls of the library made to fail with strace's fault injection,
# stopped processes (SIGSTOP), and a start-up storm of many workers.
# In each case every connection is answered, no worker dies or hangs, and
# the library says once per process what happened.
#
# make check runs a representative subset of the injected failures and 256
# workers; `make check-faults` runs every injected failure and 1024 workers
# (FAULTS_FULL=1, FAULTS_WORKERS=1024).

load helpers

setup_file() {
    local ns=no
    if [ "$(id -u)" = 0 ] && unshare -m --propagation private true 2>/dev/null; then
        ns=yes
    fi
    export FAULTS_NS=$ns
}

need_ns() {
    [ "$FAULTS_NS" = yes ] || skip "needs root and mount namespaces (unshare -m)"
}

# The rest of a test runs in `make check-faults` only.
full_only() {
    [ "${FAULTS_FULL:-0}" = 1 ] || skip "$1 (make check-faults runs it)"
}

need_strace() {
    command -v strace >/dev/null || skip "strace not installed"
    [ -z "${TEST_ASAN_PRELOAD:-}" ] || skip "fault injection runs in the plain build (ASan's own mmaps and futexes would be hit)"
}

# The example's stderr without the lines about workers the test killed.
err_lines() {
    grep -v -E "worker (${KILLED:-none}) killed" "$EX_ERR" || true
}

# Every worker of the last example still alive, none replaced.
workers_alive() {
    local pid
    for pid in ${WORKERS//,/ }; do
        alive "$pid" || fail "worker $pid died: $(cat "$EX_ERR")" || return 1
    done
    ! err_lines | grep -q 'unexpectedly' || fail "a worker died: $(cat "$EX_ERR")"
}

# At most one line of the library per process, at least one in all when
# $1 is "some"; no line of the program's own (an error it saw).
one_line_per_process() {
    local want=${1:-any} n
    n=$(err_lines | grep -c '^libthunder: ' || true)
    echo "# $(grep '^libthunder: ' "$EX_ERR" | head -n 1 | cut -c1-150) (x$n)" >&3
    if [ "$want" = some ]; then
        [ "$n" -ge 1 ] || fail "no warning at all"
    fi
    ! err_lines | grep -v -e '^libthunder: ' -e '^\[[0-9]*\] accept: .*backing off' | grep -q . ||
        fail "the program reported an error: $(cat "$EX_ERR")"
    ! grep -o '^libthunder: \[[0-9]*\]' "$EX_ERR" | sort | uniq -d | grep -q . ||
        fail "more than one line from one process: $(cat "$EX_ERR")"
}

# serve N: N connections all answered, every worker still there.
serve() {
    run_loadgen "$1" -T 3000
    [ "$(lg ok)" = "$1" ] || fail "answered $(lg ok) of $1: $LG"
    [ "$(lg failed)" = 0 ] || fail "failed $(lg failed)"
    workers_alive
}

# ---- 1. resource exhaustion, for real ----------------------------------

shm_fault() {
    local fault=$1 example=${2:-ex_poll} mode=${3:-auto}
    need_ns
    EX_WRAP="unshare -m --propagation private $ROOT/tests/lib/faultns.sh $fault --" \
        start_example "$example" 4 THUNDER_MODE="$mode"
    serve 200
    one_line_per_process some
    grep -q "cannot create .*runs pass-through" "$EX_ERR" || fail "$(cat "$EX_ERR")"
}

@test "faults: /dev/shm full (pages not allocatable: no SIGBUS), poll workers, auto" {
    shm_fault full
}

@test "faults: /dev/shm full, select workers under the lock mode" {
    shm_fault full ex_select lock
}

@test "faults: /dev/shm out of inodes, epoll workers" {
    shm_fault inodes ex_epoll
}

@test "faults: /dev/shm read-only, shared epoll instance" {
    shm_fault ro ex_epoll_shared
}

@test "faults: /dev/shm absent, event loop workers" {
    shm_fault absent ex_evloop
}

@test "faults: the fd limit taken by the library's epoll instance: its fds given back" {
    EX_WRAP="$ROOT/tests/lib/faultns.sh nofile=5 --" start_example ex_poll 4
    serve 200
    one_line_per_process some
    grep -q "fd limit reached" "$EX_ERR" || fail "$(cat "$EX_ERR")"
}

# ---- 2. injected system-call failures ---------------------------------

# inject EXAMPLE MODE SYSCALL ERRNO WHEN: the workers are replaced by new
# ones forked under strace, whose SYSCALL fails with ERRNO at the WHEN-th
# calls (counted per process, from its fork); their segment is removed
# first, so they create it afresh.  Then 200 connections.
inject() {
    local example=$1 mode=$2 call=$3 err=$4 when=$5 pid i
    need_strace
    start_example "$example" 4 THUNDER_MODE="$mode" -r
    kill -STOP "$MASTER"
    strace -f -qq -o /dev/null -p "$MASTER" -e trace="$call" \
        -e inject="$call:error=$err:when=$when" 3>&- &
    STRACE_PID=$!
    for ((i = 0; i < 100; i++)); do
        grep -q '^TracerPid:[[:space:]]*[1-9]' "/proc/$MASTER/status" && break
        sleep 0.05
    done
    for pid in ${WORKERS//,/ }; do kill -KILL "$pid" 2>/dev/null || true; done
    for pid in ${WORKERS//,/ }; do
        for ((i = 0; i < 100; i++)); do
            [ "$(awk '{ print $3 }' "/proc/$pid/stat" 2>/dev/null)" = Z ] && break
            sleep 0.02
        done
    done
    rm -f "$(segment_of_listener)"
    OLD_WORKERS=$WORKERS
    kill -CONT "$MASTER"
    for ((i = 0; i < 100; i++)); do
        [ "$(grep -c '^respawn=' "$EX_OUT")" -ge 4 ] && break
        sleep 0.05
    done
    WORKERS=$(sed -n 's/^respawn=//p' "$EX_OUT" | paste -sd, -)
    [ "$(grep -c '^respawn=' "$EX_OUT")" = 4 ] || fail "respawned: $(cat "$EX_OUT")"
    STARTED+=(":$MASTER:$WORKERS:$LISTEN_INODE")
    KILLED=$(tr , '|' <<<"$OLD_WORKERS")        # the four the test killed
    serve 40
    one_line_per_process
    kill -TERM "$STRACE_PID" 2>/dev/null || true
    wait "$STRACE_PID" 2>/dev/null || true
}

teardown() {
    if [ -n "${STRACE_PID:-}" ]; then
        kill -TERM "$STRACE_PID" 2>/dev/null || true
        wait "$STRACE_PID" 2>/dev/null || true
    fi
    helpers_teardown
}

@test "inject: openat (shm_open) ENOSPC" {
    inject ex_poll auto openat ENOSPC 1+
}

@test "inject: fallocate ENOSPC (the segment's pages)" {
    inject ex_poll lock fallocate ENOSPC 1+
}

@test "inject: mmap ENOMEM (the segment, the mirror's table)" {
    inject ex_poll auto mmap ENOMEM 1
    inject ex_poll auto mmap ENOMEM 2
}

@test "inject: epoll_create1 EMFILE (the private epoll instance)" {
    inject ex_poll auto epoll_create1 EMFILE 1+
}

@test "inject: epoll_ctl ENOMEM: the mirror's ADD and the rotation's re-ADD failing" {
    # poll workers: epoll_ctl is the library's alone (the mirror)
    inject ex_poll auto epoll_ctl ENOMEM 3+2
}

@test "inject: the rotation's re-ADD in the program's own epoll instance fails, the listener comes back" {
    need_strace
    # ex_epoll: ADD (the program's), then per connection DEL + ADD (the
    # rotation): the 3rd call is the first re-ADD; then seven failures in
    # a row in make check-faults (the re-ADD and the retries before and
    # during the waits)
    inject ex_epoll auto epoll_ctl ENOMEM 3
    grep -q "re-adding the listener .* failed" "$EX_ERR" || fail "$(cat "$EX_ERR")"
}

@test "inject: socket EMFILE (the doorbell)" {
    inject ex_select lock socket EMFILE 1+
}

@test "inject (make check-faults): openat EMFILE/EINTR, ftruncate, fallocate EINTR, mmap, epoll_create1 ENOMEM, epoll_ctl ENOSPC, socket ENOMEM, bind, getsockopt" {
    full_only "the other errors of each call"
    inject ex_select lock openat EMFILE 1+
    inject ex_poll lock openat EINTR 1+2
    inject ex_poll lock ftruncate ENOSPC 1+
    inject ex_epoll auto fallocate EINTR 1
    inject ex_select lock mmap ENOMEM 1
    inject ex_select exclusive epoll_create1 ENOMEM 1+2
    inject ex_poll auto epoll_ctl ENOSPC 2+5
    inject ex_epoll auto epoll_ctl ENOSPC 3..9
    grep -q "re-adding the listener .* failed" "$EX_ERR" || fail "$(cat "$EX_ERR")"
    inject ex_evloop lock socket ENOMEM 1+2
    inject ex_select lock bind EADDRINUSE 1+
    inject ex_poll auto getsockopt ENOMEM 1
    inject ex_select lock getsockopt EINTR 1+
}

# ---- 3. stopped processes --------------------------------------------------

@test "stopped: a lock holder stopped with SIGSTOP is taken over; continued, it copes" {
    local holder t0 t1 ms pid
    need_thunder_stat
    start_example ex_poll 4 THUNDER_MODE=lock
    serve 40
    holder=$("$THUNDER_STAT" --kv | sed -n "s/.* inode=$LISTEN_INODE .*holder=\([0-9]*\).*/\1/p" | head -n 1)
    [ -n "$holder" ] && [ "$holder" != 0 ] || fail "no holder: $("$THUNDER_STAT" --kv)"
    kill -STOP "$holder"
    t0=$(date +%s%N)
    pid=$(socat -T5 - "TCP:127.0.0.1:$PORT" </dev/null)
    t1=$(date +%s%N)
    ms=$(((t1 - t0) / 1000000))
    echo "# holder $holder stopped: first connection answered by $pid after $ms ms (hold_ms 100, check_ms 25)" >&3
    [[ $pid =~ ^[0-9]+$ ]] && [ "$pid" != "$holder" ] || fail "answer '$pid'"
    [ "$ms" -lt 2000 ] || fail "taken over after $ms ms"
    run_loadgen 200 -T 3000
    [ "$(lg ok)" = 200 ] || fail "while stopped: $LG"
    kill -CONT "$holder"
    serve 200
    every_worker_seen
    [ "$(stat_sum accepts)" -ge 440 ] || fail "accepts $(stat_sum accepts)"
    one_line_per_process
}

@test "stopped: an emulated poll or select goes on waiting after SIGSTOP/SIGCONT" {
    local call out sw
    sw=$(prog stopwait)
    for call in poll select ppoll pselect; do
        out=$BATS_TEST_TMPDIR/stopwait.$call
        LD_PRELOAD=$THUNDER_LIB "$sw" "$call" 1200 >"$out" 3>&- &
        pid=$!
        sleep 0.3
        kill -STOP "$pid"
        sleep 0.2
        kill -CONT "$pid"
        wait "$pid"
        echo "# $call: $(tail -n 1 "$out")" >&3
        grep -q '^ret=0 errno=- ' "$out" || fail "$call: $(cat "$out")"
        ms=$(sed -n 's/.* ms=//p' "$out")
        [ "$ms" -ge 1100 ] || fail "$call returned after $ms ms"
    done
    # a handler that runs still interrupts it
    LD_PRELOAD=$THUNDER_LIB "$sw" poll 3000 usr1 >"$out" 3>&- &
    pid=$!
    sleep 0.3
    kill -USR1 "$pid"
    wait "$pid"
    grep -q '^ret=-1 errno=EINTR ' "$out" || fail "with a handler: $(cat "$out")"
}

# ---- 4. many workers ------------------------------------------------------------

@test "many workers start at once: no pass-through, statistics for each, one wake-up each" {
    local n=${FAULTS_WORKERS:-256} procs
    need_thunder_stat
    start_example ex_poll "$n"
    run_loadgen $((10 * n)) -T 5000
    [ "$(lg ok)" = $((10 * n)) ] || fail "$LG"
    le 0.99 "$(lg jain)" || fail "jain $(lg jain)"
    le "$(lg wakeups_per_conn)" 1.10 || fail "wake-ups per connection $(lg wakeups_per_conn)"
    ! grep -q 'guard unavailable\|pass-through\|statistics of this one' "$EX_ERR" ||
        fail "$(head -n 3 "$EX_ERR")"
    ! grep -q 'unexpectedly' "$EX_ERR" || fail "a worker died: $(head -n 3 "$EX_ERR")"
    [ "$(ps -o pid= --ppid "$MASTER" | wc -l)" = "$n" ] || fail "not $n workers"
    procs=$(listener_stats | grep -c ' pid=')
    echo "# $n workers: $procs with statistics" >&3
    [ "$procs" -ge "$n" ] || fail "$procs processes with statistics"
    stop_many
}

# Stop the last example without looking at each of its many workers one by
# one (the helpers' per-worker checks take minutes on a loaded machine):
# the master stops its workers; then one pass over /proc.
stop_many() {
    local i left
    kill -TERM "$MASTER"
    for ((i = 0; i < 300; i++)); do
        kill -0 "$MASTER" 2>/dev/null || break
        sleep 0.1
    done
    left=$(ps -o pid= --ppid "$MASTER" | wc -l)
    STARTED=(":::$LISTEN_INODE")
    [ "$left" = 0 ] || fail "$left workers left"
    wait 2>/dev/null || true
}

#!/usr/bin/env bats
# kill -9 of lock holders, queued waiters, workers woken for a connection
# and workers in the middle of a rotation, under steady load: no
# connection lost, every survivor goes on, recovery is quick.  200 kills
# in all here; `make soak` runs 1000 (tests/death.sh does the work, and
# tests/progs/killat stops each victim at its point before killing it).

# ptrace is how the victims are stopped at their point: try it once on a
# sleeping child (it never reaches an accept: exit 3 means traced fine).
setup_file() {
    local killat sleeper rc=0
    killat=$BATS_TEST_DIRNAME/progs/killat
    [ -x "$killat" ] || return 0
    sleep 10 3>&- &
    sleeper=$!
    "$killat" -t 1000 "$sleeper" accept >/dev/null 2>&1 || rc=$?
    kill "$sleeper"
    wait "$sleeper" 2>/dev/null || true
    export DEATH_PTRACE_RC=$rc
}

setup() {
    ROOT=$(cd "$BATS_TEST_DIRNAME/.." && pwd)
    [ -x "$ROOT/tests/progs/killat" ] || skip "tests/progs/killat not built (make check builds it)"
    [ "${DEATH_PTRACE_RC:-2}" = 3 ] || skip "ptrace is not allowed here: killat cannot stop a worker"
}

death() {
    run "$ROOT/tests/death.sh" "$@"
    echo "$output"
    echo "# $1 $2 $4: ${lines[${#lines[@]} - 1]}" >&3
    [ "$status" -eq 0 ]
    [[ $output == *"lost=0 "* ]]
}

@test "death: lock mode, poll workers: holder, queued waiter, at accept (60 kills)" {
    death ex_poll lock 60 holder,queued,accept
}

@test "death: lock mode, select workers (doorbell waiters): 40 kills" {
    death ex_select lock 40 holder,queued,accept
}

@test "death: auto on a shared epoll instance (lock fallback): 30 kills" {
    death ex_epoll_shared auto 30 holder,queued,accept
}

@test "death: auto, per-worker epoll: waiting, at accept, mid-rotation (30 kills)" {
    death ex_epoll auto 30 wait,accept,rotate
}

@test "death: auto, poll workers on the epoll mirror: 30 kills" {
    death ex_poll auto 30 wait,accept,rotate
}

@test "death: exclusive, select workers on the mirror: 10 kills" {
    death ex_select exclusive 10 wait,accept,rotate
}

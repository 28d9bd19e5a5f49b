#!/usr/bin/env bats
# kill -9 of lock holders, queued waiters and rotating workers under the
# shim: no connection lost, survivors take over within a bounded time.
# 200 kills in all here; `make soak` runs 1000 (tests/death.sh does the work).

setup() {
    ROOT=$(cd "$BATS_TEST_DIRNAME/.." && pwd)
}

death() {
    run "$ROOT/tests/death.sh" "$@"
    echo "$output"
    [ "$status" -eq 0 ]
    [[ $output == *"lost=0 "* ]]
}

@test "death: lock mode, poll workers: kill the holder and queued waiters 70 times" {
    death ex_poll lock 70
}

@test "death: lock mode, select workers (doorbell waiters): 40 kills" {
    death ex_select lock 40
}

@test "death: auto on a shared epoll instance (lock fallback): 40 kills" {
    death ex_epoll_shared auto 40
}

@test "death: auto, per-worker epoll (exclusive + rotation): 25 kills" {
    death ex_epoll auto 25
}

@test "death: auto, poll workers on the epoll mirror: 25 kills" {
    death ex_poll auto 25
}

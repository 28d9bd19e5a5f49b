#!/usr/bin/env bats
# Another local user attacks a server under the library with everything at
# once: segment names squatted before it starts, doorbell names squatted,
# doorbells flooded while it works.  A root server and a non-root one, in
# the default mode and in lock mode; the library must stay on, at the same
# wake-ups, balance and (within 2x) hand-off latency as without the
# attacker.  tests/lib/adversary.bash says how; each attack alone is in
# tests/adversary/each.bats (make check-adversary).

load helpers
# shellcheck source=tests/lib/adversary.bash
. "$ROOT/tests/lib/adversary.bash"

setup() {
    adversary_setup
}

teardown() {
    adversary_teardown
}

# auto: a shared epoll instance (ex_epoll_shared) takes the lock and sleeps
# on doorbells; lock: the event loop with keep-alive clients (ex_evloop).
@test "root server, auto (ex_epoll_shared): names and doorbells squatted, doorbells flooded" {
    attack root ex_epoll_shared auto names bells flood
}

@test "root server, lock (ex_evloop): names and doorbells squatted, doorbells flooded" {
    attack root ex_evloop lock names bells flood
}

@test "non-root server, auto (ex_epoll_shared): names and doorbells squatted, doorbells flooded" {
    attack victim ex_epoll_shared auto names bells flood
}

@test "non-root server, lock (ex_evloop): names and doorbells squatted, doorbells flooded" {
    attack victim ex_evloop lock names bells flood
}

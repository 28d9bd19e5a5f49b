#!/usr/bin/env bats
# Each attack of tests/lib/adversary.bash alone, against a root and a
# non-root server, in the default mode and in lock mode: the table of
# README "Security" (make check-adversary; tests/96-adversary.bats runs
# them all at once in make check).

load ../helpers
# shellcheck source=tests/lib/adversary.bash
. "$ROOT/tests/lib/adversary.bash"

setup() {
    adversary_setup
}

teardown() {
    adversary_teardown
}

# Segment names: the default mode on a poll() server is the exclusive
# mirror, lock mode the futex queue; both need the segment.
@test "names squatted, root server, auto (ex_poll)" { attack root ex_poll auto names; }
@test "names squatted, root server, lock (ex_poll)" { attack root ex_poll lock names; }
@test "names squatted, non-root server, auto (ex_poll)" { attack victim ex_poll auto names; }
@test "names squatted, non-root server, lock (ex_poll)" { attack victim ex_poll lock names; }

# Doorbells: waits that sleep on them (a shared epoll instance under auto,
# an event loop with clients under lock).
@test "doorbell names squatted, root server, auto (ex_epoll_shared)" { attack root ex_epoll_shared auto bells; }
@test "doorbell names squatted, root server, lock (ex_evloop)" { attack root ex_evloop lock bells; }
@test "doorbell names squatted, non-root server, auto (ex_epoll_shared)" { attack victim ex_epoll_shared auto bells; }
@test "doorbell names squatted, non-root server, lock (ex_evloop)" { attack victim ex_evloop lock bells; }
@test "doorbells flooded, root server, auto (ex_epoll_shared)" { attack root ex_epoll_shared auto flood; }
@test "doorbells flooded, root server, lock (ex_evloop)" { attack root ex_evloop lock flood; }
@test "doorbells flooded, non-root server, auto (ex_epoll_shared)" { attack victim ex_epoll_shared auto flood; }
@test "doorbells flooded, non-root server, lock (ex_evloop)" { attack victim ex_evloop lock flood; }

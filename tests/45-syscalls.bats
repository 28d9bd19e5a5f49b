#!/usr/bin/env bats
# The per-connection cost budget (issue 12), counted by strace: system
# call counts are deterministic, so the limits are small exact numbers
# with room only for legitimate retries (an accept that finds EAGAIN, a
# wait that a second connection already made ready).
#
#   - a wait that holds no managed listener costs nothing extra, in a
#     process that does hold one (tests/progs/waitloop);
#   - the exclusive path, per connection: its one sleep, half a rotation
#     (EPOLL_CTL_DEL + ADD once per two connections: each waiter takes two
#     in turn), no look at the program's own array when a listener woke
#     the mirror (poll or select, with another fd in the set or not),
#     and no rt_sigprocmask, gettid, getsockopt or fstat;
#   - a program that sets EPOLLEXCLUSIVE itself keeps epoll_wait, and one
#     that also rotates its own entry (nginx) keeps that job;
#   - no rotation when no other thread waits on the listener.

load helpers

CONNS=100

setup() {
    command -v strace >/dev/null || skip "strace is not installed (apt-get install strace)"
}

# counts FILE: "name calls" from an strace -c summary
counts() {
    awk '$1 ~ /^[0-9.]+$/ && NF >= 5 && $NF != "total" { print $NF, $4 }' "$1"
}

calls_of() {  # name file
    awk -v n="$1" '$1 == n { c = $2 } END { print c + 0 }' "$2"
}

# waitloop N under strace, with (1) or without (0) the shim: total calls.
waitloop_calls() {
    local out=$BATS_TEST_TMPDIR/wl.$1.$2
    waitloop_under "$2" "$1" strace -f -c -o "$out" >/dev/null
    counts "$out" >"$out.names"
    awk '{ s += $2 } END { print s }' "$out.names"
}

@test "a wait without a managed listener costs no system call (poll ppoll select pselect epoll_wait epoll_pwait)" {
    local a b c d extra
    # load-time calls cancel out; what is left is 1200 waits' own cost
    read -r a b c d extra < <(waitloop_extra waitloop_calls 100 300) || fail "strace printed no count"
    echo "# 600 waits: $a without, $b with; 1800 waits: $c without, $d with: $extra extra for 1200 waits" >&3
    [ "$extra" -le 2 ] || { diff "$BATS_TEST_TMPDIR/wl.300.0.names" "$BATS_TEST_TMPDIR/wl.300.1.names" >&2 || true
                            fail "$extra extra system calls for 1200 waits that hold no listener"; }
}

# serve NAME MODE [WORKERS [ARG...]]: CONNS sequential connections to
# examples/NAME (2 workers) with strace -c -f on the workers; per-name
# counts in $SC.  With TRACE=call,...: only those calls, each line kept,
# one file per thread ($SC.t.TID), and $SC counts them.
serve() {
    local name=$1 mode=$2 pid n attached=0 tracer
    local -a attach=() how
    SC=$BATS_TEST_TMPDIR/$name.$mode
    how=(-c -o "$SC.raw")
    [ -n "${TRACE:-}" ] && how=(-ff -e "trace=$TRACE" -o "$SC.t")
    start_example "$name" "${3:-2}" "THUNDER_MODE=$mode" "${@:4}"
    for pid in ${WORKERS//,/ }; do attach+=(-p "$pid"); n=$((n + 1)); done
    strace -f "${how[@]}" "${attach[@]}" 2>"$SC.err" &
    tracer=$!
    for _ in $(seq 100); do
        attached=$(grep -c attached "$SC.err" || true)
        [ "$attached" -ge "$n" ] && break
        sleep 0.05
    done
    sleep 0.2
    run_loadgen "$CONNS" -c 1 -g 300
    sleep 0.2
    kill -INT "$tracer"
    wait "$tracer" || true
    stop_example
    [ "$(lg ok)" = "$CONNS" ] || fail "$name: $(lg ok) of $CONNS answered"
    if [ -n "${TRACE:-}" ]; then
        cat "$SC".t.* | sed -n 's/^\([a-z_0-9]*\)(.*/\1/p' | sort | uniq -c | awk '{ print $2, $1 }' >"$SC"
    else
        counts "$SC.raw" >"$SC"
    fi
    echo "# $name $mode per connection: $(awk -v n="$CONNS" '{ printf "%s %.2f ", $1, $2 / n }' "$SC")" >&3
}

# at_most NAME LIMIT: calls of NAME per connection <= LIMIT.
at_most() {
    local calls
    calls=$(calls_of "$1" "$SC")
    awk -v c="$calls" -v n="$CONNS" -v l="$2" 'BEGIN { exit !(c / n <= l) }' ||
        fail "$1: $calls calls for $CONNS connections (limit $2 per connection)"
}

# The sleeps of an exclusive wait, per accept: a look before or after it
# would be a second.  Per accept, not per connection: on a busy machine
# (CPU hogs on both CPUs, Dec 2) a woken worker may not run before the
# other's rotation re-adds its entry, which reports the connection still
# queued to that one too (an accept that finds EAGAIN; ex_poll: up to
# 1.61 sleeps and 1.61 accepts per connection).  Those retries are not
# bounded here (40-exclusive counts wake-ups on an idle machine).
sleeps_per_accept_at_most() {
    local sleeps accepts
    sleeps=$(calls_of "$1" "$SC")
    accepts=$(calls_of accept4 "$SC")
    awk -v s="$sleeps" -v a="$accepts" -v l="$2" 'BEGIN { exit !(s <= a * l) }' ||
        fail "$1: $sleeps calls for $accepts accepts (limit $2 per accept)"
}

# Nothing the fast path removed may come back.
none_of_the_removed() {
    local name
    for name in rt_sigprocmask gettid getsockopt newfstatat fstat epoll_pwait2; do
        at_most "$name" 0.02 || return 1
    done
}

# total_at_most LIMIT: all calls per connection, but for the retries of
# an accept that found EAGAIN (each with the sleep that led to it).
total_at_most() {
    local total retries
    total=$(awk '{ s += $2 } END { print s }' "$SC")
    retries=$(($(calls_of accept4 "$SC") - CONNS))
    [ "$retries" -gt 0 ] || retries=0
    awk -v c="$total" -v r="$retries" -v n="$CONNS" -v l="$1" 'BEGIN { exit !((c - 2 * r) / n <= l) }' ||
        fail "$total calls for $CONNS connections, $retries accepts retried (limit $1 per connection)"
}

@test "already exclusive epoll (ex_epoll_excl, auto): epoll_wait stays epoll_wait, + one rotation (2 epoll_ctl) per two connections" {
    serve ex_epoll_excl auto
    none_of_the_removed
    at_most epoll_pwait 0.02
    sleeps_per_accept_at_most epoll_wait 1.1
    at_most epoll_ctl 1.1
    total_at_most 5.3
}

@test "a program that rotates its own exclusive entry (ex_epoll_excl -R 16, as nginx): the rotation is left to it" {
    serve ex_epoll_excl auto 2 -R 16
    none_of_the_removed
    # the program's DEL + ADD every 16 accepts of a worker (0.12), and ours
    # only until its first re-add; with ours after every turn: 1.1
    at_most epoll_ctl 0.6
    sleeps_per_accept_at_most epoll_wait 1.1
}

@test "threads of one process on one instance (ex_threads -t 4, auto, the lock): no getsockopt per connection" {
    local looks asks
    TRACE=epoll_wait,epoll_pwait,getsockopt serve ex_threads auto 2 -t 4
    # the burst rule asks the listen queue's length (TCP_INFO) only after
    # a look (a wait with timeout 0) that found the listener ready (the
    # lock's fan-out also asks after a holder's wait that found a backlog,
    # but only with 24 or more threads queued: here there are 8 at most)
    looks=$(cat "$SC".t.* | grep -cE '^epoll_p?wait\([0-9]+, .*, [0-9]+, 0(, [^)]*)?\) += [1-9]' || true)
    asks=$(cat "$SC".t.* | grep -c '^getsockopt(.*TCP_INFO' || true)
    echo "# $asks TCP_INFO asks after $looks looks that found a connection ready" >&3
    [ "$asks" -le "$looks" ] || fail "$asks listen-queue asks, only $looks looks found one ready"
    # and no other getsockopt per connection.  A steady load's looks find
    # nothing when a thread is back in its wait before the next connection,
    # but under strace on a busy machine it may not be (CI, Dec 2: 11 asks
    # for 100 connections): those asks are counted as the looks' own
    at_most getsockopt "$(awk -v l="$looks" -v n="$CONNS" 'BEGIN { print 0.1 + l / n }')"
}

@test "a worker alone in a wait on its listener (ex_epoll_excl, auto, 1 worker): no rotation, no epoll_ctl" {
    serve ex_epoll_excl auto 1
    none_of_the_removed
    at_most epoll_ctl 0.02
    at_most epoll_wait 1.1
    total_at_most 4.3
}

@test "exclusive mirror (ex_poll, auto): one sleep, no look, + one rotation per two connections, no mask changes" {
    serve ex_poll auto
    none_of_the_removed
    sleeps_per_accept_at_most epoll_pwait 1.1
    at_most ppoll 0.1
    at_most poll 0.02
    at_most epoll_ctl 1.1
    total_at_most 5.3
}

@test "exclusive mirror with a pipe in the set (ex_select, auto): one sleep, no look before or after it" {
    serve ex_select auto
    none_of_the_removed
    sleeps_per_accept_at_most epoll_pwait 1.1
    at_most ppoll 0.1
    at_most pselect6 0.02
    at_most epoll_ctl 1.1
    total_at_most 5.3
}

@test "accepted sockets in an event loop (ex_evloop, auto): never classified with getsockopt; a refused accept asks no fcntl" {
    serve ex_evloop auto
    none_of_the_removed
    # whether the listener blocks is asked once per process, not per refusal
    at_most fcntl 0.05
}

#!/usr/bin/env bats
# Bursts in the default (auto) mode: connections that arrive together are
# spread over the workers, also by event loops that accept until EAGAIN
# (examples/ex_greedy), by the worker that keeps an epoll instance the
# master created before fork (examples/ex_inherit), and under the lock
# (examples/ex_epoll_shared: a worker that comes back must not drain the
# round through its looks at a busy lock).  8 workers, rounds of
# K = 16 connections opened together (thunder-loadgen --burst), 20 ms apart.
#
# The margins are wide (2 CPUs shared with other jobs): ideal share of a
# round is 1/8; a greedy loop without the shim gives one worker about half
# of each round, the inherited instance (before the fix) nearly all of it,
# the threads of one process under the lock (before the fix) 0.36-0.51.
# Jain over the rounds >= 0.7 (a worker that gets no CPU for a while on a
# loaded machine lowers it; none: 0.5).  Nothing may fail or wait long: a
# refused accept must leave no connection queued with every worker asleep
# (loadgen's timeout would count it), and
# the extra delay it may add is bounded (policy.c: 1 ms per yield); the
# test bounds the slowest connection at 1 s.

load helpers

WORKERS_N=8
K=16
ROUNDS=20
SHARE_MAX=0.35         # mean over rounds of the largest share (ideal 0.125; none 0.47-0.6)
SLOWEST_US=1000000

# bursts [ARGS...]: ROUNDS rounds of K against the running example.
bursts() {
    LG=$(timeout 120 "$LOADGEN" -p "$PORT" --burst "$K" --rounds "$ROUNDS" -T 3000 \
        -P "$WORKERS" "$@" || true)
    echo "# bursts $*: $(grep -E '^(ok|failed|jain|round_max_share_mean|round_ms_mean|round_vs_limit|max_us|wakeups_per_conn)=' <<<"$LG" | tr '\n' ' ')" >&3
}

all_burst_answered() {
    [ "$(lg ok)" = $((K * ROUNDS)) ] && [ "$(lg failed)" = 0 ] ||
        fail "$(lg ok) of $((K * ROUNDS)) answered, $(lg failed) failed"
}

spread() {
    all_burst_answered || return 1
    le "$(lg round_max_share_mean)" "$SHARE_MAX" ||
        fail "one worker took $(lg round_max_share_mean) of a round on average (counts $(lg_counts))" || return 1
    le 0.7 "$(lg jain)" || fail "unbalanced over the rounds: Jain $(lg jain), counts $(lg_counts)" || return 1
    le "$(lg max_us)" "$SLOWEST_US" || fail "a connection waited $(lg max_us) us"
}

@test "ex_greedy, auto: bursts are spread over the workers" {
    start_example ex_greedy "$WORKERS_N" THUNDER_MODE=auto
    bursts
    spread
}

@test "ex_greedy -c 128 (tornado's cap), auto: bursts are spread" {
    start_example ex_greedy "$WORKERS_N" THUNDER_MODE=auto -c 128
    bursts
    spread
}

@test "ex_greedy -s 5 (a sleeping handler), auto: a round lasts about ceil(K/N) handler times" {
    start_example ex_greedy "$WORKERS_N" THUNDER_MODE=auto -s 5
    bursts --workers "$WORKERS_N" --service-ms 5
    spread
    # without the shim one worker serves about half a round one after the other: 6x
    le "$(lg round_vs_limit)" 3.5 || fail "rounds took $(lg round_vs_limit) x ceil(K/N) x 5 ms"
}

@test "ex_greedy, auto: sequential connections still wake one worker each, in turn" {
    start_example ex_greedy "$WORKERS_N" THUNDER_MODE=auto
    run_loadgen 400 -g 500
    [ "$(lg ok)" = 400 ] || fail "$(lg ok) of 400 answered"
    le "$(lg wakeups_per_conn)" 1.5 || fail "$(lg wakeups_per_conn) wake-ups per connection"
    le 0.9 "$(lg jain)" || fail "Jain $(lg jain), counts $(lg_counts)"
}

# 64 workers under a closed loop of 8 clients each rest 2-3 ms between
# their connections while the listener takes one every 40 us: no burst,
# and a further accept of a wake-up is left to others only now and then
# (before the listener's quiet spell was asked: after every accept,
# exactly 1.00 refusals per accept; with a spell of 300 us 0.30-0.74 on
# 2 CPUs; with 800 us, 0.01-0.04).  A host whose CPUs other work takes
# starves the load generator for longer than the spell, which leaves the
# listener quiet as a real lull would: with two busy loops on this
# machine's 2 CPUs, 0.58-0.78 (and 0.96 once, with 300 us, on a loaded
# host).  CI runs on shared machines, so the bound catches a refusal
# after every accept, not the spell's length (measured: README, "A burst").
@test "ex_greedy 64 workers, a saturated listener: no refusal after every accept" {
    need_thunder_stat
    start_example ex_greedy 64 THUNDER_MODE=auto
    run_loadgen 100000000 -c 8 -g 0 -d 2
    [ "$(lg failed)" = 0 ] || fail "$(lg failed) failed"
    local accepts refused
    accepts=$(stat_sum accepts) refused=$(stat_sum refused)
    echo "# $refused refused for $accepts accepts" >&3
    [ "$accepts" -gt 1000 ] || fail "only $accepts accepts"
    le "$refused" "$((accepts * 9 / 10))" || fail "$refused refusals for $accepts accepts"
}

# A steady client 1 ms apart never leaves the listener quiet for the
# 2 ms a worker rests, but the listener's own quiet spells (800 us) are
# there: bursts over it are still spread (with the listener's rule
# alone, never the worker's: 0.30-0.40 of a round to one worker at 16).
@test "ex_greedy, auto: bursts over a steady client are spread too" {
    start_example ex_greedy "$WORKERS_N" THUNDER_MODE=auto
    local bg
    timeout 60 "$LOADGEN" -p "$PORT" -n 100000000 -c 1 -g 1000 -d 30 >/dev/null 2>&1 &
    bg=$!
    sleep 0.3
    bursts
    kill "$bg" 2>/dev/null
    wait "$bg" 2>/dev/null || true
    spread
}

@test "ex_greedy -e (edge-triggered), auto: no connection is left in the queue" {
    start_example ex_greedy "$WORKERS_N" THUNDER_MODE=auto -e
    bursts
    all_burst_answered
    le "$(lg max_us)" "$SLOWEST_US" || fail "a connection waited $(lg max_us) us"
    socat_conns 20
    all_answered 20
}

@test "ex_inherit, auto: the worker that keeps the master's epoll instance does not take everything" {
    start_example ex_inherit "$WORKERS_N" THUNDER_MODE=auto
    bursts
    spread
    run_loadgen 200 -g 500
    [ "$(lg ok)" = 200 ] || fail "$(lg ok) of 200 answered"
    le 0.9 "$(lg jain)" || fail "sequential: Jain $(lg jain), counts $(lg_counts)"
}

@test "ex_inherit -k 3 (a shared instance), auto: every burst answered" {
    start_example ex_inherit "$WORKERS_N" THUNDER_MODE=auto -k 3
    bursts
    all_burst_answered
    le "$(lg max_us)" "$SLOWEST_US" || fail "a connection waited $(lg max_us) us"
}

@test "ex_epoll_shared (the lock), auto: bursts are spread, not drained by the worker that comes back" {
    # the lock's unlocked look alone: 0.8-0.95 of every round to one worker
    start_example ex_epoll_shared "$WORKERS_N" THUNDER_MODE=auto
    bursts
    spread
}

@test "ex_threads -t 4 (threads of a process on one instance, the lock), auto: bursts are spread over the processes" {
    # threads that each look past the busy lock before their own streak
    # ends: 0.36-0.51 of every round to one process; queueing at once: 0.22-0.25
    start_example ex_threads "$WORKERS_N" THUNDER_MODE=auto -t 4
    bursts
    spread
}

@test "ex_accept (blocking accept), auto: every burst answered, nothing waits long" {
    start_example ex_accept "$WORKERS_N" THUNDER_MODE=auto
    bursts
    all_burst_answered
    le "$(lg max_us)" "$SLOWEST_US" || fail "a connection waited $(lg max_us) us"
}

@test "a listener set back to blocking (F_SETFL, FIONBIO) is never refused with EAGAIN" {
    local how
    for how in fcntl ioctl; do
        run env LD_PRELOAD="$THUNDER_LIB" THUNDER_MODE=auto "$(prog flipblock)" "$how" 20
        echo "$how: $output"
        [ "$status" -eq 0 ]
        # the rounds do reach the refusal while the listener does not block
        [[ $output =~ refused-while-nonblocking\ ([0-9]+) ]]
        [ "${BASH_REMATCH[1]}" -ge 5 ]
    done
}

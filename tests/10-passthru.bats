#!/usr/bin/env bats
# Pass-through: THUNDER_MODE=off and observe change nothing a program can
# see (answers, exit status, the herd itself), observe counts correctly,
# and a process that never touches a listener is not affected at all.

load helpers

ALL_EXAMPLES="ex_poll ex_select ex_epoll ex_epoll_shared ex_epoll_excl ex_evloop ex_threads ex_accept"

# Each example under the given settings: 12 connections, all answered by
# its workers, stopped cleanly (exit 0), nothing from the shim on stderr.
serve_each_example() {
    local ex
    for ex in $ALL_EXAMPLES; do
        start_example "$ex" 3 "$@"
        socat_conns 12
        all_answered 12 || fail "$ex: not every connection answered" || return 1
        stop_example
        [ "$EXAMPLE_STATUS" = 0 ] || fail "$ex: master exit status $EXAMPLE_STATUS" || return 1
        [ "$(shim_lines)" = 0 ] || { cat "$EX_ERR" >&2; fail "$ex: the shim wrote to stderr"; return 1; }
    done
}

@test "without the shim: every example answers and exits 0 (baseline)" {
    serve_each_example LD_PRELOAD=
}

@test "THUNDER_MODE=off: every example answers and exits 0, silently" {
    serve_each_example THUNDER_MODE=off
}

@test "THUNDER_MODE=off: no segment is created" {
    start_example ex_poll 4 THUNDER_MODE=off
    socat_conns 5
    all_answered 5
    [ ! -e "$(segment_of_listener)" ] || fail "off mode created $(segment_of_listener)"
}

@test "THUNDER_MODE=observe: every example answers and exits 0, silently" {
    serve_each_example THUNDER_MODE=observe
}

@test "observe counts every accept, exactly" {
    start_example ex_poll 4 THUNDER_MODE=observe
    run_loadgen 60 -g 200
    [ "$(lg ok)" = 60 ]
    [ "$(stat_sum accepts)" = 60 ] || { listener_stats >&2; fail "accepts in the segment != 60"; }
    # every wake-up ends in an accept or an EAGAIN (the herd's losers)
    local wakeups spurious
    wakeups=$(stat_sum wakeups)
    spurious=$(stat_sum spurious)
    [ "$wakeups" -ge 60 ] || fail "wakeups $wakeups < 60 accepts"
    [ "$spurious" -le "$wakeups" ] || fail "spurious $spurious > wakeups $wakeups"
    listener_stats | grep -q 'strategy=observe' || { listener_stats >&2; fail "strategy not observe"; }
}

@test "observe leaves the herd alone (it changes nothing)" {
    start_example ex_poll 8 THUNDER_MODE=observe
    run_loadgen 200 -g 500
    [ "$(lg ok)" = 200 ]
    # 8 workers polling: a herd of about 8 wake-ups per connection
    le 3 "$(lg wakeups_per_conn)" || fail "observe reduced the herd: $(lg wakeups_per_conn)"
}

@test "observe: the last worker to exit cleanly removes the segment" {
    start_example ex_poll 4 THUNDER_MODE=observe
    socat_conns 8
    all_answered 8
    [ -e "$(segment_of_listener)" ] || fail "no segment while serving"
    stop_example
    [ "$EXAMPLE_STATUS" = 0 ]
    [ ! -e "$(segment_of_listener)" ] || fail "segment left after a clean stop"
}

@test "a process that never touches a listener: unaffected, silent" {
    local mode out
    for mode in auto lock exclusive observe off; do
        out=$(LD_PRELOAD=$THUNDER_LIB THUNDER_MODE=$mode sh -c 'echo hi | cat' 2>&1)
        [ "$out" = hi ] || fail "mode $mode: got '$out'" || return 1
        out=$(LD_PRELOAD=$THUNDER_LIB THUNDER_MODE=$mode sh -c 'exit 3' 2>&1) && return 1
        [ -z "$out" ]
    done
}

@test "socat under the shim as a client" {
    start_example ex_poll 2 LD_PRELOAD=
    run env LD_PRELOAD="$THUNDER_LIB" THUNDER_LOG=debug socat -T5 - "TCP:127.0.0.1:$PORT" </dev/null
    [ "$status" -eq 0 ]
    [[ ,$WORKERS, == *",${lines[-1]},"* ]] || fail "got '$output'"
}

@test "socat under the shim as a relay (its own listener, blocking accept)" {
    local relay_port relay i answer
    start_example ex_poll 2 LD_PRELOAD=
    relay_port=$(free_port)
    LD_PRELOAD=$THUNDER_LIB THUNDER_MODE=auto socat -T5 \
        "TCP-LISTEN:$relay_port,bind=127.0.0.1,reuseaddr,fork" "TCP:127.0.0.1:$PORT" \
        2>"$BATS_TEST_TMPDIR/relay.err" 3>&- &
    relay=$!
    # shellcheck disable=SC2034  # read by helpers.bash
    KEEPALIVE_PID=$relay
    for ((i = 0; i < 100; i++)); do
        [ -n "$(listener_inode "$relay_port")" ] && break
        sleep 0.05
    done
    for i in 1 2 3 4 5; do
        answer=$(socat -T5 - "TCP:127.0.0.1:$relay_port" </dev/null)
        [[ ,$WORKERS, == *",$answer,"* ]] || fail "relay answer '$answer'" || return 1
    done
    [ "$(shim_lines "$BATS_TEST_TMPDIR/relay.err")" = 0 ] || { cat "$BATS_TEST_TMPDIR/relay.err" >&2; return 1; }
}

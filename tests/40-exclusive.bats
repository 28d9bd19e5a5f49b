#!/usr/bin/env bats
# THUNDER_MODE=exclusive and auto: EPOLLEXCLUSIVE plus rotation after each
# accept, the physical limit: about one wake-up per connection AND round
# robin.  Also what must not break on the way: a program's own epoll_ctl
# calls, event loops with keep-alive clients, shared instances (auto takes
# the lock there), threads x processes, and THUNDER_BALANCE=lifo.

load helpers

CONNS=400
GAP_US=500

# 8 workers, 400 sequential connections: all answered, every worker used,
# <= 1.5 wake-ups per connection, Jain >= 0.9.
one_wakeup_and_balanced() {
    local ex=$1 mode=$2
    start_example "$ex" 8 "THUNDER_MODE=$mode"
    run_loadgen "$CONNS" -g "$GAP_US"
    [ "$(lg ok)" = "$CONNS" ] || fail "$(lg ok) of $CONNS answered" || return 1
    every_worker_seen || return 1
    le "$(lg wakeups_per_conn)" 1.5 || fail "herd: $(lg wakeups_per_conn) wake-ups per connection" || return 1
    le 0.9 "$(lg jain)" || fail "unbalanced: Jain $(lg jain), counts $(lg_counts)" || return 1
    socat_conns 10
    all_answered 10
}

@test "ex_poll, exclusive: one wake-up per connection, balanced" {
    one_wakeup_and_balanced ex_poll exclusive
}

@test "ex_poll, auto: one wake-up per connection, balanced" {
    one_wakeup_and_balanced ex_poll auto
}

@test "ex_select, exclusive: one wake-up per connection, balanced" {
    one_wakeup_and_balanced ex_select exclusive
}

@test "ex_select, auto: one wake-up per connection, balanced" {
    one_wakeup_and_balanced ex_select auto
}

@test "ex_epoll, exclusive: one wake-up per connection, balanced" {
    one_wakeup_and_balanced ex_epoll exclusive
}

@test "ex_epoll, auto: one wake-up per connection, balanced" {
    one_wakeup_and_balanced ex_epoll auto
}

@test "ex_epoll_excl, exclusive: one wake-up per connection, balanced" {
    one_wakeup_and_balanced ex_epoll_excl exclusive
}

@test "ex_epoll_excl, auto: one wake-up per connection, balanced" {
    one_wakeup_and_balanced ex_epoll_excl auto
}

@test "ex_epoll_excl -R 16 (its own EPOLLEXCLUSIVE, re-added as nginx does), auto: its waits are passed through, still one wake-up per connection and balanced" {
    start_example ex_epoll_excl 4 THUNDER_MODE=auto THUNDER_LOG=info -R 16
    run_loadgen "$CONNS" -g "$GAP_US"
    [ "$(lg ok)" = "$CONNS" ] || fail "$(lg ok) of $CONNS answered"
    le "$(lg wakeups_per_conn)" 1.5 || fail "herd: $(lg wakeups_per_conn) wake-ups per connection"
    le 0.9 "$(lg jain)" || fail "unbalanced: Jain $(lg jain), counts $(lg_counts)"
    # each worker re-added its entry (every 16 of its accepts) long before
    # the last connection: its waits since are the program's own
    [ "$(listener_stats | grep -c 'strategy=pass')" = 4 ] || { listener_stats >&2; fail "not every worker passed through"; }
    grep -q "info: .*the program's own EPOLLEXCLUSIVE, rotated by the program" "$EX_ERR" ||
        { cat "$EX_ERR" >&2; fail "no info line saying why"; }
}

@test "ex_epoll_excl -R 4 -U 20 (a program that stops re-adding its entry), auto: its waits stop being passed through, the library rotates again" {
    local n=1200
    start_example ex_epoll_excl 4 THUNDER_MODE=auto -R 4 -U 20
    run_loadgen "$n" -g "$GAP_US"
    [ "$(lg ok)" = "$n" ] || fail "$(lg ok) of $n answered"
    le "$(lg wakeups_per_conn)" 1.5 || fail "herd: $(lg wakeups_per_conn) wake-ups per connection"
    le 0.9 "$(lg jain)" || fail "unbalanced: Jain $(lg jain), counts $(lg_counts)"
    # 64 accepts after a worker's last re-add (its 20th), its waits are
    # planned again, even though each one had been passed through unlooked
    [ "$(listener_stats | grep -c 'strategy=exclusive')" = 4 ] ||
        { listener_stats >&2; fail "a worker still passes through"; }
}

@test "an instance a process waited on alone, then shared with a forked child: both see it shared and take the lock (the parent within 64 waits of its kept plan)" {
    local bin inode parent child
    bin=$(prog sharewait)
    run env LD_PRELOAD="$THUNDER_LIB" THUNDER_MODE=auto THUNDER_LOG=info timeout 30 "$bin"
    inode=$(sed -n 's/^listener inode=//p' <<<"$output")
    [ -n "$inode" ] && rm -f "$(segment_path "$inode")"
    [ "$status" = 0 ] || { echo "$output" >&2; fail "sharewait exited $status"; }
    read -r parent child < <(sed -n 's/^parent=\([0-9]*\) child=\([0-9]*\)$/\1 \2/p' <<<"$output")
    [ -n "$child" ] || { echo "$output" >&2; fail "no pids printed"; }
    grep -q "\[$parent\] info: .*private epoll instance" <<<"$output" ||
        { echo "$output" >&2; fail "the parent's first plan was not the private one"; }
    grep -q "\[$child\] info: .*shared with other processes: using the lock" <<<"$output" ||
        { echo "$output" >&2; fail "the child did not see the instance shared"; }
    grep -q "\[$parent\] info: .*shared with other processes: using the lock" <<<"$output" ||
        { echo "$output" >&2; fail "the parent kept its private plan after the child waited"; }
}

@test "cross-check without loadgen: socat clients, /proc counters (ex_select, exclusive)" {
    local before after n=100 counts j
    start_example ex_select 4 THUNDER_MODE=exclusive
    socat_conns 4                          # first waits done, segment attached
    sleep 0.2
    before=$(ctxt_sum "$WORKERS")
    socat_conns "$n"
    sleep 0.2
    after=$(ctxt_sum "$WORKERS")
    all_answered "$n"
    counts=$(answer_counts)
    j=$(jain "$counts")
    echo "# $n socat connections: $((after - before)) wake-ups, answers per worker: $counts, Jain $j" >&3
    le "$((after - before))" "$((n * 3 / 2))" || fail "$((after - before)) wake-ups for $n connections"
    le 0.9 "$j" || fail "Jain $j for $counts"
}

@test "strace: the listener is registered with EPOLLEXCLUSIVE (ex_epoll, ex_poll)" {
    command -v strace >/dev/null || skip "strace not installed"
    local ex trace
    for ex in ex_epoll ex_poll; do
        trace=$BATS_TEST_TMPDIR/$ex.strace
        EX_WRAP="strace -f -qq -e trace=epoll_ctl -o $trace" start_example "$ex" 2 THUNDER_MODE=exclusive
        socat_conns 4
        all_answered 4
        stop_example
        grep -q 'EPOLL_CTL_ADD.*EPOLLEXCLUSIVE' "$trace" ||
            { head -n 20 "$trace" >&2; fail "$ex: no EPOLLEXCLUSIVE registration"; return 1; }
    done
}

@test "a program's epoll_ctl ADD/MOD/DEL behave as without the shim" {
    local mc mode
    mc=$(prog modcheck)
    run "$mc" --expect-plain
    [ "$status" -eq 0 ] || { echo "$output" >&2; fail "modcheck fails without the shim"; }
    for mode in exclusive auto; do
        run env LD_PRELOAD="$THUNDER_LIB" THUNDER_MODE=$mode "$mc" --expect-exclusive
        # the one-shot round trip is its own test below
        if grep '^not ok' <<<"$output" | grep -qv 'after re-arming without EPOLLONESHOT'; then
            echo "$output" >&2
            fail "mode $mode: epoll_ctl behaves differently under the shim"
            return 1
        fi
        [ "$(grep -c '^ok' <<<"$output")" -ge 25 ] || { echo "$output" >&2; return 1; }
    done
}

@test "exclusive: a listener MODed through EPOLLONESHOT and back is exclusive again" {
    local mc
    mc=$(prog modcheck)
    run env LD_PRELOAD="$THUNDER_LIB" THUNDER_MODE=exclusive "$mc" --expect-exclusive
    grep -q '^ok .*entry is EPOLLEXCLUSIVE after re-arming without EPOLLONESHOT' <<<"$output" ||
        { grep 'ONESHOT' <<<"$output" >&2; fail "the entry stays plain: the herd is back for this listener"; }
}

# A keep-alive client pings its worker while other connections come and go.
keepalive_served() {
    local mode=$1 greet reply i
    start_example ex_evloop 4 "THUNDER_MODE=$mode"
    coproc KA { socat -T30 - "TCP:127.0.0.1:$PORT" 2>/dev/null 3>&-; }
    # shellcheck disable=SC2034  # read by helpers.bash
    KEEPALIVE_PID=$KA_PID
    read -r -t 5 greet <&"${KA[0]}" || fail "$mode: no greeting on the keep-alive connection" || return 1
    [[ ,$WORKERS, == *",$greet,"* ]] || fail "$mode: greeting '$greet'" || return 1
    for ((i = 0; i < 15; i++)); do
        echo ping >&"${KA[1]}"
        reply=
        read -r -t 3 reply <&"${KA[0]}" || true
        [ "$reply" = "$greet" ] || fail "$mode: ping $i answered '$reply', want $greet" || return 1
        socat_conns 3
        all_answered 3 || return 1
    done
}

@test "ex_evloop, exclusive: a keep-alive client is served while others come and go" {
    keepalive_served exclusive
}

@test "ex_evloop, auto: a keep-alive client is served while others come and go" {
    keepalive_served auto
}

@test "ex_evloop, lock: a keep-alive client is served while others come and go" {
    keepalive_served lock
}

@test "ex_epoll_shared, auto: takes the lock (info line) and is balanced" {
    start_example ex_epoll_shared 8 THUNDER_MODE=auto THUNDER_LOG=info
    run_loadgen "$CONNS" -g "$GAP_US"
    [ "$(lg ok)" = "$CONNS" ]
    every_worker_seen
    le 0.9 "$(lg jain)" || fail "Jain $(lg jain), counts $(lg_counts)"
    grep -q '^libthunder: .*info: .*lock' "$EX_ERR" || { cat "$EX_ERR" >&2; fail "no info line about the lock"; }
}

@test "ex_threads -w 4 -t 4, exclusive and auto: balanced across processes" {
    local mode
    for mode in exclusive auto; do
        start_example ex_threads 4 -t 4 "THUNDER_MODE=$mode"
        run_loadgen "$CONNS" -g "$GAP_US"
        [ "$(lg ok)" = "$CONNS" ] || fail "$mode: $(lg ok) answered" || return 1
        every_worker_seen || return 1
        le 0.9 "$(lg jain)" || fail "$mode: Jain $(lg jain), counts $(lg_counts)" || return 1
        stop_example
    done
}

@test "ex_threads, auto: takes the lock for an instance several threads wait on (info line), about 2 wake-ups" {
    start_example ex_threads 4 -t 4 THUNDER_MODE=auto THUNDER_LOG=info
    run_loadgen "$CONNS" -g "$GAP_US"
    [ "$(lg ok)" = "$CONNS" ]
    every_worker_seen
    le "$(lg wakeups_per_conn)" 3.0 || fail "$(lg wakeups_per_conn) wake-ups per connection"
    grep -q 'info: .*several threads: using the lock' "$EX_ERR" ||
        { cat "$EX_ERR" >&2; fail "no info line about several threads"; }
}

@test "THUNDER_BALANCE=lifo concentrates (ex_poll, exclusive)" {
    local fifo_share lifo_share
    start_example ex_poll 8 THUNDER_MODE=exclusive THUNDER_BALANCE=fifo
    run_loadgen 200 -g "$GAP_US"
    [ "$(lg ok)" = 200 ]
    fifo_share=$(lg max_share)
    stop_example
    start_example ex_poll 8 THUNDER_MODE=exclusive THUNDER_BALANCE=lifo
    run_loadgen 200 -g "$GAP_US"
    [ "$(lg ok)" = 200 ]
    lifo_share=$(lg max_share)
    echo "# largest share: fifo $fifo_share, lifo $lifo_share" >&3
    le "$(awk -v f="$fifo_share" 'BEGIN { print f + 0.25 }')" "$lifo_share" ||
        fail "lifo max_share $lifo_share not well above fifo $fifo_share"
}

@test "auto chooses as documented for every example (THUNDER_LOG=info)" {
    local spec name want
    for spec in "ex_poll:private exclusive epoll instance" "ex_select:private exclusive epoll instance" \
                "ex_epoll:EPOLLEXCLUSIVE with rotation" "ex_epoll_excl:EPOLLEXCLUSIVE with rotation" \
                "ex_evloop:EPOLLEXCLUSIVE with rotation" "ex_epoll_shared:shared with other processes: using the lock" \
                "ex_accept:blocking accept"; do
        name=${spec%%:*} want=${spec#*:}
        start_example "$name" 2 THUNDER_MODE=auto THUNDER_LOG=info
        socat_conns 4
        [ "$(grep -c FAILED "$SOCAT_OUT" || true)" -eq 0 ] || fail "$name: a connection failed"
        stop_example
        grep -q "info: .*$want" "$EX_ERR" || { cat "$EX_ERR" >&2; fail "$name: no info line with '$want'"; }
    done
}

# A steady load that keeps every worker busy (4 workers whose handler
# sleeps 5 ms, 16 clients in a closed loop: a connection is always queued
# when a worker comes back) passes the waits through (policy.c, "a busy
# worker"), and says so once; a sequential load never does, and rotates
# (a blocking accept never rotates: ROTATES=0).
busy_passes_through() {
    local ex=$1 rotates=${2:-1}
    start_example "$ex" 4 THUNDER_MODE=auto THUNDER_LOG=info -s 5
    run_loadgen 800 -c 16 -g 0
    [ "$(lg ok)" = 800 ] && [ "$(lg failed)" = 0 ] || fail "$ex: $(lg ok) of 800 answered" || return 1
    stop_example
    grep -q "info: .*keeps the workers busy" "$EX_ERR" ||
        { cat "$EX_ERR" >&2; fail "$ex: no busy worker under a steady load"; } || return 1
    start_example "$ex" 4 THUNDER_MODE=auto THUNDER_LOG=info
    run_loadgen 200 -g 1000
    [ "$(lg ok)" = 200 ] || fail "$ex: $(lg ok) of 200 answered" || return 1
    le 0.9 "$(lg jain)" || fail "$ex: unbalanced: Jain $(lg jain), counts $(lg_counts)" || return 1
    [ "$rotates" = 0 ] || [ "$(stat_sum rotations)" -gt 0 ] ||
        fail "$ex: no rotation on a sequential load" || return 1
    stop_example
    ! grep -q "keeps the workers busy" "$EX_ERR" || fail "$ex: a sequential load passed through"
}

@test "ex_epoll_excl, ex_poll and ex_accept, auto: a steady load that keeps every worker busy passes the waits through; a sequential one does not" {
    need_thunder_stat
    busy_passes_through ex_epoll_excl
    busy_passes_through ex_poll
    busy_passes_through ex_accept 0
}

@test "jitter: keeps serving and counts, random delay before accept" {
    start_example ex_poll 4 THUNDER_MODE=jitter THUNDER_JITTER_US=2000 THUNDER_LOG=info
    run_loadgen 200
    [ "$(lg ok)" = 200 ]
    every_worker_seen
    grep -q 'info: .*jitter mode' "$EX_ERR" || { cat "$EX_ERR" >&2; fail "no jitter info line"; }
}

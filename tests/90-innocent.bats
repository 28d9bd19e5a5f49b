#!/usr/bin/env bats
# Ordinary programs under the shim behave exactly as without it.

load helpers

setup() {
    PRELOAD=${TEST_ASAN_PRELOAD:+$TEST_ASAN_PRELOAD:}$THUNDER_LIB
}

@test "innocent: a shell pipeline gives the same output" {
    want=$(sh -c 'seq 2000 | sort -rn | head -n 3 | tr "\n" " "')
    got=$(LD_PRELOAD=$PRELOAD sh -c 'seq 2000 | sort -rn | head -n 3 | tr "\n" " "')
    [ "$got" = "$want" ]
}

@test "innocent: exit codes and signals pass through" {
    run env LD_PRELOAD="$PRELOAD" sh -c 'exit 7'
    [ "$status" -eq 7 ]
    run env LD_PRELOAD="$PRELOAD" sh -c 'kill -TERM $$'
    [ "$status" -eq 143 ]
}

@test "innocent: fd numbers reused between listeners, pipes and epoll, every mode" {
    for mode in off observe lock exclusive auto; do
        run env LD_PRELOAD="$PRELOAD" THUNDER_MODE=$mode "$ROOT/tests/progs/fdreuse" 300
        echo "$mode: $output"
        [ "$status" -eq 0 ]
        [[ ${lines[-1]} == ok ]]
    done
}

@test "innocent: fork, exec and vfork while holding the lock" {
    for mode in lock auto; do
        portfile=$BATS_TEST_TMPDIR/port.$mode
        LD_PRELOAD=$PRELOAD THUNDER_MODE=$mode "$ROOT/tests/progs/forkhold" "$portfile" 3>&- &
        pid=$!
        STARTED+=("$pid::")
        for _ in $(seq 100); do [ -s "$portfile" ] && break; sleep 0.05; done
        port=$(cat "$portfile")
        for _ in 1 2 3; do
            [ "$(socat -T5 - "TCP:127.0.0.1:$port" </dev/null)" = ok ]
        done
        wait "$pid"
    done
}

@test "innocent: a socat relay (single-process listener) under the shim" {
    port=$(free_port)
    LD_PRELOAD=$PRELOAD socat "TCP-LISTEN:$port,bind=127.0.0.1,reuseaddr,fork" SYSTEM:'echo relayed' 3>&- &
    STARTED+=("$!::")
    for _ in $(seq 100); do
        out=$(socat -T2 - "TCP:127.0.0.1:$port" </dev/null 2>/dev/null) && break
        sleep 0.05
    done
    for _ in 1 2 3 4 5; do
        [ "$(socat -T5 - "TCP:127.0.0.1:$port" </dev/null)" = relayed ]
    done
}

@test "innocent: a multi-threaded client (loadgen, 8 threads) under the shim" {
    start_example ex_poll 4 LD_PRELOAD=
    run env LD_PRELOAD="$PRELOAD" "$LOADGEN" -p "$PORT" -n 800 -c 8
    [ "$status" -eq 0 ]
    [[ $output == *"failed=0"* ]]
}

@test "innocent: python3 -m http.server (one process) serves as without the shim" {
    command -v python3 >/dev/null || skip "python3 not installed"
    port=$(free_port)
    LD_PRELOAD=$PRELOAD python3 -m http.server "$port" --bind 127.0.0.1 --directory "$BATS_TEST_TMPDIR" \
        >/dev/null 2>&1 3>&- &
    server=$!
    STARTED+=("$server::")
    echo hello >"$BATS_TEST_TMPDIR/hello.txt"
    for _ in $(seq 100); do
        out=$(printf 'GET /hello.txt HTTP/1.0\r\n\r\n' | socat -T2 - "TCP:127.0.0.1:$port" 2>/dev/null) && [ -n "$out" ] && break
        sleep 0.1
    done
    # SIGTERM kills python without a clean exit: teardown removes the segment
    STARTED[${#STARTED[@]} - 1]="$server:::$(listener_inode "$port")"
    for _ in 1 2 3; do
        out=$(printf 'GET /hello.txt HTTP/1.0\r\n\r\n' | socat -T5 - "TCP:127.0.0.1:$port")
        [[ $out == *"200"* ]] && [[ $out == *hello* ]]
    done
}

#!/usr/bin/env bats
# Configuration as a user meets it: every bad value of every THUNDER_
# variable gives exactly one "libthunder:" line naming the variable and the
# server runs on unmodified; unknown names are warned about and ignored;
# good values are silent; THUNDER_PORTS picks the listeners.

load helpers

NON_ASCII=$'l\xc3\xb3ck'

# Start ex_poll with VAR=VALUE, expect the one warning, pass-through, service.
expect_rejected() {
    local var=$1 value=$2 line
    start_example ex_poll 1 "$var=$value"
    socat_conns 2
    all_answered 2 || fail "$var=\"$value\": server did not serve" || return 1
    [ "$(shim_lines)" = 1 ] || { cat "$EX_ERR" >&2; fail "$var=\"$value\": want exactly one line"; return 1; }
    line=$(grep '^libthunder: ' "$EX_ERR")
    [[ $line =~ ^libthunder:\ \[[0-9]+\]\ warning:\ $var=\".*\"\ is\ not\ valid\ \(accepted:\ .+\)\;\ running\ pass-through$ ]] ||
        fail "$var=\"$value\": unexpected line: $line" || return 1
    [ ! -e "$(segment_of_listener)" ] || fail "$var=\"$value\": pass-through made a segment" || return 1
    stop_example
    [ "$EXAMPLE_STATUS" = 0 ] || fail "$var=\"$value\": exit status $EXAMPLE_STATUS"
}

reject_all() {
    local var=$1 value
    shift
    for value in "$@"; do
        expect_rejected "$var" "$value" || return 1
    done
}

WORD_BAD=("" bogus "lock " " lock" LOCK_ -1 1 "$NON_ASCII")

@test "THUNDER_MODE: bad values -> one line, pass-through, still serving" {
    reject_all THUNDER_MODE "${WORD_BAD[@]}" locks exclusive,lock
}

@test "THUNDER_BALANCE: bad values -> one line, pass-through, still serving" {
    reject_all THUNDER_BALANCE "${WORD_BAD[@]}" rr fifo/lifo
}

@test "THUNDER_LOG: bad values -> one line, pass-through, still serving" {
    reject_all THUNDER_LOG "${WORD_BAD[@]}" verbose 3
}

NUM_BAD=("" abc -5 0 "10ms" " 10" "10 " "1.5" 0x10 "+10" 99999999999999999999 $'\xc3\xa9')

@test "THUNDER_JITTER_US: bad values -> one line, pass-through, still serving" {
    reject_all THUNDER_JITTER_US "${NUM_BAD[@]}" 1000001
}

@test "THUNDER_RETRY_MS: bad values -> one line, pass-through, still serving" {
    reject_all THUNDER_RETRY_MS "${NUM_BAD[@]}" 1001
}

@test "THUNDER_HOLD_MS: bad values -> one line, pass-through, still serving" {
    reject_all THUNDER_HOLD_MS "${NUM_BAD[@]}" 60001
}

@test "THUNDER_CHECK_MS: bad values -> one line, pass-through, still serving" {
    reject_all THUNDER_CHECK_MS "${NUM_BAD[@]}" 1001
}

@test "THUNDER_PORTS: bad values -> one line, pass-through, still serving" {
    reject_all THUNDER_PORTS "" 0 65536 10-5 8080, ,8080 80,,81 abc -80 80- "80 81" $'\xc3\xa9'
}

@test "a bad value is reported even with THUNDER_LOG=off" {
    start_example ex_poll 2 THUNDER_LOG=off THUNDER_MODE=bogus
    socat_conns 2
    all_answered 2
    [ "$(shim_lines)" = 1 ]
    grep -q 'THUNDER_MODE="bogus" is not valid' "$EX_ERR"
}

@test "good values are silent and the shim runs" {
    start_example ex_poll 4 THUNDER_MODE=lock THUNDER_BALANCE=fifo THUNDER_LOG=warn \
        THUNDER_PORTS=1-65535 THUNDER_JITTER_US=1000 THUNDER_RETRY_MS=20 \
        THUNDER_HOLD_MS=100 THUNDER_CHECK_MS=25
    socat_conns 8
    all_answered 8
    [ "$(shim_lines)" = 0 ] || { cat "$EX_ERR" >&2; false; }
    [ -e "$(segment_of_listener)" ] || fail "lock mode made no segment"
}

@test "unknown THUNDER_ name: one warning with a suggestion, the shim still runs" {
    start_example ex_poll 4 THUNDER_MDOE=lock THUNDER_MODE=lock
    socat_conns 4
    all_answered 4
    [ "$(shim_lines)" = 1 ] || { cat "$EX_ERR" >&2; false; }
    grep -q '^libthunder: .*THUNDER_MDOE is an unknown libthunder variable (did you mean THUNDER_MODE?); ignored$' "$EX_ERR"
    [ -e "$(segment_of_listener)" ] || fail "the shim did not run"
}

@test "THUNDER_PORTS: a listener outside the list is left alone" {
    local port other
    port=$(free_port)
    other=$((port == 65535 ? port - 1 : port + 1))
    start_example ex_poll 4 -p "$port" THUNDER_MODE=lock "THUNDER_PORTS=$other"
    run_loadgen 100 -g 500
    [ "$(lg ok)" = 100 ]
    [ ! -e "$(segment_of_listener)" ] || fail "an unmanaged listener got a segment"
    le 2.5 "$(lg wakeups_per_conn)" || fail "the herd should be untouched: $(lg wakeups_per_conn)"
}

@test "THUNDER_PORTS: a listener inside a range is managed" {
    local port
    port=$(free_port)
    start_example ex_poll 4 -p "$port" THUNDER_MODE=lock "THUNDER_PORTS=1,$((port - 1))-$((port + 1))"
    run_loadgen 100 -g 500
    [ "$(lg ok)" = 100 ]
    [ -e "$(segment_of_listener)" ] || fail "a managed listener has no segment"
}

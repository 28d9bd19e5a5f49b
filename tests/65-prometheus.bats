#!/usr/bin/env bats
# thunder-stat --prometheus and --textfile (thunder-preload stat takes the
# same options): the text exposition format, checked by promtool (Debian
# package prometheus) while an example serves; counters that move with
# more connections; the file node_exporter's textfile collector reads.

load helpers

bats_require_minimum_version 1.5.0

# sample NAME [PID]: the value of NAME for this test's listener (summed over
# its processes, or the one of PID), from the exposition in $1's file.
sample() {
    awk -v name="$2" -v port="port=\"$PORT\"" -v pid="${3:+pid=\"$3\"}" '
        index($0, name "{") == 1 && index($0, port) && (pid == "" || index($0, pid)) { s += $NF; n++ }
        END { if (n) print s + 0; else print "none" }' "$1"
}

prom() {
    "$THUNDER_STAT" --prometheus --port "$PORT" >"$BATS_TEST_TMPDIR/$1.prom"
}

@test "prometheus: promtool check metrics passes while an example serves" {
    command -v promtool >/dev/null || skip "promtool not installed (Debian package prometheus)"
    start_example ex_poll 3 THUNDER_MODE=lock
    run_loadgen 30
    run --separate-stderr "$THUNDER_STAT" --prometheus
    [ "$status" -eq 0 ]
    run promtool check metrics <<<"$output"
    [ "$status" -eq 0 ] || fail "promtool: $output"
    # the wrapper passes the options on
    run --separate-stderr "$ROOT/shim/thunder-preload" stat --prometheus --port "$PORT"
    [ "$status" -eq 0 ]
    [[ $output == *"thunder_accepts_total{port=\"$PORT\",address=\"127.0.0.1:$PORT\""* ]] || fail "$output"
    run promtool check metrics <<<"$output"
    [ "$status" -eq 0 ] || fail "promtool: $output"
}

@test "prometheus: one HELP and TYPE per family, a series per process, counters that move" {
    local f pid before after before_lw
    start_example ex_poll 3 THUNDER_MODE=lock
    run_loadgen 30
    prom before
    f=$BATS_TEST_TMPDIR/before.prom
    for family in thunder_accepts_total thunder_wakeups_total thunder_spurious_wakeups_total \
                  thunder_eagain_accepts_total thunder_waits_total thunder_lock_waits_total \
                  thunder_lock_wait_seconds_total thunder_rotations_total thunder_recoveries_total \
                  thunder_refused_accepts_total thunder_yields_total; do
        [ "$(grep -c "^# TYPE $family counter\$" "$f")" = 1 ] || fail "TYPE of $family: $(cat "$f")"
        [ "$(grep -c "^# HELP $family " "$f")" = 1 ] || fail "HELP of $family"
    done
    for family in thunder_processes thunder_jain_index thunder_queued_waiters thunder_lock_holder_pid; do
        [ "$(grep -c "^# TYPE $family gauge\$" "$f")" = 1 ] || fail "TYPE of $family"
    done
    [ "$(sample "$f" thunder_processes)" = 3 ] || fail "processes: $(sample "$f" thunder_processes)"
    [ "$(sample "$f" thunder_accepts_total)" = 30 ] || fail "accepts: $(sample "$f" thunder_accepts_total)"
    for pid in ${WORKERS//,/ }; do
        [ "$(sample "$f" thunder_accepts_total "$pid")" != none ] || fail "no series for worker $pid"
    done
    awk -v j="$(sample "$f" thunder_jain_index)" 'BEGIN { exit !(j > 0 && j <= 1) }' || fail "jain"
    before=$(sample "$f" thunder_wakeups_total)
    before_lw=$(sample "$f" thunder_lock_waits_total)
    run_loadgen 20
    prom after
    f=$BATS_TEST_TMPDIR/after.prom
    [ "$(sample "$f" thunder_accepts_total)" = 50 ] || fail "accepts after 20 more: $(sample "$f" thunder_accepts_total)"
    after=$(sample "$f" thunder_wakeups_total)
    [ "$after" -gt "$before" ] || fail "wake-ups did not move: $before -> $after"
    # a lock wait is counted when a wait queues (one that finds the lock
    # free does not), so not one per connection: it must move, that is all
    [ "$(sample "$f" thunder_lock_waits_total)" -gt "$before_lw" ] ||
        fail "lock waits did not move: $before_lw -> $(sample "$f" thunder_lock_waits_total)"
}

@test "--textfile DIR writes DIR/libthunder.prom by rename; --watch keeps it fresh" {
    local dir=$BATS_TEST_TMPDIR/textfile f job i
    mkdir "$dir"
    f=$dir/libthunder.prom
    start_example ex_poll 2 THUNDER_MODE=lock
    run_loadgen 10
    run --separate-stderr "$THUNDER_STAT" --textfile "$dir"
    [ "$status" -eq 0 ]
    [ -z "$output" ] || fail "--textfile wrote on stdout: $output"
    [ "$(sample "$f" thunder_accepts_total)" = 10 ] || fail "$(cat "$f")"
    [ "$(stat -c %a "$f")" = 644 ] || fail "mode $(stat -c %a "$f")"
    [ "$(find "$dir" -type f | wc -l)" = 1 ] || fail "left in $dir: $(ls -a "$dir")"
    if command -v promtool >/dev/null; then
        run promtool check metrics <"$f"
        [ "$status" -eq 0 ] || fail "promtool: $output"
    fi
    # --watch: the file follows the counters until SIGTERM ends it
    "$THUNDER_STAT" --textfile "$dir" --watch 0.2 3>&- &
    job=$!
    run_loadgen 15
    for ((i = 0; i < 50; i++)); do
        [ "$(sample "$f" thunder_accepts_total)" = 25 ] && break
        sleep 0.1
    done
    kill -TERM "$job"
    wait "$job" || fail "--watch exited with status $?"
    [ "$(sample "$f" thunder_accepts_total)" = 25 ] || fail "not refreshed: $(cat "$f")"
    [ "$(find "$dir" -type f | wc -l)" = 1 ] || fail "left in $dir: $(ls -a "$dir")"
}

@test "--prometheus and --textfile: usage errors exit 2" {
    local args
    for args in "--prometheus --kv" "--json --prometheus" "--textfile" "--kv --textfile /tmp" \
                "--textfile $BATS_TEST_TMPDIR/none" "--gc --prometheus"; do
        # shellcheck disable=SC2086
        run --separate-stderr "$THUNDER_STAT" $args
        [ "$status" -eq 2 ] || fail "'$args': status $status"
        # shellcheck disable=SC2154  # set by run --separate-stderr
        [[ $stderr == *"usage: thunder-stat"* ]] || fail "'$args': $stderr"
    done
}

#!/usr/bin/env bats
# bench/burst-timeline.sh: where a burst round's time goes (issue 11).
# It traces the client's connects and the workers' accepts with perf; this
# checks that its table is read from real rounds (every field a number, in
# the order the times must come in), not that the machine is fast.  Where
# perf cannot trace, the script says why and the test skips with that.

load helpers

@test "bench/burst-timeline.sh: one row per mode, its times in order, every round counted" {
    local out row mode first started cend last round waited
    out=$(BENCH_LIB=$THUNDER_LIB TIMELINE_ROUNDS=6 TIMELINE_SLEEP_MS=2 \
        "$BATS_TEST_DIRNAME/../bench/burst-timeline.sh" ex_epoll_shared 4 none auto 2>&1) || {
        grep -qE '^burst-timeline: (perf|needs root)' <<<"$out" && skip "${out#burst-timeline: }"
        fail "exit status: $out"
    }
    echo "$out" | sed 's/^/# /' >&3
    for mode in none auto; do
        row=$(grep "^| $mode |" <<<"$out") || fail "no row for $mode"
        IFS='|' read -r _ _ first started cend last round waited _ <<<"$row"
        for v in "$first" "$started" "$cend" "$last" "$round"; do
            [[ $v =~ ^\ [0-9]+\.[0-9]+\ $ ]] || fail "$mode: '$v' is not a time"
        done
        # 6 rounds, the first and the last left out
        [[ $waited =~ ^\ [0-4]/4\ $ ]] || fail "$mode: waited '$waited', not k/4"
        awk -v f="$first" -v s="$started" -v l="$last" -v r="$round" \
            'BEGIN { exit !(f <= s && s <= l && l <= r && r >= 2 * 2) }' ||
            fail "$mode: times out of order: first $first, started $started, last $last, round $round"
    done
}

@test "bench/burst-timeline.sh: a wrong style or worker count is refused with the usage" {
    run "$BATS_TEST_DIRNAME/../bench/burst-timeline.sh" ex_nosuch 4
    [ "$status" = 2 ] && [[ $output == *"no example ex_nosuch"* ]] || fail "$status: $output"
    run "$BATS_TEST_DIRNAME/../bench/burst-timeline.sh" ex_epoll_shared x4
    [ "$status" = 2 ] && [[ $output == *usage* ]] || fail "$status: $output"
}

#!/usr/bin/env bats
# The shim's own work per call, counted in instructions (issue 12).
# valgrind's cachegrind counts every user-space instruction a process
# runs, the same on every run and under any load, so these limits are
# counts, not times.  They catch what a system-call count cannot: a scan,
# a lookup or an errno round trip added to the path every connection or
# every wait takes.  The limits leave a quarter or more of room over what
# this tree measures (numbers in the comments, Debian's gcc and glibc).

load helpers

setup() {
    [ -z "${TEST_ASAN_PRELOAD:-}" ] || skip "instruction counts are the plain build's (valgrind does not run ASan)"
    command -v valgrind >/dev/null || skip "valgrind is not installed (apt-get install valgrind)"
}

# waitloop_instructions N WITH: the user-space instructions waitloop
# runs for N rounds of its 6 waits, without (0) or with (1) the shim
waitloop_instructions() {
    waitloop_under "$2" "$1" valgrind --tool=cachegrind --cache-sim=no --cachegrind-out-file=/dev/null \
        2>&1 >/dev/null | sed -n 's/.*I *refs: *//p' | tr -d ,
}

@test "a wait without a managed listener: at most 250 instructions of the shim's (poll ppoll select pselect epoll_wait epoll_pwait)" {
    local a b c d extra
    # start-up cancels out; 1800 waits are left (measured: about 140 each)
    read -r a b c d extra < <(waitloop_extra waitloop_instructions 100 400) || fail "cachegrind printed no count"
    extra=$((extra / 1800))
    echo "# 600 waits: $a without, $b with; 2400 waits: $c without, $d with: $extra extra per wait" >&3
    [ "$extra" -le 250 ] || fail "$extra instructions of the shim's per wait that holds no listener"
}

# bench_extra TARGET: the instructions per connection the shim adds in
# bench/instructions.sh's row for TARGET (2 workers, 50 and 300
# sequential connections), the row itself on fd 3.
bench_extra() {
    local row without with
    BENCH_LIB=$THUNDER_LIB INSTR_CONNS_A=50 INSTR_CONNS_B=300 "$BATS_TEST_DIRNAME/../bench/instructions.sh" "$1" \
        >"$BATS_TEST_TMPDIR/instr" 2>&1 || true
    row=$(grep '^| ex_' "$BATS_TEST_TMPDIR/instr") || { cat "$BATS_TEST_TMPDIR/instr" >&2; return 1; }
    echo "# $row" >&3
    IFS='|' read -r _ _ _ without with _ <<<"$row"
    echo $((with - without))
}

# The exclusive path end to end.  Measured: about 80 without, 1950 more
# with (2550 more before the listener's segment was answered from two loads).
@test "an exclusive wait and its accept (ex_epoll_excl, auto): at most 2400 instructions of the shim's per connection" {
    local extra
    extra=$(bench_extra ex_epoll_excl:2:auto) || fail "no row"
    [ "$extra" -le 2400 ] || fail "$extra instructions per connection added"
}

# The lock path (ex_epoll_shared: both workers wait on the master's
# instance, so each connection is one hand-off: lock, doorbell, mask).
# Measured: about 80 without, 5200 more with (7300 more while each
# doorbell's address went through snprintf and each queued wait rebuilt
# its signal mask).
@test "a lock wait and its hand-off (ex_epoll_shared, auto): at most 6800 instructions of the shim's per connection" {
    local extra
    extra=$(bench_extra ex_epoll_shared:2:auto) || fail "no row"
    [ "$extra" -le 6800 ] || fail "$extra instructions per connection added"
}

# Every process of a unit the library is put on pays its start-up, also
# the ones that never listen (a shell's commands).  Measured: about
# 130,000 without, 120,000 more with; 2,980,000 more while each of the 62
# real functions was told from our own by two dladdr() calls.
@test "start-up: a process under the shim runs at most 300,000 more instructions than without (/bin/true)" {
    local line without with
    line=$(BENCH_LIB=$THUNDER_LIB "$BATS_TEST_DIRNAME/../bench/instructions.sh" startup 2>&1 | grep '^Start-up') ||
        fail "bench/instructions.sh printed no start-up line"
    echo "# $line" >&3
    read -r without with < <(grep -oE '[0-9]+ (instructions|with)' <<<"$line" | cut -d' ' -f1 | paste -sd ' ')
    [ -n "$without" ] && [ -n "$with" ] || fail "no counts in: $line"
    [ $((with - without)) -le 300000 ] || fail "$((with - without)) instructions added to a process's start-up"
}

#!/bin/bash
# Process death under the shim, under steady load: kill -9 workers at
# chosen points while clients keep connecting, and check that no
# connection is lost and that every survivor goes on serving.
#
#   tests/death.sh EXAMPLE MODE KILLS POINTS [WORKERS]
#
# POINTS is a comma list of the points tests/progs/killat stops a worker
# at before it kills it, used in turn:
#   holder  the lock holder going back to (or sleeping in) its real wait
#   queued  a worker with a thread queued for the lock
#   wait    any worker entering a wait (modes without a lock)
#   accept  a worker woken for a connection, at the accept call (under the
#           lock it holds the lock there; under exclusive wake-ups it was
#           the one woken for that connection)
#   rotate  a worker between the DEL and the ADD of the rotation after an
#           accept: the connection in its hand dies with it
# The example runs with -r, so its master respawns every killed worker.
# tools/thunder-loadgen keeps 4 clients connecting (a 3 ms gap each) through all
# the kills, every connection counted; then SIGTERM ends it.
#
# A connection the victim had accepted dies with it, whatever the shim
# does; only `rotate` kills a worker with one in hand (killat checks).  So:
# lost = refused + timed out + closed without reply beyond those in hand.
# Right after each kill one more connection is timed: the recovery time
# (the slowest is printed).  The load's own slowest connection is printed
# too; it includes the victims' slow-down while traced.  At the end, 20
# sequential connections per surviving worker: each must answer at least
# once.  Prints
#   kills=N (POINT=N ...) conns=N lost=N died_in_hand=N worst_recovery_ms=X
#   slowest_ms=X survivors=N unserved=N
# and exits 1 if anything was lost, a kill point was never reached, a
# survivor got no connection, or a connection took over 2 s.
# DEATH_VERBOSE=1 prints each kill and its recovery; DEATH_DRY_RUN=1 lets
# each victim go on at its point instead (what the tracing alone costs).
set -u
root=$(cd "$(dirname "$0")/.." && pwd)
# listener_inode, alive, segment_path
# shellcheck source=tests/lib/proc.bash
. "$root/tests/lib/proc.bash"
example=$1 mode=$2 kills_wanted=$3 points=$4 workers=${5:-8}
out=$(mktemp) err=$(mktemp) load=$(mktemp) loaderr=$(mktemp)
master='' loader='' segment=''

cleanup() {
    [ -n "$loader" ] && kill -TERM "$loader" 2>/dev/null && wait "$loader" 2>/dev/null
    if [ -n "$master" ]; then
        kill -TERM "$master" 2>/dev/null
        for _ in $(seq 80); do kill -0 "$master" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$master" 2>/dev/null
        wait "$master" 2>/dev/null
    fi
    for pid in $(all_workers); do kill -KILL "$pid" 2>/dev/null; done
    [ -n "$segment" ] && rm -f "$segment"
    rm -f "$out" "$err" "$load" "$loaderr"
}
trap cleanup EXIT

# Every worker ever started: the first line and the respawn lines.
all_workers() {
    sed -n "s/.*workers=//p; s/^respawn=//p" "$out" | tr , " "
}

live_workers() {
    local pid
    for pid in $(all_workers); do alive "$pid" && echo "$pid"; done
}

respawns() {
    grep -c '^respawn=' "$out"
}

fail() {
    echo "death.sh: $*" >&2
    exit 1
}

LD_PRELOAD=${TEST_ASAN_PRELOAD:+$TEST_ASAN_PRELOAD:}$root/libthunder.so THUNDER_MODE=$mode \
    "$root/examples/$example" -w "$workers" -r >"$out" 2>"$err" 3>&- </dev/null &
master=$!
for _ in $(seq 100); do grep -q '^port=' "$out" && break; sleep 0.05; done
port=$(sed -n 's/^port=\([0-9]*\) .*/\1/p' "$out")
[ -n "$port" ] || { cat "$err"; fail "$example did not start"; }
inode=$(listener_inode "$port")
segment=$(segment_path "$inode")
"$root/tools/thunder-loadgen" -p "$port" -n 50 >/dev/null || fail "no service before the kills"

"$root/tools/thunder-loadgen" -p "$port" -c 4 -g 3000 -n 10000000 -d 900 -T 5000 \
    >"$load" 2>"$loaderr" &
loader=$!

IFS=, read -r -a point_list <<<"$points"
declare -A killed_at
kills=0 in_hand=0 missed=0 recovery_us=0 probes_failed=0
for ((c = 0; kills < kills_wanted; c++)); do
    ((c < 3 * kills_wanted)) || break
    kill -0 "$loader" 2>/dev/null || fail "the load ended before the kills did"
    point=${point_list[c % ${#point_list[@]}]}
    mapfile -t live < <(live_workers)
    ((${#live[@]} > 0)) || fail "no live worker"
    victim=${live[RANDOM % ${#live[@]}]}
    before=$(respawns)
    result=$("$root/tests/progs/killat" ${DEATH_DRY_RUN:+-n} -t 3000 -s "$segment" "$victim" "$point" 2>&1)
    [ -n "${DEATH_VERBOSE:-}" ] && echo "kill $c $point $victim: $result" >&2
    case $result in
        killed* | reached*) ;;
        *) missed=$((missed + 1)); continue ;;
    esac
    kills=$((kills + 1))
    killed_at[$point]=$((${killed_at[$point]:-0} + 1))
    [[ $result == *in_hand=1* ]] && in_hand=$((in_hand + 1))
    probe=$("$root/tools/thunder-loadgen" -p "$port" -n 1 -T 5000 2>/dev/null)
    if [[ $probe == *$'\nok=1\n'* ]]; then
        us=$(sed -n 's/^max_us=//p' <<<"$probe")
        ((us > recovery_us)) && recovery_us=$us
        [ -n "${DEATH_VERBOSE:-}" ] && echo "  recovery after $point: $us us" >&2
    else
        probes_failed=$((probes_failed + 1))
    fi
    # the master replaces the worker before the next victim is chosen
    for _ in $(seq 100); do (($(respawns) > before)) && break; sleep 0.02; done
done

kill -TERM "$loader"
wait "$loader"
loader=
get() { sed -n "s/^$1=//p" "$load"; }
closed=$(get failed_closed)
lost=$(($(get failed_connect) + $(get failed_timeout) + (closed > in_hand ? closed - in_hand : 0)))
slowest_ms=$(($(get max_us) / 1000))

# every survivor goes on: sequential connections, each worker seen
mapfile -t live < <(live_workers)
survivors=$(IFS=,; echo "${live[*]}")
after=$("$root/tools/thunder-loadgen" -p "$port" -n $((20 * ${#live[@]})) -P "$survivors" -T 5000 2>&1)
unserved=0
for pid in "${live[@]}"; do
    grep -q "^pid=$pid accepts=[1-9]" <<<"$after" || unserved=$((unserved + 1))
done
after_failed=$(sed -n 's/^failed=//p' <<<"$after")
lost=$((lost + ${after_failed:-1} + probes_failed))

per_point=$(for p in "${point_list[@]}"; do echo -n "$p=${killed_at[$p]:-0} "; done)
printf 'kills=%d (%s) conns=%d lost=%d died_in_hand=%d worst_recovery_ms=%d slowest_ms=%d survivors=%d unserved=%d\n' \
    "$kills" "${per_point% }" "$(($(get conns) + kills))" "$lost" "$closed" \
    "$((recovery_us / 1000))" "$slowest_ms" "${#live[@]}" "$unserved"
[ "$lost" -eq 0 ] || { head -n 5 "$loaderr" >&2; fail "$lost connections lost"; }
[ "$kills" -eq "$kills_wanted" ] || fail "$kills of $kills_wanted kills made ($missed points not reached)"
for p in "${point_list[@]}"; do
    [ "${killed_at[$p]:-0}" -gt 0 ] || fail "no worker was ever killed at '$p'"
done
[ "$unserved" -eq 0 ] || fail "$unserved surviving workers got no connection"
if [ "$slowest_ms" -ge 2000 ] || [ "$recovery_us" -ge 2000000 ]; then
    fail "a connection took over 2 s (slowest $slowest_ms ms, recovery $((recovery_us / 1000)) ms)"
fi

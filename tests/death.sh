#!/bin/bash
# Process death under the shim: kill -9 the lock holder, or a queued waiter,
# or (auto mode) any worker, CYCLES times, and check that no connection is
# lost and that the survivors take over quickly.
#
#   tests/death.sh EXAMPLE MODE CYCLES [WORKERS]
#
# The example runs with -r, so its master respawns killed workers.  Each
# cycle: pick a victim from the listener's segment (thunder-stat --kv:
# the holder on even cycles, another live worker on odd ones), kill -9 it
# while it waits (no request in flight, so nothing is lost by the kill
# itself), then send 20 sequential connections, every one of which must be
# answered.  The slowest of them is the recovery time.  Prints
#   kills=N conns=N lost=N worst_recovery_ms=X
# and exits 1 if anything was lost or a recovery took over 2 s.
set -u
root=$(cd "$(dirname "$0")/.." && pwd)
example=$1 mode=$2 cycles=$3 workers=${4:-8}
out=$(mktemp) err=$(mktemp)
master=

cleanup() {
    if [ -n "$master" ]; then
        kill -TERM "$master" 2>/dev/null
        for _ in $(seq 80); do kill -0 "$master" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$master" 2>/dev/null
        wait "$master" 2>/dev/null
    fi
    # every worker ever started: the first line and the respawn lines
    for pid in $(sed -n "s/.*workers=//p; s/^respawn=//p" "$out" | tr , " "); do
        kill -KILL "$pid" 2>/dev/null
    done
    [ -n "${inode:-}" ] && rm -f "/dev/shm/libthunder.$(id -u).$inode"
    rm -f "$out" "$err"
}
trap cleanup EXIT

LD_PRELOAD=${TEST_ASAN_PRELOAD:+$TEST_ASAN_PRELOAD:}$root/libthunder.so THUNDER_MODE=$mode \
    "$root/examples/$example" -w "$workers" -r >"$out" 2>"$err" 3>&- </dev/null &
master=$!
for _ in $(seq 100); do grep -q '^port=' "$out" && break; sleep 0.05; done
port=$(sed -n 's/^port=\([0-9]*\) .*/\1/p' "$out")
[ -n "$port" ] || { echo "error: $example did not start"; cat "$err"; exit 1; }
"$root/bench/loadgen" -p "$port" -n 50 >/dev/null || { echo "error: no service"; exit 1; }

kills=0 conns=0 lost=0 worst=0
for ((c = 0; c < cycles; c++)); do
    stat=$("$root/shim/thunder-stat" --kv "$port" 2>/dev/null)
    inode=$(sed -n 's/^listener .*inode=\([0-9]*\).*/\1/p' <<<"$stat" | head -n 1)
    holder=$(sed -n 's/^listener .*holder=\([0-9]*\).*/\1/p' <<<"$stat" | head -n 1)
    mapfile -t live < <(sed -n 's/^port=.* pid=\([0-9]*\) alive=1 .*/\1/p' <<<"$stat")
    victim=
    if ((c % 2 == 0)) && [ -n "$holder" ] && [ "$holder" != 0 ]; then
        victim=$holder
    else
        for pid in "${live[@]}"; do [ "$pid" != "$holder" ] && victim=$pid && break; done
    fi
    if [ -n "$victim" ] && kill -KILL "$victim" 2>/dev/null; then
        kills=$((kills + 1))
    fi
    result=$("$root/bench/loadgen" -p "$port" -n 20 -T 5000 2>/dev/null)
    ok=$(sed -n 's/^ok=//p' <<<"$result")
    failed=$(sed -n 's/^failed=//p' <<<"$result")
    conns=$((conns + ${ok:-0} + ${failed:-20}))
    lost=$((lost + ${failed:-20}))
    slowest=$(sed -n 's/^p99_us=//p' <<<"$result")
    ((${slowest:-0} > worst)) && worst=$slowest
    [ -n "${DEATH_VERBOSE:-}" ] && echo "cycle $c victim=$victim holder=$holder slowest_us=$slowest failed=$failed" >&2
    # let the master respawn before the next victim is chosen
    sleep 0.05
done
printf 'kills=%d conns=%d lost=%d worst_recovery_ms=%d\n' "$kills" "$conns" "$lost" $((worst / 1000))
[ "$lost" -eq 0 ] && [ "$worst" -lt 2000000 ]

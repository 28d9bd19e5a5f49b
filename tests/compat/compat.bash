# shellcheck shell=bash
# shellcheck disable=SC2034  # variables set here are read by the .bats files
# Shared by tests/compat/*.bats (make check-compat): real servers from
# Debian (bench/peers/servers.sh says how to run each) under libthunder in
# its default mode, driven by tools/thunder-loadgen -H.  On top of tests/helpers.bash
# (fail, le, LOADGEN, THUNDER_LIB, listener_inode, alive).
#
#   need_server CONFIG          skip the test, with the packages to install,
#                               when the server is not here
#   server_start CONFIG WORKERS none|shim
#       starts it (shim: LD_PRELOAD only, the default mode) and waits until
#       WORKERS workers are up and it answers; sets PORT, DIR, SRV_WORKERS,
#       SRV_INODE; teardown stops it and removes its segment
#   server_stop                 the clean stop of the server started last;
#                               fails if it had to be killed
#   server_floor CONFIG         wake-ups per connection with one worker, no
#                               shim (the server's own cost); sets FLOOR
#   drive N [ARGS]              tools/thunder-loadgen -H against PORT; LG, lg KEY
#   every_worker_served PIDS    each pid answered in the last load
#   library_quiet               nothing from the library in the server's logs
#   segment_gone                no /dev/shm segment left for the listener

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
# proc_children (and a free_port that helpers.bash replaces)
# shellcheck source=bench/lib.sh
. "$ROOT/bench/lib.sh"
# shellcheck source=tests/helpers.bash
. "$ROOT/tests/helpers.bash"
# shellcheck source=bench/peers/servers.sh
. "$ROOT/bench/peers/servers.sh"

SERVERS=()          # "config|dir|started-pid|inode" of every server this test started

need_server() {
    peer_installed "$1" ||
        skip "$(peer_label "$1") not installed (apt-get install -y $(peer_packages "$1"))"
}

server_start() {
    local config=$1 want=$2 n
    local -a envs=()
    [ "$3" = shim ] && envs=("LD_PRELOAD=$THUNDER_LIB")
    PORT=$(free_port)
    # nginx's and Apache's workers (nobody, www-data) must reach their
    # files: not under bats's private tmpdir
    if [ -z "${SRV_ROOT:-}" ]; then
        SRV_ROOT=$(mktemp -d /tmp/thunder-compat.XXXXXX)
        chmod 755 "$SRV_ROOT"
    fi
    DIR=$SRV_ROOT/$config-$want-$3
    peer_start "$config" "$want" "$PORT" "$DIR" "${envs[@]}"
    SERVERS+=("$config|$DIR|$PEER_PID|")
    SRV_CONFIG=$config
    local until=$((SECONDS + 180))
    while [ "$SECONDS" -lt "$until" ]; do
        SRV_WORKERS=$(peer_workers "$config" "$(peer_master "$config" "$DIR")") || SRV_WORKERS=
        n=$(tr ',' '\n' <<<"$SRV_WORKERS" | grep -c . || true)
        if [ "$n" -ge "$want" ] && "$LOADGEN" -H -p "$PORT" -n 1 -T 1000 >/dev/null 2>&1; then
            SRV_INODE=$(listener_inode "$PORT")
            SERVERS[${#SERVERS[@]} - 1]="$config|$DIR|$PEER_PID|$SRV_INODE"
            return 0
        fi
        alive "$PEER_PID" || break
        sleep 0.05
    done
    peer_logs "$DIR" | xargs tail -n 5 >&2
    fail "$(peer_label "$config") did not start with $want answering workers within 180 s"
}

# Stop one entry of SERVERS; the status of peer_stop (1: had to kill).
stop_entry() {
    local config dir pid inode status=0
    IFS='|' read -r config dir pid inode <<<"$1"
    [ -n "$pid" ] || return 0
    PEER_PID=$pid
    peer_stop "$config" "$dir" || status=1
    return $status
}

server_stop() {
    local n=$((${#SERVERS[@]} - 1)) config dir pid inode
    IFS='|' read -r config dir pid inode <<<"${SERVERS[$n]}"
    SERVERS[n]="$config|$dir||$inode"     # stopped: teardown only cleans up
    stop_entry "$config|$dir|$pid|$inode" ||
        fail "$(peer_label "$config") had to be killed (no clean stop within 15 s)"
}

compat_teardown() {
    local entry config dir pid inode
    for entry in "${SERVERS[@]}"; do
        stop_entry "$entry" || true
        IFS='|' read -r config dir pid inode <<<"$entry"
        # workers that dropped privileges make their segment under their uid
        [ -z "$inode" ] || rm -f /dev/shm/libthunder.*."$inode"
    done
    SERVERS=()
    [ -z "${SRV_ROOT:-}" ] || rm -rf "$SRV_ROOT"
    SRV_ROOT=
    helpers_teardown
}

teardown() {
    compat_teardown
}

drive() {
    local n=$1
    shift
    # a bound in time far above need (loadgen's own default is 30 s: too
    # short for 800 requests on a loaded 2-core machine)
    LG=$(timeout 200 "$LOADGEN" -H -p "$PORT" -n "$n" -d 180 "$@" 2>"$BATS_TEST_TMPDIR/loadgen.err" || true)
    echo "# loadgen -n $n $*: $(grep -E '^(ok|failed|workers_seen|jain|max_share|wakeups_per_conn)=' <<<"$LG" | tr '\n' ' ')" >&3
}

server_floor() {
    server_start "$1" 1 none
    drive 300 -g 200 -P "$SRV_WORKERS"
    FLOOR=$(lg wakeups_per_conn)
    [ "$(lg failed)" = 0 ] && [ -n "$FLOOR" ] || fail "the one-worker run failed: $LG"
    server_stop
    echo "# $(peer_label "$1"): floor $FLOOR wake-ups per connection with 1 worker" >&3
}

# IDLE_HZ: voluntary context switches per second of SRV_WORKERS at rest
# (their own timers), over 2 s.
idle_rate() {
    local before after
    before=$(ctxt_sum "$SRV_WORKERS")
    sleep 2
    after=$(ctxt_sum "$SRV_WORKERS")
    IDLE_HZ=$(awk -v a="$before" -v b="$after" 'BEGIN { printf "%.1f", (b - a) / 2 }')
}

every_worker_served() {
    local pid n missing=
    for pid in ${1//,/ }; do
        n=$(sed -n "s/^pid=$pid accepts=//p" <<<"$LG")
        [ "${n:-0}" -gt 0 ] || missing+=" $pid"
    done
    [ -z "$missing" ] || fail "workers that served nothing:$missing (of $1)"
}

library_quiet() {
    local lines
    lines=$(peer_logs "$DIR" | xargs grep -h '^libthunder' || true)
    [ -z "$lines" ] || fail "the library wrote at the default log level: $lines"
}

segment_gone() {
    local left
    left=$(ls /dev/shm/libthunder.*."$SRV_INODE" 2>/dev/null || true)
    [ -z "$left" ] || fail "segment left after a clean stop: $left"
}

# What every server must do under the library: the floor with one worker,
# then 8 workers under the shim: every request answered, every worker
# served, wake-ups at most the floor + 0.3 (+ what the workers' own timers
# cost at rest, spread over the run's connections), balanced, quiet, and its
# segment gone after a clean stop.  A server with its own accept lock
# (peer_own_lock) cannot be brought below what that lock costs: there the
# shim must change nothing, so the wake-ups are held to the larger of the
# floor and the same server without the shim (+ 0.3), and the balance is
# checked only where the server's lock balances without the shim.
check_server() {
    local config=$1 n=800 wake limit idle jain_min=0.9 base_wake base_jain base_seen=8
    need_server "$config"
    server_floor "$config"
    limit=$(awk -v f="$FLOOR" 'BEGIN { print f + 0.3 }')
    if peer_own_lock "$config"; then
        server_start "$config" 8 none
        drive "$n" -g 200 -P "$SRV_WORKERS"
        base_wake=$(lg wakeups_per_conn) base_jain=$(lg jain) base_seen=$(lg workers_seen)
        server_stop
        limit=$(awk -v f="$FLOOR" -v b="$base_wake" 'BEGIN { print (b > f ? b : f) + 0.3 }')
        # unbalanced by its own lock (one worker keeps it): nothing to hold
        le 0.9 "$base_jain" || jain_min=0
        echo "# its own accept lock: without the shim $base_wake wake-ups, Jain $base_jain, $base_seen workers seen; limits $limit, $jain_min" >&3
    fi
    server_start "$config" 8 shim
    idle_rate
    drive "$n" -g 200 -P "$SRV_WORKERS"
    [ "$(lg ok)" = "$n" ] || fail "$(lg ok) of $n requests answered ($(lg failed) failed)"
    [ "$base_seen" -lt 8 ] || every_worker_served "$SRV_WORKERS"
    wake=$(lg wakeups_per_conn)
    # the workers' own timers (uvicorn's 0.1 s tick in each worker) wake
    # them whatever the load: not the herd, and more of them per connection
    # the slower the machine serves
    idle=$(awk -v r="$IDLE_HZ" -v s="$(lg seconds)" -v n="$n" 'BEGIN { printf "%.3f", r * s / n }')
    limit=$(awk -v l="$limit" -v i="$idle" 'BEGIN { print l + i }')
    echo "# idle: $IDLE_HZ wake-ups/s of the 8 workers = $idle per connection over this run; limit $limit" >&3
    le "$wake" "$limit" || fail "$wake wake-ups per connection > $limit (floor $FLOOR + 0.3 + idle $idle)"
    le "$jain_min" "$(lg jain)" || fail "Jain $(lg jain) < $jain_min"
    server_stop
    library_quiet
    segment_gone
}

# A graceful reload while 4 clients keep connecting: none fails, and the
# new generation of workers is balanced.
check_reload() {
    local config=$1 old new i lgpid out=$BATS_TEST_TMPDIR/reload.out
    need_server "$config"
    server_start "$config" 8 shim
    old=$SRV_WORKERS
    # -T 30000: a reload may hold connections in the listen queue for
    # seconds (uWSGI re-execs its master); only a lost one is a failure
    timeout 120 "$LOADGEN" -H -p "$PORT" -n 100000 -c 4 -g 2000 -d 8 -T 30000 >"$out" 2>&1 3>&- &
    lgpid=$!
    sleep 2
    peer_reload "$config" "$DIR" 8 || fail "reload failed"
    for ((i = 0; i < 600; i++)); do
        new=$(peer_workers "$config" "$(peer_master "$config" "$DIR")") || new=
        [ "$(tr ',' '\n' <<<"$new" | grep -c . || true)" -eq 8 ] &&
            [ "$(comm -12 <(tr ',' '\n' <<<"$old" | sort) <(tr ',' '\n' <<<"$new" | sort) | wc -l)" -eq 0 ] && break
        sleep 0.05
    done
    wait "$lgpid" || true
    LG=$(cat "$out")
    echo "# during the reload: $(grep -E '^(ok|failed|failed_connect|failed_timeout|failed_closed|workers_seen|max_us)=' <<<"$LG" | tr '\n' ' ')" >&3
    [ "$(lg failed)" = 0 ] && [ "$(lg ok)" -gt 0 ] || fail "during the reload: $(lg ok) answered, $(lg failed) failed (connect $(lg failed_connect), timeout $(lg failed_timeout), closed $(lg failed_closed), status $(lg failed_status)): $(grep -m 3 "loadgen:" "$out" || true)"
    [ "$i" -lt 600 ] || fail "no complete new generation of 8 workers after the reload (old $old, now $new)"
    drive 800 -g 200 -P "$new"
    [ "$(lg failed)" = 0 ] || fail "$(lg failed) failed after the reload"
    every_worker_served "$new"
    le 0.9 "$(lg jain)" || fail "new generation: Jain $(lg jain) < 0.9"
    server_stop
    library_quiet
    segment_gone
}

# shellcheck shell=bash
# shellcheck disable=SC2034  # variables set here are read by the .bats files
# Shared by tests/compat/*.bats (make check-compat): real servers from
# Debian (bench/peers/servers.sh says how to run each) under libthunder in
# its default mode, driven by tools/thunder-loadgen -H.  On top of tests/helpers.bash
# (fail, le, LOADGEN, THUNDER_LIB, listener_inode, alive).
#
#   need_server CONFIG          skip the test, with the packages to install,
#                               when the server is not here
#   server_start CONFIG WORKERS none|shim|off
#       starts it (shim: LD_PRELOAD only, the default mode; off: the same
#       with THUNDER_MODE=off) and waits until
#       WORKERS workers are up and it answers; sets PORT, DIR, SRV_WORKERS,
#       SRV_INODE; teardown stops it and removes its segment
#   server_stop                 the clean stop of the server started last;
#                               fails if it had to be killed
#   role_start ROLE CONFIG WORKERS MODE   server_start, kept as ROLE
#   measure_roles ROLE...       the servers take turns serving; WAKE_OF[ROLE]
#   wake_limit CONFIG ROLE...   LIMIT: the largest of their WAKE_OF + the
#                               server's margin (peer_margin)
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
    case $3 in
        shim) envs=("LD_PRELOAD=$THUNDER_LIB") ;;
        off) envs=("LD_PRELOAD=$THUNDER_LIB" THUNDER_MODE=off) ;;
    esac
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

# The wake-up comparison.  The floor (one worker, no shim) of a threaded
# server is not a constant: its threads hand each connection over under
# the interpreter's lock (gunicorn gthread: the main thread's epoll_wait
# and accept4, then futex wake-ups of a pool thread and GIL hand-offs;
# Puma: pselect6, then its thread pool's and the GVL's futexes), and how
# many of those hand-offs sleep depends on whether the other thread has a
# CPU at that moment, that is on the machine's load: 2.4 to 3.6 between
# runs on this 2-core machine, while it stayed within 0.3 of itself in
# one run (and a round of 300 connections now and then 0.5 above the
# others).  So the servers compared run side by side and take turns:
# ROUNDS rounds in which each serves ROUND_CONNS sequential connections
# GAP_US apart (far enough apart that each connection is served alone, at
# the same rate for every server); a server's figure is its median round
# (wake-ups per connection, less what its workers' own timers make at
# rest over the round: uvicorn's 0.1 s tick in each worker).  Even so,
# beside two busy loops the gthread workers came out 0.23 to 0.43 above
# their floor in three runs of four: gthread and Puma get a margin of 0.6
# (peer_margin).  A herd costs a wake-up per idle worker and connection
# (about 7 with 8 workers), far above either margin; see the herd check
# in 10-serve.bats.
ROUNDS=5
ROUND_CONNS=200
GAP_US=2000
declare -gA PORT_OF PIDS_OF IDLE_OF WAKE_OF SECONDS_OF

# role_start ROLE CONFIG WORKERS none|shim|off: server_start, remembered
# under ROLE for measure_roles.
role_start() {
    server_start "$2" "$3" "$4"
    PORT_OF[$1]=$PORT PIDS_OF[$1]=$SRV_WORKERS
}

# measure_roles ROLE...: IDLE_OF (wake-ups per second of each server's
# workers at rest, all over the same 2 s), then the rounds; WAKE_OF:
# wake-ups per connection less the idle ones; the loadgen output of every
# round in $BATS_TEST_TMPDIR/ROLE.lg.  Fails on any failed request.
measure_roles() {
    local -a roles=("$@")
    local -A before
    local role r i k=${#roles[@]}
    for role in "${roles[@]}"; do
        before[$role]=$(ctxt_sum "${PIDS_OF[$role]}")
        : >"$BATS_TEST_TMPDIR/$role.lg"
    done
    sleep 2
    for role in "${roles[@]}"; do
        IDLE_OF[$role]=$(awk -v a="${before[$role]}" -v b="$(ctxt_sum "${PIDS_OF[$role]}")" \
            'BEGIN { printf "%.1f", (b - a) / 2 }')
    done
    for ((r = 0; r < ROUNDS; r++)); do
        for ((i = 0; i < k; i++)); do
            role=${roles[(i + r) % k]}    # each round starts with another
            PORT=${PORT_OF[$role]}
            drive "$ROUND_CONNS" -g "$GAP_US" -P "${PIDS_OF[$role]}"
            [ "$(lg failed)" = 0 ] && [ "$(lg ok)" = "$ROUND_CONNS" ] ||
                fail "$role: $(lg ok) of $ROUND_CONNS requests answered ($(lg failed) failed)"
            echo "$LG" >>"$BATS_TEST_TMPDIR/$role.lg"
        done
    done
    for role in "${roles[@]}"; do
        read -r "WAKE_OF[$role]" "SECONDS_OF[$role]" < <(awk -F= -v idle="${IDLE_OF[$role]}" '
            $1 == "wakeups" { w = $2 } $1 == "ok" { n = $2 } $1 == "seconds" { s = $2 }
            $1 == "wakeups_per_conn" { x[++r] = (w - idle * s) / n; all += s }
            END {   # the median round
                for (i = 1; i <= r; i++) for (j = i + 1; j <= r; j++) if (x[j] < x[i]) { t = x[i]; x[i] = x[j]; x[j] = t }
                m = r % 2 ? x[(r + 1) / 2] : (x[r / 2] + x[r / 2 + 1]) / 2
                printf "%.3f %.3f\n", m, all }' "$BATS_TEST_TMPDIR/$role.lg")
        echo "# $role: ${WAKE_OF[$role]} wake-ups per connection (median of $ROUNDS rounds of $ROUND_CONNS, less ${IDLE_OF[$role]}/s at rest over ${SECONDS_OF[$role]} s)" >&3
    done
}

# Accepts per pid of ROLE summed over its rounds: "pid count" lines.
role_accepts() {
    awk '$1 ~ /^pid=/ && $2 ~ /^accepts=/ { sub(/pid=/, "", $1); sub(/accepts=/, "", $2); a[$1] += $2 }
         END { for (p in a) print p, a[p] }' "$BATS_TEST_TMPDIR/$1.lg"
}

# every_worker_served_in ROLE: each of its workers took a connection.
every_worker_served_in() {
    local pid missing=
    for pid in ${PIDS_OF[$1]//,/ }; do
        role_accepts "$1" | awk -v p="$pid" '$1 == p && $2 > 0 { found = 1 } END { exit !found }' ||
            missing+=" $pid"
    done
    [ -z "$missing" ] || fail "workers that served nothing:$missing (of ${PIDS_OF[$1]})"
}

# Jain's index of ROLE's workers over all its rounds.
role_jain() {
    local pid counts=()
    for pid in ${PIDS_OF[$1]//,/ }; do
        counts+=("$(role_accepts "$1" | awk -v p="$pid" '$1 == p { n = $2 } END { print n + 0 }')")
    done
    jain "${counts[@]}"
}

# wake_limit CONFIG ROLE...: LIMIT, the largest WAKE_OF of the roles
# given + the server's margin (peer_margin: 0.3, or 0.6 under a GIL).
wake_limit() {
    local role max=0 margin
    margin=$(peer_margin "$1")
    shift
    for role; do
        max=$(awk -v a="$max" -v b="${WAKE_OF[$role]}" 'BEGIN { print (b > a ? b : a) }')
    done
    LIMIT=$(awk -v m="$max" -v d="$margin" 'BEGIN { print m + d }')
}

# What every server must do under the library: beside its floor (one
# worker, no shim), 8 workers under the shim: every request answered,
# every worker served, wake-ups per connection at most the floor + 0.3
# (0.6 under a GIL: peer_margin), balanced, quiet, and its segment gone
# after a clean stop.  A server with its own accept lock (peer_own_lock)
# cannot be brought below what that lock costs: there the shim must change
# nothing, so a third server, 8 workers without the shim, takes its turns
# too; the wake-ups are held to the larger of the floor and that one (+ the
# margin), and the balance is checked only where the server's lock
# balances without the shim.
check_server() {
    local config=$1 jain_min=0.9 base_jain base_seen=8 jain_shim
    local -a roles=(floor)
    need_server "$config"
    role_start floor "$config" 1 none
    if peer_own_lock "$config"; then
        role_start base "$config" 8 none
        roles+=(base)
    fi
    # last: server_stop, library_quiet and segment_gone look at it
    role_start shim "$config" 8 shim
    measure_roles "${roles[@]}" shim
    wake_limit "$config" "${roles[@]}"
    if peer_own_lock "$config"; then
        base_jain=$(role_jain base)
        base_seen=$(role_accepts base | awk '$2 > 0' | wc -l)
        # unbalanced by its own lock (one worker keeps it): nothing to hold
        le 0.9 "$base_jain" || jain_min=0
        echo "# its own accept lock: without the shim ${WAKE_OF[base]} wake-ups, Jain $base_jain, $base_seen workers seen; limits $LIMIT, $jain_min" >&3
    fi
    [ "$base_seen" -lt 8 ] || every_worker_served_in shim
    le "${WAKE_OF[shim]}" "$LIMIT" ||
        fail "${WAKE_OF[shim]} wake-ups per connection > $LIMIT (floor ${WAKE_OF[floor]}${WAKE_OF[base]:+, without the shim ${WAKE_OF[base]}} + $(peer_margin "$config"))"
    jain_shim=$(role_jain shim)
    le "$jain_min" "$jain_shim" || fail "Jain $jain_shim < $jain_min"
    server_stop
    library_quiet
    segment_gone
}

# A graceful reload while 4 clients keep connecting: none fails (but one
# reset where the server itself loses one, peer_reload_may_reset), and the
# new generation of workers is balanced.
check_reload() {
    local config=$1 old new i lgpid out=$BATS_TEST_TMPDIR/reload.out resets_allowed=0
    need_server "$config"
    peer_reload_may_reset "$config" && resets_allowed=1
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
    [ "$(lg failed)" -le "$resets_allowed" ] &&
        [ "$(lg failed)" = "$(lg failed_closed)" ] && [ "$(lg ok)" -gt 0 ] || fail "during the reload: $(lg ok) answered, $(lg failed) failed (connect $(lg failed_connect), timeout $(lg failed_timeout), closed $(lg failed_closed), status $(lg failed_status)): $(grep -m 3 "loadgen:" "$out" || true)"
    [ "$(lg failed)" = 0 ] ||
        echo "# $(lg failed) reset during the reload: the server's own (peer_reload_may_reset)" >&3
    [ "$i" -lt 600 ] || fail "no complete new generation of 8 workers after the reload (old $old, now $new)"
    drive 800 -g 200 -P "$new"
    [ "$(lg failed)" = 0 ] || fail "$(lg failed) failed after the reload"
    every_worker_served "$new"
    le 0.9 "$(lg jain)" || fail "new generation: Jain $(lg jain) < 0.9"
    server_stop
    library_quiet
    segment_gone
}

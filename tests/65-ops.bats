#!/usr/bin/env bats
# What operators touch: one version number, the systemd drop-in next to a
# unit's own LD_PRELOAD, and `thunder-preload status` (tools/thunder-status)
# on examples and nginx, with and without the library.  The package itself
# is tested by tests/package/deb.bats (make deb-test).  Loopback only; every
# server is stopped by pid in teardown.

load helpers
load lib/wrapper

bats_require_minimum_version 1.5.0

setup() {
    # shell tools: the plain build covers them (as in 60-wrapper.bats)
    [ -z "${TEST_ASAN_PRELOAD:-}" ] || skip "operator tools run in the plain build only"
}

teardown() {
    wrapper_teardown
}

# ---- one version ----------------------------------------------------------------

@test "one version: VERSION, debian/changelog, thunder-preload --version, the man page" {
    local version
    version=$(cat "$ROOT/VERSION")
    [[ $version =~ ^[0-9]+\.[0-9]+\.[0-9]+$ ]] || fail "VERSION holds '$version'"
    [ "$(sed -n '1s/^libthunder (\([^)]*\)).*/\1/p' "$ROOT/debian/changelog")" = "$version" ] ||
        fail "debian/changelog: $(head -n 1 "$ROOT/debian/changelog")"
    [ "$("$WRAPPER" --version)" = "thunder-preload $version" ]
    grep -q "^\.TH THUNDER-PRELOAD 1 .* \"libthunder $version\"" "$ROOT/thunder-preload.1" ||
        fail "man page: $(grep '^\.TH' "$ROOT/thunder-preload.1")"
}

# ---- systemd: a unit that has its own LD_PRELOAD --------------------------------

# A unit thx.service in a unit directory $1 with LD_PRELOAD set in the unit
# ($2) and, optionally, in a drop-in of its own ($3).
make_unit() {
    local dir=$1
    mkdir -p "$dir/thx.service.d"
    printf '[Unit]\nDescription=thunder test\n[Service]\nExecStart=/bin/true\nEnvironment=FOO=1 "LD_PRELOAD=%s"\n' \
        "$2" >"$dir/thx.service"
    [ -z "${3:-}" ] || printf '[Service]\nEnvironment=LD_PRELOAD=%s BAR=2\n' "$3" >"$dir/thx.service.d/10-mine.conf"
}

@test "systemd: the drop-in appends to the LD_PRELOAD of the unit and of its drop-ins" {
    local dir=$BATS_TEST_TMPDIR/units
    make_unit "$dir" "/opt/a.so /opt/b.so"
    THUNDER_PRELOAD_SYSTEMD_DIR=$dir run "$WRAPPER" systemd thx
    [ "$status" -eq 0 ]
    [ "${lines[3]}" = "Environment=LD_PRELOAD=/opt/a.so:/opt/b.so:$ROOT/libthunder.so" ] || fail "$output"
    # a drop-in of the unit's own comes later and wins: its value is kept
    make_unit "$dir" "/opt/a.so" "/opt/late.so"
    THUNDER_PRELOAD_SYSTEMD_DIR=$dir run "$WRAPPER" systemd thx --install
    [ "$status" -eq 0 ]
    grep -qx "Environment=LD_PRELOAD=/opt/late.so:$ROOT/libthunder.so" "$dir/thx.service.d/thunder-preload.conf" ||
        fail "$(cat "$dir/thx.service.d/thunder-preload.conf")"
    # installing again does not append libthunder.so twice
    THUNDER_PRELOAD_SYSTEMD_DIR=$dir run "$WRAPPER" systemd thx --install --mode lock
    grep -qx "Environment=LD_PRELOAD=/opt/late.so:$ROOT/libthunder.so" "$dir/thx.service.d/thunder-preload.conf"
    grep -qx "Environment=THUNDER_MODE=lock" "$dir/thx.service.d/thunder-preload.conf"
    # an empty Environment= resets what came before it, as in systemd
    printf '[Service]\nEnvironment=\n' >"$dir/thx.service.d/20-reset.conf"
    THUNDER_PRELOAD_SYSTEMD_DIR=$dir run "$WRAPPER" systemd thx
    [ "${lines[2]}" = "Environment=LD_PRELOAD=$ROOT/libthunder.so" ] || fail "$output"
}

@test "systemd-analyze verify accepts the appended drop-in (and reports a broken one)" {
    command -v systemd-analyze >/dev/null || skip "systemd-analyze not installed (apt-get install systemd)"
    local dir=$BATS_TEST_TMPDIR/units
    make_unit "$dir" "/opt/a.so /opt/b.so" "/opt/c.so"
    THUNDER_PRELOAD_SYSTEMD_DIR=$dir "$WRAPPER" systemd thx --install --mode lock >/dev/null
    cat "$dir/thx.service.d/thunder-preload.conf" >&2
    SYSTEMD_UNIT_PATH=$dir: run --separate-stderr timeout 30 systemd-analyze verify "$dir/thx.service"
    # shellcheck disable=SC2154  # stderr is set by run --separate-stderr
    [ "$status" -eq 0 ] || fail "status $status: $stderr"
    [[ $stderr != *"$dir/"* ]] || fail "$stderr"
    # the check can fail: an unquoted space in the value is reported
    printf '[Service]\nEnvironment=LD_PRELOAD=/opt/a.so /opt/b.so\n' >"$dir/thx.service.d/thunder-preload.conf"
    SYSTEMD_UNIT_PATH=$dir: run --separate-stderr timeout 30 systemd-analyze verify "$dir/thx.service"
    [[ $stderr == *"thunder-preload.conf:2: Invalid environment assignment"* ]] || fail "not reported: $stderr"
}

@test "systemd --dry-run prints the drop-in and where it would go, and writes nothing" {
    local dir=$BATS_TEST_TMPDIR/units
    make_unit "$dir" "/opt/a.so"
    THUNDER_PRELOAD_SYSTEMD_DIR=$dir run --separate-stderr "$WRAPPER" systemd thx --install --dry-run --mode exclusive
    [ "$status" -eq 0 ]
    [[ $stderr == *"would write $dir/thx.service.d/thunder-preload.conf"* ]] || fail "$stderr"
    [[ $output == *"Environment=LD_PRELOAD=/opt/a.so:$ROOT/libthunder.so"* ]] || fail "$output"
    [[ $output == *"Environment=THUNDER_MODE=exclusive"* ]]
    [ ! -e "$dir/thx.service.d/thunder-preload.conf" ]
    THUNDER_PRELOAD_SYSTEMD_DIR=$dir "$WRAPPER" systemd thx --install >/dev/null
    THUNDER_PRELOAD_SYSTEMD_DIR=$dir run "$WRAPPER" systemd thx --remove --dry-run
    [ "$status" -eq 0 ]
    [[ $output == *"would remove $dir/thx.service.d/thunder-preload.conf"* ]]
    [ -e "$dir/thx.service.d/thunder-preload.conf" ]
}

# ---- status ------------------------------------------------------------------------

@test "status: an example under the wrapper is loaded in master and workers, with its mode and strategy" {
    start_wrapped ex_poll 3 --mode lock
    socat_conns 6
    all_answered 6
    run "$WRAPPER" status "$MASTER"
    echo "$output" >&2
    [ "$status" -eq 0 ]
    [[ $output == *"libthunder is loaded in 4 of 4 process(es)"* ]]
    [ "$(grep -c "libthunder loaded from $ROOT/libthunder.so" <<<"$output")" -eq 4 ]
    [ "$(grep -c 'settings: THUNDER_MODE=lock ' <<<"$output")" -eq 4 ]
    [ "$(grep -c "listener 127.0.0.1:$PORT: strategy lock" <<<"$output")" -eq 3 ]
    # found from the port: the same four processes, those that hold the listener
    run "$WRAPPER" status "$PORT"
    [ "$status" -eq 0 ]
    [[ $output == "port $PORT: 4 process(es)"* ]] || fail "$output"
}

@test "status: the same example without the library: not loaded, exit 1, LD_PRELOAD not set" {
    start_example ex_poll 2 LD_PRELOAD=
    run "$WRAPPER" status --port "$PORT"
    echo "$output" >&2
    [ "$status" -eq 1 ]
    [[ $output == *"libthunder is loaded in 0 of 3 process(es)"* ]]
    [ "$(grep -c 'reason: LD_PRELOAD is not set' <<<"$output")" -eq 3 ]
}

@test "status: the environment scrubbed between the wrapper and the server (env -i)" {
    EX_WRAP="$WRAPPER -- env -i" EX_WRAP_PRELOADS=1 start_example ex_poll 2
    run "$WRAPPER" status "$MASTER"
    echo "$output" >&2
    [ "$status" -eq 1 ]
    [[ $output == *"pid $MASTER ex_poll (master): libthunder NOT loaded"* ]]
    [ "$(grep -c 'reason: environment scrubbed' <<<"$output")" -eq 3 ]
}

@test "status: a master that execs its server without LD_PRELOAD; a static binary" {
    local static=$BATS_TEST_TMPDIR/ex_poll_static launcher=$BATS_TEST_TMPDIR/launcher job
    # a launcher (bash, with the library) starts the server without LD_PRELOAD
    printf '#!/bin/bash\nenv -u LD_PRELOAD "$@" &\nwait\n' >"$launcher"
    chmod +x "$launcher"
    EX_WRAP="$WRAPPER -- $launcher" EX_WRAP_PRELOADS=1 start_example ex_poll 1
    job=${STARTED[0]%%:*}
    run "$WRAPPER" status --pid "$job"
    echo "$output" >&2
    [ "$status" -eq 1 ]
    [[ $output == *"pid $job launcher (master): libthunder loaded"* ]]
    [[ $output == *"pid $MASTER ex_poll (child of $job): libthunder NOT loaded"$'\n'"    reason: LD_PRELOAD did not reach this exec: its parent $job runs with libthunder"* ]]
    stop_example
    # static: no ld.so reads LD_PRELOAD
    ${CC:-cc} -static -O2 -o "$static" "$ROOT/examples/ex_poll.c" 2>/dev/null ||
        skip "no static libc to link a static example"
    EXAMPLES=$BATS_TEST_TMPDIR start_example ex_poll_static 1
    run "$WRAPPER" status "$MASTER"
    echo "$output" >&2
    [ "$status" -eq 1 ]
    [ "$(grep -c 'reason: static binary' <<<"$output")" -eq 2 ]
}

@test "status: a setuid program run by another user (secure-execution mode)" {
    [ "$(id -u)" -eq 0 ] || skip "needs root to run a setuid-root copy as another user"
    command -v setpriv >/dev/null || skip "setpriv (util-linux) not installed"
    local dir
    # a directory the other user can traverse (the bats tmpdirs are 0700)
    dir=$(mktemp -d /tmp/thunder-setuid.XXXXXX)
    FAKES+=("$dir/ex_poll")
    chmod 0755 "$dir"
    cp "$ROOT/examples/ex_poll" "$dir/ex_poll"
    chmod 4755 "$dir/ex_poll"
    EX_WRAP="setpriv --reuid=65534 --regid=65534 --clear-groups" EXAMPLES=$dir start_example ex_poll 1
    run "$WRAPPER" status "$MASTER"
    echo "$output" >&2
    rm -f "$dir/ex_poll" && rmdir "$dir"
    [ "$status" -eq 1 ]
    [ "$(grep -c 'reason: setuid/setgid' <<<"$output")" -eq 2 ]
}

@test "status: usage errors and nothing found exit 2" {
    run -2 "$WRAPPER" status
    run -2 "$WRAPPER" status --pid 0
    run -2 "$WRAPPER" status --pid abc
    run -2 "$WRAPPER" status 1 2
    run -2 "$WRAPPER" status --bogus
    run -2 "$WRAPPER" status --port "$(free_port)"
    [[ $output == *"nothing listens on TCP port"* ]]
    run -2 "$WRAPPER" status 'no/such/unit'
}

# ---- status on nginx -------------------------------------------------------------

# nginx (Debian's) on 127.0.0.1:PORT with 2 workers, not daemonized, its
# files in the test's tmpdir, started through "$@" (a wrapper command);
# NGINX_EVENTS: more directives for its events block.
# Sets PORT, MASTER, WORKERS; registered for teardown like the examples.
start_nginx() {
    local nginx dir=$BATS_TEST_TMPDIR/nginx job i
    nginx=$(type -P nginx || echo /usr/sbin/nginx)
    [ -x "$nginx" ] || skip "nginx not installed (apt-get install nginx-light)"
    mkdir -p "$dir"
    PORT=$(free_port)
    {
        echo "daemon off; master_process on; worker_processes 2;"
        [ "$(id -u)" -ne 0 ] || echo "user root;"
        echo "pid $dir/nginx.pid; error_log $dir/error.log;"
        echo "events { worker_connections 64; ${NGINX_EVENTS:-} }"
        echo "http { access_log off;"
        for t in client_body proxy fastcgi uwsgi scgi; do echo "  ${t}_temp_path $dir/$t;"; done
        echo "  server { listen 127.0.0.1:$PORT; location / { return 200 \"ok\\n\"; } } }"
    } >"$dir/nginx.conf"
    "$@" "$nginx" -e "$dir/error.log" -p "$dir" -c "$dir/nginx.conf" >"$dir/out" 2>&1 3>&- </dev/null &
    job=$!
    STARTED+=("$job:$job::")
    for ((i = 0; i < 100; i++)); do
        LISTEN_INODE=$(listener_inode "$PORT")
        [ -n "$LISTEN_INODE" ] && [ "$(children_count "$job")" -ge 2 ] && break
        alive "$job" || break
        sleep 0.1
    done
    MASTER=$job
    WORKERS=$(cat /proc/"$job"/task/*/children 2>/dev/null | tr ' ' ',' | sed 's/,*$//')
    STARTED[${#STARTED[@]} - 1]="$job:$MASTER:$WORKERS:$LISTEN_INODE"
    [ -n "$LISTEN_INODE" ] || { cat "$dir/out" "$dir/error.log" >&2; fail "nginx did not listen on $PORT"; }
}

children_count() {
    cat /proc/"$1"/task/*/children 2>/dev/null | wc -w
}

@test "status: nginx under the wrapper: loaded in master and workers though their environment no longer shows it" {
    start_nginx "$WRAPPER" --mode exclusive --
    run socat -T5 - "TCP:127.0.0.1:$PORT" <<<$'GET / HTTP/1.0\r\n\r'
    [[ $output == *ok* ]] || fail "nginx answered '$output'"
    run "$WRAPPER" status "$PORT"
    echo "$output" >&2
    [ "$status" -eq 0 ]
    [[ $output == *"libthunder is loaded in 3 of 3 process(es)"* ]]
    [ "$(grep -c 'settings: unknown (the process wrote over its environment' <<<"$output")" -eq 3 ]
    # a worker that took the connection re-added its own EPOLLEXCLUSIVE entry
    # at once (nginx does at the first of every 16 accepts): its waits are
    # passed through since ("pass"); the other still waits as it began
    [ "$(grep -cE "listener 127.0.0.1:$PORT: strategy (exclusive|pass)," <<<"$output")" -eq 2 ]
}

# nginx with accept_mutex on wakes about 1.5 times per connection of its
# own, with or without the library (a second wait for the request that
# has not arrived yet: 1.44-1.52 in both, Dec 3): the herd test compares
# the two in the same run, and counts the listener's own wake-ups.
@test "nginx accept_mutex on under the wrapper: the mutex holder waits on its listener alone and its waits pass through (\"alone\"), no wake-up added, no rotation" {
    local n=300 without
    NGINX_EVENTS='accept_mutex on;' start_nginx env
    run_loadgen "$n" -H -g 200
    [ "$(lg ok)" = "$n" ] || fail "without the library: $(lg ok) of $n answered"
    without=$(lg wakeups_per_conn)
    helpers_teardown
    NGINX_EVENTS='accept_mutex on;' start_nginx "$WRAPPER" --
    run_loadgen "$n" -H -g 200
    [ "$(lg ok)" = "$n" ] || fail "$(lg ok) of $n answered"
    le "$(lg wakeups_per_conn)" "$(awk -v w="$without" 'BEGIN { print w + 0.3 }')" ||
        fail "herd: $(lg wakeups_per_conn) wake-ups per connection, $without without the library"
    listener_stats | sed "s/^/# /" >&3
    # the listener's own: at most one wake-up per accept, and a few spare
    [ "$(stat_sum wakeups)" -le $(($(stat_sum accepts) + n / 10)) ] ||
        fail "$(stat_sum wakeups) wake-ups on the listener for $(stat_sum accepts) accepts"
    # only the holder of nginx's mutex has the listener in its instance:
    # once it has accepted, nobody else waits on the listener or takes
    # from it, and its next look passes its waits through
    [ "$(listener_stats | grep -c 'strategy=alone')" -ge 1 ] || fail "no worker waited alone"
    [ "$(stat_sum rotations)" -eq 0 ] || fail "$(stat_sum rotations) rotations"
    [ "$(stat_sum accepts)" -ge "$n" ] || fail "$(stat_sum accepts) accepts counted"
}

@test "status: nginx whose environment was scrubbed before exec (env -i): not loaded, with the reason" {
    start_nginx "$WRAPPER" -- env -i
    run "$WRAPPER" status "$MASTER"
    echo "$output" >&2
    [ "$status" -eq 1 ]
    [[ $output == *"libthunder is loaded in 0 of 3 process(es)"* ]]
    [ "$(grep -c 'reason: environment scrubbed' <<<"$output")" -eq 3 ]
}

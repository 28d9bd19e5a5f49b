#!/usr/bin/env bats
# thunder-preload (run, stat, gc, systemd), thunder-stat and the man
# page.  Loopback only; every process a test starts is stopped by pid in
# teardown, with the segments of its listeners and the files it made up.

load helpers
load lib/wrapper

bats_require_minimum_version 1.5.0

setup_file() {
    # a harmless library to stand for "what LD_PRELOAD already held"
    echo 'int thunder_test_placeholder;' |
        ${CC:-cc} -shared -fPIC -x c - -o "$BATS_FILE_TMPDIR/libempty.so" 2>/dev/null || true
}

setup() {
    # The wrapper puts only libthunder.so in LD_PRELOAD; an ASan-built shim
    # needs the ASan runtime before it.  The wrapper is shell (shellcheck
    # and the plain build cover it); the sanitizer pass is for the C code.
    [ -z "${TEST_ASAN_PRELOAD:-}" ] || skip "wrapper suite runs in the plain build only"
}

teardown() {
    wrapper_teardown
}

# ---- run: options and exit codes ------------------------------------------------

@test "--version: thunder-preload and thunder-stat print the one VERSION; --help" {
    local version
    version=$(cat "$ROOT/VERSION")
    [[ $version =~ ^[0-9]+\.[0-9]+\.[0-9]+$ ]] || fail "VERSION holds '$version'"
    run "$WRAPPER" --version
    [ "$status" -eq 0 ]
    [ "$output" = "thunder-preload $version" ] || fail "$output"
    run "$THUNDER_STAT" --version
    [ "$status" -eq 0 ]
    [ "$output" = "thunder-stat $version" ] || fail "$output"
    run "$WRAPPER" --help
    [ "$status" -eq 0 ]
    [[ $output == *"--mode M"* ]] && [[ $output == *systemd* ]]
}

@test "an unknown option is a usage error: exit 2, a usage line on stderr, nothing run" {
    run --separate-stderr "$WRAPPER" --bogus -- touch "$BATS_TEST_TMPDIR/ran"
    [ "$status" -eq 2 ]
    [ -z "$output" ]
    # shellcheck disable=SC2154  # set by run --separate-stderr
    [[ $stderr == *"usage: thunder-preload "* ]]
    [ ! -e "$BATS_TEST_TMPDIR/ran" ]
}

@test "bad --mode, --balance, --ports, --log values and a missing value are usage errors (2)" {
    local args
    for args in "--mode fast" "--mode" "--balance random" "--ports 0" "--ports 80,,81" \
        "--ports 9000-80" "--ports 70000" "--log=verbose"; do
        # shellcheck disable=SC2086 # word splitting of the option list is wanted
        run --separate-stderr "$WRAPPER" $args -- true
        [ "$status" -eq 2 ] || fail "'$args': status $status"
        [[ $stderr == *"usage: thunder-preload "* ]] || fail "'$args': no usage line: $stderr"
    done
}

@test "no command at all is a usage error (2)" {
    run --separate-stderr "$WRAPPER" --mode lock --
    [ "$status" -eq 2 ]
    [[ $stderr == *"no command given"* ]]
}

@test "a command that does not exist exits 127, like env(1)" {
    run -127 "$WRAPPER" -- no-such-command-thunder-test
    [ "$status" -eq 127 ]
    [[ $output == *"no-such-command-thunder-test: command not found"* ]]
    run -127 "$WRAPPER" "$BATS_TEST_TMPDIR/nothing/here"
    [ "$status" -eq 127 ]
}

@test "a command that cannot be executed exits 126, like env(1)" {
    local f=$BATS_TEST_TMPDIR/not-executable
    echo 'echo hi' >"$f"
    chmod 0644 "$f"
    run "$WRAPPER" -- "$f"
    [ "$status" -eq 126 ]
    [[ $output == *"not executable"* ]]
    run "$WRAPPER" -- "$BATS_TEST_TMPDIR"
    [ "$status" -eq 126 ]
}

@test "without libthunder.so beside it: exit 1 with one line that says so" {
    mkdir -p "$BATS_TEST_TMPDIR/bin"
    cp "$WRAPPER" "$BATS_TEST_TMPDIR/bin/thunder-preload"
    run "$BATS_TEST_TMPDIR/bin/thunder-preload" -- true
    [ "$status" -eq 1 ]
    [ "${#lines[@]}" -eq 1 ]
    [[ $output == "thunder-preload: libthunder.so not found"* ]]
    run "$BATS_TEST_TMPDIR/bin/thunder-preload" systemd web
    [ "$status" -eq 1 ]
}

@test "run appends to an existing LD_PRELOAD and exports the options" {
    local empty=$BATS_FILE_TMPDIR/libempty.so
    [ -f "$empty" ] || skip "no C compiler for the placeholder library"
    LD_PRELOAD=$empty run --separate-stderr "$WRAPPER" --mode lock --balance lifo \
        --ports 8080,9000-9010 --log -- \
        sh -c 'echo "$LD_PRELOAD|$THUNDER_MODE|$THUNDER_BALANCE|$THUNDER_PORTS|$THUNDER_LOG"'
    [ "$status" -eq 0 ]
    [ "$output" = "$empty:$ROOT/libthunder.so|lock|lifo|8080,9000-9010|info" ]
}

@test "run: the library is really loaded, never twice, and the exit status passes through" {
    run --separate-stderr "$WRAPPER" run --log debug -- sh -c 'echo "$LD_PRELOAD"; exit 7'
    [ "$status" -eq 7 ]
    [ "$output" = "$ROOT/libthunder.so" ]
    [[ $stderr == *"libthunder: ["*"] debug: loaded: mode auto"* ]] || fail "no load line: $stderr"
    # already preloaded (a nested wrapper): still one copy
    LD_PRELOAD=$ROOT/libthunder.so run "$WRAPPER" -- sh -c 'echo "$LD_PRELOAD"'
    [ "$output" = "$ROOT/libthunder.so" ]
    # a command named like a subcommand runs after --
    run -127 "$WRAPPER" -- gc
    [ "$status" -eq 127 ]
    [[ $output == *"gc: command not found"* ]]
}

# ---- stat --------------------------------------------------------------------------------

@test "stat --kv: a live lock-mode ex_poll shows its 4 workers and accepts that add up to 100" {
    local line pid sum=0 n=0 pids=
    start_wrapped ex_poll 4 --mode lock
    run_loadgen 100
    [ "$(lg ok)" = 100 ]
    run --separate-stderr "$WRAPPER" stat --kv "$PORT"
    [ "$status" -eq 0 ]
    echo "$output" >&2
    while IFS= read -r line; do
        case $line in
            "port=$PORT inode=$LISTEN_INODE pid="*)
                pid=$(kv_field "$line" pid)
                [[ ,$WORKERS, == *,$pid,* ]] || fail "pid $pid is not a worker ($WORKERS)"
                [ "$(kv_field "$line" alive)" = 1 ] || fail "worker $pid not alive"
                [ "$(kv_field "$line" strategy)" = lock ] || fail "strategy of $pid: $line"
                sum=$((sum + $(kv_field "$line" accepts)))
                n=$((n + 1))
                pids=$pids,$pid ;;
            "listener port=$PORT "*)
                [ "$(kv_field "$line" processes)" = 4 ] || fail "listener: $line"
                [ "$(kv_field "$line" accepts)" = 100 ] || fail "listener: $line"
                [ "$(kv_field "$line" address)" = "127.0.0.1:$PORT" ] || fail "address: $line"
                awk -v j="$(kv_field "$line" jain)" 'BEGIN { exit !(j > 0 && j <= 1) }' ;;
        esac
    done <<<"$output"
    [ "$n" -eq 4 ] || fail "$n process lines for 4 workers"
    [ "$sum" -eq 100 ] || fail "accepts add up to $sum, not 100"
    for pid in ${WORKERS//,/ }; do
        [[ $pids, == *,$pid,* ]] || fail "worker $pid missing"
    done
}

@test "stat: table, JSON, the master's pid as filter, --watch until SIGINT, nothing found" {
    local pid
    start_wrapped ex_poll 3 --mode lock
    run_loadgen 30
    run "$THUNDER_STAT" "$PORT"
    [ "$status" -eq 0 ]
    [[ ${lines[0]} == "127.0.0.1:$PORT  inode $LISTEN_INODE  "* ]] || fail "header: ${lines[0]}"
    for pid in ${WORKERS//,/ }; do
        grep -Eq "^ +$pid +(yes|no) +[a-z?]+ +[0-9]+ " <<<"$output" || fail "no row for $pid in: $output"
    done
    run --separate-stderr "$THUNDER_STAT" --json --port "$PORT"
    [ "$status" -eq 0 ]
    if command -v python3 >/dev/null; then
        python3 -c 'import json, sys
d = json.load(sys.stdin)
l = d["listeners"][0]
assert l["port"] == int(sys.argv[1]) and l["nprocesses"] == 3 and l["accepts"] == 30, l
assert sorted(p["pid"] for p in l["processes"]) == sorted(map(int, sys.argv[2].split(","))), l' \
            "$PORT" "$WORKERS" <<<"$output"
    fi
    # the master never waits on the listener, yet its pid finds its workers
    run "$THUNDER_STAT" --kv "$MASTER"
    [[ $output == *"listener port=$PORT inode=$LISTEN_INODE processes=3 "* ]] || fail "$output"
    run "$THUNDER_STAT" --kv --pid "$MASTER" --port "$PORT"
    [[ $output == *"listener port=$PORT "* ]]
    # --watch: several snapshots, then SIGINT ends it with status 0
    run timeout --preserve-status -s INT 1 "$THUNDER_STAT" --watch 0.2 --kv --port "$PORT"
    [ "$status" -eq 0 ]
    [ "$(grep -c "^listener port=$PORT " <<<"$output")" -ge 2 ] || fail "$output"
    # no segment on port 1: a message, exit 0
    run "$THUNDER_STAT" --port 1
    [ "$status" -eq 0 ]
    [[ $output == "no libthunder segments for uid $(id -u) matching port 1" ]]
}

@test "stat: usage errors exit 2" {
    local args
    for args in "--watch 0" "--watch x" "--json --kv" "abc" "80 81" "--gc 80" "--port 0" "--frob"; do
        # shellcheck disable=SC2086
        run --separate-stderr "$THUNDER_STAT" $args
        [ "$status" -eq 2 ] || fail "'$args': status $status"
        [[ $stderr == *"usage: thunder-stat"* ]] || fail "'$args': $stderr"
    done
}

@test "stat skips files that are not valid segments, names them, and never crashes" {
    local base size short random
    base=$((900000000000 + $$ * 10))
    start_wrapped ex_poll 1
    run_loadgen 1
    size=$(stat -c %s "$(segment_of_listener)")
    short=$(segment_path "$base") random=$(segment_path $((base + 1)))
    fake_segment "$short" 100
    fake_segment "$random" "$size" /dev/urandom
    run --separate-stderr "$THUNDER_STAT" --kv
    [ "$status" -eq 0 ]
    [[ $stderr == *"skipping $short: wrong size"* ]] || fail "$stderr"
    [[ $stderr == *"skipping $random: "* ]] || fail "$stderr"
    [[ $output != *"inode=$base "* ]]
}

# ---- gc ----------------------------------------------------------------------------------

@test "gc removes the segment of a server killed with SIGKILL and keeps a live one" {
    local live_seg dead_seg removed=0 live_port live_workers
    start_wrapped ex_poll 2 --mode lock
    live_seg=$(segment_of_listener)
    live_port=$PORT live_workers=$WORKERS
    run_loadgen 10
    [ -f "$live_seg" ]
    # Another server's start sweeps dead segments too (the shim does it when
    # it creates one): when that beats us to it, make another dead one.
    for _ in 1 2 3; do
        start_wrapped ex_poll 2 --mode lock
        dead_seg=$(segment_of_listener)
        run_loadgen 10
        kill9_example
        [ -f "$dead_seg" ] || fail "no segment left by the killed server"
        run "$WRAPPER" gc
        [ "$status" -eq 0 ]
        echo "$output" >&2
        if [[ $output == *"removed $dead_seg: port "*"every process is gone"* ]]; then
            removed=1
            break
        fi
        [ ! -f "$dead_seg" ] || fail "gc kept the dead segment $dead_seg: $output"
    done
    [ "$removed" = 1 ] || fail "the dead segment was swept by someone else three times"
    [ ! -e "$dead_seg" ]
    [ -f "$live_seg" ] || fail "gc removed the live segment $live_seg"
    [[ $output == *"gc: "*" removed, "*" in use"* ]]
    # the live server still works with its lock
    PORT=$live_port WORKERS=$live_workers
    run_loadgen 10
    [ "$(lg ok)" = 10 ]
}

@test "gc removes a file named like a segment that is not one, and says why" {
    local path
    path=$(segment_path $((910000000000 + $$)))
    fake_segment "$path" 64
    run "$THUNDER_STAT" --gc
    [ "$status" -eq 0 ]
    [[ $output == *"removed $path: wrong size, not a libthunder segment"* ]] || fail "$output"
    [ ! -e "$path" ]
    run --separate-stderr "$WRAPPER" gc --now
    [ "$status" -eq 2 ]
}

# ---- systemd ---------------------------------------------------------------------------------

@test "systemd prints the drop-in in its exact format" {
    run "$WRAPPER" systemd myapp
    [ "$status" -eq 0 ]
    [ "$output" = "# libthunder for myapp.service, written by thunder-preload 0.1.0; remove with: thunder-preload systemd myapp.service --remove
[Service]
Environment=LD_PRELOAD=$ROOT/libthunder.so
Environment=THUNDER_MODE=auto" ]
    run "$WRAPPER" systemd web@2.service --mode lock --balance lifo --ports 8080 --log debug
    [ "$status" -eq 0 ]
    [ "${lines[1]}" = "[Service]" ]
    [ "${lines[2]}" = "Environment=LD_PRELOAD=$ROOT/libthunder.so" ]
    [ "${lines[3]}" = "Environment=THUNDER_MODE=lock" ]
    [ "${lines[4]}" = "Environment=THUNDER_BALANCE=lifo" ]
    [ "${lines[5]}" = "Environment=THUNDER_PORTS=8080" ]
    [ "${lines[6]}" = "Environment=THUNDER_LOG=debug" ]
    [ "${#lines[@]}" -eq 7 ]
}

@test "systemd --install writes the drop-in (0644), --remove deletes it and its empty directory" {
    local root=$BATS_TEST_TMPDIR/systemd expected
    expected=$("$WRAPPER" systemd web --mode exclusive)
    THUNDER_PRELOAD_SYSTEMD_DIR=$root run "$WRAPPER" systemd web --mode exclusive --install
    [ "$status" -eq 0 ]
    [ "$(cat "$root/web.service.d/thunder-preload.conf")" = "$expected" ]
    [ "$(stat -c %a "$root/web.service.d/thunder-preload.conf")" = 644 ]
    [[ $output == *"not running systemctl daemon-reload"* ]]
    THUNDER_PRELOAD_SYSTEMD_DIR=$root run "$WRAPPER" systemd web.service --remove
    [ "$status" -eq 0 ]
    [ ! -e "$root/web.service.d" ]
    THUNDER_PRELOAD_SYSTEMD_DIR=$root run "$WRAPPER" systemd web --remove
    [ "$status" -eq 0 ]
    [[ $output == *"nothing to remove"* ]]
}

@test "systemd: bad unit names and conflicting options are usage errors (2)" {
    local args
    for args in "" "../etc/passwd" "a/b" "web.socket" "web --install --remove" "web --mode x" "a b"; do
        # shellcheck disable=SC2086
        run --separate-stderr "$WRAPPER" systemd $args
        [ "$status" -eq 2 ] || fail "'$args': status $status"
        [[ $stderr == *"usage: thunder-preload systemd"* ]] || fail "'$args': $stderr"
    done
}

@test "systemd-analyze verify accepts a unit with the drop-in" {
    command -v systemd-analyze >/dev/null || skip "systemd-analyze not installed"
    local dir=$BATS_TEST_TMPDIR/units
    mkdir -p "$dir"
    printf '[Unit]\nDescription=thunder test\n[Service]\nExecStart=/bin/true\n' >"$dir/thx.service"
    THUNDER_PRELOAD_SYSTEMD_DIR=$dir "$WRAPPER" systemd thx --install >/dev/null
    SYSTEMD_UNIT_PATH=$dir: run --separate-stderr timeout 30 systemd-analyze verify "$dir/thx.service"
    [ "$status" -eq 0 ] || fail "status $status: $stderr"
    [[ $stderr != *thunder-preload.conf* ]] || fail "$stderr"
}

# ---- lint ----------------------------------------------------------------------------------------

@test "the man page lints clean and renders" {
    command -v mandoc >/dev/null || skip "mandoc not installed"
    run mandoc -Tlint -Wwarning "$ROOT/thunder-preload.1"
    [ "$status" -eq 0 ]
    [ -z "$output" ] || fail "$output"
    if command -v man >/dev/null; then
        run env MANWIDTH=80 man -l "$ROOT/thunder-preload.1"
        [ "$status" -eq 0 ]
        [[ $output == *THUNDER_MODE* ]] && [[ $output == *"EXIT STATUS"* ]]
    fi
}

@test "thunder-preload is shellcheck-clean" {
    command -v shellcheck >/dev/null || skip "shellcheck not installed"
    run shellcheck "$WRAPPER"
    [ "$status" -eq 0 ] || fail "$output"
}

@test "stat without thunder-stat anywhere: exit 1 with a message" {
    mkdir -p "$BATS_TEST_TMPDIR/bin"
    cp "$WRAPPER" "$BATS_TEST_TMPDIR/bin/thunder-preload"
    PATH=/usr/bin:/bin type -P thunder-stat >/dev/null && skip "a thunder-stat is installed in /usr/bin"
    PATH=/usr/bin:/bin run "$BATS_TEST_TMPDIR/bin/thunder-preload" stat
    [ "$status" -eq 1 ]
    [[ $output == *"thunder-stat not found"* ]]
}

@test "make install (DESTDIR, PREFIX): the installed wrapper uses the installed library; uninstall removes all" {
    local dest=$BATS_TEST_TMPDIR/root prefix=/opt/thunder f
    run make -C "$ROOT" -s install DESTDIR="$dest" PREFIX="$prefix"
    [ "$status" -eq 0 ]
    for f in lib/libthunder.so bin/thunder-preload bin/thunder-stat bin/thunder-loadgen \
             bin/thunder-ab lib/libthunder/server.bash lib/libthunder/ab-report.bash \
             share/man/man1/thunder-preload.1; do
        [ -e "$dest$prefix/$f" ] || fail "make install did not install $f"
    done
    run "$dest$prefix/bin/thunder-preload" -- sh -c 'echo "$LD_PRELOAD"'
    [ "$status" -eq 0 ]
    [[ $output == *"$dest$prefix/lib/libthunder.so" ]] || fail "installed wrapper preloads '$output'"
    run "$dest$prefix/bin/thunder-preload" --version
    [ "$output" = "thunder-preload $(cat "$ROOT/VERSION")" ] || fail "installed: $output"
    # the installed ab finds thunder-ab and its libraries
    run "$dest$prefix/bin/thunder-preload" ab --help
    [ "$status" -eq 0 ]
    [[ $output == *"--http [PATH]"* ]] || fail "installed ab --help: $output"
    run make -C "$ROOT" -s uninstall DESTDIR="$dest" PREFIX="$prefix"
    [ "$status" -eq 0 ]
    [ -z "$(find "$dest" -type f)" ] || fail "left after uninstall: $(find "$dest" -type f)"
}

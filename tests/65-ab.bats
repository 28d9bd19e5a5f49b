#!/usr/bin/env bats
# thunder-ab (also `thunder-preload ab`): the same server without the
# library, under observe and in a mode, against an example (line mode and
# --connect-only, accepts counted from the segment), gunicorn (--http, a
# herd) and nginx (--http, no herd: EPOLLEXCLUSIVE), each skipped with the
# reason when not installed.  Small runs: they assert the shape of the
# result and the herd with wide margins, never a speed.

load helpers

bats_require_minimum_version 1.5.0

AB=$ROOT/tools/thunder-ab
WRAPPER=$ROOT/shim/thunder-preload
BG_PIDS=()

setup() {
    # thunder-ab runs its servers through thunder-preload, which puts only
    # libthunder.so in LD_PRELOAD; an ASan-built library needs the ASan
    # runtime before it (as in 60-wrapper.bats: the plain build covers it)
    [ -z "${TEST_ASAN_PRELOAD:-}" ] || skip "thunder-ab runs in the plain build only"
}

teardown() {
    local pid
    for pid in "${BG_PIDS[@]}"; do
        kill -TERM "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
    BG_PIDS=()
    helpers_teardown
}

# A metric's value for a side (column label) in thunder-ab's table.
ab_cell() {
    local metric=$1 side=$2
    awk -v m="$metric" -v s="$side" '
        /^metric / { n = split($0, h, /  +/); for (i = 2; i <= n; i++) col[h[i]] = i; next }
        index($0, m) == 1 && (s in col) { split($0, v, /  +/); print v[col[s]]; exit }' <<<"$output"
}

# The table and verdict every run prints, then no temporary files left.
ab_ran() {
    echo "$output" >&2
    echo "${stderr:-}" >&2
    grep -Eq '^metric +no library +observe +auto' <<<"$output" || fail "no table"
    grep -q '^auto: herd: ' <<<"$output" || fail "no verdict"
    grep -q '^observe costs, against no library: ' <<<"$output" || fail "no observe cost"
    [ -z "$(compgen -G "$BATS_TEST_TMPDIR/thunder-ab.*")" ] || fail "temporary directory left"
}

@test "ab on ex_poll (line mode): the herd goes, a plot, a Markdown report, run through thunder-preload ab" {
    TMPDIR=$BATS_TEST_TMPDIR run --separate-stderr timeout 300 "$WRAPPER" ab --workers 4 --conns 100 \
        --plot "$BATS_TEST_TMPDIR/ab.png" --report "$BATS_TEST_TMPDIR/ab.md" \
        -- "$EXAMPLES/ex_poll" -w '{workers}' -p '{port}'
    [ "$status" -eq 0 ]
    ab_ran
    [ "$(ab_cell 'accepts from' auto)" = replies ]
    [ "$(ab_cell failed auto)" = 0 ]
    # 4 poll() waiters: about 4 wake-ups without, 1 with (wide margins)
    le "$(ab_cell wake-ups/conn auto)" 2 || fail "auto: $(ab_cell wake-ups/conn auto) wake-ups per connection"
    le "$(ab_cell wake-ups/conn auto)" "$(ab_cell wake-ups/conn 'no library')"
    grep -q '^## Results' "$BATS_TEST_TMPDIR/ab.md"
    grep -q '^| command | `thunder-ab --workers 4' "$BATS_TEST_TMPDIR/ab.md"
    if command -v gnuplot >/dev/null; then
        [ "$(head -c 4 "$BATS_TEST_TMPDIR/ab.png" | od -An -tx1 | tr -d ' ')" = 89504e47 ]
        grep -q '](ab.png)' "$BATS_TEST_TMPDIR/ab.md"
    else
        [[ $stderr == *"gnuplot not installed; no plot"* ]]
    fi
}

@test "ab --connect-only on ex_epoll: accepts per worker from the segment, balanced with the library" {
    TMPDIR=$BATS_TEST_TMPDIR run --separate-stderr timeout 300 "$AB" --workers 4 --conns 100 --connect-only \
        -- "$EXAMPLES/ex_epoll" -w '{workers}' -p '{port}'
    [ "$status" -eq 0 ]
    ab_ran
    [ "$(ab_cell 'accepts from' 'no library')" = - ]
    [ "$(ab_cell 'accepts from' observe)" = segment ]
    [ "$(ab_cell 'accepts from' auto)" = segment ]
    le 0.8 "$(ab_cell 'Jain (accepts)' auto)" || fail "auto: Jain $(ab_cell 'Jain (accepts)' auto)"
}

@test "ab --burst: the rounds' figures" {
    TMPDIR=$BATS_TEST_TMPDIR run --separate-stderr timeout 300 "$AB" --workers 4 --burst 8 --rounds 5 \
        -- "$EXAMPLES/ex_poll" -w '{workers}' -p '{port}'
    [ "$status" -eq 0 ]
    ab_ran
    for side in 'no library' observe auto; do
        [[ $(ab_cell 'max share/round' "$side") =~ ^0\.[0-9]+$|^1\.0+$ ]] || fail "$side: no share per round"
        [[ $(ab_cell 'round ms (mean)' "$side") =~ ^[0-9.]+$ ]] || fail "$side: no round time"
    done
}

@test "ab: usage errors exit 2; a server that dies at once fails fast and cleanly (1)" {
    run --separate-stderr "$AB" -- "$EXAMPLES/ex_poll" -w 2
    [ "$status" -eq 2 ]
    [[ $stderr == *"{port}"* ]]
    for args in "--frob" "--mode fast" "--mode auto,nope" "--conns 0" "--burst 4 --concurrency 2" \
                "--http x" "--http --connect-only" "--send"; do
        # shellcheck disable=SC2086  # the options are words
        run --separate-stderr "$AB" $args -- "$EXAMPLES/ex_poll" -p '{port}'
        [ "$status" -eq 2 ] || fail "$args: status $status"
    done
    run --separate-stderr "$AB" --
    [ "$status" -eq 2 ]
    run "$AB" --help
    [ "$status" -eq 0 ]
    [[ $output == *"--http / -- /usr/bin/python3 -m gunicorn"* ]]
    SECONDS=0
    TMPDIR=$BATS_TEST_TMPDIR run --separate-stderr "$AB" --conns 10 -- \
        sh -c 'echo "no server on $0"; exit 3' '{port}'
    [ "$status" -eq 1 ]
    [[ $stderr == *"exited before it answered"* ]] || fail "$stderr"
    [ "$SECONDS" -lt 20 ]
    [ -z "$(compgen -G "$BATS_TEST_TMPDIR/thunder-ab.*")" ]
}

@test "ab stops the server's whole process group when it is interrupted" {
    local ab master driving workers pid i
    TMPDIR=$BATS_TEST_TMPDIR "$AB" --conns 1000000 -- "$EXAMPLES/ex_poll" -w 3 -p '{port}' \
        >"$BATS_TEST_TMPDIR/ab.out" 2>"$BATS_TEST_TMPDIR/ab.err" 3>&- </dev/null &
    ab=$!
    BG_PIDS+=("$ab")
    # wait until the server runs and loadgen drives it
    for ((i = 0; i < 400; i++)); do
        master='' driving=0
        for pid in $(cat /proc/"$ab"/task/*/children 2>/dev/null); do
            case $(cat /proc/"$pid"/comm 2>/dev/null) in
                ex_poll) master=$pid ;;
                timeout | thunder-loadgen) driving=1 ;;
            esac
        done
        [ -n "$master" ] && [ "$driving" = 1 ] && break
        sleep 0.05
    done
    [ -n "$master" ] || fail "ab did not start the server"
    workers=$(cat /proc/"$master"/task/*/children)
    [ -n "$workers" ]
    kill -TERM "$ab"
    wait "$ab" || true
    for pid in $master $workers; do
        for ((i = 0; i < 100; i++)); do alive "$pid" || break; sleep 0.05; done
        ! alive "$pid" || fail "process $pid of the server survived"
    done
    [ -z "$(compgen -G "$BATS_TEST_TMPDIR/thunder-ab.*")" ]
}

@test "ab --http on gunicorn (sync workers: select on the listener and a pipe): the herd without, gone with" {
    /usr/bin/python3 -c 'import gunicorn' 2>/dev/null || skip "gunicorn not installed (apt-get install python3-gunicorn)"
    TMPDIR=$BATS_TEST_TMPDIR run --separate-stderr timeout 300 "$AB" --workers 4 --conns 100 --http / \
        -- /usr/bin/python3 -m gunicorn -w '{workers}' -b '127.0.0.1:{port}' \
        --chdir "$ROOT/bench/peers" wsgi_app:application
    [ "$status" -eq 0 ]
    ab_ran
    [ "$(ab_cell failed 'no library')" = "0 (200:100)" ]
    # 4 workers woken per connection without the library; about 1 with it
    le 2 "$(ab_cell wake-ups/conn 'no library')" || fail "no herd without the library?"
    le "$(ab_cell wake-ups/conn auto)" 2 || fail "auto: $(ab_cell wake-ups/conn auto) wake-ups per connection"
}

@test "ab --http on nginx (its own EPOLLEXCLUSIVE: no herd); accepts from the segment; a 503 counts as failed" {
    local conf=$BATS_TEST_TMPDIR/nginx
    [ -x /usr/sbin/nginx ] || skip "nginx not installed (apt-get install nginx-light)"
    mkdir -p "$conf/tmp"
    cat >"$conf/nginx.conf.in" <<'EOF'
worker_processes WORKERS;
error_log stderr warn;
pid DIR/nginx.pid;
events { worker_connections 256; }
http {
    access_log off;
    client_body_temp_path DIR/tmp;
    proxy_temp_path DIR/tmp;
    fastcgi_temp_path DIR/tmp;
    uwsgi_temp_path DIR/tmp;
    scgi_temp_path DIR/tmp;
    server {
        listen 127.0.0.1:PORT;
        location / { return 200 "ok\n"; }
        location /fail { return 503 "no\n"; }
    }
}
EOF
    # a launcher that writes the config for the port, then becomes nginx
    # shellcheck disable=SC2016  # $1 $2 $3 are the launcher's arguments
    local -a server=(sh -c 'sed -e "s|PORT|$1|; s|WORKERS|$2|; s|DIR|$3|g" "$3/nginx.conf.in" >"$3/nginx.conf" &&
                     exec /usr/sbin/nginx -p "$3" -c "$3/nginx.conf" -g "daemon off;"' nginx '{port}' '{workers}' "$conf")
    TMPDIR=$BATS_TEST_TMPDIR run --separate-stderr timeout 300 "$AB" --workers 4 --conns 100 --http / -- "${server[@]}"
    [ "$status" -eq 0 ]
    ab_ran
    [ "$(ab_cell 'accepts from' observe)" = segment ]
    [ "$(ab_cell failed auto)" = "0 (200:100)" ]
    le "$(ab_cell wake-ups/conn 'no library')" 2.5 || fail "nginx herds without the library?"
    le "$(ab_cell wake-ups/conn auto)" 2.5
    # errors are failures, counted by status
    TMPDIR=$BATS_TEST_TMPDIR run --separate-stderr timeout 300 "$AB" --workers 2 --conns 5 --http /fail -- "${server[@]}"
    [ "$status" -eq 1 ]
    [ "$(ab_cell failed auto)" = "5 (503:5)" ] || fail "$output"
}

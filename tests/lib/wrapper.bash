# Helpers for tests/60-wrapper.bats (thunder-preload, thunder-stat), on top
# of tests/helpers.bash (start_example, run_loadgen, teardown bookkeeping).
#
#   start_wrapped NAME WORKERS [WRAPPER-OPTION...]
#       examples/NAME -w WORKERS started through thunder-preload (options
#       without spaces); sets PORT, MASTER, WORKERS, LISTEN_INODE like
#       start_example and is stopped by the same teardown.
#   kill9_example           SIGKILL the last example's master and workers, by
#                           pid, and wait until they are gone (reaped or not)
#   fake_segment PATH BYTES [SOURCE]
#                           a file at a segment's PATH (segment_path), of
#                           BYTES from SOURCE (zeros); removed by wrapper_teardown
#   kv_field LINE KEY       one value of a --kv line

WRAPPER=$ROOT/shim/thunder-preload
FAKES=()            # segment files this test made up

start_wrapped() {
    local name=$1 workers=$2
    shift 2
    # helpers' start_example runs "EX_WRAP env LD_PRELOAD=<the same lib>
    # examples/NAME": the wrapper's THUNDER_* settings reach the server, and
    # the bookkeeping (STARTED, teardown) stays the helpers' own.
    EX_WRAP="$WRAPPER $* --" start_example "$name" "$workers"
}

# A dead server whose segment stays behind: no exit handler runs on SIGKILL.
kill9_example() {
    local pid i
    # Workers first, with the master stopped: a master killed first sends
    # its workers the SIGTERM of PR_SET_PDEATHSIG, and a worker that
    # handles it before its SIGKILL arrives exits cleanly and removes the
    # segment this is meant to leave behind (seen in a fresh-clone make check).
    kill -STOP "$MASTER" 2>/dev/null || true
    # shellcheck disable=SC2086  # the pids are to be split
    kill -KILL ${WORKERS//,/ } 2>/dev/null || true
    kill -KILL "$MASTER" 2>/dev/null || true
    wait "$MASTER" 2>/dev/null || true      # 137: killed, as intended
    for pid in ${WORKERS//,/ }; do
        for ((i = 0; i < 100; i++)); do alive "$pid" || break; sleep 0.02; done
    done
}

fake_segment() {
    local path=$1
    FAKES+=("$path")
    head -c "$2" "${3:-/dev/zero}" >"$path"
    chmod 0600 "$path"
    # older than thunder-stat --gc's "may still be initialising" window
    touch -d '1 minute ago' "$path"
}

kv_field() {
    tr ' ' '\n' <<<"$1" | sed -n "s/^$2=//p" | head -n 1
}

wrapper_teardown() {
    helpers_teardown
    [ ${#FAKES[@]} -eq 0 ] || rm -f -- "${FAKES[@]}"
    FAKES=()
}

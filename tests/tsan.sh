#!/bin/bash
# ThreadSanitizer over the shim (run by make check through tests/run-all.sh,
# and alone by make check-tsan).  Builds the shim and the threaded example
# (ex_threads: P processes x T threads in epoll_wait, then accept4) with
# -fsanitize=thread in a scratch directory, drives 2000 connections through
# it in the auto, lock and exclusive modes, and fails on any ThreadSanitizer
# report.  One TAP line per mode; skipped only when neither $CC nor gcc
# builds with -fsanitize=thread (the runtime is gcc's libtsan; clang cannot
# do this check, see below).
#
# What makes the run conclusive (each is checked, not assumed):
#  - The shim is preloaded IN FRONT of the TSan runtime (which ex_threads
#    loads as a DT_NEEDED library).  With the runtime first, TSan's
#    epoll_wait interceptor calls our epoll_wait as its "real" function,
#    inside a blocking-call scope that ignores interceptors: the shim's
#    pthread_mutex_lock calls go unrecorded while its memory accesses are
#    recorded, and every access under our mutexes looks like a race.  In
#    front, the shim is application code to TSan and its real_* calls go
#    through TSan's interceptors.  Not clang: its static runtime lives in
#    the executable, ahead of any preload (the false reports again), and
#    its shared one (-shared-libsan, clang 14) crashes ex_threads at start.
#  - Workers are forked by a single-threaded master.  TSan stops checking
#    in the child of a multi-threaded fork, so a run like that would pass
#    whatever the shim does; TSan's own "parent had N threads" line says.
#  - TSan models one process.  The accept lock's segment is shared between
#    processes, and the hand-offs through it are only seen within a process;
#    each worker's threads are checked against each other.  No suppressions.
set -u
root=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d)
master=
workers=2 threads=4
# shellcheck disable=SC2317  # run by the trap
cleanup() {
    if [ -n "$master" ]; then
        kill -TERM "$master" 2>/dev/null
        wait "$master" 2>/dev/null
    fi
    rm -rf "$work"
}
trap cleanup EXIT

# Build the shim and ex_threads with compiler $1; 0 if it worked.
build() {
    local cc=$1 flags=(-std=gnu11 -O1 -g -fsanitize=thread -pthread) sources=("$root"/shim/*.c)
    command -v "$cc" >/dev/null 2>&1 || { echo "$cc: not found" >>"$work/build.log"; return 1; }
    "$cc" "${flags[@]}" -fPIC -shared -fvisibility=hidden -ftls-model=initial-exec \
        -Wl,--version-script="$root/shim/libthunder.map" -o "$work/libthunder.so" \
        "${sources[@]}" -ldl 2>>"$work/build.log" &&
        "$cc" "${flags[@]}" -o "$work/ex_threads" "$root/examples/ex_threads.c" 2>>"$work/build.log"
}

modes=(auto lock exclusive)
echo "1..${#modes[@]}"
skip() {
    local n
    for n in $(seq ${#modes[@]}); do echo "ok $n - tsan # SKIP $1"; done
    exit 0
}

# Can compiler $1 build and link a -fsanitize=thread program at all?
has_tsan() {
    command -v "$1" >/dev/null 2>&1 &&
        echo 'int main(void) { return 0; }' |
        "$1" -fsanitize=thread -x c - -o "$work/probe" 2>>"$work/build.log"
}

# The first compiler with a usable TSan (not clang) is used; if the shim
# or the example then fails to build with it, that is a failure, not a skip.
built=
for cc in "${CC:-cc}" gcc; do
    if "$cc" --version 2>/dev/null | head -n 1 | grep -q clang; then
        echo "$cc: clang, whose TSan runtime cannot sit behind the shim" >>"$work/build.log"
    elif has_tsan "$cc"; then
        if ! build "$cc"; then
            echo "not ok 1 - tsan ($cc): the shim or ex_threads does not build with -fsanitize=thread"
            sed 's/^/# /' "$work/build.log" | head -n 20
            exit 1
        fi
        built=$cc
        break
    fi
done
[ -n "$built" ] || skip "neither ${CC:-cc} nor gcc builds with -fsanitize=thread: $(grep -m 1 -i 'error\|not found\|clang' "$work/build.log")"
if [ ! -x "$root/tools/thunder-loadgen" ]; then
    skip "tools/thunder-loadgen is not built (make all)"
fi

# verbosity=1 for the "forked new process ..., parent had N threads" lines
options="halt_on_error=0 exitcode=66 verbosity=1"

# The load order the run depends on: the shim before the TSan runtime.
trace=$(LD_PRELOAD=$work/libthunder.so LD_TRACE_LOADED_OBJECTS=1 "$work/ex_threads" 2>&1)
at_shim=$(grep -n -m 1 '/libthunder\.so ' <<<"$trace" | cut -d: -f1)
at_tsan=$(grep -n -m 1 'libtsan\.so' <<<"$trace" | cut -d: -f1)

n=0 bad=0
for mode in "${modes[@]}"; do
    n=$((n + 1))
    name="tsan ($built), ex_threads -w $workers -t $threads, $mode"
    if [ -z "$at_shim" ] || [ -z "$at_tsan" ] || [ "$at_shim" -gt "$at_tsan" ]; then
        echo "not ok $n - $name: the shim does not load before the TSan runtime"
        echo "# ${trace//$'\n'/$'\n'# }"
        bad=1
        continue
    fi
    LD_PRELOAD=$work/libthunder.so THUNDER_MODE=$mode TSAN_OPTIONS=$options \
        "$work/ex_threads" -w "$workers" -t "$threads" >"$work/out.$mode" 2>"$work/err.$mode" 3>&- &
    master=$!
    for _ in $(seq 100); do
        grep -q '^port=' "$work/out.$mode" || ! kill -0 "$master" 2>/dev/null && break
        sleep 0.1
    done
    port=$(sed -n 's/^port=\([0-9]*\) .*/\1/p' "$work/out.$mode")
    result=
    [ -n "$port" ] &&
        result=$("$root/tools/thunder-loadgen" -p "$port" -n 2000 -c 4 2>/dev/null | grep -E '^(ok|failed)=' | tr '\n' ' ')
    kill -TERM "$master" 2>/dev/null; wait "$master"; master=
    err=$work/err.$mode
    reports=$(grep -c -E '(WARNING|ERROR): ThreadSanitizer|ThreadSanitizer: CHECK failed|FATAL: ThreadSanitizer' "$err")
    forks=$(grep -c 'ThreadSanitizer: forked new process with pid [0-9]*, parent had 1 threads' "$err")
    multi=$(grep -c -E 'forked new process with pid [0-9]*, parent had ([02-9]|[1-9][0-9]+) threads' "$err")
    if [ "$reports" -eq 0 ] && [[ $result == *"failed=0"* ]] && [ "$forks" -ge "$workers" ] && [ "$multi" -eq 0 ]; then
        echo "ok $n - $name: ${result}no reports"
    else
        echo "not ok $n - $name: ${result:-no port }$reports reports, $forks single-threaded and $multi multi-threaded forks (need >= $workers and 0)"
        grep -h 'SUMMARY: ThreadSanitizer' "$err" | sort | uniq -c | sed 's/^/# /'
        grep -E -A 24 '(WARNING|ERROR): ThreadSanitizer' "$err" | head -n 50 | sed 's/^/# /'
        bad=1
    fi
done
exit $bad

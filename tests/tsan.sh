#!/bin/bash
# (make check-tsan; not part of make check yet, see the Makefile.)
# ThreadSanitizer over the shim with the threaded example (P processes x T
# threads in epoll_wait) in auto and lock modes: builds both with
# -fsanitize=thread in a scratch directory, drives 2000 connections, and
# fails on any ThreadSanitizer report.  Prints one TAP line per mode.
set -u
root=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d)
master=
# shellcheck disable=SC2317  # run by the trap
cleanup() {
    if [ -n "$master" ]; then
        kill -TERM "$master" 2>/dev/null
        wait "$master" 2>/dev/null
    fi
    rm -rf "$work"
}
trap cleanup EXIT
cc=${CC:-cc}
flags=(-std=gnu11 -O1 -g -fsanitize=thread -pthread)
sources=()
for f in "$root"/shim/*.c; do
    [ "${f##*/}" = thunder-stat.c ] || sources+=("$f")
done
echo "1..2"
if ! $cc "${flags[@]}" -fPIC -shared -fvisibility=hidden -ftls-model=initial-exec \
        -Wl,--version-script="$root/shim/libthunder.map" -o "$work/libthunder.so" \
        "${sources[@]}" -ldl 2>"$work/build.log" ||
   ! $cc "${flags[@]}" -o "$work/ex_threads" "$root/examples/ex_threads.c" 2>>"$work/build.log"; then
    echo "ok 1 - tsan # SKIP cannot build with -fsanitize=thread: $(head -n 1 "$work/build.log")"
    echo "ok 2 - tsan # SKIP"
    exit 0
fi
n=0 bad=0
for mode in auto lock; do
    n=$((n + 1))
    # The shim goes in front of the TSan runtime (which ex_threads loads as
    # a DT_NEEDED library), not behind it: with the runtime first, TSan's
    # epoll_wait interceptor calls our epoll_wait as the "real" function
    # inside a blocking-call scope that ignores interceptors, so every
    # pthread_mutex_lock the shim makes there is invisible to TSan while its
    # memory accesses are not -- races reported on data under our mutexes.
    LD_PRELOAD=$work/libthunder.so THUNDER_MODE=$mode TSAN_OPTIONS="exitcode=66 halt_on_error=0" \
        "$work/ex_threads" -w 2 -t 4 >"$work/out.$mode" 2>"$work/err.$mode" 3>&- &
    master=$!
    for _ in $(seq 100); do grep -q '^port=' "$work/out.$mode" && break; sleep 0.1; done
    port=$(sed -n 's/^port=\([0-9]*\) .*/\1/p' "$work/out.$mode")
    result=$("$root/bench/loadgen" -p "$port" -n 2000 -c 4 2>/dev/null | grep -E '^(ok|failed)=' | tr '\n' ' ')
    kill -TERM "$master"; wait "$master"; master=
    reports=$(grep -c 'WARNING: ThreadSanitizer' "$work/err.$mode")
    if [ "$reports" -eq 0 ] && [[ $result == *"failed=0"* ]]; then
        echo "ok $n - tsan, ex_threads -w 2 -t 4, $mode: ${result}no reports"
    else
        echo "not ok $n - tsan, ex_threads, $mode: $result$reports reports"
        grep -A 20 'WARNING: ThreadSanitizer' "$work/err.$mode" | head -n 40 | sed 's/^/# /'
        bad=1
    fi
done
exit $bad

#!/bin/bash
# Build and run the config-parser fuzzer for a bounded time.
#   tests/fuzz/run.sh SECONDS      (make check: 10 s; make fuzz: 120 s)
# Prints one TAP line; skips (ok # SKIP) where clang's libFuzzer is missing.
set -u
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
seconds=${1:-10}
bin=$here/fuzz_config
echo "1..1"
# Skip only when the toolchain lacks libFuzzer; a target that does not
# build is a failure, not a skip.
if ! command -v clang >/dev/null ||
   ! echo 'int LLVMFuzzerTestOneInput(const char *d, long n) { (void)d; (void)n; return 0; }' |
        clang -fsanitize=fuzzer -x c - -o /dev/null 2>/dev/null; then
    echo "ok 1 - config fuzzer # SKIP clang with libFuzzer not available (apt-get install clang libclang-rt-14-dev)"
    exit 0
fi
if ! clang -std=gnu11 -g -O1 -Wall -Wextra -Werror -fsanitize=fuzzer,address,undefined -I"$root/shim" \
        -o "$bin" "$here/fuzz_config.c" "$root/shim/config.c" 2>"$here/build.log"; then
    echo "not ok 1 - config fuzzer: the target does not build"
    sed 's/^/# /' "$here/build.log" | head -n 20
    exit 1
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cp "$here"/corpus/* "$work"/
if "$bin" -max_total_time="$seconds" -max_len=512 "$work" >"$here/fuzz.log" 2>&1; then
    runs=$(grep -o 'Done [0-9]* runs' "$here/fuzz.log" | tail -n 1)
    echo "ok 1 - config fuzzer, $seconds s: ${runs:-done}"
else
    echo "not ok 1 - config fuzzer found a failure; see tests/fuzz/fuzz.log"
    tail -n 20 "$here/fuzz.log" | sed 's/^/# /'
    exit 1
fi

#!/bin/bash
# Run the whole test suite: every tests/unit/test_* binary, the fuzzer, the
# ThreadSanitizer run, and every tests/*.bats file (or only the files given as arguments), count the
# individual test cases, show the details of each failure, and end with
# exactly one line "N passed, N failed".  Exit status 0 only if none failed.
#
# Both kinds of test speak TAP: "ok N - name" / "not ok N - name", then
# "# ..." diagnostics.  A runner that dies before its plan is complete
# counts its missing cases as failed, so a crash can never look green.
#
# Needs bats and socat; when they are missing they are installed if we can
# (root with apt-get), otherwise we stop with the command to run.

set -u

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT" || exit 2

UNIT_TIMEOUT=${UNIT_TIMEOUT:-300}     # seconds per unit binary
BATS_TIMEOUT=${BATS_TIMEOUT:-600}     # seconds per bats file

passed=0
failed=0
skipped=()
details=()

# The suite sets every THUNDER_ variable it wants itself: a value left in
# the caller's environment (or a preloaded shim) must not change results.
clean_environment() {
    local var
    for var in $(compgen -e); do
        case $var in THUNDER_*) unset "$var" ;; esac
    done
    unset LD_PRELOAD
}

ensure_tools() {
    local missing=() tool
    for tool in bats socat; do
        command -v "$tool" >/dev/null 2>&1 || missing+=("$tool")
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
        echo "run-all: installing ${missing[*]}" >&2
        if DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2 &&
            DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >&2; then
            return 0
        fi
    fi
    echo "run-all: missing ${missing[*]}; install with:" >&2
    echo "    sudo apt-get install -y ${missing[*]}" >&2
    exit 2
}

# Count one runner's TAP output (file $2, exit status $3) under label $1.
tally() {
    local label=$1 out=$2 status=$3 line plan=0 seen=0 in_failure=0 block=""
    while IFS= read -r line || [ -n "$line" ]; do
        case $line in
            1..*)
                plan=${line#1..}
                plan=${plan%% *}
                ;;
            "not ok "*)
                [ -n "$block" ] && details+=("$block")
                block="$label: $line"
                in_failure=1
                seen=$((seen + 1))
                failed=$((failed + 1))
                ;;
            "ok "*)
                [ -n "$block" ] && details+=("$block")
                block=""
                in_failure=0
                seen=$((seen + 1))
                passed=$((passed + 1))
                case $line in
                    *"# skip"* | *"# SKIP"*) skipped+=("$label: $line") ;;
                esac
                ;;
            *)
                [ "$in_failure" -eq 1 ] && block+=$'\n'"    $line"
                ;;
        esac
    done <"$out"
    [ -n "$block" ] && details+=("$block")
    if [ "$seen" -lt "$plan" ]; then
        failed=$((failed + plan - seen))
        details+=("$label: only $seen of $plan cases reported (exit status $status)"$'\n'"$(tail -n 20 "$out" | sed 's/^/    /')")
    elif [ "$status" -ne 0 ] && [ "$seen" -gt 0 ] && ! grep -q '^not ok' "$out"; then
        failed=$((failed + 1))
        details+=("$label: exit status $status although every case passed")
    elif [ "$seen" -eq 0 ]; then
        failed=$((failed + 1))
        details+=("$label: no test output (exit status $status)"$'\n'"$(tail -n 20 "$out" | sed 's/^/    /')")
    fi
}

# Run one test file (a unit binary or a .bats file) and tally it.
run_one() {
    local file=$1 out status start secs
    out=$(mktemp)
    start=$(date +%s.%N)
    case $file in
        *.bats) timeout -k 10 "$BATS_TIMEOUT" bats --tap "$file" >"$out" 2>&1 </dev/null ;;
        *) timeout -k 10 "$UNIT_TIMEOUT" "$file" >"$out" 2>&1 </dev/null ;;
    esac
    status=$?
    secs=$(awk -v s="$start" -v e="$(date +%s.%N)" 'BEGIN { printf "%.1f", e - s }')
    [ "$status" -eq 124 ] && echo "# $file: killed after its time limit" >>"$out"
    local before_p=$passed before_f=$failed
    tally "${file#"$ROOT"/}" "$out" "$status"
    printf '%-32s %4d passed %3d failed %7s s\n' "${file#"$ROOT"/}" \
        $((passed - before_p)) $((failed - before_f)) "$secs"
    rm -f "$out"
}

list_tests() {
    local f
    for f in "$ROOT"/tests/unit/test_*; do
        [ -f "$f" ] && [ -x "$f" ] && echo "$f"
    done
    echo "$ROOT/tests/fuzz/run.sh"         # the config parser, 10 s of libFuzzer
    echo "$ROOT/tests/tsan.sh"             # the threaded example under TSan, ~6 s
    for f in "$ROOT"/tests/*.bats; do
        [ -f "$f" ] && echo "$f"
    done
}

main() {
    local files=() f start
    clean_environment
    ensure_tools
    if [ $# -gt 0 ]; then
        for f in "$@"; do files+=("$(cd "$(dirname "$f")" && pwd)/$(basename "$f")"); done
    else
        mapfile -t files < <(list_tests)
    fi
    start=$SECONDS
    for f in "${files[@]}"; do
        run_one "$f"
    done
    if [ ${#skipped[@]} -gt 0 ]; then
        echo
        echo "skipped (counted as passed):"
        printf '  %s\n' "${skipped[@]}"
    fi
    if [ ${#details[@]} -gt 0 ]; then
        echo
        echo "failures:"
        printf '%s\n' "${details[@]}"
    fi
    echo
    echo "total time $((SECONDS - start)) s"
    echo "$passed passed, $failed failed"
    [ "$failed" -eq 0 ]
}

main "$@"

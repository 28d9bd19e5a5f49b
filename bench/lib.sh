#!/bin/bash
# Shared by the demo and the benchmarks: run one measured cell.
#
#   run_cell EXAMPLE WORKERS MODE CONNS CONCURRENCY SECONDS [THREADS]
#
# starts examples/EXAMPLE with WORKERS workers (MODE "none" = without the
# shim, else THUNDER_MODE=MODE under LD_PRELOAD), drives tools/thunder-loadgen
# against it (bounded by CONNS and SECONDS), stops the server by its PID
# and prints loadgen's key=value lines.  Cleans up on every path.
#
#   run_cell_gap EXAMPLE WORKERS MODE CONNS CONCURRENCY SECONDS GAP_US [THREADS]
#   run_burst_cell EXAMPLE WORKERS MODE K ROUNDS SLEEP_MS [THREADS]
#
# The server is started and stopped by tools/lib/server.bash, the code the
# tests and thunder-ab use too.

BENCH_ROOT=${BENCH_ROOT:-$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)}
BENCH_LIB=${BENCH_LIB:-$BENCH_ROOT/libthunder.so}   # another build, for an A/B

# srv_start, srv_ready_line, srv_stop: shared with thunder-ab and the tests
# shellcheck source=tools/lib/server.bash
. "$BENCH_ROOT/tools/lib/server.bash"

cell_master=
cell_workers=
cell_out=

cell_cleanup() {
    [ -n "$cell_master" ] && srv_stop "$cell_master" "$cell_master" "$cell_workers"
    cell_master='' cell_workers=''
    [ -n "$cell_out" ] && rm -f "$cell_out"
    cell_out=
}

run_cell() {
    local gap=${BENCH_GAP_US:-200}
    [ "$5" -gt 1 ] && gap=0      # several clients: a closed loop
    run_cell_gap "$1" "$2" "$3" "$4" "$5" "$6" "$gap" "${7:-}"
}

# Pull one key out of a cell's output.
cell_get() { sed -n "s/^$1=//p" <<<"$2" | head -n 1; }

ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b + 0 == 0) print "-"; else printf "%.2f", a / b }'; }

# run_cell with the gap between one client's connections given explicitly,
# whatever the concurrency; bench/matrix.sh uses it for a light concurrent
# workload.
#
#   run_cell_gap EXAMPLE WORKERS MODE CONNS CONCURRENCY SECONDS GAP_US [THREADS]
run_cell_gap() {
    local example=$1 workers=$2 mode=$3 conns=$4 conc=$5 seconds=$6 gap=$7 threads=${8:-}
    local -a args=(-w "$workers")
    [ -n "$threads" ] && args+=(-t "$threads")
    cell_start "$example" "$mode" "${args[@]}" || return 1
    timeout $((seconds + 30)) "$BENCH_ROOT/tools/thunder-loadgen" -p "$cell_port" -n "$conns" -c "$conc" \
        -d "$seconds" -g "$gap" -P "$cell_workers"
    cell_cleanup
}

# Bursts (BRIEF, "How it is measured"): ROUNDS rounds of K connections
# opened together, 20 ms apart; the handler sleeps SLEEP_MS (0: not at
# all), and the round time is compared with ceil(K/WORKERS) x SLEEP_MS.
#
#   run_burst_cell EXAMPLE WORKERS MODE K ROUNDS SLEEP_MS [THREADS]
run_burst_cell() {
    local example=$1 workers=$2 mode=$3 k=$4 rounds=$5 sleep_ms=$6 threads=${7:-}
    local -a args=(-w "$workers") limit=()
    [ -n "$threads" ] && args+=(-t "$threads")
    [ "$sleep_ms" -gt 0 ] && args+=(-s "$sleep_ms") && limit=(--workers "$workers" --service-ms "$sleep_ms")
    cell_start "$example" "$mode" "${args[@]}" || return 1
    timeout 120 "$BENCH_ROOT/tools/thunder-loadgen" -p "$cell_port" --burst "$k" --rounds "$rounds" \
        -d 90 "${limit[@]}" -P "$cell_workers"
    cell_cleanup
}

# Starts examples/EXAMPLE ARGS... without the shim (MODE none) or with
# THUNDER_MODE=MODE; sets cell_port, cell_master, cell_workers.
# BENCH_WRAP, if set, is a command the example runs under (valgrind for
# bench/instructions.sh).
cell_start() {
    local example=$1 mode=$2
    shift 2
    local -a env_cmd=(env) wrap=()
    read -r -a wrap <<<"${BENCH_WRAP:-}"
    cell_out=$(mktemp)
    if [ "$mode" != none ]; then
        env_cmd+=("LD_PRELOAD=$BENCH_LIB" "THUNDER_MODE=$mode")
        [ -n "${BENCH_BALANCE:-}" ] && env_cmd+=("THUNDER_BALANCE=$BENCH_BALANCE")
    fi
    srv_start "$cell_out" "${BENCH_ERR:-/dev/null}" "${env_cmd[@]}" "${wrap[@]}" "$BENCH_ROOT/examples/$example" "$@"
    cell_master=$SRV_JOB
    if ! srv_ready_line "$cell_out" "$SRV_JOB"; then
        echo "error=server did not start"
        cell_cleanup
        return 1
    fi
    cell_port=$SRV_PORT cell_workers=$SRV_WORKERS
}

# The per-pid accept counts of a cell's output, in pid order, joined by ";".
cell_accepts() { sed -n 's/^pid=[0-9]* accepts=//p' <<<"$1" | paste -sd ';'; }

# The children of a process (a server master's workers), comma-separated.
proc_children() {
    local -a kids
    read -r -a kids 2>/dev/null <"/proc/$1/task/$1/children" || [ ${#kids[@]} -gt 0 ] || return 1
    local IFS=,
    echo "${kids[*]}"
}

# A free TCP port on 127.0.0.1 (bound then released: good enough for a bench).
free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])' 2>/dev/null ||
        echo $((20000 + RANDOM % 20000))
}

# results_section NAME FILE: FILE, which opens with "<!-- NAME: ..." and
# ends with "<!-- /NAME -->", in place of that section of bench/RESULTS.md
# (appended when there is none yet).  The rest of the file is kept.
results_section() {
    local name=$1 section=$2 md=$BENCH_ROOT/bench/RESULTS.md tmp
    if grep -q "^<!-- $name" "$md" 2>/dev/null; then
        tmp=$(mktemp)
        awk -v f="$section" -v opening="^<!-- $name" -v closing="^<!-- /$name -->" '
            $0 ~ opening { while ((getline l < f) > 0) print l; skip = 1; next }
            $0 ~ closing { skip = 0; next }
            !skip' "$md" >"$tmp" && cat "$tmp" >"$md"
        rm -f "$tmp"
    else
        { echo; cat "$section"; } >>"$md"
    fi
}

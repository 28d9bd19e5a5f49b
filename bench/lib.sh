#!/bin/bash
# Shared by the demo and the benchmarks: run one measured cell.
#
#   run_cell EXAMPLE WORKERS MODE CONNS CONCURRENCY SECONDS [THREADS]
#
# starts examples/EXAMPLE with WORKERS workers (MODE "none" = without the
# shim, else THUNDER_MODE=MODE under LD_PRELOAD), drives tools/thunder-loadgen
# against it (bounded by CONNS and SECONDS), stops the server by its PID
# and prints loadgen's key=value lines.  Cleans up on every path.

BENCH_ROOT=${BENCH_ROOT:-$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)}
BENCH_LIB=$BENCH_ROOT/libthunder.so

cell_master=
cell_out=

cell_cleanup() {
    local pid
    if [ -n "$cell_master" ] && kill -0 "$cell_master" 2>/dev/null; then
        kill -TERM "$cell_master" 2>/dev/null
        for _ in $(seq 50); do kill -0 "$cell_master" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$cell_master" 2>/dev/null
        for pid in ${cell_workers//,/ }; do kill -KILL "$pid" 2>/dev/null; done
    fi
    wait "$cell_master" 2>/dev/null
    cell_master=
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
    local line port
    local -a env_cmd=(env)
    cell_out=$(mktemp)
    if [ "$mode" != none ]; then
        env_cmd+=("LD_PRELOAD=$BENCH_LIB" "THUNDER_MODE=$mode")
        [ -n "${BENCH_BALANCE:-}" ] && env_cmd+=("THUNDER_BALANCE=$BENCH_BALANCE")
    fi
    local -a args=(-w "$workers")
    [ -n "$threads" ] && args+=(-t "$threads")
    "${env_cmd[@]}" "$BENCH_ROOT/examples/$example" "${args[@]}" >"$cell_out" 2>>"${BENCH_ERR:-/dev/null}" &
    cell_master=$!
    for _ in $(seq 100); do
        line=$(head -n 1 "$cell_out" 2>/dev/null)
        [ -n "$line" ] && break
        sleep 0.05
    done
    port=$(sed -n 's/.*port=\([0-9]*\).*/\1/p' <<<"$line")
    cell_workers=$(sed -n 's/.*workers=\([0-9,]*\).*/\1/p' <<<"$line")
    if [ -z "$port" ]; then
        echo "error=server did not start"
        cell_cleanup
        return 1
    fi
    timeout $((seconds + 30)) "$BENCH_ROOT/tools/thunder-loadgen" -p "$port" -n "$conns" -c "$conc" \
        -d "$seconds" -g "$gap" -P "$cell_workers"
    cell_cleanup
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

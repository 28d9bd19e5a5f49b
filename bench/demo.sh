#!/bin/bash
# make demo: the main job on an embedded default.  A pre-fork server whose
# workers wait with poll() on one listener (uWSGI, prefork C daemons) is
# A/B-tested without and with the shim in the same run.
set -u
# shellcheck source=bench/lib.sh
. "$(dirname "$0")/lib.sh"
trap cell_cleanup EXIT INT TERM

EXAMPLE=${DEMO_EXAMPLE:-ex_poll}
WORKERS=${DEMO_WORKERS:-16}
CONNS=${DEMO_CONNS:-2000}

printf 'libthunder demo: %s, %d workers, %d sequential connections on 127.0.0.1\n\n' \
    "$EXAMPLE" "$WORKERS" "$CONNS"
printf '%-28s %12s %8s %10s %9s %8s %8s\n' "run" "wakeups/conn" "Jain" "max share" "req/s" "p50 us" "p99 us"
base_w=
for mode in none auto lock; do
    case $mode in
        none) label="without the shim" ;;
        auto) label="libthunder (default: auto)" ;;
        *)    label="libthunder THUNDER_MODE=$mode" ;;
    esac
    out=$(run_cell "$EXAMPLE" "$WORKERS" "$mode" "$CONNS" 1 60) || { echo "$label: $out"; exit 1; }
    w=$(cell_get wakeups_per_conn "$out")
    [ -z "$base_w" ] && base_w=$w
    printf '%-28s %12s %8s %10s %9s %8s %8s\n' "$label" "$w" "$(cell_get jain "$out")" \
        "$(cell_get max_share "$out")" "$(cell_get rps "$out")" "$(cell_get p50_us "$out")" \
        "$(cell_get p99_us "$out")"
    [ "$(cell_get failed "$out")" = 0 ] || echo "  (some connections failed: $(cell_get failed "$out"))"
done
cat <<TXT

wakeups/conn: context switches of all workers per connection (1.0 is the limit;
a herd is about one per worker).  Jain: fairness of accepts over workers (1.0 =
perfectly even, 1/$WORKERS = one worker takes all).
TXT

#!/bin/bash
# bench/peers.sh - real servers from Debian, without and with libthunder.
#
#   bench/peers.sh [--quick] [--csv FILE] [--merge]
#
# For each configuration of bench/peers/servers.sh (uWSGI plain, --threads 4,
# --thunder-lock; gunicorn sync, gthread, gevent, uvicorn worker; uvicorn
# --workers; Puma cluster; unicorn; Node cluster SCHED_NONE; nginx default,
# accept_mutex on; Apache prefork), each answering its worker's pid:
#   waits   how a worker waits and accepts: the wait and accept calls that
#           strace -f -c counts on all workers (2 workers, no shim, 100
#           connections), per connection
#   floor   wake-ups per connection with ONE worker and no shim: the
#           server's own cost (a threaded server hands each connection to
#           a thread: 2), under which no herd fix can go
#   then PEERS_WORKERS (16) workers, without the shim (none) and under it
#   in the default mode (auto, LD_PRELOAD only), on the workloads
#   PEERS_WORKLOADS (seq conc burst sat):
#     seq   BENCH_SEQ_CONNS (2000) sequential requests BENCH_GAP_US (200) apart
#     conc  4 clients with the same gap for BENCH_CONC_SECONDS (2) s
#     burst PEERS_BURST_ROUNDS (50) rounds of 2N connections opened
#           together, 20 ms apart; its max share is the mean largest share
#           of one round (ideal 1/N)
#     sat   8 clients in a closed loop for BENCH_SAT_SECONDS (2) s
# A server that is not installed is installed from Debian (apt-get, when
# root), otherwise skipped with one line.  The client is tools/thunder-loadgen -H
# (one "GET / HTTP/1.0" per connection, the pid read from the reply).
#
# Writes bench/results/peers.csv (bench/matrix.sh's CSV format; floor rows
# have workers 1) and bench/results/peers.md (the "Works with" table and the
# full tables); --csv FILE also appends the rows to FILE (bench/matrix.sh).
# --quick: 8 workers, seq of 500 requests, no strace, nothing written.
# PEERS_CONFIGS narrows the configurations (names as in servers.sh).
# --merge keeps, from the results already written, the rows of every
# configuration this run does not measure (bench/results/peers.meta.tsv
# keeps their waits, versions and notes, and each part's date and load),
# so that one table can be made in parts short enough for a shared
# machine:  PEERS_CONFIGS="uwsgi uwsgi-threads" bench/peers.sh --merge
set -u
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=bench/lib.sh
. "$here/lib.sh"
# shellcheck source=bench/peers/servers.sh
. "$here/peers/servers.sh"
lib=${PEERS_LIB:-$BENCH_LIB}   # bench/matrix.sh passes its private copy
LOADGEN=${LOADGEN:-$BENCH_ROOT/tools/thunder-loadgen}

csv='' quick=0 merge=0
while [ $# -gt 0 ]; do
    case $1 in
        --csv) [ $# -ge 2 ] || { echo "peers.sh: --csv needs a file" >&2; exit 2; }; csv=$2; shift ;;
        --quick) quick=1 ;;
        --merge) merge=1 ;;
        -h|--help) sed -n '2,38s/^# \{0,1\}//p' "$0"; exit 0 ;;
        *) echo "peers.sh: unknown option '$1' (accepted: --quick --csv FILE --merge)" >&2; exit 2 ;;
    esac
    shift
done
CONFIGS=${PEERS_CONFIGS:-$PEER_CONFIGS}
if [ "$quick" = 1 ]; then
    WORKERS=8 WORKLOADS=seq SEQ_CONNS=500
else
    WORKERS=${PEERS_WORKERS:-16}
    WORKLOADS=${PEERS_WORKLOADS:-seq conc burst sat}
    SEQ_CONNS=${BENCH_SEQ_CONNS:-2000}
fi
GAP_US=${BENCH_GAP_US:-200}
CONC_SECONDS=${BENCH_CONC_SECONDS:-2}
SAT_SECONDS=${BENCH_SAT_SECONDS:-2}
FLOOR_CONNS=500
BURST_ROUNDS=${PEERS_BURST_ROUNDS:-50}
RAW_HEADER="style,workers,workload,mode,conns,ok,failed,seconds,wakeups_per_conn,jain,max_share,rps,p50_us,p99_us,cpu_ms_per_1000,workers_seen,accepts"
results_dir=$BENCH_ROOT/bench/results

[ -f "$lib" ] || { echo "peers: $lib missing (run make): skipped"; exit 0; }
[ -x "$LOADGEN" ] || { echo "peers: $LOADGEN is not built (run make): skipped"; exit 0; }
work=$(mktemp -d "${TMPDIR:-/tmp}/thunder-peers.XXXXXX")
chmod 755 "$work"   # nginx's and Apache's workers run as another user
cur_config='' cur_dir=''
trap '[ -z "$cur_config" ] || peer_stop "$cur_config" "$cur_dir"; rm -rf "$work"' EXIT
trap 'exit 130' INT TERM
load=("$LOADGEN" -H)     # one HTTP request per connection

# apt-get install, without starting the packaged service (RUNLEVEL=1
# makes invoke-rc.d leave it stopped); one apt-get update and retry.
apt_install() {
    local -a cmd=(env RUNLEVEL=1 DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=300
        install -y -q --no-install-recommends "$@")
    "${cmd[@]}" >>"$work/apt.log" 2>&1 && return 0
    apt-get update -q >>"$work/apt.log" 2>&1
    "${cmd[@]}" >>"$work/apt.log" 2>&1
}

# have CONFIG: true when usable (installing its packages if root).
have() {
    local -a pkgs
    read -r -a pkgs <<<"$(peer_packages "$1")"
    peer_installed "$1" && return 0
    if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then
        echo "peers: $1: not installed and not root: skipped (as root: apt-get install -y ${pkgs[*]})"
        return 1
    fi
    echo "peers: $1: installing ${pkgs[*]} ..."
    if ! apt_install "${pkgs[@]}" || ! peer_installed "$1"; then
        echo "peers: $1: apt-get install -y ${pkgs[*]} failed: skipped ($(tail -n 1 "$work/apt.log"))"
        return 1
    fi
}

# start CONFIG WORKERS MODE: the server, up with WORKERS workers that
# answer; sets port, dir, kids.  MODE none = no shim, auto = LD_PRELOAD.
start() {
    local config=$1 want=$2 i n
    local -a envs=()
    [ "$3" = auto ] && envs=("LD_PRELOAD=$lib")
    port=$(free_port)
    dir=$work/$config-$want-$3
    rm -rf "$dir"
    peer_start "$config" "$want" "$port" "$dir" "${envs[@]}" || return 1
    cur_config=$config cur_dir=$dir
    for ((i = 0; i < 400; i++)); do
        kids=$(peer_workers "$config" "$(peer_master "$config" "$dir")" 2>/dev/null) || kids=
        n=$(tr ',' '\n' <<<"$kids" | grep -c .)
        [ "$n" -ge "$want" ] && "${load[@]}" -p "$port" -n 1 -T 1000 >/dev/null 2>&1 && return 0
        srv_alive "$PEER_PID" || break
        sleep 0.05
    done
    echo "peers: $config $want $3: did not start: $(peer_logs "$dir" | xargs tail -q -n 2 | tr '\n' ' ')" | tee -a "$work/notes"
    stop
    return 1
}

stop() {
    peer_stop "$cur_config" "$cur_dir" || echo "peers: $cur_config: did not stop cleanly (killed)"
    cur_config=
}

# The wait and accept calls of the workers, per connection, without the
# shim: "epoll_wait 1.0 + accept4 1.0" (strace -f -c on every worker).
waits() {
    local config=$1 out=$work/strace.out spid pid
    local -a attach=()
    command -v strace >/dev/null || { echo "(strace not installed)"; return; }
    start "$config" 2 none || { echo "-"; return; }
    for pid in ${kids//,/ }; do attach+=(-p "$pid"); done
    timeout -s INT 20 strace -f -c -o "$out" "${attach[@]}" 2>/dev/null &
    spid=$!
    sleep 1
    "${load[@]}" -p "$port" -n 100 -g 2000 >/dev/null 2>&1
    sleep 0.3
    kill -INT "$spid" 2>/dev/null
    wait "$spid" 2>/dev/null
    stop
    awk 'BEGIN { n = split("select pselect6 poll ppoll epoll_wait epoll_pwait epoll_pwait2 io_uring_enter accept accept4 futex", o, " ")
                 for (i = 1; i <= n; i++) rank[o[i]] = i }
         $NF in rank && $4 + 0 >= 20 { c[rank[$NF]] = sprintf("%s %.1f", $NF, $4 / 100) }
         END { s = ""; for (i = 1; i <= n; i++) if (i in c) s = s (s == "" ? "" : " + ") c[i]; print s == "" ? "-" : s }' "$out"
}

rows=$work/rows.csv
: >"$rows"

# measure CONFIG WORKERS MODE WORKLOAD: one loadgen run against the
# running server; appends a row and prints a line.
measure() {
    local out=$work/load.out o k row="$1,$2,$4,$3"
    case $4 in
        seq)  timeout 120 "${load[@]}" -p "$port" -n "$SEQ_CONNS" -c 1 -d 90 -g "$GAP_US" -P "$kids" ;;
        floor) timeout 60 "${load[@]}" -p "$port" -n "$FLOOR_CONNS" -c 1 -d 30 -g "$GAP_US" -P "$kids" ;;
        conc) timeout $((CONC_SECONDS + 30)) "${load[@]}" -p "$port" -n 1000000 -c 4 \
                  -d "$CONC_SECONDS" -g "$GAP_US" -P "$kids" ;;
        sat)  timeout $((SAT_SECONDS + 30)) "${load[@]}" -p "$port" -n 1000000 -c 8 \
                  -d "$SAT_SECONDS" -P "$kids" ;;
        burst) timeout 120 "${load[@]}" -p "$port" --burst $((2 * $2)) --rounds "$BURST_ROUNDS" -P "$kids" ;;
    esac >"$out" 2>>"$work/load.err"
    [ "$4" = floor ] && row="$1,$2,seq,$3"
    o=$(cat "$out")
    # a burst row's max share is the mean largest share of one round
    [ "$4" = burst ] && o=$(sed 's/^max_share=/total_max_share=/; s/^round_max_share_mean=/max_share=/' <<<"$o")
    for k in conns ok failed seconds wakeups_per_conn jain max_share rps p50_us p99_us cpu_ms_per_1000 workers_seen; do
        row+=",$(cell_get "$k" "$o")"
    done
    row+=",$(cell_accepts "$o")"
    echo "$row" >>"$rows"
    printf 'peers: %-20s %3s %-5s %-4s wake/conn %7s  Jain %6s  max %6s  req/s %8s  p99 %6s us%s\n' \
        "$1" "$2" "$4" "$3" "$(cell_get wakeups_per_conn "$o")" "$(cell_get jain "$o")" "$(cell_get max_share "$o")" \
        "$(cell_get rps "$o")" "$(cell_get p99_us "$o")" \
        "$( [ "$(cell_get failed "$o")" = 0 ] || echo "  FAILED $(cell_get failed "$o")")"
}

run_config() {
    local config=$1 mode workload f
    have "$config" || return 0
    printf '%s\t%s\n' "$config" "$(peer_version "$config")" >>"$work/versions.tsv"
    echo "peers: $config: $(peer_version "$config")"
    if [ "$quick" = 0 ]; then
        printf '%s\t%s\n' "$config" "$(waits "$config")" >>"$work/waits.tsv"
    fi
    if start "$config" 1 none; then
        measure "$config" 1 none floor
        stop
    fi
    for mode in none auto; do
        start "$config" "$WORKERS" "$mode" || continue
        for workload in $WORKLOADS; do
            measure "$config" "$WORKERS" "$mode" "$workload"
        done
        stop
        f=$(peer_logs "$dir" | xargs cat 2>/dev/null | grep -m 1 '^libthunder')
        [ -n "$f" ] && echo "peers: $config $WORKERS $mode: the library wrote: $f" | tee -a "$work/notes"
    done
}

started=$(date +%s)
load_before=$(cut -d' ' -f1 /proc/loadavg)
: >"$work/waits.tsv"
: >"$work/versions.tsv"
: >"$work/notes"
exec > >(tee -a "$work/log")
for config in $CONFIGS; do
    run_config "$config"
done
seconds=$(( $(date +%s) - started ))

if [ -n "$csv" ] && [ -s "$rows" ]; then
    [ -s "$csv" ] || echo "$RAW_HEADER" >"$csv"
    cat "$rows" >>"$csv"
fi
[ -s "$work/load.err" ] && sed 's/^/peers: client: /' "$work/load.err" | head -n 5
[ "$quick" = 1 ] && exit 0
[ -s "$rows" ] || exit 0

mkdir -p "$results_dir"
grep -h 'skipped' "$work/log" | grep -v '^peers: client' >>"$work/notes"
# meta: W(aits), V(ersion), N(ote) per configuration, P(art) per run
{
    awk -F'\t' -v OFS='\t' '{ print "W", $1, $2 }' "$work/waits.tsv"
    awk -F'\t' -v OFS='\t' '{ print "V", $1, $2 }' "$work/versions.tsv"
    awk -v OFS='\t' '{ c = $2; sub(/:$/, "", c); print "N", c, $0 }' "$work/notes"
    printf 'P\t%s\t%s, load average %s, %s s\n' "${CONFIGS//$'\n'/ }" "$(date -u '+%Y-%m-%d %H:%M UTC')" \
        "$load_before → $(cut -d' ' -f1 /proc/loadavg)" "$seconds"
} >"$work/meta.new"
: >"$work/rows.old" && : >"$work/meta.old"
if [ "$merge" = 1 ] && [ -s "$results_dir/peers.csv" ]; then
    # what this run measured replaces what an earlier part had (a part's
    # P line goes once none of its configurations is left)
    awk -F, -v run="$CONFIGS" 'BEGIN { n = split(run, c, /[ \n]+/); for (i = 1; i <= n; i++) mine[c[i]] = 1 }
        FNR > 1 && !($1 in mine)' "$results_dir/peers.csv" >"$work/rows.old"
    [ -s "$results_dir/peers.meta.tsv" ] &&
        awk -F'\t' -v run="$CONFIGS" 'BEGIN { n = split(run, c, /[ \n]+/); for (i = 1; i <= n; i++) mine[c[i]] = 1 }
            $1 == "P" { k = split($2, p, " "); for (i = 1; i <= k; i++) if (!(p[i] in mine)) { print; break }; next }
            !($2 in mine)' "$results_dir/peers.meta.tsv" >"$work/meta.old"
fi
{ echo "$RAW_HEADER"; cat "$work/rows.old" "$rows"; } >"$results_dir/peers.csv"
cat "$work/meta.old" "$work/meta.new" >"$results_dir/peers.meta.tsv"
# shellcheck source=bench/peers/report.sh
. "$here/peers/report.sh"
peers_report "$results_dir/peers.csv" "$results_dir/peers.meta.tsv" >"$results_dir/peers.md"
echo "peers: wrote bench/results/peers.csv and bench/results/peers.md (${seconds} s)"

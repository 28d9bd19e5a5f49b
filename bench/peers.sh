#!/bin/bash
# bench/peers.sh - real pre-fork servers, without and with libthunder.
#
#   bench/peers.sh [--csv FILE]
#
# uWSGI (a WSGI app that answers its pid, --http-socket so that the
# workers themselves accept, --master, --processes N):
#   uwsgi plain | uwsgi --thunder-lock | uwsgi plain + libthunder (auto)
# nginx (worker_processes N, master_process on, daemon off,
# return 200 "$pid\n", a private prefix under a temp dir):
#   nginx default (accept_mutex off: nginx sets EPOLLEXCLUSIVE itself)
#   | nginx accept_mutex on | nginx default + libthunder (auto)
# at PEERS_WORKERS (16 64) workers, workloads PEERS_WORKLOADS (seq conc):
# seq = BENCH_SEQ_CONNS (2000) sequential requests BENCH_GAP_US (200) apart,
# conc = 4 clients with the same gap for BENCH_CONC_SECONDS (2) s.  One
# server per (server, workers, variant) serves both workloads.
#
# The client is tools/thunder-loadgen -H: the same figures and /proc sampling as
# every other cell, with one "GET / HTTP/1.0" per connection.
# A server that is not installed is installed from Debian packages when
# running as root, otherwise skipped with one line.  Rows are printed, and
# appended to FILE (bench/matrix.sh's CSV format, header if FILE is new).
set -u
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=bench/lib.sh
. "$here/lib.sh"
lib=${PEERS_LIB:-$BENCH_LIB}   # bench/matrix.sh passes its private copy

csv=
while [ $# -gt 0 ]; do
    case $1 in
        --csv) [ $# -ge 2 ] || { echo "peers.sh: --csv needs a file" >&2; exit 2; }; csv=$2; shift ;;
        -h|--help) sed -n '2,24s/^# \{0,1\}//p' "$0"; exit 0 ;;
        *) echo "peers.sh: unknown option '$1' (accepted: --csv FILE)" >&2; exit 2 ;;
    esac
    shift
done
WORKERS=${PEERS_WORKERS:-16 64}
WORKLOADS=${PEERS_WORKLOADS:-seq conc}
SEQ_CONNS=${BENCH_SEQ_CONNS:-2000}
GAP_US=${BENCH_GAP_US:-200}
CONC_SECONDS=${BENCH_CONC_SECONDS:-2}
CONC_CLIENTS=4
RAW_HEADER="style,workers,workload,mode,conns,ok,failed,seconds,wakeups_per_conn,jain,max_share,rps,p50_us,p99_us,cpu_ms_per_1000,workers_seen,accepts"

[ -f "$lib" ] || { echo "peers: $lib missing (run make): skipped"; exit 0; }
work=$(mktemp -d "${TMPDIR:-/tmp}/thunder-peers.XXXXXX")
chmod 755 "$work"   # nginx workers run as nobody and read nothing here, but may need to traverse
srv_pid=
srv_kids=

stop_server() {
    local pid
    [ -n "$srv_pid" ] || return 0
    if kill -0 "$srv_pid" 2>/dev/null; then
        kill -TERM "$srv_pid" 2>/dev/null
        for _ in $(seq 50); do kill -0 "$srv_pid" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$srv_pid" 2>/dev/null
    fi
    for pid in ${srv_kids//,/ }; do kill -KILL "$pid" 2>/dev/null; done
    wait "$srv_pid" 2>/dev/null
    srv_pid='' srv_kids=''
}
trap 'stop_server; rm -rf "$work"' EXIT
trap 'exit 130' INT TERM

load=("$BENCH_ROOT/tools/thunder-loadgen" -H)     # one HTTP request per connection
if [ ! -x "$BENCH_ROOT/tools/thunder-loadgen" ]; then
    echo "peers: tools/thunder-loadgen is not built (run make): skipped"
    exit 0
fi

# apt-get install, without starting the packaged service (RUNLEVEL=1
# makes invoke-rc.d leave it stopped); one apt-get update and retry.
apt_install() {
    local -a cmd=(env RUNLEVEL=1 DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$@")
    "${cmd[@]}" >>"$work/apt.log" 2>&1 && return 0
    apt-get update -q >>"$work/apt.log" 2>&1
    "${cmd[@]}" >>"$work/apt.log" 2>&1
}

# have NAME CHECK-COMMAND PACKAGE...: true when usable (installing if root).
have() {
    local name=$1 check=$2
    shift 2
    bash -c "$check" >/dev/null 2>&1 && return 0
    if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then
        echo "peers: $name not installed and not root: skipped (as root: apt-get install -y $*)"
        return 1
    fi
    echo "peers: installing $* ..."
    if ! apt_install "$@" || ! bash -c "$check" >/dev/null 2>&1; then
        echo "peers: $name: apt-get install -y $* failed: skipped ($(tail -n 1 "$work/apt.log"))"
        return 1
    fi
}

nginx_package() {
    local cand
    cand=$(apt-cache policy nginx-light 2>/dev/null | sed -n 's/^ *Candidate: *//p')
    if [ -n "$cand" ] && [ "$cand" != "(none)" ]; then echo nginx-light; else echo nginx; fi
}

# Waits until the server has $1 children and answers; sets srv_kids.
await_server() {
    local want=$1 port=$2 kids
    for _ in $(seq 200); do
        kill -0 "$srv_pid" 2>/dev/null || return 1
        kids=$(proc_children "$srv_pid") || kids=
        if [ -n "$kids" ] && [ "$(tr ',' '\n' <<<"$kids" | wc -l)" -ge "$want" ] &&
            "${load[@]}" -p "$port" -n 1 -T 1000 >/dev/null 2>&1; then
            srv_kids=$kids
            return 0
        fi
        sleep 0.05
    done
    return 1
}

start_uwsgi() {  # workers variant port
    local -a env_cmd=(env) args=(--plugin python3 --http-socket "127.0.0.1:$3"
        --wsgi-file "$here/peers/wsgi_app.py" --processes "$1" --master
        --disable-logging --die-on-term --need-app --listen 1024)
    case $2 in
        thunder-lock) args+=(--thunder-lock) ;;
        auto) env_cmd+=("LD_PRELOAD=$lib" THUNDER_MODE=auto) ;;
    esac
    (cd "$work" && exec "${env_cmd[@]}" uwsgi "${args[@]}") >"$work/server.log" 2>&1 &
    srv_pid=$!
}

start_nginx() {  # workers variant port
    local dir=$work/nginx-$1-$2 mutex=off
    local -a env_cmd=(env)
    mkdir -p "$dir"
    case $2 in
        accept_mutex_on) mutex=on ;;
        auto) env_cmd+=("LD_PRELOAD=$lib" THUNDER_MODE=auto) ;;
    esac
    cat >"$dir/nginx.conf" <<CONF
worker_processes $1;
daemon off;
master_process on;
pid $dir/nginx.pid;
error_log $dir/error.log warn;
events { worker_connections 1024; accept_mutex $mutex; }
http {
    access_log off;
    client_body_temp_path $dir/body;
    proxy_temp_path $dir/proxy;
    fastcgi_temp_path $dir/fastcgi;
    uwsgi_temp_path $dir/uwsgi;
    scgi_temp_path $dir/scgi;
    server {
        listen 127.0.0.1:$3 backlog=1024;
        location / { default_type text/plain; return 200 "\$pid\n"; }
    }
}
CONF
    "${env_cmd[@]}" nginx -p "$dir" -c "$dir/nginx.conf" -e "$dir/error.log" >"$work/server.log" 2>&1 &
    srv_pid=$!
}

rows=$work/rows.csv
: >"$rows"

measure() {  # server workers variant workload port
    local out=$work/load.out
    case $4 in
        seq)  timeout 90 "${load[@]}" -p "$5" -n "$SEQ_CONNS" -c 1 -d 60 -g "$GAP_US" -P "$srv_kids" >"$out" 2>>"$work/load.err" ;;
        conc) timeout $((CONC_SECONDS + 30)) "${load[@]}" -p "$5" -n 1000000 -c "$CONC_CLIENTS" \
                  -d "$CONC_SECONDS" -g "$GAP_US" -P "$srv_kids" >"$out" 2>>"$work/load.err" ;;
    esac
    local o k row="$1,$2,$4,$3"
    o=$(cat "$out")
    for k in conns ok failed seconds wakeups_per_conn jain max_share rps p50_us p99_us cpu_ms_per_1000 workers_seen; do
        row+=",$(cell_get "$k" "$o")"
    done
    row+=",$(cell_accepts "$o")"
    echo "$row" >>"$rows"
    printf 'peers: %-6s %3s %-16s %-4s wake/conn %7s  Jain %6s  max %6s  req/s %8s  p50 %5s us  p99 %5s us%s\n' \
        "$1" "$2" "$3" "$4" "$(cell_get wakeups_per_conn "$o")" "$(cell_get jain "$o")" "$(cell_get max_share "$o")" \
        "$(cell_get rps "$o")" "$(cell_get p50_us "$o")" "$(cell_get p99_us "$o")" \
        "$( [ "$(cell_get failed "$o")" = 0 ] || echo "  FAILED $(cell_get failed "$o")")"
}

run_peer() {  # server variant...
    local server=$1 workers variant port workload
    shift
    for workers in $WORKERS; do
        for variant in "$@"; do
            port=$(free_port)
            case $server in
                uwsgi) start_uwsgi "$workers" "$variant" "$port" ;;
                nginx) start_nginx "$workers" "$variant" "$port" ;;
            esac
            if ! await_server "$workers" "$port"; then
                echo "peers: $server $workers $variant: did not start: $(tail -n 2 "$work/server.log" | tr '\n' ' ')"
                stop_server
                continue
            fi
            for workload in $WORKLOADS; do
                measure "$server" "$workers" "$variant" "$workload" "$port"
            done
            stop_server
            if [ "$variant" = auto ] && grep -q 'libthunder.*warn' "$work/server.log" "$work"/nginx-*/error.log 2>/dev/null; then
                echo "peers: $server $workers auto: libthunder warned: $(grep -h 'libthunder.*warn' "$work/server.log" "$work"/nginx-*/error.log | head -n 1)"
            fi
        done
    done
}

if have uWSGI "uwsgi --plugin python3 --version" uwsgi-core uwsgi-plugin-python3; then
    echo "peers: $(uwsgi --version | sed 's/^/uWSGI /'), python3 plugin"
    run_peer uwsgi none thunder-lock auto
fi
if have nginx "nginx -v" "$(nginx_package)"; then
    echo "peers: $(nginx -v 2>&1 | sed 's/^nginx version: //')"
    run_peer nginx none accept_mutex_on auto
fi

if [ -n "$csv" ] && [ -s "$rows" ]; then
    [ -s "$csv" ] || echo "$RAW_HEADER" >"$csv"
    cat "$rows" >>"$csv"
fi
[ -s "$work/load.err" ] && sed 's/^/peers: client: /' "$work/load.err" | head -n 5
exit 0

# shellcheck shell=bash
# shellcheck disable=SC2034  # SRV_* are set here for the caller
# server.bash - start, find and stop a server under test: the one copy of
# this code, sourced by thunder-ab, bench/lib.sh and tests/helpers.bash.
# Installed as PREFIX/lib/libthunder/server.bash.
#
#   srv_start [--session] OUT ERR CMD [ARG...]
#       CMD in the background, stdin /dev/null, stdout to OUT, stderr appended
#       to ERR, every inherited fd above 2 closed (a test runner's pipe held
#       by a server would keep the runner waiting).  --session: in a session
#       and process group of its own (setsid without a fork, so the pid is
#       the command's).  Sets SRV_JOB.
#   srv_ready_line OUT JOB      waits (10 s) for an example's ready line
#                               "port=P master=M workers=W,..." in OUT; sets
#                               SRV_PORT SRV_MASTER SRV_WORKERS; 1 if none
#   srv_await_port PORT JOB S   waits (S seconds) until PORT answers; 1 if
#                               JOB exited first or time ran out (SRV_DIED=1/0)
#   srv_answers PORT            something accepts on 127.0.0.1:PORT now
#   srv_listener_inodes PORT    inodes of the sockets listening on PORT
#   srv_descendants PID         every descendant of PID into SRV_DESC
#   srv_workers PID PORT        the workers: descendants of PID that hold a
#                               listener of PORT, less those that are
#                               ancestors of another holder (masters); PID
#                               itself if no descendant holds one.  Comma list.
#   srv_pick_port               a free port outside the ephemeral range
#   srv_stop JOB [MASTER [WORKERS]]
#       SIGTERM to MASTER (default JOB); waits SRV_STOP_S (8) seconds for it
#       (and, for a --session job, its whole group) to go; then SIGKILL what
#       is left: the group, MASTER, each of WORKERS, JOB.  Reaps JOB: its
#       exit status in SRV_STATUS.  Only these pids and groups are signalled.
#   srv_alive PID               running (not gone, not a zombie)
#   srv_group_alive PGID        a live process is in the group
#   srv_now_ms                  wall-clock milliseconds
#   jain X...                   Jain's fairness index of the numbers given
#                               (the shell copy; C: tools/common/fairness.h)

SRV_STOP_S=${SRV_STOP_S:-8}
SRV_DESC=()
SRV_PARENT=()
SRV_SESSIONS=' '        # jobs started with --session (they lead a group)

srv_now_ms() {
    local t=${EPOCHREALTIME:-}
    if [ -n "$t" ]; then
        t=${t/[.,]/}
        echo $((10#$t / 1000))
    else
        echo $(($(date +%s%N) / 1000000))
    fi
}

srv_alive() {
    local stat
    { read -r stat <"/proc/$1/stat"; } 2>/dev/null || return 1
    stat=${stat##*) }                   # after the command name
    [ "${stat:0:1}" != Z ] && [ "${stat:0:1}" != X ]
}

srv_group_alive() {
    local stat rest
    local -a f
    for stat in /proc/[0-9]*/stat; do
        { read -r rest <"$stat"; } 2>/dev/null || continue
        rest=${rest##*) }
        read -r -a f <<<"$rest"
        [ "${f[2]:-}" = "$1" ] && [ "${f[0]}" != Z ] && return 0
    done
    return 1
}

srv_start() {
    local session=0 out err
    [ "${1:-}" = --session ] && { session=1; shift; }
    out=$1 err=$2
    shift 2
    (
        for fdpath in /proc/self/fd/*; do
            fd=${fdpath##*/}
            [ "$fd" -gt 2 ] && { exec {fd}>&-; } 2>/dev/null
        done
        # not a group leader here: setsid() needs no fork, $! stays the pid
        [ "$session" = 1 ] && exec setsid -- "$@"
        exec "$@"
    ) </dev/null >"$out" 2>>"$err" &
    SRV_JOB=$!
    [ "$session" = 1 ] && SRV_SESSIONS+="$SRV_JOB "
    return 0
}

srv_ready_line() {
    local out=$1 job=$2 line='' i
    SRV_PORT='' SRV_MASTER='' SRV_WORKERS=''
    for ((i = 0; i < 200; i++)); do
        line=$(head -n 1 "$out" 2>/dev/null || true)
        [ -n "$line" ] && break
        srv_alive "$job" || break
        sleep 0.05
    done
    [[ $line =~ ^port=([0-9]+)\ master=([0-9]+)\ workers=([0-9,]+)$ ]] || return 1
    SRV_PORT=${BASH_REMATCH[1]} SRV_MASTER=${BASH_REMATCH[2]} SRV_WORKERS=${BASH_REMATCH[3]}
}

# A bare connect through bash's /dev/tcp, closed at once: any protocol.
srv_answers() {
    # shellcheck disable=SC2016 # $1 is the inner shell's argument
    timeout 1 bash -c 'exec 9<>"/dev/tcp/127.0.0.1/$1"' _ "$1" 2>/dev/null
}

srv_await_port() {
    local port=$1 job=$2 deadline
    deadline=$(($(srv_now_ms) + $3 * 1000))
    SRV_DIED=0
    while [ "$(srv_now_ms)" -lt "$deadline" ]; do
        srv_answers "$port" && return 0
        srv_alive "$job" || { SRV_DIED=1; return 1; }
        sleep 0.1
    done
    srv_answers "$port"
}

srv_listener_inodes() {
    awk -v p="$(printf ':%04X' "$1")" '$4 == "0A" && substr($2, length($2) - 4) == p { print $10 }' \
        /proc/net/tcp /proc/net/tcp6 2>/dev/null
}

# Every descendant of $1 (not $1 itself) into SRV_DESC, and its parent
# into SRV_PARENT[pid].  Builtins only: this runs in wait loops.
srv_descendants() {
    SRV_DESC=()
    SRV_PARENT=()
    srv_add_children "$1"
}

srv_add_children() {
    local task kid
    local -a kids
    for task in /proc/"$1"/task/*/children; do
        kids=()
        # (the file has no newline: read "fails" but fills kids)
        { read -r -a kids <"$task"; } 2>/dev/null
        for kid in "${kids[@]}"; do
            SRV_DESC+=("$kid")
            SRV_PARENT[kid]=$1
            srv_add_children "$kid"
        done
    done
}

# The pids among $2... that hold a socket whose inode is in $1 (" a b c ").
srv_holders() {
    local inodes=$1
    shift
    [ $# -gt 0 ] || return 0
    find "${@/#//proc/}" -mindepth 1 -maxdepth 1 -lname 'socket:*' -printf '%h %l\n' 2>/dev/null |
        awk -v inodes="$inodes" '{ split($1, p, "/"); i = $2; gsub(/[^0-9]/, "", i)
                                   if (index(inodes, " " i " ") && !seen[p[3]]++) print p[3] }'
}

srv_workers() {
    local top=$1 inodes pid up
    local -a holders found=() dirs=()
    local -A master=()
    inodes=" $(srv_listener_inodes "$2" | tr '\n' ' ') "
    srv_descendants "$top"
    for pid in "${SRV_DESC[@]}"; do dirs+=("$pid/fd"); done
    mapfile -t holders < <(srv_holders "$inodes" "${dirs[@]}")
    # a holder above another holder is a master (it forked them)
    for pid in "${holders[@]}"; do
        up=${SRV_PARENT[pid]:-}
        while [ -n "$up" ] && [ "$up" != "$top" ]; do
            master[$up]=1
            up=${SRV_PARENT[up]:-}
        done
    done
    for pid in "${holders[@]}"; do
        [ -n "${master[$pid]:-}" ] || found+=("$pid")
    done
    [ ${#found[@]} -gt 0 ] || found=("$top")
    printf '%s\n' "${found[@]}" | sort -n | paste -sd, -
}

# Outside the ephemeral range: a client's TIME_WAIT on a port makes bind()
# fail there even with SO_REUSEADDR.  The server's own bind has the last word.
srv_pick_port() {
    local port i lo=10000 span=20000 elo ehi
    if read -r elo ehi </proc/sys/net/ipv4/ip_local_port_range 2>/dev/null; then
        if [ "$elo" -gt 12000 ]; then
            span=$((elo - lo))
        elif [ "$ehi" -lt 63000 ]; then
            lo=$((ehi + 1)) span=$((65535 - ehi))
        fi
    fi
    for ((i = 0; i < 50; i++)); do
        port=$((lo + (RANDOM * 32768 + RANDOM) % span))
        [ -z "$(srv_listener_inodes "$port")" ] || continue
        if type -P ss >/dev/null; then
            [ -z "$(ss -Htan "sport = :$port" 2>/dev/null)" ] || continue
        fi
        echo "$port"
        return 0
    done
    return 1
}

# Is anything of this server still running?
srv_running() {
    local job=$1 master=$2
    srv_alive "$master" && return 0
    [[ $SRV_SESSIONS == *" $job "* ]] && srv_group_alive "$job"
}

# bash reports a job killed by a signal ("Killed") on stderr whenever it
# notices: the whole stop runs with stderr silenced, its one message after.
srv_stop() {
    SRV_STOP_MSG=''
    srv_stop_quietly "$@" 2>/dev/null
    [ -z "$SRV_STOP_MSG" ] || echo "$SRV_STOP_MSG" >&2
    return 0
}

srv_stop_quietly() {
    local job=$1 master=${2:-$1} workers=${3:-} pid deadline i
    SRV_STATUS=
    [ -n "$job" ] || return 0
    if srv_alive "$master"; then
        kill -TERM "$master" 2>/dev/null || true
        deadline=$(($(srv_now_ms) + SRV_STOP_S * 1000))
        while srv_running "$job" "$master" && [ "$(srv_now_ms)" -lt "$deadline" ]; do
            sleep 0.05
        done
    fi
    if [[ $SRV_SESSIONS == *" $job "* ]] && srv_group_alive "$job"; then
        SRV_STOP_MSG="server group $job still running ${SRV_STOP_S}s after SIGTERM: SIGKILL"
        kill -KILL -- "-$job" 2>/dev/null || true
    fi
    for pid in "$master" ${workers//,/ }; do
        srv_alive "$pid" && { kill -KILL "$pid" 2>/dev/null || true; }
    done
    for ((i = 0; i < 100; i++)); do
        srv_alive "$job" || break
        sleep 0.05
    done
    srv_alive "$job" && { kill -KILL "$job" 2>/dev/null || true; }
    SRV_STATUS=0
    wait "$job" 2>/dev/null || SRV_STATUS=$?
    SRV_SESSIONS=${SRV_SESSIONS/ $job / }
    # the master reaps its workers; give the last exits a moment
    for pid in ${workers//,/ }; do
        for ((i = 0; i < 40; i++)); do srv_alive "$pid" || break; sleep 0.05; done
    done
    return 0
}

jain() {
    awk 'BEGIN { s = 0; q = 0; n = 0 }
         { for (i = 1; i <= NF; i++) { s += $i; q += $i * $i; n++ } }
         END { if (q == 0) print "0.0000"; else printf "%.4f\n", s * s / (n * q) }' <<<"$*"
}

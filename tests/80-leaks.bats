#!/usr/bin/env bats
# Leaks: start/stop cycles leave no segment behind (after the last clean
# exit, or after gc when the whole group was killed), and long-running
# workers do not grow in fds or memory.

load helpers

STYLES="ex_poll ex_select ex_epoll ex_epoll_shared ex_epoll_excl ex_threads ex_evloop ex_accept"
CYCLES=${LEAK_CYCLES:-12}

# 1 if the segment of listener inode $1 exists, else 0.
my_segments() {
    [ -e "$(segment_path "$1")" ] && echo 1 || echo 0
}

@test "leaks: $CYCLES clean start/stop cycles of every example leave no segment" {
    for style in $STYLES; do
        for ((c = 0; c < CYCLES; c++)); do
            start_example "$style" 4 THUNDER_MODE=auto
            socat_conns 3
            all_answered 3
            inode=$LISTEN_INODE
            stop_example
            [ "$EXAMPLE_STATUS" -eq 0 ] || fail "$style: exit status $EXAMPLE_STATUS"
            [ "$(my_segments "$inode")" -eq 0 ] || fail "$style cycle $c: segment $inode left behind"
            STARTED=()
        done
    done
}

@test "leaks: $CYCLES kill -9 of the whole group of every example, then gc: no segment left" {
    local style mode
    for style in $STYLES; do
        for ((c = 0; c < CYCLES; c++)); do
            # the lock and the exclusive paths leave different state behind
            mode=auto
            ((c % 2)) && mode=lock
            start_example "$style" 4 "THUNDER_MODE=$mode"
            socat_conns 2
            all_answered 2
            inode=$LISTEN_INODE
            [ "$(my_segments "$inode")" -eq 1 ] || fail "$style cycle $c ($mode): no segment for $inode while serving"
            # workers first: a master killed first sends them SIGTERM (PDEATHSIG)
            # and their clean exit would remove the segment
            for pid in ${WORKERS//,/ } $MASTER; do kill -KILL "$pid"; done
            stop_example
            # (left for gc, unless another server's start already swept it)
            "$THUNDER_STAT" --gc >/dev/null
            [ "$(my_segments "$inode")" -eq 0 ] || fail "$style cycle $c ($mode): gc left segment $inode"
            # shellcheck disable=SC2034  # read by the helpers' teardown
            STARTED=()
        done
    done
}

fd_count() { ls "/proc/$1/fd" | wc -l; }
rss_kb() { awk '/^VmRSS:/ { print $2 }' "/proc/$1/status"; }

# fd_count PID once two looks 0.1 s apart agree (up to half a second): a
# worker between its last reply and that connection's close holds one fd
# more for a moment.
settled_fd_count() {
    local n m
    n=$(fd_count "$1")
    for _ in 1 2 3 4 5; do
        sleep 0.1
        m=$(fd_count "$1")
        [ "$m" -eq "$n" ] && break
        n=$m
    done
    echo "$n"
}

# A warm-up run of each shape (a thread that only ever queued for the
# lock under concurrency gets its doorbell there, once), then many more
# connections: the workers' fds and resident memory must not move (a
# leak per connection would show).
same_fds_and_memory() {
    local style=$1 mode=$2 pid fds rss
    start_example "$style" 4 "THUNDER_MODE=$mode"
    run_loadgen 1000
    [ "$(lg failed)" -eq 0 ] || fail "$style $mode: warm-up failed"
    run_loadgen 1000 -c 2
    [ "$(lg failed)" -eq 0 ] || fail "$style $mode: concurrent warm-up failed"
    declare -A fds0 rss0
    for pid in ${WORKERS//,/ }; do fds0[$pid]=$(settled_fd_count "$pid"); rss0[$pid]=$(rss_kb "$pid"); done
    run_loadgen 6000 -c 2
    [ "$(lg failed)" -eq 0 ] || fail "$style $mode: connections failed"
    for pid in ${WORKERS//,/ }; do
        fds=$(settled_fd_count "$pid") rss=$(rss_kb "$pid")
        echo "# $style $mode worker $pid: fds ${fds0[$pid]} -> $fds, rss ${rss0[$pid]} -> $rss kB" >&3
        [ "$fds" -eq "${fds0[$pid]}" ] || fail "$style $mode: worker $pid fds grew ${fds0[$pid]} -> $fds"
        [ "$rss" -le $((${rss0[$pid]} + 256)) ] ||
            fail "$style $mode: worker $pid rss grew ${rss0[$pid]} -> $rss kB"
    done
    stop_example
}

@test "leaks: every example's workers keep the same fds and memory over 8000 connections (auto)" {
    local style
    for style in $STYLES; do
        same_fds_and_memory "$style" auto
    done
}

@test "leaks: the same under the lock (poll, select with doorbell, threads)" {
    local style
    for style in ex_poll ex_select ex_threads; do
        same_fds_and_memory "$style" lock
    done
}

# shellcheck shell=bash
# What the tests read from /proc about servers, shared by tests/helpers.bash
# (the bats suites) and tests/death.sh (a standalone script).
#
#   listener_inode PORT   inode of the socket listening on 127.0.0.1:PORT
#   alive PID             PID is running (not gone, not a zombie)
#   segment_path INODE [UID]
#                         the file of the libthunder segment of a socket inode
#
# THUNDER_STAT is the thunder-stat of this tree (set here unless given).

THUNDER_STAT=${THUNDER_STAT:-$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)/tools/thunder-stat}

# The inode of the TCP socket listening on 127.0.0.1:$1, from /proc/net/tcp.
listener_inode() {
    local hexport
    hexport=$(printf '%04X' "$1")
    awk -v p=":$hexport" '$4 == "0A" && substr($2, length($2) - 4) == p { print $10; exit }' \
        /proc/net/tcp
}

# The segment's name is the segment core's (shim/segcore.c): asked of
# thunder-stat, never spelled in a script.
segment_path() {
    "$THUNDER_STAT" --path "$1" ${2:+--uid "$2"}
}

# Is pid a live process of ours (not a zombie waiting to be reaped)?
alive() {
    local state
    state=$(awk '{ print $3 }' "/proc/$1/stat" 2>/dev/null) || return 1
    [ -n "$state" ] && [ "$state" != Z ]
}

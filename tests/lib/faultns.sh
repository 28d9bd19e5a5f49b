#!/bin/bash
# faultns.sh FAULT -- COMMAND [ARG...]: run COMMAND with /dev/shm broken.
# Run it in a private mount namespace (unshare -m --propagation private):
# the mounts made here are seen by COMMAND alone.
#
#   full      a 16 KiB tmpfs over /dev/shm: a segment's pages do not fit
#   inodes    a tmpfs with one inode (its root): no file can be created
#   ro        a read-only tmpfs
#   absent    no /dev/shm at all (an empty tmpfs over /dev, /dev/null kept)
#   nofile=N  no namespace needed: every fd above 2 closed, then the fd
#             limit (RLIMIT_NOFILE) set to N
set -eu
fault=$1
shift
[ "${1:-}" = -- ] && shift
case $fault in
full)   mount -t tmpfs -o size=16k,mode=1777 faults /dev/shm ;;
inodes) mount -t tmpfs -o nr_inodes=1,mode=1777 faults /dev/shm ;;
ro)     mount -t tmpfs -o ro,mode=1777 faults /dev/shm ;;
absent)
    keep=$(mktemp)
    mount --bind /dev/null "$keep"
    mount -t tmpfs -o size=64k faults /dev
    touch /dev/null
    mount --bind "$keep" /dev/null
    ;;
nofile=*)
    for fd in "/proc/$$/fd/"*; do
        fd=${fd##*/}
        [ "$fd" -gt 2 ] && eval "exec $fd>&-"
    done
    ulimit -n "${fault#nofile=}"
    ;;
*) echo "faultns.sh: unknown fault '$fault'" >&2; exit 2 ;;
esac
exec "$@"

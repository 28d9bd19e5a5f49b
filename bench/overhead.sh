#!/bin/bash
# Pass-through cost: ns per call on non-listener fds, without the shim,
# with it (default mode) and with THUNDER_MODE=off, best of 5 runs each;
# plus the price of one rotation (EPOLL_CTL_DEL + ADD).
set -u
root=$(cd "$(dirname "$0")/.." && pwd)
prog=$root/bench/overhead
iters=${OVERHEAD_ITERS:-200000}

best() {  # lowest value of each key over 5 runs of "$@ ITERS", in first-seen order
    for _ in 1 2 3 4 5; do "$@" "$iters"; done |
        awk -F= '!($1 in m) { order[n++] = $1; m[$1] = $2 } $2 < m[$1] { m[$1] = $2 }
                 END { for (i = 0; i < n; i++) print order[i] "=" m[order[i]] }'
}

none=$(best "$prog")
auto=$(best env LD_PRELOAD="$root/libthunder.so" "$prog")
off=$(best env LD_PRELOAD="$root/libthunder.so" THUNDER_MODE=off "$prog")
printf '%-24s %10s %10s %10s %10s\n' "call (ns, best of 5)" "no shim" "auto" "off" "added"
while IFS='=' read -r key base; do
    a=$(sed -n "s/^$key=//p" <<<"$auto")
    o=$(sed -n "s/^$key=//p" <<<"$off")
    printf '%-24s %10s %10s %10s %10s\n' "${key%_ns}" "$base" "$a" "$o" \
        "$(awk -v a="$a" -v b="$base" 'BEGIN { printf "%+.1f", a - b }')"
done <<<"$none"

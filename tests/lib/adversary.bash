# shellcheck shell=bash
# shellcheck disable=SC2034  # variables set here are read by the .bats files
# A hostile local user against a server under the library (README
# "Security"), shared by tests/96-adversary.bats (every attack at once, in
# make check) and tests/adversary/each.bats (each attack alone, make
# check-adversary).  The attacks, from tests/progs/squat.c, run as another
# user ("nobody", with setpriv):
#
#   names  before the server starts, files at the segment names the
#          listener will probably get (socket inodes are handed out in
#          runs: 16,000 names around where a socket of the attacker's own
#          lands): regular files, FIFOs, symbolic links to a file of the
#          attacker's;
#   bells  before the server starts, the abstract doorbell names derived
#          from the tids its threads will probably get (the naming of
#          earlier releases) bound by the attacker;
#   flood  while the server works, datagrams to every doorbell of the
#          server's user listed in /proc/net/unix.
#
# Against a server run by root and by another user ("daemon"), measured
# without and then with the attacker in the same test: the library stays
# on (no pass-through), the wake-ups per connection and Jain's index stay
# as without the attacker, the hand-off latency (loadgen's median
# connection time) within 2x (plus 1 ms: the machine is shared), and the
# attacker's files are never followed, read, truncated or written (size,
# mtime and atime unchanged, the link target's too).  Everything the
# attacker made is removed in teardown, by the attacker.
#
#   adversary_setup / adversary_teardown     setup and teardown of the files
#   attack WHO EXAMPLE MODE ATTACK...        WHO: root or victim; ATTACK:
#                                            names, bells, flood (any set)

CONNS=200
GAP_US=500
ATTACKER=nobody
VICTIM=daemon

adversary_setup() {
    [ "$(id -u)" -eq 0 ] || skip "needs root: the attacker and the second server user are other users"
    command -v setpriv >/dev/null || skip "setpriv (util-linux) is not installed"
    id -u "$ATTACKER" >/dev/null 2>&1 || skip "no user $ATTACKER to attack with"
    id -u "$VICTIM" >/dev/null 2>&1 || skip "no user $VICTIM to run a non-root server as"
    BELLS_PID=
    FLOOD_PID=
    SQUAT_UID=
    # a directory the attacker can reach, with its program and its file
    ADV_DIR=$(mktemp -d /tmp/thunder-adversary.XXXXXX)
    chmod 0755 "$ADV_DIR"
    install -m 0755 "$(prog squat)" "$ADV_DIR/squat"
    TARGET=$ADV_DIR/precious
    echo "the attacker's own file" >"$TARGET"
    chown "$ATTACKER" "$TARGET"
    touch -d '2020-01-01 00:00:00' "$TARGET"
}

adversary_teardown() {
    local started=("${STARTED[@]}")
    stop_attackers
    helpers_teardown
    remove_victim_segments "${started[@]}"
    [ -z "$SQUAT_UID" ] || as_attacker "$ADV_DIR/squat" unnames "$SQUAT_UID" "$SQUAT_FROM" "$SQUAT_TO"
    rm -rf "$ADV_DIR"
}

as_attacker() {
    setpriv --reuid="$ATTACKER" --regid="$(id -g "$ATTACKER")" --clear-groups "$@"
}

# The segments of the servers (STARTED entries) this test ran as VICTIM:
# the shim removes them at a clean exit; a killed server leaves them.
remove_victim_segments() {
    local entry job master workers inode uid
    uid=$(id -u "$VICTIM")
    for entry in "$@"; do
        IFS=: read -r job master workers inode <<<"$entry"
        [ -n "$inode" ] && rm -f "$(segment_path "$inode" "$uid")"
    done
    return 0
}

# ---- the server ------------------------------------------------------------

# start_server WHO EXAMPLE MODE: WHO is root or victim; sets SERVER_UID.
start_server() {
    local who=$1 ex=$2 mode=$3
    if [ "$who" = root ]; then
        SERVER_UID=0
        EX_WRAP=
    else
        SERVER_UID=$(id -u "$VICTIM")
        EX_WRAP="setpriv --reuid=$VICTIM --regid=$(id -g "$VICTIM") --clear-groups"
    fi
    start_example "$ex" 8 "THUNDER_MODE=$mode"
    EX_WRAP=
}

# Load the server; M_WAKE, M_JAIN, M_P50 (us).  Fails if the library went off.
measure() {
    local label=$1
    run_loadgen "$CONNS" -g "$GAP_US"
    [ "$(lg ok)" = "$CONNS" ] || fail "$label: $(lg ok) of $CONNS answered" || return 1
    M_WAKE=$(lg wakeups_per_conn)
    M_JAIN=$(lg jain)
    M_P50=$(lg p50_us)
    if grep -E 'pass-through|refusing' "$EX_ERR" >&2; then
        fail "$label: the library switched off for this listener (above)"
        return 1
    fi
}

# baseline WHO EXAMPLE MODE: the same server without the attacker.
baseline() {
    start_server "$@"
    measure "without the attacker"
    B_WAKE=$M_WAKE B_JAIN=$M_JAIN B_P50=$M_P50
    stop_example
}

# The attacked run against the baseline, wide margins; one line for the table.
compare() {
    local attack=$1 mode=$2 who=$3
    echo "# attack=$attack mode=$mode server=$who: wake-ups/conn $B_WAKE -> $M_WAKE," \
        "Jain $B_JAIN -> $M_JAIN, p50 $B_P50 -> $M_P50 us" >&3
    le "$M_WAKE" "$(awk -v b="$B_WAKE" 'BEGIN { print b * 1.5 + 0.5 }')" ||
        fail "wake-ups per connection $M_WAKE with the attacker, $B_WAKE without" || return 1
    le "$(awk -v b="$B_JAIN" 'BEGIN { print b - 0.1 }')" "$M_JAIN" ||
        fail "Jain $M_JAIN with the attacker, $B_JAIN without; counts $(lg_counts)" || return 1
    le "$M_P50" "$(awk -v b="$B_P50" 'BEGIN { print 2 * b + 1000 }')" ||
        fail "hand-off latency $M_P50 us with the attacker, $B_P50 us without" || return 1
}

# ---- names ---------------------------------------------------------------------

# What the attacker owns under the segment names: name, type, size, mtime, atime.
attacker_files() {
    {
        find /dev/shm -maxdepth 1 -user "$ATTACKER" -name "libthunder.$SQUAT_UID.*" \
            -printf '%f %y %s %T@ %A@\n' 2>/dev/null
        stat -c '%n %s %Y %X' "$TARGET"
    } | LC_ALL=C sort
}

# 16,000 names around the kernel's inode counter, as the attacker sees it.
squat_names() {
    local out
    SQUAT_UID=$1
    out=$(as_attacker "$ADV_DIR/squat" names "$SQUAT_UID" 6000 10000 "$TARGET")
    SQUAT_FROM=$(sed -n 's/^from=\([0-9]*\) .*/\1/p' <<<"$out")
    SQUAT_TO=$(sed -n 's/.* to=\([0-9]*\) .*/\1/p' <<<"$out")
    [ -n "$SQUAT_FROM" ] && [ -n "$SQUAT_TO" ] || fail "the squatter said '$out'" || return 1
    SQUAT_BEFORE=$(attacker_files)
}

unsquat_names() {
    as_attacker "$ADV_DIR/squat" unnames "$SQUAT_UID" "$SQUAT_FROM" "$SQUAT_TO"
    SQUAT_UID=
}

# Stop the attacker's background programs (by pid, ours alone).
stop_attackers() {
    local pid
    for pid in "$BELLS_PID" "$FLOOD_PID"; do
        [ -n "$pid" ] || continue
        kill -TERM "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
    BELLS_PID=''
    FLOOD_PID=''
}

# Bind the doorbell names of the next 3000 tids (held 60 s at most).
squat_bells() {
    local last i
    last=$(cat /proc/sys/kernel/ns_last_pid)
    # (exec: the pid is the squatter itself; ulimit: for it alone)
    (ulimit -n 4096 && exec setpriv --reuid="$ATTACKER" --regid="$(id -g "$ATTACKER")" \
        --clear-groups "$ADV_DIR/squat" bells "$1" $((last + 1)) $((last + 3000)) 60) \
        >"$BATS_TEST_TMPDIR/bells.out" &
    BELLS_PID=$!
    for ((i = 0; i < 100; i++)); do
        grep -q '^bound=' "$BATS_TEST_TMPDIR/bells.out" && break
        sleep 0.05
    done
    echo "# doorbell squatter: $(cat "$BATS_TEST_TMPDIR/bells.out") names from tid $((last + 1))" >&3
}

# Flood the doorbells of uid $1 (30 s or 5,000,000 datagrams at most).
start_flood() {
    (exec setpriv --reuid="$ATTACKER" --regid="$(id -g "$ATTACKER")" --clear-groups \
        "$ADV_DIR/squat" flood "$1" 30 5000000) >"$BATS_TEST_TMPDIR/flood.out" &
    FLOOD_PID=$!
    sleep 0.2
}

stop_flood() {
    kill -TERM "$FLOOD_PID" 2>/dev/null || true
    wait "$FLOOD_PID" || true
    FLOOD_PID=
    echo "# flooder: $(cat "$BATS_TEST_TMPDIR/flood.out")" >&3
    grep -Eq '^sent=[1-9][0-9]* names=[1-9]' "$BATS_TEST_TMPDIR/flood.out" ||
        fail "the flooder found no doorbell to flood: $(cat "$BATS_TEST_TMPDIR/flood.out")"
}

# The server's doorbells are in use: bound names of its user in /proc/net/unix.
expect_doorbells() {
    grep -q " @libthunder\.$SERVER_UID\." /proc/net/unix ||
        fail "no doorbell of uid $SERVER_UID bound: the wait did not use doorbells"
}

# Start the server with the names squatted; retried (3 times) when the
# listener's inode falls outside the squatted range.  PLAIN: its plain name.
start_squatted() {
    local who=$1 ex=$2 mode=$3 try uid
    uid=0
    [ "$who" = root ] || uid=$(id -u "$VICTIM")
    for try in 1 2 3; do
        squat_names "$uid"
        start_server "$who" "$ex" "$mode"
        PLAIN=/dev/shm/libthunder.$SERVER_UID.$LISTEN_INODE
        [ "$(stat -c %U "$PLAIN" 2>/dev/null)" = "$ATTACKER" ] && return 0
        echo "# try $try: inode $LISTEN_INODE outside the squatted $SQUAT_FROM..$SQUAT_TO" >&3
        stop_example
        unsquat_names
    done
    skip "the listener's inode was never among the squatted names (3 tries)"
}

# The segment at an alternative name of the server's, one for all workers.
expect_alternative() {
    local alt
    alt=$(segment_path "$LISTEN_INODE" "$SERVER_UID")
    [[ $alt =~ ^$PLAIN\.[0-9a-f]{16}$ ]] || fail "the segment is at '$alt', not an alternative name" || return 1
    [ "$(stat -c %u "$alt")" = "$SERVER_UID" ] || fail "$alt is not the server's" || return 1
    [ "$(find /dev/shm -maxdepth 1 -user "$SERVER_UID" -name "${PLAIN#/dev/shm/}.*" | wc -l)" = 1 ] ||
        fail "the workers are not on one segment: $(find /dev/shm -maxdepth 1 -name "${PLAIN#/dev/shm/}*")"
}

# Nothing of the attacker's changed: every file still there is as it was
# (another root test on the machine may remove some at its own names),
# and the one at this listener's name is still there.
expect_attacker_files_intact() {
    local after changed
    after=$(attacker_files)
    unsquat_names               # at once: other root servers on this machine
    changed=$(LC_ALL=C comm -13 <(echo "$SQUAT_BEFORE") <(echo "$after"))
    [ -z "$changed" ] || fail "the attacker's files changed: $(head -5 <<<"$changed")" || return 1
    grep -q "^${PLAIN#/dev/shm/} " <<<"$after" || fail "the file at $PLAIN is gone"
}

# attack WHO EXAMPLE MODE ATTACK...: baseline, then the attacked run, compared.
attack() {
    local who=$1 ex=$2 mode=$3 names='' bells='' flood='' a
    shift 3
    for a in "$@"; do
        case $a in names) names=1 ;; bells) bells=1 ;; flood) flood=1 ;; esac
    done
    baseline "$who" "$ex" "$mode"
    [ -z "$bells" ] || squat_bells "$SERVER_UID"
    if [ -n "$names" ]; then start_squatted "$who" "$ex" "$mode"; else start_server "$who" "$ex" "$mode"; fi
    if [ -n "$flood" ]; then
        socat_conns 1                 # the doorbells exist before the flood starts
        start_flood "$SERVER_UID"
    fi
    measure "$*"
    [ -z "$bells$flood" ] || expect_doorbells
    [ -z "$flood" ] || stop_flood
    [ -z "$names" ] || expect_alternative
    stop_example
    stop_attackers
    [ -z "$names" ] || expect_attacker_files_intact
    compare "${*// /+}" "$mode" "$who"
}

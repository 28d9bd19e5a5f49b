#!/usr/bin/env bats
# Secure mode: in a setuid process (AT_SECURE) the shim reads no THUNDER_
# variable and prints nothing about them, and the loader ignores
# LD_PRELOAD altogether.
#
# tests/progs/secureprobe is copied twice into a directory of our own: a
# plain copy (the control) and a copy owned by an unprivileged user with
# the setuid bit.  Root runs both, so the second has ruid 0 != euid and
# AT_SECURE=1.  The probe dlopens the shim (the one way its constructor
# runs in a secure process), polls a loopback listener through it and
# says whether that made a segment: under the default mode it does, under
# THUNDER_MODE=off or a bad value (pass-through) it does not.
#
# Not BATS_TEST_TMPDIR: its parents are private to root, and the shim is
# opened with the effective uid of the setuid copy.  Everything the probe
# made (the directory, any segment left) is removed in teardown.

load helpers

setup() {
    [ -z "${TEST_ASAN_PRELOAD:-}" ] ||
        skip "an ASan shim cannot be loaded into the (non-ASan) setuid probe"
    [ "$(id -u)" -eq 0 ] || skip "needs root: a setuid copy owned by another user, run by root"
    SUID_USER=
    local user
    for user in nobody daemon; do
        if SUID_UID=$(id -u "$user" 2>/dev/null) && [ "$SUID_UID" -ne 0 ]; then
            SUID_USER=$user
            break
        fi
    done
    [ -n "$SUID_USER" ] || skip "no unprivileged user (nobody, daemon) to own the setuid probe"
    PROBE_INODES=()
    make_secure_dir
    local src
    src=$(prog secureprobe)
    install -m 0755 "$src" "$SECURE_DIR/secureprobe"
    install -m 0755 "$src" "$SECURE_DIR/secureprobe-suid"
    chown "$SUID_USER" "$SECURE_DIR/secureprobe-suid"
    chmod u+s "$SECURE_DIR/secureprobe-suid"
    install -m 0644 "$ROOT/libthunder.so" "$SECURE_DIR/libthunder.so"
    SHIM=$SECURE_DIR/libthunder.so
    # The setuid bit can be ignored for reasons that are not ours to fix
    # (no_new_privs from a sandbox, say): then there is nothing to test.
    probe suid -
    [ "$(field euid)" = "$SUID_UID" ] ||
        skip "the setuid bit has no effect here (euid $(field euid); $(grep NoNewPrivs /proc/self/status | tr -s "\t" " "))"
}

teardown() {
    local inode
    for inode in "${PROBE_INODES[@]}"; do
        rm -f "$(segment_path "$inode" 0)"
        if [ -n "${SUID_UID:-}" ]; then rm -f "$(segment_path "$inode" "$SUID_UID")"; fi
    done
    if [ -n "${SECURE_DIR:-}" ]; then rm -rf "$SECURE_DIR"; fi
    helpers_teardown
}

# A directory others may enter, on a filesystem that honours setuid:
# under TMPDIR (/tmp) if it does, else under the build tree.
make_secure_dir() {
    local base
    SECURE_DIR=
    for base in "${TMPDIR:-/tmp}" "$ROOT/tests"; do
        SECURE_DIR=$(mktemp -d "$base/.thunder-secure.XXXXXX") || continue
        chmod 0755 "$SECURE_DIR"
        if findmnt -n -o OPTIONS -T "$SECURE_DIR" | tr , '\n' | grep -qx nosuid; then
            rmdir "$SECURE_DIR"
            SECURE_DIR=
            continue
        fi
        return 0
    done
    skip "no directory on a filesystem mounted without nosuid"
}

# probe plain|suid SHIM|- [VAR=VALUE...]: run one copy of the probe with
# the variables given; its stdout in P_OUT, its stderr in P_ERR.
probe() {
    local which=$1 shim=$2 bin=$SECURE_DIR/secureprobe
    shift 2
    [ "$which" = suid ] && bin+=-suid
    P_STATUS=0
    env "$@" "$bin" "$shim" >"$SECURE_DIR/out" 2>"$SECURE_DIR/err" </dev/null || P_STATUS=$?
    P_OUT=$(cat "$SECURE_DIR/out")
    P_ERR=$(cat "$SECURE_DIR/err")
    PROBE_INODES+=("$(field inode)")
    # shown when a test fails
    printf '# %s %s %s\n%s\n%s\n' "$which" "$shim" "$*" "$P_OUT" "$P_ERR"
    [ "$P_STATUS" -eq 0 ] || fail "probe exited with $P_STATUS"
}

# One value of the last probe's output (the first field on its line).
field() {
    sed -n "s/^\(.* \)\{0,1\}$1=\([^ ]*\).*/\2/p" <<<"$P_OUT" | head -n 1
}

# The probe ran secure, saw VAR=VALUE in its environment, loaded the shim
# and the shim ran with the defaults, silently.
secure_defaults_silent() {
    local var=$1 value=$2
    [ "$(field secure)" = 1 ] || fail "AT_SECURE is not set" || return 1
    [ "$(field ruid)" = 0 ] && [ "$(field euid)" = "$SUID_UID" ] || fail "uids" || return 1
    if [ "$var" = THUNDER_MODE ]; then
        [ "$(field getenv_THUNDER_MODE)" = "$value" ] ||
            fail "THUNDER_MODE is not in the probe's environment" || return 1
    fi
    [ "$(field dlopen)" = ok ] && [ "$(field mapped)" = 1 ] || fail "shim not loaded" || return 1
    [ "$(field segment)" = 1 ] || fail "$var=$value: the shim did not run with its defaults" || return 1
    [ "$(field segment_after_close)" = 0 ] || fail "segment left after close" || return 1
    [ -z "$P_ERR" ] || fail "$var=$value: secure mode printed: $P_ERR"
}

# VAR=VALUE is bad: one line and pass-through in the control, nothing and
# the defaults in the setuid copy.
BAD_VALUES=(THUNDER_MODE=bogus THUNDER_BALANCE=bogus THUNDER_LOG=bogus THUNDER_PORTS=0
    THUNDER_JITTER_US=0 THUNDER_RETRY_MS=0 THUNDER_HOLD_MS=0 THUNDER_CHECK_MS=0)

@test "secure: control (not setuid) reports a bad value of each variable and runs pass-through" {
    local setting
    for setting in "${BAD_VALUES[@]}"; do
        probe plain "$SHIM" "$setting"
        [ "$(field secure)" = 0 ] && [ "$(field dlopen)" = ok ] || fail "$setting: control"
        [ "$(grep -c '^libthunder: ' <<<"$P_ERR")" = 1 ] || fail "$setting: want one line"
        [[ $P_ERR == *"warning: ${setting%%=*}=\"${setting#*=}\" is not valid"* ]] || fail "$setting"
        [ "$(field segment)" = 0 ] || fail "$setting: not pass-through"
    done
    probe plain "$SHIM" THUNDER_MODE=bogus
    [ "$(field getenv_THUNDER_MODE)" = bogus ]
}

@test "secure: control (not setuid) logs with THUNDER_LOG=debug" {
    probe plain "$SHIM" THUNDER_LOG=debug
    [ "$(field segment)" = 1 ]
    [[ $P_ERR == *"debug: loaded: mode auto, balance fifo"* ]]
    [[ $P_ERR == *"info: port "*" poll/select waits sleep on a private exclusive epoll instance"* ]]
}

@test "secure: setuid, a bad value of each variable is ignored: no line, defaults apply" {
    local setting
    for setting in "${BAD_VALUES[@]}"; do
        probe suid "$SHIM" "$setting"
        secure_defaults_silent "${setting%%=*}" "${setting#*=}"
    done
}

@test "secure: setuid, valid values are ignored too (THUNDER_MODE=off, THUNDER_LOG=debug, PORTS)" {
    probe suid "$SHIM" THUNDER_MODE=off THUNDER_LOG=debug
    secure_defaults_silent THUNDER_MODE off
    # a port list without the probe's port would leave its listener alone
    probe suid "$SHIM" THUNDER_PORTS=1 THUNDER_LOG=debug
    secure_defaults_silent THUNDER_PORTS 1
    # the control: the same settings do take effect
    probe plain "$SHIM" THUNDER_MODE=off THUNDER_LOG=debug
    [ "$(field segment)" = 0 ]
    probe plain "$SHIM" THUNDER_PORTS=1 THUNDER_LOG=debug
    [ "$(field segment)" = 0 ]
    [[ $P_ERR == *"not in THUNDER_PORTS, left alone"* ]]
}

@test "secure: an unknown THUNDER_ name is warned about in the control only" {
    probe plain "$SHIM" THUNDER_MOOD=x
    [[ $P_ERR == *"warning: THUNDER_MOOD is an unknown libthunder variable (did you mean THUNDER_MODE?); ignored" ]]
    [ "$(grep -c '^libthunder: ' <<<"$P_ERR")" = 1 ]
    probe suid "$SHIM" THUNDER_MOOD=x THUNDER_MODE=auto
    secure_defaults_silent THUNDER_MODE auto
    probe suid "$SHIM" $'THUNDER_\x01=x' THUNDER_MODDE=lock THUNDER_MODE=lock
    secure_defaults_silent THUNDER_MODE lock
}

@test "secure: LD_PRELOAD of the shim is ignored by the loader for a setuid program" {
    probe plain - LD_PRELOAD="$SHIM" THUNDER_LOG=info
    [ "$(field mapped_at_start)" = 1 ] && [ "$(field segment)" = 1 ] || fail "not preloaded"
    [[ $P_ERR == *"info: port "* ]]
    probe suid - LD_PRELOAD="$SHIM" THUNDER_LOG=info
    [ "$(field secure)" = 1 ]
    [ "$(field mapped_at_start)" = 0 ] && [ "$(field mapped)" = 0 ] || fail "the loader preloaded the shim"
    [ "$(field segment)" = 0 ]
    [ -z "$P_ERR" ]
}

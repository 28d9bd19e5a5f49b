#!/usr/bin/env bats
# The Debian package (make deb-test: it builds it first with make deb).
# It is installed with dpkg into a throw-away root (dpkg --root: the files
# are really unpacked, registered and removed by dpkg, and run from there,
# not from this tree), an example server runs under the installed
# thunder-preload, and dpkg removes it all again.  This machine's / is
# never touched.

load ../helpers

bats_require_minimum_version 1.5.0

setup_file() {
    VERSION=$(cat "$ROOT/VERSION")
    ARCH=$(dpkg-architecture -qDEB_HOST_ARCH 2>/dev/null || dpkg --print-architecture)
    TRIPLET=$(dpkg-architecture -qDEB_HOST_MULTIARCH 2>/dev/null || true)
    DEB=$ROOT/libthunder_${VERSION}_$ARCH.deb
    export VERSION ARCH TRIPLET DEB
}

setup() {
    [ -f "$DEB" ] || skip "no $DEB: run 'make deb' (make deb-test does)"
    [ -z "${TEST_ASAN_PRELOAD:-}" ] || skip "the package is tested in the plain build only"
}

# A dpkg database in $1 that knows this machine's copies of the package's
# dependencies (their status entries), so dpkg checks them without --force.
make_root() {
    local root=$1 dep
    mkdir -p "$root/var/lib/dpkg/info" "$root/var/lib/dpkg/updates"
    : >"$root/var/lib/dpkg/status"
    for dep in $(dpkg-deb -f "$DEB" Depends | tr ',|' '\n\n' | sed 's/(.*//; s/:.*//' | tr -d ' '); do
        { dpkg-query -s "$dep" && echo; } >>"$root/var/lib/dpkg/status" ||
            fail "dependency $dep is not installed here" || return 1
    done
}

@test "one version: VERSION, the package, debian/changelog, thunder-preload --version" {
    [ "$(dpkg-deb -f "$DEB" Version)" = "$VERSION" ]
    [ "$(dpkg-deb -f "$DEB" Package)" = libthunder ]
    run dpkg-parsechangelog -l "$ROOT/debian/changelog" -SVersion
    [ "$output" = "$VERSION" ]
    run "$ROOT/shim/thunder-preload" --version
    [ "$output" = "thunder-preload $VERSION" ]
}

@test "contents: the library in the multiarch directory, the commands, the manual, README, changelog" {
    local f list
    list=$(dpkg-deb -c "$DEB" | awk '{ print $6 }')
    echo "$list" >&2
    for f in "./usr/lib/$TRIPLET/libthunder.so" ./usr/bin/thunder-preload ./usr/bin/thunder-stat \
        ./usr/bin/thunder-status ./usr/bin/thunder-loadgen ./usr/bin/thunder-ab \
        ./usr/lib/libthunder/server.bash ./usr/share/man/man1/thunder-preload.1.gz \
        ./usr/share/doc/libthunder/README.md.gz ./usr/share/doc/libthunder/changelog.gz \
        ./usr/share/doc/libthunder/copyright; do
        grep -qxF "$f" <<<"$list" || fail "$f is not in the package"
    done
    # the soname LD_PRELOAD users write
    dpkg-deb -x "$DEB" "$BATS_TEST_TMPDIR/x"
    if command -v objdump >/dev/null; then
        run objdump -p "$BATS_TEST_TMPDIR/x/usr/lib/$TRIPLET/libthunder.so"
        [[ $output =~ SONAME\ +libthunder\.so$'\n' ]] || fail "soname: $(grep SONAME <<<"$output")"
    fi
}

@test "lintian: no errors" {
    command -v lintian >/dev/null || skip "lintian not installed (apt-get install lintian)"
    local changes
    changes=$(compgen -G "$ROOT/build/deb/libthunder_${VERSION}_$ARCH.changes") || skip "no .changes: run make deb"
    run lintian "$changes"
    echo "$output" >&2
    [[ $output != *"E: "* ]] || fail "lintian errors"
}

@test "installed into a throw-away root: an example serves under the installed wrapper and library; dpkg -r leaves nothing" {
    [ "$(id -u)" -eq 0 ] || skip "dpkg --root needs root to install files owned by root"
    local root=$BATS_TEST_TMPDIR/root lib pid left
    lib=$root/usr/lib/$TRIPLET/libthunder.so
    make_root "$root"
    run dpkg --root="$root" -i "$DEB"
    echo "$output" >&2
    [ "$status" -eq 0 ]
    [ -f "$lib" ]

    # the installed wrapper finds the installed library, and only that one
    run "$root/usr/bin/thunder-preload" -- sh -c 'echo "$LD_PRELOAD"'
    [ "$output" = "$lib" ]
    EX_WRAP="$root/usr/bin/thunder-preload --mode lock --" EX_WRAP_PRELOADS=1 start_example ex_poll 3
    for pid in $MASTER ${WORKERS//,/ }; do
        grep -qF " $lib" "/proc/$pid/maps" || fail "$lib is not mapped in $pid"
        ! grep -qF "$ROOT/libthunder.so" "/proc/$pid/maps" || fail "$pid has the tree's library"
    done
    socat_conns 12
    all_answered 12
    # the installed thunder-stat sees the workers' lock; status sees all
    run "$root/usr/bin/thunder-stat" --kv "$PORT"
    echo "$output" >&2
    [ "$(grep -c "^port=$PORT .* strategy=lock " <<<"$output")" -eq 3 ]
    run "$root/usr/bin/thunder-preload" status "$MASTER"
    echo "$output" >&2
    [ "$status" -eq 0 ]
    [[ $output == *"libthunder is loaded in 4 of 4 process(es)"* ]]
    [[ $output == *"loaded from $lib"* ]]
    stop_example
    # thunder-ab finds its shell libraries (bin/../lib/libthunder)
    run "$root/usr/bin/thunder-preload" ab --help
    [ "$status" -eq 0 ] || fail "installed thunder-ab: $output"

    run dpkg --root="$root" -r libthunder
    echo "$output" >&2
    [ "$status" -eq 0 ]
    run dpkg-query --admindir="$root/var/lib/dpkg" -W -f '${Status}' libthunder
    [[ $output != *" installed" ]] || fail "still installed: $output"
    left=$(cd "$root" && find . -mindepth 1 -not -path './var' -not -path './var/lib' -not -path './var/lib/dpkg*')
    [ -z "$left" ] || fail "left after dpkg -r: $left"
}

#!/usr/bin/env bats
# bench/peers/report.sh: the "Works with" verdicts, from a results CSV
# written here (no server runs).  Each configuration's sequential rows at
# 1 worker without the shim (its floor) and at N with and without it
# decide: not needed, fixed, at floor, improved, unchanged, worse.

load helpers

setup() {
    # shellcheck source=bench/peers/servers.sh
    . "$BATS_TEST_DIRNAME/../bench/peers/servers.sh"
    # shellcheck source=bench/peers/report.sh
    . "$BATS_TEST_DIRNAME/../bench/peers/report.sh"
    WORKERS=16 SEQ_CONNS=2000 GAP_US=200 BURST_ROUNDS=50
    CSV=$BATS_TEST_TMPDIR/peers.csv META=$BATS_TEST_TMPDIR/peers.meta.tsv
    echo "style,workers,workload,mode,conns,ok,failed,seconds,wakeups_per_conn,jain,max_share,rps,p50_us,p99_us,cpu_ms_per_1000,workers_seen,accepts" >"$CSV"
    printf 'P\tall\ttoday\n' >"$META"
}

# row CONFIG WORKERS MODE WAKEUPS JAIN: one sequential row
row() {
    echo "$1,$2,seq,$3,2000,2000,0,1.0,$4,$5,0.1,1000,100,200,50,$2,1" >>"$CSV"
}

verdict() {
    PEER_CONFIGS=$1 peers_report "$CSV" "$META" | grep -F "| $(peer_label "$1") |" | sed 's/.*\*\*\(.*\)\*\*.*/\1/'
}

@test "peers report: a herd the shim brings to the floor is fixed; one already there is not needed" {
    row gunicorn-sync 1 none 1.000 1.0000
    row gunicorn-sync 16 none 16.2 0.49
    row gunicorn-sync 16 auto 1.000 0.9991
    [ "$(verdict gunicorn-sync)" = fixed ] || fail "$(verdict gunicorn-sync)"
    row apache-prefork 1 none 1.038 1.0000
    row apache-prefork 16 none 1.051 1.0000
    row apache-prefork 16 auto 1.065 1.0000
    [ "$(verdict apache-prefork)" = "not needed" ] || fail "$(verdict apache-prefork)"
}

@test "peers report: a threaded server's herd gone, its floor + 0.6 missed, is improved, not unchanged" {
    # the run of 2026-12-04: floor 2.604, 17.984 -> 3.304 (limit 3.204)
    row gunicorn-gthread 1 none 2.604 1.0000
    row gunicorn-gthread 16 none 17.984 0.5048
    row gunicorn-gthread 16 auto 3.304 0.9999
    [ "$(verdict gunicorn-gthread)" = improved ] || fail "$(verdict gunicorn-gthread)"
    # within the margin it is at its floor
    sed -i 's/,3.304,/,3.068,/' "$CSV"
    [ "$(verdict gunicorn-gthread)" = "at floor" ] || fail "$(verdict gunicorn-gthread)"
}

@test "peers report: no gain, or a gain without balance, stays unchanged" {
    row nginx-accept-mutex 1 none 1.494 1.0000
    row nginx-accept-mutex 16 none 1.508 0.1230
    row nginx-accept-mutex 16 auto 1.517 0.1176
    [ "$(verdict nginx-accept-mutex)" = unchanged ] || fail "$(verdict nginx-accept-mutex)"
    row uwsgi 1 none 0.998 1.0000
    row uwsgi 16 none 16.0 0.24
    row uwsgi 16 auto 4.0 0.50
    [ "$(verdict uwsgi)" = unchanged ] || fail "$(verdict uwsgi)"
}

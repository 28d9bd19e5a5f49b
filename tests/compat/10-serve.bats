#!/usr/bin/env bats
# Real servers from Debian under libthunder in its default mode, 8 workers
# each (make check-compat; bench/peers/servers.sh says how each is run).
# Per server: its floor (one worker, no shim) and 8 workers under the shim
# run side by side and take turns (compat.bash says why); under the shim:
# every request answered, every worker served, wake-ups per connection at
# most the floor + 0.3 (0.6 for gunicorn gthread and Puma: peer_margin),
# Jain >= 0.9 (a server with its own accept lock:
# as without the shim, see check_server), nothing from the library on
# stderr, and the segment gone after a clean stop.  The last test shows
# that the wake-up check catches a herd.  A server that is not installed
# is skipped with the packages to install (.ci/run installs them).

load compat

@test "uWSGI --processes: 8 workers, all served, at its floor, quiet, segment removed" {
    check_server uwsgi
}

@test "uWSGI --threads 4: 8 workers, all served, at its floor, quiet, segment removed" {
    check_server uwsgi-threads
}

@test "uWSGI --thunder-lock: 8 workers, all served, at its floor, quiet, segment removed" {
    check_server uwsgi-thunder-lock
}

@test "gunicorn sync: 8 workers, all served, at its floor, quiet, segment removed" {
    check_server gunicorn-sync
}

@test "gunicorn gthread --threads 4: 8 workers, all served, at its floor, quiet, segment removed" {
    check_server gunicorn-gthread
}

@test "gunicorn gevent: 8 workers, all served, at its floor, quiet, segment removed" {
    check_server gunicorn-gevent
}

@test "gunicorn uvicorn worker: 8 workers, all served, at its floor, quiet, segment removed" {
    check_server gunicorn-uvicorn
}

@test "uvicorn --workers: 8 workers, all served, at its floor, quiet, segment removed" {
    check_server uvicorn
}

@test "Puma cluster: 8 workers, all served, at its floor, quiet, segment removed" {
    check_server puma
}

@test "unicorn: 8 workers, all served, at its floor, quiet, segment removed" {
    check_server unicorn
}

@test "Node cluster (SCHED_NONE): 8 workers, all served, at its floor, quiet, segment removed" {
    check_server node-cluster
}

@test "nginx default: 8 workers, all served, at its floor, quiet, segment removed" {
    check_server nginx
}

@test "nginx accept_mutex on: 8 workers, all served, at its floor, quiet, segment removed" {
    check_server nginx-accept-mutex
}

@test "Apache prefork: 8 workers, all served, at its floor, quiet, segment removed" {
    check_server apache-prefork
}

# The check above must be able to fail: with the library loaded but off,
# gunicorn gthread's 8 workers all wake for each connection, and the same
# comparison must find that far above its floor + its margin (0.6).
@test "the wake-up check catches a herd: gunicorn gthread with THUNDER_MODE=off is above its floor + 0.6" {
    need_server gunicorn-gthread
    role_start floor gunicorn-gthread 1 none
    role_start herd gunicorn-gthread 8 off
    measure_roles floor herd
    wake_limit gunicorn-gthread floor
    if le "${WAKE_OF[herd]}" "$LIMIT"; then
        fail "the check passes a herd: ${WAKE_OF[herd]} wake-ups per connection <= $LIMIT"
    fi
}

#!/usr/bin/env bats
# A graceful reload of real servers under libthunder (make check-compat):
# 4 clients keep connecting (2 ms apart, 8 s) while the server reloads
# (gunicorn and uWSGI SIGHUP, nginx reload, unicorn USR2 + QUIT binary
# upgrade, Apache graceful); no connection may fail, and the new
# generation of 8 workers must be balanced (every worker served, Jain
# >= 0.9 over 800 sequential requests).

load compat

@test "uWSGI --processes: reload under load, none failed, new generation balanced" {
    check_reload uwsgi
}

@test "gunicorn sync: reload under load, none failed, new generation balanced" {
    check_reload gunicorn-sync
}

@test "unicorn: reload under load, none failed, new generation balanced" {
    check_reload unicorn
}

@test "nginx default: reload under load, none failed, new generation balanced" {
    check_reload nginx
}

@test "Apache prefork: reload under load, none failed, new generation balanced" {
    check_reload apache-prefork
}

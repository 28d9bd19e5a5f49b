/*
 * ex_epoll_shared - ONE epoll instance, created by the master before
 * fork, with the listener in it; every worker calls epoll_wait() on that
 * same inherited instance, then accepts once.
 *
 * There is a single entry on the listener's wait queue (the instance's),
 * and the workers queue up inside the instance as exclusive waiters,
 * woken most-recently-arrived first: no herd, but the worker that just
 * went back to sleep is the next one woken, so a hot worker takes most
 * connections.  A shim cannot take the listener out of this instance for
 * one worker: the change would apply to all of them.
 *
 * This example calls plain accept(), as older daemons do, so that the
 * shim's accept() path is exercised on a non-blocking listener too.
 */
#include "common.h"

#include <sys/epoll.h>

#define MAX_EVENTS 64

static void wait_with_shared_epoll(int listener, void *ctx)
{
    int shared_ep = *(const int *)ctx;
    struct epoll_event events[MAX_EVENTS];

    while (!stop_requested) {
        int ready = epoll_wait(shared_ep, events, MAX_EVENTS, -1);
        if (ready < 0) {
            if (errno == EINTR)
                continue;
            die("epoll_wait");
        }
        for (int i = 0; i < ready; i++) {
            if (events[i].data.fd != listener)
                continue;
            int client = accept(listener, NULL, NULL);
            if (client < 0) {
                survive_accept_error(errno);
                continue;
            }
            answer_with_pid_and_close(client);
        }
    }
}

int main(int argc, char **argv)
{
    struct server_options opt = parse_options(argc, argv, 1);
    int listener = open_listener(&opt, LISTENER_NONBLOCKING);

    /* Before fork: every worker inherits this very instance. */
    int shared_ep = epoll_create1(0);
    if (shared_ep < 0)
        die("epoll_create1");
    struct epoll_event watch = { .events = EPOLLIN, .data.fd = listener };
    if (epoll_ctl(shared_ep, EPOLL_CTL_ADD, listener, &watch) < 0)
        die("epoll_ctl(ADD listener)");

    return run_master(&opt, listener, wait_with_shared_epoll, &shared_ep);
}

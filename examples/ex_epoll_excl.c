/*
 * ex_epoll_excl - like ex_epoll (one epoll instance per worker, created
 * after fork), but the program itself registers the listener with
 * EPOLLIN | EPOLLEXCLUSIVE, as nginx does when accept_mutex is off.
 *
 * EPOLLEXCLUSIVE (Linux 4.5) makes the kernel wake "one or more" of the
 * instances, and in practice always the first idle one in the wait
 * queue: the herd is gone, but the first registered worker takes nearly
 * every connection.
 */
#include "common.h"

#include <sys/epoll.h>

#define MAX_EVENTS 64

static void wait_with_exclusive_epoll(int listener, void *unused)
{
    (void)unused;
    int ep = epoll_create1(EPOLL_CLOEXEC);
    if (ep < 0)
        die("epoll_create1");
    struct epoll_event watch = {
        .events = EPOLLIN | EPOLLEXCLUSIVE,
        .data.fd = listener,
    };
    if (epoll_ctl(ep, EPOLL_CTL_ADD, listener, &watch) < 0)
        die("epoll_ctl(ADD listener, EPOLLEXCLUSIVE)");

    struct epoll_event events[MAX_EVENTS];
    while (!stop_requested) {
        int ready = epoll_wait(ep, events, MAX_EVENTS, -1);
        if (ready < 0) {
            if (errno == EINTR)
                continue;
            die("epoll_wait");
        }
        for (int i = 0; i < ready; i++) {
            if (events[i].data.fd != listener)
                continue;
            int client = accept4(listener, NULL, NULL, SOCK_CLOEXEC);
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
    return run_master(&opt, listener, wait_with_exclusive_epoll, NULL);
}

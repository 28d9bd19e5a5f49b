/*
 * ex_epoll - each worker creates its own epoll instance after fork and
 * waits in epoll_wait() on the listener (level-triggered), then accepts
 * once per event.
 *
 * Each instance hangs its own entry on the listener's wait queue, so a
 * connection wakes every worker's epoll_wait(): the same herd as poll().
 */
#include "common.h"

#include <sys/epoll.h>

#define MAX_EVENTS 64

static void wait_with_private_epoll(int listener, void *unused)
{
    (void)unused;
    int ep = epoll_create1(EPOLL_CLOEXEC);
    if (ep < 0)
        die("epoll_create1");
    struct epoll_event watch = { .events = EPOLLIN, .data.fd = listener };
    if (epoll_ctl(ep, EPOLL_CTL_ADD, listener, &watch) < 0)
        die("epoll_ctl(ADD listener)");

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
    return run_master(&opt, listener, wait_with_private_epoll, NULL);
}

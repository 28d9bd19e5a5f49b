/*
 * ex_poll - workers wait with poll() on the shared listener, then accept
 * once (the uWSGI / classic prefork style).
 *
 * Every worker blocked in poll() sits on the listener's wait queue as a
 * non-exclusive waiter, so each new connection wakes all of them: one
 * wins the accept, the others get EAGAIN and go back to sleep.
 */
#include "common.h"

#include <poll.h>

static void wait_with_poll(int listener, void *unused)
{
    (void)unused;
    struct pollfd watch = { .fd = listener, .events = POLLIN };

    while (!stop_requested) {
        int ready = poll(&watch, 1, -1);
        if (ready < 0) {
            if (errno == EINTR)
                continue;
            die("poll");
        }
        if (watch.revents & (POLLERR | POLLNVAL)) {
            errno = EBADF;
            die("poll reported the listener as broken");
        }
        if (!(watch.revents & POLLIN))
            continue;

        int client = accept4(listener, NULL, NULL, SOCK_CLOEXEC);
        if (client < 0) {
            survive_accept_error(errno);
            continue;
        }
        answer_with_pid_and_close(client);
    }
}

int main(int argc, char **argv)
{
    struct server_options opt = parse_options(argc, argv, 1);
    int listener = open_listener(&opt, LISTENER_NONBLOCKING);
    return run_master(&opt, listener, wait_with_poll, NULL);
}

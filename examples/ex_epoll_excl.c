/*
 * ex_epoll_excl - like ex_epoll (one epoll instance per worker, created
 * after fork), but the program itself registers the listener with
 * EPOLLIN | EPOLLEXCLUSIVE, as nginx does when accept_mutex is off.
 *
 * EPOLLEXCLUSIVE (Linux 4.5) makes the kernel wake "one or more" of the
 * instances, and in practice always the first idle one in the wait
 * queue: the herd is gone, but the first registered worker takes nearly
 * every connection.
 *
 * -R N: like nginx (ngx_reorder_accept_events), delete and re-add the
 * listener every N accepts of a worker, which moves the worker's entry to
 * the tail of the wait queue: the program's own rotation.
 * -U M: re-add only until the worker's M-th accept (a program that stops
 * rotating, to see the library's own rotation take over again).
 */
#include "common.h"

#include <sys/epoll.h>

#define MAX_EVENTS 64

static int readd_every;            /* -R: accepts between re-adds; 0: never */
static int readd_until;            /* -U: no re-add after this accept; 0: always */

static bool take_option(int letter, const char *arg)
{
    if (letter == 'U')
        return int_in_range(arg, 1, 1000000, &readd_until);
    return letter == 'R' && int_in_range(arg, 1, 1000000, &readd_every);
}

static const struct extra_options excl_options = {
    .letters = "R:U:", .usage = "[-R ACCEPTS_BETWEEN_READDS] [-U LAST_READD_ACCEPT]",
    .take = take_option,
};

static void add_listener(int ep, int listener)
{
    struct epoll_event watch = {
        .events = EPOLLIN | EPOLLEXCLUSIVE,
        .data.fd = listener,
    };
    if (epoll_ctl(ep, EPOLL_CTL_ADD, listener, &watch) < 0)
        die("epoll_ctl(ADD listener, EPOLLEXCLUSIVE)");
}

/* nginx's way to move this worker behind the others */
static void readd_if_due(int ep, int listener, unsigned long accepted)
{
    if (readd_every == 0 || accepted % (unsigned long)readd_every != 0 ||
        (readd_until && accepted > (unsigned long)readd_until))
        return;
    if (epoll_ctl(ep, EPOLL_CTL_DEL, listener, NULL) < 0)
        die("epoll_ctl(DEL listener)");
    add_listener(ep, listener);
}

static void wait_with_exclusive_epoll(int listener, void *unused)
{
    (void)unused;
    int ep = epoll_create1(EPOLL_CLOEXEC);
    unsigned long accepted = 0;
    if (ep < 0)
        die("epoll_create1");
    add_listener(ep, listener);

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
            readd_if_due(ep, listener, ++accepted);
        }
    }
}

int main(int argc, char **argv)
{
    struct server_options opt = parse_options_with(argc, argv, 1, &excl_options);
    int listener = open_listener(&opt, LISTENER_NONBLOCKING);
    return run_master(&opt, listener, wait_with_exclusive_epoll, NULL);
}

/*
 * ex_greedy - a greedy event loop (asyncio, tornado, libuv, nginx
 * multi_accept): each worker creates its own epoll instance after fork,
 * waits on the non-blocking listener and, on each wake-up, accepts until
 * EAGAIN before it serves anything (greedy.h; -c caps the accepts per
 * wake-up, -e makes the registration edge-triggered).
 *
 * Connections that arrive together go to whichever worker runs first:
 * it drains the queue while the workers the kernel woke for the other
 * connections find it empty.
 */
#include "greedy.h"

static const struct extra_options greedy_options = {
    GREEDY_LETTERS, GREEDY_USAGE, greedy_take_option,
};

static void wait_greedily(int listener, void *unused)
{
    (void)unused;
    int ep = epoll_create1(EPOLL_CLOEXEC);
    if (ep < 0)
        die("epoll_create1");
    watch_listener(ep, listener);
    run_greedy_loop(ep, listener);
}

int main(int argc, char **argv)
{
    struct server_options opt = parse_options_with(argc, argv, 1, &greedy_options);
    int listener = open_listener(&opt, LISTENER_NONBLOCKING);
    return run_master(&opt, listener, wait_greedily, NULL);
}

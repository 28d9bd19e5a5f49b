/*
 * ex_inherit - the greedy event loop of ex_greedy, with its epoll
 * instance created in the master before fork and the listener registered
 * there.  After fork the first KEEP workers (-k, default 1) go on using
 * that inherited instance; every other worker closes it and builds its
 * own, as some servers do when only part of their start-up is redone
 * after fork.
 *
 * An instance that only one worker waits on is private in practice,
 * whoever created it; one that several wait on is shared (one entry on
 * the listener's wait queue, waiters woken most recent first).
 */
#include "greedy.h"

#include <stdatomic.h>
#include <sys/mman.h>

struct inherit {
    int ep;                       /* the master's instance */
    int keep;                     /* how many workers keep it */
    _Atomic int *started;         /* workers started so far (shared memory) */
};

static int keep_option = 1;

static bool take_option(int letter, const char *arg)
{
    if (letter != 'k')
        return greedy_take_option(letter, arg);
    return int_in_range(arg, 0, MAX_WORKERS, &keep_option);
}

static const struct extra_options inherit_options = {
    "k:" GREEDY_LETTERS, "[-k KEEP] " GREEDY_USAGE, take_option,
};

static void wait_inherited_or_own(int listener, void *ctx)
{
    struct inherit *in = ctx;
    int ep = in->ep;

    /* respawned workers (-r) count on: they build their own */
    if (atomic_fetch_add(in->started, 1) >= in->keep) {
        close(ep);
        if ((ep = epoll_create1(EPOLL_CLOEXEC)) < 0)
            die("epoll_create1");
        watch_listener(ep, listener);
    }
    run_greedy_loop(ep, listener);
}

int main(int argc, char **argv)
{
    struct server_options opt = parse_options_with(argc, argv, 1, &inherit_options);
    int listener = open_listener(&opt, LISTENER_NONBLOCKING);
    struct inherit in = { .keep = keep_option };

    in.started = mmap(NULL, sizeof *in.started, PROT_READ | PROT_WRITE,
                      MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (in.started == MAP_FAILED)
        die("mmap");
    /* Before fork: the first KEEP workers wait on this very instance. */
    if ((in.ep = epoll_create1(0)) < 0)
        die("epoll_create1");
    watch_listener(in.ep, listener);
    return run_master(&opt, listener, wait_inherited_or_own, &in);
}

/*
 * greedy.h - the accept loop of an asyncio-style event loop, shared by
 * ex_greedy and ex_inherit: on each wake-up, accept until EAGAIN (or up
 * to a cap, like tornado's 128 or lighttpd's 100), and only then serve
 * what was accepted.  With a handler that sleeps (-s), a worker that takes
 * ten connections of a burst answers the tenth ten handler times later.
 *
 * Own options (besides common.h's):
 *   -c CAP  accept at most CAP connections per wake-up (default 0: until EAGAIN)
 *   -e      register the listener edge-triggered (EPOLLET): the loop must
 *           then accept until EAGAIN, so -c is refused with it
 */
#ifndef LIBTHUNDER_EXAMPLES_GREEDY_H
#define LIBTHUNDER_EXAMPLES_GREEDY_H

#include "common.h"

#include <sys/epoll.h>

#define MAX_BATCH LISTEN_BACKLOG
#define GREEDY_LETTERS "c:e"
#define GREEDY_USAGE "[-c CAP] [-e]"

static int accept_cap;          /* 0: until EAGAIN */
static bool edge_triggered;

/* Takes -c and -e; false on a bad value or a bad combination. */
static inline bool greedy_take_option(int letter, const char *arg)
{
    switch (letter) {
    case 'c':
        return !edge_triggered && int_in_range(arg, 0, MAX_BATCH, &accept_cap);
    case 'e':
        edge_triggered = true;
        return accept_cap == 0;
    }
    return false;
}

static inline void watch_listener(int ep, int listener)
{
    struct epoll_event watch = {
        .events = EPOLLIN | (edge_triggered ? EPOLLET : 0), .data.fd = listener,
    };
    if (epoll_ctl(ep, EPOLL_CTL_ADD, listener, &watch) < 0)
        die("epoll_ctl(ADD listener)");
}

/* Accepts until EAGAIN or the cap; returns how many are in clients[]. */
static inline int accept_batch(int listener, int *clients)
{
    int max = accept_cap ? accept_cap : MAX_BATCH, n = 0;

    while (n < max && !stop_requested) {
        int client = accept4(listener, NULL, NULL, SOCK_CLOEXEC);
        if (client >= 0) {
            clients[n++] = client;
            continue;
        }
        if (errno == EAGAIN || errno == EWOULDBLOCK)
            break;
        survive_accept_error(errno);   /* transient: go on to EAGAIN */
    }
    return n;
}

static inline void run_greedy_loop(int ep, int listener)
{
    static int clients[MAX_BATCH];
    struct epoll_event event;

    while (!stop_requested) {
        int ready = epoll_wait(ep, &event, 1, -1);
        if (ready < 0) {
            if (errno == EINTR)
                continue;
            die("epoll_wait");
        }
        if (ready == 0 || event.data.fd != listener)
            continue;
        int n;
        do {        /* edge-triggered: a full batch may have left more */
            n = accept_batch(listener, clients);
            for (int i = 0; i < n; i++)
                answer_with_pid_and_close(clients[i]);
        } while (edge_triggered && n == MAX_BATCH && !stop_requested);
    }
}

#endif

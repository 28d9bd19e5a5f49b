/*
 * burst.c - the burst workload (BRIEF, "How it is measured"): a round
 * opens K connections back-to-back (non-blocking connects, then the
 * requests, then the replies, all from one poll() set), then idles
 * IDLE_MS; ROUNDS rounds, fewer if the time limit or a stop signal comes
 * first.  Per round: its completion time (from the first connect to the
 * last reply) and the largest share one worker took of it.
 */
#define _GNU_SOURCE
#include "loadgen.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>

static void *checked_calloc(size_t n, size_t size)
{
    void *p = calloc(n, size);
    if (!p) {
        perror("loadgen: calloc");
        exit(1);
    }
    return p;
}

/* Drives every connection of the round until each is done. */
static void drive_round(const struct target *t, struct conn *conns, int k,
                        struct pollfd *fds, int *index)
{
    for (;;) {
        int n = 0, wait_ms = -1;
        for (int i = 0; i < k; i++) {
            if (conns[i].state == CONN_DONE)
                continue;
            int left = conn_poll_ms(&conns[i], t);
            if (wait_ms < 0 || left < wait_ms)
                wait_ms = left;
            fds[n] = (struct pollfd){ .fd = conns[i].fd, .events = conn_events(&conns[i]) };
            index[n++] = i;
        }
        if (n == 0)
            return;
        int ready = poll(fds, (nfds_t)n, wait_ms);
        if (ready < 0 && errno != EINTR) {
            perror("loadgen: poll");
            exit(1);
        }
        for (int j = 0; j < n; j++) {
            short revents = ready > 0 ? fds[j].revents : 0;
            conn_advance(&conns[index[j]], t, revents);
        }
    }
}

static void idle(int ms)
{
    struct timespec pause_for = { .tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000L };
    while (nanosleep(&pause_for, &pause_for) < 0 && errno == EINTR && !stop_requested)
        ;
}

/* Runs the rounds; returns them (run->opt.rounds slots, `claimed` used). */
struct round_result *run_bursts(struct run *run, struct client *client)
{
    int k = run->opt.burst;
    struct conn *conns = checked_calloc((size_t)k, sizeof *conns);
    struct pollfd *fds = checked_calloc((size_t)k, sizeof *fds);
    int *index = checked_calloc((size_t)k, sizeof *index);
    pid_t *pids = checked_calloc((size_t)k, sizeof *pids);
    struct round_result *rounds = checked_calloc((size_t)run->opt.rounds, sizeof *rounds);
    long attempt = 0;

    for (int r = 0; r < run->opt.rounds; r++) {
        if (stop_requested || ns_between(now_monotonic(), run->deadline) <= 0)
            break;
        struct timespec first = now_monotonic();
        for (int i = 0; i < k; i++)
            conn_start(&conns[i], &run->target);
        drive_round(&run->target, conns, k, fds, index);

        struct round_result *round = &rounds[r];
        int64_t last = 0;
        for (int i = 0; i < k; i++) {
            const struct conn *c = &conns[i];
            int64_t end = ns_between(first, c->start) + (int64_t)c->latency_ns;
            if (c->ok && end > last)
                last = end;
            pids[i] = c->ok ? c->pid : 0;
            round->answered += c->ok;
            round->attributed += c->ok && c->pid > 0;
            record_outcome(run, client, c, attempt++);
        }
        round->completion_ns = (uint64_t)last;
        round->max_share = share_of_largest(pids, k);
        atomic_fetch_add(&run->claimed, 1);
        if (r + 1 < run->opt.rounds && !stop_requested)
            idle(run->opt.idle_ms);
    }
    free(conns);
    free(fds);
    free(index);
    free(pids);
    return rounds;
}

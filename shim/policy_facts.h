/*
 * policy.c's questions, and the facts each is asked with: which strategy a
 * wait uses, and when the spreading rules (rotation, refusal, yield,
 * pause, the lock's looks) apply.  thunder.h's section for policy.c, kept
 * in a file of its own for its length and included there in its place.
 */
#pragma once

#include <stdbool.h>
#include <stdint.h>

#include "seglayout.h"   /* enum th_strategy */

/* What a wait path knows when it asks which strategy to use. */
struct th_wait_facts {
    bool epoll;            /* an epoll wait, else poll/select */
    bool mirror_refused;   /* poll: the set cannot live in a private epoll mirror */
    bool shared;           /* epoll: the instance is shared with other processes */
    bool threaded;         /* epoll: several threads of this process wait on it */
    bool all_exclusive;    /* epoll: every listener entry is EPOLLEXCLUSIVE */
    bool program_balanced; /* epoll: ...the program's own, which it rotates (nginx) */
    bool alone;            /* epoll: this thread alone waits on every listener
                              (listener.c th_listener_alone) */
};
struct th_plan {
    enum th_strategy strategy;   /* EXCLUSIVE, LOCK, or a real call (OBSERVE, JITTER) */
    const char *why;             /* logged once per listener and strategy */
};
/* A plan that leaves the wait to the program: its own call, counted. */
static inline bool th_plan_passes(struct th_plan p)
{
    return p.strategy == TH_STRAT_PASS || p.strategy == TH_STRAT_ALONE;
}
struct th_plan th_policy_wait(const struct th_wait_facts *f);
/* An epoll listener entry under a wait's plan (not every entry is exclusive). */
struct th_plan th_policy_epoll_entry(struct th_plan wait_plan, bool entry_exclusive);
bool th_exclusive_allows(uint32_t epoll_events);    /* the kernel's rule, for a listener */
uint32_t th_exclusive_events(uint32_t epoll_events); /* ...and the entry it allows */
bool th_policy_injects_exclusive(bool instance_is_ours, uint32_t epoll_events);
/* What an accept knows when it decides whether its exclusive entry rotates. */
struct th_rotation_facts {
    bool slept, owed;       /* its wait slept; a rotation owed by its turn's first take */
    bool program_rotates;   /* the program rotates its own entry (nginx), or the
                               wait passed the listener through */
    int others_waiting;     /* other threads in a wait on the listener */
    uint32_t accept_gap;    /* accepts by others since this process's last one */
    uint64_t accepts;       /* this process's accepts of the listener... */
    uint64_t taken;         /* ...and those since its last rotation */
    int64_t since_idle_ns;  /* th_burst_since_idle */
    uint32_t per_ms;        /* the listener's accepts per ms (listener.c th_listener_rate) */
};
bool th_policy_rotates(const struct th_rotation_facts *f);
/* ...or leaves it to this thread's next accept of the listener? */
bool th_policy_owes_rotation(const struct th_rotation_facts *f);
/* An exclusive wait of a worker a steady load keeps busy: passed through? */
bool th_policy_stays_busy(bool slept_last, bool took_last, int others_waiting,
                          int64_t since_idle_ns);
struct th_plan th_policy_busy_plan(void);
/* A further accept of one wake-up: answer EAGAIN and leave the connection? */
bool th_policy_refuses_more(bool reported_again, bool others_wait, int64_t since_idle_ns);
/* A wait that re-reported a listener at once: leave it out for TH_YIELD_MS? */
#define TH_YIELD_MS 1
/* A wait that slept this long found an idle server: what wakes it may be a burst. */
#define TH_REST_MS 2
bool th_policy_yields(unsigned streak, int64_t since_idle_ns, int others_waiting, int queued);
/* A blocking accept back at once: pause TH_YIELD_MS before it? */
bool th_policy_pauses_accept(unsigned streak, int64_t since_idle_ns, int others_waiting,
                             int queued, int64_t since_pause_ns);
/* May a lock wait that finds the lock busy serve what is ready unlocked? */
bool th_policy_serves_backlog_unlocked(unsigned streak, bool threaded, int64_t since_idle_ns,
                                       bool idle_queued, int queued);
/* After the holder's wait: keep the lock for the accept that follows? */
bool th_policy_keeps_lock(bool reported, bool slept);
#define TH_BUSY_SLEEP_MS 5
bool th_policy_sleeps_unlocked(bool found_backlog);
int th_policy_lookers(bool slept, int64_t waited_ns, int conns_queued, int threads_queued);
bool th_policy_jitters(void);

/*
 * What a thread's last look at an epoll instance planned, kept for its
 * next waits on it.  A look (epreg.c th_epreg_snapshot, then policy.c)
 * takes the registry's lock and scans its entries; a plan of "exclusive"
 * or "pass" (private instance, one thread) stays right while:
 *   - nothing epreg.c's lock guards has changed (its generation),
 *   - no other thread of the process waits on the instance,
 *   - no listener is out after a failed rotation,
 *   - for "pass" (policy.c: the program's own exclusive entries, which
 *     it rotates itself: nginx), the program keeps re-adding them,
 *   - for "alone", this thread still waits on them alone: nobody else is
 *     counted in a wait on one nor has accepted from it since this
 *     thread's last accept (listener.c th_listener_alone).
 * A wait that still passes is the program's own call, with its own
 * timeout and no clock read (epwait.c th_epreg_pass_begin, _end; nginx, 4
 * workers: 1,865 -> 1,199 instructions per connection).  Only another
 * process can make the instance shared, and it cannot write this
 * process's memory.  So only an instance this process created is kept
 * (one made before a fork is where siblings meet: the first worker of
 * ex_epoll_shared waited alone for a moment, kept "exclusive", and took
 * 0.15 of each burst's round instead of 0.12), and every LOOK_AGAIN-th
 * wait looks in full: a process that waited alone on its instance and
 * then shares it with a forked child sees that within as many waits
 * (the child looks at once: its fork handler moves the generation).
 */
#include "thunder.h"

#include <string.h>

#define LOOK_AGAIN 64

static __thread struct {
    int epfd;
    uint32_t gen;          /* epreg.c's generation at the look it comes from */
    uint32_t left;         /* waits before the next full look; 0: no memo */
    struct th_plan plan;
    int k;
    struct th_ep_listener wl[TH_MAX_WAIT_LISTENERS];
} memo;

void th_epmemo_note(int epfd, const struct th_ep_listener *wl, int k, struct th_plan plan)
{
    if ((!th_plan_passes(plan) && plan.strategy != TH_STRAT_EXCLUSIVE) ||
        th_epreg_looked_at() == 0) {
        if (memo.epfd == epfd)
            memo.left = 0;
        return;
    }
    memo.epfd = epfd;
    memo.gen = th_epreg_looked_at();
    memo.left = LOOK_AGAIN;
    memo.plan = plan;
    memo.k = k;
    memcpy(memo.wl, wl, (size_t)k * sizeof(*wl));
}

/* Does what made the kept plan pass l through still hold? */
static bool still_passes(struct th_listener *l)
{
    switch (memo.plan.strategy) {
    case TH_STRAT_PASS:
        return th_epreg_rotated_by_program(l);
    case TH_STRAT_ALONE:
        return th_listener_alone(l);
    default:
        return true;
    }
}

/* Does the memo still hold for a wait on epfd?  Then the thread is
   counted as waiting on it, as a look counts it, and the memo used once. */
static bool holds(int epfd)
{
    if (memo.left == 0 || memo.epfd != epfd || memo.gen != th_epreg_gen() ||
        th_epreg_any_lost())
        return false;
    for (int j = 0; th_plan_passes(memo.plan) && j < memo.k; j++)
        if (!still_passes(memo.wl[j].l))
            return false;
    if (!th_epreg_waits_alone(epfd))
        return false;
    memo.left--;
    return true;
}

int th_epmemo_recall(int epfd, struct th_ep_listener *wl, struct th_plan *plan)
{
    if (!holds(epfd))
        return -1;
    *plan = memo.plan;
    memcpy(wl, memo.wl, (size_t)memo.k * sizeof(*wl));
    return memo.k;
}

const struct th_ep_listener *th_epmemo_passes(int epfd, int *k, struct th_plan *plan)
{
    if (!th_plan_passes(memo.plan) || !holds(epfd))
        return NULL;
    *k = memo.k;
    *plan = memo.plan;
    return memo.wl;
}

/* The listeners of the pass that began on epfd.  A signal handler that
   waited on another instance meanwhile has noted that one here: then
   none (the wait is not counted) rather than the other's. */
const struct th_ep_listener *th_epmemo_kept(int epfd, int *k, struct th_plan *plan)
{
    *k = memo.epfd == epfd ? memo.k : 0;
    *plan = memo.plan;
    return memo.wl;
}

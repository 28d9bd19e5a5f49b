/*
 * What a thread's last look at an epoll instance planned, kept for its
 * next waits on it.  A look (epreg.c th_epreg_snapshot, then policy.c)
 * takes the registry's lock and scans its entries; a plan of "exclusive"
 * or "pass" (private instance, one thread) stays right while:
 *   - nothing epreg.c's lock guards has changed (its generation),
 *   - no other thread of the process waits on the instance,
 *   - no listener is out after a failed rotation,
 *   - and, for "pass" (policy.c: the program's own exclusive entries,
 *     which it rotates itself: nginx), the program keeps re-adding them.
 * A wait that still passes is the program's own call, with its own
 * timeout and no clock read (th_epmemo_pass_begin, _end; nginx, 4
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
    if ((plan.strategy != TH_STRAT_PASS && plan.strategy != TH_STRAT_EXCLUSIVE) ||
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

/* Does the memo still hold for a wait on epfd?  Then the thread is
   counted as waiting on it, as a look counts it, and the memo used once. */
static bool holds(int epfd)
{
    if (memo.left == 0 || memo.epfd != epfd || memo.gen != th_epreg_gen() ||
        th_epreg_any_lost())
        return false;
    for (int j = 0; memo.plan.strategy == TH_STRAT_PASS && j < memo.k; j++)
        if (!th_epreg_rotated_by_program(memo.wl[j].l))
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

bool th_epmemo_pass_begin(int epfd)
{
    if (memo.plan.strategy != TH_STRAT_PASS || !holds(epfd))
        return false;
    th_self_new_wait();
    th_waiting_clear();
    for (int j = 0; j < memo.k; j++)
        TH_COUNT(memo.wl[j].l, waits, 1);
    return true;
}

/* Did a wait's answer evs[0..n) report the entry whose data is data? */
bool th_epmemo_reported(const struct epoll_event *evs, int n, uint64_t data)
{
    for (int i = 0; i < n; i++)
        if (evs[i].data.u64 == data)
            return true;
    return false;
}

int th_epmemo_pass_end(int epfd, const struct epoll_event *evs, int result)
{
    int saved_errno = errno;

    th_epreg_done_waiting(epfd);
    for (int j = 0; j < memo.k && result > 0; j++) {
        if (th_epmemo_reported(evs, result, memo.wl[j].data)) {
            TH_COUNT(memo.wl[j].l, wakeups, 1);
            th_self.woke |= th_listener_bit(memo.wl[j].l->index);
        }
    }
    errno = saved_errno;
    return result;
}

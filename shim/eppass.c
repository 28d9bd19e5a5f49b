/*
 * The epoll waits still passed through.  A wait whose plan is "pass"
 * (policy.c: the program's own exclusive entries, which it rotates
 * itself: nginx) needs none of the look at the instance (epreg.c), only to
 * know that its plan still holds.  So each thread keeps a memo of its last
 * such plan, and its next waits on that instance are the program's own
 * call, with its own timeout and no clock read, while:
 *   - nothing epreg.c's lock guards has changed (its generation),
 *   - no other thread of the process waits on the instance,
 *   - no listener is out after a failed rotation,
 *   - and the program keeps re-adding its listeners.
 * Only another process can make the instance shared, and it cannot write
 * this process's memory: every LOOK_AGAIN-th wait looks in full, so that
 * is seen within as many waits (and a forked child looks at once: its
 * fork handler moves the generation).  nginx, 4 workers: the look, the
 * plan and the deadline's clock reads were about 700 of the library's
 * 1,865 instructions per connection.
 */
#include "thunder.h"

#include <string.h>

#define LOOK_AGAIN 64

static __thread struct {
    int epfd;
    uint32_t gen;          /* epreg.c's generation at the look it comes from */
    uint32_t left;         /* waits before the next full look; 0: no memo */
    int k;
    struct th_ep_listener wl[TH_MAX_WAIT_LISTENERS];
} memo;

void th_eppass_note_plan(int epfd, const struct th_ep_listener *wl, int k, bool passes)
{
    if (!passes) {
        if (memo.epfd == epfd)
            memo.left = 0;
        return;
    }
    memo.epfd = epfd;
    memo.gen = th_epreg_looked_at();
    memo.left = LOOK_AGAIN;
    memo.k = k;
    memcpy(memo.wl, wl, (size_t)k * sizeof(*wl));
}

static bool still_passes(int epfd)
{
    if (memo.left == 0 || memo.epfd != epfd || memo.gen != th_epreg_gen() ||
        th_epreg_any_lost())
        return false;
    for (int j = 0; j < memo.k; j++)
        if (!th_epreg_rotated_by_program(memo.wl[j].l))
            return false;
    return th_epreg_waits_alone(epfd);      /* counted as waiting from here */
}

bool th_eppass_begin(int epfd)
{
    if (!still_passes(epfd))
        return false;
    memo.left--;
    th_self_new_wait();
    th_waiting_clear();
    for (int j = 0; j < memo.k; j++)
        TH_COUNT(memo.wl[j].l, waits, 1);
    return true;
}

static bool reported(const struct epoll_event *evs, int n, uint64_t data)
{
    for (int i = 0; i < n; i++)
        if (evs[i].data.u64 == data)
            return true;
    return false;
}

int th_eppass_end(int epfd, const struct epoll_event *evs, int result)
{
    int saved_errno = errno;

    th_epreg_done_waiting(epfd);
    for (int j = 0; j < memo.k && result > 0; j++) {
        if (reported(evs, result, memo.wl[j].data)) {
            TH_COUNT(memo.wl[j].l, wakeups, 1);
            th_self.woke |= th_listener_bit(memo.wl[j].l->index);
        }
    }
    errno = saved_errno;
    return result;
}

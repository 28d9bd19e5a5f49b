/*
 * The one lock wait, shared by poll-shaped waits (waitset.c) and epoll
 * waits (epreg.c): nginx's accept_mutex, generalised.
 *
 * Take the locks of the wait's listeners (held.c: block for one at most,
 * never while holding another, so several listeners cannot deadlock).
 * Listeners whose lock is busy are excluded from this round by the wait
 * path (a negated fd in a poll set, an entry taken out of a private epoll
 * instance) and the real wait is capped at retry_ms, so the lock is tried
 * again soon while the program's other fds are served all along.  A lock
 * whose listener the wait did not report is released at once; a reported
 * one is kept for the accept that follows (hook_accept.c).
 */
#include "thunder.h"

#include <pthread.h>

/*
 * This thread's last lock wait that reported a listener did so without
 * sleeping (a connection was queued: a saturated server).  Answers with
 * only the program's other fds leave it as it is: an event loop's client
 * whose request is ready at once tells nothing about the listen queue.
 * A look that finds nothing clears it.
 */
static __thread bool found_backlog;

static void release_on_cancel(void *unused TH_UNUSED)
{
    th_held_release_all();
}

/* Which of the wait's listeners its answer (r events) reported, by
   position; the program's other fds do not count (a client's request
   ready at once is no backlog). */
static uint64_t reported_listeners(const struct th_lockwait *lw, int r)
{
    uint64_t mask = 0;

    for (int j = 0; r > 0 && j < lw->k; j++)
        if (lw->reported(lw->ctx, j, r))
            mask |= 1ull << j;
    return mask;
}

/*
 * The real wait, as the holder: marked in the segment, released if
 * cancelled.  Whether it slept is noted (th_self.slept): a holder whose
 * wait found its listener ready at once passes the lock on (policy.c).
 * The locks stay marked in the wait: the caller releases each or, kept
 * for the accept, marks it out (keep_reported).
 */
int th_lockwait_hold(const struct th_lockwait *lw, int64_t until)
{
    int64_t start = th_now_ns();
    int r, saved_errno;

    th_held_mark_waiting(true);
    pthread_cleanup_push(release_on_cancel, NULL);
    r = lw->wait(lw->ctx, until, lw->sigmask);
    pthread_cleanup_pop(0);
    saved_errno = errno;
    th_self.slept = th_now_ns() - start >= TH_NO_SLEEP_NS;
    if (reported_listeners(lw, r))
        found_backlog = !th_self.slept;
    errno = saved_errno;
    return r;
}

/* After the holder's wait: release what policy.c does not keep for the
   accept, waking queued threads to look too in a burst (burst.c); what
   is kept is marked out of the wait (held.c). */
static void keep_reported(const struct th_lockwait *lw, const bool *held, int r)
{
    for (int j = 0; j < lw->k; j++)
        if (held[j] && !th_policy_keeps_lock(lw->reported(lw->ctx, j, r), th_self.slept))
            th_held_release_lookers(lw->ls[j],
                                    th_burst_lookers(lw->ls[j], lw->fds ? lw->fds[j] : -1,
                                                     th_self.slept, lw->start));
    th_held_mark_waiting(false);
}

/*
 * Bursts (burst.c decides with policy.c): may this lock wait look past a
 * busy lock, after what this thread took since its last wait?  fds: the
 * listeners' fds, in lw->ls order.  Returns the wait's start.
 */
int64_t th_lockwait_burst_begin(struct th_lockwait *lw, const int *fds, uint64_t took_last)
{
    int64_t start = th_now_ns();

    lw->fds = fds;
    lw->took_last = took_last;
    lw->start = start;
    /* a thread woken to look (th_policy_lookers) came for one connection:
       in the burst it queues at once after it, as a thread of a threaded
       instance does, instead of taking more through its own looks */
    lw->threaded = lw->threaded || th_self.looked;
    th_self.looked = false;
    lw->look_first = th_burst_looks_unlocked(lw->ls, lw->k, took_last, lw->threaded,
                                             &lw->check_after_look);
    return start;
}

/* ...and after it: the streak of waits that reported at once what was just taken. */
void th_lockwait_burst_end(const struct th_lockwait *lw, uint64_t took_last, int r, int64_t start)
{
    int saved_errno = errno;

    th_burst_lock_after(lw->ls, lw->k, took_last, reported_listeners(lw, r), start);
    errno = saved_errno;
}

static bool any(const bool *flags, int k)
{
    for (int j = 0; j < k; j++)
        if (flags[j])
            return true;
    return false;
}

static bool all_free(const struct th_lockwait *lw)
{
    for (int j = 0; j < lw->k; j++) {
        struct th_seg *seg = th_listener_seg(lw->ls[j]);
        if (seg && !th_lock_held_by(seg, 0))
            return false;
    }
    return true;
}

/*
 * The unlocked sleep of a waiter that just found a backlog (policy.c
 * th_policy_sleeps_unlocked), for up to TH_BUSY_SLEEP_MS.  What a wait
 * that did not sleep reports keeps the backlog noted.
 */
static bool slept_unlocked(const struct th_lockwait *lw, int64_t start, int *ret)
{
    int64_t until = th_min_deadline(lw->deadline, TH_BUSY_SLEEP_MS);

    *ret = lw->wait(lw->ctx, until, lw->sigmask);
    if (*ret <= 0 || th_now_ns() - start >= TH_NO_SLEEP_NS)
        found_backlog = false;
    return *ret != 0 || until == lw->deadline;
}

/*
 * A look without the lock: the real wait with timeout 0.  When it finds
 * nothing just after a wait that found a backlog, the real wait sleeps
 * unlocked for a moment (above); when that moment passes empty, the
 * caller queues.  Outside a burst's check (below) such a waiter skips
 * the look: the sleep returns at once what the look would have found,
 * in one system call instead of two (ex_epoll_shared, 4 workers, 8
 * clients in a closed loop: 1.16 -> 1.01 epoll_wait per connection;
 * 1.01 without the library).  In a burst the look may find a long
 * listen queue that the holder is to serve (burst.c): if it found
 * nothing but level-triggered listeners, its answer is dropped (they
 * stay ready) and the caller queues.
 */
static bool served_without_lock(const struct th_lockwait *lw, int *ret)
{
    int64_t now = th_now_ns();
    bool busy = found_backlog;

    if (!lw->look_first && lw->deadline > now)
        return false;
    if (busy && !lw->check_after_look && lw->deadline > now && th_policy_sleeps_unlocked(busy))
        return slept_unlocked(lw, now, ret);
    *ret = lw->wait(lw->ctx, now, lw->sigmask);
    if (*ret <= 0)
        found_backlog = false;
    else if (reported_listeners(lw, *ret))
        found_backlog = true;
    if (*ret > 0 && lw->check_after_look && lw->deadline > now &&
        lw->only_listeners(lw->ctx, *ret) &&
        th_burst_queues_after_look(lw->ls, lw->fds, lw->k, lw->took_last, lw->threaded))
        return false;
    if (*ret != 0 || lw->deadline <= now)
        return true;
    if (!th_policy_sleeps_unlocked(busy))
        return false;
    return slept_unlocked(lw, now, ret);
}

/*
 * The lock wait's cheap cases, run with signals as they are (nothing
 * sleeps before the real wait, which applies the caller's own mask):
 *   every lock free (one waiter at a time, or a program that serialises
 *   its own accepts like nginx's accept_mutex): take them and wait as
 *   their holder;
 *   a lock busy: look first (policy.c), and return what is ready.
 * Returns 1 with the wait's result in *ret, 0 when the wait must queue
 * (no lock kept): the caller then runs th_lockwait_run with signals
 * blocked.
 */
int th_lockwait_fast(const struct th_lockwait *lw, int *ret)
{
    bool held[TH_MAX_WAIT_LISTENERS], busy[TH_MAX_WAIT_LISTENERS];
    int saved_errno;

    th_held_release_all();          /* waiting again: the lock goes on */
    if (!all_free(lw))
        return served_without_lock(lw, ret);
    if (th_held_take(lw->ls, lw->k, false, lw->deadline, lw->sigmask, -1, held, busy) < 0)
        return 0;
    if (any(busy, lw->k)) {         /* taken meanwhile: queue the slow way */
        th_held_release_all();
        return served_without_lock(lw, ret);
    }
    lw->exclude(lw->ctx, held, busy, true);
    *ret = th_lockwait_hold(lw, lw->deadline);
    saved_errno = errno;
    lw->exclude(lw->ctx, held, busy, false);
    keep_reported(lw, held, *ret);
    errno = saved_errno;
    return 1;
}

int th_lockwait_run(const struct th_lockwait *lw)
{
    bool held[TH_MAX_WAIT_LISTENERS], busy[TH_MAX_WAIT_LISTENERS];

    th_held_release_all();          /* waiting again: the lock goes on */
    for (;;) {
        int64_t until = lw->deadline;
        int r, saved_errno, taken;
        bool capped;

        taken = th_held_take(lw->ls, lw->k, lw->may_block, lw->deadline, lw->sigmask, lw->bell,
                             held, busy);
        if (taken < 0)
            return -1;
        if (taken > 0) {                /* woken to look (policy.c th_policy_lookers) */
            r = lw->wait(lw->ctx, th_now_ns(), lw->sigmask);
            th_self.looked = r > 0;
            if (r != 0)
                return r;
            continue;                   /* nothing left: queue again */
        }
        capped = any(busy, lw->k);
        if (capped)
            until = th_min_deadline(lw->deadline, th_cfg.retry_ms);
        lw->exclude(lw->ctx, held, busy, true);
        r = th_lockwait_hold(lw, until);
        saved_errno = errno;
        lw->exclude(lw->ctx, held, busy, false);
        keep_reported(lw, held, r);
        if (r != 0 || !capped || th_remaining_ns(lw->deadline) == 0) {
            errno = saved_errno;
            return r;
        }
    }
}

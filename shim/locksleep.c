/*
 * Sleeping for the accept lock and waking whoever it was handed to.
 *
 * lock.c keeps the queue and says whom each change handed the lock to;
 * this file does the sleeping and the waking.  A queued thread sleeps on
 * its own futex word (its waiter slot), or, when it also has to serve
 * other fds or apply a signal mask atomically, in ppoll on its doorbell
 * (doorbell.c).  A release wakes exactly the thread it handed the lock to
 * and nobody else: the herd is not moved onto the lock.
 */
#include "thunder.h"

#include <linux/futex.h>
#include <pthread.h>
#include <sys/syscall.h>
#include <unistd.h>

/* Sleep while *word == expect, at most rel_ns; 0, ETIMEDOUT, EINTR or EAGAIN. */
static int futex_wait(_Atomic uint32_t *word, uint32_t expect, int64_t rel_ns)
{
    struct timespec ts;
    int saved_errno = errno, r;

    th_ns_to_timespec(rel_ns, &ts);
    /* shared (not FUTEX_PRIVATE): the word lives in another process's map too */
    r = syscall(SYS_futex, word, FUTEX_WAIT, expect, &ts, NULL, 0) == 0 ? 0 : errno;
    errno = saved_errno;
    return r;
}

static void futex_wake_one(_Atomic uint32_t *word)
{
    int saved_errno = errno;

    syscall(SYS_futex, word, FUTEX_WAKE, 1, NULL, NULL, 0);
    errno = saved_errno;
}

/* A doorbell waiter sleeps in ppoll, never on its futex word: ring only. */
void th_lock_wake(const struct th_seg *seg, struct th_grant g)
{
    if (g.w == NULL)
        return;
    if (g.flags & TH_WF_DOORBELL)
        th_doorbell_ring(seg->uid, &g.bell);
    else
        futex_wake_one(&g.w->state);
}

/* Is a signal pending that the caller's mask would let through? */
static bool unblocked_signal_pending(const sigset_t *sigmask)
{
    sigset_t pending;

    sigpending(&pending);
    for (int sig = 1; sig < NSIG; sig++)
        if (sigismember(&pending, sig) == 1 && sigismember(sigmask, sig) == 0)
            return true;
    return false;
}

/* Sleep on the doorbell: ppoll applies the mask atomically. */
static int sleep_on_bell(int bell, int64_t rel_ns, const sigset_t *sigmask)
{
    struct pollfd pfd = { .fd = bell, .events = POLLIN };
    struct timespec ts;
    int saved_errno = errno, r;

    th_ns_to_timespec(rel_ns, &ts);
    r = real_ppoll(&pfd, 1, &ts, sigmask);
    r = r < 0 ? errno : r == 0 ? ETIMEDOUT : 0;
    if (pfd.revents)
        th_doorbell_drain(bell);
    errno = saved_errno;
    return r;
}

/*
 * Sleep on our futex word with the caller's signal mask applied.  A signal
 * already pending that the mask unblocks is delivered at once and counts as
 * an interruption, as in the real call.  (A futex cannot apply a mask
 * atomically: a signal arriving in the few instructions between the mask
 * change and the sleep is handled but not reported.  Poll-shaped waits
 * with a mask avoid this by sleeping in ppoll on a doorbell instead.)
 */
static int sleep_on(struct th_waiter *me, int64_t rel_ns, const sigset_t *sigmask, int bell)
{
    sigset_t all, old;
    int r;

    if (bell >= 0)
        return sleep_on_bell(bell, rel_ns, sigmask);
    if (sigmask == NULL)
        return futex_wait(&me->state, TH_W_QUEUED, rel_ns);
    th_sig_busy_mask(&all, sigmask);     /* ignored signals stay droppable */
    pthread_sigmask(SIG_SETMASK, &all, &old);
    if (unblocked_signal_pending(sigmask)) {
        pthread_sigmask(SIG_SETMASK, sigmask, NULL);   /* delivers it now */
        pthread_sigmask(SIG_SETMASK, &old, NULL);
        return EINTR;
    }
    pthread_sigmask(SIG_SETMASK, sigmask, NULL);
    r = futex_wait(&me->state, TH_W_QUEUED, rel_ns);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    return r;
}

static enum th_lock_result try_once(struct th_seg *seg, const struct th_lock_wait *w,
                                    uint64_t *gen)
{
    struct th_grant wake;
    enum th_lock_result res = th_lock_try(seg, w->params, w->for_wait, gen, &wake);

    th_lock_wake(seg, wake);
    return res;
}

/* Queued: sleep in slices, look at the holder between them, until granted. */
static enum th_lock_result sleep_until_granted(struct th_seg *seg, const struct th_lock_wait *w,
                                               struct th_waiter *me, uint64_t *gen)
{
    bool next_in_line = th_lock_queue_short(seg);
    struct th_grant wake;

    for (;;) {
        int64_t left = th_remaining_ns(w->deadline);
        int64_t slice = th_lock_slice_ns(seg, w->params, next_in_line);
        int r;

        if (th_lock_granted(me, gen))
            return TH_LOCK_OK;
        if (left == 0) {
            th_lock_wake(seg, th_lock_abandon(seg, w->params, me));
            return TH_LOCK_TIMEOUT;
        }
        r = sleep_on(me, left < slice ? left : slice, w->sigmask, w->use_bell ? w->bell : -1);
        /* EINTR with no handler able to run: a stop and continue (or a
           failure the kernel does not make); the real call would go on */
        if (r == EINTR && th_sig_handler_deliverable(w->sigmask)) {
            th_lock_wake(seg, th_lock_abandon(seg, w->params, me));
            return TH_LOCK_INTR;
        }
        /* the bell rang, no grant came, and a burst's holder asked us to look
           (a ring left over from an earlier grant only makes us look again) */
        if (r == 0 && w->use_bell && th_lock_asked_to_look(seg, me)) {
            th_lock_wake(seg, th_lock_abandon(seg, w->params, me));
            return TH_LOCK_LOOK;
        }
        if (r == ETIMEDOUT && atomic_load(&me->state) == TH_W_QUEUED) {
            next_in_line = th_lock_check(seg, w->params, me, &wake);
            th_lock_wake(seg, wake);
        }
    }
}

/* *waited_ns stays 0 when the lock is taken at once, and only then does
   w->for_wait mark it in the wait (held.c relies on both). */
enum th_lock_result th_lock_acquire(struct th_seg *seg, const struct th_lock_wait *w,
                                    uint64_t *gen, int64_t *waited_ns)
{
    struct th_waiter *me;
    struct th_grant wake;
    enum th_lock_result res;
    int64_t start = th_now_ns();

    *waited_ns = 0;
    if (w->try_only || th_remaining_ns(w->deadline) == 0)
        return try_once(seg, w, gen);    /* a try never queues */
    res = th_lock_enqueue(seg, w->params, w->use_bell ? th_doorbell_id() : NULL, w->for_wait,
                          &me, gen, &wake);
    th_lock_wake(seg, wake);
    if (res != TH_LOCK_BUSY)
        return res;
    res = sleep_until_granted(seg, w, me, gen);
    *waited_ns = th_now_ns() - start;
    return res;
}

void th_lock_release_and_wake(struct th_seg *seg, const struct th_lock_params *p, uint64_t gen)
{
    th_lock_wake(seg, th_lock_release(seg, p, gen));
}

void th_lock_release_and_wake_lookers(struct th_seg *seg, const struct th_lock_params *p,
                                      uint64_t gen, int lookers)
{
    struct th_bell_id bells[TH_MAX_LOOKERS];
    int n;

    th_lock_wake(seg, th_lock_release_lookers(seg, p, gen, lookers, bells, &n));
    for (int i = 0; i < n; i++)
        th_doorbell_ring(seg->uid, &bells[i]);
}

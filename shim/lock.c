/*
 * The accept lock: a queue lock in shared memory with FIFO (or LIFO)
 * hand-off that wakes exactly one waiter per release.
 *
 * Each queued thread sleeps on its own futex word (its waiter slot), so a
 * release wakes the one thread it hands the lock to and nobody else: the
 * herd is not moved onto the lock.  The queue itself is bookkeeping done
 * under seg->guard, a robust process-shared mutex held for a few lines
 * only; its unfairness does not matter because it never decides who gets
 * the accept lock, the ticket order does.
 *
 * Robustness: a waiter wakes every check_ms (the next in line) or every
 * 4*check_ms (the others) to look at the holder.  A holder whose thread is
 * gone (kill -9, thread exit, cancellation) or that has held the lock for
 * hold_ms without waiting on the listener is replaced by the next waiter.
 * A release also skips queued waiters that have died.
 */
#include "thunder.h"

#include <linux/futex.h>
#include <pthread.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#define NS_PER_MS 1000000LL

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

/*
 * The waiter a grant went to, as the granter must wake it after dropping
 * the guard.  Its tid and flags are copied under the guard: once the
 * grantee has seen the grant it frees the slot, and another thread may be
 * queued in it before the granter reads them.  (A futex wake that finds
 * the new occupant instead is only a spurious wake-up to it.)
 */
struct grant {
    struct th_waiter *w;      /* NULL: the lock went to nobody */
    int32_t tid;
    uint32_t flags;
};

static const struct grant no_grant = { NULL, 0, 0 };

/* Wake the waiter the lock was just handed to (after the guard is dropped). */
static void wake(const struct th_seg *seg, struct grant g)
{
    if (g.w == NULL)
        return;
    futex_wake_one(&g.w->state);
    if (g.flags & TH_WF_DOORBELL)
        th_doorbell_ring(seg->uid, g.tid);
}

static bool prefer(const struct th_waiter *a, const struct th_waiter *b)
{
    if (b == NULL)
        return true;
    return th_cfg.balance == TH_BALANCE_LIFO ? a->ticket > b->ticket : a->ticket < b->ticket;
}

static void become_holder_locked(struct th_seg *seg, int32_t pid, int32_t tid, uint64_t *gen)
{
    seg->holder_pid = pid;
    seg->holder_tid = tid;
    seg->holder_gen++;
    seg->holder_since_ns = (uint64_t)th_now_ns();
    seg->holder_in_wait = 0;
    *gen = seg->holder_gen;
}

/* Hand the lock to the next live waiter; returns it (wake it after unlock). */
static struct grant grant_next_locked(struct th_seg *seg)
{
    for (;;) {
        struct th_waiter *best = NULL;

        for (int i = 0; i < TH_MAX_WAITERS && seg->nqueued; i++) {
            struct th_waiter *w = &seg->waiters[i];
            if (atomic_load_explicit(&w->state, memory_order_relaxed) == TH_W_QUEUED &&
                prefer(w, best))
                best = w;
        }
        if (best == NULL) {
            seg->holder_pid = seg->holder_tid = 0;
            seg->nqueued = 0;
            return no_grant;
        }
        seg->nqueued--;
        if (!th_thread_alive(best->pid, best->tid)) {
            atomic_store(&best->state, TH_W_FREE);   /* died in the queue */
            continue;
        }
        become_holder_locked(seg, best->pid, best->tid, &best->gen);
        atomic_store_explicit(&best->state, TH_W_GRANTED, memory_order_release);
        return (struct grant){ best, best->tid, best->flags };
    }
}

/*
 * The holder died or stalled outside its wait: hand the lock on.  The
 * periodic check also looks for a holder that exited but is not reaped yet
 * (a zombie answers kill(pid, 0)); that reads /proc, so not on every enqueue.
 */
static struct grant recover_locked(struct th_seg *seg, bool periodic)
{
    const char *why = NULL;

    if (seg->holder_pid == 0)
        return seg->nqueued ? grant_next_locked(seg) : no_grant;
    if (!th_thread_alive(seg->holder_pid, seg->holder_tid) ||
        (periodic && th_pid_exited(seg->holder_pid)))
        why = "died";
    else if (!seg->holder_in_wait &&
             (uint64_t)th_now_ns() - seg->holder_since_ns > th_cfg.hold_ms * NS_PER_MS)
        why = "held it too long without accepting";
    if (why == NULL)
        return no_grant;
    th_info("port %u: lock holder %d/%d %s; handing the lock on", seg->port,
            seg->holder_pid, seg->holder_tid, why);
    atomic_fetch_add(&seg->recoveries, 1);
    return grant_next_locked(seg);
}

static struct th_waiter *enqueue_locked(struct th_seg *seg, uint32_t flags)
{
    for (int i = 0; i < TH_MAX_WAITERS; i++) {
        struct th_waiter *w = &seg->waiters[i];
        if (atomic_load(&w->state) != TH_W_FREE)
            continue;
        w->pid = th_pid;
        w->tid = th_gettid();
        w->ticket = ++seg->next_ticket;
        w->gen = 0;
        w->flags = flags;
        atomic_store(&w->state, TH_W_QUEUED);
        seg->nqueued++;
        return w;
    }
    return NULL;
}

static bool is_next_locked(const struct th_seg *seg, const struct th_waiter *me)
{
    for (int i = 0; i < TH_MAX_WAITERS; i++) {
        const struct th_waiter *w = &seg->waiters[i];
        if (w != me && atomic_load(&w->state) == TH_W_QUEUED && prefer(w, me))
            return false;
    }
    return true;
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

    if (bell >= 0) {
        /* the doorbell: ppoll applies the mask atomically */
        struct pollfd pfd = { .fd = bell, .events = POLLIN };
        struct timespec ts;
        int saved_errno = errno;

        th_ns_to_timespec(rel_ns, &ts);
        r = real_ppoll(&pfd, 1, &ts, sigmask);
        r = r < 0 ? errno : r == 0 ? ETIMEDOUT : 0;
        if (pfd.revents)
            th_doorbell_drain(bell);
        errno = saved_errno;
        return r;
    }
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

/*
 * How long a queued waiter sleeps before it looks at the holder: check_ms
 * for the next in line, who takes over a dead holder; the others only back
 * it up, so they look 4x less often, and less still in long queues, which
 * keeps the whole queue at about 4 looks per check_ms (an idle server with
 * 64 workers would otherwise wake 600 times a second).
 */
int64_t th_lock_slice_ns(const struct th_seg *seg, bool next_in_line)
{
    int64_t factor = next_in_line ? 1 : 4;
    uint32_t queued = seg->nqueued;      /* a hint, read without the guard */

    if (!next_in_line && queued > 16)
        factor = queued / 4;
    return (int64_t)th_cfg.check_ms * NS_PER_MS * factor;
}

enum th_lock_result th_lock_enqueue(struct th_seg *seg, uint32_t flags,
                                    struct th_waiter **me, uint64_t *gen)
{
    struct grant next;

    *me = NULL;
    *gen = 0;
    if (th_guard_lock(seg) < 0)
        return TH_LOCK_ERROR;
    next = recover_locked(seg, false);
    if (seg->holder_pid == 0) {
        become_holder_locked(seg, th_pid, th_gettid(), gen);
        th_guard_unlock(seg);
        return TH_LOCK_OK;
    }
    *me = enqueue_locked(seg, flags);
    th_guard_unlock(seg);
    wake(seg, next);
    if (*me == NULL) {
        th_warn("port %u: more than %d threads queued; this wait runs pass-through",
                seg->port, TH_MAX_WAITERS);
        return TH_LOCK_ERROR;
    }
    return TH_LOCK_BUSY;
}

bool th_lock_granted(struct th_waiter *me, uint64_t *gen)
{
    if (atomic_load_explicit(&me->state, memory_order_acquire) != TH_W_GRANTED)
        return false;
    *gen = me->gen;
    atomic_store(&me->state, TH_W_FREE);
    return true;
}

/* Leave the queue (timeout, signal, other fds ready); a grant that raced it is passed on. */
void th_lock_abandon(struct th_seg *seg, struct th_waiter *me)
{
    struct grant next = no_grant;

    if (th_guard_lock(seg) < 0) {
        /* cannot touch the queue: a granted lock is recovered after hold_ms */
        uint32_t queued = TH_W_QUEUED;
        atomic_compare_exchange_strong(&me->state, &queued, TH_W_FREE);
        return;
    }
    if (atomic_load(&me->state) == TH_W_GRANTED) {
        if (seg->holder_gen == me->gen)
            next = grant_next_locked(seg);
    } else if (atomic_load(&me->state) == TH_W_QUEUED) {
        seg->nqueued--;
    }
    atomic_store(&me->state, TH_W_FREE);
    th_guard_unlock(seg);
    wake(seg, next);
}

/* The periodic look at the holder; returns whether we are next in line. */
bool th_lock_check(struct th_seg *seg, struct th_waiter *me)
{
    struct grant next;
    bool next_in_line;

    if (th_guard_lock(seg) < 0)
        return false;
    next = recover_locked(seg, true);
    next_in_line = atomic_load(&me->state) == TH_W_QUEUED && is_next_locked(seg, me);
    th_guard_unlock(seg);
    if (next.w != me)
        wake(seg, next);
    return next_in_line;
}

enum th_lock_result th_lock_acquire(struct th_seg *seg, const struct th_lock_wait *w,
                                    uint64_t *gen, int64_t *waited_ns)
{
    struct th_waiter *me;
    enum th_lock_result res;
    int64_t start = th_now_ns();
    bool next_in_line;

    *waited_ns = 0;
    if (w->try_only || th_remaining_ns(w->deadline) == 0) {
        /* a try never queues: take it if free, else busy */
        if (th_guard_lock(seg) < 0)
            return TH_LOCK_ERROR;
        struct grant next = recover_locked(seg, false);
        res = TH_LOCK_BUSY;
        if (seg->holder_pid == 0) {
            become_holder_locked(seg, th_pid, th_gettid(), gen);
            res = TH_LOCK_OK;
        }
        th_guard_unlock(seg);
        wake(seg, next);
        return res;
    }
    res = th_lock_enqueue(seg, w->use_bell ? TH_WF_DOORBELL : 0, &me, gen);
    if (res != TH_LOCK_BUSY)
        return res;
    next_in_line = seg->nqueued <= 1;
    for (;;) {
        int64_t left = th_remaining_ns(w->deadline), slice = th_lock_slice_ns(seg, next_in_line);
        int r;

        if (th_lock_granted(me, gen)) {
            res = TH_LOCK_OK;
            break;
        }
        if (left == 0) {
            th_lock_abandon(seg, me);
            res = TH_LOCK_TIMEOUT;
            break;
        }
        r = sleep_on(me, left < slice ? left : slice, w->sigmask, w->use_bell ? w->bell : -1);
        if (r == EINTR) {
            th_lock_abandon(seg, me);
            res = TH_LOCK_INTR;
            break;
        }
        if (r == ETIMEDOUT && atomic_load(&me->state) == TH_W_QUEUED)
            next_in_line = th_lock_check(seg, me);
    }
    *waited_ns = th_now_ns() - start;
    return res;
}

void th_lock_release(struct th_seg *seg, uint64_t gen)
{
    struct grant next = no_grant;

    if (th_guard_lock(seg) < 0)
        return;                 /* others recover the lock after hold_ms */
    if (seg->holder_gen == gen && seg->holder_pid == th_pid)
        next = grant_next_locked(seg);
    th_guard_unlock(seg);
    wake(seg, next);
}

void th_lock_mark_waiting(struct th_seg *seg, uint64_t gen, bool in_wait)
{
    if (th_guard_lock(seg) < 0)
        return;
    if (seg->holder_gen == gen && seg->holder_pid == th_pid) {
        seg->holder_in_wait = in_wait;
        if (!in_wait)
            seg->holder_since_ns = (uint64_t)th_now_ns();
    }
    th_guard_unlock(seg);
}

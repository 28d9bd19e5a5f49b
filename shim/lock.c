/*
 * The accept lock: a queue lock in shared memory with FIFO (or LIFO)
 * hand-off that wakes exactly one waiter per release.
 *
 * This file is the queue alone: who holds the lock, who waits for it, in
 * which order, and whom a change hands it to.  It never sleeps and never
 * wakes anybody: each operation returns the grant it made (struct
 * th_grant), and the caller wakes that waiter after the call
 * (th_lock_wake, locksleep.c).  Its parameters (order, hold and check
 * times) are passed in by the caller, not read from the configuration.
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
 * hold_ms without waiting on the listener, or that has been seen stopped
 * (SIGSTOP, a debugger) for hold_ms, is replaced by the next waiter.
 * A release also skips queued waiters that have died.
 */
#include "thunder.h"

#include <string.h>

/*
 * The waiter a grant went to (struct th_grant, thunder.h), as the granter
 * must wake it after dropping the guard.  Its tid and flags are copied under the guard: once the
 * grantee has seen the grant it frees the slot, and another thread may be
 * queued in it before the granter reads them.  (A futex wake that finds
 * the new occupant instead is only a spurious wake-up to it.)
 */
static const struct th_grant no_grant = { NULL, 0, 0, { 0, 0 } };

static bool prefer(const struct th_lock_params *p, const struct th_waiter *a,
                   const struct th_waiter *b)
{
    if (b == NULL)
        return true;
    return p->balance == TH_BALANCE_LIFO ? a->ticket > b->ticket : a->ticket < b->ticket;
}

/* in_wait: the new holder goes straight into its real wait (a take for a
   wait, th_lock_wait.for_wait): marked there now, not by a second call */
static void become_holder_locked(struct th_seg *seg, int32_t pid, int32_t tid, bool in_wait,
                                 uint64_t *gen)
{
    seg->holder_pid = pid;
    seg->holder_tid = tid;
    seg->holder_gen++;
    seg->holder_since_ns = (uint64_t)th_now_ns();
    seg->holder_in_wait = in_wait;
    seg->holder_stopped_ns = 0;
    *gen = seg->holder_gen;
}

/*
 * The next queued waiter slot from *i on, or NULL once nqueued of them
 * have been seen (*seen): slots are taken first-free, so a queue of 64
 * ends near slot 64 and a hand-off does not read all TH_MAX_WAITERS
 * slots (a cache line each) under the guard.
 */
static struct th_waiter *next_queued(struct th_seg *seg, int *i, uint32_t *seen)
{
    while (*i < TH_MAX_WAITERS && *seen < seg->nqueued) {
        struct th_waiter *w = &seg->waiters[(*i)++];
        if (atomic_load_explicit(&w->state, memory_order_relaxed) == TH_W_QUEUED) {
            (*seen)++;
            return w;
        }
    }
    return NULL;
}

/* Hand the lock to the next live waiter; returns it (wake it after unlock). */
static struct th_grant grant_next_locked(struct th_seg *seg, const struct th_lock_params *p)
{
    for (;;) {
        struct th_waiter *best = NULL, *w;
        uint32_t seen = 0;
        int i = 0;

        while ((w = next_queued(seg, &i, &seen)) != NULL)
            if (prefer(p, w, best))
                best = w;
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
        become_holder_locked(seg, best->pid, best->tid, false, &best->gen);
        atomic_store_explicit(&best->state, TH_W_GRANTED, memory_order_release);
        return (struct th_grant){ best, best->tid, best->flags,
                                  { best->bell, best->bell_token } };
    }
}

/*
 * A stopped holder (SIGSTOP, SIGTSTP, a debugger) accepts nothing, in its
 * wait or not: it counts as stalled once waiters have seen it stopped for
 * hold_ms.  Read on the periodic check only (a /proc read), so a stop is
 * taken over within hold_ms + 2 * check_ms.  When it runs again, its hold
 * generation is stale: its release and its marks are no-ops.
 */
static bool stopped_too_long(struct th_seg *seg, const struct th_lock_params *p)
{
    uint64_t now = (uint64_t)th_now_ns();

    if (!th_thread_stopped(seg->holder_pid, seg->holder_tid)) {
        seg->holder_stopped_ns = 0;
        return false;
    }
    if (seg->holder_stopped_ns == 0)
        seg->holder_stopped_ns = now;
    return now - seg->holder_stopped_ns >= p->hold_ms * TH_NS_PER_MS;
}

/*
 * Is the holder gone?  The periodic check also looks for a holder that
 * exited but is not reaped yet (a zombie answers kill(pid, 0)); that reads
 * /proc, so not on every enqueue.  An enqueue does not ask about a holder
 * that took the lock or came back from its wait less than check_ms ago
 * (a system call each time, and on a busy server the holder changes
 * every few microseconds): the periodic check finds it within check_ms.
 */
static bool holder_gone(const struct th_seg *seg, const struct th_lock_params *p, bool periodic,
                        uint64_t now)
{
    if (!periodic && now - seg->holder_since_ns < p->check_ms * TH_NS_PER_MS)
        return false;
    return !th_thread_alive(seg->holder_pid, seg->holder_tid) ||
           (periodic && th_pid_exited(seg->holder_pid));
}

/* The holder died or stalled outside its wait: hand the lock on. */
static struct th_grant recover_locked(struct th_seg *seg, const struct th_lock_params *p,
                                      bool periodic)
{
    const char *why = NULL;
    uint64_t now;

    if (seg->holder_pid == 0)
        return seg->nqueued ? grant_next_locked(seg, p) : no_grant;
    now = (uint64_t)th_now_ns();
    if (holder_gone(seg, p, periodic, now))
        why = "died";
    else if (!seg->holder_in_wait && now - seg->holder_since_ns > p->hold_ms * TH_NS_PER_MS)
        why = "held it too long without accepting";
    else if (periodic && stopped_too_long(seg, p))
        why = "is stopped (SIGSTOP or a debugger)";
    if (why == NULL)
        return no_grant;
    th_info("port %u: lock holder %d/%d %s; handing the lock on", seg->port,
            seg->holder_pid, seg->holder_tid, why);
    atomic_fetch_add(&seg->recoveries, 1);
    return grant_next_locked(seg, p);
}

static struct th_waiter *enqueue_locked(struct th_seg *seg, const struct th_bell_id *bell)
{
    for (int i = 0; i < TH_MAX_WAITERS; i++) {
        struct th_waiter *w = &seg->waiters[i];
        if (atomic_load(&w->state) != TH_W_FREE)
            continue;
        w->pid = th_pid;
        w->tid = th_gettid();
        w->ticket = ++seg->next_ticket;
        w->gen = 0;
        w->flags = bell ? TH_WF_DOORBELL : 0;
        w->bell = bell ? bell->name : 0;
        w->bell_token = bell ? bell->token : 0;
        atomic_store(&w->state, TH_W_QUEUED);
        seg->nqueued++;
        return w;
    }
    return NULL;
}

static bool is_next_locked(struct th_seg *seg, const struct th_lock_params *p,
                           const struct th_waiter *me)
{
    struct th_waiter *w;
    uint32_t seen = 0;
    int i = 0;

    while ((w = next_queued(seg, &i, &seen)) != NULL)
        if (w != me && prefer(p, w, me))
            return false;
    return true;
}

/*
 * How long a queued waiter sleeps before it looks at the holder: check_ms
 * for the next in line, who takes over a dead holder; the others only back
 * it up, so they look 4x less often, and less still in long queues, which
 * keeps the whole queue at about 4 looks per check_ms (an idle server with
 * 64 workers would otherwise wake 600 times a second).
 */
int64_t th_lock_slice_ns(const struct th_seg *seg, const struct th_lock_params *p,
                         bool next_in_line)
{
    int64_t factor = next_in_line ? 1 : 4;
    uint32_t queued = seg->nqueued;      /* a hint, read without the guard */

    if (!next_in_line && queued > 16)
        factor = queued / 4;
    return (int64_t)p->check_ms * TH_NS_PER_MS * factor;
}

bool th_lock_queue_short(const struct th_seg *seg)
{
    return seg->nqueued <= 1;            /* a hint, read without the guard */
}

bool th_lock_held_by(const struct th_seg *seg, int32_t pid)
{
    return seg->holder_pid == pid;       /* a hint, read without the guard */
}

enum th_lock_result th_lock_try(struct th_seg *seg, const struct th_lock_params *p,
                                bool in_wait, uint64_t *gen, struct th_grant *wake)
{
    enum th_lock_result res = TH_LOCK_BUSY;

    *wake = no_grant;
    if (th_guard_lock(seg) < 0)
        return TH_LOCK_ERROR;
    *wake = recover_locked(seg, p, false);
    if (seg->holder_pid == 0) {
        become_holder_locked(seg, th_pid, th_gettid(), in_wait, gen);
        res = TH_LOCK_OK;
    }
    th_guard_unlock(seg);
    return res;
}

enum th_lock_result th_lock_enqueue(struct th_seg *seg, const struct th_lock_params *p,
                                    const struct th_bell_id *bell, bool in_wait,
                                    struct th_waiter **me, uint64_t *gen, struct th_grant *wake)
{
    *me = NULL;
    *gen = 0;
    *wake = no_grant;
    if (th_guard_lock(seg) < 0)
        return TH_LOCK_ERROR;
    *wake = recover_locked(seg, p, false);
    if (seg->holder_pid == 0) {
        become_holder_locked(seg, th_pid, th_gettid(), in_wait, gen);
        th_guard_unlock(seg);
        return TH_LOCK_OK;
    }
    *me = enqueue_locked(seg, bell);
    th_guard_unlock(seg);
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
struct th_grant th_lock_abandon(struct th_seg *seg, const struct th_lock_params *p,
                                struct th_waiter *me)
{
    struct th_grant next = no_grant;

    if (th_guard_lock(seg) < 0) {
        /* cannot touch the queue: a granted lock is recovered after hold_ms */
        uint32_t queued = TH_W_QUEUED;
        atomic_compare_exchange_strong(&me->state, &queued, TH_W_FREE);
        return no_grant;
    }
    if (atomic_load(&me->state) == TH_W_GRANTED) {
        if (seg->holder_gen == me->gen)
            next = grant_next_locked(seg, p);
    } else if (atomic_load(&me->state) == TH_W_QUEUED) {
        seg->nqueued--;
    }
    atomic_store(&me->state, TH_W_FREE);
    th_guard_unlock(seg);
    return next;
}

/*
 * The periodic look at the holder; returns whether we are next in line.
 * A grant made to me needs no wake-up: the caller looks at its word next.
 */
bool th_lock_check(struct th_seg *seg, const struct th_lock_params *p, struct th_waiter *me,
                   struct th_grant *wake)
{
    bool next_in_line;

    *wake = no_grant;
    if (th_guard_lock(seg) < 0)
        return false;
    *wake = recover_locked(seg, p, true);
    next_in_line = atomic_load(&me->state) == TH_W_QUEUED && is_next_locked(seg, p, me);
    th_guard_unlock(seg);
    if (wake->w == me)
        *wake = no_grant;
    return next_in_line;
}

/* oldest[0..*size) holds the n oldest tickets seen so far, oldest first
   (n is at most TH_MAX_LOOKERS: an insertion into a short sorted array). */
static void keep_oldest(struct th_waiter **oldest, int *size, int n, struct th_waiter *w)
{
    int i = *size;

    if (i == n) {                   /* full: w must be older than the youngest kept */
        if (w->ticket >= oldest[n - 1]->ticket)
            return;
        i = n - 1;
    } else {
        (*size)++;
    }
    for (; i > 0 && oldest[i - 1]->ticket > w->ticket; i--)
        oldest[i] = oldest[i - 1];
    oldest[i] = w;
}

/*
 * The n queued threads with a doorbell that have waited longest, after
 * the grantee (no longer queued) and leaving out those already asked:
 * their bells are to ring without a grant, and each leaves the queue
 * itself (th_lock_abandon) to look.  In ticket order, so the same few
 * threads (the first free slots are the most recently queued) are not
 * the ones asked every time.
 */
static int pick_lookers_locked(struct th_seg *seg, int n, struct th_bell_id *bells)
{
    struct th_waiter *oldest[TH_MAX_LOOKERS], *w;
    uint32_t seen = 0;
    int i = 0, size = 0;

    n = n < TH_MAX_LOOKERS ? n : TH_MAX_LOOKERS;
    while ((w = next_queued(seg, &i, &seen)) != NULL)
        if ((w->flags & (TH_WF_DOORBELL | TH_WF_LOOK)) == TH_WF_DOORBELL)
            keep_oldest(oldest, &size, n, w);
    for (int j = 0; j < size; j++) {
        oldest[j]->flags |= TH_WF_LOOK;
        bells[j] = (struct th_bell_id){ oldest[j]->bell, oldest[j]->bell_token };
    }
    return size;
}

struct th_grant th_lock_release_lookers(struct th_seg *seg, const struct th_lock_params *p,
                                        uint64_t gen, int lookers, struct th_bell_id *bells,
                                        int *nbells)
{
    struct th_grant next = no_grant;

    *nbells = 0;
    if (th_guard_lock(seg) < 0)
        return no_grant;        /* others recover the lock after hold_ms */
    if (seg->holder_gen == gen && seg->holder_pid == th_pid) {
        next = grant_next_locked(seg, p);
        if (next.w != NULL && lookers > 0)
            *nbells = pick_lookers_locked(seg, lookers, bells);
    }
    th_guard_unlock(seg);
    return next;
}

bool th_lock_asked_to_look(struct th_seg *seg, struct th_waiter *me)
{
    bool asked;

    if (th_guard_lock(seg) < 0)
        return false;
    asked = atomic_load(&me->state) == TH_W_QUEUED && (me->flags & TH_WF_LOOK);
    th_guard_unlock(seg);
    return asked;
}

struct th_grant th_lock_release(struct th_seg *seg, const struct th_lock_params *p, uint64_t gen)
{
    int none;

    return th_lock_release_lookers(seg, p, gen, 0, NULL, &none);
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

/*
 * Poll-shaped waits: poll, ppoll, __poll_chk, __ppoll_chk, and
 * select/pselect (converted to a pollfd set by hook_select.c).  The
 * strategy comes from policy.c:
 *
 *   exclusive  sleep on a private exclusive epoll mirror (mirror.c)
 *   lock       the accept lock, as below
 *   otherwise  the real call, counted
 *
 * The lock: a thread with a doorbell queues for the first lock it did not
 * get and sleeps in the real ppoll on its own fds plus its doorbell, which
 * the releaser rings when it hands it the lock (queued_wait), so the
 * program's other fds are served all along and the signal mask is applied
 * atomically.  Without a doorbell it takes the one lock wait of
 * lockwait.c, with the listeners it did not get negated in the caller's
 * array.  A wait that finds every lock free, or that finds the lock busy
 * and something ready at a first look, runs with signals as they are
 * (lockwait.c, th_lockwait_fast); one that must queue blocks signals while
 * the shim works, and every sleep applies the caller's mask atomically
 * (signals.c).
 */
#include "thunder.h"

#include <pthread.h>
#include <string.h>

#define DOORBELL_MAX_SET 256   /* larger mixed sets retry instead */

struct set_listener {
    nfds_t index;
    struct th_listener *l;
    bool held;
    bool masked;
};

static int real_ppoll_until(struct pollfd *fds, nfds_t n, int64_t deadline,
                            const sigset_t *sigmask)
{
    struct timespec ts;
    int64_t left = th_remaining_ns(deadline);

    if (left == TH_FOREVER)
        return real_ppoll(fds, n, NULL, sigmask);
    th_ns_to_timespec(left, &ts);
    return real_ppoll(fds, n, &ts, sigmask);
}

static bool wants_accept(const struct pollfd *p)
{
    return p->fd >= 0 && (p->events & POLLIN);
}

bool th_waitset_has_listener(const struct pollfd *fds, nfds_t n)
{
    for (nfds_t i = 0; i < n; i++)
        if (wants_accept(&fds[i]) && th_fd_listener(fds[i].fd))
            return true;
    return false;
}

static int collect(const struct pollfd *fds, nfds_t n, struct set_listener *set, int *others)
{
    int k = 0;

    *others = 0;
    for (nfds_t i = 0; i < n; i++) {
        struct th_listener *l;
        if (fds[i].fd < 0)
            continue;
        if (k < TH_MAX_WAIT_LISTENERS && wants_accept(&fds[i]) &&
            (l = th_fd_listener(fds[i].fd)) != NULL)
            set[k++] = (struct set_listener){ .index = i, .l = l };
        else
            (*others)++;
    }
    return k;
}

static void count_entry(struct set_listener *set, int k)
{
    th_self_new_wait();
    for (int j = 0; j < k; j++)
        TH_COUNT(set[j].l, waits, 1);
}

static void count_wakeups(const struct pollfd *fds, int r, struct set_listener *set, int k)
{
    for (int j = 0; r > 0 && j < k; j++) {
        if (fds[set[j].index].revents & (POLLIN | POLLERR | POLLHUP)) {
            TH_COUNT(set[j].l, wakeups, 1);
            th_self.woke |= th_listener_bit(set[j].l->index);
        }
    }
}

static int take_locks(struct set_listener *set, int k, int64_t deadline)
{
    struct th_listener *ls[TH_MAX_WAIT_LISTENERS] = { NULL };
    bool held[TH_MAX_WAIT_LISTENERS], busy[TH_MAX_WAIT_LISTENERS];

    for (int j = 0; j < k; j++)
        ls[j] = set[j].l;
    if (th_held_take(ls, k, false, deadline, NULL, -1, held, busy) < 0)
        return -1;
    for (int j = 0; j < k; j++) {
        set[j].held = held[j];
        set[j].masked = busy[j];
    }
    return 0;
}

/* Queue for the first busy listener's lock; the rest stay masked this call. */
static struct th_waiter *queue_for_first_busy(struct set_listener *set, int k, int *qj)
{
    for (int j = 0; j < k; j++) {
        struct th_seg *seg = th_listener_seg(set[j].l);
        struct th_waiter *me;
        struct th_grant wake;
        enum th_lock_result res;
        uint64_t gen;

        if (!set[j].masked || seg == NULL)
            continue;
        res = th_lock_enqueue(seg, &th_cfg.lock, th_doorbell_id(), true, &me, &gen, &wake);
        th_lock_wake(seg, wake);
        switch (res) {
        case TH_LOCK_OK:                 /* freed meanwhile: ours */
            th_held_add(set[j].l, gen, true);
            set[j].held = true;
            set[j].masked = false;
            continue;
        case TH_LOCK_BUSY:
            *qj = j;
            TH_COUNT(set[j].l, lock_waits, 1);
            return me;
        default:
            set[j].masked = false;      /* no queue slot: pass-through */
            continue;
        }
    }
    return NULL;
}

static bool ready(const struct pollfd *p)
{
    return p->revents & (POLLIN | POLLERR | POLLHUP);
}

/* Which of the set's listeners the answer in fds reports, by position. */
static uint64_t reported_mask(const struct pollfd *fds, int r, const struct set_listener *set,
                              int k)
{
    uint64_t mask = 0;

    for (int j = 0; r > 0 && j < k; j++)
        if (ready(&fds[set[j].index]))
            mask |= 1ull << j;
    return mask;
}

/* The lock wait's view of a pollfd set (struct th_lockwait callbacks). */
struct poll_ctx {
    struct pollfd *fds;
    nfds_t n;
    struct set_listener *set;
    int k;
};

static int poll_wait(void *ctx, int64_t until, const sigset_t *sigmask)
{
    struct poll_ctx *c = ctx;

    return real_ppoll_until(c->fds, c->n, until, sigmask);
}

static bool poll_reported(void *ctx, int j, int result)
{
    struct poll_ctx *c = ctx;

    return result > 0 && ready(&c->fds[c->set[j].index]);
}

/* poll is level-triggered: only the count of ready listeners matters. */
static bool poll_only_listeners(void *ctx, int result)
{
    struct poll_ctx *c = ctx;

    return __builtin_popcountll(reported_mask(c->fds, result, c->set, c->k)) == result;
}

/* Negate the busy listeners' fds (poll ignores them), and back. */
static void poll_exclude(void *ctx, const bool *held TH_UNUSED, const bool *busy, bool on)
{
    struct poll_ctx *c = ctx;

    for (int j = 0; j < c->k; j++) {
        struct pollfd *p = &c->fds[c->set[j].index];
        if (!busy[j])
            continue;
        p->fd = ~p->fd;
        if (!on)
            p->revents = 0;
    }
}

/*
 * Sets with other fds (and waits with a signal mask): queue for the lock
 * without blocking on it.  Sleep in the real ppoll on a copy of the set
 * where the listeners we do not hold are disabled and our doorbell is
 * added; the releaser rings it when it hands us the lock, and from then
 * on the listener is part of the wait.  The program's other fds are
 * served all along, and the mask is applied atomically by ppoll.
 */
static int queued_wait(struct pollfd *fds, nfds_t n, struct set_listener *set, int k,
                       int64_t deadline, const sigset_t *sigmask, int bell)
{
    struct pollfd copy[DOORBELL_MAX_SET + 1];
    struct poll_ctx ctx = { .fds = copy, .n = n + 1, .set = set, .k = k };
    struct th_lockwait lw = { .ctx = &ctx, .wait = poll_wait, .sigmask = sigmask };
    struct th_waiter *me;
    struct th_grant wake;
    int qj = -1, r, saved_errno;
    int64_t queued_at = th_now_ns();
    bool next_in_line = true;
    uint64_t gen;

    if (take_locks(set, k, deadline) < 0)
        return -1;
    me = queue_for_first_busy(set, k, &qj);
    if (me)
        next_in_line = th_lock_queue_short(set[qj].l->seg);
    memcpy(copy, fds, n * sizeof(*fds));
    copy[n] = (struct pollfd){ .fd = bell, .events = POLLIN };
    for (int j = 0; j < k; j++)
        if (set[j].masked)
            copy[set[j].index].fd = -1;
    for (;;) {
        int64_t until = deadline;

        if (me) {
            int64_t slice = th_lock_slice_ns(set[qj].l->seg, &th_cfg.lock, next_in_line);
            until = th_remaining_ns(deadline) > slice ? th_now_ns() + slice : deadline;
        }
        r = th_lockwait_hold(&lw, until);
        saved_errno = errno;
        if (r < 0)
            break;
        if (copy[n].revents) {
            th_doorbell_drain(bell);
            copy[n].revents = 0;
            r--;
        }
        if (me && th_lock_granted(me, &gen)) {
            th_held_add(set[qj].l, gen, false);
            set[qj].held = true;
            set[qj].masked = false;
            copy[set[qj].index].fd = fds[set[qj].index].fd;
            TH_COUNT(set[qj].l, lock_wait_ns, (uint64_t)(th_now_ns() - queued_at));
            me = NULL;
        }
        if (r > 0 || th_remaining_ns(deadline) == 0)
            break;
        if (me) {
            next_in_line = th_lock_check(set[qj].l->seg, &th_cfg.lock, me, &wake);
            th_lock_wake(set[qj].l->seg, wake);
        }
    }
    if (me) {
        th_lock_wake(set[qj].l->seg, th_lock_abandon(set[qj].l->seg, &th_cfg.lock, me));
        TH_COUNT(set[qj].l, lock_wait_ns, (uint64_t)(th_now_ns() - queued_at));
    }
    if (r < 0) {
        th_held_release_all();
        errno = saved_errno;
        return -1;
    }
    for (nfds_t i = 0; i < n; i++)
        fds[i].revents = copy[i].revents;
    for (int j = 0; j < k; j++)       /* kept for the accept as in lockwait.c */
        if (set[j].held && !th_policy_keeps_lock(ready(&fds[set[j].index]), th_self.slept))
            th_held_release(set[j].l);
    th_held_mark_waiting(false);
    return r;
}

/* The queued part of a lock wait, with signals blocked meanwhile. */
static int queued_lock_wait(struct pollfd *fds, nfds_t n, struct set_listener *set, int k,
                            int64_t deadline, const sigset_t *sigmask, struct th_lockwait *lw)
{
    struct th_sigscope scope;
    int r, bell = -1;

    th_sig_enter(&scope, sigmask);
    lw->sigmask = scope.wait_mask;
    if (n <= DOORBELL_MAX_SET && th_remaining_ns(deadline) > 0)
        bell = th_doorbell_fd();
    if (bell >= 0)
        r = queued_wait(fds, n, set, k, deadline, scope.wait_mask, bell);
    else
        /* no doorbell (or a try): block on the futex queue, or for a set
           with other fds nginx's way, try and retry every retry_ms */
        r = th_lockwait_run(lw);
    th_sig_leave(&scope);
    return r;
}

/* sigmask: the caller's; signals are blocked only if the wait must queue.
   took_last: what this thread accepted since its last wait (bursts). */
static int lock_wait(struct pollfd *fds, nfds_t n, struct set_listener *set, int k,
                     int others, int64_t deadline, const sigset_t *sigmask, uint64_t took_last)
{
    struct th_listener *ls[TH_MAX_WAIT_LISTENERS] = { NULL };
    int lfds[TH_MAX_WAIT_LISTENERS];
    struct poll_ctx ctx = { .fds = fds, .n = n, .set = set, .k = k };
    struct th_lockwait lw = {
        .ls = ls, .k = k, .may_block = others == 0, .deadline = deadline,
        .sigmask = sigmask, .bell = -1, .ctx = &ctx,
        .exclude = poll_exclude, .wait = poll_wait, .reported = poll_reported,
        .only_listeners = poll_only_listeners,
    };
    int64_t start;
    int r;

    for (int j = 0; j < k; j++) {
        ls[j] = set[j].l;
        lfds[j] = fds[set[j].index].fd;
    }
    start = th_lockwait_burst_begin(&lw, lfds, took_last);
    if (!th_lockwait_fast(&lw, &r))
        r = queued_lock_wait(fds, n, set, k, deadline, sigmask, &lw);
    th_lockwait_burst_end(&lw, took_last, r, start);
    return r;
}

static void set_strategy(struct set_listener *set, int k, struct th_plan plan)
{
    for (int j = 0; j < k; j++)
        th_listener_set_strategy(set[j].l, plan.strategy, plan.why);
}

/* The exclusive mirror (or a yield from it); 0 when this set cannot be mirrored. */
static int mirrored_wait(struct pollfd *fds, nfds_t n, int64_t deadline,
                         const sigset_t *sigmask, int *r, bool yield)
{
    /* no lock to hand on: signals stay as they are, the sleep takes sigmask */
    return yield ? th_mirror_yield(fds, n, deadline, sigmask, r)
                 : th_mirror_poll(fds, n, deadline, sigmask, r);
}

/*
 * An exclusive wait on the mirror; a listener this thread re-takes at
 * once while others wait on it sits out up to TH_YIELD_MS (policy.c,
 * burst.c).  poll is level-triggered: waiting again loses nothing.
 * 0 when the set cannot be mirrored (the caller falls back).
 */
static int exclusive_wait(struct pollfd *fds, nfds_t n, int64_t deadline,
                          const sigset_t *sigmask, struct set_listener *set,
                          struct th_listener *const *ls, int k, uint64_t took_last, int *r)
{
    int lfds[TH_MAX_WAIT_LISTENERS];
    struct th_burst b;
    uint64_t yield;
    int handled, saved_errno;

    for (int j = 0; j < k; j++)
        lfds[j] = fds[set[j].index].fd;
    th_burst_begin(&b, ls, lfds, k, took_last);
    handled = mirrored_wait(fds, n, deadline, sigmask, r, false);
    saved_errno = errno;
    yield = th_burst_after(&b, handled ? reported_mask(fds, *r, set, k) : 0, handled && *r > 0);
    if (yield && mirrored_wait(fds, n, th_min_deadline(deadline, TH_YIELD_MS), sigmask, r, true)) {
        saved_errno = errno;
        if (*r == 0 && th_remaining_ns(deadline) > 0) {
            /* nobody came for it: take it now if it is still there */
            th_burst_resume(&b);
            handled = mirrored_wait(fds, n, deadline, sigmask, r, false);
            saved_errno = errno;
            th_burst_end(&b, handled ? reported_mask(fds, *r, set, k) : 0, yield);
        }
    }
    errno = saved_errno;
    return handled;
}

/* A busy worker's wait (policy.c th_policy_stays_busy) is the mirror's,
   passed through: no burst rules, and no rotation after it. */
static int busy_wait(struct pollfd *fds, nfds_t n, int64_t deadline, const sigset_t *sigmask,
                     const struct set_listener *set, int k, int *r)
{
    int64_t start = th_now_ns();
    int handled = mirrored_wait(fds, n, deadline, sigmask, r, false), saved_errno = errno;

    if (handled) {
        th_burst_busy_after(start);         /* the mirror notes th_self.slept */
        for (int j = 0; j < k; j++)
            th_self.passed |= th_listener_bit(set[j].l->index);
    } else {
        th_self.busy = 0;                   /* the set is waited on another way */
    }
    errno = saved_errno;
    return handled;
}

int th_waitset_poll(struct pollfd *fds, nfds_t n, int64_t deadline, const sigset_t *sigmask)
{
    struct set_listener set[TH_MAX_WAIT_LISTENERS];
    int others, k = collect(fds, n, set, &others), r, saved_errno;
    struct th_wait_facts facts = { .epoll = false };
    struct th_plan plan = th_policy_wait(&facts);
    uint64_t took_last = th_self.took;
    bool slept_last = th_self.slept;

    count_entry(set, k);
    th_waiting_clear();             /* back from the last wait, never accepted */
    if (plan.strategy == TH_STRAT_EXCLUSIVE) {
        struct th_listener *ls[TH_MAX_WAIT_LISTENERS] = { NULL };
        bool busy;

        for (int j = 0; j < k; j++)
            ls[j] = set[j].l;
        busy = th_burst_busy(ls, k, took_last, slept_last);
        if (busy ? busy_wait(fds, n, deadline, sigmask, set, k, &r)
                 : exclusive_wait(fds, n, deadline, sigmask, set, ls, k, took_last, &r)) {
            set_strategy(set, k, plan);
            saved_errno = errno;
            count_wakeups(fds, r, set, k);
            /* the mirror is level-triggered; a pass-through is never refused */
            th_self.refusable = busy ? 0 : th_self.woke;
            errno = saved_errno;
            return r;
        }
        facts.mirror_refused = true;
        plan = th_policy_wait(&facts);
    }
    set_strategy(set, k, plan);
    if (plan.strategy == TH_STRAT_LOCK) {
        r = lock_wait(fds, n, set, k, others, deadline, sigmask, took_last);
    } else {
        r = real_ppoll_until(fds, n, deadline, sigmask);
    }
    saved_errno = errno;
    count_wakeups(fds, r, set, k);
    if (plan.strategy == TH_STRAT_LOCK)
        th_self.refusable = th_self.woke;        /* poll is level-triggered */
    errno = saved_errno;
    return r;
}

/*
 * The decision for poll-shaped waits: poll, ppoll, __poll_chk, __ppoll_chk,
 * and select/pselect (converted to a pollfd set by hook_select.c).
 *
 *   observe, jitter  the real call, counted
 *   exclusive, auto  sleep on a private exclusive epoll mirror (mirror.c);
 *                    where that cannot apply, exclusive passes through and
 *                    auto falls back to the lock
 *   lock             the accept lock, as below
 *
 * The lock: the thread tries every listener's lock, queues for the first
 * one it did not get (never blocking on one lock while holding another, so
 * several listeners cannot deadlock), and sleeps in the real ppoll on its
 * own other fds plus its doorbell, which the releaser rings when it hands
 * it the lock (queued_wait).  Without a doorbell: a listener-only set
 * sleeps on the futex queue, a mixed set retries every retry_ms with the
 * listeners it did not get negated in the caller's array (blocking_wait).
 * Signals are blocked while the shim works and every sleep applies the
 * caller's mask atomically (signals.c).
 */
#include "thunder.h"

#include <pthread.h>
#include <string.h>

#define MAX_SET_LISTENERS 8
#define DOORBELL_MAX_SET 256   /* larger mixed sets retry instead */

struct set_listener {
    nfds_t index;
    struct th_listener *l;
    bool held;
    bool masked;
};

int th_real_ppoll(struct pollfd *fds, nfds_t n, int64_t deadline, const sigset_t *sigmask)
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
        if (k < MAX_SET_LISTENERS && wants_accept(&fds[i]) &&
            (l = th_fd_listener(fds[i].fd)) != NULL)
            set[k++] = (struct set_listener){ .index = i, .l = l };
        else
            (*others)++;
    }
    return k;
}

static void count_entry(struct set_listener *set, int k)
{
    th_self.woke = 0;
    th_self.rotated = 0;
    for (int j = 0; j < k; j++)
        TH_COUNT(set[j].l, waits, 1);
}

static void count_wakeups(const struct pollfd *fds, int r, struct set_listener *set, int k)
{
    for (int j = 0; r > 0 && j < k; j++) {
        if (fds[set[j].index].revents & (POLLIN | POLLERR | POLLHUP)) {
            TH_COUNT(set[j].l, wakeups, 1);
            th_self.woke |= 1ull << (set[j].l->index & 63);
        }
    }
}

static void release_on_cancel(void *unused TH_UNUSED)
{
    th_held_release_all();
}

/* The real wait, as the holder: marked in the segment, released if cancelled. */
static int hold_and_wait(struct pollfd *fds, nfds_t n, int64_t until, const sigset_t *sigmask)
{
    int r, saved_errno;

    th_held_mark_waiting(true);
    pthread_cleanup_push(release_on_cancel, NULL);
    r = th_real_ppoll(fds, n, until, sigmask);
    pthread_cleanup_pop(0);
    saved_errno = errno;
    th_held_mark_waiting(false);
    errno = saved_errno;
    return r;
}

static int take_locks(struct set_listener *set, int k, bool may_block, int64_t deadline,
                      const sigset_t *sigmask, int bell)
{
    struct th_listener *ls[MAX_SET_LISTENERS] = { NULL };
    bool held[MAX_SET_LISTENERS], busy[MAX_SET_LISTENERS];

    for (int j = 0; j < k; j++)
        ls[j] = set[j].l;
    if (th_held_take(ls, k, may_block, deadline, sigmask, bell, held, busy) < 0)
        return -1;
    for (int j = 0; j < k; j++) {
        set[j].held = held[j];
        set[j].masked = busy[j];
    }
    return 0;
}

static void mask(struct pollfd *fds, struct set_listener *set, int k, bool on)
{
    for (int j = 0; j < k; j++) {
        if (!set[j].masked)
            continue;
        fds[set[j].index].fd = ~fds[set[j].index].fd;   /* negative: ignored */
        if (!on)
            fds[set[j].index].revents = 0;
    }
}

/* Queue for the first busy listener's lock; the rest stay masked this call. */
static struct th_waiter *queue_for_first_busy(struct set_listener *set, int k, int *qj)
{
    for (int j = 0; j < k; j++) {
        struct th_seg *seg = th_listener_seg(set[j].l);
        struct th_waiter *me;
        uint64_t gen;

        if (!set[j].masked || seg == NULL)
            continue;
        switch (th_lock_enqueue(seg, TH_WF_DOORBELL, &me, &gen)) {
        case TH_LOCK_OK:                 /* freed meanwhile: ours */
            th_held_add(set[j].l, gen);
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
    struct th_waiter *me;
    int qj = -1, r, saved_errno;
    int64_t queued_at = th_now_ns();
    bool next_in_line = true;
    uint64_t gen;

    if (take_locks(set, k, false, deadline, NULL, -1) < 0)
        return -1;
    me = queue_for_first_busy(set, k, &qj);
    if (me)
        next_in_line = set[qj].l->seg->nqueued <= 1;   /* a hint, as in lock.c */
    memcpy(copy, fds, n * sizeof(*fds));
    copy[n] = (struct pollfd){ .fd = bell, .events = POLLIN };
    for (int j = 0; j < k; j++)
        if (set[j].masked)
            copy[set[j].index].fd = -1;
    for (;;) {
        int64_t until = deadline;

        if (me) {
            int64_t slice = th_lock_slice_ns(set[qj].l->seg, next_in_line);
            until = th_remaining_ns(deadline) > slice ? th_now_ns() + slice : deadline;
        }
        r = hold_and_wait(copy, n + 1, until, sigmask);
        saved_errno = errno;
        if (r < 0)
            break;
        if (copy[n].revents) {
            th_doorbell_drain(bell);
            copy[n].revents = 0;
            r--;
        }
        if (me && th_lock_granted(me, &gen)) {
            th_held_add(set[qj].l, gen);
            set[qj].held = true;
            set[qj].masked = false;
            copy[set[qj].index].fd = fds[set[qj].index].fd;
            TH_COUNT(set[qj].l, lock_wait_ns, (uint64_t)(th_now_ns() - queued_at));
            me = NULL;
        }
        if (r > 0 || th_remaining_ns(deadline) == 0)
            break;
        if (me)
            next_in_line = th_lock_check(set[qj].l->seg, me);
    }
    if (me) {
        th_lock_abandon(set[qj].l->seg, me);
        TH_COUNT(set[qj].l, lock_wait_ns, (uint64_t)(th_now_ns() - queued_at));
    }
    if (r < 0) {
        th_held_release_all();
        errno = saved_errno;
        return -1;
    }
    for (nfds_t i = 0; i < n; i++)
        fds[i].revents = copy[i].revents;
    for (int j = 0; j < k; j++)
        if (set[j].held && !(fds[set[j].index].revents & (POLLIN | POLLERR | POLLHUP)))
            th_held_release(set[j].l);
    return r;
}

/* Listener-only sets: block on the futex queue (see the top of this file). */
static int blocking_wait(struct pollfd *fds, nfds_t n, struct set_listener *set, int k,
                         int others, int64_t deadline, const sigset_t *sigmask)
{
    for (;;) {
        int64_t until = deadline;
        int r, saved_errno;
        bool capped = false;

        if (take_locks(set, k, others == 0, deadline, sigmask, -1) < 0)
            return -1;
        for (int j = 0; j < k; j++)
            capped = capped || set[j].masked;
        if (capped)
            until = th_min_deadline(deadline, th_cfg.retry_ms);
        mask(fds, set, k, true);
        r = hold_and_wait(fds, n, until, sigmask);
        saved_errno = errno;
        mask(fds, set, k, false);
        for (int j = 0; j < k; j++)
            if (set[j].held && (r <= 0 || !(fds[set[j].index].revents & (POLLIN | POLLERR | POLLHUP))))
                th_held_release(set[j].l);
        if (r != 0 || !capped || th_remaining_ns(deadline) == 0) {
            errno = saved_errno;
            return r;
        }
    }
}

/* Called with every signal blocked; sigmask is what the sleeps apply. */
static int lock_wait(struct pollfd *fds, nfds_t n, struct set_listener *set, int k,
                     int others, int64_t deadline, const sigset_t *sigmask)
{
    th_held_release_all();          /* waiting again: the lock goes on */
    if (n <= DOORBELL_MAX_SET && th_remaining_ns(deadline) > 0) {
        int bell = th_doorbell_fd();
        if (bell >= 0)
            return queued_wait(fds, n, set, k, deadline, sigmask, bell);
    }
    /* no doorbell (or a try): block on the futex queue, or for a set with
       other fds nginx's way, try and retry every retry_ms */
    return blocking_wait(fds, n, set, k, others, deadline, sigmask);
}

static void set_strategy(struct set_listener *set, int k, enum th_strategy s, const char *why)
{
    for (int j = 0; j < k; j++)
        th_listener_set_strategy(set[j].l, s, why);
}

int th_waitset_poll(struct pollfd *fds, nfds_t n, int64_t deadline, const sigset_t *sigmask)
{
    struct set_listener set[MAX_SET_LISTENERS];
    int others, k = collect(fds, n, set, &others), r, saved_errno;
    enum th_mode mode = th_cfg.mode;

    count_entry(set, k);
    if (mode == TH_MODE_EXCLUSIVE || mode == TH_MODE_AUTO) {
        struct th_sigscope scope;
        int handled;

        th_sig_enter(&scope, sigmask);
        handled = th_mirror_poll(fds, n, deadline, scope.wait_mask, &r);
        th_sig_leave(&scope);
        if (handled) {
            set_strategy(set, k, TH_STRAT_EXCLUSIVE,
                         "poll/select waits sleep on a private exclusive epoll instance");
            goto done;
        }
        if (mode == TH_MODE_AUTO) {
            set_strategy(set, k, TH_STRAT_LOCK,
                         "this poll/select set cannot be mirrored in epoll; using the lock");
            mode = TH_MODE_LOCK;
        }
    }
    if (mode == TH_MODE_LOCK) {
        struct th_sigscope scope;

        if (mode == th_cfg.mode)
            set_strategy(set, k, TH_STRAT_LOCK, "lock mode");
        th_sig_enter(&scope, sigmask);
        r = lock_wait(fds, n, set, k, others, deadline, scope.wait_mask);
        th_sig_leave(&scope);
    } else {
        if (mode == TH_MODE_EXCLUSIVE)
            set_strategy(set, k, TH_STRAT_OBSERVE,
                         "exclusive mode, but this poll/select set cannot be mirrored; passing through");
        else if (mode == TH_MODE_JITTER)
            set_strategy(set, k, TH_STRAT_JITTER, "jitter mode: random delay before accept");
        else
            set_strategy(set, k, TH_STRAT_OBSERVE, "observe mode: counting only");
        r = th_real_ppoll(fds, n, deadline, sigmask);
    }
done:
    saved_errno = errno;
    count_wakeups(fds, r, set, k);
    errno = saved_errno;
    return r;
}

/*
 * epoll_wait on an instance that holds managed listeners: the strategy
 * comes from policy.c, what is known about the instance from epreg.c.
 *
 *   exclusive  the real wait; after an accept the entry rotates
 *              (epreg.c), and a worker that keeps finding the listener
 *              ready at once after taking a connection yields it to the
 *              others for up to TH_YIELD_MS (bursts, policy.c); a worker
 *              a steady load keeps busy passes it through (policy.c)
 *   lock       the one lock wait (lockwait.c); listeners whose lock is
 *              busy are taken out of a private instance meanwhile
 *   otherwise  the real wait, counted
 *
 * The real wait is the program's own call with what is left of its
 * timeout; a listener a failed rotation left out is put back first.
 */
#include "thunder.h"



static bool reported(const struct epoll_event *evs, int n, uint64_t data)
{
    for (int i = 0; i < n; i++)
        if (evs[i].data.u64 == data)
            return true;
    return false;
}

/*
 * The program's own call, with what is left of its timeout: epoll_wait
 * stays epoll_wait (no mask to apply), epoll_pwait2's nanoseconds stay
 * nanoseconds.  now: a clock read the caller has just taken (the
 * exclusive wait's start), or 0.
 */
static int kernel_wait(int epfd, struct epoll_event *evs, int maxevents, int64_t deadline,
                       int64_t now, const sigset_t *sigmask, bool ns_timeout)
{
    int r;

    if (ns_timeout && real_epoll_pwait2 && deadline != TH_FOREVER) {
        struct timespec ts;
        th_ns_to_timespec(th_remaining_ns_at(deadline, now), &ts);
        r = real_epoll_pwait2(epfd, evs, maxevents, &ts, sigmask);
        if (r >= 0 || errno != ENOSYS)
            return r;
    }
    if (sigmask == NULL)
        return real_epoll_wait(epfd, evs, maxevents, th_remaining_ms_at(deadline, now));
    return real_epoll_pwait(epfd, evs, maxevents, th_remaining_ms_at(deadline, now), sigmask);
}


/*
 * The real wait, after putting back the listeners a failed rotation left
 * out (readd_lost); while one stays out, the wait is cut into retry_ms
 * slices so it is tried again, and the caller's deadline still holds.
 */
static int real_wait(int epfd, struct epoll_event *evs, int maxevents, int64_t deadline,
                     int64_t now, const sigset_t *sigmask, bool ns_timeout)
{
    for (;;) {
        int r;

        if (!th_epreg_any_lost() || !th_epreg_readd_lost(epfd))
            return kernel_wait(epfd, evs, maxevents, deadline, now, sigmask, ns_timeout);
        r = kernel_wait(epfd, evs, maxevents, th_min_deadline(deadline, th_cfg.retry_ms), 0,
                        sigmask, ns_timeout);
        if (r != 0 || th_remaining_ns(deadline) == 0)
            return r;
    }
}

/* Are the listeners reported in `got` (by position) reported again by the
   next wait?  Not an edge-triggered or one-shot entry. */
static bool level_triggered(const struct th_ep_listener *wl, int k, uint64_t got)
{
    for (int j = 0; j < k; j++)
        if ((got & (1ull << j)) && (wl[j].events & (EPOLLET | EPOLLONESHOT)))
            return false;
    return true;
}

/* Which of wl[0..k) evs[0..n) reports, as a mask by position. */
static uint64_t reported_mask(const struct epoll_event *evs, int n,
                              const struct th_ep_listener *wl, int k)
{
    uint64_t mask = 0;

    for (int j = 0; n > 0 && j < k; j++)
        if (reported(evs, n, wl[j].data))
            mask |= 1ull << j;
    return mask;
}

/* The lock wait's view of an epoll wait (struct th_lockwait callbacks). */
struct epoll_ctx {
    int epfd;
    struct epoll_event *evs;
    int maxevents;
    bool ns_timeout;
    bool shared;
    bool threaded;
    struct th_ep_listener *wl;
    int k;
};

static void epoll_exclude(void *ctx, const bool *held, const bool *busy, bool on)
{
    struct epoll_ctx *c = ctx;

    if (on)
        th_epreg_park_busy(c->epfd, c->shared, c->wl, c->k, held, busy);
}

static int epoll_real_wait(void *ctx, int64_t until, const sigset_t *sigmask)
{
    struct epoll_ctx *c = ctx;

    return real_wait(c->epfd, c->evs, c->maxevents, until, 0, sigmask, c->ns_timeout);
}

static bool epoll_reported(void *ctx, int j, int result)
{
    struct epoll_ctx *c = ctx;

    return reported(c->evs, result, c->wl[j].data);
}

static bool epoll_only_listeners(void *ctx, int result)
{
    struct epoll_ctx *c = ctx;
    uint64_t got = reported_mask(c->evs, result, c->wl, c->k);

    return __builtin_popcountll(got) == result && level_triggered(c->wl, c->k, got);
}

/* sigmask: the caller's; signals are blocked only if the wait must queue.
   took_last: what this thread accepted since its last wait (bursts). */
static int lock_wait(struct epoll_ctx *ctx, int64_t deadline, const sigset_t *sigmask,
                     int others, uint64_t took_last)
{
    struct th_listener *ls[TH_MAX_WAIT_LISTENERS] = { NULL };
    int fds[TH_MAX_WAIT_LISTENERS];
    struct th_lockwait lw = {
        .ls = ls, .k = ctx->k, .may_block = others == 0, .deadline = deadline,
        .sigmask = sigmask, .bell = -1, .threaded = ctx->threaded, .ctx = ctx,
        .exclude = epoll_exclude, .wait = epoll_real_wait, .reported = epoll_reported,
        .only_listeners = epoll_only_listeners,
    };
    struct th_sigscope scope;
    int64_t start;
    int r;

    for (int j = 0; j < ctx->k; j++) {
        ls[j] = ctx->wl[j].l;
        fds[j] = ctx->wl[j].fd;
    }
    start = th_lockwait_burst_begin(&lw, fds, took_last);
    if (!th_lockwait_fast(&lw, &r)) {
        th_sig_enter(&scope, sigmask);
        lw.sigmask = scope.wait_mask;
        lw.bell = th_doorbell_fd();
        r = th_lockwait_run(&lw);
        th_sig_leave(&scope);
    }
    th_lockwait_burst_end(&lw, took_last, r, start);
    return r;
}

/* Leave the listeners `yield` (by position) out of evs[0..n); the new n. */
static int strip_listeners(struct epoll_event *evs, int n, const struct th_ep_listener *wl,
                           int k, uint64_t yield)
{
    int kept = 0;

    for (int i = 0; i < n; i++) {
        bool drop = false;
        for (int j = 0; j < k && !drop; j++)
            drop = (yield & (1ull << j)) && evs[i].data.u64 == wl[j].data;
        if (!drop)
            evs[kept++] = evs[i];
    }
    return kept;
}

/* Which of the reported listeners still sit out a yield begun by an
   earlier wait of this thread (by position); the window ends on time. */
static uint64_t still_yielding(const struct th_ep_listener *wl, int k, uint64_t got)
{
    uint64_t mask = 0;

    if (th_self.yielding && th_now_ns() >= th_self.yield_until)
        th_self.yielding = 0;
    for (int j = 0; th_self.yielding && j < k; j++)
        if ((got & (1ull << j)) && (th_self.yielding & th_listener_bit(wl[j].l->index)))
            mask |= 1ull << j;
    return mask;
}

/* What is left of the yield, in whole milliseconds (at least the part begun). */
static unsigned yield_left_ms(void)
{
    int64_t left = th_self.yield_until - th_now_ns();

    return left > 0 ? (unsigned)((left + TH_NS_PER_MS - 1) / TH_NS_PER_MS) : 0;
}

static void begin_yield(const struct th_ep_listener *wl, int k, uint64_t yield)
{
    th_self.yield_until = th_now_ns() + TH_YIELD_MS * TH_NS_PER_MS;
    for (int j = 0; j < k; j++)
        if (yield & (1ull << j))
            th_self.yielding |= th_listener_bit(wl[j].l->index);
}

/*
 * An exclusive wait.  A listener this thread re-takes at once while
 * others wait on it sits out up to TH_YIELD_MS (policy.c, burst.c).  When
 * the wait reported nothing else, it is left out of a second wait (a
 * second wait must not lose edge-triggered events of other fds, so only
 * then); when other fds came with it (asyncio: the client just accepted
 * has sent its request), their events are returned without it, and the
 * thread's next waits leave it out of their answer too until TH_YIELD_MS
 * have passed.  It is level-triggered: nothing is lost, and the workers
 * woken for its connections take them meanwhile.
 */
static int exclusive_wait(int epfd, struct epoll_event *evs, int maxevents, int64_t deadline,
                          const sigset_t *sigmask, bool ns_timeout,
                          const struct th_ep_listener *wl, struct th_listener *const *ls, int k,
                          uint64_t took_last)
{
    int fds[TH_MAX_WAIT_LISTENERS];
    struct th_burst b;
    uint64_t got, yield, going_on;
    int64_t began;
    bool lt_only;
    int r, saved_errno;

    for (int j = 0; j < k; j++)
        fds[j] = wl[j].fd;
    th_burst_begin(&b, ls, fds, k, took_last);
    began = b.start;
    r = real_wait(epfd, evs, maxevents, deadline, began, sigmask, ns_timeout);
    saved_errno = errno;
    got = reported_mask(evs, r, wl, k);
    lt_only = level_triggered(wl, k, got);
    going_on = lt_only ? still_yielding(wl, k, got) : 0;
    yield = th_burst_after(&b, got, r > 0 && lt_only);
    th_self.slept = b.end - began >= TH_NO_SLEEP_NS;   /* the burst's clock reads serve */
    if (yield)
        begin_yield(wl, k, yield);
    for (int j = 0; j < k; j++)
        if ((going_on & ~yield) & (1ull << j))
            th_waiting_done(wl[j].l);       /* not returned: no accept will follow */
    yield |= going_on;
    if (yield && r != __builtin_popcountll(got)) {
        errno = saved_errno;
        return strip_listeners(evs, r, wl, k, yield);
    }
    /* nothing but those listeners, level-triggered: a second wait loses nothing */
    if (yield) {
        th_epreg_park_yielded(epfd, wl, k, yield, true);
        r = real_wait(epfd, evs, maxevents,
                      th_min_deadline(deadline, yield_left_ms()), 0,
                      sigmask, ns_timeout);
        saved_errno = errno;
        th_epreg_park_yielded(epfd, wl, k, yield, false);
        if (r == 0 && th_remaining_ns(deadline) > 0) {
            /* nobody came for it: take it now if it is still there */
            th_burst_resume(&b);
            r = real_wait(epfd, evs, maxevents, deadline, 0, sigmask, ns_timeout);
            saved_errno = errno;
            th_burst_end(&b, reported_mask(evs, r, wl, k), yield);
        }
        th_self.slept = th_now_ns() - began >= TH_NO_SLEEP_NS;
    }
    errno = saved_errno;
    return r;
}

/*
 * Will this thread's next wait report a connection left queued (a
 * refused accept, hook_accept.c)?  A level-triggered entry does, in an
 * exclusive wait and in a lock wait (as the holder, in its look at a
 * busy lock, or, queued, through the holder's own wait); an
 * edge-triggered or one-shot one does not, nor a pass-through wait.
 */
static bool reports_again(struct th_plan entry, uint32_t events)
{
    return (entry.strategy == TH_STRAT_EXCLUSIVE || entry.strategy == TH_STRAT_LOCK) &&
           !(events & (EPOLLET | EPOLLONESHOT));
}

/* Every wait on an instance with listeners begins by this (a thread
   alone on its listeners counts as waiting there: the others see it)... */
static void wait_begins(const struct th_ep_listener *wl, int k, struct th_plan plan)
{
    th_self_new_wait();
    th_waiting_clear();             /* back from the last wait, never accepted */
    for (int j = 0; j < k; j++) {
        TH_COUNT(wl[j].l, waits, 1);
        if (plan.strategy == TH_STRAT_ALONE)
            th_waiting_count(wl[j].l);
    }
}

/* ...and ends by this: what it reported, for the accept that follows. */
static void wait_ends(int epfd, const struct epoll_event *evs, int r,
                      const struct th_ep_listener *wl, int k, struct th_plan plan)
{
    th_epreg_done_waiting(epfd);
    for (int j = 0; j < k; j++) {
        uint64_t bit = th_listener_bit(wl[j].l->index);
        if (th_plan_passes(plan))
            th_self.passed |= bit;
        if (r > 0 && reported(evs, r, wl[j].data)) {
            TH_COUNT(wl[j].l, wakeups, 1);
            th_self.woke |= bit;
            if (reports_again(th_policy_epoll_entry(plan, wl[j].exclusive), wl[j].events))
                th_self.refusable |= bit;
        } else if (plan.strategy == TH_STRAT_ALONE) {
            th_waiting_done(wl[j].l);       /* no accept will follow */
        }
    }
}

/* The full look at the instance: its listeners, the facts, the plan. */
static int look(int epfd, struct th_ep_listener *wl, struct th_wait_facts *facts, int *others,
                struct th_plan *plan)
{
    int k = th_epreg_snapshot(epfd, wl, &facts->shared, others, &facts->threaded);

    /* asked only where it can change the plan (policy.c): a shared or
       threaded instance's waits look every time, and the question reads
       lines every worker writes */
    facts->alone = !facts->shared && !facts->threaded;
    for (int j = 0; j < k; j++) {
        facts->all_exclusive = facts->all_exclusive && wl[j].exclusive;
        facts->program_balanced = facts->program_balanced && wl[j].program_balanced;
        facts->alone = facts->alone && th_listener_alone(wl[j].l);
    }
    *plan = th_policy_wait(facts);
    for (int j = 0; j < k; j++) {
        struct th_plan entry = th_policy_epoll_entry(*plan, wl[j].exclusive);
        th_listener_set_strategy(wl[j].l, entry.strategy, entry.why);
    }
    return k;
}

int th_epreg_wait(int epfd, struct epoll_event *evs, int maxevents, int64_t deadline,
                  const sigset_t *sigmask, bool ns_timeout)
{
    struct th_ep_listener wl[TH_MAX_WAIT_LISTENERS];
    struct th_listener *ls[TH_MAX_WAIT_LISTENERS] = { NULL };   /* an exclusive plan's */
    struct th_wait_facts facts = { .epoll = true, .all_exclusive = true,
                                   .program_balanced = true };
    uint64_t took_last = th_self.took;
    bool slept_last = th_self.slept, busy = false;
    struct th_plan plan;
    int others = 0, k = th_epmemo_recall(epfd, wl, &plan), r, saved_errno;
    bool looked = k < 0;

    if (looked)
        k = look(epfd, wl, &facts, &others, &plan);
    if (plan.strategy == TH_STRAT_EXCLUSIVE) {
        for (int j = 0; j < k; j++)
            ls[j] = wl[j].l;
        busy = th_burst_busy(ls, k, took_last, slept_last);     /* policy.c: a busy worker */
    }
    wait_begins(wl, k, plan);
    if (plan.strategy == TH_STRAT_LOCK) {
        struct epoll_ctx ctx = { .epfd = epfd, .evs = evs, .maxevents = maxevents,
                                 .ns_timeout = ns_timeout, .shared = facts.shared,
                                 .threaded = facts.threaded, .wl = wl, .k = k };
        r = lock_wait(&ctx, deadline, sigmask, others, took_last);
    } else if (plan.strategy == TH_STRAT_EXCLUSIVE && !busy) {
        r = exclusive_wait(epfd, evs, maxevents, deadline, sigmask, ns_timeout, wl, ls, k,
                           took_last);                  /* notes th_self.slept */
    } else if (th_plan_passes(plan)) {
        /* the program balances its own exclusive entries, or nobody else
           waits: nothing to note */
        r = real_wait(epfd, evs, maxevents, deadline, 0, sigmask, ns_timeout);
    } else {
        /* a busy worker's wait (its end notes a rest), or a wait observed */
        int64_t start = th_now_ns();

        r = real_wait(epfd, evs, maxevents, deadline, start, sigmask, ns_timeout);
        th_self.slept = (busy ? th_burst_busy_after(start) : th_now_ns()) - start >=
                        TH_NO_SLEEP_NS;
    }
    saved_errno = errno;
    if (looked)
        th_epmemo_note(epfd, wl, k, plan);
    wait_ends(epfd, evs, r, wl, k, busy ? th_policy_busy_plan() : plan);
    errno = saved_errno;
    return r;
}

/*
 * The next waits of a thread whose kept plan is still "pass" (epmemo.c):
 * the program's own call, with its own timeout and no clock read, between
 * these two.
 */
bool th_epreg_pass_begin(int epfd)
{
    struct th_plan plan;
    int k;
    const struct th_ep_listener *wl = th_epmemo_passes(epfd, &k, &plan);

    if (wl == NULL)
        return false;
    wait_begins(wl, k, plan);
    return true;
}

int th_epreg_pass_end(int epfd, const struct epoll_event *evs, int result)
{
    struct th_plan plan;
    int saved_errno = errno, k;
    const struct th_ep_listener *wl = th_epmemo_kept(epfd, &k, &plan);

    wait_ends(epfd, evs, result, wl, k, plan);
    errno = saved_errno;
    return result;
}

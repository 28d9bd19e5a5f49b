/*
 * Policy: which strategy each wait uses, and why.  The one place where the
 * mode meets the facts about a wait; the wait paths (waitset.c for
 * poll/select, epreg.c for epoll) ask here and carry the answer out.
 *
 *   wait                         auto       exclusive        lock  observe/jitter
 *   poll/select, mirrorable      exclusive  exclusive        lock  real call
 *   poll/select, not mirrorable  lock       real call        lock  real call
 *   epoll, private, one thread,
 *     every listener exclusive   exclusive  exclusive        lock  real call
 *   epoll, shared instance       lock       real call        lock  real call
 *   epoll, otherwise             lock       exclusive where  lock  real call
 *                                           the entry is
 *
 * "exclusive" means one wake-up per connection through EPOLLEXCLUSIVE, and
 * (with fifo balance) the entry moved to the tail after each accept so the
 * next connection goes to the next idle waiter.  A blocking accept without
 * a wait is already fair in the kernel and is left alone (hook_accept.c).
 */
#include "thunder.h"

/* What the kernel accepts together with EPOLLEXCLUSIVE (fs/eventpoll.c). */
#define EXCLUSIVE_OK (EPOLLIN | EPOLLOUT | EPOLLERR | EPOLLHUP | EPOLLWAKEUP | EPOLLET)

static const char *const PASSED_THROUGH =
    "epoll wait passed through (observe, jitter, or not exclusive here)";

static struct th_plan plan(enum th_strategy s, const char *why)
{
    return (struct th_plan){ .strategy = s, .why = why };
}

static struct th_plan poll_plan(enum th_mode mode, const struct th_wait_facts *f)
{
    switch (mode) {
    case TH_MODE_AUTO:
    case TH_MODE_EXCLUSIVE:
        if (!f->mirror_refused)
            return plan(TH_STRAT_EXCLUSIVE,
                        "poll/select waits sleep on a private exclusive epoll instance");
        if (mode == TH_MODE_AUTO)
            return plan(TH_STRAT_LOCK,
                        "this poll/select set cannot be mirrored in epoll; using the lock");
        return plan(TH_STRAT_OBSERVE,
                    "exclusive mode, but this poll/select set cannot be mirrored; passing through");
    case TH_MODE_LOCK:
        return plan(TH_STRAT_LOCK, "lock mode");
    case TH_MODE_JITTER:
        return plan(TH_STRAT_JITTER, "jitter mode: random delay before accept");
    default:
        return plan(TH_STRAT_OBSERVE, "observe mode: counting only");
    }
}

static struct th_plan epoll_lock_plan(const struct th_wait_facts *f)
{
    return plan(TH_STRAT_LOCK,
                f->shared ? "epoll instance shared with other processes: using the lock"
                : f->threaded ? "epoll instance waited on by several threads: using the lock"
                : "epoll listener without EPOLLEXCLUSIVE: using the lock");
}

/*
 * Several threads on one instance: a level-triggered listener event is put
 * back on the ready list and wakes a second thread (measured: about 2-3
 * wake-ups per connection with exclusive entries), so the lock, at exactly
 * 2, does better there.
 */
static struct th_plan epoll_plan(enum th_mode mode, const struct th_wait_facts *f)
{
    static const char *const rotating =
        "private epoll instance: EPOLLEXCLUSIVE with rotation after accept";

    switch (mode) {
    case TH_MODE_AUTO:
        if (!f->shared && !f->threaded && f->all_exclusive)
            return plan(TH_STRAT_EXCLUSIVE, rotating);
        return epoll_lock_plan(f);
    case TH_MODE_LOCK:
        return epoll_lock_plan(f);
    case TH_MODE_EXCLUSIVE:
        return f->shared ? plan(TH_STRAT_OBSERVE, PASSED_THROUGH)
                         : plan(TH_STRAT_EXCLUSIVE, rotating);
    case TH_MODE_JITTER:
        return plan(TH_STRAT_JITTER, PASSED_THROUGH);
    default:
        return plan(TH_STRAT_OBSERVE, PASSED_THROUGH);
    }
}

struct th_plan th_policy_wait(const struct th_wait_facts *f)
{
    return f->epoll ? epoll_plan(th_cfg.mode, f) : poll_plan(th_cfg.mode, f);
}

struct th_plan th_policy_epoll_entry(struct th_plan wait_plan, bool entry_exclusive)
{
    if (wait_plan.strategy == TH_STRAT_EXCLUSIVE && !entry_exclusive)
        return plan(TH_STRAT_OBSERVE, PASSED_THROUGH);
    return wait_plan;
}

bool th_exclusive_allows(uint32_t epoll_events)
{
    return (epoll_events & ~(uint32_t)EXCLUSIVE_OK) == 0;
}

bool th_policy_injects_exclusive(bool instance_is_ours, uint32_t epoll_events)
{
    return instance_is_ours && th_exclusive_allows(epoll_events) &&
           (th_cfg.mode == TH_MODE_EXCLUSIVE || th_cfg.mode == TH_MODE_AUTO);
}

bool th_policy_rotates(void)
{
    return th_cfg.lock.balance == TH_BALANCE_FIFO &&
           (th_cfg.mode == TH_MODE_EXCLUSIVE || th_cfg.mode == TH_MODE_AUTO);
}

bool th_policy_jitters(void)
{
    return th_cfg.mode == TH_MODE_JITTER;
}

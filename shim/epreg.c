/*
 * Listeners inside the program's own epoll instances.
 *
 * The epoll_ctl hook records, per process, which instances this process
 * created and which managed listeners were added to them (with the event
 * the program asked for).  That is what epoll_wait needs to decide:
 *
 *   private instance (created by this process), every listener exclusive:
 *       the kernel wakes one waiter; after each accept the listener entry
 *       is re-added so the next connection goes to the next idle process.
 *   shared instance (inherited over fork: one entry, LIFO waiters), or a
 *   listener that cannot be exclusive: the accept lock (auto, lock modes).
 *
 * In exclusive and auto modes, a listener added to a private instance gets
 * EPOLLEXCLUSIVE when the kernel allows it with the requested events.  The
 * kernel refuses EPOLL_CTL_MOD on such an entry, so a later MOD by the
 * program becomes DEL + ADD and the program sees success; its epoll_data is
 * kept on every path.
 */
#include "thunder.h"

#include <pthread.h>
#include <string.h>
#include <sys/mman.h>

#define MAX_INSTANCES 256
#define MAX_REGS 256

/*
 * Which processes wait on an instance, in memory shared by every process
 * that inherits it: mapped when the instance is created, so a fork passes
 * it on with the instance.  Where the instance was created does not
 * matter (a master may create it and leave it to one worker); whether
 * more than one process waits on it does.
 */
struct waiters {
    _Atomic int32_t pid;      /* the process that waits on it; 0: none yet */
    _Atomic uint32_t several; /* another one did too (sticky) */
};

struct instance {
    int epfd;             /* -1 = free */
    pid_t creator;
    struct waiters *w;    /* NULL if it could not be mapped: creator decides */
    int others;           /* registrations that are not managed listeners */
    int waiting;          /* threads of this process in epoll_wait on it now */
    bool threaded;        /* ever more than one at once (sticky) */
};

struct reg {
    int epfd;             /* -1 = free */
    int fd;
    struct th_listener *l;
    struct epoll_event ev;  /* as the program asked for it */
    bool exclusive;       /* registered with EPOLLEXCLUSIVE */
    bool injected;        /* the shim made it exclusive (and keeps doing so) */
    bool parked;          /* taken out while another process holds the lock */
};

static struct instance instances[MAX_INSTANCES];
static struct reg regs[MAX_REGS];
static int ninstances, nregs;
static _Atomic bool any_regs;   /* fast path: no listener was ever added */
static pthread_mutex_t reg_lock = PTHREAD_MUTEX_INITIALIZER;

static void lock(void)
{
    th_self.in_shim++;
    pthread_mutex_lock(&reg_lock);
}

static void unlock(void)
{
    pthread_mutex_unlock(&reg_lock);
    th_self.in_shim--;
}

static struct instance *find_instance(int epfd)
{
    for (int i = 0; i < ninstances; i++)
        if (instances[i].epfd == epfd)
            return &instances[i];
    return NULL;
}

static struct reg *find_reg(int epfd, int fd)
{
    for (int i = 0; i < nregs; i++)
        if (regs[i].epfd == epfd && regs[i].fd == fd)
            return &regs[i];
    return NULL;
}

static void drop_reg(struct reg *r)
{
    *r = regs[--nregs];
}

/* No other process waits on it (so far): this process may change it. */
static bool instance_private(const struct instance *inst)
{
    int32_t pid;

    if (inst->w == NULL)
        return inst->creator == th_pid;
    pid = atomic_load(&inst->w->pid);
    return !atomic_load(&inst->w->several) && (pid == 0 || pid == th_pid);
}

/* This process waits on it: is it the only one (a dead one does not count)? */
static bool wait_alone(struct instance *inst)
{
    int32_t seen = 0;

    if (inst->w == NULL)
        return inst->creator == th_pid;
    if (atomic_load(&inst->w->several))
        return false;
    if (atomic_compare_exchange_strong(&inst->w->pid, &seen, th_pid) || seen == th_pid)
        return true;
    if (!th_thread_alive(seen, seen) && atomic_compare_exchange_strong(&inst->w->pid, &seen, th_pid))
        return true;
    atomic_store(&inst->w->several, 1);
    return false;
}

void th_epreg_created(int epfd)
{
    struct waiters *w = mmap(NULL, sizeof(*w), PROT_READ | PROT_WRITE,
                             MAP_SHARED | MAP_ANONYMOUS, -1, 0);

    if (w == MAP_FAILED)
        w = NULL;
    lock();
    if (find_instance(epfd) == NULL && ninstances < MAX_INSTANCES) {
        instances[ninstances++] = (struct instance){ .epfd = epfd, .creator = th_pid, .w = w };
        w = NULL;
    }
    unlock();
    if (w)
        munmap(w, sizeof(*w));
    th_fd_mark_epoll(epfd);
}

bool th_epreg_has_listener(int epfd)
{
    bool found = false;

    if (!atomic_load_explicit(&any_regs, memory_order_relaxed) || !th_fd_is_epoll(epfd))
        return false;
    lock();
    for (int i = 0; i < nregs && !found; i++)
        found = regs[i].epfd == epfd;
    unlock();
    return found;
}

/* ADD with EPOLLEXCLUSIVE when we may; falls back to the plain ADD. */
static int add_listener(int epfd, int fd, struct epoll_event *ev, bool inject, bool *exclusive)
{
    struct epoll_event ex;

    *exclusive = ev && (ev->events & EPOLLEXCLUSIVE);
    if (inject && !*exclusive) {
        ex = *ev;
        ex.events |= EPOLLEXCLUSIVE;
        if (real_epoll_ctl(epfd, EPOLL_CTL_ADD, fd, &ex) == 0) {
            *exclusive = true;
            return 0;
        }
        if (errno != EINVAL)
            return -1;
    }
    return real_epoll_ctl(epfd, EPOLL_CTL_ADD, fd, ev);
}

static int ctl_listener(struct instance *inst, int epfd, int op, int fd,
                        struct epoll_event *ev, struct th_listener *l)
{
    struct reg *r = find_reg(epfd, fd);
    bool exclusive;
    int ret;

    switch (op) {
    case EPOLL_CTL_ADD: {
        bool inject = ev && th_policy_injects_exclusive(inst && instance_private(inst),
                                                        ev->events);
        ret = add_listener(epfd, fd, ev, inject, &exclusive);
        if (ret == 0 && nregs < MAX_REGS) {
            atomic_store(&any_regs, true);
            regs[nregs++] = (struct reg){ .epfd = epfd, .fd = fd, .l = l, .ev = *ev,
                                          .exclusive = exclusive,
                                          .injected = inject && !(ev->events & EPOLLEXCLUSIVE) };
        }
        if (ret == 0 && inject && !exclusive)
            th_info("port %u: kernel refused EPOLLEXCLUSIVE; listener added as asked", l->port);
        return ret;
    }
    case EPOLL_CTL_MOD:
        if (r && r->parked && ev) {     /* out for the lock: re-added with this later */
            r->ev = *ev;
            return 0;
        }
        if (r && r->injected && ev && !(ev->events & EPOLLEXCLUSIVE)) {
            /* the kernel refuses MOD on an exclusive entry: DEL + ADD, and
               exclusive again as soon as the events allow (after ONESHOT) */
            real_epoll_ctl(epfd, EPOLL_CTL_DEL, fd, NULL);
            ret = add_listener(epfd, fd, ev, th_exclusive_allows(ev->events), &exclusive);
            if (ret == 0) {
                r->ev = *ev;
                r->exclusive = exclusive;
            } else {
                drop_reg(r);
            }
            return ret;
        }
        ret = real_epoll_ctl(epfd, op, fd, ev);
        if (ret == 0 && r && ev)
            r->ev = *ev;
        return ret;
    case EPOLL_CTL_DEL:
        ret = r && r->parked ? 0 : real_epoll_ctl(epfd, op, fd, ev);
        if (r && (ret == 0 || errno == ENOENT || errno == EBADF))
            drop_reg(r);
        return ret;
    }
    return real_epoll_ctl(epfd, op, fd, ev);
}

int th_epreg_ctl(int epfd, int op, int fd, struct epoll_event *ev)
{
    struct th_listener *l = th_fd_listener(fd);
    struct instance *inst;
    int ret, saved_errno;

    lock();
    inst = find_instance(epfd);
    if (l) {
        ret = ctl_listener(inst, epfd, op, fd, ev, l);
    } else {
        ret = real_epoll_ctl(epfd, op, fd, ev);
        if (ret == 0 && inst && op == EPOLL_CTL_ADD)
            inst->others++;
        if (ret == 0 && inst && op == EPOLL_CTL_DEL && inst->others > 0)
            inst->others--;
    }
    saved_errno = errno;
    unlock();
    errno = saved_errno;
    return ret;
}

/* ---- epoll_wait ------------------------------------------------------ */

struct wait_listener {
    struct th_listener *l;
    int fd;
    uint64_t data;
    uint32_t events;      /* as the program asked for them */
    bool exclusive;
};

/* What epoll_wait needs to decide; also counts this thread as waiting. */
static int snapshot(int epfd, struct wait_listener *wl, bool *shared, int *others,
                    bool *threaded)
{
    struct instance *inst;
    int k = 0;

    lock();
    inst = find_instance(epfd);
    *shared = inst == NULL || !wait_alone(inst);
    *others = inst ? inst->others : 1;
    if (inst && ++inst->waiting > 1)
        inst->threaded = true;
    *threaded = inst && inst->threaded;
    for (int i = 0; i < nregs && k < TH_MAX_WAIT_LISTENERS; i++) {
        bool exclusive;
        if (regs[i].epfd != epfd)
            continue;
        /* taken out while it looked private: others wait on it now, put it back */
        if (*shared && regs[i].parked &&
            (add_listener(epfd, regs[i].fd, &regs[i].ev, regs[i].injected, &exclusive) == 0 ||
             errno == EEXIST))
            regs[i].parked = false;
        wl[k++] = (struct wait_listener){ .l = regs[i].l, .fd = regs[i].fd,
                                          .data = regs[i].ev.data.u64,
                                          .events = regs[i].ev.events,
                                          .exclusive = regs[i].exclusive };
    }
    unlock();
    return k;
}

static int real_wait(int epfd, struct epoll_event *evs, int maxevents, int64_t deadline,
                     const sigset_t *sigmask)
{
    int r;

    if (real_epoll_pwait2 && deadline != TH_FOREVER) {
        struct timespec ts;
        th_ns_to_timespec(th_remaining_ns(deadline), &ts);
        r = real_epoll_pwait2(epfd, evs, maxevents, &ts, sigmask);
        if (r >= 0 || errno != ENOSYS)
            return r;
    }
    return real_epoll_pwait(epfd, evs, maxevents, th_remaining_ms(deadline), sigmask);
}

static bool reported(const struct epoll_event *evs, int n, uint64_t data)
{
    for (int i = 0; i < n; i++)
        if (evs[i].data.u64 == data)
            return true;
    return false;
}

/* Put listeners we hold back in; take out (private instances only) the rest. */
static void park_and_unpark(int epfd, bool shared, struct wait_listener *wl, int k,
                            const bool *held, const bool *busy)
{
    lock();
    for (int j = 0; j < k; j++) {
        struct reg *r = find_reg(epfd, wl[j].fd);
        struct th_seg *seg = wl[j].l->seg;
        bool exclusive;

        if (r == NULL)
            continue;
        if (held[j] && r->parked) {
            if (add_listener(epfd, r->fd, &r->ev, r->injected, &exclusive) == 0)
                r->parked = false;
        } else if (busy[j]) {
            /* never out of a shared instance; not while a sibling thread holds it */
            if (!r->parked && !shared && seg && !th_lock_held_by(seg, th_pid) &&
                real_epoll_ctl(epfd, EPOLL_CTL_DEL, r->fd, NULL) == 0)
                r->parked = true;
        }
    }
    unlock();
}

/* The lock wait's view of an epoll wait (struct th_lockwait callbacks). */
struct epoll_ctx {
    int epfd;
    struct epoll_event *evs;
    int maxevents;
    bool shared;
    struct wait_listener *wl;
    int k;
};

static void epoll_exclude(void *ctx, const bool *held, const bool *busy, bool on)
{
    struct epoll_ctx *c = ctx;

    if (on)
        park_and_unpark(c->epfd, c->shared, c->wl, c->k, held, busy);
}

static int epoll_real_wait(void *ctx, int64_t until, const sigset_t *sigmask)
{
    struct epoll_ctx *c = ctx;

    return real_wait(c->epfd, c->evs, c->maxevents, until, sigmask);
}

static bool epoll_reported(void *ctx, int j, int result)
{
    struct epoll_ctx *c = ctx;

    return reported(c->evs, result, c->wl[j].data);
}

/* Called with every signal blocked; sigmask is what the sleeps apply. */
static int lock_wait(int epfd, struct epoll_event *evs, int maxevents, int64_t deadline,
                     const sigset_t *sigmask, struct wait_listener *wl, int k,
                     bool shared, int others)
{
    struct th_listener *ls[TH_MAX_WAIT_LISTENERS] = { NULL };
    struct epoll_ctx ctx = { .epfd = epfd, .evs = evs, .maxevents = maxevents,
                             .shared = shared, .wl = wl, .k = k };
    struct th_lockwait lw = {
        .ls = ls, .k = k, .may_block = others == 0, .deadline = deadline,
        .sigmask = sigmask, .bell = th_doorbell_fd(), .ctx = &ctx,
        .exclude = epoll_exclude, .wait = epoll_real_wait, .reported = epoll_reported,
    };

    for (int j = 0; j < k; j++)
        ls[j] = wl[j].l;
    return th_lockwait_run(&lw);
}

/* ---- bursts: leaving a re-reported listener to the others ------------- */

/* Take the yielded listeners out of (out) or back into (!out) the instance. */
static void park_yielded(int epfd, const struct wait_listener *wl, int k, uint64_t yield, bool out)
{
    lock();
    for (int j = 0; j < k; j++) {
        struct reg *r = find_reg(epfd, wl[j].fd);
        bool exclusive;

        if (!(yield & (1ull << j)) || r == NULL)
            continue;
        if (out && !r->parked && real_epoll_ctl(epfd, EPOLL_CTL_DEL, r->fd, NULL) == 0)
            r->parked = true;
        else if (!out && r->parked &&
                 add_listener(epfd, r->fd, &r->ev, r->injected, &exclusive) == 0)
            r->parked = false;          /* back in, at the tail of the queue */
    }
    unlock();
}

/* Which of wl[0..k) evs[0..n) reports, as a mask by position. */
static uint64_t reported_mask(const struct epoll_event *evs, int n,
                              const struct wait_listener *wl, int k)
{
    uint64_t mask = 0;

    for (int j = 0; n > 0 && j < k; j++)
        if (reported(evs, n, wl[j].data))
            mask |= 1ull << j;
    return mask;
}

/*
 * An exclusive wait.  A listener this thread re-takes at once while
 * others wait on it sits out up to TH_YIELD_MS (policy.c, burst.c); only
 * when the wait reported nothing else, as a second wait must not lose
 * edge-triggered events of other fds.
 */
static int exclusive_wait(int epfd, struct epoll_event *evs, int maxevents, int64_t deadline,
                          const sigset_t *sigmask, const struct wait_listener *wl, int k,
                          uint64_t took_last)
{
    struct th_listener *ls[TH_MAX_WAIT_LISTENERS];
    int fds[TH_MAX_WAIT_LISTENERS];
    struct th_burst b;
    uint64_t got, yield;
    bool lt_only = true;
    int r, saved_errno;

    for (int j = 0; j < k; j++) {
        ls[j] = wl[j].l;
        fds[j] = wl[j].fd;
    }
    th_burst_begin(&b, ls, fds, k, took_last);
    r = real_wait(epfd, evs, maxevents, deadline, sigmask);
    saved_errno = errno;
    got = reported_mask(evs, r, wl, k);
    for (int j = 0; j < k; j++)
        lt_only = lt_only && (!(got & (1ull << j)) || !(wl[j].events & EPOLLET));
    /* nothing but those listeners, level-triggered: a second wait loses nothing */
    yield = th_burst_after(&b, got, r > 0 && lt_only && r == __builtin_popcountll(got));
    if (yield) {
        park_yielded(epfd, wl, k, yield, true);
        r = real_wait(epfd, evs, maxevents, th_min_deadline(deadline, TH_YIELD_MS), sigmask);
        saved_errno = errno;
        park_yielded(epfd, wl, k, yield, false);
        if (r == 0 && th_remaining_ns(deadline) > 0) {
            /* nobody came for it: take it now if it is still there */
            th_burst_resume(&b);
            r = real_wait(epfd, evs, maxevents, deadline, sigmask);
            saved_errno = errno;
            th_burst_end(&b, reported_mask(evs, r, wl, k), yield);
        }
    }
    errno = saved_errno;
    return r;
}

static void done_waiting(int epfd)
{
    struct instance *inst;

    lock();
    if ((inst = find_instance(epfd)) != NULL && inst->waiting > 0)
        inst->waiting--;
    unlock();
}

int th_epreg_wait(int epfd, struct epoll_event *evs, int maxevents, int64_t deadline,
                  const sigset_t *sigmask)
{
    struct wait_listener wl[TH_MAX_WAIT_LISTENERS];
    struct th_wait_facts facts = { .epoll = true, .all_exclusive = true };
    int others, k = snapshot(epfd, wl, &facts.shared, &others, &facts.threaded), r, saved_errno;
    uint64_t took_last = th_self.took;
    struct th_plan plan;

    th_self.woke = th_self.rotated = th_self.took = th_self.refusable = 0;
    th_waiting_clear();             /* back from the last wait, never accepted */
    for (int j = 0; j < k; j++) {
        facts.all_exclusive = facts.all_exclusive && wl[j].exclusive;
        TH_COUNT(wl[j].l, waits, 1);
    }
    plan = th_policy_wait(&facts);
    for (int j = 0; j < k; j++) {
        struct th_plan entry = th_policy_epoll_entry(plan, wl[j].exclusive);
        th_listener_set_strategy(wl[j].l, entry.strategy, entry.why);
    }
    if (plan.strategy == TH_STRAT_LOCK) {
        struct th_sigscope scope;

        th_sig_enter(&scope, sigmask);
        r = lock_wait(epfd, evs, maxevents, deadline, scope.wait_mask, wl, k, facts.shared,
                      others);
        th_sig_leave(&scope);
    } else if (plan.strategy == TH_STRAT_EXCLUSIVE) {
        r = exclusive_wait(epfd, evs, maxevents, deadline, sigmask, wl, k, took_last);
    } else {
        r = real_wait(epfd, evs, maxevents, deadline, sigmask);
    }
    saved_errno = errno;
    done_waiting(epfd);
    for (int j = 0; j < k; j++) {
        if (r > 0 && reported(evs, r, wl[j].data)) {
            uint64_t bit = th_listener_bit(wl[j].l->index);
            TH_COUNT(wl[j].l, wakeups, 1);
            th_self.woke |= bit;
            if (th_policy_epoll_entry(plan, wl[j].exclusive).strategy == TH_STRAT_EXCLUSIVE &&
                !(wl[j].events & (EPOLLET | EPOLLONESHOT)))
                th_self.refusable |= bit;
        }
    }
    errno = saved_errno;
    return r;
}

/* ---- rotation, close, fork ------------------------------------------- */

void th_epreg_rotate(struct th_listener *l)
{
    lock();
    for (int i = 0; i < nregs; i++) {
        struct reg *r = &regs[i];
        struct instance *inst;
        struct epoll_event ev;

        if (r->l != l || !r->exclusive || r->parked)
            continue;
        inst = find_instance(r->epfd);
        if (inst == NULL || !instance_private(inst))
            continue;                  /* a shared entry has no order to fix */
        /* re-adding puts this process's entry at the tail of the wait queue */
        ev = r->ev;
        ev.events |= EPOLLEXCLUSIVE;
        real_epoll_ctl(r->epfd, EPOLL_CTL_DEL, r->fd, NULL);
        if (real_epoll_ctl(r->epfd, EPOLL_CTL_ADD, r->fd, &ev) == 0)
            TH_COUNT(l, rotations, 1);
        else
            th_warn("port %u: re-adding the listener to epoll fd %d failed (%s)",
                    l->port, r->epfd, strerror(errno));
    }
    unlock();
}

void th_epreg_forget_fd(int fd)
{
    lock();
    for (int i = 0; i < ninstances;) {
        if (instances[i].epfd == fd) {
            if (instances[i].w)
                munmap(instances[i].w, sizeof(*instances[i].w));
            instances[i] = instances[--ninstances];
        }
        else
            i++;
    }
    for (int i = 0; i < nregs;) {
        if (regs[i].epfd == fd || regs[i].fd == fd)
            drop_reg(&regs[i]);
        else
            i++;
    }
    unlock();
}

void th_epreg_prepare_fork(void)
{
    pthread_mutex_lock(&reg_lock);
}

void th_epreg_parent_fork(void)
{
    pthread_mutex_unlock(&reg_lock);
}

void th_epreg_child_fork(void)
{
    pthread_mutex_unlock(&reg_lock);   /* taken by prepare, in this very thread */
    /* the parent's threads are not here: only this one can be waiting */
    for (int i = 0; i < ninstances; i++) {
        instances[i].waiting = 0;
        instances[i].threaded = false;
    }
}

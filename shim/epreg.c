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
 * EPOLLEXCLUSIVE when the kernel allows it with the requested events, less
 * those a listener never reports (policy.c th_exclusive_events).  The
 * kernel refuses EPOLL_CTL_MOD on such an entry, so a later MOD by the
 * program becomes DEL + ADD and the program sees success; its epoll_data is
 * kept on every path.
 *
 * A program that sets EPOLLEXCLUSIVE itself may also rotate its own entry:
 * nginx deletes and re-adds its listener every 16 accepts of a worker.
 * Rotating it again after each accept would add two calls per connection
 * and hand every connection to a cold worker (nginx, 4 workers: 1.06-1.2x
 * the CPU per connection), so while the program has re-added a listener
 * within its last PROGRAM_ROTATION_WINDOW accepts, the rotation is left to
 * it, and with it the whole wait (policy.c: passed through; epmemo.c).
 */
#include "thunder.h"

#include <pthread.h>
#include <string.h>
#include <sys/mman.h>

#define MAX_INSTANCES 256
#define MAX_REGS 256
#define PROGRAM_ROTATION_WINDOW 64   /* accepts; nginx re-adds every 16 */

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
};

struct reg {
    int epfd;             /* -1 = free */
    int fd;
    struct th_listener *l;
    struct epoll_event ev;  /* as the program asked for it */
    bool exclusive;       /* registered with EPOLLEXCLUSIVE */
    bool injected;        /* the shim made it exclusive (and keeps doing so) */
    bool parked;          /* taken out while another process holds the lock */
    bool lost;            /* out after a failed rotation: re-added before each wait */
};

static struct instance instances[MAX_INSTANCES];
static struct reg regs[MAX_REGS];
static int ninstances, nregs;
static _Atomic bool any_regs;   /* fast path: no listener was ever added */
static _Atomic bool any_lost;   /* a failed rotation left a listener out */
static int warned_lost;         /* that was reported (once per process) */
/* per listener (by index): the program deleted its own exclusive entry
   (under reg_lock), and 1 + this process's accepts when it re-added one */
static bool program_deleted[TH_MAX_LISTENERS];
static _Atomic uint64_t program_readded_at[TH_MAX_LISTENERS];
static pthread_mutex_t reg_lock = PTHREAD_MUTEX_INITIALIZER;
/*
 * What every wait and every epoll_ctl of a connection asks about an
 * instance, by its fd, read without reg_lock (nginx: two waits and one ADD
 * per connection; the lock and the table scan were about a tenth of the
 * library's instructions there).  Instances are tracked only below
 * COUNTED_FDS: fdtable.c does not know one past it as an instance either,
 * so its waits pass through, and its listener entries stay as asked.
 */
#define COUNTED_FDS 65536
struct counts {
    _Atomic uint16_t listeners;  /* listener entries (changed under reg_lock) */
    _Atomic bool threaded;       /* ever more than one wait at once (sticky) */
    _Atomic int32_t waiting;     /* threads of this process in a wait on it now */
    _Atomic int32_t others;      /* entries of other fds: ADDs less DELs */
};
static struct counts counted[COUNTED_FDS];
_Static_assert(MAX_REGS < UINT16_MAX, "counts.listeners counts entries in 16 bits");
/* One more at each change under reg_lock (epmemo.c's memo holds till then) */
static _Atomic uint32_t reg_gen;

static void lock(void)
{
    th_self.in_shim++;
    pthread_mutex_lock(&reg_lock);
}

/* after a look that changed nothing */
static void unlock_unchanged(void)
{
    pthread_mutex_unlock(&reg_lock);
    th_self.in_shim--;
}

static void unlock(void)
{
    atomic_fetch_add_explicit(&reg_gen, 1, memory_order_release);
    unlock_unchanged();
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

static struct counts *counts_of(int epfd)
{
    return epfd >= 0 && epfd < COUNTED_FDS ? &counted[epfd] : NULL;
}

static void count_in(int epfd, int delta)
{
    struct counts *c = counts_of(epfd);

    if (c)
        atomic_fetch_add_explicit(&c->listeners, (uint16_t)delta, memory_order_relaxed);
}

/* n + delta, but never below 0: a decrement may come without its
   increment (a wait begun before a fork's reset, a DEL of an entry added
   before a close reset the count). */
static void add_not_below_zero(_Atomic int32_t *n, int32_t delta)
{
    int32_t was = atomic_load_explicit(n, memory_order_relaxed);

    while (was + delta >= 0 && !atomic_compare_exchange_weak(n, &was, was + delta))
        ;
}

/* A new instance, or a closed one: nothing in it, nobody waiting. */
static void reset_counts(int epfd)
{
    struct counts *c = counts_of(epfd);

    if (c) {
        atomic_store(&c->waiting, 0);
        atomic_store(&c->others, 0);
        atomic_store(&c->threaded, false);
    }
}

static void drop_reg(struct reg *r)
{
    count_in(r->epfd, -1);
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
    /* every wait asks: a plain load answers the usual case, no locked write */
    if (atomic_load_explicit(&inst->w->pid, memory_order_relaxed) == th_pid)
        return true;
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
    if (counts_of(epfd) && find_instance(epfd) == NULL && ninstances < MAX_INSTANCES) {
        reset_counts(epfd);
        instances[ninstances++] = (struct instance){ .epfd = epfd, .creator = th_pid, .w = w };
        w = NULL;
    }
    unlock();
    if (w)
        munmap(w, sizeof(*w));
    th_fd_mark_epoll(epfd);
}

/* Untracked instance fds (past COUNTED_FDS) answer no: passed through. */
bool th_epreg_has_listener(int epfd)
{
    struct counts *c = counts_of(epfd);

    return c && atomic_load_explicit(&any_regs, memory_order_relaxed) && th_fd_is_epoll(epfd) &&
           atomic_load_explicit(&c->listeners, memory_order_relaxed) > 0;
}

/* The program added l with its own EPOLLEXCLUSIVE: a re-add if it had
   deleted its exclusive entry before (under reg_lock). */
static void note_program_add(struct th_listener *l)
{
    if (!program_deleted[l->index])
        return;
    program_deleted[l->index] = false;
    atomic_store_explicit(&program_readded_at[l->index], th_listener_accepts(l) + 1,
                          memory_order_relaxed);
}

bool th_epreg_rotated_by_program(struct th_listener *l)
{
    uint64_t at = atomic_load_explicit(&program_readded_at[l->index], memory_order_relaxed);

    return at != 0 && th_listener_accepts(l) + 1 - at < PROGRAM_ROTATION_WINDOW;
}

/* ADD with EPOLLEXCLUSIVE when we may; falls back to the plain ADD. */
static int add_listener(int epfd, int fd, struct epoll_event *ev, bool inject, bool *exclusive)
{
    struct epoll_event ex;

    *exclusive = ev && (ev->events & EPOLLEXCLUSIVE);
    if (inject && !*exclusive) {
        ex = *ev;
        ex.events = th_exclusive_events(ev->events);
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
        if (ret == 0 && ev && (ev->events & EPOLLEXCLUSIVE))
            note_program_add(l);
        if (ret == 0 && nregs < MAX_REGS) {
            atomic_store(&any_regs, true);
            count_in(epfd, 1);
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
        if (r && r->exclusive && !r->injected)
            program_deleted[l->index] = true;
        ret = r && r->parked ? 0 : real_epoll_ctl(epfd, op, fd, ev);
        if (r && (ret == 0 || errno == ENOENT || errno == EBADF))
            drop_reg(r);
        return ret;
    }
    return real_epoll_ctl(epfd, op, fd, ev);
}

/* Another fd's entry came or went (its close removes it unseen: the count
   says "has had others", which is what the lock wait asks). */
static void count_other(int epfd, int op)
{
    struct counts *c = counts_of(epfd);

    if (c && (op == EPOLL_CTL_ADD || op == EPOLL_CTL_DEL))
        add_not_below_zero(&c->others, op == EPOLL_CTL_ADD ? 1 : -1);
}

int th_epreg_ctl(int epfd, int op, int fd, struct epoll_event *ev)
{
    struct th_listener *l = th_fd_listener(fd);
    int ret, saved_errno;

    if (l == NULL) {
        ret = real_epoll_ctl(epfd, op, fd, ev);
        if (ret == 0)
            count_other(epfd, op);
        return ret;
    }
    lock();
    ret = ctl_listener(find_instance(epfd), epfd, op, fd, ev, l);
    saved_errno = errno;
    unlock();
    errno = saved_errno;
    return ret;
}

/* ---- for the wait (epwait.c) ------------------------------------------ */

static __thread uint32_t looked_at_gen;   /* reg_gen at this thread's last look */

/* What epoll_wait needs to decide; also counts this thread as waiting. */
int th_epreg_snapshot(int epfd, struct th_ep_listener *wl, bool *shared, int *others,
                    bool *threaded)
{
    struct instance *inst;
    bool readded = false;
    int k = 0;

    lock();
    inst = find_instance(epfd);
    *shared = inst == NULL || !wait_alone(inst);
    *others = inst ? atomic_load(&counted[epfd].others) : 1;
    if (inst && atomic_fetch_add(&counted[epfd].waiting, 1) > 0)
        atomic_store(&counted[epfd].threaded, true);
    *threaded = inst && atomic_load(&counted[epfd].threaded);
    for (int i = 0; i < nregs && k < TH_MAX_WAIT_LISTENERS; i++) {
        bool exclusive;
        if (regs[i].epfd != epfd)
            continue;
        /* taken out while it looked private: others wait on it now, put it back */
        if (*shared && regs[i].parked &&
            (add_listener(epfd, regs[i].fd, &regs[i].ev, regs[i].injected, &exclusive) == 0 ||
             errno == EEXIST))
            regs[i].parked = false, readded = true;
        wl[k++] = (struct th_ep_listener){ .l = regs[i].l, .fd = regs[i].fd,
                                            .data = regs[i].ev.data.u64,
                                            .events = regs[i].ev.events,
                                            .exclusive = regs[i].exclusive,
                                            .program_balanced = regs[i].exclusive &&
                                                !regs[i].injected &&
                                                th_epreg_rotated_by_program(regs[i].l) };
    }
    /* made by another process (before a fork): looked at every wait (0: kept by none) */
    looked_at_gen = inst && inst->creator == th_pid ? atomic_load(&reg_gen) : 0;
    if (readded)
        unlock();                   /* changed: no memo of this look holds */
    else
        unlock_unchanged();
    return k;
}

uint32_t th_epreg_gen(void) { return atomic_load_explicit(&reg_gen, memory_order_acquire); }
uint32_t th_epreg_looked_at(void) { return looked_at_gen; }

/* Count this thread as waiting on epfd, as a look does, if no other
   thread of the process waits on it nor ever did at once (false: not
   counted, look). */
bool th_epreg_waits_alone(int epfd)
{
    struct counts *c = counts_of(epfd);

    if (c == NULL || atomic_load_explicit(&c->threaded, memory_order_relaxed))
        return false;
    if (atomic_fetch_add(&c->waiting, 1) == 0)
        return true;
    add_not_below_zero(&c->waiting, -1);
    return false;
}

/*
 * Put back the listeners a failed rotation left out of this instance;
 * true if one is still out (the caller waits in short slices and retries).
 */
bool th_epreg_readd_lost(int epfd)
{
    bool still_out = false, any = false, exclusive;

    lock();
    for (int i = 0; i < nregs; i++) {
        struct reg *r = &regs[i];
        if (!r->lost)
            continue;
        if (r->epfd != epfd) {
            any = true;
            continue;
        }
        if (add_listener(epfd, r->fd, &r->ev, r->injected, &exclusive) == 0) {
            r->lost = r->parked = false;
            r->exclusive = exclusive;
        } else if (errno == EEXIST) {
            r->lost = r->parked = false;    /* the program added it back itself */
        } else {
            still_out = any = true;
        }
    }
    atomic_store(&any_lost, any);
    unlock();
    return still_out;
}

bool th_epreg_any_lost(void)
{
    return atomic_load_explicit(&any_lost, memory_order_relaxed);
}

/* Put listeners we hold back in; take out (private instances only) the rest. */
void th_epreg_park_busy(int epfd, bool shared, const struct th_ep_listener *wl, int k,
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

/* Take the yielded listeners out of (out) or back into (!out) the instance. */
void th_epreg_park_yielded(int epfd, const struct th_ep_listener *wl, int k, uint64_t yield, bool out)
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

void th_epreg_done_waiting(int epfd)
{
    struct counts *c = counts_of(epfd);

    if (c)
        add_not_below_zero(&c->waiting, -1);
}

/* ---- rotation, close, fork ------------------------------------------- */

/*
 * holder: this thread holds l's lock.  A shared instance's entry is
 * rotated only then: its processes take the lock in turn, so the holder
 * is the only one that moves it, and an entry that stays at the head
 * of the listener's queue would take every connection its waiters are
 * in a wait for, before the other processes' private entries (a master's
 * instance kept by some workers, the others with their own).
 */
void th_epreg_rotate(struct th_listener *l, bool holder)
{
    bool lost = false;

    lock();
    for (int i = 0; i < nregs; i++) {
        struct reg *r = &regs[i];
        struct instance *inst;
        struct epoll_event ev;

        if (r->l != l || !r->exclusive || r->parked)
            continue;
        inst = find_instance(r->epfd);
        if (inst == NULL || !(instance_private(inst) || holder))
            continue;
        /* re-adding puts this process's entry at the tail of the wait queue */
        ev = r->ev;
        ev.events = th_exclusive_events(ev.events);
        if (real_epoll_ctl(r->epfd, EPOLL_CTL_DEL, r->fd, NULL) < 0)
            continue;                  /* still in, only not rotated */
        if (real_epoll_ctl(r->epfd, EPOLL_CTL_ADD, r->fd, &ev) == 0) {
            TH_COUNT(l, rotations, 1);
        } else {
            r->lost = r->parked = lost = true;   /* out: every wait re-adds it first */
            atomic_store(&any_lost, true);
            if (!warned_lost++)
                th_warn("port %u: re-adding the listener to epoll fd %d failed (%s); "
                        "retried before and during every wait until it is back",
                        l->port, r->epfd, strerror(errno));
        }
    }
    if (lost)
        unlock();
    else
        unlock_unchanged();         /* moved in the kernel's queue, same entries */
}


void th_epreg_forget_fd(int fd)
{
    lock();
    for (int i = 0; i < ninstances;) {
        if (instances[i].epfd == fd) {
            reset_counts(fd);
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
    atomic_fetch_add(&reg_gen, 1);     /* shared with the parent now: look again */
    /* the parent's threads are not here: only this one can be waiting */
    for (int i = 0; i < ninstances; i++) {
        atomic_store(&counted[instances[i].epfd].waiting, 0);
        atomic_store(&counted[instances[i].epfd].threaded, false);
    }
}

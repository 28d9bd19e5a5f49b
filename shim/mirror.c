/*
 * Poll-style waits on listeners, made exclusive.
 *
 * poll() and select() put every waiter on the listener's wait queue and the
 * kernel wakes them all.  Here each thread keeps a private epoll instance
 * mirroring the set it polls: the listeners registered with EPOLLEXCLUSIVE,
 * every other fd plain (level-triggered).  The thread sleeps in that
 * instance, so one connection wakes one thread; the answer handed back to
 * the program comes from a real poll(…, 0) on the program's own array,
 * unless only listeners woke the thread (answer_from_events).  A set epoll
 * cannot hold exactly (a regular file, a closed fd, the same listener
 * twice) is not mirrored at all: it falls back (policy.c).
 *
 * The mirror is updated only by the difference from the previous call.  An
 * entry is trusted while its number's generation (fdtable.c) is unchanged,
 * that is while no thread has closed or reused the number through the
 * hooks.  A set with an fd beyond that table is checked with a real
 * poll(…, 0) before each sleep instead, which catches what is ready now
 * but not a registration lost to a reuse the hooks did not see.  A
 * private instance must be created in the process that waits: an instance
 * inherited over fork is shared, so after fork the child starts afresh.
 * After each accept the listener entry is re-added (rotation, see
 * th_mirror_rotate) so the next connection goes to the next idle waiter.
 */
#include "thunder.h"

#include <pthread.h>
#include <sys/mman.h>

#define MIRROR_MAX 64              /* larger sets fall back (lock or pass-through) */
#define SPURIOUS_BEFORE_REBUILD 4
#define POLL_BITS (POLLIN | POLLPRI | POLLOUT | POLLRDHUP | POLLRDNORM | POLLRDBAND | \
                   POLLWRNORM | POLLWRBAND)

struct entry {
    int fd;
    uint16_t generation;           /* the number's, when registered (fdtable.c) */
    uint32_t events;               /* as registered in the epoll instance */
    bool exclusive;
    bool seen;                     /* present in the current call's set */
};

struct mirror {
    int epfd;
    pid_t pid;
    int n;
    int spurious_run;
    bool untracked;                /* the set has an fd whose reuse we cannot see */
    struct entry ent[MIRROR_MAX];
};

static __thread struct mirror *mine;
static _Atomic bool given_up;      /* the fd limit was reached: no more instances */
static pthread_key_t mirror_key;
static pthread_once_t key_once = PTHREAD_ONCE_INIT;

static void destroy(void *p)
{
    struct mirror *m = p;

    if (m->epfd >= 0 && m->pid == th_pid)
        real_close(m->epfd);
    munmap(m, sizeof(*m));
}

static void make_key(void)
{
    pthread_key_create(&mirror_key, destroy);
}

/* mmap, not malloc: poll() may be called from a signal handler. */
static struct mirror *get_mirror(void)
{
    if (mine && mine->pid == th_pid && mine->epfd >= 0)
        return mine;
    if (atomic_load_explicit(&given_up, memory_order_relaxed))
        return NULL;
    if (mine == NULL) {
        void *p = mmap(NULL, sizeof(struct mirror), PROT_READ | PROT_WRITE,
                       MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (p == MAP_FAILED)
            return NULL;
        mine = p;
        pthread_once(&key_once, make_key);
        pthread_setspecific(mirror_key, mine);
    }
    mine->n = 0;
    mine->spurious_run = 0;
    mine->pid = th_pid;
    mine->epfd = real_epoll_create1(EPOLL_CLOEXEC);
    return mine->epfd >= 0 ? mine : NULL;
}

static void rebuild(struct mirror *m)
{
    real_close(m->epfd);
    m->epfd = -1;
    get_mirror();
}

static struct entry *find(struct mirror *m, int fd)
{
    for (int i = 0; i < m->n; i++)
        if (m->ent[i].fd == fd)
            return &m->ent[i];
    return NULL;
}

/* An event carries the fd and its generation: one from a stale registration
   (a file still open elsewhere) is not taken for the number's new file. */
static uint64_t tag(const struct entry *e)
{
    return (uint32_t)e->fd | (uint64_t)e->generation << 32;
}

static int ctl(struct mirror *m, int op, struct entry *e)
{
    struct epoll_event ev = { .events = e->events, .data.u64 = tag(e) };

    if (e->exclusive)
        ev.events |= EPOLLEXCLUSIVE;
    return real_epoll_ctl(m->epfd, op, e->fd, &ev);
}

/* Bring one fd of the set into the mirror; false if epoll refuses it. */
static bool sync_one(struct mirror *m, int fd, uint32_t events, bool exclusive)
{
    struct entry *e = find(m, fd);
    uint16_t generation = 0;
    bool tracked = th_fd_generation(fd, &generation);

    if (e && e->seen) {                       /* the same fd twice in one set */
        if (e->exclusive || exclusive)
            return false;
        e->events |= events;
        return ctl(m, EPOLL_CTL_MOD, e) == 0;
    }
    m->untracked |= !tracked;
    if (e && e->events == events && e->exclusive == exclusive && e->generation == generation) {
        e->seen = true;
        return true;
    }
    if (e) {
        real_epoll_ctl(m->epfd, EPOLL_CTL_DEL, fd, NULL);
        *e = m->ent[--m->n];
    }
    if (m->n == MIRROR_MAX)
        return false;
    e = &m->ent[m->n];
    *e = (struct entry){ .fd = fd, .generation = generation, .events = events,
                         .exclusive = exclusive, .seen = true };
    if (ctl(m, EPOLL_CTL_ADD, e) < 0) {
        if (errno != EEXIST)
            return false;
        /* a registration of a previous file under this number: replace it */
        real_epoll_ctl(m->epfd, EPOLL_CTL_DEL, fd, NULL);
        if (ctl(m, EPOLL_CTL_ADD, e) < 0)
            return false;
    }
    m->n++;
    return true;
}

static bool sync_set(struct mirror *m, const struct pollfd *fds, nfds_t n)
{
    for (int i = 0; i < m->n; i++)
        m->ent[i].seen = false;
    m->untracked = false;
    for (nfds_t i = 0; i < n; i++) {
        uint32_t events = (uint32_t)(fds[i].events & POLL_BITS);
        bool listener;

        if (fds[i].fd < 0)
            continue;
        listener = (fds[i].events & POLLIN) && th_fd_listener(fds[i].fd) != NULL;
        /* a listener is watched for EPOLLIN alone (RDNORM means the same);
           whatever else was asked must be something EPOLLEXCLUSIVE allows */
        if (listener && !th_exclusive_allows(events & ~(uint32_t)POLLRDNORM))
            return false;
        if (!sync_one(m, fds[i].fd, listener ? (uint32_t)EPOLLIN : events, listener))
            return false;
    }
    for (int i = 0; i < m->n;) {                /* drop what the set no longer has */
        if (m->ent[i].seen) {
            i++;
            continue;
        }
        real_epoll_ctl(m->epfd, EPOLL_CTL_DEL, m->ent[i].fd, NULL);
        m->ent[i] = m->ent[--m->n];
    }
    return true;
}

static int poll_now(struct pollfd *fds, nfds_t n)
{
    struct timespec zero = { 0, 0 };

    return real_ppoll(fds, n, &zero, NULL);
}

/*
 * Is anything but a listener ready already?  The listeners are left out:
 * the kernel has already picked the next idle waiter for a pending
 * connection, and a worker coming back must not jump that queue.
 */
static int others_ready_now(struct mirror *m, struct pollfd *fds, nfds_t n)
{
    int saved[MIRROR_MAX], masked = 0, r;
    bool any_other = false;

    for (nfds_t i = 0; i < n; i++) {
        struct entry *e = fds[i].fd >= 0 ? find(m, fds[i].fd) : NULL;
        saved[i] = fds[i].fd;
        if (e && e->exclusive) {
            fds[i].fd = -1;
            masked++;
        } else if (fds[i].fd >= 0) {
            any_other = true;
        }
    }
    r = any_other ? poll_now(fds, n) : 0;
    for (nfds_t i = 0; i < n; i++) {
        if (fds[i].fd != saved[i])
            fds[i].revents = 0;
        fds[i].fd = saved[i];
    }
    return r;
}

/*
 * The events themselves are the answer when only listeners woke this
 * thread with a connection each, and fewer events came than the buffer
 * holds: epoll_wait then went through the whole ready list, re-asking
 * each entry as poll would, and a ready non-listener would be among them.
 * That saves the poll(…, 0) after most wake-ups.  Anything else (another
 * fd, an error or hang-up, a full buffer) is answered from the program's
 * array.  -1: not answered.
 */
static int answer_from_events(struct mirror *m, const struct epoll_event *evs, int r,
                              int max, struct pollfd *fds, nfds_t n)
{
    int ready = 0;

    if (r >= max)
        return -1;
    for (int j = 0; j < r; j++) {
        struct entry *e = find(m, (int)(uint32_t)evs[j].data.u64);
        if (e == NULL || !e->exclusive || evs[j].events != EPOLLIN || evs[j].data.u64 != tag(e))
            return -1;
    }
    for (nfds_t i = 0; i < n; i++) {
        fds[i].revents = 0;
        for (int j = 0; j < r && fds[i].fd >= 0; j++)
            if ((int)(uint32_t)evs[j].data.u64 == fds[i].fd)
                fds[i].revents = fds[i].events & (POLLIN | POLLRDNORM);
        ready += fds[i].revents != 0;
    }
    return ready;
}

/*
 * The mirror's bookkeeping runs with signals unblocked (the sleep, an
 * epoll_pwait with the caller's mask, is what a signal must interrupt, as
 * in the real call), but marked as the shim's own work: a handler that
 * polls meanwhile goes straight to libc and cannot find the mirror half
 * synced.
 */
static bool synced(struct mirror **mp, const struct pollfd *fds, nfds_t n)
{
    struct mirror *m;
    bool ok;

    th_self.in_shim++;
    m = get_mirror();
    ok = m != NULL && sync_set(m, fds, n);
    if (m && !ok)
        rebuild(m);                             /* leave no half-synced state */
    th_self.in_shim--;
    *mp = m;
    return ok;
}

static bool synced_afresh(struct mirror *m, const struct pollfd *fds, nfds_t n)
{
    bool ok;

    th_self.in_shim++;
    rebuild(m);
    ok = m->epfd >= 0 && sync_set(m, fds, n);
    th_self.in_shim--;
    return ok;
}

int th_mirror_poll(struct pollfd *fds, nfds_t n, int64_t deadline,
                   const sigset_t *sigmask, int *ret)
{
    struct mirror *m;
    struct epoll_event evs[8];

    if (n > MIRROR_MAX)
        return 0;
    if (!synced(&m, fds, n))
        return 0;
    if (m->untracked && (*ret = others_ready_now(m, fds, n)) != 0)
        return 1;
    for (;;) {
        int64_t start;
        int r;

        if (th_remaining_ns(deadline) == 0) {
            *ret = 0;
            return 1;
        }
        start = th_now_ns();
        r = real_epoll_pwait(m->epfd, evs, TH_ARRAY_LEN(evs), th_remaining_ms(deadline), sigmask);
        if (r < 0 && errno == EINTR && !th_sig_handler_deliverable(sigmask))
            continue;                           /* stopped and continued: poll goes on */
        th_self.slept = th_now_ns() - start >= TH_NO_SLEEP_NS;
        if (r <= 0) {
            *ret = r;                           /* timeout, or -1 with errno */
            return 1;
        }
        /* the mirror says when; the events or the program's array say what */
        if ((*ret = answer_from_events(m, evs, r, TH_ARRAY_LEN(evs), fds, n)) < 0)
            *ret = poll_now(fds, n);
        if (*ret != 0) {
            m->spurious_run = 0;
            return 1;
        }
        /* woken, yet nothing is ready: another thread won, or a stale entry */
        if (++m->spurious_run >= SPURIOUS_BEFORE_REBUILD && !synced_afresh(m, fds, n))
            return 0;
    }
}

/*
 * A yield (policy.c): the listeners sit out of the mirror until `until`
 * while the rest of the set is watched, then go back in, at the tail of
 * their wait queues.  Only other fds are answered (from the program's
 * array, listeners masked); 0 when none became ready.
 */
int th_mirror_yield(struct pollfd *fds, nfds_t n, int64_t until,
                    const sigset_t *sigmask, int *ret)
{
    struct mirror *m = mine;
    struct epoll_event evs[8];
    int r, saved_errno;

    if (m == NULL || m->pid != th_pid || m->epfd < 0)
        return 0;
    th_self.in_shim++;          /* a handler's poll meanwhile goes straight to libc */
    for (int i = 0; i < m->n; i++)
        if (m->ent[i].exclusive)
            real_epoll_ctl(m->epfd, EPOLL_CTL_DEL, m->ent[i].fd, NULL);
    th_self.in_shim--;
    r = real_epoll_pwait(m->epfd, evs, TH_ARRAY_LEN(evs), th_remaining_ms(until), sigmask);
    saved_errno = errno;
    th_self.in_shim++;
    for (int i = 0; i < m->n;) {
        if (m->ent[i].exclusive && ctl(m, EPOLL_CTL_ADD, &m->ent[i]) < 0)
            m->ent[i] = m->ent[--m->n];        /* gone meanwhile: resynced next call */
        else
            i++;
    }
    th_self.in_shim--;
    *ret = r > 0 ? others_ready_now(m, fds, n) : r;
    errno = saved_errno;
    return 1;
}

void th_mirror_rotate(int listener_fd, struct th_listener *l)
{
    struct entry *e;

    if (mine == NULL || mine->pid != th_pid || mine->epfd < 0 ||
        (e = find(mine, listener_fd)) == NULL || !e->exclusive)
        return;
    /* re-adding puts this thread's entry at the tail of the wait queue */
    real_epoll_ctl(mine->epfd, EPOLL_CTL_DEL, listener_fd, NULL);
    if (ctl(mine, EPOLL_CTL_ADD, e) < 0)
        *e = mine->ent[--mine->n];
    else
        TH_COUNT(l, rotations, 1);
}

void th_mirror_forget_fd(int fd)
{
    struct entry *e;

    if (mine == NULL || mine->pid != th_pid || mine->epfd < 0 || (e = find(mine, fd)) == NULL)
        return;
    real_epoll_ctl(mine->epfd, EPOLL_CTL_DEL, fd, NULL);
    *e = mine->ent[--mine->n];
}

void th_mirror_after_fork(void)
{
    /* the inherited instance is the parent's: close our copy, start afresh */
    if (mine && mine->epfd >= 0)
        real_close(mine->epfd);
    if (mine)
        mine->epfd = -1;
}

/*
 * The program hit its fd limit: this thread's instance is closed and no
 * new one is made in this process (poll sets fall back to the lock, as
 * for a set that cannot be mirrored).  True if an fd was given back.
 */
bool th_mirror_give_up(void)
{
    bool closed = mine && mine->pid == th_pid && mine->epfd >= 0;

    atomic_store(&given_up, true);
    if (closed) {
        real_close(mine->epfd);
        mine->epfd = -1;
        mine->n = 0;
    }
    return closed;
}

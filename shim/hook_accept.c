/*
 * accept and accept4: where a wake-up becomes a connection.
 *
 * After the real accept this thread releases the lock it took for the
 * wait (the next waiter starts waiting at once), and, with fifo balance in
 * exclusive or auto mode, moves this process's exclusive wait entry to the
 * tail so the next connection wakes the next idle worker.  In a loop that
 * accepts until EAGAIN (libuv, nginx multi_accept) only the first
 * successful accept of a wake-up does that; and in auto mode a further
 * accept of the same wake-up may be refused with EAGAIN, exactly as an
 * empty queue answers, so that a burst is spread over the workers the
 * kernel woke for it (policy.c says when; counted as "refused").
 * A blocking accept on a blocking listener is already fair and herd-free
 * in the kernel: it is counted, and in a burst may pause first
 * (burst.c).  errno is kept on every path.
 * At the fd limit the library gives its own fds back (gave_fds_back).
 */
#include "thunder.h"

#include <sys/syscall.h>
#include <unistd.h>

#define BLOCKING_CHECKED (1u << 31)   /* in th_listener.logged */
#define BLOCKING_SEEN (1u << 30)      /* and that first accept was blocking */

static uint64_t next_random(void)
{
    static __thread uint64_t state;

    if (state == 0)
        state = (uint64_t)th_now_ns() ^ ((uint64_t)th_gettid() << 32) ^ 0x9e3779b97f4a7c15ULL;
    state ^= state << 13;       /* xorshift64: plenty for a delay */
    state ^= state >> 7;
    state ^= state << 17;
    return state;
}

/* The Solaris hack: a random pause scrambles who reaches accept first. */
static void jitter(void)
{
    uint64_t us = next_random() % ((uint64_t)th_cfg.jitter_us + 1);
    struct timespec ts;
    int saved_errno = errno;

    th_ns_to_timespec((int64_t)us * TH_NS_PER_US, &ts);
    nanosleep(&ts, NULL);       /* a signal cuts it short: fine, accept now */
    errno = saved_errno;
}

/* Does an accept on l block?  Asked once, then kept (listener.c) until
   the program changes O_NONBLOCK (hook_flags.c). */
static bool blocks(int fd, struct th_listener *l)
{
    int known = th_listener_blocking(l);

    if (known < 0) {
        known = th_fd_blocking(fd);
        th_listener_note_blocking(l, known);
    }
    return known == 1;
}

static void before_accept(int fd, struct th_listener *l)
{
    if (th_policy_jitters())
        jitter();
    /* once, and only for a program that accepts without a wait first
       (l->logged holds the strategies already reported for this listener;
       read first, so later accepts do not write it again) */
    if (atomic_load_explicit(&l->logged, memory_order_relaxed) == 0 &&
        atomic_fetch_or(&l->logged, BLOCKING_CHECKED) == 0 && blocks(fd, l)) {
        atomic_fetch_or(&l->logged, BLOCKING_SEEN);
        th_listener_set_strategy(l, TH_STRAT_PASS,
                                 "blocking accept: the kernel already wakes one, in order");
    }
}

/* The real accept; a blocking one is a wait (bursts, burst.c), whose end
   time is left in *ended (0 for any other accept). */
static int real_accept_any(int fd, struct th_listener *l, struct sockaddr *addr,
                           socklen_t *addrlen, int flags, bool is_accept4, int64_t *ended)
{
    bool blocking = atomic_load_explicit(&l->logged, memory_order_relaxed) & BLOCKING_SEEN;
    int64_t start = 0;
    int r, saved_errno;

    *ended = 0;
    if (blocking && !th_burst_accept_begin(l, fd, &start)) {
        errno = EINTR;              /* a handler ran in its pause (burst.c) */
        return -1;
    }
    r = is_accept4 ? real_accept4(fd, addr, addrlen, flags) : real_accept(fd, addr, addrlen);
    saved_errno = errno;
    if (blocking)
        *ended = th_burst_accept_end(l, start, r >= 0);
    errno = saved_errno;
    return r;
}

/* A further accept of this wake-up, left to the other workers? */
static bool refused(int fd, struct th_listener *l)
{
    uint64_t bit = th_listener_bit(l->index);

    th_waiting_done(l);                   /* at its accept */
    if (!(th_self.took & th_self.refusable & bit) ||
        !th_policy_refuses_more(true, th_listener_others_wait(l),
                                th_burst_since_idle(l, th_now_ns())) ||
        blocks(fd, l))
        return false;
    TH_COUNT(l, refused, 1);
    errno = EAGAIN;
    return true;
}

/* After a successful accept: move this thread's entry behind the idle
   waiters now, later, or not at all (policy.c).  now_ns: the accept's time. */
static void rotate_if_due(int fd, struct th_listener *l, bool held, uint32_t gap,
                          int64_t now_ns)
{
    uint64_t bit = th_listener_bit(l->index);
    struct th_rotation_facts f = {
        .slept = th_self.slept, .owed = th_self.owed & bit,
        .program_rotates = (th_self.passed & bit) || th_epreg_rotated_by_program(l),
        .accept_gap = gap,
    };

    /* neither rule applies when the program rotates (nginx, on every
       accept) or the wait passed through: nothing more is read */
    if (!f.program_rotates) {
        f.others_waiting = th_waiting_others(l);
        f.since_idle_ns = th_burst_since_idle(l, now_ns);
        f.accepts = th_listener_accepts(l);
        f.taken = f.accepts -
                  atomic_load_explicit(&l->accepts_at_rotation, memory_order_relaxed);
        f.per_ms = th_listener_rate(l, now_ns);
    }
    if (th_policy_rotates(&f)) {
        atomic_store_explicit(&l->accepts_at_rotation, f.accepts, memory_order_relaxed);
        th_self.rotated |= bit;
        th_self.owed &= ~bit;
        th_mirror_rotate(fd, l);
        th_epreg_rotate(l, held);       /* before the release: see epreg.c */
    } else if (th_policy_owes_rotation(&f)) {
        th_self.owed |= bit;
    }
}

/* ended: the clock read a blocking accept's end took, or 0 */
static void after_accept(int fd, struct th_listener *l, int result, int err, int64_t ended)
{
    uint64_t bit = th_listener_bit(l->index);
    bool woke = th_self.woke & bit, held = th_held_has(l);
    uint32_t gap = UINT32_MAX;
    int64_t now = 0;

    th_self.woke &= ~bit;
    if (result >= 0) {
        /* one clock read: the quiet spells' and the turn's */
        now = ended ? ended : th_now_ns();
        th_self.took |= bit;
        th_self.accepted_ns = now;
        gap = th_accept_gap(l, now, th_self.busy & bit);
        TH_COUNT(l, accepts, 1);
    } else if (err == EAGAIN || err == EWOULDBLOCK) {
        TH_COUNT(l, eagain, 1);
        if (woke)
            TH_COUNT(l, spurious, 1);
    }
    if (result >= 0 && !(th_self.rotated & bit))
        rotate_if_due(fd, l, held, gap, now);
    if (held)
        th_held_release(l);
    errno = err;
}

/* A new fd under a maybe-reused number, and a connected socket: no
   getsockopt will ever be needed to tell it is not a listener. */
static int connected(int result)
{
    if (result >= 0 && th_cfg.mode != TH_MODE_OFF)
        th_fd_mark_connected(result);
    return result;
}

/*
 * The library's own fds (a thread's private epoll instance, its doorbell)
 * count against the program's fd limit.  When an accept fails with EMFILE
 * they are given up for good in this process (waits fall back to the
 * lock's futex) and the accept is tried once more, so the program sees
 * what it would see without the library.
 */
static bool gave_fds_back(int err)
{
    static _Atomic int warned;
    bool closed;

    if (err != EMFILE)
        return false;
    closed = th_mirror_give_up();
    closed = th_doorbell_give_up() || closed;
    if (closed && atomic_exchange(&warned, 1) == 0)
        th_warn("fd limit reached: the library gives up its own fds (private epoll "
                "instance, doorbell); waits use the lock from now on");
    errno = err;
    return closed;
}

TH_EXPORT int accept(int fd, struct sockaddr *addr, socklen_t *addrlen)
{
    struct th_listener *l;
    int64_t ended;
    int r;

    th_resolve();
    if (!th_active() || (l = th_fd_listener(fd)) == NULL)
        return connected(real_accept(fd, addr, addrlen));
    if (refused(fd, l))
        return -1;
    before_accept(fd, l);
    r = connected(real_accept_any(fd, l, addr, addrlen, 0, false, &ended));
    if (r < 0 && gave_fds_back(errno)) {
        r = connected(real_accept(fd, addr, addrlen));
        ended = 0;
    }
    after_accept(fd, l, r, errno, ended);
    return r;
}

TH_EXPORT int accept4(int fd, struct sockaddr *addr, socklen_t *addrlen, int flags)
{
    struct th_listener *l;
    int64_t ended;
    int r;

    th_resolve();
    if (!th_active() || (l = th_fd_listener(fd)) == NULL)
        return connected(real_accept4(fd, addr, addrlen, flags));
    if (refused(fd, l))
        return -1;
    before_accept(fd, l);
    r = connected(real_accept_any(fd, l, addr, addrlen, flags, true, &ended));
    if (r < 0 && gave_fds_back(errno)) {
        r = connected(real_accept4(fd, addr, addrlen, flags));
        ended = 0;
    }
    after_accept(fd, l, r, errno, ended);
    return r;
}

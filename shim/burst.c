/*
 * Spreading a burst: the bookkeeping both exclusive wait paths share
 * (epreg.c for epoll, waitset.c for poll/select); policy.c decides.
 *
 * A wait counts this thread in seg->waiting for each of its listeners
 * (th_burst_begin).  When it returns, the listeners it reported stay
 * counted until this thread's accept; the others are done.  A listener
 * reported at once (the wait did not sleep) that this thread took a
 * connection from in its last wake-up is a re-report; after
 * policy.c's streak of them, while other threads wait on the listener,
 * it is yielded: not counted while it sits out (so two threads never
 * yield to each other), counted again when the wait resumes
 * (th_burst_resume).  After the last wait of the call, th_burst_end: a
 * yielded listener that is still reported at once means nobody counted
 * came for it, so the counts of dead processes are dropped.
 */
#include "thunder.h"

#include <netinet/in.h>
#include <netinet/tcp.h>

#define AT_ONCE_NS (50 * TH_NS_PER_US)    /* returned without sleeping */

/* Connections in a TCP listener's accept queue; -1 when unknown. */
static int queued(int fd)
{
    struct tcp_info info;
    socklen_t len = sizeof(info);
    int saved_errno = errno, r;

    r = getsockopt(fd, IPPROTO_TCP, TCP_INFO, &info, &len);
    errno = saved_errno;
    return r == 0 && len >= offsetof(struct tcp_info, tcpi_unacked) + sizeof(info.tcpi_unacked)
               ? (int)info.tcpi_unacked : -1;
}

/* Does policy.c say listener j sits out, the wait having ended at b->end?
   (The queue costs a system call: it is only asked when the rest says yes.) */
static bool yields(const struct th_burst *b, int j)
{
    int others = th_waiting_others(b->ls[j]);
    int64_t since_idle = th_burst_since_idle(b->ls[j], b->end);

    return th_policy_yields(th_self.streak, since_idle, others, INT32_MAX) &&
           th_policy_yields(th_self.streak, since_idle, others, queued(b->fds[j]));
}

/*
 * When a wait of any thread of this process last rested.  Per process,
 * not per thread: the threads of uWSGI's --threads take turns in the wait
 * (the others sleep on uWSGI's own mutex), so the one that drains a burst
 * may not be the one that rested before it (uWSGI --threads 4, 16
 * workers, rounds of 32: largest share 0.26-0.27 with a per-thread rest,
 * 0.15-0.16 with this one).  The cost: a process with an idle thread
 * spreads while another of its threads is saturated (ex_threads 4x4,
 * closed loop of 8 clients: 1.53x -> 1.18x the throughput without the
 * library, Dec 1).
 */
static _Atomic int64_t rested_at;

/* After a wait (exclusive, lock, or a blocking accept) that began at
   `start`: note a rest (policy.c's bursts).  Returns the time now. */
static int64_t note_rest(int64_t start)
{
    int64_t now = th_now_ns(), at;

    if (now - start >= TH_REST_MS * TH_NS_PER_MS)
        atomic_store_explicit(&rested_at, now, memory_order_relaxed);
    at = atomic_load_explicit(&rested_at, memory_order_relaxed);
    th_self.since_rest = at ? now - at : INT64_MAX;
    return now;
}

/*
 * A burst meets an idle server: this process rested (above) and the
 * listener went TH_QUIET_US without an accept (listener.c), both within
 * policy.c's window.  A process alone cannot tell: the 64 workers of a
 * saturated server each rest 2-3 ms between their connections while the
 * listener takes one every 40 us (8 clients in a closed loop: ex_greedy
 * refused a further accept after every accept, ex_accept paused before
 * one in ten, for 1.09-1.12 wake-ups per connection); the listener alone
 * misses bursts over a steady load (one client 1.2 ms apart: 0.30 of a
 * round of 32 to one worker of ex_greedy, 0.12 with the process's rest).
 */
int64_t th_burst_since_idle(struct th_listener *l, int64_t now)
{
    int64_t quiet = th_listener_since_quiet(l, now);

    return quiet > th_self.since_rest ? quiet : th_self.since_rest;
}

/* ...and the streak: `again`, it re-reported what was just taken, at once.
   Returns the time now. */
static int64_t after_wait(bool again, int64_t start)
{
    int64_t now = note_rest(start);

    th_self.streak = again && now - start < AT_ONCE_NS ? th_self.streak + 1 : 0;
    return now;
}

/*
 * Is this thread a busy worker for every listener of its wait (policy.c)?
 * Said once per listener when it is, and noted for the accepts that follow
 * (th_self.busy: listener.c th_accept_gap).  No clock read: the last accept's
 * time serves (a quiet spell that ended since then only makes it look
 * like a burst, and the wait exclusive).
 */
bool th_burst_busy(struct th_listener *const *ls, int k, uint64_t took_last, bool slept_last)
{
    uint64_t all = 0;

    for (int j = 0; j < k; j++)
        all |= th_listener_bit(ls[j]->index);
    if (k == 0 || !th_policy_stays_busy(slept_last, took_last & all, 0, INT64_MAX))
        return false;
    for (int j = 0; j < k; j++)
        if (!th_policy_stays_busy(slept_last, true, th_waiting_others(ls[j]),
                                  th_burst_since_idle(ls[j], th_self.accepted_ns)))
            return false;
    for (int j = 0; j < k; j++) {
        th_listener_note_busy(ls[j]);
        th_self.busy |= th_listener_bit(ls[j]->index);
    }
    return true;
}

/* A busy worker's wait that began at `start` ended: a rest, if it was one.
   Returns the time now. */
int64_t th_burst_busy_after(int64_t start)
{
    return after_wait(false, start);
}

void th_burst_begin(struct th_burst *b, struct th_listener *const *ls, const int *fds, int k,
                    uint64_t took_last)
{
    b->k = k;
    b->took_last = took_last;
    for (int j = 0; j < k; j++) {
        b->ls[j] = ls[j];
        b->fds[j] = fds[j];
        th_waiting_count(ls[j]);
    }
    b->start = th_now_ns();
}

static bool took_from(const struct th_burst *b, int j)
{
    return b->took_last & th_listener_bit(b->ls[j]->index);
}

uint64_t th_burst_after(struct th_burst *b, uint64_t reported, bool may_yield)
{
    uint64_t again = 0, yield = 0;

    for (int j = 0; may_yield && j < b->k; j++)
        if ((reported & (1ull << j)) && took_from(b, j))
            again |= 1ull << j;
    b->end = after_wait(again, b->start);
    for (int j = 0; j < b->k; j++) {
        uint64_t bit = 1ull << j;
        /* reported: counted until its accept, unless it sits out (the
           count discounts this thread, so asking first changes nothing) */
        if ((reported & bit) && (!(again & bit) || !yields(b, j)))
            continue;
        th_waiting_done(b->ls[j]);
        if (again & bit)
            yield |= bit;
    }
    if (yield) {
        th_self.streak = 0;
        for (int j = 0; j < b->k; j++)
            if (yield & (1ull << j))
                th_count_yield(b->ls[j]);
    }
    return yield;
}

void th_burst_resume(struct th_burst *b)
{
    for (int j = 0; j < b->k; j++)
        th_waiting_count(b->ls[j]);
    b->start = th_now_ns();
}

void th_burst_end(struct th_burst *b, uint64_t reported, uint64_t yielded)
{
    bool at_once = note_rest(b->start) - b->start < AT_ONCE_NS;

    for (int j = 0; j < b->k; j++) {
        uint64_t bit = 1ull << j;
        if (!(reported & bit)) {
            th_waiting_done(b->ls[j]);
            continue;
        }
        if ((yielded & bit) && at_once && b->ls[j]->seg)
            th_seg_drop_dead_waiting(b->ls[j]->seg);
    }
}

/*
 * The lock waits (lockwait.c) have no exclusive entry to yield; there a
 * thread drains a burst through its unlocked looks at a busy lock, and
 * policy.c may tell it to queue for the lock instead.  The streak is the
 * same: lock waits in a row that returned at once a listener this thread
 * had just taken a connection from.
 */
/* Would policy.c have listener j looked past with `waiting` in its queue? */
static bool serves_unlocked(struct th_listener *l, uint64_t took_last, bool threaded,
                            int waiting)
{
    struct th_seg *seg = th_listener_seg(l);
    bool idle;

    if (seg == NULL || !(took_last & th_listener_bit(l->index)))
        return true;
    /* queued on the lock, or in an exclusive wait (a mixed group) */
    idle = !th_lock_queue_short(seg) || th_waiting_others(l) > 0;
    return th_policy_serves_backlog_unlocked(th_self.streak, threaded,
                                             th_burst_since_idle(l, th_now_ns()), idle, waiting);
}

/*
 * The listen queue's length decides last and costs a system call, so it
 * is asked only after the look found the listener ready: a steady load's
 * look finds nothing and asks nothing.
 */
bool th_burst_looks_unlocked(struct th_listener *const *ls, int k, uint64_t took_last,
                             bool threaded, bool *then_check)
{
    *then_check = false;
    if (!th_policy_serves_backlog_unlocked(0, threaded, INT64_MAX, false, 0))
        return false;                   /* lock waits never look in this mode */
    for (int j = 0; j < k; j++)
        *then_check = *then_check || !serves_unlocked(ls[j], took_last, threaded, INT32_MAX);
    return true;
}

bool th_burst_queues_after_look(struct th_listener *const *ls, const int *fds, int k,
                                uint64_t took_last, bool threaded)
{
    for (int j = 0; j < k; j++)
        if (!serves_unlocked(ls[j], took_last, threaded, INT32_MAX) &&
            !serves_unlocked(ls[j], took_last, threaded, queued(fds[j])))
            return true;
    return false;
}

/* The clock and the listen queue are asked only when the facts at hand
   leave the answer open: a saturated holder releases once per connection. */
int th_burst_lookers(struct th_listener *l, int fd, bool slept, int64_t wait_start)
{
    struct th_seg *seg = th_listener_seg(l);
    int threads = seg ? (int)atomic_load_explicit(&seg->nqueued, memory_order_relaxed) : 0;
    int64_t waited;

    if (fd < 0 || th_policy_lookers(slept, INT64_MAX, INT32_MAX, threads) == 0)
        return 0;
    waited = th_now_ns() - wait_start;
    if (th_policy_lookers(slept, waited, INT32_MAX, threads) == 0)
        return 0;
    return th_policy_lookers(slept, waited, queued(fd), threads);
}

void th_burst_lock_after(struct th_listener *const *ls, int k, uint64_t took_last,
                         uint64_t reported, int64_t start)
{
    bool again = false;

    for (int j = 0; j < k; j++)
        again = again || ((reported & (1ull << j)) && (took_last & th_listener_bit(ls[j]->index)));
    after_wait(again, start);
}

/*
 * A blocking accept (no wait before it: the classic prefork loop) is the
 * wait: counted in seg->waiting while it blocks.  The kernel wakes one
 * blocked accept per connection, in order, but a worker that comes back
 * from its last connection takes the next at once while the workers
 * woken for it wait for a CPU.  When policy.c says so (it came back at
 * once, others are in accept, a connection is queued, it did not pause
 * just before) it pauses first,
 * TH_YIELD_MS with the program's signals held (signals.c): a handler
 * without SA_RESTART that ran meanwhile makes the accept fail with EINTR
 * (returns false), as the kernel's blocking accept would; otherwise it
 * accepts as before, queued connection or not.  A busy worker's accept
 * (back at once, no burst on) is not counted and asks nothing.
 */
bool th_burst_accept_begin(struct th_listener *l, int fd, int64_t *start)
{
    uint64_t bit = th_listener_bit(l->index);
    int others;
    int64_t now, since, since_idle;

    /* back at once with the last one (the streak): a busy worker's accept,
       passed through as its waits are (policy.c), no rotation after it */
    th_self.busy &= ~bit;
    th_self.passed &= ~bit;
    if (th_burst_busy(&l, 1, th_self.streak ? bit : 0, th_self.streak == 0)) {
        th_self.passed |= bit;
        *start = th_now_ns();
        return true;
    }
    others = th_waiting_others(l);
    now = th_now_ns();
    since = now - th_self.paused_ns;
    since_idle = th_burst_since_idle(l, now);

    if (th_policy_pauses_accept(th_self.streak, since_idle, others, INT32_MAX, since) &&
        th_policy_pauses_accept(th_self.streak, since_idle, others, queued(fd), since)) {
        th_count_yield(l);
        th_self.paused_ns = now;
        if (th_sig_pause(TH_YIELD_MS))
            return false;
        now = th_now_ns();
    }
    th_waiting_count(l);
    *start = now;
    return true;
}

int64_t th_burst_accept_end(struct th_listener *l, int64_t start, bool took)
{
    th_waiting_done(l);
    return after_wait(took, start);
}

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
 *     ...the program's own,
 *     which it rotates (nginx)   real call  real call        lock  real call
 *     ...or this thread alone
 *     waits on each listener     real call  real call        lock  real call
 *   epoll, shared instance       lock       real call        lock  real call
 *   epoll, otherwise             lock       exclusive where  lock  real call
 *                                           the entry is
 *
 * "exclusive" means one wake-up per connection through EPOLLEXCLUSIVE, and
 * (with fifo balance) the entry moved to the tail after each accept so the
 * next connection goes to the next idle waiter.  A blocking accept without
 * a wait is already fair in the kernel and is left alone (hook_accept.c),
 * but for a pause in a burst (th_policy_pauses_accept, burst.c).
 *
 * Under the lock, a wait that finds a lock busy first looks at its set
 * without it (lockwait.c): what is ready is served at once.
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
 *
 * A thread that waits on its listeners alone (nobody else counted in a
 * wait on them, nobody else accepting: a program that lets one worker at
 * a time wait, as nginx's accept_mutex does) has nobody to wake instead
 * and nobody to spread to: its waits pass through, as the program's own
 * rotated entries do, without the bookkeeping of bursts and turns (nginx
 * accept_mutex on, 4 workers, sequential: 2,196-2,293 -> 1,080-1,579
 * instructions per connection more than without the library, CPU per
 * connection 1.046x -> 1.023x).  The first wait of another thread on the
 * listener, or another's accept from it, ends it (epmemo.c).
 */
static struct th_plan epoll_plan(enum th_mode mode, const struct th_wait_facts *f)
{
    static const char *const rotating =
        "private epoll instance: EPOLLEXCLUSIVE with rotation after accept";
    static const char *const programs_own =
        "the program's own EPOLLEXCLUSIVE, rotated by the program: passed through";
    static const char *const alone =
        "nobody else waits on this listener (the program lets one worker wait at a time): "
        "passed through";
    bool private = !f->shared && !f->threaded;
    bool program_balances = private && f->program_balanced;
    bool waits_alone = private && f->all_exclusive && f->alone;

    switch (mode) {
    case TH_MODE_AUTO:
        if (program_balances)
            return plan(TH_STRAT_PASS, programs_own);
        if (waits_alone)
            return plan(TH_STRAT_ALONE, alone);
        if (private && f->all_exclusive)
            return plan(TH_STRAT_EXCLUSIVE, rotating);
        return epoll_lock_plan(f);
    case TH_MODE_LOCK:
        return epoll_lock_plan(f);
    case TH_MODE_EXCLUSIVE:
        if (program_balances)
            return plan(TH_STRAT_PASS, programs_own);
        if (waits_alone)
            return plan(TH_STRAT_ALONE, alone);
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

/*
 * What a listening socket never reports while it listens (the kernel's
 * poll of one says EPOLLIN | EPOLLRDNORM when a connection is queued,
 * nothing else): asked for, these are left out of an exclusive entry,
 * which the kernel would refuse with them.  nginx asks EPOLLRDHUP of its
 * listener when accept_mutex is on, select's exceptfds asks POLLPRI.
 * (A listener shut down for reading reports EPOLLRDHUP, and with it
 * EPOLLIN and EPOLLHUP, which still wake the wait.)
 */
#define LISTENER_NEVER (EPOLLRDHUP | EPOLLPRI)

bool th_exclusive_allows(uint32_t epoll_events)
{
    return (epoll_events & ~(uint32_t)(EXCLUSIVE_OK | LISTENER_NEVER)) == 0;
}

uint32_t th_exclusive_events(uint32_t epoll_events)
{
    return (epoll_events & ~(uint32_t)LISTENER_NEVER) | EPOLLEXCLUSIVE;
}

/* The modes that use the exclusive mechanism (injection and rotation). */
static bool exclusive_modes(void)
{
    return th_cfg.mode == TH_MODE_EXCLUSIVE || th_cfg.mode == TH_MODE_AUTO;
}

bool th_policy_injects_exclusive(bool instance_is_ours, uint32_t epoll_events)
{
    return instance_is_ours && th_exclusive_allows(epoll_events) && exclusive_modes();
}

/*
 * A burst meets an idle server: the rules below that spread one (a
 * refused accept, a yield, a pause; and a rotation's turn, which stays as
 * short as before) apply only within BURST_MS of a wait of this process
 * that slept TH_REST_MS or more and of an accept on the listener that
 * came TH_QUIET_US or more after the one before it (burst.c
 * th_burst_since_idle).  On a saturated server every connection left to
 * another worker only costs a round trip through a wait (measured, 4
 * workers, 8 clients in a closed loop: a refusal after every accept of
 * ex_evloop and ex_greedy, about 425 yields a second per worker of
 * ex_epoll_excl, for 0.75-0.93x the throughput of the server without the
 * library); with many workers each of them rests between its
 * connections, and only the listener shows the load.
 */
#define BURST_MS 20

static bool in_burst(int64_t since_idle_ns)
{
    return since_idle_ns < BURST_MS * TH_NS_PER_MS;
}

/* Spreading is auto mode's, with fifo balance (lifo keeps the hot worker busy). */
static bool spreads_bursts(void)
{
    return th_cfg.mode == TH_MODE_AUTO && th_cfg.lock.balance == TH_BALANCE_FIFO;
}

/*
 * A worker a steady load keeps busy: its last wait did not sleep (a
 * connection was already queued when it came back), it took one from
 * the listeners of that wait, no other thread is in a wait on them
 * (every worker is busy), and no burst is on.  Then its next
 * exclusive wait is passed through: the kernel's exclusive wake-up
 * stays, but the wait is not counted in seg->waiting, the burst rules
 * are not asked, and no rotation follows it.  There is nobody idle to
 * hand the next connection to, and the rotation only brought a cold
 * worker to the front at the price of two system calls (ex_epoll_excl,
 * 4 workers, 8 clients in a closed loop: 72% of the waits returned at
 * once, and one accept in 8.6 rotated).  The first wait that sleeps
 * (the load dropped, or a quiet spell before a burst) ends it: the next
 * one is exclusive again, with every rule.  A connection already queued
 * while other workers wait is one the kernel woke one of them for, and
 * this worker came back first: that is no saturation, and it must still
 * go behind them (256 workers, 10 sequential connections each: Jain
 * 0.98-0.99 in most runs without this condition, 1.000 with it).
 */
bool th_policy_stays_busy(bool slept_last, bool took_last, int others_waiting,
                          int64_t since_idle_ns)
{
    return !slept_last && took_last && others_waiting == 0 && exclusive_modes() &&
           !in_burst(since_idle_ns);
}

struct th_plan th_policy_busy_plan(void)
{
    return (struct th_plan){ TH_STRAT_PASS,
                             "a steady load keeps the workers busy: their waits pass "
                             "through while it lasts" };
}

/*
 * The rotation moves this waiter's entry behind the others that sleep, so
 * the next connection wakes the next idle worker.  It buys nothing, and
 * its two system calls are skipped:
 *   - after a wait that did not sleep: it found a connection already
 *     queued (a saturated server: nobody idle to spread to, and nobody
 *     was woken for it), and its place in the queue is unchanged (but
 *     for a rotation owed by the turn's first take, below);
 *   - when the wait passed the listener through (this thread waits on it
 *     alone, epoll_plan above): there is nobody to go behind;
 *   - when the program rotates its own entry (nginx re-adds its listener
 *     every 16 accepts of a worker, epreg.c): it keeps its own order,
 *     which already spreads a steady load evenly, and one rotation after
 *     every turn of two more only adds its two calls and hands each
 *     connection to a cold worker (nginx, 4 workers, sequential: 1.06-1.2x
 *     the CPU per connection).  What that gives up: nginx's bursts stay
 *     as uneven as without the library (16 workers, rounds of 32: 0.40 of
 *     a round to one worker; 0.13 with the rotation), which an event loop
 *     that serves thousands of connections per worker does not feel;
 *   - when no other thread is in a wait on the listener at this accept
 *     (a program that lets one worker wait at a time, as uWSGI's
 *     --thunder-lock does, or every other worker busy): there is nobody
 *     to go behind;
 *   - when at least as many accepts by others came since this thread's
 *     previous one as other threads wait now: every idle worker may have
 *     had its turn, so this one is not ahead of them.  On a light load the
 *     waiters then take two connections each in turn (one rotation per
 *     two accepts); under a heavy one the busy workers fall out of the
 *     kernel's choice by themselves and the rotations mostly stop
 *     (4 workers, 8 clients in a closed loop: 26% of accepts rotated
 *     before this rule, about 20% with it and the owed rotation below).
 */
static bool rotation_applies(int others_waiting)
{
    return others_waiting > 0 && th_cfg.lock.balance == TH_BALANCE_FIFO && exclusive_modes();
}

/*
 * How many connections a worker takes in a row before it rotates: a turn
 * of two (the rules above) while it has taken fewer than 32, then up to
 * 1/16 of what it has taken so far, at most BLOCK_MAX: the totals stay
 * within a few percent of each other, and fewer workers come to the front
 * cold.  A rotation brings a worker whose caches are cold to the front of
 * the queue: two system calls (1.55 us) and the misses (64 workers, 8
 * clients in a closed loop: 0.85x the throughput without the library
 * with turns of two, 0.92x with these, 0.98x with no rotation; sequential
 * Jain 0.9996 at 16 workers, 2000 connections).  In a burst the turn
 * stays as before, so the round is spread as before (with these turns
 * there: 0.13-0.14 of a round of 32 to one worker instead of 0.12).
 */
#define BLOCK_MAX 8

/*
 * On a listener that takes connections faster than that, the turn's cap
 * rises from BLOCK_MAX to what the listener takes in TURN_MS, at most
 * TURN_MAX (still 1/16 of what the worker has taken at most, so the
 * totals stay as close): the front changes about once a millisecond,
 * not once every eight connections.  Where a CPU is free the next idle
 * worker still gets the next turn; where none is (8 clients in a closed
 * loop with 16 or 64 workers on 2 CPUs), each worker that comes to the
 * front cold costs the misses for its whole turn.  Sequential load at 8
 * connections a millisecond or fewer keeps the turns above (sequential,
 * 2000 connections: Jain 0.9977 at 16 workers, 0.9990 at 64).
 * ex_epoll_excl, 8 clients, against the build before, 15 pairs: 64
 * workers 1.018x the throughput (1.011-1.039), one accept in 16 rotated
 * instead of one in 9; 16 workers 1.004x (0.968-1.027).
 */
#define TURN_MS 1
#define TURN_MAX 64

static uint64_t block(const struct th_rotation_facts *f)
{
    uint64_t b = f->accepts / 16, most = (uint64_t)f->per_ms * TURN_MS;

    if (in_burst(f->since_idle_ns))
        return 1;
    if (most > TURN_MAX)
        most = TURN_MAX;
    if (most < BLOCK_MAX)
        most = BLOCK_MAX;
    b = b > most ? most : b;
    return b < 1 ? 1 : b;
}

bool th_policy_rotates(const struct th_rotation_facts *f)
{
    return (f->slept || f->owed) && !f->program_rotates &&
           f->accept_gap < (uint32_t)f->others_waiting && f->taken >= block(f) &&
           rotation_applies(f->others_waiting);
}

/*
 * The first accept of a worker's turn (it slept, every idle worker may
 * have had a turn since its last one) does not rotate: the worker stays
 * first and takes the next connection too.  That second take must rotate
 * even if its wait did not sleep: with many idle workers the first one
 * keeps finding the next connection already on its ready list (the
 * kernel puts it there while passing over the busy first entry to wake
 * the next), and without the rotation it kept its place (256 workers,
 * 10 connections each: Jain 0.97; with it 0.999).
 */
bool th_policy_owes_rotation(const struct th_rotation_facts *f)
{
    return f->slept && !f->program_rotates && f->accept_gap >= (uint32_t)f->others_waiting &&
           rotation_applies(f->others_waiting);
}

/*
 * Bursts.  An event loop that accepts until EAGAIN (asyncio, tornado,
 * libuv, nginx multi_accept) lets the first worker that runs drain a
 * burst while the workers the kernel woke for the other connections find
 * the queue empty.  So in auto mode, after the first connection of a
 * wake-up, a further accept of the same wake-up answers EAGAIN, as an
 * empty queue would, and the connection stays for the others; but only
 *   - when that wake-up came from an exclusive or lock wait on a
 *     level-triggered entry: the thread's next wait reports a connection
 *     still queued at once (under the lock: as the holder, in its look,
 *     or through the holder's wait while it queues), so it is never
 *     stranded (edge-triggered and one-shot entries and pass-through
 *     waits are never refused), and
 *   - when other processes wait on the listener: alone, there is nobody
 *     to leave it to, and
 *   - in a burst (in_burst, above).
 * The worker serves what it took and comes back for the next one: a
 * refused connection is accepted no later than the refusing worker would
 * have served it had it taken it (plus one wait call), or earlier by
 * another worker; under the lock, no later than the lock's own order
 * serves it.  With fifo balance only (lifo keeps the hot worker busy).
 */
bool th_policy_refuses_more(bool reported_again, bool others_wait, int64_t since_idle_ns)
{
    return spreads_bursts() && reported_again && others_wait && in_burst(since_idle_ns);
}

/*
 * The same for loops that accept one connection per wake-up and come
 * straight back: a level-triggered entry reports a listener whose queue
 * is not empty at once, and the worker that just served one takes the
 * next while the workers the kernel woke for it wait for a CPU.  So when
 * a worker's waits return the listener at once (without sleeping) after
 * an accept YIELD_STREAK times in a row, while other threads are in a
 * wait on it (asleep, or woken and not yet at their accept), the
 * listener is left out of its next wait for up to TH_YIELD_MS (the
 * program's other fds are still served), then put back at the tail of
 * the queue.  A yielding worker does not count as waiting, so two never
 * yield to each other.  Bound: each yield delays a connection left in
 * the queue by at most TH_YIELD_MS; the yielding worker takes it itself
 * when it comes back.  Waits that slept, and servers where no other
 * thread waits (all busy), never yield.  A saturated server is not a
 * burst: a returning worker there often finds a connection queued that a
 * sleeper was woken for, and handing it to that sleeper (still waiting
 * for a CPU) instead costs latency and throughput.  So a yield needs the
 * streak and at least YIELD_QUEUED connections in the listen queue
 * (TCP_INFO; a listener where it is unknown never yields), and a burst
 * (in_burst: with it, ex_epoll_excl's saturated workers yield a few
 * times a second, and bursts spread as before).
 */
#define YIELD_STREAK 2
#define YIELD_QUEUED 2

bool th_policy_yields(unsigned streak, int64_t since_idle_ns, int others_waiting, int queued)
{
    return spreads_bursts() && streak >= YIELD_STREAK && in_burst(since_idle_ns) &&
           others_waiting > 0 && queued >= YIELD_QUEUED;
}

/*
 * A blocking accept (no wait before it: the classic prefork loop) cannot
 * leave the listener out; it pauses before it accepts, for TH_YIELD_MS
 * (burst.c), with the program's signals held and delivered at the end: a
 * handler without SA_RESTART makes the accept fail with EINTR, as it
 * would have in the kernel, so no signal is hidden.  The kernel wakes one
 * blocked accept per connection, but a burst larger than the sleepers
 * leaves connections nobody is woken for, and a worker back from its
 * last one takes them at once while those woken wait for a CPU.  So it
 * pauses at its first accept back at once since one that slept (streak
 * 1), in a burst (in_burst: a saturated ex_accept paused about 94 times a
 * second per worker without it), while others are in accept and a
 * connection is queued, and at most
 * once in PAUSE_GAP_MS: a loaded server's workers come back at once all
 * the time, and pausing each time cost it (ex_accept 4 workers, closed
 * loop of 8 clients: 0.94x -> 0.81-0.84x without the shim; with the gap
 * 1.07x).  Bound: a connection waits at most TH_YIELD_MS more, and the
 * pausing worker loses at most TH_YIELD_MS in PAUSE_GAP_MS.
 * Measured (Dec 1, 16 workers, 200 rounds of 32): sched_yield after
 * YIELD_STREAK, as before, 0.155-0.172 largest share per round; the pause
 * 0.12; with the gap 0.14.
 */
#define PAUSE_GAP_MS 10

bool th_policy_pauses_accept(unsigned streak, int64_t since_idle_ns, int others_waiting,
                             int queued, int64_t since_pause_ns)
{
    return spreads_bursts() && streak == 1 && in_burst(since_idle_ns) && others_waiting > 0 &&
           queued >= 1 && since_pause_ns >= PAUSE_GAP_MS * TH_NS_PER_MS;
}

/*
 * A lock wait that finds the lock busy looks first (the real wait with
 * timeout 0) and returns what is ready, unlocked.  An idle server finds
 * nothing there and queues as before, so the order and the one wake-up
 * per connection hold; a saturated one finds the listener's backlog, and
 * with every worker busy, spreading buys nothing and serialising the
 * accepts behind one holder only costs (measured: 0.70x the throughput
 * of the same server without the shim).
 * A burst is not that: the thread that runs first would drain it through
 * its looks while the idle workers queued on the lock wait for a CPU
 * (measured: one worker took 0.85-0.95 of every round of 32 at 16
 * workers).  So in auto mode, after YIELD_STREAK looks in a row that
 * found a listener it had just taken a connection from, with idle
 * workers (at least two queued on its lock, or any in an exclusive wait
 * on the listener: not a saturated server) and YIELD_QUEUED connections
 * still in the listen queue, the
 * thread does not look: it queues for the lock like any lock wait, and
 * the holder takes the connection (bound: as in lock mode, the holder
 * the lock was handed to serves it first).
 * An instance several threads of one process wait on (the wait facts'
 * threaded) needs no streak: each of its threads starts its own, so a
 * process of 4 threads still took 0.25-0.28 of a round of 32 at 16
 * workers through their looks (a streak per process instead changed
 * nothing: 0.27).  There, a thread that just took a connection queues at
 * once while idle workers queue and YIELD_QUEUED connections wait: 0.12-
 * 0.13.  Saturated, that cost throughput (its idle threads queued
 * instead of looking: ex_threads 1.2-1.5x -> 1.0-1.2x the throughput
 * without the shim at 4 processes) until the rule was kept to bursts
 * (in_burst, as the others): 1.58x (Dec 1).  A streak of 1 leaves 0.20
 * of a round, YIELD_QUEUED 4 0.165.  Not
 * for every lock wait: never looking while idle workers queue costs the
 * shared instance of single-threaded processes more (ex_epoll_shared 16:
 * 1.14x -> 0.84x).
 */
static bool lock_waits_look(void)
{
    return th_cfg.mode == TH_MODE_LOCK || th_cfg.mode == TH_MODE_AUTO;
}

bool th_policy_serves_backlog_unlocked(unsigned streak, bool threaded, int64_t since_idle_ns,
                                       bool idle_queued, int queued)
{
    unsigned needed = threaded ? 0 : YIELD_STREAK;

    if (!lock_waits_look())
        return false;
    return !(spreads_bursts() && in_burst(since_idle_ns) && streak >= needed && idle_queued &&
             queued >= YIELD_QUEUED);
}

/*
 * After the holder's wait, is a lock kept for the accept that follows?
 * Only when the wait reported its listener, and, where lock waits look
 * past a busy lock, only when the wait slept for it.  The same principle
 * as the look: a holder whose wait did not sleep found the backlog, so
 * it serves it unlocked and hands the lock to the head of the queue at
 * once rather than at its accept.  Each holder that finds a backlog
 * wakes the next, so a saturated server's queue empties into workers
 * serving the backlog, while an idle one's holder sleeps in its wait and
 * keeps the lock (one wake-up per connection).
 */
bool th_policy_keeps_lock(bool reported, bool slept)
{
    return reported && (slept || !lock_waits_look());
}

/*
 * A waiter whose last wait found a backlog is part of a saturated server
 * whose queue may have emptied for an instant: finding the lock busy, it
 * sleeps in the real wait, unlocked, for up to TH_BUSY_SLEEP_MS before it
 * queues (a wait that returns at once what is ready: no look first,
 * lockwait.c).  The next connection is then taken
 * by whoever runs first, as without the library, instead of going
 * through the queue's hand-off (measured: queued waits cost the shared
 * epoll instance about 10% of its saturated throughput).  Bounded: only
 * right after a backlog, so an idle server's waiters queue as before
 * (one wake-up per connection), and for a moment only.  5 ms, not 1: a
 * worker of a closed loop of 8 clients over 4 workers often waits longer
 * than 1 ms for its next connection, and each such wait queued it (4
 * workers, lock mode, saturated, median of 5 interleaved: ex_greedy
 * 0.91x -> 0.96x, ex_poll 0.94x -> 0.96x the throughput without the
 * library; measured unchanged: the lock styles' bursts at 16 and 64
 * workers, and sequential wake-ups, whose waits never find a backlog).
 */
bool th_policy_sleeps_unlocked(bool found_backlog)
{
    return found_backlog && lock_waits_look();
}

/*
 * The lock hands a burst on one thread at a time: each grantee wakes,
 * finds the listener ready, passes the lock on and accepts, so 64 idle
 * workers take a burst of 128 in a chain of 64 wake-ups, one after the
 * other (64 workers, 5 ms handler: rounds took 1.6-1.8x the handler's
 * limit, the kernel's own exclusive wake-ups 1.42-1.50x).  So a holder
 * that was queued idle (its lock wait lasted TH_REST_MS or more) and then
 * found the listener ready at once (a backlog: not a saturated server's
 * holder, which never idles in the queue, nor a sequential one's, which
 * finds nothing queued) asks the listen queue's length, and when it is 3
 * or more also wakes up to LOOKERS_MAX of the longest-queued threads
 * (one per connection beyond the grantee's and its own): each leaves the
 * queue, looks without the lock, takes one connection (the refusal rule
 * keeps it to one) and queues again; one that finds nothing queues again
 * at the tail.  Each next grantee that finds a backlog does the same, so
 * the chain runs LOOKERS_MAX + 1 wide.
 *
 * Measured (Dec 2, 50 rounds of 2N, 64 workers; ex_threads 64 x 4
 * threads and ex_epoll_shared, round time over the limit with a 5 ms
 * handler, largest share of a round with none): without the fan-out
 * 1.59-1.78x and 1.63-1.71x, shares 0.030 and 0.031; with all the
 * connections' worth of lookers at once 1.32-1.35x and 1.56-1.59x, but
 * shares 0.033 and 0.056 (Jain 0.983: the woken threads run in the
 * scheduler's order, and those that run first come back first for
 * more); with 4 at a time 1.34-1.35x and 1.57-1.59x, shares 0.041 and
 * 0.043-0.050 (Jain >= 0.99); with 12, 1.28-1.31x, 1.56-1.58x, shares
 * 0.050-0.053 for the shared instance.  Queues shorter than
 * LOOKERS_MIN_QUEUED (16 single-threaded workers) hand on one at a time
 * as before: there the chain is short, and emptying the queue made
 * returning workers, which read it to know whether idle workers wait,
 * drain the burst themselves (ex_epoll_shared, 16 workers: 0.11 -> 0.16-
 * 0.19 of a round).  With fifo balance in auto mode only, as the other
 * burst rules.
 */
#define LOOKERS_LEAVE_QUEUED 2
#define LOOKERS_MIN_QUEUED 24
#define LOOKERS_MAX 4
_Static_assert(LOOKERS_MAX <= TH_MAX_LOOKERS, "lock.c picks at most TH_MAX_LOOKERS");

int th_policy_lookers(bool slept, int64_t waited_ns, int conns_queued, int threads_queued)
{
    int n = conns_queued - 2;             /* the grantee takes one, this thread one */
    int spare = threads_queued - 1 - LOOKERS_LEAVE_QUEUED;

    if (!spreads_bursts() || slept || waited_ns < TH_REST_MS * TH_NS_PER_MS || n < 1 ||
        spare < 1 || threads_queued < LOOKERS_MIN_QUEUED)
        return 0;
    n = n < spare ? n : spare;
    return n < LOOKERS_MAX ? n : LOOKERS_MAX;
}

bool th_policy_jitters(void)
{
    return th_cfg.mode == TH_MODE_JITTER;
}

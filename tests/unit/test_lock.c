/*
 * The FIFO hand-off accept lock (lock.c), driven directly: real segments,
 * real contending processes.
 *
 * Arrival order is made exact by forking the contenders one at a time and
 * waiting until each one's waiter slot is QUEUED in the segment before the
 * next is forked.  Each contender reports, through a pipe, when it got the
 * lock; the test reads the order and the times.  Time bounds are wide:
 * these machines are shared and noisy.
 */
#include "seghelp.h"

#include <poll.h>
#include <pthread.h>
#include <sys/time.h>

#define NS_PER_MS 1000000LL
#define CONTENDERS 10
#define QUEUE_WAIT_MS 5000       /* how long a child may take to queue */
#define RECOVERY_BOUND_MS 2000.0 /* dead holder / dead waiter: lock moves on */

/* What a contender sends when it obtains the lock. */
struct report {
    int index;
    int result;                  /* enum th_lock_result */
    int64_t at_ns;               /* CLOCK_MONOTONIC: comparable across processes */
};

static struct th_seg *seg;
static uint64_t seg_inode;
/* the lock's parameters, as the library passes them from its configuration */
static struct th_lock_params params;

static struct th_seg *lock_setup(void)
{
    params = (struct th_lock_params){ .balance = TH_BALANCE_FIFO, .check_ms = 25,
                                      .hold_ms = 100 };
    th_log_set_level(TH_LOG_WARN);
    seg_inode = fake_inode(0);
    seg = attach_claimed(seg_inode);
    return seg;
}

static int64_t in_ms(int ms)
{
    return th_now_ns() + ms * NS_PER_MS;
}

static enum th_lock_result acquire_until(int64_t deadline, const sigset_t *mask,
                                         uint64_t *gen)
{
    struct th_lock_wait w = { .params = &params, .deadline = deadline, .sigmask = mask };
    int64_t waited;

    return th_lock_acquire(seg, &w, gen, &waited);
}

static enum th_lock_result try_lock(uint64_t *gen)
{
    struct th_lock_wait w = { .params = &params, .deadline = TH_FOREVER, .try_only = true };
    int64_t waited;

    return th_lock_acquire(seg, &w, gen, &waited);
}

/* Does pid (any of its threads) have a slot in the queue? */
static bool queued(pid_t pid)
{
    for (int i = 0; i < TH_MAX_WAITERS; i++)
        if (atomic_load(&seg->waiters[i].state) == TH_W_QUEUED && seg->waiters[i].pid == pid)
            return true;
    return false;
}

static void wait_queued(pid_t pid)
{
    double until = tap_now_ms() + QUEUE_WAIT_MS;

    while (!queued(pid)) {
        REQUIRE(tap_now_ms() < until);
        usleep(500);
    }
}

/* No slot left behind by pid after it timed out or was interrupted. */
static bool has_slot(pid_t pid)
{
    for (int i = 0; i < TH_MAX_WAITERS; i++)
        if (atomic_load(&seg->waiters[i].state) != TH_W_FREE && seg->waiters[i].pid == pid)
            return true;
    return false;
}

static bool read_report(int fd, struct report *r, int timeout_ms)
{
    struct pollfd p = { .fd = fd, .events = POLLIN };

    return poll(&p, 1, timeout_ms) == 1 && read(fd, r, sizeof(*r)) == (ssize_t)sizeof(*r);
}

/* ---- contender processes ----------------------------------------------- */

/*
 * A contender: acquire (until deadline_ms from now), report, keep the lock
 * hold_us, release, exit.
 */
static pid_t spawn_waiter(int index, int report_fd, int deadline_ms, int hold_us)
{
    pid_t pid = fork();

    REQUIRE(pid >= 0);
    if (pid == 0) {
        uint64_t gen;
        struct report r = { .index = index };
        r.result = acquire_until(in_ms(deadline_ms), NULL, &gen);
        r.at_ns = th_now_ns();
        if (write(report_fd, &r, sizeof(r)) != (ssize_t)sizeof(r))
            _exit(3);
        if (r.result == TH_LOCK_OK) {
            usleep((useconds_t)hold_us);
            th_lock_release_and_wake(seg, &params, gen);
        }
        _exit(0);
    }
    return pid;
}

struct holder {
    pid_t pid;
    int control;                 /* write a byte: release (with its gen) and exit */
};

/* A process that takes the lock and keeps it until told; in_wait as marked. */
static struct holder spawn_holder(bool in_wait)
{
    int ready[2], control[2];
    struct holder h;
    char c;

    REQUIRE(pipe(ready) == 0 && pipe(control) == 0);
    h.pid = fork();
    REQUIRE(h.pid >= 0);
    if (h.pid == 0) {
        uint64_t gen;
        if (acquire_until(in_ms(5000), NULL, &gen) != TH_LOCK_OK)
            _exit(2);
        if (in_wait)
            th_lock_mark_waiting(seg, gen, true);
        if (write(ready[1], "h", 1) != 1 || read(control[0], &c, 1) != 1)
            _exit(3);
        th_lock_release_and_wake(seg, &params, gen);
        _exit(0);
    }
    close(ready[1]);
    close(control[0]);
    REQUIRE(read(ready[0], &c, 1) == 1);
    close(ready[0]);
    h.control = control[1];
    return h;
}

static void holder_release(struct holder *h)
{
    int status;

    REQUIRE(write(h->control, "r", 1) == 1);
    close(h->control);
    waitpid(h->pid, &status, 0);
    EXPECT(WIFEXITED(status) && WEXITSTATUS(status) == 0);
}

static void reap(pid_t pid)
{
    int status;

    REQUIRE(waitpid(pid, &status, 0) == pid);
    EXPECT(WIFEXITED(status) && WEXITSTATUS(status) == 0);
}

static void expect_idle_lock(void)
{
    EXPECT_EQ(seg->holder_pid, 0);
    EXPECT_EQ(seg->nqueued, 0);
    for (int i = 0; i < TH_MAX_WAITERS; i++)
        EXPECT_EQ(atomic_load(&seg->waiters[i].state), TH_W_FREE);
}

/* ---- order ------------------------------------------------------------- */

/*
 * We hold the lock; CONTENDERS processes queue in a known order; on our
 * release they must get it one after the other in exactly that order
 * (fifo) or its reverse (lifo).
 */
static void run_order(enum th_balance balance)
{
    int fds[2], order[CONTENDERS];
    pid_t pids[CONTENDERS];
    uint64_t gen;
    bool exact = true;

    lock_setup();
    params.balance = balance;
    params.hold_ms = 60000;      /* forking all of them takes a while */
    REQUIRE(pipe(fds) == 0);
    REQUIRE(try_lock(&gen) == TH_LOCK_OK);
    for (int i = 0; i < CONTENDERS; i++) {
        pids[i] = spawn_waiter(i, fds[1], 20000, 2000);
        wait_queued(pids[i]);
    }
    EXPECT_EQ(seg->nqueued, CONTENDERS);
    th_lock_release_and_wake(seg, &params, gen);
    for (int i = 0; i < CONTENDERS; i++) {
        struct report r;
        REQUIRE(read_report(fds[0], &r, 10000));
        EXPECT_EQ(r.result, TH_LOCK_OK);
        order[i] = r.index;
        exact = exact && r.index == (balance == TH_BALANCE_FIFO ? i : CONTENDERS - 1 - i);
    }
    if (!exact) {
        tap_case_failed = 1;
        tap_diag("order obtained: %d %d %d %d %d %d %d %d %d %d", order[0], order[1],
                 order[2], order[3], order[4], order[5], order[6], order[7], order[8],
                 order[9]);
    }
    for (int i = 0; i < CONTENDERS; i++)
        reap(pids[i]);
    expect_idle_lock();
    seg_unlink(seg_inode);
}

static void test_fifo_order(void) { run_order(TH_BALANCE_FIFO); }
static void test_lifo_order(void) { run_order(TH_BALANCE_LIFO); }

/* Threads of one process queue like processes do. */
static _Atomic int thread_order[CONTENDERS];
static _Atomic int thread_next;

static void *thread_contender(void *arg)
{
    uint64_t gen;

    if (acquire_until(in_ms(20000), NULL, &gen) == TH_LOCK_OK) {
        atomic_store(&thread_order[atomic_fetch_add(&thread_next, 1)], (int)(intptr_t)arg);
        usleep(1000);
        th_lock_release_and_wake(seg, &params, gen);
    }
    return NULL;
}

static int count_queued(void)
{
    int n = 0;

    for (int i = 0; i < TH_MAX_WAITERS; i++)
        n += atomic_load(&seg->waiters[i].state) == TH_W_QUEUED;
    return n;
}

static void test_fifo_threads(void)
{
    pthread_t threads[CONTENDERS];
    uint64_t gen;

    lock_setup();
    params.hold_ms = 60000;
    REQUIRE(try_lock(&gen) == TH_LOCK_OK);
    for (int i = 0; i < CONTENDERS; i++) {
        double until = tap_now_ms() + QUEUE_WAIT_MS;
        REQUIRE(pthread_create(&threads[i], NULL, thread_contender, (void *)(intptr_t)i) == 0);
        while (count_queued() < i + 1)
            REQUIRE(tap_now_ms() < until);
    }
    th_lock_release_and_wake(seg, &params, gen);
    for (int i = 0; i < CONTENDERS; i++)
        pthread_join(threads[i], NULL);
    EXPECT_EQ(atomic_load(&thread_next), CONTENDERS);
    for (int i = 0; i < CONTENDERS; i++)
        EXPECT_EQ(atomic_load(&thread_order[i]), i);
    expect_idle_lock();
    seg_unlink(seg_inode);
}

/*
 * A release hands the lock to exactly one waiter: with the waiters stopped
 * (SIGSTOP) the segment shows one GRANTED slot and the rest still QUEUED.
 */
static void test_release_grants_one(void)
{
    int fds[2], granted = 0, still_queued = 0;
    pid_t pids[4];
    uint64_t gen;

    lock_setup();
    params.hold_ms = 60000;
    REQUIRE(pipe(fds) == 0);
    REQUIRE(try_lock(&gen) == TH_LOCK_OK);
    for (int i = 0; i < 4; i++) {
        pids[i] = spawn_waiter(i, fds[1], 20000, 1000);
        wait_queued(pids[i]);
        kill(pids[i], SIGSTOP);
    }
    th_lock_release_and_wake(seg, &params, gen);
    for (int i = 0; i < TH_MAX_WAITERS; i++) {
        uint32_t st = atomic_load(&seg->waiters[i].state);
        granted += st == TH_W_GRANTED;
        still_queued += st == TH_W_QUEUED;
    }
    EXPECT_EQ(granted, 1);
    EXPECT_EQ(still_queued, 3);
    EXPECT_EQ(seg->holder_pid, pids[0]);
    for (int i = 0; i < 4; i++)
        kill(pids[i], SIGCONT);
    for (int i = 0; i < 4; i++) {
        struct report r;
        EXPECT(read_report(fds[0], &r, 10000) && r.index == i);
    }
    for (int i = 0; i < 4; i++)
        reap(pids[i]);
    expect_idle_lock();
    seg_unlink(seg_inode);
}

/*
 * A release in a burst also picks queued threads to look (bench: the
 * fan-out): the longest-queued ones with a doorbell, after the grantee,
 * each flagged so that no later release asks it again.  The slots are
 * filled by hand, all this thread's (alive), oldest ticket in the last.
 */
static void fill_queue(int n)
{
    for (int i = 0; i < n; i++) {
        struct th_waiter *w = &seg->waiters[i];
        w->pid = getpid();
        w->tid = (int32_t)th_gettid();
        w->ticket = (uint64_t)(100 - i);
        w->flags = i == 2 ? 0 : TH_WF_DOORBELL;     /* slot 2 sleeps on a futex */
        w->bell = (uint64_t)i + 1;
        w->bell_token = 7;
        atomic_store(&w->state, TH_W_QUEUED);
    }
    seg->nqueued = (uint32_t)n;
}

static void test_release_picks_lookers_once(void)
{
    struct th_bell_id bells[TH_MAX_LOOKERS];
    struct th_grant g;
    uint64_t gen;
    int n;

    lock_setup();
    REQUIRE(try_lock(&gen) == TH_LOCK_OK);
    fill_queue(6);
    g = th_lock_release_lookers(seg, &params, gen, 2, bells, &n);
    EXPECT(g.w == &seg->waiters[5]);                 /* the oldest holds it */
    EXPECT_EQ(n, 2);
    EXPECT(n == 2 && bells[0].name + bells[1].name == 5 + 4);   /* slots 4 and 3 */
    EXPECT(th_lock_asked_to_look(seg, &seg->waiters[4]));
    EXPECT(th_lock_asked_to_look(seg, &seg->waiters[3]));
    EXPECT(!th_lock_asked_to_look(seg, &seg->waiters[1]));
    /* the next release: slot 4 is next in line, slot 3 was asked already,
       slot 2 has no doorbell, so slots 1 and 0 look */
    g = th_lock_release_lookers(seg, &params, seg->waiters[5].gen, 2, bells, &n);
    EXPECT(g.w == &seg->waiters[4]);
    EXPECT_EQ(n, 2);
    EXPECT(n == 2 && bells[0].name + bells[1].name == 2 + 1);
    EXPECT(!th_lock_asked_to_look(seg, &seg->waiters[4]));   /* granted, not queued */
    /* no lookers asked: none picked */
    g = th_lock_release_lookers(seg, &params, seg->waiters[4].gen, 0, bells, &n);
    EXPECT(g.w != NULL);
    EXPECT_EQ(n, 0);
    for (int i = 0; i < 6; i++)
        atomic_store(&seg->waiters[i].state, TH_W_FREE);
    seg->nqueued = 0;
    seg->holder_pid = seg->holder_tid = 0;
    seg_unlink(seg_inode);
}

/* ---- timeouts ----------------------------------------------------------- */

static void test_timeout(void)
{
    struct holder h;
    uint64_t gen;
    double t0, ms;

    lock_setup();
    h = spawn_holder(true);
    t0 = tap_now_ms();
    EXPECT_EQ(acquire_until(in_ms(100), NULL, &gen), TH_LOCK_TIMEOUT);
    ms = tap_now_ms() - t0;
    tap_diag("timed out after %.1f ms (deadline 100 ms)", ms);
    EXPECT(ms >= 95.0 && ms < 1000.0);
    EXPECT(!has_slot(getpid()));
    EXPECT_EQ(seg->holder_pid, h.pid);
    holder_release(&h);
    EXPECT_EQ(try_lock(&gen), TH_LOCK_OK);
    th_lock_release_and_wake(seg, &params, gen);
    expect_idle_lock();
    seg_unlink(seg_inode);
}

/* Timeout 0 is a try: busy at once, never queued; free means taken. */
static void test_try(void)
{
    struct holder h;
    uint64_t gen;
    int64_t waited = -1;
    double t0;

    lock_setup();
    h = spawn_holder(true);
    t0 = tap_now_ms();
    EXPECT_EQ(try_lock(&gen), TH_LOCK_BUSY);
    EXPECT_EQ(acquire_until(th_now_ns(), NULL, &gen), TH_LOCK_BUSY);   /* deadline = now */
    EXPECT_EQ(acquire_until(th_now_ns() - NS_PER_MS, NULL, &gen), TH_LOCK_BUSY);
    EXPECT(tap_now_ms() - t0 < 200.0);
    EXPECT(!has_slot(getpid()));
    holder_release(&h);
    struct th_lock_wait w = { .params = &params, .deadline = TH_FOREVER, .try_only = true };
    EXPECT_EQ(th_lock_acquire(seg, &w, &gen, &waited), TH_LOCK_OK);
    EXPECT_EQ(waited, 0);
    EXPECT_EQ(seg->holder_pid, getpid());
    th_lock_release_and_wake(seg, &params, gen);
    expect_idle_lock();
    seg_unlink(seg_inode);
}

/* ---- signals ------------------------------------------------------------ */

static volatile sig_atomic_t alarms;

static void on_alarm(int sig)
{
    (void)sig;
    alarms++;
}

static void catch_alarm(void)
{
    struct sigaction sa = { .sa_handler = on_alarm, .sa_flags = 0 };   /* no SA_RESTART */

    sigemptyset(&sa.sa_mask);
    sigaction(SIGALRM, &sa, NULL);
}

static void alarm_in_ms(int ms)
{
    struct itimerval it = { .it_value = { .tv_sec = ms / 1000, .tv_usec = (ms % 1000) * 1000 } };

    setitimer(ITIMER_REAL, &it, NULL);
}

static void alarm_every_ms(int ms)
{
    struct itimerval it = { .it_value = { .tv_sec = ms / 1000, .tv_usec = (ms % 1000) * 1000 },
                            .it_interval = { .tv_sec = ms / 1000, .tv_usec = (ms % 1000) * 1000 } };

    setitimer(ITIMER_REAL, &it, NULL);
}

/* A signal handler running during the wait: TH_LOCK_INTR, queue left clean. */
static void test_eintr(void)
{
    struct holder h;
    uint64_t gen;
    double t0, ms;

    lock_setup();
    catch_alarm();
    h = spawn_holder(true);
    /*
     * Every 150 ms, not once: on a loaded machine the first alarm can fire
     * before this thread is asleep (then it is handled like a signal that
     * came just before the call, and must not end the wait); a later one
     * finds it asleep.
     */
    alarm_every_ms(150);
    t0 = tap_now_ms();
    EXPECT_EQ(acquire_until(TH_FOREVER, NULL, &gen), TH_LOCK_INTR);
    ms = tap_now_ms() - t0;
    alarm_every_ms(0);
    tap_diag("interrupted after %.1f ms (alarms every 150 ms, %d handled)", ms, (int)alarms);
    EXPECT(alarms >= 1);
    EXPECT(ms >= 100.0 && ms < 2000.0);
    EXPECT(!has_slot(getpid()));
    holder_release(&h);
    expect_idle_lock();
    seg_unlink(seg_inode);
}

/* ppoll-style: the signal is blocked except during the wait (the mask). */
static void test_eintr_with_mask(void)
{
    sigset_t block, during;
    struct holder h;
    uint64_t gen;
    double t0;

    lock_setup();
    catch_alarm();
    sigemptyset(&block);
    sigaddset(&block, SIGALRM);
    sigprocmask(SIG_BLOCK, &block, &during);
    sigdelset(&during, SIGALRM);
    h = spawn_holder(true);
    alarm_in_ms(150);
    t0 = tap_now_ms();
    EXPECT_EQ(acquire_until(TH_FOREVER, &during, &gen), TH_LOCK_INTR);
    EXPECT_EQ(alarms, 1);
    EXPECT(tap_now_ms() - t0 < 2000.0);

    /* already pending when the wait starts: delivered and reported at once */
    raise(SIGALRM);
    EXPECT_EQ(alarms, 1);                      /* still blocked outside the wait */
    t0 = tap_now_ms();
    EXPECT_EQ(acquire_until(TH_FOREVER, &during, &gen), TH_LOCK_INTR);
    EXPECT_EQ(alarms, 2);
    EXPECT(tap_now_ms() - t0 < 500.0);

    /* a signal the mask keeps blocked does not interrupt */
    alarm_in_ms(50);
    EXPECT_EQ(acquire_until(in_ms(300), &block, &gen), TH_LOCK_TIMEOUT);
    EXPECT_EQ(alarms, 2);
    EXPECT(!has_slot(getpid()));
    holder_release(&h);
    seg_unlink(seg_inode);
}

/* ---- robustness ----------------------------------------------------------- */

/* kill -9 of the holder: a queued waiter gets the lock within a bounded time. */
static void test_holder_killed(void)
{
    struct holder h;
    struct report r;
    int fds[2];
    pid_t w;
    int64_t killed_at;
    double ms;

    lock_setup();
    REQUIRE(pipe(fds) == 0);
    h = spawn_holder(true);        /* in its wait: only death frees it */
    w = spawn_waiter(0, fds[1], 20000, 1000);
    wait_queued(w);
    killed_at = th_now_ns();
    kill(h.pid, SIGKILL);
    waitpid(h.pid, NULL, 0);       /* a zombie still counts as alive */
    REQUIRE(read_report(fds[0], &r, 10000));
    EXPECT_EQ(r.result, TH_LOCK_OK);
    ms = (double)(r.at_ns - killed_at) / 1e6;
    tap_diag("waiter got the lock %.1f ms after the holder was killed", ms);
    EXPECT(ms < RECOVERY_BOUND_MS);
    EXPECT(atomic_load(&seg->recoveries) >= 1);
    reap(w);
    expect_idle_lock();
    seg_unlink(seg_inode);
}

/* kill -9 of a queued waiter: the release skips it, the next live one gets it. */
static void test_waiter_killed(void)
{
    int fds[2];
    pid_t dead, alive;
    struct report r;
    uint64_t gen;
    int64_t released_at;
    double ms;

    lock_setup();
    params.hold_ms = 60000;
    REQUIRE(pipe(fds) == 0);
    REQUIRE(try_lock(&gen) == TH_LOCK_OK);
    dead = spawn_waiter(0, fds[1], 20000, 1000);
    wait_queued(dead);
    alive = spawn_waiter(1, fds[1], 20000, 1000);
    wait_queued(alive);
    kill(dead, SIGKILL);
    waitpid(dead, NULL, 0);
    released_at = th_now_ns();
    th_lock_release_and_wake(seg, &params, gen);
    REQUIRE(read_report(fds[0], &r, 10000));
    EXPECT_EQ(r.index, 1);
    EXPECT_EQ(r.result, TH_LOCK_OK);
    ms = (double)(r.at_ns - released_at) / 1e6;
    tap_diag("next live waiter got the lock %.1f ms after the release", ms);
    EXPECT(ms < RECOVERY_BOUND_MS);
    reap(alive);
    EXPECT(!has_slot(dead));
    expect_idle_lock();
    seg_unlink(seg_inode);
}

/*
 * A holder that does not wait on the listener for more than hold_ms is
 * taken over; its late release (old generation) must not free the lock of
 * the new holder.
 */
static void test_hold_limit(void)
{
    struct holder h;
    uint64_t gen;
    double t0, ms;

    lock_setup();
    params.hold_ms = 100;
    h = spawn_holder(false);
    t0 = tap_now_ms();
    EXPECT_EQ(acquire_until(in_ms(5000), NULL, &gen), TH_LOCK_OK);
    ms = tap_now_ms() - t0;
    tap_diag("taken over after %.1f ms (hold_ms 100)", ms);
    EXPECT(ms >= 50.0 && ms < RECOVERY_BOUND_MS);
    EXPECT(atomic_load(&seg->recoveries) >= 1);
    holder_release(&h);            /* stale release by the old holder */
    EXPECT_EQ(seg->holder_pid, getpid());
    EXPECT_EQ(seg->holder_gen, gen);
    th_lock_release_and_wake(seg, &params, gen);
    expect_idle_lock();
    seg_unlink(seg_inode);
}

/* A holder asleep in its real wait is never taken over, however long. */
static void test_hold_limit_spares_waiting_holder(void)
{
    struct holder h;
    uint64_t gen;

    lock_setup();
    params.hold_ms = 50;
    h = spawn_holder(true);
    EXPECT_EQ(acquire_until(in_ms(400), NULL, &gen), TH_LOCK_TIMEOUT);
    EXPECT_EQ(seg->holder_pid, h.pid);
    EXPECT_EQ(atomic_load(&seg->recoveries), 0);
    holder_release(&h);
    seg_unlink(seg_inode);
}

/*
 * A holder stopped (SIGSTOP) in its wait accepts nothing: taken over once
 * seen stopped for hold_ms.  Continued, its release (old generation) is a
 * no-op for the new holder.
 */
static void test_stopped_holder(void)
{
    struct holder h;
    uint64_t gen;
    double t0, ms;

    lock_setup();
    params.hold_ms = 100;
    h = spawn_holder(true);
    kill(h.pid, SIGSTOP);
    t0 = tap_now_ms();
    EXPECT_EQ(acquire_until(in_ms(5000), NULL, &gen), TH_LOCK_OK);
    ms = tap_now_ms() - t0;
    tap_diag("stopped holder taken over after %.1f ms (hold_ms 100, check_ms %u)", ms,
             params.check_ms);
    EXPECT(ms >= 90.0 && ms < RECOVERY_BOUND_MS);
    EXPECT(atomic_load(&seg->recoveries) >= 1);
    kill(h.pid, SIGCONT);
    holder_release(&h);            /* stale release by the continued holder */
    EXPECT_EQ(seg->holder_pid, getpid());
    EXPECT_EQ(seg->holder_gen, gen);
    th_lock_release_and_wake(seg, &params, gen);
    expect_idle_lock();
    seg_unlink(seg_inode);
}

/* ---- mutual exclusion under churn ---------------------------------------- */

#define CHURN_PROCS 4
#define CHURN_ROUNDS 300

/* Tries, short timeouts and hand-offs racing each other: never two holders. */
static void churn(_Atomic int *inside, _Atomic int *overlaps, _Atomic int *wins, int seed)
{
    for (int i = 0; i < CHURN_ROUNDS; i++) {
        int64_t deadline = (i + seed) % 4 == 0 ? th_now_ns() : in_ms((i * 7 + seed) % 4);
        uint64_t gen;

        if (acquire_until(deadline, NULL, &gen) != TH_LOCK_OK)
            continue;
        if (atomic_fetch_add(inside, 1) != 0)
            atomic_fetch_add(overlaps, 1);
        atomic_fetch_add(wins, 1);
        usleep(50);
        atomic_fetch_sub(inside, 1);
        th_lock_release_and_wake(seg, &params, gen);
    }
}

static void test_mutual_exclusion(void)
{
    _Atomic int *shared;
    pid_t pids[CHURN_PROCS];

    lock_setup();
    params.hold_ms = 60000;        /* a preempted holder must not be taken over */
    shared = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    REQUIRE(shared != MAP_FAILED);
    for (int p = 0; p < CHURN_PROCS; p++) {
        pids[p] = fork();
        REQUIRE(pids[p] >= 0);
        if (pids[p] == 0) {
            churn(&shared[0], &shared[1], &shared[2], p);
            _exit(0);
        }
    }
    for (int p = 0; p < CHURN_PROCS; p++)
        reap(pids[p]);
    tap_diag("%d of %d attempts won the lock", atomic_load(&shared[2]),
             CHURN_PROCS * CHURN_ROUNDS);
    EXPECT_EQ(atomic_load(&shared[1]), 0);
    EXPECT(atomic_load(&shared[2]) > 0);
    expect_idle_lock();
    seg_unlink(seg_inode);
}

static const struct tap_case cases[] = {
    { "fifo: 10 processes get the lock in arrival order", test_fifo_order },
    { "lifo: 10 processes get the lock in reverse arrival order", test_lifo_order },
    { "fifo: 10 threads of one process, arrival order", test_fifo_threads },
    { "a release wakes exactly one waiter", test_release_grants_one },
    { "a burst's release also picks the oldest doorbell waiters to look, once",
      test_release_picks_lookers_once },
    { "deadline 100 ms while held: TIMEOUT after ~100 ms", test_timeout },
    { "timeout 0 is a try: BUSY at once, never queued", test_try },
    { "SIGALRM handler during the wait: INTR, queue clean", test_eintr },
    { "signal mask applied during the wait (ppoll-like)", test_eintr_with_mask },
    { "holder killed with SIGKILL: waiter gets the lock, bounded", test_holder_killed },
    { "queued waiter killed: release skips it", test_waiter_killed },
    { "holder outside its wait past hold_ms is taken over", test_hold_limit },
    { "holder inside its wait is not taken over", test_hold_limit_spares_waiting_holder },
    { "holder stopped (SIGSTOP) in its wait is taken over after hold_ms", test_stopped_holder },
    { "mutual exclusion under tries, timeouts and hand-offs", test_mutual_exclusion },
};

int main(void)
{
    return tap_run(cases, TH_ARRAY_LEN(cases), seg_cleanup_case);
}

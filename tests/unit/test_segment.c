/*
 * Segments: the layout that the statistics reader depends on, and
 * th_seg_attach facing everything a hostile or crashed world can leave at
 * /dev/shm/libthunder.<uid>.<inode>.  The rule (segment.c): nothing is
 * trusted before validation; a segment that fails is refused with one
 * warning (its listener runs pass-through); a segment left by processes
 * that are all dead is reset and reused.  Never a crash, never a hang.
 */
#include "seghelp.h"

#include <pwd.h>

#define REFUSE_BOUND_MS 3000.0   /* attach waits up to 200 ms, the guard 1 s */

/* ---- layout pins ------------------------------------------------------- */

#define PIN(type, field, off) EXPECT_EQ(offsetof(struct type, field), (off))

static void test_layout_header(void)
{
    PIN(th_seg, magic, 0);
    PIN(th_seg, version, 8);
    PIN(th_seg, size, 12);
    PIN(th_seg, uid, 16);
    PIN(th_seg, port, 20);
    PIN(th_seg, inode, 24);
    PIN(th_seg, ready, 32);
    PIN(th_seg, unlinked, 36);
    PIN(th_seg, guard, 40);
    EXPECT_EQ(TH_SEG_MAGIC, 0x7468756e64657231ULL);
    EXPECT_EQ(TH_SEG_VERSION, 2);
    EXPECT_EQ(TH_MAX_WAITERS, 512);
    EXPECT_EQ(TH_MAX_PROCS, 512);
}

/* After the guard, offsets depend on the ABI's pthread_mutex_t only. */
static void test_layout_lock(void)
{
    size_t g = offsetof(struct th_seg, guard) + sizeof(pthread_mutex_t);

    PIN(th_seg, holder_pid, g);
    PIN(th_seg, holder_tid, g + 4);
    PIN(th_seg, holder_gen, g + 8);
    PIN(th_seg, holder_since_ns, g + 16);
    PIN(th_seg, holder_in_wait, g + 24);
    PIN(th_seg, nqueued, g + 28);
    PIN(th_seg, next_ticket, g + 32);
    PIN(th_seg, recoveries, g + 40);
    PIN(th_seg, waiting, g + 48);
    PIN(th_seg, waiters, g + 56);
    PIN(th_seg, procs, g + 56 + TH_MAX_WAITERS * 32);
    EXPECT_EQ(sizeof(struct th_seg), g + 56 + TH_MAX_WAITERS * 32 + TH_MAX_PROCS * 88);
#if defined(__x86_64__)
    EXPECT_EQ(sizeof(struct th_seg), 61576);
#endif
}

static void test_layout_waiter_and_stats(void)
{
    EXPECT_EQ(sizeof(struct th_waiter), 32);
    PIN(th_waiter, state, 0);
    PIN(th_waiter, pid, 4);
    PIN(th_waiter, tid, 8);
    PIN(th_waiter, flags, 12);
    PIN(th_waiter, ticket, 16);
    PIN(th_waiter, gen, 24);
    EXPECT_EQ(sizeof(struct th_proc_stats), 88);
    PIN(th_proc_stats, pid, 0);
    PIN(th_proc_stats, strategy, 4);
    PIN(th_proc_stats, waits, 8);
    PIN(th_proc_stats, wakeups, 16);
    PIN(th_proc_stats, spurious, 24);
    PIN(th_proc_stats, accepts, 32);
    PIN(th_proc_stats, eagain, 40);
    PIN(th_proc_stats, lock_waits, 48);
    PIN(th_proc_stats, lock_wait_ns, 56);
    PIN(th_proc_stats, rotations, 64);
    PIN(th_proc_stats, refused, 72);
    PIN(th_proc_stats, yields, 80);
    PIN(th_proc_stats, waiting, 84);
    EXPECT_EQ(TH_STRAT_NONE, 0);
    EXPECT_EQ(TH_STRAT_OBSERVE, 1);
    EXPECT_EQ(TH_STRAT_LOCK, 2);
    EXPECT_EQ(TH_STRAT_EXCLUSIVE, 3);
    EXPECT_EQ(TH_STRAT_JITTER, 4);
    EXPECT_EQ(TH_STRAT_PASS, 5);
}

/* ---- creation ---------------------------------------------------------- */

static void expect_fresh_file(uint64_t inode)
{
    char path[160];
    struct stat st;

    seg_path(path, sizeof(path), inode);
    REQUIRE(lstat(path, &st) == 0);
    EXPECT(S_ISREG(st.st_mode));
    EXPECT_EQ(st.st_mode & 07777, 0600);
    EXPECT_EQ(st.st_uid, geteuid());
    EXPECT_EQ(st.st_size, sizeof(struct th_seg));
}

static void test_create_fresh(void)
{
    uint64_t inode = fake_inode(0);
    struct th_seg *seg;
    const char *why = NULL;

    seg = th_seg_attach(inode, TEST_PORT);
    REQUIRE(seg != NULL);
    expect_fresh_file(inode);
    EXPECT_EQ(seg->magic, TH_SEG_MAGIC);
    EXPECT_EQ(seg->version, TH_SEG_VERSION);
    EXPECT_EQ(seg->size, sizeof(struct th_seg));
    EXPECT_EQ(seg->uid, geteuid());
    EXPECT_EQ(seg->inode, inode);
    EXPECT_EQ(seg->port, TEST_PORT);
    EXPECT_EQ(atomic_load(&seg->ready), 1);
    EXPECT_EQ(seg->holder_pid, 0);
    EXPECT_EQ(seg->nqueued, 0);
    EXPECT_EQ(th_seg_validate(seg, sizeof(*seg), geteuid(), inode, &why), 0);
    EXPECT(th_seg_validate(seg, sizeof(*seg) - 8, geteuid(), inode, &why) < 0 && why);
    EXPECT(th_seg_validate(seg, sizeof(*seg), geteuid() + 1, inode, &why) < 0);
    EXPECT(th_seg_validate(seg, sizeof(*seg), geteuid(), inode + 1, &why) < 0);
    seg_unlink(inode);
}

/* The umask must not change the mode: it is exactly 0600 either way. */
static void test_create_under_umask(void)
{
    static const mode_t masks[] = { 0, 0022, 0077, 0777 };

    for (size_t i = 0; i < TH_ARRAY_LEN(masks); i++) {
        uint64_t inode = fake_inode((int)i);
        umask(masks[i]);
        REQUIRE(th_seg_attach(inode, TEST_PORT) != NULL);
        expect_fresh_file(inode);
        seg_unlink(inode);
    }
}

/* A second attach maps the same memory: what one writes the other sees. */
static void test_attach_existing(void)
{
    uint64_t inode = fake_inode(0);
    struct th_seg *a = attach_claimed(inode), *b;

    b = th_seg_attach(inode, TEST_PORT);
    REQUIRE(b != NULL);
    EXPECT(a != b);
    atomic_store(&a->procs[7].accepts, 12345);
    EXPECT_EQ(atomic_load(&b->procs[7].accepts), 12345);
    seg_unlink(inode);
}

/* ---- refusals ---------------------------------------------------------- */

/* Attach must fail within bounds, with one warning that says why. */
static void expect_refused(uint64_t inode, const char *reason)
{
    char log[4096];
    double t0 = tap_now_ms(), ms;
    struct th_seg *seg;

    th_log_set_level(TH_LOG_WARN);
    capture_begin();
    seg = th_seg_attach(inode, TEST_PORT);
    capture_end(log, sizeof(log));
    ms = tap_now_ms() - t0;
    EXPECT(seg == NULL);
    EXPECT(ms < REFUSE_BOUND_MS);
    if (count_substr(log, "libthunder: ") != 1 || strstr(log, reason) == NULL ||
        strstr(log, "pass-through") == NULL) {
        tap_case_failed = 1;
        tap_diag("expected one warning mentioning \"%s\", got: %s", reason, log);
    }
}

/* Create a valid segment, let corrupt() damage it, expect a refusal. */
static void corrupt_and_refuse(void (*corrupt)(struct th_seg *), const char *reason)
{
    uint64_t inode = fake_inode(1);
    struct th_seg *seg = th_seg_attach(inode, TEST_PORT);

    REQUIRE(seg != NULL);
    corrupt(seg);
    expect_refused(inode, reason);
    seg_unlink(inode);
}

static void bad_magic(struct th_seg *s) { s->magic ^= 1; }
static void bad_version(struct th_seg *s) { s->version = TH_SEG_VERSION + 1; }
static void bad_size(struct th_seg *s) { s->size = 4096; }
static void bad_uid(struct th_seg *s) { s->uid = geteuid() + 1000; }
static void bad_inode(struct th_seg *s) { s->inode++; }
static void not_ready(struct th_seg *s) { atomic_store(&s->ready, 0); }

static void test_refuse_magic(void) { corrupt_and_refuse(bad_magic, "magic"); }
static void test_refuse_version(void) { corrupt_and_refuse(bad_version, "version"); }
static void test_refuse_recorded_size(void) { corrupt_and_refuse(bad_size, "size"); }
static void test_refuse_recorded_uid(void) { corrupt_and_refuse(bad_uid, "another user"); }
static void test_refuse_recorded_inode(void) { corrupt_and_refuse(bad_inode, "inode"); }
static void test_refuse_never_ready(void) { corrupt_and_refuse(not_ready, "initialis"); }

/* A file we make ourselves at the segment's name, with a chosen mode and size. */
static int make_file(uint64_t inode, mode_t mode, off_t size)
{
    char path[160];
    int fd;

    seg_path(path, sizeof(path), inode);
    fd = open(path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    REQUIRE(fd >= 0);
    REQUIRE(fchmod(fd, mode) == 0);
    REQUIRE(ftruncate(fd, size) == 0);
    return fd;
}

static void test_refuse_truncated(void)
{
    uint64_t inode = fake_inode(1);
    struct th_seg *seg = th_seg_attach(inode, TEST_PORT);
    char path[160];

    REQUIRE(seg != NULL);
    seg_path(path, sizeof(path), inode);
    REQUIRE(truncate(path, sizeof(struct th_seg) / 2) == 0);
    expect_refused(inode, "size");
    seg_unlink(inode);
}

static void test_refuse_oversized(void)
{
    uint64_t inode = fake_inode(1);
    struct th_seg *seg = th_seg_attach(inode, TEST_PORT);
    char path[160];

    REQUIRE(seg != NULL);
    seg_path(path, sizeof(path), inode);
    REQUIRE(truncate(path, sizeof(struct th_seg) + 4096) == 0);
    expect_refused(inode, "size");
    seg_unlink(inode);
}

/* A creator that died between create and ftruncate leaves an empty file. */
static void test_refuse_empty(void)
{
    uint64_t inode = fake_inode(1);

    close(make_file(inode, 0600, 0));
    expect_refused(inode, "size");
    seg_unlink(inode);
}

/* The right size but all zeros: no magic, never ready. */
static void test_refuse_zeroes(void)
{
    uint64_t inode = fake_inode(1);

    close(make_file(inode, 0600, sizeof(struct th_seg)));
    expect_refused(inode, "pass-through");
    seg_unlink(inode);
}

static void test_refuse_mode(void)
{
    static const mode_t modes[] = { 0666, 0640, 0604, 0700, 0660 };

    for (size_t i = 0; i < TH_ARRAY_LEN(modes); i++) {
        uint64_t inode = fake_inode((int)i);
        struct th_seg *seg = th_seg_attach(inode, TEST_PORT);
        char path[160];

        REQUIRE(seg != NULL);
        seg_path(path, sizeof(path), inode);
        REQUIRE(chmod(path, modes[i]) == 0);
        expect_refused(inode, "mode");
        seg_unlink(inode);
    }
}

static void test_refuse_foreign_owner(void)
{
    uint64_t inode = fake_inode(1);
    struct th_seg *seg;
    char path[160];

    if (getuid() != 0 || seteuid(0) != 0)      /* back from isolate_uid() */
        tap_skip("needs root to give a file to another user");
    setegid(0);
    seg = th_seg_attach(inode, TEST_PORT);
    REQUIRE(seg != NULL);
    seg_path(path, sizeof(path), inode);
    REQUIRE(chown(path, 65534, 65534) == 0);
    expect_refused(inode, "another user");
    seg_unlink(inode);
}

/* A symlink at the name is never followed, whether its target exists or not. */
static void test_refuse_symlink(void)
{
    uint64_t valid = fake_inode(1), inode = fake_inode(2);
    char target[160], path[160], dangling[160];
    struct stat st;

    REQUIRE(th_seg_attach(valid, TEST_PORT) != NULL);
    seg_path(target, sizeof(target), valid);
    seg_path(path, sizeof(path), inode);
    REQUIRE(symlink(target, path) == 0);
    expect_refused(inode, "pass-through");
    unlink(path);

    snprintf(dangling, sizeof(dangling), "/dev/shm/libthunder-test.%d.3", (int)getpid());
    REQUIRE(symlink(dangling, path) == 0);
    expect_refused(inode, "pass-through");
    EXPECT(lstat(dangling, &st) < 0);        /* nothing created through the link */
    unlink(path);
    seg_unlink(valid);
}

static void test_refuse_directory(void)
{
    uint64_t inode = fake_inode(1);
    char path[160];

    seg_path(path, sizeof(path), inode);
    REQUIRE(mkdir(path, 0700) == 0);
    expect_refused(inode, "pass-through");
    rmdir(path);
}

/* ---- garbage inside a well-formed segment ------------------------------ */

/* Lock fields full of garbage, written by processes that are all dead. */
static void scribble_lock(struct th_seg *seg, pid_t dead)
{
    seg->holder_pid = dead;
    seg->holder_tid = dead + 17;
    seg->holder_gen = 0xdeadbeefcafeULL;
    seg->holder_since_ns = UINT64_MAX - 5;
    seg->holder_in_wait = 0xffffffffu;
    seg->nqueued = 0xfffffff0u;
    seg->next_ticket = UINT64_MAX - 2;
    for (int i = 0; i < TH_MAX_WAITERS; i += 3) {
        atomic_store(&seg->waiters[i].state, (uint32_t)(i % 5));
        seg->waiters[i].pid = i % 2 ? dead : -i;
        seg->waiters[i].tid = 0x7fffffff;
        seg->waiters[i].ticket = (uint64_t)i * 0x9e3779b97f4a7c15ULL;
    }
    for (int i = 0; i < TH_MAX_PROCS; i += 2)
        atomic_store(&seg->procs[i].pid, i % 4 ? dead : -1);
}

/* The lock's parameters as the library passes them (the defaults). */
static const struct th_lock_params lock_params = {
    .balance = TH_BALANCE_FIFO, .hold_ms = 100, .check_ms = 25,
};

static void expect_lock_usable(struct th_seg *seg)
{
    struct th_lock_wait w = { .params = &lock_params,
                              .deadline = th_now_ns() + 2000LL * 1000000 };
    uint64_t gen;
    int64_t waited;
    double t0 = tap_now_ms();

    EXPECT_EQ(th_lock_acquire(seg, &w, &gen, &waited), TH_LOCK_OK);
    EXPECT(tap_now_ms() - t0 < 2000.0);
    EXPECT_EQ(seg->holder_pid, getpid());
    th_lock_release_and_wake(seg, &lock_params, gen);
    EXPECT_EQ(seg->holder_pid, 0);
}

/* Every process gone: attach resets the segment (documented in segment.c). */
static void test_garbage_all_dead_is_reset(void)
{
    uint64_t inode = fake_inode(1);
    struct th_seg *seg = th_seg_attach(inode, TEST_PORT);

    REQUIRE(seg != NULL);
    scribble_lock(seg, dead_pid());
    seg = th_seg_attach(inode, TEST_PORT);
    REQUIRE(seg != NULL);
    EXPECT_EQ(seg->holder_pid, 0);
    EXPECT_EQ(seg->nqueued, 0);
    for (int i = 0; i < TH_MAX_WAITERS; i++)
        EXPECT_EQ(atomic_load(&seg->waiters[i].state), TH_W_FREE);
    /* reset, then the attacher registered itself: exactly one slot, ours */
    int registered = 0;
    for (int i = 0; i < TH_MAX_PROCS; i++) {
        int32_t pid = atomic_load(&seg->procs[i].pid);
        EXPECT(pid == 0 || pid == getpid());
        registered += pid == getpid();
    }
    EXPECT_EQ(registered, 1);
    EXPECT(th_seg_claim_slot(seg, getpid()) != NULL);
    expect_lock_usable(seg);
    seg_unlink(inode);
}

/*
 * Garbage while a process is still attached (so no reset): the dead holder
 * and dead or nonsensical queue entries are recovered by the lock itself.
 */
static void test_garbage_with_live_user_recovers(void)
{
    uint64_t inode = fake_inode(1);
    struct th_seg *seg = th_seg_attach(inode, TEST_PORT);

    REQUIRE(seg != NULL);
    REQUIRE(th_seg_claim_slot(seg, getpid()) != NULL);
    scribble_lock(seg, dead_pid());
    atomic_store(&seg->procs[1].pid, getpid());  /* a live user: not stale */
    seg = th_seg_attach(inode, TEST_PORT);
    REQUIRE(seg != NULL);
    expect_lock_usable(seg);
    expect_lock_usable(seg);
    seg_unlink(inode);
}

/* A live holder whose recorded grant time is in the future is not a wedge. */
static void test_garbage_future_hold_time(void)
{
    uint64_t inode = fake_inode(1);
    struct th_seg *seg = attach_claimed(inode);
    pid_t sleeper = fork();

    if (sleeper == 0) {
        pause();
        _exit(0);
    }
    REQUIRE(seg != NULL && sleeper > 0);
    seg->holder_pid = seg->holder_tid = sleeper;
    seg->holder_in_wait = 0;
    seg->holder_since_ns = (uint64_t)th_now_ns() + 3600ULL * 1000000000ULL;
    expect_lock_usable(seg);
    kill(sleeper, SIGKILL);
    waitpid(sleeper, NULL, 0);
    seg_unlink(inode);
}

/* The guard mutex owned by a thread that no longer exists (no robust list). */
static void test_garbage_guard_owner(void)
{
    uint64_t inode = fake_inode(1);
    struct th_seg *seg = th_seg_attach(inode, TEST_PORT);
    _Atomic int *lockword;
    double t0;

    REQUIRE(seg != NULL);
    lockword = (_Atomic int *)(void *)&seg->guard;   /* glibc: __data.__lock first */
    atomic_store(lockword, (int)dead_pid());
    t0 = tap_now_ms();
    expect_refused(inode, "guard");
    tap_diag("refused after %.0f ms", tap_now_ms() - t0);
    seg_unlink(inode);
}

/* The guard mutex overwritten with garbage: refused or usable, bounded, no crash. */
static void test_garbage_guard_bytes(void)
{
    uint64_t inode = fake_inode(1);
    struct th_seg *seg = th_seg_attach(inode, TEST_PORT);
    char log[4096];
    double t0;

    REQUIRE(seg != NULL);
    memset((void *)&seg->guard, 0xa5, sizeof(seg->guard));
    t0 = tap_now_ms();
    capture_begin();
    seg = th_seg_attach(inode, TEST_PORT);
    if (seg) {
        struct th_lock_wait w = { .params = &lock_params,
                                  .deadline = th_now_ns() + 500LL * 1000000 };
        uint64_t gen;
        int64_t waited;
        if (th_lock_acquire(seg, &w, &gen, &waited) == TH_LOCK_OK)
            th_lock_release_and_wake(seg, &lock_params, gen);
    }
    capture_end(log, sizeof(log));
    EXPECT(tap_now_ms() - t0 < REFUSE_BOUND_MS + 1000.0);
    tap_diag("attach %s after %.0f ms; log: %s", seg ? "accepted" : "refused",
             tap_now_ms() - t0, log);
    seg_unlink(inode);
}

/* ---- leaving ------------------------------------------------------------ */

static bool seg_exists(uint64_t inode)
{
    char path[160];
    struct stat st;

    seg_path(path, sizeof(path), inode);
    return lstat(path, &st) == 0;
}

/* The last process to leave removes the name; earlier ones leave it. */
static void test_detach_last_removes(void)
{
    uint64_t inode = fake_inode(1);
    struct th_seg *seg = th_seg_attach(inode, TEST_PORT);
    struct th_proc_stats *mine, *other;
    pid_t child = fork();

    if (child == 0) {
        pause();
        _exit(0);
    }
    REQUIRE(seg != NULL && child > 0);
    mine = th_seg_claim_slot(seg, getpid());
    other = th_seg_claim_slot(seg, child);
    REQUIRE(mine && other && mine != other);
    th_seg_detach(seg, mine);
    EXPECT(seg_exists(inode));               /* the child is still attached */
    EXPECT_EQ(atomic_load(&seg->unlinked), 0);
    kill(child, SIGKILL);
    waitpid(child, NULL, 0);
    seg = th_seg_attach(inode, TEST_PORT);   /* the child died: stale now */
    REQUIRE(seg != NULL);
    mine = th_seg_claim_slot(seg, getpid());
    th_seg_detach(seg, mine);
    EXPECT(!seg_exists(inode));
    EXPECT_EQ(atomic_load(&seg->unlinked), 1);
    seg_unlink(inode);
}

/* An attach after the last user left makes a fresh segment. */
static void test_attach_after_unlink(void)
{
    uint64_t inode = fake_inode(1);
    struct th_seg *old = th_seg_attach(inode, TEST_PORT), *fresh;

    REQUIRE(old != NULL);
    th_seg_detach(old, th_seg_claim_slot(old, getpid()));
    REQUIRE(!seg_exists(inode));
    fresh = th_seg_attach(inode, TEST_PORT);
    REQUIRE(fresh != NULL);
    EXPECT(seg_exists(inode));
    EXPECT_EQ(atomic_load(&fresh->unlinked), 0);
    seg_unlink(inode);
}

/* Slots: one per pid, reclaimed from dead pids, none past TH_MAX_PROCS. */
static void test_claim_slots(void)
{
    uint64_t inode = fake_inode(1);
    struct th_seg *seg = th_seg_attach(inode, TEST_PORT);
    struct th_proc_stats *a, *b;
    pid_t dead = dead_pid();
    char log[4096];

    REQUIRE(seg != NULL);
    a = th_seg_claim_slot(seg, getpid());
    b = th_seg_claim_slot(seg, getpid());
    EXPECT(a != NULL && a == b);
    for (int i = 0; i < TH_MAX_PROCS; i++)
        if (&seg->procs[i] != a)
            atomic_store(&seg->procs[i].pid, getppid());   /* all taken, alive */
    capture_begin();
    EXPECT(th_seg_claim_slot(seg, dead) == NULL);
    capture_end(log, sizeof(log));
    EXPECT_EQ(count_substr(log, "libthunder: "), 1);
    atomic_store(&seg->procs[3].pid, dead);          /* a dead one: reusable */
    atomic_store(&seg->procs[3].accepts, 99);
    b = th_seg_claim_slot(seg, getpid() + 1000000);
    EXPECT(b == &seg->procs[3]);
    EXPECT_EQ(atomic_load(&seg->procs[3].accepts), 0);
    seg_unlink(inode);
}

/* ---- the sweep of stale segments ---------------------------------------- */

/*
 * Creating a segment sweeps this user's stale ones.  A segment that a live
 * process has just attached (th_seg_attach returned, first statistics slot
 * not claimed yet) is in use, not stale: it must survive.
 */
static void test_sweep_spares_fresh_segment(void)
{
    uint64_t in_use = fake_inode(1), other = fake_inode(2);

    REQUIRE(th_seg_attach(in_use, TEST_PORT) != NULL);
    REQUIRE(th_seg_attach(other, TEST_PORT) != NULL);    /* creates: sweeps */
    if (!seg_exists(in_use)) {
        tap_case_failed = 1;
        tap_diag("the segment this live process attached a moment ago was swept away");
    }
    seg_unlink(in_use);
    seg_unlink(other);
}

#define SWEEP_RACERS 32

/*
 * The same race as real servers meet it: SWEEP_RACERS live processes
 * attach (and claim a slot, as the shim does) a segment each, all at once.
 * Every one of them must still be there; a swept one means that process's
 * listener and later attachers end up on different locks.
 */
static void test_sweep_concurrent_creators(void)
{
    pid_t pids[SWEEP_RACERS];
    int go[2], missing = 0;

    REQUIRE(pipe(go) == 0);
    for (int i = 0; i < SWEEP_RACERS; i++) {
        pids[i] = fork();
        REQUIRE(pids[i] >= 0);
        if (pids[i] == 0) {
            char c;
            struct th_seg *seg;
            close(go[1]);
            if (read(go[0], &c, 1) < 0)
                _exit(2);
            seg = th_seg_attach(fake_inode_of(getppid(), 16 + i), TEST_PORT);
            if (seg == NULL || th_seg_claim_slot(seg, getpid()) == NULL)
                _exit(3);
            pause();
            _exit(0);
        }
    }
    close(go[0]);
    close(go[1]);                                        /* go */
    usleep(300 * 1000);
    for (int i = 0; i < SWEEP_RACERS; i++) {
        uint64_t inode = fake_inode(16 + i);
        missing += !seg_exists(inode);
        seg_unlink(inode);
    }
    for (int i = 0; i < SWEEP_RACERS; i++) {
        kill(pids[i], SIGKILL);
        waitpid(pids[i], NULL, 0);
    }
    tap_diag("%d of %d segments of live processes were swept", missing, SWEEP_RACERS);
    EXPECT_EQ(missing, 0);
}

/*
 * Creators killed half-way leave files that never become valid (empty, or
 * full size but never ready).  A new segment's creation sweeps this user's
 * segments: it must not pay the 200 ms "creator still initialising" wait
 * for each of them, since it runs inside the program's first wait call.
 */
static void test_sweep_does_not_stall(void)
{
    struct th_seg *seg;
    double t0, ms;

    for (int k = 0; k < 4; k++)
        close(make_file(fake_inode(20 + k), 0600, 0));
    for (int k = 0; k < 4; k++) {
        seg = attach_claimed(fake_inode(30 + k));
        atomic_store(&seg->ready, 0);
        atomic_store(&seg->procs[0].pid, 0);       /* nobody alive: sweepable */
    }
    t0 = tap_now_ms();
    seg = th_seg_attach(fake_inode(40), TEST_PORT);  /* creates: sweeps */
    ms = tap_now_ms() - t0;
    tap_diag("creating a segment next to 8 half-made ones took %.0f ms", ms);
    EXPECT(seg != NULL);
    EXPECT(ms < 500.0);
}

static const struct tap_case cases[] = {
    { "layout: identity header offsets", test_layout_header },
    { "layout: lock fields follow the guard", test_layout_lock },
    { "layout: waiter slot and statistics", test_layout_waiter_and_stats },
    { "create: mode 0600, owner, size, header", test_create_fresh },
    { "create: mode 0600 under any umask", test_create_under_umask },
    { "attach to an existing valid segment shares memory", test_attach_existing },
    { "refuse: corrupt magic", test_refuse_magic },
    { "refuse: wrong version", test_refuse_version },
    { "refuse: recorded size mismatch", test_refuse_recorded_size },
    { "refuse: recorded uid mismatch", test_refuse_recorded_uid },
    { "refuse: recorded inode mismatch", test_refuse_recorded_inode },
    { "refuse: never finished initialising (bounded wait)", test_refuse_never_ready },
    { "refuse: truncated file", test_refuse_truncated },
    { "refuse: oversized file", test_refuse_oversized },
    { "refuse: empty file (creator died early)", test_refuse_empty },
    { "refuse: right size, all zeroes", test_refuse_zeroes },
    { "refuse: mode other than 0600", test_refuse_mode },
    { "refuse: owned by another uid (root only)", test_refuse_foreign_owner },
    { "refuse: symlink at the name, never followed", test_refuse_symlink },
    { "refuse: directory at the name", test_refuse_directory },
    { "garbage lock fields, all users dead: reset on attach", test_garbage_all_dead_is_reset },
    { "garbage lock fields, a live user: lock recovers", test_garbage_with_live_user_recovers },
    { "garbage hold time in the future: lock recovers", test_garbage_future_hold_time },
    { "guard owned by a dead thread: refused within bounds", test_garbage_guard_owner },
    { "guard bytes garbage: no crash, bounded", test_garbage_guard_bytes },
    { "detach: the last process removes the segment", test_detach_last_removes },
    { "attach after the last user left creates afresh", test_attach_after_unlink },
    { "statistics slots: per pid, reused from dead pids, bounded", test_claim_slots },
    { "sweep: a segment just attached by a live process survives", test_sweep_spares_fresh_segment },
    { "sweep: 32 concurrent creators keep all their segments", test_sweep_concurrent_creators },
    { "sweep: no stall on leftover half-made segments", test_sweep_does_not_stall },
};

int main(void)
{
    tap_setup = isolate_uid;
    return tap_run(cases, TH_ARRAY_LEN(cases), seg_cleanup_case);
}

/*
 * The segment core (shim/segcore.c), linked alone, as thunder-stat links
 * it: the layout pins (seglayout.h: the reader depends on them, any change
 * bumps TH_SEG_VERSION), the name, the file and header checks with their reasons, liveness,
 * the stale check, the guard, creation, and "remove if stale", the one
 * function by which both the library's sweep and thunder-stat --gc remove
 * a segment.  (The library's attach on top of it: test_segment.c.)
 */
#include "corehelp.h"

#include <limits.h>

#define LEN(a) (sizeof(a) / sizeof((a)[0]))

static void expect_reason(const char *why, const char *word)
{
    if (why == NULL || strstr(why, word) == NULL) {
        tap_case_failed = 1;
        tap_diag("expected a reason with \"%s\", got \"%s\"", word, why ? why : "(none)");
    }
}

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
    PIN(th_seg, name_suffix, 32);
    PIN(th_seg, ready, 40);
    PIN(th_seg, unlinked, 44);
    PIN(th_seg, guard, 48);
    EXPECT_EQ(TH_SEG_MAGIC, 0x7468756e64657231ULL);
    EXPECT_EQ(TH_SEG_VERSION, 3);
    EXPECT_EQ(TH_CACHE_LINE, 64);
    EXPECT_EQ(TH_MAX_WAITERS, 1024);
    EXPECT_EQ(TH_MAX_PROCS, 1024);
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
    PIN(th_seg, procs_used, g + 48);
    /* the counters every accept changes start a cache line of their own */
    size_t w = (g + 52 + TH_CACHE_LINE - 1) / TH_CACHE_LINE * TH_CACHE_LINE;
    PIN(th_seg, waiting, w);
    PIN(th_seg, accept_seq, w + 4);
    PIN(th_seg, holder_stopped_ns, w + 8);
    PIN(th_seg, waiters, w + TH_CACHE_LINE);
    PIN(th_seg, procs, w + TH_CACHE_LINE + TH_MAX_WAITERS * 64);
    EXPECT_EQ(sizeof(struct th_seg), w + TH_CACHE_LINE + TH_MAX_WAITERS * 64 + TH_MAX_PROCS * 128);
#if defined(__x86_64__)
    EXPECT_EQ(sizeof(struct th_seg), 196864);
#endif
}

static void test_layout_waiter_and_stats(void)
{
    EXPECT_EQ(sizeof(struct th_waiter), 64);   /* a cache line per slot */
    PIN(th_waiter, state, 0);
    PIN(th_waiter, pid, 4);
    PIN(th_waiter, tid, 8);
    PIN(th_waiter, flags, 12);
    PIN(th_waiter, ticket, 16);
    PIN(th_waiter, gen, 24);
    PIN(th_waiter, bell, 32);
    PIN(th_waiter, bell_token, 40);
    EXPECT_EQ(sizeof(struct th_proc_stats), 128);   /* two lines per slot */
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
    EXPECT_EQ(TH_STRAT_ALONE, 6);
}

/* ---- name ------------------------------------------------------------------ */

static void test_name_round_trip(void)
{
    char name[TH_SEG_PATH_MAX], path[TH_SEG_PATH_MAX];
    uint64_t inode = 0;

    th_seg_name(name, sizeof(name), 1000, 4242);
    th_seg_path(path, sizeof(path), 1000, 4242);
    EXPECT(strcmp(name, "/libthunder.1000.4242") == 0);
    EXPECT(strcmp(path, TH_SHM_DIR "/libthunder.1000.4242") == 0);
    EXPECT(th_seg_parse_name(name + 1, 1000, &inode));
    EXPECT_EQ(inode, 4242);
    th_seg_path(path, sizeof(path), UINT32_MAX - 1, UINT64_MAX);
    EXPECT(th_seg_parse_name(strrchr(path, '/') + 1, UINT32_MAX - 1, &inode));
    EXPECT(inode == UINT64_MAX);
}

static void test_name_parse_refuses(void)
{
    static const char *const bad[] = {
        "libthunder.1001.42", "libthunder.1000.", "libthunder.1000.42x", "libthunder.1000.-42",
        "libthunder.1000.+42", "libthunder.1000. 42", "libthunder.1000.042",
        "libthunder.1000.99999999999999999999", "libthunder.10000.42", "libthunder-1000.42",
        "xlibthunder.1000.42", "", "libthunder.1000.42.", "libthunder.1000.42.0000000000000000",
        "libthunder.1000.42.00000000000000ag", "libthunder.1000.42.0123456789ABCDEF",
        "libthunder.1000.42.0123456789abcde", "libthunder.1000.42.0123456789abcdef0",
        "libthunder.1000.042.0123456789abcdef", "libthunder.1000.42.0123456789abcdef.1",
    };
    uint64_t inode;

    for (size_t i = 0; i < LEN(bad); i++)
        if (th_seg_parse_name(bad[i], 1000, &inode)) {
            tap_case_failed = 1;
            tap_diag("\"%s\" parsed as a segment name", bad[i]);
        }
    EXPECT(th_seg_parse_name("libthunder.1000.0", 1000, &inode) && inode == 0);
    /* an alternative name (segcore.h, th_seg_find) names the same inode */
    EXPECT(th_seg_parse_name("libthunder.1000.42.0123456789abcdef", 1000, &inode) &&
           inode == 42);
}

static void test_strategy_names(void)
{
    EXPECT(strcmp(th_strategy_name(TH_STRAT_NONE), "none") == 0);
    EXPECT(strcmp(th_strategy_name(TH_STRAT_OBSERVE), "observe") == 0);
    EXPECT(strcmp(th_strategy_name(TH_STRAT_LOCK), "lock") == 0);
    EXPECT(strcmp(th_strategy_name(TH_STRAT_EXCLUSIVE), "exclusive") == 0);
    EXPECT(strcmp(th_strategy_name(TH_STRAT_JITTER), "jitter") == 0);
    EXPECT(strcmp(th_strategy_name(TH_STRAT_PASS), "pass") == 0);
    EXPECT(strcmp(th_strategy_name(TH_STRAT_ALONE), "alone") == 0);
    EXPECT(strcmp(th_strategy_name(TH_STRAT_ALONE + 1), "?") == 0);
    EXPECT(strcmp(th_strategy_name(UINT32_MAX), "?") == 0);
}

/* ---- validation -------------------------------------------------------------- */

static void test_check_file(void)
{
    struct stat good = { .st_mode = S_IFREG | 0600, .st_uid = 1000,
                         .st_size = sizeof(struct th_seg) }, st;

    EXPECT(th_seg_check_file(&good, 1000) == NULL);
    st = good, st.st_mode = S_IFDIR | 0600;
    expect_reason(th_seg_check_file(&st, 1000), "regular");
    st = good, st.st_mode = S_IFIFO | 0600;
    expect_reason(th_seg_check_file(&st, 1000), "regular");
    expect_reason(th_seg_check_file(&good, 1001), "another user");
    for (mode_t m = 0; m <= 07777; m++) {
        st = good, st.st_mode = S_IFREG | m;
        if ((th_seg_check_file(&st, 1000) == NULL) != (m == 0600)) {
            tap_case_failed = 1;
            tap_diag("mode %04o: %s", (unsigned)m, th_seg_check_file(&st, 1000));
        }
    }
    st = good, st.st_mode = S_IFREG | 0644;
    expect_reason(th_seg_check_file(&st, 1000), "mode");
    const off_t n = sizeof(struct th_seg), sizes[] = { 0, 1, n / 2, n - 1, n + 1, n + 4096 };
    for (size_t i = 0; i < LEN(sizes); i++) {
        st = good, st.st_size = sizes[i];
        expect_reason(th_seg_check_file(&st, 1000), "wrong size");
    }
}

/* A header as th_seg_create writes it, in ordinary memory. */
static struct th_seg *good_header(void)
{
    struct th_seg *seg = calloc(1, sizeof(*seg));

    REQUIRE(seg != NULL);
    seg->magic = TH_SEG_MAGIC;
    seg->version = TH_SEG_VERSION;
    seg->size = sizeof(*seg);
    seg->uid = 1000;
    seg->inode = 77;
    atomic_store(&seg->ready, 1);
    return seg;
}

static void test_check_header(void)
{
    struct th_seg *seg = good_header();

    EXPECT(th_seg_check_header(seg, 1000, 77) == NULL);
    expect_reason(th_seg_check_header(seg, 1001, 77), "another user");
    expect_reason(th_seg_check_header(seg, 1000, 78), "inode");
    seg->magic ^= 1;
    expect_reason(th_seg_check_header(seg, 1000, 77), "magic");
    seg->magic ^= 1;
    seg->version++;
    expect_reason(th_seg_check_header(seg, 1000, 77), "version");
    seg->version--;
    seg->size = 4096;
    expect_reason(th_seg_check_header(seg, 1000, 77), "size");
    seg->size = sizeof(*seg);
    atomic_store(&seg->ready, 0);
    expect_reason(th_seg_check_header(seg, 1000, 77), "initialis");
    free(seg);
}

/* ---- liveness --------------------------------------------------------------------- */

static void test_liveness(void)
{
    pid_t zombie = fork(), gone = dead_pid();

    if (zombie == 0)
        _exit(0);
    REQUIRE(zombie > 0);
    EXPECT(th_thread_alive(getpid(), getpid()));
    EXPECT(th_proc_alive(getpid()));
    EXPECT(!th_pid_exited(getpid()));
    EXPECT(!th_thread_alive(gone, gone));
    EXPECT(!th_proc_alive(gone));
    EXPECT(!th_thread_alive(0, 0) && !th_thread_alive(-1, 0));
    for (int i = 0; i < 1000 && !th_pid_exited(zombie); i++)
        usleep(1000);                   /* exited, not reaped: a zombie */
    EXPECT(th_pid_exited(zombie));
    EXPECT(th_thread_alive(zombie, zombie));   /* it still answers a signal */
    EXPECT(!th_proc_alive(zombie));
    waitpid(zombie, NULL, 0);
}

/* ---- create, open --------------------------------------------------------------- */

static void test_create_and_open(void)
{
    uint64_t inode = fake_inode(0);
    struct th_seg *seg, *again;
    const char *why = NULL;
    char path[TH_SEG_PATH_MAX];
    struct stat st;

    umask(0777);
    seg = th_seg_create(geteuid(), inode, 0, TEST_PORT, getpid());
    REQUIRE(seg != NULL);
    seg_path(path, sizeof(path), inode);
    REQUIRE(stat(path, &st) == 0);
    EXPECT(th_seg_check_file(&st, geteuid()) == NULL);
    EXPECT(th_seg_check_header(seg, geteuid(), inode) == NULL);
    EXPECT_EQ(atomic_load(&seg->procs[0].pid), getpid());
    EXPECT_EQ(seg->port, TEST_PORT);
    EXPECT(th_seg_create(geteuid(), inode, 0, TEST_PORT, getpid()) == NULL && errno == EEXIST);
    again = th_seg_open(geteuid(), inode, false, false, &why);
    EXPECT(again != NULL && why == NULL);
    if (again) {
        EXPECT_EQ(atomic_load(&again->procs[0].pid), getpid());
        th_seg_unmap(again);
    }
    EXPECT(th_seg_open(geteuid(), fake_inode(1), false, false, &why) == NULL && why == NULL);
    seg_unlink(inode);
}

/* A link is never followed; a FIFO is refused without blocking the opener. */
static void test_open_refuses_link_and_fifo(void)
{
    uint64_t inode = fake_inode(0), target = fake_inode(1);
    char path[TH_SEG_PATH_MAX], to[TH_SEG_PATH_MAX];
    const char *why = NULL;

    REQUIRE(th_seg_create(geteuid(), target, 0, TEST_PORT, getpid()) != NULL);
    seg_path(path, sizeof(path), inode);
    seg_path(to, sizeof(to), target);
    REQUIRE(symlink(to, path) == 0);
    EXPECT(th_seg_open(geteuid(), inode, true, true, &why) == NULL);
    expect_reason(why, "symbolic link");
    REQUIRE(unlink(path) == 0);
    REQUIRE(mkfifo(path, 0600) == 0);
    for (int writable = 0; writable < 2; writable++) {
        why = NULL;
        EXPECT(th_seg_open(geteuid(), inode, writable, true, &why) == NULL);
        expect_reason(why, "regular");
    }
    seg_unlink(inode);
    seg_unlink(target);
}

/* ---- the stale check ------------------------------------------------------------ */

static void test_stale_check(void)
{
    uint64_t inode = fake_inode(0);
    struct th_seg *seg = th_seg_create(geteuid(), inode, 0, TEST_PORT, getpid());
    pid_t gone = dead_pid();

    REQUIRE(seg != NULL);
    EXPECT(!th_seg_stale(seg, 0));             /* the creator is registered, alive */
    EXPECT(th_seg_stale(seg, getpid()));       /* ... unless it is the one leaving */
    atomic_store(&seg->procs[0].pid, gone);
    atomic_store(&seg->procs[9].pid, gone);
    EXPECT(th_seg_stale(seg, 0));
    seg->holder_pid = getpid();                /* a live holder keeps it */
    EXPECT(!th_seg_stale(seg, 0));
    seg->holder_pid = gone;
    atomic_store(&seg->waiters[5].state, TH_W_QUEUED);   /* a live waiter keeps it */
    seg->waiters[5].pid = getpid();
    EXPECT(!th_seg_stale(seg, 0));
    atomic_store(&seg->waiters[5].state, TH_W_FREE);      /* a free slot does not */
    EXPECT(th_seg_stale(seg, 0));
    seg_unlink(inode);
}

/* ---- the guard and remove-if-stale ---------------------------------------------- */

static void test_remove_if_stale(void)
{
    uint64_t inode = fake_inode(0);
    struct th_seg *seg = th_seg_create(geteuid(), inode, 0, TEST_PORT, getpid());

    REQUIRE(seg != NULL);
    for (int patient = 0; patient < 2; patient++)
        EXPECT_EQ(th_seg_remove_if_stale(seg, patient), TH_SEG_IN_USE);
    EXPECT(seg_exists(inode));
    atomic_store(&seg->procs[0].pid, dead_pid());
    EXPECT_EQ(th_seg_remove_if_stale(seg, false), TH_SEG_REMOVED);
    EXPECT(!seg_exists(inode));
    EXPECT_EQ(atomic_load(&seg->unlinked), 1);
    EXPECT_EQ(th_seg_remove_if_stale(seg, true), TH_SEG_LEAVING);
    /* the leaving process is not counted: the library's last detach */
    seg = th_seg_create(geteuid(), inode, 0, TEST_PORT, getpid());
    REQUIRE(seg != NULL);
    REQUIRE(th_seg_guard_lock(seg) == 0);
    EXPECT_EQ(th_seg_remove_if_stale_locked(seg, getpid()), TH_SEG_REMOVED);
    th_seg_guard_unlock(seg);
    EXPECT(!seg_exists(inode));
}

/*
 * A guard held by a live process: the sweep's trylock leaves at once, gc's
 * timed lock within its bound; once the holder dies the guard is repaired
 * (EOWNERDEAD) and the segment, stale now, goes.
 */
static void test_remove_guard_busy_then_owner_dead(void)
{
    uint64_t inode = fake_inode(0);
    struct th_seg *seg = th_seg_create(geteuid(), inode, 0, TEST_PORT, getpid());
    int ready[2];
    pid_t holder;
    double t0;
    char c;

    REQUIRE(seg != NULL && pipe(ready) == 0);
    atomic_store(&seg->procs[0].pid, 0);
    holder = fork();
    if (holder == 0) {
        if (th_seg_guard_lock(seg) != 0)
            _exit(1);
        c = 1;
        if (write(ready[1], &c, 1) != 1)
            _exit(1);
        pause();
        _exit(0);
    }
    REQUIRE(holder > 0 && read(ready[0], &c, 1) == 1);
    t0 = tap_now_ms();
    EXPECT_EQ(th_seg_remove_if_stale(seg, false), TH_SEG_GUARD_BUSY);
    EXPECT(tap_now_ms() - t0 < 100.0);
    t0 = tap_now_ms();
    EXPECT_EQ(th_seg_remove_if_stale(seg, true), TH_SEG_GUARD_BUSY);
    tap_diag("the timed guard gave up after %.0f ms", tap_now_ms() - t0);
    EXPECT(tap_now_ms() - t0 < TH_SEG_GUARD_TIMEOUT_S * 1000.0 + 2000.0);
    EXPECT(seg_exists(inode));
    kill(holder, SIGKILL);
    waitpid(holder, NULL, 0);
    EXPECT_EQ(th_seg_remove_if_stale(seg, false), TH_SEG_REMOVED);
    EXPECT(!seg_exists(inode));
}

static const struct tap_case cases[] = {
    { "layout: identity header offsets", test_layout_header },
    { "layout: lock fields follow the guard", test_layout_lock },
    { "layout: waiter slot and statistics", test_layout_waiter_and_stats },
    { "name: build, path and parse agree", test_name_round_trip },
    { "name: other users, junk and leading zeros are not segment names", test_name_parse_refuses },
    { "strategy names, and ? for unknown values", test_strategy_names },
    { "file check: type, owner, exactly mode 0600, size", test_check_file },
    { "header check: magic, version, size, uid, inode, ready", test_check_header },
    { "liveness: self, reaped, zombie", test_liveness },
    { "create: 0600 under umask 0777, valid, creator registered; open", test_create_and_open },
    { "open: symlink never followed, FIFO refused without blocking",
      test_open_refuses_link_and_fifo },
    { "stale: only when every holder, slot and waiter is gone", test_stale_check },
    { "remove if stale: in use, removed, leaving, last detach", test_remove_if_stale },
    { "remove if stale: busy guard left alone, dead owner repaired",
      test_remove_guard_busy_then_owner_dead },
};

int main(void)
{
    tap_setup = isolate_uid;
    return tap_run(cases, LEN(cases), seg_cleanup_case);
}

/*
 * The library's th_seg_attach facing everything a hostile or crashed world can leave at
 * /dev/shm/libthunder.<uid>.<inode>.  The rule (segment.c): nothing is
 * trusted before validation; a segment that fails is refused with one
 * warning (its listener runs pass-through); a segment left by processes
 * that are all dead is reset and reused.  Never a crash, never a hang.
 * (The layout pins and the core's own checks: test_segcore.c; leaving and
 * the sweep: test_sweep.c.)
 */
#include "seghelp.h"

#include <arpa/inet.h>
#include <dirent.h>
#include <netinet/in.h>
#include <pwd.h>
#include <sys/wait.h>

#define REFUSE_BOUND_MS 3000.0   /* attach waits up to 200 ms, the guard 1 s */

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

/*
 * Another user's file at the name (a squatter's) is never opened, removed
 * or written, by root either: the segment takes an alternative name that
 * every process of the socket finds (the same memory), and goes with it.
 */
static void squatted_gets_alternative(uint64_t inode, bool fifo)
{
    char path[160], alt[TH_SEG_PATH_MAX];
    struct stat before, after;
    struct th_seg *a, *b;

    seg_path(path, sizeof(path), inode);
    if (fifo) {
        REQUIRE(mkfifo(path, 0666) == 0);
    } else {
        int fd = open(path, O_CREAT | O_EXCL | O_WRONLY, 0644);
        REQUIRE(fd >= 0 && write(fd, "squatter\n", 9) == 9);
        close(fd);
    }
    REQUIRE(chown(path, 65534, 65534) == 0);
    REQUIRE(lstat(path, &before) == 0);
    th_log_set_level(TH_LOG_OFF);
    a = th_seg_attach(inode, TEST_PORT);
    REQUIRE(a != NULL);
    EXPECT(a->name_suffix != 0);
    REQUIRE(th_seg_find(geteuid(), inode, alt, sizeof(alt)));
    EXPECT(strcmp(alt, path) != 0);
    b = th_seg_attach(inode, TEST_PORT);        /* another process would find it */
    REQUIRE(b != NULL);
    atomic_store(&a->procs[3].accepts, 777);
    EXPECT_EQ(atomic_load(&b->procs[3].accepts), 777);
    REQUIRE(lstat(path, &after) == 0);
    EXPECT_EQ(after.st_ino, before.st_ino);
    EXPECT_EQ(after.st_uid, 65534);
    EXPECT_EQ(after.st_size, before.st_size);
    EXPECT(after.st_mtim.tv_sec == before.st_mtim.tv_sec &&
           after.st_mtim.tv_nsec == before.st_mtim.tv_nsec);
    EXPECT(after.st_atim.tv_sec == before.st_atim.tv_sec &&
           after.st_atim.tv_nsec == before.st_atim.tv_nsec);   /* never even read */
    unlink(alt);
    unlink(path);
}

static void test_foreign_owner_alternative(void)
{
    if (getuid() != 0 || seteuid(0) != 0)      /* back from isolate_uid() */
        tap_skip("needs root to give a file to another user");
    setegid(0);
    squatted_gets_alternative(fake_inode(1), false);
    squatted_gets_alternative(fake_inode(2), true);
}

/*
 * Many processes holding one squatted listener attach at the same moment
 * (workers started together): they must all end on ONE alternative
 * segment.  The creators' record lock is on the real socket, so this case
 * uses one.
 */
#define RACERS 16
static void test_squatted_racers_one_segment(void)
{
    struct sockaddr_in addr = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
    int go[2], sock, fd, found = 0;
    pid_t pids[RACERS];
    char path[160], prefix[160];
    struct stat st;
    struct dirent *de;
    DIR *dir;

    if (getuid() != 0 || seteuid(0) != 0)
        tap_skip("needs root to give a file to another user");
    setegid(0);
    sock = socket(AF_INET, SOCK_STREAM, 0);
    REQUIRE(sock >= 0 && bind(sock, (struct sockaddr *)&addr, sizeof(addr)) == 0);
    REQUIRE(listen(sock, 8) == 0 && fstat(sock, &st) == 0);
    th_seg_path(path, sizeof(path), geteuid(), st.st_ino);
    REQUIRE((fd = open(path, O_CREAT | O_EXCL | O_WRONLY, 0644)) >= 0);
    close(fd);
    REQUIRE(chown(path, 65534, 65534) == 0);
    REQUIRE(pipe(go) == 0);
    th_log_set_level(TH_LOG_OFF);
    for (int i = 0; i < RACERS; i++) {
        REQUIRE((pids[i] = fork()) >= 0);
        if (pids[i] == 0) {
            char c;
            struct th_seg *seg;
            close(go[1]);
            th_self_refresh();
            if (read(go[0], &c, 1) < 0)
                _exit(2);
            seg = th_seg_attach(st.st_ino, TEST_PORT);
            _exit(seg == NULL ? 3 : 0);
        }
    }
    close(go[0]);
    close(go[1]);                                        /* go */
    for (int i = 0; i < RACERS; i++) {
        int status;
        waitpid(pids[i], &status, 0);
        EXPECT(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    }
    snprintf(prefix, sizeof(prefix), "%s.", strrchr(path, '/') + 1);
    REQUIRE((dir = opendir("/dev/shm")) != NULL);
    while ((de = readdir(dir)) != NULL)
        if (strncmp(de->d_name, prefix, strlen(prefix)) == 0) {
            char alt[400];
            found++;
            snprintf(alt, sizeof(alt), "/dev/shm/%s", de->d_name);
            unlink(alt);
        }
    closedir(dir);
    tap_diag("%d racers, %d alternative segment(s)", RACERS, found);
    EXPECT_EQ(found, 1);
    unlink(path);
    close(sock);
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

/*
 * Slots are taken in order and procs_used bounds them: the scans on busy
 * paths (dead waiters' counts, others' activity) stop there, and a value
 * past the array from a corrupt file is clamped.
 */
static void test_procs_used_bounds_slots(void)
{
    uint64_t inode = fake_inode(0);
    struct th_seg *seg = attach_claimed(inode);
    pid_t gone = dead_pid();
    struct th_proc_stats *a, *b;

    EXPECT_EQ(th_seg_procs_used(seg), 1);
    a = th_seg_claim_slot(seg, gone);
    REQUIRE(a == &seg->procs[1]);
    EXPECT_EQ(th_seg_procs_used(seg), 2);
    EXPECT(th_seg_claim_slot(seg, gone) == a);        /* its own again */
    EXPECT_EQ(th_seg_procs_used(seg), 2);
    /* a dead process's part of seg->waiting is found within the bound */
    atomic_store(&a->waiting, 3);
    atomic_fetch_add(&seg->waiting, 3);
    th_seg_drop_dead_waiting(seg);
    EXPECT_EQ(atomic_load(&seg->waiting), 0);
    EXPECT_EQ(atomic_load(&a->waiting), 0);
    atomic_store(&a->pid, 0);                          /* left: reused first */
    b = th_seg_claim_slot(seg, gone + 1);
    EXPECT(b == a);
    EXPECT_EQ(th_seg_procs_used(seg), 2);
    atomic_store(&seg->procs_used, 5000);
    EXPECT_EQ(th_seg_procs_used(seg), TH_MAX_PROCS);
    atomic_store(&seg->procs_used, 2);
    seg_unlink(inode);
}

static const struct tap_case cases[] = {
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
    { "another uid's file or FIFO at the name: untouched, an alternative name (root only)",
      test_foreign_owner_alternative },
    { "squatted name, 16 processes attaching at once: one alternative segment",
      test_squatted_racers_one_segment },
    { "refuse: symlink at the name, never followed", test_refuse_symlink },
    { "refuse: directory at the name", test_refuse_directory },
    { "garbage lock fields, all users dead: reset on attach", test_garbage_all_dead_is_reset },
    { "garbage lock fields, a live user: lock recovers", test_garbage_with_live_user_recovers },
    { "garbage hold time in the future: lock recovers", test_garbage_future_hold_time },
    { "guard owned by a dead thread: refused within bounds", test_garbage_guard_owner },
    { "guard bytes garbage: no crash, bounded", test_garbage_guard_bytes },
    { "slots taken in order, bounded by procs_used (clamped)", test_procs_used_bounds_slots },
};

int main(void)
{
    tap_setup = isolate_uid;
    return tap_run(cases, TH_ARRAY_LEN(cases), seg_cleanup_case);
}

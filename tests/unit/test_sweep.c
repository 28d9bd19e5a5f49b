/*
 * Leaving and sweeping: the last process to leave removes its segment
 * (th_seg_detach), statistics slots are claimed per pid, and creating a
 * segment sweeps this user's stale ones (segment.c's sweep_stale) with the
 * segment core's th_seg_remove_if_stale, the function thunder-stat --gc
 * calls too.
 */
#include "seghelp.h"

#include <poll.h>

/* ---- leaving ------------------------------------------------------------ */

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
    atomic_store(&seg->procs_used, TH_MAX_PROCS);          /* as claims leave it */
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
    int go[2], done[2], missing = 0, attached = 0;
    double deadline = tap_now_ms() + 20000.0;    /* far above the normal ~10 ms */

    REQUIRE(pipe(go) == 0 && pipe(done) == 0);
    for (int i = 0; i < SWEEP_RACERS; i++) {
        pids[i] = fork();
        REQUIRE(pids[i] >= 0);
        if (pids[i] == 0) {
            char c = 1;
            struct th_seg *seg;
            close(go[1]);
            if (read(go[0], &c, 1) < 0)
                _exit(2);
            seg = th_seg_attach(fake_inode_of(getppid(), 16 + i), TEST_PORT);
            if (seg == NULL || th_seg_claim_slot(seg, getpid()) == NULL)
                _exit(3);
            if (write(done[1], &c, 1) != 1)       /* attached and registered */
                _exit(4);
            pause();
            _exit(0);
        }
    }
    close(go[0]);
    close(go[1]);                                        /* go */
    close(done[1]);
    /* every racer's own attach is over (a slow machine: no fixed sleep) */
    while (attached < SWEEP_RACERS && tap_now_ms() < deadline) {
        char c;
        struct pollfd p = { .fd = done[0], .events = POLLIN };
        if (poll(&p, 1, 100) == 1 && read(done[0], &c, 1) == 1)
            attached++;
    }
    for (int i = 0; i < SWEEP_RACERS; i++)
        missing += !seg_exists(fake_inode(16 + i));
    for (int i = 0; i < SWEEP_RACERS; i++) {
        kill(pids[i], SIGKILL);
        waitpid(pids[i], NULL, 0);
        seg_unlink(fake_inode(16 + i));
    }
    close(done[0]);
    tap_diag("%d of %d racers attached; %d of their segments were swept", attached,
             SWEEP_RACERS, missing);
    EXPECT_EQ(attached, SWEEP_RACERS);
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

/* A segment every process of which is dead goes at the next creation. */
static void test_sweep_removes_dead(void)
{
    uint64_t dead = fake_inode(1), busy = fake_inode(2);
    struct th_seg *seg = attach_claimed(dead), *held = attach_claimed(busy);

    atomic_store(&seg->procs[0].pid, dead_pid());     /* its one user is gone */
    for (int i = 0; i < TH_MAX_PROCS; i++)
        atomic_store(&held->procs[i].pid, 0);          /* stale too, but ... */
    REQUIRE(th_seg_guard_lock(held) == 0);            /* ... its guard is busy */
    REQUIRE(th_seg_attach(fake_inode(3), TEST_PORT) != NULL);   /* creates: sweeps */
    EXPECT(!seg_exists(dead));
    EXPECT_EQ(atomic_load(&seg->unlinked), 1);
    EXPECT(seg_exists(busy));                 /* the sweep never waits: left for gc */
    th_seg_guard_unlock(held);
    REQUIRE(th_seg_attach(fake_inode(4), TEST_PORT) != NULL);
    EXPECT(!seg_exists(busy));
}

static const struct tap_case cases[] = {
    { "detach: the last process removes the segment", test_detach_last_removes },
    { "attach after the last user left creates afresh", test_attach_after_unlink },
    { "statistics slots: per pid, reused from dead pids, bounded", test_claim_slots },
    { "sweep: a segment just attached by a live process survives", test_sweep_spares_fresh_segment },
    { "sweep: 32 concurrent creators keep all their segments", test_sweep_concurrent_creators },
    { "sweep: no stall on leftover half-made segments", test_sweep_does_not_stall },
    { "sweep: a dead segment goes, a busy one waits for the next", test_sweep_removes_dead },
};

int main(void)
{
    tap_setup = isolate_uid;
    return tap_run(cases, TH_ARRAY_LEN(cases), seg_cleanup_case);
}

/*
 * policy.c's spreading rules as pure decisions: when an accept rotates its
 * exclusive entry, when a wait yields a re-reported listener, and when a
 * further accept of one wake-up is refused.  The
 * numbers that make them right are in bench/RESULTS.md; these cases pin
 * the rules, so a change to them is a deliberate one.
 */
#include "thunder.h"
#include "tap.h"

#define MS TH_NS_PER_MS

static void mode(enum th_mode m, enum th_balance b)
{
    th_cfg.mode = m;
    th_cfg.lock.balance = b;
}

/* An accept's facts: its wait slept, a rotation owed, other threads
   waiting, accepts by others since this process's last, its accepts, and
   those since its last rotation; long after the listener was idle. */
static struct th_rotation_facts facts(bool slept, bool owed, int waiting, uint32_t gap,
                                      uint64_t accepts, uint64_t taken)
{
    return (struct th_rotation_facts){ .slept = slept, .owed = owed, .others_waiting = waiting,
                                       .accept_gap = gap, .accepts = accepts, .taken = taken,
                                       .since_idle_ns = INT64_MAX };
}

static bool rotates(struct th_rotation_facts f)
{
    return th_policy_rotates(&f);
}

static bool owes(struct th_rotation_facts f)
{
    return th_policy_owes_rotation(&f);
}

static struct th_rotation_facts program_rotating(struct th_rotation_facts f)
{
    f.program_rotates = true;
    return f;
}

static void test_rotates_only_ahead_of_idle_waiters(void)
{
    mode(TH_MODE_AUTO, TH_BALANCE_FIFO);
    EXPECT(rotates(facts(true, false, 3, 0, 2, 2)));           /* took two in a row */
    EXPECT(rotates(facts(true, false, 3, 2, 2, 1)));           /* one idle waiter had none since */
    EXPECT(!rotates(facts(true, false, 3, 3, 2, 1)));          /* every idle one may have had its turn */
    EXPECT(!rotates(facts(true, false, 3, UINT32_MAX, 1, 1))); /* first accept of this thread */
    EXPECT(!rotates(facts(false, false, 3, 0, 2, 2)));         /* did not sleep: saturated */
    EXPECT(!rotates(facts(true, false, 0, 0, 2, 2)));          /* nobody to go behind */
    EXPECT(rotates(facts(false, true, 3, 0, 2, 2)));           /* owed by the turn's first take */
    EXPECT(!rotates(facts(false, true, 3, 3, 2, 2)));
    EXPECT(owes(facts(true, false, 3, 3, 1, 1)));              /* a turn's first take */
    EXPECT(!owes(facts(false, false, 3, 3, 1, 1)));
    EXPECT(!owes(facts(true, false, 3, 2, 1, 1)));             /* it rotates at once instead */
    EXPECT(!rotates(program_rotating(facts(true, false, 3, 0, 2, 2))));   /* nginx */
    EXPECT(!rotates(program_rotating(facts(false, true, 3, 0, 2, 2))));
    EXPECT(!owes(program_rotating(facts(true, false, 3, 3, 1, 1))));
}

/* A turn grows with what the worker has taken: 1/16 of it, up to 8; in a
   burst it stays one connection. */
static void test_turns_grow_with_the_total_but_not_in_a_burst(void)
{
    struct th_rotation_facts f = facts(true, false, 50, 0, 160, 7);

    mode(TH_MODE_AUTO, TH_BALANCE_FIFO);
    EXPECT(rotates(facts(true, false, 50, 0, 31, 1)));         /* few taken: every turn */
    EXPECT(!rotates(facts(true, false, 50, 0, 32, 1)));        /* 32: two in a row */
    EXPECT(rotates(facts(true, false, 50, 0, 32, 2)));
    EXPECT(!rotates(f));                                       /* 160 taken: 7 of 8 */
    EXPECT(rotates(facts(true, false, 50, 0, 160, 8)));
    EXPECT(rotates(facts(true, false, 50, 0, 100000, 8)));     /* never more than 8 */
    f.since_idle_ns = 5 * MS;                                  /* a burst: one */
    EXPECT(rotates(f));
    f.taken = 1;
    EXPECT(rotates(f));
}

static void test_rotation_belongs_to_fifo_exclusive_modes(void)
{
    mode(TH_MODE_EXCLUSIVE, TH_BALANCE_FIFO);
    EXPECT(rotates(facts(true, false, 3, 0, 2, 2)));
    mode(TH_MODE_AUTO, TH_BALANCE_LIFO);
    EXPECT(!rotates(facts(true, false, 3, 0, 2, 2)));
    mode(TH_MODE_LOCK, TH_BALANCE_FIFO);
    EXPECT(!rotates(facts(true, false, 3, 0, 2, 2)));
    mode(TH_MODE_OBSERVE, TH_BALANCE_FIFO);
    EXPECT(!rotates(facts(true, false, 3, 0, 2, 2)));
}

/* An instance whose listener entries are the program's own exclusive ones,
   rotated by the program (nginx): its waits are passed through. */
static void test_program_balanced_waits_pass_through(void)
{
    struct th_wait_facts own = { .epoll = true, .all_exclusive = true, .program_balanced = true };
    struct th_wait_facts ours = { .epoll = true, .all_exclusive = true };
    struct th_wait_facts shared = own, threaded = own;

    shared.shared = true;
    threaded.threaded = true;
    mode(TH_MODE_AUTO, TH_BALANCE_FIFO);
    EXPECT(th_policy_wait(&own).strategy == TH_STRAT_PASS);
    EXPECT(th_policy_wait(&ours).strategy == TH_STRAT_EXCLUSIVE);
    EXPECT(th_policy_wait(&shared).strategy == TH_STRAT_LOCK);   /* several processes wait */
    EXPECT(th_policy_wait(&threaded).strategy == TH_STRAT_LOCK);
    mode(TH_MODE_EXCLUSIVE, TH_BALANCE_FIFO);
    EXPECT(th_policy_wait(&own).strategy == TH_STRAT_PASS);
    EXPECT(th_policy_wait(&ours).strategy == TH_STRAT_EXCLUSIVE);
    mode(TH_MODE_LOCK, TH_BALANCE_FIFO);
    EXPECT(th_policy_wait(&own).strategy == TH_STRAT_LOCK);     /* lock mode locks every wait */
}

/* A thread alone on its listeners (nginx accept_mutex on: only the
   holder's instance has the listener): nothing to wake instead, nobody
   to spread to; its waits are passed through on a private instance. */
static void test_a_thread_alone_passes_through(void)
{
    struct th_wait_facts alone = { .epoll = true, .all_exclusive = true, .alone = true };
    struct th_wait_facts own = alone, shared = alone, threaded = alone, plain = alone;

    own.program_balanced = true;
    shared.shared = true;
    threaded.threaded = true;
    plain.all_exclusive = false;
    mode(TH_MODE_AUTO, TH_BALANCE_FIFO);
    EXPECT(th_policy_wait(&alone).strategy == TH_STRAT_ALONE);
    EXPECT(th_policy_wait(&own).strategy == TH_STRAT_PASS);     /* the program's own first */
    EXPECT(th_policy_wait(&shared).strategy == TH_STRAT_LOCK);
    EXPECT(th_policy_wait(&threaded).strategy == TH_STRAT_LOCK);
    EXPECT(th_policy_wait(&plain).strategy == TH_STRAT_LOCK);   /* an entry not exclusive */
    mode(TH_MODE_EXCLUSIVE, TH_BALANCE_FIFO);
    EXPECT(th_policy_wait(&alone).strategy == TH_STRAT_ALONE);
    mode(TH_MODE_LOCK, TH_BALANCE_FIFO);
    EXPECT(th_policy_wait(&alone).strategy == TH_STRAT_LOCK);
    mode(TH_MODE_OBSERVE, TH_BALANCE_FIFO);
    EXPECT(th_policy_wait(&alone).strategy == TH_STRAT_OBSERVE);
    EXPECT(th_plan_passes((struct th_plan){ .strategy = TH_STRAT_ALONE }));
    EXPECT(th_plan_passes((struct th_plan){ .strategy = TH_STRAT_PASS }));
    EXPECT(!th_plan_passes((struct th_plan){ .strategy = TH_STRAT_EXCLUSIVE }));
}

/* A worker a steady load keeps busy (its last wait did not sleep, it took
   a connection, no burst on): its exclusive waits are passed through. */
static void test_a_busy_worker_passes_through(void)
{
    mode(TH_MODE_AUTO, TH_BALANCE_FIFO);
    EXPECT(th_policy_stays_busy(false, true, 0, 21 * MS));
    EXPECT(th_policy_stays_busy(false, true, 0, INT64_MAX));
    EXPECT(!th_policy_stays_busy(true, true, 0, INT64_MAX));    /* it slept: idle workers */
    EXPECT(!th_policy_stays_busy(false, false, 0, INT64_MAX));  /* came back empty-handed */
    EXPECT(!th_policy_stays_busy(false, true, 1, INT64_MAX));   /* an idle worker was woken for it */
    EXPECT(!th_policy_stays_busy(false, true, 0, 19 * MS));     /* a burst: its rules apply */
    EXPECT(th_plan_passes(th_policy_busy_plan()));
    mode(TH_MODE_EXCLUSIVE, TH_BALANCE_FIFO);
    EXPECT(th_policy_stays_busy(false, true, 0, INT64_MAX));
    mode(TH_MODE_AUTO, TH_BALANCE_LIFO);
    EXPECT(th_policy_stays_busy(false, true, 0, INT64_MAX));
    mode(TH_MODE_LOCK, TH_BALANCE_FIFO);
    EXPECT(!th_policy_stays_busy(false, true, 0, INT64_MAX));
    mode(TH_MODE_OBSERVE, TH_BALANCE_FIFO);
    EXPECT(!th_policy_stays_busy(false, true, 0, INT64_MAX));
}

static void test_yields_only_in_a_burst(void)
{
    mode(TH_MODE_AUTO, TH_BALANCE_FIFO);
    EXPECT(th_policy_yields(2, 1 * MS, 3, 10));
    EXPECT(th_policy_yields(5, 19 * MS, 1, 2));
    EXPECT(!th_policy_yields(1, 1 * MS, 3, 10));     /* one re-take is no streak */
    EXPECT(!th_policy_yields(2, 21 * MS, 3, 10));    /* long after a rest: saturated */
    EXPECT(!th_policy_yields(2, INT64_MAX, 3, 10));  /* never rested */
    EXPECT(!th_policy_yields(2, 1 * MS, 0, 10));     /* nobody idle to take it */
    EXPECT(!th_policy_yields(2, 1 * MS, 3, 1));      /* one queued: the one a sleeper was woken for */
    EXPECT(!th_policy_yields(2, 1 * MS, 3, -1));     /* queue unknown */
}

static void test_yields_only_in_auto_fifo(void)
{
    mode(TH_MODE_EXCLUSIVE, TH_BALANCE_FIFO);
    EXPECT(!th_policy_yields(2, 1 * MS, 3, 10));
    mode(TH_MODE_AUTO, TH_BALANCE_LIFO);
    EXPECT(!th_policy_yields(2, 1 * MS, 3, 10));
}

static void test_refuses_only_in_a_burst(void)
{
    mode(TH_MODE_AUTO, TH_BALANCE_FIFO);
    EXPECT(th_policy_refuses_more(true, true, 1 * MS));
    EXPECT(!th_policy_refuses_more(true, true, 21 * MS));    /* saturated: no rest */
    EXPECT(!th_policy_refuses_more(true, true, INT64_MAX));  /* never rested */
    EXPECT(!th_policy_refuses_more(false, true, 1 * MS));    /* the next wait would not report it */
    EXPECT(!th_policy_refuses_more(true, false, 1 * MS));    /* nobody else to take it */
    mode(TH_MODE_EXCLUSIVE, TH_BALANCE_FIFO);
    EXPECT(!th_policy_refuses_more(true, true, 1 * MS));
    mode(TH_MODE_AUTO, TH_BALANCE_LIFO);
    EXPECT(!th_policy_refuses_more(true, true, 1 * MS));
}

static void test_lock_waits_queue_only_in_a_burst(void)
{
    mode(TH_MODE_AUTO, TH_BALANCE_FIFO);
    /* serves_backlog_unlocked(streak, threaded, since_rest, idle_queued, queued) */
    EXPECT(!th_policy_serves_backlog_unlocked(2, false, 1 * MS, true, 5));  /* queue: the lock spreads it */
    EXPECT(th_policy_serves_backlog_unlocked(1, false, 1 * MS, true, 5));   /* no streak yet */
    EXPECT(!th_policy_serves_backlog_unlocked(0, true, 1 * MS, true, 5));   /* threads: no streak needed */
    EXPECT(th_policy_serves_backlog_unlocked(2, false, 21 * MS, true, 5));  /* saturated: look */
    EXPECT(th_policy_serves_backlog_unlocked(0, true, 21 * MS, true, 5));
    EXPECT(th_policy_serves_backlog_unlocked(2, false, 1 * MS, false, 5));  /* nobody idle */
    EXPECT(th_policy_serves_backlog_unlocked(2, false, 1 * MS, true, 1));   /* one queued */
    mode(TH_MODE_LOCK, TH_BALANCE_FIFO);
    EXPECT(th_policy_serves_backlog_unlocked(2, true, 1 * MS, true, 5));    /* lock mode always looks */
    mode(TH_MODE_EXCLUSIVE, TH_BALANCE_FIFO);
    EXPECT(!th_policy_serves_backlog_unlocked(0, false, INT64_MAX, false, 0)); /* no lock waits */
}

static void test_blocking_accept_pauses_only_in_a_burst(void)
{
    mode(TH_MODE_AUTO, TH_BALANCE_FIFO);
    /* pauses_accept(streak, since_rest, others_waiting, queued, since_pause) */
    EXPECT(th_policy_pauses_accept(1, 1 * MS, 3, 1, 50 * MS));
    EXPECT(!th_policy_pauses_accept(1, 21 * MS, 3, 1, 50 * MS));      /* saturated: no rest */
    EXPECT(!th_policy_pauses_accept(1, INT64_MAX, 3, 1, 50 * MS));    /* never rested */
    EXPECT(!th_policy_pauses_accept(0, 1 * MS, 3, 1, 50 * MS));       /* it slept: no streak */
    EXPECT(!th_policy_pauses_accept(2, 1 * MS, 3, 1, 50 * MS));       /* paused already */
    EXPECT(!th_policy_pauses_accept(1, 1 * MS, 0, 1, 50 * MS));       /* nobody else in accept */
    EXPECT(!th_policy_pauses_accept(1, 1 * MS, 3, 0, 50 * MS));       /* nothing queued */
    EXPECT(!th_policy_pauses_accept(1, 1 * MS, 3, 1, 5 * MS));        /* paused just before */
    mode(TH_MODE_LOCK, TH_BALANCE_FIFO);
    EXPECT(!th_policy_pauses_accept(1, 1 * MS, 3, 1, 50 * MS));
}

static void test_lookers_only_for_a_long_queue_in_a_burst(void)
{
    mode(TH_MODE_AUTO, TH_BALANCE_FIFO);
    /* lookers(slept, waited, conns_queued, threads_queued) */
    EXPECT_EQ(th_policy_lookers(false, 5 * MS, 10, 63), 4);     /* capped */
    EXPECT_EQ(th_policy_lookers(false, 5 * MS, 4, 63), 2);      /* one per extra connection */
    EXPECT_EQ(th_policy_lookers(false, 5 * MS, 2, 63), 0);      /* grantee and this one */
    EXPECT_EQ(th_policy_lookers(true, 5 * MS, 10, 63), 0);      /* slept: no backlog */
    EXPECT_EQ(th_policy_lookers(false, 1 * MS, 10, 63), 0);     /* was not idle in the queue */
    EXPECT_EQ(th_policy_lookers(false, 5 * MS, 10, 15), 0);     /* 16 workers: one at a time */
    mode(TH_MODE_LOCK, TH_BALANCE_FIFO);
    EXPECT_EQ(th_policy_lookers(false, 5 * MS, 10, 63), 0);
    mode(TH_MODE_AUTO, TH_BALANCE_LIFO);
    EXPECT_EQ(th_policy_lookers(false, 5 * MS, 10, 63), 0);
}

static const struct tap_case cases[] = {
    { "rotation: only while ahead of idle waiters", test_rotates_only_ahead_of_idle_waiters },
    { "rotation: a turn grows with the total, not in a burst",
      test_turns_grow_with_the_total_but_not_in_a_burst },
    { "rotation: exclusive and auto modes, fifo balance", test_rotation_belongs_to_fifo_exclusive_modes },
    { "yield: a streak soon after a rest, others idle, a queue", test_yields_only_in_a_burst },
    { "yield: auto mode, fifo balance only", test_yields_only_in_auto_fifo },
    { "refusal: a further accept in a burst, others waiting, auto fifo", test_refuses_only_in_a_burst },
    { "lock waits: queue instead of looking only in a burst", test_lock_waits_queue_only_in_a_burst },
    { "the program's own rotated exclusive entries: waits passed through (auto, exclusive)",
      test_program_balanced_waits_pass_through },
    { "a thread alone on its listeners: waits passed through (auto, exclusive)",
      test_a_thread_alone_passes_through },
    { "a busy worker: exclusive waits passed through outside bursts (auto, exclusive)",
      test_a_busy_worker_passes_through },
    { "lock fan-out: a long queue, idle before a backlog, auto fifo, capped",
      test_lookers_only_for_a_long_queue_in_a_burst },
    { "blocking accept: pause only in a burst, back at once, others in accept, a queue",
      test_blocking_accept_pauses_only_in_a_burst },
};

int main(void)
{
    return tap_run(cases, TH_ARRAY_LEN(cases), NULL);
}

/*
 * The shared-memory segment of one listening socket: its FIFO accept lock
 * and its per-process statistics.  This layout is read by every process
 * that holds the listener and by the statistics reader (thunder-stat), so
 * any change to it must bump TH_SEG_VERSION.  tests/unit/test_segment.c
 * pins the offsets.
 *
 * What is known about a segment beyond its layout (its name, how it is
 * validated, when it is stale, its guard) is the segment core's:
 * segcore.h, shared by the library, thunder-stat and the tests.
 */
#pragma once

#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>

#define TH_SEG_MAGIC   0x7468756e64657231ULL   /* "thunder1" */
#define TH_SEG_VERSION 3u   /* 2: name_suffix, doorbell address and token per waiter,
                                waiting counts, refused/yields, holder_stopped_ns,
                                1024 slots each; 3: a cache line per slot and for
                                waiting/accept_seq, procs_used */
#define TH_MAX_WAITERS 1024  /* threads queued on one listener's lock */
#define TH_MAX_PROCS   1024  /* processes with statistics for one listener */
#define TH_SEG_PREFIX  "libthunder."
/* Slots written on every accept by different processes sit on cache lines
   of their own: sharing one made every counter a cross-CPU transfer. */
#define TH_CACHE_LINE  64

/* A waiter slot's futex word. */
enum th_waiter_state {
    TH_W_FREE = 0,
    TH_W_QUEUED = 1,      /* asleep (or about to be) on its own word */
    TH_W_GRANTED = 2,     /* the lock was handed to it; it holds it now */
};

#define TH_WF_DOORBELL 1u
#define TH_WF_LOOK     2u   /* its bell rang to make it look (lock.c); not asked twice */

struct th_waiter {
    _Alignas(TH_CACHE_LINE) _Atomic uint32_t state;
    int32_t pid;
    int32_t tid;
    uint32_t flags;       /* TH_WF_DOORBELL: also ring its doorbell (doorbell.c) */
    uint64_t ticket;      /* arrival order */
    uint64_t gen;         /* hold generation, set with GRANTED */
    uint64_t bell;        /* TH_WF_DOORBELL: the random part of its address */
    uint64_t bell_token;  /* ... and the secret its doorbell's filter accepts */
};

/* What a process did with this listener; cheap relaxed atomic counters. */
struct th_proc_stats {
    _Alignas(TH_CACHE_LINE) _Atomic int32_t pid;   /* 0 = free slot */
    _Atomic uint32_t strategy;    /* enum th_strategy, for the reader */
    _Atomic uint64_t waits;       /* wait calls that included the listener */
    _Atomic uint64_t wakeups;     /* waits that returned with it ready */
    _Atomic uint64_t spurious;    /* of those, the accept found nothing */
    _Atomic uint64_t accepts;     /* successful accepts */
    _Atomic uint64_t eagain;      /* accepts that failed with EAGAIN */
    _Atomic uint64_t lock_waits;  /* times the lock was waited for */
    _Atomic uint64_t lock_wait_ns;/* total time spent waiting for it */
    _Atomic uint64_t rotations;   /* exclusive entries moved to the tail */
    _Atomic uint64_t refused;     /* accepts answered EAGAIN to spread a burst
                                     (was reserved: 0 from older writers) */
    _Atomic uint32_t yields;      /* waits that left a re-reported listener out */
    _Atomic int32_t waiting;      /* this process's part of th_seg.waiting */
};

struct th_seg {
    /* identity: checked on every attach before anything else is trusted */
    uint64_t magic;
    uint32_t version;
    uint32_t size;
    uint32_t uid;
    uint32_t port;                /* host order; 0 for non-IP listeners */
    uint64_t inode;
    uint64_t name_suffix;         /* 0: the plain name; else the ".<16 hex>" of
                                     an alternative name (segcore.c) */
    _Atomic uint32_t ready;       /* set last by the creator */
    _Atomic uint32_t unlinked;    /* the name is gone: attachers retry */

    /* the lock; every field below is changed only under guard (the
       _Atomic ones are also read without it, as hints) */
    pthread_mutex_t guard;        /* robust, process-shared, held briefly */
    _Atomic int32_t holder_pid;   /* 0 = free */
    int32_t holder_tid;
    uint64_t holder_gen;          /* bumped on every grant */
    uint64_t holder_since_ns;     /* CLOCK_MONOTONIC: grant or end of wait */
    uint32_t holder_in_wait;      /* the holder sleeps in the real wait */
    _Atomic uint32_t nqueued;
    uint64_t next_ticket;
    _Atomic uint64_t recoveries;  /* dead or stalled holders taken over */
    /* procs[] slots ever claimed: scans stop there (th_seg_procs_used) */
    _Atomic uint32_t procs_used;
    /* threads in an exclusive wait on the listener, or back from one that
       reported it and not yet at their accept: asleep, or woken and about
       to accept (a hint for spreading bursts, policy.c) */
    _Alignas(TH_CACHE_LINE) _Atomic int32_t waiting;
    /* successful accepts on the listener by every process, wrapping (was
       spare: older writers leave it alone, which only makes a rotation
       likelier, policy.c th_policy_rotates) */
    _Atomic uint32_t accept_seq;
    uint64_t holder_stopped_ns;   /* when a waiter first saw the holder stopped; 0 = not */
    /* CLOCK_MONOTONIC ns of the last accept on the listener by any
       process, and of the first accept after 800 us without one
       (listener.c): the end of its last quiet spell (bursts, policy.c);
       0 = never (was padding: older writers leave them alone) */
    _Atomic int64_t last_accept_ns;
    _Atomic int64_t quiet_ended_ns;

    struct th_waiter waiters[TH_MAX_WAITERS];
    struct th_proc_stats procs[TH_MAX_PROCS];
};

/* How a process handles this listener (shown by the reader; the names
   are th_strategy_name's, in segcore.c). */
enum th_strategy {
    TH_STRAT_NONE = 0,
    TH_STRAT_OBSERVE,
    TH_STRAT_LOCK,
    TH_STRAT_EXCLUSIVE,
    TH_STRAT_JITTER,
    TH_STRAT_PASS,        /* a blocking accept (the kernel is fair) or the program's
                             own rotated EPOLLEXCLUSIVE: passed through */
    TH_STRAT_ALONE,       /* the only waiter on the listener: passed through, counted
                             as waiting (was unused: older readers show "?") */
};

/*
 * libthunder internals.  Everything here is hidden (-fvisibility=hidden);
 * only the hooks marked TH_EXPORT leave the library.
 *
 * One file per concern, in layers: a file calls only files of the layers
 * below it (see README in this folder for the path of a poll() and an
 * accept() through them).
 *
 *   hooks     hook_*.c     the exported functions: resolve, decide, call,
 *                          record, return with errno intact
 *             init.c       constructor, fork handlers, destructor
 *   waits     waitset.c    poll/ppoll/select/pselect (a pollfd set)
 *             epwait.c     epoll_wait on an instance with listeners
 *             epmemo.c     a thread's last plan for an instance, kept
 *             epreg.c      epoll instances and the listeners inside them
 *             mirror.c     private exclusive epoll instance for poll sets
 *             lockwait.c   the one lock wait both paths share
 *             policy.c     mode + facts about a wait -> strategy and why
 *             burst.c      spreading a burst: the waits' shared bookkeeping
 *   locks     held.c       the locks this thread holds
 *             locksleep.c  sleeping for the lock, waking whom it went to
 *             lock.c       the FIFO/LIFO queue lock in a segment
 *   objects   fdtable.c    what each fd is (listener, epoll, other)
 *             listener.c   per-process listener objects and statistics
 *             segcore.c    the segment core (segcore.h): name, validation,
 *                          liveness, stale check, guard; shared with the tools
 *             segment.c    the library's use of the segment core
 *             doorbell.c   per-thread wake-up socket
 *             signals.c    keeping waits interruptible
 *   base      settings.c   the process's configuration (th_cfg), loaded once
 *             config.c     parsing THUNDER_* (pure)
 *             clock.c      deadlines and time arithmetic
 *             log.c        one-line messages on stderr
 *             real.c       the real libc functions (dlsym RTLD_NEXT)
 *             self.c       this thread and process (th_self, th_pid)
 *             seglayout.h  the shared-memory layout
 */
#pragma once

#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/epoll.h>
#include <sys/select.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <time.h>

#include "segcore.h"   /* seglayout.h and what is known about a segment */

#define TH_EXPORT __attribute__((visibility("default")))
#define TH_UNUSED __attribute__((unused))
#define TH_ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))

/* Listeners in one process; a bit each in per-thread 64-bit masks. */
#define TH_MAX_LISTENERS 64
/* Listeners one wait call manages (more are left to the kernel). */
#define TH_MAX_WAIT_LISTENERS 8

_Static_assert(TH_MAX_LISTENERS <= 64, "th_thread's listener bits are 64-bit masks");
_Static_assert(TH_MAX_WAIT_LISTENERS <= TH_MAX_LISTENERS, "a wait's listeners are listeners");

/* ====================================================================== */
/* base: calls nothing above it                                           */
/* ====================================================================== */

/* ---- self.c: this thread and process ---------------------------------- */
struct th_thread {
    int in_shim;           /* >0 while the shim itself runs: hooks pass through */
    uint64_t woke;         /* bit i: the last wait reported listener i ready */
    uint64_t rotated;      /* bit i: already rotated since that wait */
    uint64_t took;         /* bit i: accepted a connection since that wait */
    uint64_t refusable;    /* bit i: that wait was exclusive or locked, level-
                              triggered: the next one reports a connection left queued */
    uint64_t counted;      /* bit i: counted in listener i's seg->waiting */
    uint64_t accepted;     /* bit i: ever accepted from listener i (th_accept_gap) */
    uint64_t owed;         /* bit i: the next accept of listener i rotates (policy.c) */
    uint64_t passed;       /* bit i: the last wait passed listener i through */
    uint64_t busy;         /* bit i: ...as a busy worker's (policy.c) */
    unsigned streak;       /* waits in a row that returned at once after an accept */
    int64_t since_rest;    /* ns from this process's last rest (a wait that slept
                              TH_REST_MS or more) to the end of this thread's last
                              wait (bursts, burst.c) */
    int64_t paused_ns;     /* when a blocking accept last paused for a burst */
    int64_t accepted_ns;   /* when this thread last accepted a connection */
    uint64_t yielding;     /* bit i: listener i sits out a yield of an epoll wait ... */
    int64_t yield_until;   /* ... until then (epwait.c) */
    bool slept;            /* the last wait slept (false: it found work waiting) */
    bool looked;           /* the last lock wait was woken to look and took one */
};
extern __thread struct th_thread th_self;
extern pid_t th_pid;      /* cached getpid(), refreshed in the child after fork */
pid_t th_gettid(void);
void th_self_refresh(void);   /* at load and in a forked child */
void th_self_new_wait(void);  /* a wait call begins: reset the per-wait facts */

static inline uint64_t th_listener_bit(int index)
{
    return 1ull << index;      /* index < TH_MAX_LISTENERS <= 64 */
}

/* ---- real.c ---------------------------------------------------------- */
#define TH_SYM(ret, name, params, required) extern ret(*real_##name) params;
#include "syms.def"
#undef TH_SYM
/* Every hook starts here: one load once the pointers are set, instead of
   a call into libc's pthread_once (a line of its code and of our PLT to
   bring in, on every call of a worker woken with cold caches). */
extern _Atomic bool th_resolved;
void th_resolve_once(void);
static inline void th_resolve(void)
{
    if (__builtin_expect(!atomic_load_explicit(&th_resolved, memory_order_acquire), 0))
        th_resolve_once();
}
/* glibc's fortified entry points have no public prototype */
int __poll_chk(struct pollfd *fds, nfds_t n, int timeout, size_t fdslen);
int __ppoll_chk(struct pollfd *fds, nfds_t n, const struct timespec *timeout,
                const sigset_t *sigmask, size_t fdslen);
/* nor do these glibc exports (headers hide them under _GNU_SOURCE) */
int __sigaction(int sig, const struct sigaction *act, struct sigaction *old);
sighandler_t bsd_signal(int sig, sighandler_t handler);

/* ---- log.c ----------------------------------------------------------- */
enum th_loglevel { TH_LOG_OFF, TH_LOG_WARN, TH_LOG_INFO, TH_LOG_DEBUG };
void th_log_set_level(enum th_loglevel level);
void th_log(enum th_loglevel level, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
#define th_warn(...)  th_log(TH_LOG_WARN, __VA_ARGS__)
#define th_info(...)  th_log(TH_LOG_INFO, __VA_ARGS__)
#define th_debug(...) th_log(TH_LOG_DEBUG, __VA_ARGS__)

/* ---- clock.c --------------------------------------------------------- */
/* A deadline is an absolute CLOCK_MONOTONIC time in ns. */
#define TH_FOREVER INT64_MAX
#define TH_NS_PER_US 1000LL
#define TH_NS_PER_MS 1000000LL
#define TH_NS_PER_S  1000000000LL
/* A wait that returns sooner cannot have slept: that takes a context
   switch out and one back in.  (Preempted, it looks slow: never the reverse.) */
#define TH_NO_SLEEP_NS (5 * TH_NS_PER_US)
int64_t th_now_ns(void);
int64_t th_deadline_ms(int timeout_ms);               /* <0: forever */
int64_t th_deadline_ts(const struct timespec *ts);    /* NULL: forever */
int64_t th_deadline_tv(const struct timeval *tv);     /* NULL: forever */
int th_remaining_ms(int64_t deadline);                /* -1 forever, rounds up */
int64_t th_remaining_ns(int64_t deadline);            /* TH_FOREVER or >=0 */
/* the same at `now`, a clock read just taken (0: read the clock) */
int th_remaining_ms_at(int64_t deadline, int64_t now);
int64_t th_remaining_ns_at(int64_t deadline, int64_t now);
int64_t th_min_deadline(int64_t deadline, unsigned cap_ms);
void th_ns_to_timespec(int64_t ns, struct timespec *ts);
void th_ns_to_timeval(int64_t ns, struct timeval *tv);
/* Would the kernel take this timeout?  (NULL, "forever", is valid.) */
bool th_timespec_valid(const struct timespec *ts);
bool th_timeval_valid(const struct timeval *tv);

/* ---- config.c: parsing THUNDER_* ------------------------------------- */
enum th_mode {
    TH_MODE_OFF,
    TH_MODE_OBSERVE,
    TH_MODE_LOCK,
    TH_MODE_EXCLUSIVE,
    TH_MODE_JITTER,
    TH_MODE_AUTO,
};
enum th_balance { TH_BALANCE_FIFO, TH_BALANCE_LIFO };
#define TH_MAX_PORT_RANGES 32
struct th_port_range { uint16_t lo, hi; };
/* What the lock queue needs to know; passed to it by its callers. */
struct th_lock_params {
    enum th_balance balance;  /* order of the hand-off */
    unsigned hold_ms;     /* longest hold outside a wait before takeover */
    unsigned check_ms;    /* how often the next waiter checks the holder */
};

struct th_config {
    enum th_mode mode;
    enum th_loglevel log;
    struct th_lock_params lock;
    unsigned jitter_us;   /* jitter: largest random delay before accept */
    unsigned retry_ms;    /* mixed wait sets: how soon the lock is retried */
    int nports;           /* 0 = every listener is managed */
    struct th_port_range ports[TH_MAX_PORT_RANGES];
};

typedef char *(*th_getenv_fn)(const char *name);
/*
 * Fill cfg from the environment read through get.  On a bad value, return
 * -1 with one human line in err (naming the variable, the value and what is
 * accepted) and cfg set to pass-through.  Unknown THUNDER_* names are
 * reported through warn_unknown (may be NULL) and otherwise ignored.
 */
int th_config_parse(struct th_config *cfg, th_getenv_fn get, char *const *envp,
                    char *err, size_t errlen,
                    void (*warn_unknown)(const char *line));
/* Does cfg's THUNDER_PORTS filter let this port through? */
bool th_ports_match(const struct th_config *cfg, uint16_t port);
const char *th_mode_name(enum th_mode mode);
/* The words a THUNDER_ variable accepts (NULL-terminated), or NULL: not a word. */
const char *const *th_config_words(const char *name);

/* ---- settings.c: the process's configuration --------------------------- */
/* Immutable after the constructor, so every thread reads it lock-free. */
extern struct th_config th_cfg;
void th_config_load(void);
bool th_port_managed(uint16_t port);

/* True when the hooks should look at fds at all. */
static inline bool th_active(void)
{
    return th_cfg.mode != TH_MODE_OFF && th_self.in_shim == 0;
}

/* ====================================================================== */
/* objects                                                                */
/* ====================================================================== */

/* ---- signals.c ------------------------------------------------------ */
struct th_sigscope {
    sigset_t orig;                 /* the thread's mask on entry */
    const sigset_t *wait_mask;     /* what every sleep applies: ppoll's or orig */
};
/* Block signals for the shim's bookkeeping; sleep with scope->wait_mask. */
void th_sig_enter(struct th_sigscope *scope, const sigset_t *callers_mask);
void th_sig_leave(struct th_sigscope *scope);
/* The bookkeeping mask: every signal but the ignored ones wait_mask lets through. */
void th_sig_busy_mask(sigset_t *set, const sigset_t *wait_mask);
void th_sig_init(void);                 /* read every disposition (at load) */
void th_sig_changed(int sig);           /* the program changed one (hook_signal.c) */
/* A handler of the program could run during a sleep with wait_mask. */
bool th_sig_handler_deliverable(const sigset_t *wait_mask);
/* Sleep ms with signals held; true when one delivered after it interrupts a call. */
bool th_sig_pause(unsigned ms);

/* ---- doorbell.c ----------------------------------------------------- */
/* A doorbell's address (the random part of its name) and its secret token. */
struct th_bell_id {
    uint64_t name;
    uint64_t token;
};
int th_doorbell_fd(void);                 /* -1 when none can be made */
const struct th_bell_id *th_doorbell_id(void);   /* this thread's, NULL: none */
void th_doorbell_ring(uid_t uid, const struct th_bell_id *id);
void th_doorbell_drain(int fd);
void th_doorbell_after_fork(void);
bool th_doorbell_give_up(void);           /* fd limit: close it, make no more */

/* ---- segment.c: the library's use of the segment core ----------------- */
struct th_seg *th_seg_attach(uint64_t inode, uint16_t port);
void th_seg_detach(struct th_seg *seg, struct th_proc_stats *mine);
struct th_proc_stats *th_seg_claim_slot(struct th_seg *seg, pid_t pid);
void th_seg_drop_waiting(struct th_seg *seg, struct th_proc_stats *slot);
void th_seg_drop_dead_waiting(struct th_seg *seg);
/* Refuse a mapping that is not ours or not sane; 0 if valid, else -1 with why. */
int th_seg_validate(const struct th_seg *seg, size_t mapped, uid_t uid,
                    uint64_t inode, const char **why);
int th_guard_lock(struct th_seg *seg);
void th_guard_unlock(struct th_seg *seg);

/* ---- listener.c ------------------------------------------------------ */
struct th_listener {
    uint64_t inode;
    uint16_t port;
    bool managed;                 /* passes the THUNDER_PORTS filter */
    int index;                    /* position in the process table */
    _Atomic int attach_state;     /* 0 not tried, 1 attached, -1 refused */
    struct th_seg *seg;           /* NULL until attached or when refused */
    _Atomic int32_t stats_pid;    /* pid that owns *stats */
    struct th_proc_stats *stats;  /* this process's slot in seg */
    _Atomic uint32_t logged;      /* one-time log lines already printed: bit s for
                                     strategy s, TH_LOGGED_BUSY, hook_accept.c's */
    _Atomic uint8_t blocking;     /* O_NONBLOCK clear? (th_listener_blocking) */
    _Atomic int64_t others_checked_ns;  /* th_listener_others_wait's cache */
    _Atomic uint64_t others_waits;
    _Atomic bool others_active;
    _Atomic int passers; _Atomic uint64_t passers_at;   /* th_waiting_others's */
    _Atomic uint64_t accepts_at_rotation;   /* this process's, at its last rotation */
    _Atomic uint32_t busy_pending;  /* busy accepts not yet in accept_seq (th_accept_gap) */
    _Atomic uint32_t rate_seq, rate_per_ms; _Atomic int64_t rate_at;  /* th_listener_rate's */
};

/* The listener object for a socket inode, created on first sight. */
struct th_listener *th_listener_for_inode(uint64_t inode, uint16_t port);
/* The segment, attaching on first use; NULL = run pass-through. */
struct th_seg *th_listener_seg(struct th_listener *l);
/* Count an event for this process (no-op when there is no segment). */
void th_count(struct th_listener *l, size_t field_offset, uint64_t n);
uint64_t th_listener_accepts(struct th_listener *l);   /* this process's */
/* Its O_NONBLOCK as last found out: 1 blocks, 0 does not, -1 not known;
   note -1 to forget it (hook_flags.c: the program changed it). */
int th_listener_blocking(struct th_listener *l);
void th_listener_note_blocking(struct th_listener *l, int blocks);
#define TH_COUNT(l, field, n) th_count((l), offsetof(struct th_proc_stats, field), (n))
void th_listener_set_strategy(struct th_listener *l, enum th_strategy s, const char *why);
#define TH_LOGGED_BUSY (1u << 29)
void th_listener_note_busy(struct th_listener *l);   /* a busy worker's wait (policy.c) */
bool th_listener_others_wait(struct th_listener *l);   /* lately (cached a few ms)? */
/*
 * seg->waiting: threads in an exclusive wait on the listener, or back from
 * one that reported it and not yet at their accept.  count when the wait
 * starts, done when it returns without the listener or at the accept,
 * clear (all of this thread's) at the next wait; others: the other
 * threads counted now (or, if none, the processes whose waits pass).
 */
void th_waiting_count(struct th_listener *l), th_waiting_done(struct th_listener *l);
void th_waiting_clear(void);
int th_waiting_others(struct th_listener *l);
void th_count_yield(struct th_listener *l);      /* a 32-bit counter: not TH_COUNT */
/* Count this thread's successful accept, made at now_ns (its time: the
   listener's quiet spells); returns how many accepts other threads made
   on the listener since this thread's previous one (UINT32_MAX: none
   before, or no segment). */
uint32_t th_accept_gap(struct th_listener *l, int64_t now_ns, bool busy);
uint32_t th_listener_rate(struct th_listener *l, int64_t now_ns);  /* accepts per ms */
bool th_listener_alone(struct th_listener *l);   /* nobody else waits on or accepts from it */
int64_t th_listener_since_quiet(struct th_listener *l, int64_t now); /* INT64_MAX: never */
struct th_listener *th_listener_at(int index);
/* Its last fd in this process was closed: detach and recycle the entry. */
void th_listener_closed(struct th_listener *l);
void th_listeners_detach_all(void);
void th_listeners_prepare_fork(void);
void th_listeners_parent_fork(void);
void th_listeners_child_fork(void);

/* ---- fdtable.c ------------------------------------------------------- */
/* The managed listener behind fd, or NULL (not a listener, filtered...). */
struct th_listener *th_fd_listener(int fd);
void th_fd_forget(int fd);
void th_fd_mark_connected(int fd);     /* accept's result: never a listener */
void th_fd_mark_epoll(int fd);
void th_fd_mark_doorbell(int fd);
bool th_fd_generation(int fd, uint16_t *generation);  /* false: untracked */
bool th_fd_is_doorbell(int fd);
uint32_t th_fd_doorbells_forgotten(void);
bool th_fd_is_epoll(int fd);
bool th_fd_is_listener(int fd);
/* Does another cached fd (a dup) still refer to the listener behind fd? */
bool th_fd_listener_shared(int fd, const struct th_listener *l);
int th_fd_blocking(int fd);            /* 1 blocks, 0 O_NONBLOCK, -1 cannot tell */

/* ====================================================================== */
/* locks                                                                  */
/* ====================================================================== */

/* ---- lock.c: the queue ----------------------------------------------- */
enum th_lock_result {
    TH_LOCK_OK,
    TH_LOCK_BUSY,      /* try only: someone else holds it */
    TH_LOCK_TIMEOUT,
    TH_LOCK_INTR,      /* a signal handler ran: the call returns EINTR */
    TH_LOCK_ERROR,     /* no waiter slot or broken segment: pass through */
    TH_LOCK_LOOK,      /* woken to look (a burst): out of the queue, not holding */
};
/* A release in a burst wakes at most this many queued threads to look. */
#define TH_MAX_LOOKERS 8
/* Whom an operation handed the lock to; wake it after the call (th_lock_wake). */
struct th_grant {
    struct th_waiter *w;      /* NULL: the lock went to nobody */
    int32_t tid;
    uint32_t flags;
    struct th_bell_id bell;   /* TH_WF_DOORBELL: where and how to ring */
};
/*
 * The queue: try returns OK (now ours) or BUSY; enqueue returns OK when
 * the lock was free and is now ours, BUSY with *me queued, or ERROR.
 * Poll th_lock_granted after each wake-up, call th_lock_check every
 * th_lock_slice_ns, th_lock_abandon to leave.  Every operation that can
 * hand the lock on returns (or fills *wake with) the grant to wake.
 */
enum th_lock_result th_lock_try(struct th_seg *seg, const struct th_lock_params *p,
                                bool in_wait, uint64_t *gen, struct th_grant *wake);
/* bell: rung with the futex (NULL: futex alone); in_wait: th_lock_wait.for_wait */
enum th_lock_result th_lock_enqueue(struct th_seg *seg, const struct th_lock_params *p,
                                    const struct th_bell_id *bell, bool in_wait,
                                    struct th_waiter **me, uint64_t *gen, struct th_grant *wake);
bool th_lock_granted(struct th_waiter *me, uint64_t *gen);
struct th_grant th_lock_abandon(struct th_seg *seg, const struct th_lock_params *p,
                                struct th_waiter *me);
bool th_lock_check(struct th_seg *seg, const struct th_lock_params *p, struct th_waiter *me,
                   struct th_grant *wake);
/* ...and the doorbells of up to `lookers` other queued threads, to ring (bells[]). */
struct th_grant th_lock_release_lookers(struct th_seg *seg, const struct th_lock_params *p,
                                        uint64_t gen, int lookers, struct th_bell_id *bells,
                                        int *nbells);
struct th_grant th_lock_release(struct th_seg *seg, const struct th_lock_params *p,
                                uint64_t gen);
/* Queued, and picked by th_lock_release_lookers to look (its bell rang for that)? */
bool th_lock_asked_to_look(struct th_seg *seg, struct th_waiter *me);
void th_lock_mark_waiting(struct th_seg *seg, uint64_t gen, bool in_wait);
int64_t th_lock_slice_ns(const struct th_seg *seg, const struct th_lock_params *p,
                         bool next_in_line);
/* Hints, read without the guard. */
bool th_lock_queue_short(const struct th_seg *seg);
bool th_lock_held_by(const struct th_seg *seg, int32_t pid);

/* ---- locksleep.c: sleeping for the lock ------------------------------- */
struct th_lock_wait {
    const struct th_lock_params *params;
    int64_t deadline;              /* TH_FOREVER, or absolute; now = try */
    const sigset_t *sigmask;       /* applied while asleep, like ppoll */
    bool try_only;
    bool for_wait;  /* straight into the real wait: marked in it if taken at once */
    bool use_bell;                 /* sleep on the doorbell (atomic mask), else futex */
    int bell;
};
enum th_lock_result th_lock_acquire(struct th_seg *seg, const struct th_lock_wait *w,
                                    uint64_t *gen, int64_t *waited_ns);
void th_lock_wake(const struct th_seg *seg, struct th_grant g);
void th_lock_release_and_wake(struct th_seg *seg, const struct th_lock_params *p,
                              uint64_t gen);
void th_lock_release_and_wake_lookers(struct th_seg *seg, const struct th_lock_params *p,
                                      uint64_t gen, int lookers);

/* ---- held.c ---------------------------------------------------------- */
bool th_held_has(struct th_listener *l);
void th_held_add(struct th_listener *l, uint64_t gen, bool in_wait);
void th_held_release(struct th_listener *l);
/* ...waking up to `lookers` queued threads to look too (bursts) */
void th_held_release_lookers(struct th_listener *l, int lookers);
void th_held_release_all(void);
void th_held_mark_waiting(bool in_wait);
void th_held_forget_after_fork(void);
/*
 * Take the locks of ls[0..k): with may_block, wait (until deadline) for the
 * first one that has a segment and only try the rest, never blocking while
 * this thread holds another lock.  held[j] / busy[j] say what happened.
 * Returns 0; 1 when, queued, it was woken to look (a burst: nothing held);
 * or -1 with errno EINTR when a signal interrupted the wait.
 */
int th_held_take(struct th_listener *const *ls, int k, bool may_block, int64_t deadline,
                 const sigset_t *sigmask, int bell, bool *held, bool *busy);

/* ====================================================================== */
/* waits                                                                  */
/* ====================================================================== */

/* ---- policy.c: its questions and their facts, in policy_facts.h ----- */
#include "policy_facts.h"

/* ---- burst.c: spreading a burst (both exclusive wait paths) ----------- */
struct th_burst {
    struct th_listener *ls[TH_MAX_WAIT_LISTENERS];
    int fds[TH_MAX_WAIT_LISTENERS];
    int k;
    uint64_t took_last;        /* th_self.took when the call began */
    int64_t start, end;        /* when the current wait began, and returned */
};
/* Masks are by position j in ls[]. */
void th_burst_begin(struct th_burst *b, struct th_listener *const *ls, const int *fds, int k,
                    uint64_t took_last);
/* After a wait that reported `reported`: which listeners to yield (none
   unless may_yield: the wait path can wait again without losing events). */
uint64_t th_burst_after(struct th_burst *b, uint64_t reported, bool may_yield);
void th_burst_resume(struct th_burst *b);      /* the wait goes on after a yield */
void th_burst_end(struct th_burst *b, uint64_t reported, uint64_t yielded);
/* The lock waits' part: may a busy lock be looked past (lw->look_first)?
   *then_check: only if the look finds a short listen queue; after the
   look, th_burst_queues_after_look says.  And after the lock wait that
   began at `start`: the streak goes on? */
bool th_burst_looks_unlocked(struct th_listener *const *ls, int k, uint64_t took_last,
                             bool threaded, bool *then_check);
bool th_burst_queues_after_look(struct th_listener *const *ls, const int *fds, int k,
                                uint64_t took_last, bool threaded);
void th_burst_lock_after(struct th_listener *const *ls, int k, uint64_t took_last,
                         uint64_t reported, int64_t start);
/* A holder about to pass l's lock on (its lock wait began at wait_start):
   how many queued threads to wake to look too. */
int th_burst_lookers(struct th_listener *l, int fd, bool slept, int64_t wait_start);
/* Around a blocking accept (no wait before it); begin sets its *start, and
   returns false when a handler without SA_RESTART ran in its pause (EINTR);
   end returns the time it ended (a clock read the accept's record reuses). */
bool th_burst_accept_begin(struct th_listener *l, int fd, int64_t *start);
int64_t th_burst_accept_end(struct th_listener *l, int64_t start, bool took);
int64_t th_burst_since_idle(struct th_listener *l, int64_t now); /* ns; policy.c's bursts */
/* A busy worker's exclusive wait on l passes through (policy.c); its end, noted */
bool th_burst_busy(struct th_listener *const *ls, int k, uint64_t took_last, bool slept_last);
int64_t th_burst_busy_after(int64_t start);

/* ---- lockwait.c: the one lock wait ----------------------------------- */
struct th_lockwait {
    struct th_listener *const *ls; /* the wait's managed listeners */
    int k;
    bool may_block;                /* listeners only: block on the first lock */
    int64_t deadline;
    const sigset_t *sigmask;       /* what the sleeps apply */
    int bell;                      /* doorbell to queue with, or -1 (futex) */
    bool look_first;               /* a lock busy: serve what is ready unlocked */
    bool check_after_look;         /* ...unless, in a burst, the listen queue is long */
    bool threaded;                 /* the wait facts': an instance several threads wait on */
    const int *fds;                /* the listeners' fds, in ls order (bursts) */
    uint64_t took_last;            /* what this thread accepted since its last wait */
    int64_t start;                 /* when the lock wait began (th_lockwait_burst_begin) */
    /* the wait path's part */
    void *ctx;
    /* on: leave out of the real wait the listeners that are busy[]; off: undo */
    void (*exclude)(void *ctx, const bool *held, const bool *busy, bool on);
    int (*wait)(void *ctx, int64_t until, const sigset_t *sigmask);
    bool (*reported)(void *ctx, int j, int result);   /* listener j ready? */
    /* nothing but level-triggered listeners in the result: it may be dropped */
    bool (*only_listeners)(void *ctx, int result);
};
int th_lockwait_run(const struct th_lockwait *lw);
/* Without blocking signals: hold free locks, or serve a backlog unlocked (1, *ret); else 0. */
int th_lockwait_fast(const struct th_lockwait *lw, int *ret);
/* Only the real wait (lw->wait until), as the holder of what this thread holds. */
int th_lockwait_hold(const struct th_lockwait *lw, int64_t until);
/* Around a lock wait, for bursts: sets lw->look_first, returns the start. */
int64_t th_lockwait_burst_begin(struct th_lockwait *lw, const int *fds, uint64_t took_last);
void th_lockwait_burst_end(const struct th_lockwait *lw, uint64_t took_last, int r, int64_t start);

/* ---- mirror.c -------------------------------------------------------- */
/* 1 handled (result in *ret), 0 not applicable (caller falls back). */
int th_mirror_poll(struct pollfd *fds, nfds_t n, int64_t deadline,
                   const sigset_t *sigmask, int *ret);
/* The same wait with the set's listeners left out until `until` (a yield). */
int th_mirror_yield(struct pollfd *fds, nfds_t n, int64_t until,
                    const sigset_t *sigmask, int *ret);
void th_mirror_rotate(int listener_fd, struct th_listener *l);
void th_mirror_forget_fd(int fd);
void th_mirror_after_fork(void);
bool th_mirror_give_up(void);             /* fd limit: close it, make no more */

/* ---- waitset.c: poll-shaped waits ------------------------------------ */
/* A poll-shaped wait on a set with managed listeners, like ppoll(2); the
   caller's fds change only while it runs (masked listeners are negated). */
int th_waitset_poll(struct pollfd *fds, nfds_t n, int64_t deadline, const sigset_t *sigmask);
bool th_waitset_has_listener(const struct pollfd *fds, nfds_t n);   /* any managed one? */

/* ---- epreg.c: the listeners inside epoll instances -------------------- */
void th_epreg_created(int epfd);
/* Rewrites *ev for an exclusive ADD/MOD if it applies; returns the result. */
int th_epreg_ctl(int epfd, int op, int fd, struct epoll_event *ev);
bool th_epreg_has_listener(int epfd), th_epreg_waits_alone(int epfd); /* alone: counted as waiting */
void th_epreg_rotate(struct th_listener *l, bool holder);
bool th_epreg_rotated_by_program(struct th_listener *l);  /* re-added its own lately (nginx)? */
void th_epreg_forget_fd(int fd);
void th_epreg_prepare_fork(void), th_epreg_parent_fork(void), th_epreg_child_fork(void);
/* What a wait on an instance sees of one of its managed listeners. */
struct th_ep_listener {
    struct th_listener *l;
    int fd;
    uint64_t data;
    uint32_t events;      /* as the program asked for them */
    bool exclusive;
    bool program_balanced;  /* the program's own EPOLLEXCLUSIVE, which it rotates */
};
/* The instance's listeners and facts; counts this thread as waiting on it. */
int th_epreg_snapshot(int epfd, struct th_ep_listener *wl, bool *shared, int *others,
                      bool *threaded);
void th_epreg_done_waiting(int epfd);
uint32_t th_epreg_gen(void), th_epreg_looked_at(void);   /* changes; this thread's look */
bool th_epreg_readd_lost(int epfd);  /* re-add what a failed rotation left out; true: one stays out */
bool th_epreg_any_lost(void);
/* Lock wait: put back the held, take the busy out (private instances only). */
void th_epreg_park_busy(int epfd, bool shared, const struct th_ep_listener *wl, int k,
                        const bool *held, const bool *busy);
/* Bursts: take the listeners of bit mask yield out (out) or back in. */
void th_epreg_park_yielded(int epfd, const struct th_ep_listener *wl, int k, uint64_t yield,
                           bool out);

/* ---- epmemo.c: a thread's last plan for an instance, kept ----------------- */
void th_epmemo_note(int epfd, const struct th_ep_listener *wl, int k, struct th_plan plan);
int th_epmemo_recall(int epfd, struct th_ep_listener *wl, struct th_plan *plan); /* -1: look */
/* passes: the listeners and plan if "pass" or "alone" still holds (counted as
   waiting on the instance); kept: as they are */
const struct th_ep_listener *th_epmemo_passes(int epfd, int *k, struct th_plan *plan);
const struct th_ep_listener *th_epmemo_kept(int epfd, int *k, struct th_plan *plan);

/* ---- epwait.c: epoll waits ------------------------------------------- */
int th_epreg_wait(int epfd, struct epoll_event *evs, int maxevents, int64_t deadline,
                  const sigset_t *sigmask, bool ns_timeout);   /* ns: epoll_pwait2's */
bool th_epreg_pass_begin(int epfd);     /* true: the program's own call, then _end */
int th_epreg_pass_end(int epfd, const struct epoll_event *evs, int result);

/* ====================================================================== */
/* hooks                                                                  */
/* ====================================================================== */

/* ---- init.c --------------------------------------------------------- */
void th_init(void);

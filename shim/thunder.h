/*
 * libthunder internals.  Everything here is hidden (-fvisibility=hidden);
 * only the hooks marked TH_EXPORT leave the library.
 *
 * One file per concern:
 *   real.c      the real libc functions (dlsym RTLD_NEXT)
 *   config.c    THUNDER_* variables -> th_cfg, read once at load
 *   log.c       one-line messages on stderr
 *   clock.c     deadlines and the time arithmetic of every wait call
 *   fdtable.c   what the shim knows about each fd (listener, epoll, other)
 *   listener.c  per-process listener objects, their segment and statistics
 *   segcore.c   the segment core: name, validation, liveness, stale, guard
 *   segment.c   shared memory: create, validate, attach, detach
 *   lock.c      the FIFO hand-off accept lock inside a segment
 *   held.c      the locks this thread holds, released after accept
 *   waitset.c   the decision shared by poll/ppoll/select/pselect
 *   mirror.c    per-thread exclusive epoll instance for poll-style waits
 *   epreg.c     per-process registry of listeners inside epoll instances
 *   hook_*.c    the exported functions
 *   init.c      constructor, fork handlers, destructor
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

#include "segcore.h"   /* segment.h and what is known about a segment */

#define TH_EXPORT __attribute__((visibility("default")))
#define TH_UNUSED __attribute__((unused))
#define TH_ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))

/* ---- real.c ---------------------------------------------------------- */
#define TH_SYM(ret, name, params, required) extern ret(*real_##name) params;
#include "syms.def"
#undef TH_SYM
void th_resolve(void);
/* glibc's fortified entry points have no public prototype */
int __poll_chk(struct pollfd *fds, nfds_t n, int timeout, size_t fdslen);
int __ppoll_chk(struct pollfd *fds, nfds_t n, const struct timespec *timeout,
                const sigset_t *sigmask, size_t fdslen);
/* nor do these glibc exports (headers hide them under _GNU_SOURCE) */
int __sigaction(int sig, const struct sigaction *act, struct sigaction *old);
sighandler_t bsd_signal(int sig, sighandler_t handler);

/* ---- config.c -------------------------------------------------------- */
enum th_mode {
    TH_MODE_OFF,
    TH_MODE_OBSERVE,
    TH_MODE_LOCK,
    TH_MODE_EXCLUSIVE,
    TH_MODE_JITTER,
    TH_MODE_AUTO,
};
enum th_balance { TH_BALANCE_FIFO, TH_BALANCE_LIFO };
enum th_loglevel { TH_LOG_OFF, TH_LOG_WARN, TH_LOG_INFO, TH_LOG_DEBUG };

#define TH_MAX_PORT_RANGES 32
struct th_port_range { uint16_t lo, hi; };

struct th_config {
    enum th_mode mode;
    enum th_balance balance;
    enum th_loglevel log;
    unsigned jitter_us;   /* jitter: largest random delay before accept */
    unsigned retry_ms;    /* mixed wait sets: how soon the lock is retried */
    unsigned hold_ms;     /* longest hold outside a wait before takeover */
    unsigned check_ms;    /* how often the next waiter checks the holder */
    int nports;           /* 0 = every listener is managed */
    struct th_port_range ports[TH_MAX_PORT_RANGES];
};

/* Immutable after the constructor, so every thread reads it lock-free. */
extern struct th_config th_cfg;

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
void th_config_load(void);
bool th_port_managed(uint16_t port);
const char *th_mode_name(enum th_mode mode);

/* ---- log.c ----------------------------------------------------------- */
void th_log(enum th_loglevel level, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
#define th_warn(...)  th_log(TH_LOG_WARN, __VA_ARGS__)
#define th_info(...)  th_log(TH_LOG_INFO, __VA_ARGS__)
#define th_debug(...) th_log(TH_LOG_DEBUG, __VA_ARGS__)

/* ---- clock.c --------------------------------------------------------- */
/* A deadline is an absolute CLOCK_MONOTONIC time in ns. */
#define TH_FOREVER INT64_MAX
int64_t th_now_ns(void);
int64_t th_deadline_ms(int timeout_ms);               /* <0: forever */
int64_t th_deadline_ts(const struct timespec *ts);    /* NULL: forever */
int64_t th_deadline_tv(const struct timeval *tv);     /* NULL: forever */
int th_remaining_ms(int64_t deadline);                /* -1 forever, rounds up */
int64_t th_remaining_ns(int64_t deadline);            /* TH_FOREVER or >=0 */
int64_t th_min_deadline(int64_t deadline, unsigned cap_ms);
void th_ns_to_timespec(int64_t ns, struct timespec *ts);

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
    _Atomic uint32_t logged;      /* one-time log lines already printed */
};
#define TH_MAX_LISTENERS 64

/* The listener object for a socket inode, created on first sight. */
struct th_listener *th_listener_for_inode(uint64_t inode, uint16_t port);
/* The segment, attaching on first use; NULL = run pass-through. */
struct th_seg *th_listener_seg(struct th_listener *l);
/* Count an event for this process (no-op when there is no segment). */
void th_count(struct th_listener *l, size_t field_offset, uint64_t n);
#define TH_COUNT(l, field, n) th_count((l), offsetof(struct th_proc_stats, field), (n))
void th_listener_set_strategy(struct th_listener *l, enum th_strategy s,
                              const char *why);
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
void th_fd_mark_epoll(int fd);
bool th_fd_is_epoll(int fd);
bool th_fd_is_listener(int fd);
/* Does another cached fd (a dup) still refer to the listener behind fd? */
bool th_fd_listener_shared(int fd, const struct th_listener *l);
bool th_fd_is_blocking(int fd);

/* ---- segment.c ------------------------------------------------------- */
struct th_seg *th_seg_attach(uint64_t inode, uint16_t port);
void th_seg_detach(struct th_seg *seg, struct th_proc_stats *mine);
struct th_proc_stats *th_seg_claim_slot(struct th_seg *seg, pid_t pid);
/* Refuse a mapping that is not ours or not sane; 0 if valid, else -1 with why. */
int th_seg_validate(const struct th_seg *seg, size_t mapped, uid_t uid,
                    uint64_t inode, const char **why);
int th_guard_lock(struct th_seg *seg);
void th_guard_unlock(struct th_seg *seg);

/* ---- lock.c ---------------------------------------------------------- */
enum th_lock_result {
    TH_LOCK_OK,
    TH_LOCK_BUSY,      /* try only: someone else holds it */
    TH_LOCK_TIMEOUT,
    TH_LOCK_INTR,      /* a signal handler ran: the call returns EINTR */
    TH_LOCK_ERROR,     /* no waiter slot or broken segment: pass through */
};
struct th_lock_wait {
    int64_t deadline;              /* TH_FOREVER, or absolute; now = try */
    const sigset_t *sigmask;       /* applied while asleep, like ppoll */
    bool try_only;
    bool use_bell;                 /* sleep on the doorbell (atomic mask), else futex */
    int bell;
};
enum th_lock_result th_lock_acquire(struct th_seg *seg, const struct th_lock_wait *w,
                                    uint64_t *gen, int64_t *waited_ns);
void th_lock_release(struct th_seg *seg, uint64_t gen);
/*
 * The queue underneath, for waits that sleep somewhere else than a futex
 * (a ppoll on the program's fds plus a doorbell): enqueue returns
 * TH_LOCK_OK when the lock was free and is now ours, TH_LOCK_BUSY with
 * *me queued, or TH_LOCK_ERROR.  Poll th_lock_granted after each wake-up,
 * call th_lock_check every th_lock_slice_ns, th_lock_abandon to leave.
 */
enum th_lock_result th_lock_enqueue(struct th_seg *seg, uint32_t flags,
                                    struct th_waiter **me, uint64_t *gen);
bool th_lock_granted(struct th_waiter *me, uint64_t *gen);
void th_lock_abandon(struct th_seg *seg, struct th_waiter *me);
bool th_lock_check(struct th_seg *seg, struct th_waiter *me);
int64_t th_lock_slice_ns(const struct th_seg *seg, bool next_in_line);
void th_lock_mark_waiting(struct th_seg *seg, uint64_t gen, bool in_wait);

/* ---- held.c ---------------------------------------------------------- */
bool th_held_has(struct th_listener *l);
void th_held_add(struct th_listener *l, uint64_t gen);
void th_held_release(struct th_listener *l);
void th_held_release_all(void);
void th_held_mark_waiting(bool in_wait);
void th_held_forget_after_fork(void);
/*
 * Take the locks of ls[0..k): with may_block, wait (until deadline) for the
 * first one that has a segment and only try the rest, never blocking while
 * this thread holds another lock.  held[j] / busy[j] say what happened.
 * Returns 0, or -1 with errno EINTR when a signal interrupted the wait.
 */
int th_held_take(struct th_listener *const *ls, int k, bool may_block, int64_t deadline,
                 const sigset_t *sigmask, int bell, bool *held, bool *busy);

/* ---- per-thread facts ------------------------------------------------- */
struct th_thread {
    int in_shim;           /* >0 while the shim itself runs: hooks pass through */
    uint64_t woke;         /* bit i: the last wait reported listener i ready */
    uint64_t rotated;      /* bit i: already rotated since that wait */
};
extern __thread struct th_thread th_self;
extern pid_t th_pid;      /* cached getpid(), refreshed in the child after fork */
pid_t th_gettid(void);

/* True when the hooks should look at fds at all. */
static inline bool th_active(void)
{
    return th_cfg.mode != TH_MODE_OFF && th_self.in_shim == 0;
}

/* ---- waitset.c: poll-shaped waits ------------------------------------ */
/*
 * Run a poll-shaped wait on a set that holds managed listeners.  fds is the
 * caller's array; it is modified only transiently (masked listeners are
 * negated and restored).  Returns like ppoll(2), errno set on -1.
 */
int th_waitset_poll(struct pollfd *fds, nfds_t n, int64_t deadline,
                    const sigset_t *sigmask);
/* Does this set hold at least one managed listener? */
bool th_waitset_has_listener(const struct pollfd *fds, nfds_t n);
/* The real ppoll with a deadline. */
int th_real_ppoll(struct pollfd *fds, nfds_t n, int64_t deadline,
                  const sigset_t *sigmask);

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

/* ---- doorbell.c ----------------------------------------------------- */
int th_doorbell_fd(void);                 /* -1 when none can be made */
void th_doorbell_ring(uid_t uid, pid_t tid);
void th_doorbell_drain(int fd);
void th_doorbell_after_fork(void);

/* ---- init.c --------------------------------------------------------- */
void th_init(void);

/* ---- mirror.c -------------------------------------------------------- */
/* 1 handled (result in *ret), 0 not applicable (caller falls back). */
int th_mirror_poll(struct pollfd *fds, nfds_t n, int64_t deadline,
                   const sigset_t *sigmask, int *ret);
void th_mirror_rotate(int listener_fd, struct th_listener *l);
void th_mirror_forget_fd(int fd);
void th_mirror_after_fork(void);

/* ---- epreg.c --------------------------------------------------------- */
void th_epreg_created(int epfd);
/* Rewrites *ev for an exclusive ADD/MOD if it applies; returns the result. */
int th_epreg_ctl(int epfd, int op, int fd, struct epoll_event *ev);
int th_epreg_wait(int epfd, struct epoll_event *evs, int maxevents,
                  int64_t deadline, const sigset_t *sigmask);
bool th_epreg_has_listener(int epfd);
void th_epreg_rotate(struct th_listener *l);
void th_epreg_forget_fd(int fd);
void th_epreg_prepare_fork(void);
void th_epreg_parent_fork(void);
void th_epreg_child_fork(void);

/* ---- accept path ----------------------------------------------------- */
void th_after_accept(int fd, struct th_listener *l, int result, int err);

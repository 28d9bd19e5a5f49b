/*
 * Keeping a wait call interruptible while the shim does its own work.
 *
 * A real poll() returns EINTR for any signal that arrives while it sleeps.
 * Around a managed wait the shim also queues for the lock, checks the
 * holder and hands the lock on; a signal handled during those few lines
 * would be consumed, and the call would then sleep as if nothing happened
 * (a master that SIGTERMs all its workers at once hits exactly that).  So
 * a managed wait blocks signals on entry and does every sleep with a
 * p-variant (ppoll, epoll_pwait) that applies the caller's mask atomically:
 * a signal that arrived during the bookkeeping is pending, and the next
 * sleep returns EINTR at once, after its handler ran.
 *
 * Ignored signals (SIG_IGN, or SIG_DFL for SIGCHLD, SIGURG, SIGWINCH,
 * SIGCONT) are the exception: the kernel drops one only while it is not
 * blocked.  Blocked, it stays pending, and epoll_pwait - which, unlike
 * ppoll, is never restarted - fails with EINTR on it, so a worker's poll
 * or epoll_wait failed on a child's exit where the real call does not.
 * Those signals stay unblocked during the bookkeeping when the wait would
 * let them through, and the kernel drops them as it would during the real
 * call.  Which signals are ignored is read once at load and again after
 * each sigaction()/signal() of the program (hook_signal.c).
 */
#include "thunder.h"

#include <pthread.h>
#include <unistd.h>

#define MAX_TRACKED 64              /* the kernel's signals: 1..64 */

/* bit sig-1: sig is ignored (dropped by the kernel when not blocked) */
static _Atomic uint64_t ignored;

static bool ignored_by_default(int sig)
{
    return sig == SIGCHLD || sig == SIGURG || sig == SIGWINCH || sig == SIGCONT;
}

static void refresh_disposition(int sig)
{
    struct sigaction sa;
    int saved_errno = errno;
    uint64_t bit;

    if (sig < 1 || sig > MAX_TRACKED || real_sigaction == NULL ||
        real_sigaction(sig, NULL, &sa) != 0) {
        errno = saved_errno;
        return;
    }
    bit = 1ull << (sig - 1);
    if (sa.sa_handler == SIG_IGN || (sa.sa_handler == SIG_DFL && ignored_by_default(sig)))
        atomic_fetch_or(&ignored, bit);
    else
        atomic_fetch_and(&ignored, ~bit);
    errno = saved_errno;
}

/* A disposition changed: only this process's own (a vfork child shares our memory). */
void th_sig_changed(int sig)
{
    if (th_cfg.mode != TH_MODE_OFF && getpid() == th_pid)
        refresh_disposition(sig);
}

void th_sig_init(void)
{
    for (int sig = 1; sig <= MAX_TRACKED; sig++)
        refresh_disposition(sig);
}

static void busy_mask(sigset_t *set, uint64_t ign, const sigset_t *wait_mask)
{
    sigfillset(set);
    for (int sig = 1; ign; sig++, ign >>= 1)
        if ((ign & 1) && (wait_mask == NULL || sigismember(wait_mask, sig) == 0))
            sigdelset(set, sig);
}

/* The mask without a wait mask of the program's (most waits) is kept per
   thread until the dispositions change: built, it was about 360
   instructions per queued wait.  No disposition set is all ones (SIGKILL
   cannot be ignored), so that marks "none kept yet". */
static __thread uint64_t kept_for = UINT64_MAX;
static __thread sigset_t kept;

void th_sig_busy_mask(sigset_t *set, const sigset_t *wait_mask)
{
    uint64_t ign = atomic_load_explicit(&ignored, memory_order_relaxed);

    if (wait_mask != NULL) {
        busy_mask(set, ign, wait_mask);
        return;
    }
    if (kept_for != ign) {
        busy_mask(&kept, ign, NULL);
        kept_for = ign;
    }
    *set = kept;
}

void th_sig_enter(struct th_sigscope *scope, const sigset_t *callers_mask)
{
    sigset_t busy;

    th_sig_busy_mask(&busy, callers_mask);
    if (callers_mask) {
        pthread_sigmask(SIG_SETMASK, &busy, &scope->orig);
    } else {
        /* the wait applies the thread's own mask: what it blocks stays blocked */
        pthread_sigmask(SIG_BLOCK, &busy, &scope->orig);
    }
    scope->wait_mask = callers_mask ? callers_mask : &scope->orig;
}

void th_sig_leave(struct th_sigscope *scope)
{
    int saved_errno = errno;

    pthread_sigmask(SIG_SETMASK, &scope->orig, NULL);
    errno = saved_errno;
}

/*
 * Could a handler of the program have run during a sleep with this mask?
 * epoll_pwait fails with EINTR when the thread was stopped (SIGSTOP,
 * SIGTSTP, a debugger) and continued, handler or not, where poll and select
 * are restarted (signal(7)).  An EINTR from a sleep no handler could
 * interrupt is such a stop: the emulated wait goes on.  Asked only after
 * an EINTR, so the dispositions are read from the kernel then (a handler
 * set by a raw rt_sigaction counts too).  Handlers of the fault signals
 * (SIGSEGV, SIGBUS...: crash handlers) do not count: a thread's own fault
 * does not happen while it sleeps.  The limit: with a handler
 * deliverable during the wait, a stop cannot be told from the handler's
 * signal, and EINTR is returned, as it must be for the handler's.
 */
/* Raised by the thread's own faults: crash handlers (sanitizers, faulthandler) wait for these. */
static bool crash_signal(int sig)
{
    return sig == SIGSEGV || sig == SIGBUS || sig == SIGFPE || sig == SIGILL ||
           sig == SIGTRAP || sig == SIGSYS || sig == SIGABRT;
}

bool th_sig_handler_deliverable(const sigset_t *wait_mask)
{
    int saved_errno = errno;
    bool found = false;
    sigset_t own;

    /* no mask given: the wait ran under the thread's own (rare path: EINTR) */
    if (wait_mask == NULL && pthread_sigmask(SIG_BLOCK, NULL, &own) == 0)
        wait_mask = &own;

    for (int sig = 1; sig <= MAX_TRACKED && !found; sig++) {
        struct sigaction sa;
        if (sig == SIGKILL || sig == SIGSTOP || crash_signal(sig) ||
            (wait_mask && sigismember(wait_mask, sig) == 1))
            continue;
        /* unknown (no real sigaction): assume a handler; glibc's own
           signals (32, 33) are refused (EINVAL): not the program's */
        found = real_sigaction == NULL ||
                (real_sigaction(sig, NULL, &sa) == 0 &&
                 sa.sa_handler != SIG_IGN && sa.sa_handler != SIG_DFL);
    }
    errno = saved_errno;
    return found;
}

/* Would a handler of sig make a blocking call fail with EINTR?  (No SA_RESTART.) */
static bool interrupts_calls(int sig)
{
    struct sigaction sa;

    if (real_sigaction == NULL || real_sigaction(sig, NULL, &sa) != 0)
        return false;
    return sa.sa_handler != SIG_IGN && sa.sa_handler != SIG_DFL && !(sa.sa_flags & SA_RESTART);
}

/*
 * A pause inside a blocking call of the program (burst.c: a blocking
 * accept), with the call's own signal semantics: signals are held while
 * it sleeps and delivered at its end.  Returns true when one of them has
 * a handler without SA_RESTART: the blocking call would have failed with
 * EINTR for it, so the caller does.  With SA_RESTART the kernel restarts
 * the call after the handler, and the caller goes on the same way; a
 * terminating default action ends the process at the end of the pause.
 * A signal delivered to another thread meanwhile is not this call's.
 */
bool th_sig_pause(unsigned ms)
{
    struct timespec ts = { .tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * TH_NS_PER_MS };
    struct th_sigscope scope;
    sigset_t pending;
    bool interrupted = false;
    int saved_errno = errno;

    th_sig_enter(&scope, NULL);
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
        ;                           /* a stop and continue: sleep the rest */
    if (sigpending(&pending) == 0)
        for (int sig = 1; sig <= MAX_TRACKED && !interrupted; sig++)
            interrupted = sigismember(&pending, sig) == 1 &&
                          sigismember(&scope.orig, sig) == 0 && interrupts_calls(sig);
    th_sig_leave(&scope);           /* the handlers run here */
    errno = saved_errno;
    return interrupted;
}

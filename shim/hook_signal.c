/*
 * sigaction and the signal() family: passed through untouched, then the
 * shim reads the signal's disposition again.  The shim must know which
 * signals are ignored, because it leaves those unblocked around a wait
 * (see signals.c); glibc's signal(), sigset() and friends set dispositions
 * without going through the exported sigaction, so each is watched here.
 */
#include "thunder.h"

static int watched_sigaction(int (*real)(int, const struct sigaction *, struct sigaction *),
                             int sig, const struct sigaction *act, struct sigaction *old)
{
    int r;

    if (real == NULL) {
        errno = ENOSYS;
        return -1;
    }
    r = real(sig, act, old);
    if (r == 0 && act)
        th_sig_changed(sig);
    return r;
}

TH_EXPORT int sigaction(int sig, const struct sigaction *act, struct sigaction *old)
{
    th_resolve();
    return watched_sigaction(real_sigaction, sig, act, old);
}

TH_EXPORT int __sigaction(int sig, const struct sigaction *act, struct sigaction *old)
{
    th_resolve();
    return watched_sigaction(real___sigaction, sig, act, old);
}

static sighandler_t watched_signal(sighandler_t (*real)(int, sighandler_t), int sig,
                                   sighandler_t handler)
{
    sighandler_t r;

    if (real == NULL) {
        errno = ENOSYS;
        return SIG_ERR;
    }
    r = real(sig, handler);
    if (r != SIG_ERR)
        th_sig_changed(sig);
    return r;
}

#define WATCHED_SIGNAL(name)                                \
    TH_EXPORT sighandler_t name(int sig, sighandler_t handler) \
    {                                                       \
        th_resolve();                                       \
        return watched_signal(real_##name, sig, handler);   \
    }

WATCHED_SIGNAL(signal)
WATCHED_SIGNAL(bsd_signal)
WATCHED_SIGNAL(ssignal)
WATCHED_SIGNAL(sysv_signal)
WATCHED_SIGNAL(__sysv_signal)
WATCHED_SIGNAL(sigset)

TH_EXPORT int sigignore(int sig)
{
    int r;

    th_resolve();
    if (real_sigignore == NULL) {
        errno = ENOSYS;
        return -1;
    }
    r = real_sigignore(sig);
    if (r == 0)
        th_sig_changed(sig);
    return r;
}

/*
 * poll, ppoll and glibc's fortified __poll_chk / __ppoll_chk.
 *
 * Semantics kept: the timeout counts from entry (time spent on the lock
 * included), 0 never blocks, a signal returns -1/EINTR (poll is never
 * restarted, SA_RESTART or not), ppoll's mask applies for the whole wait,
 * errno is untouched on success.  Sets without a managed listener go
 * straight to libc.
 */
#include "thunder.h"

TH_EXPORT int poll(struct pollfd *fds, nfds_t n, int timeout)
{
    th_resolve();
    if (!th_active() || !th_waitset_has_listener(fds, n))
        return real_poll(fds, n, timeout);
    return th_waitset_poll(fds, n, th_deadline_ms(timeout), NULL);
}

TH_EXPORT int ppoll(struct pollfd *fds, nfds_t n, const struct timespec *timeout,
                    const sigset_t *sigmask)
{
    th_resolve();
    if (!th_active() || !th_waitset_has_listener(fds, n))
        return real_ppoll(fds, n, timeout, sigmask);
    if (!th_timespec_valid(timeout))
        return real_ppoll(fds, n, timeout, sigmask);      /* let libc say EINVAL */
    return th_waitset_poll(fds, n, th_deadline_ts(timeout), sigmask);
}

/* -D_FORTIFY_SOURCE routes poll() here: check the size, then as poll(). */
TH_EXPORT int __poll_chk(struct pollfd *fds, nfds_t n, int timeout, size_t fdslen)
{
    th_resolve();
    if (real___poll_chk && fdslen / sizeof(*fds) < n)
        return real___poll_chk(fds, n, timeout, fdslen);  /* aborts, as it should */
    return poll(fds, n, timeout);
}

TH_EXPORT int __ppoll_chk(struct pollfd *fds, nfds_t n, const struct timespec *timeout,
                          const sigset_t *sigmask, size_t fdslen)
{
    th_resolve();
    if (real___ppoll_chk && fdslen / sizeof(*fds) < n)
        return real___ppoll_chk(fds, n, timeout, sigmask, fdslen);
    return ppoll(fds, n, timeout, sigmask);
}

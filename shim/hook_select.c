/*
 * select and pselect, run through the same decision as poll: the fd_sets
 * become a pollfd array on the stack and back.
 *
 * Semantics kept: readable means POLLIN|POLLHUP|POLLERR, writable
 * POLLOUT|POLLERR, exceptional POLLPRI (as the kernel's select does); a
 * closed fd in a set fails with EBADF; select writes the time left back
 * into its timeval (Linux does), pselect leaves its timespec alone; the
 * return value counts set bits.  Sets without a managed listener, and
 * nfds outside 0..FD_SETSIZE, go straight to libc.
 */
#include "thunder.h"

#include <string.h>

static bool has_listener(int nfds, const fd_set *readfds)
{
    if (readfds == NULL || nfds <= 0 || nfds > FD_SETSIZE)
        return false;
    for (int fd = 0; fd < nfds; fd++)
        if (FD_ISSET(fd, readfds) && th_fd_listener(fd))
            return true;
    return false;
}

static nfds_t to_pollfds(int nfds, const fd_set *r, const fd_set *w, const fd_set *e,
                         struct pollfd *pfd)
{
    nfds_t n = 0;

    for (int fd = 0; fd < nfds; fd++) {
        short events = 0;
        if (r && FD_ISSET(fd, r))
            events |= POLLIN;
        if (w && FD_ISSET(fd, w))
            events |= POLLOUT;
        if (e && FD_ISSET(fd, e))
            events |= POLLPRI;
        if (events)
            pfd[n++] = (struct pollfd){ .fd = fd, .events = events };
    }
    return n;
}

static int from_pollfds(const struct pollfd *pfd, nfds_t n, fd_set *r, fd_set *w, fd_set *e)
{
    int count = 0;

    for (nfds_t i = 0; i < n; i++)
        if (pfd[i].revents & POLLNVAL) {
            errno = EBADF;
            return -1;
        }
    for (nfds_t i = 0; i < n; i++) {
        const struct pollfd *p = &pfd[i];
        if (r && FD_ISSET(p->fd, r) && !(p->revents & (POLLIN | POLLHUP | POLLERR)))
            FD_CLR(p->fd, r);
        if (w && FD_ISSET(p->fd, w) && !(p->revents & (POLLOUT | POLLERR)))
            FD_CLR(p->fd, w);
        if (e && FD_ISSET(p->fd, e) && !(p->revents & POLLPRI))
            FD_CLR(p->fd, e);
        count += (r && FD_ISSET(p->fd, r)) + (w && FD_ISSET(p->fd, w)) +
                 (e && FD_ISSET(p->fd, e));
    }
    return count;
}

static int select_via_poll(int nfds, fd_set *r, fd_set *w, fd_set *e, int64_t deadline,
                           const sigset_t *sigmask)
{
    struct pollfd pfd[FD_SETSIZE];
    nfds_t n = to_pollfds(nfds, r, w, e, pfd);
    int ret = th_waitset_poll(pfd, n, deadline, sigmask);

    if (ret < 0)
        return -1;
    if (ret == 0) {
        if (r) FD_ZERO(r);
        if (w) FD_ZERO(w);
        if (e) FD_ZERO(e);
        return 0;
    }
    return from_pollfds(pfd, n, r, w, e);
}

TH_EXPORT int select(int nfds, fd_set *r, fd_set *w, fd_set *e, struct timeval *timeout)
{
    int64_t deadline;
    int ret, saved_errno;

    th_resolve();
    if (!th_active() || !has_listener(nfds, r) || !th_timeval_valid(timeout))
        return real_select(nfds, r, w, e, timeout);
    deadline = th_deadline_tv(timeout);
    ret = select_via_poll(nfds, r, w, e, deadline, NULL);
    saved_errno = errno;
    if (timeout)                     /* Linux reports the time left */
        th_ns_to_timeval(th_remaining_ns(deadline), timeout);
    errno = saved_errno;
    return ret;
}

TH_EXPORT int pselect(int nfds, fd_set *r, fd_set *w, fd_set *e,
                      const struct timespec *timeout, const sigset_t *sigmask)
{
    th_resolve();
    if (!th_active() || !has_listener(nfds, r) || !th_timespec_valid(timeout))
        return real_pselect(nfds, r, w, e, timeout, sigmask);
    return select_via_poll(nfds, r, w, e, th_deadline_ts(timeout), sigmask);
}

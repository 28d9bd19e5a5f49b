/*
 * epoll_create, epoll_create1, epoll_ctl, epoll_wait, epoll_pwait,
 * epoll_pwait2.  The decisions live in epreg.c; these only resolve, route
 * and keep libc's contract (timeouts from entry, EINTR, sigmask, errno).
 * A wait whose plan is still "pass" (epwait.c, epmemo.c) is the program's own call.
 */
#include "thunder.h"

static int created(int epfd)
{
    int saved_errno = errno;

    if (epfd >= 0 && th_cfg.mode != TH_MODE_OFF) {
        th_fd_forget(epfd);
        th_epreg_created(epfd);
    }
    errno = saved_errno;
    return epfd;
}

TH_EXPORT int epoll_create(int size)
{
    th_resolve();
    return created(real_epoll_create(size));
}

TH_EXPORT int epoll_create1(int flags)
{
    th_resolve();
    return created(real_epoll_create1(flags));
}

TH_EXPORT int epoll_ctl(int epfd, int op, int fd, struct epoll_event *ev)
{
    th_resolve();
    if (!th_active())
        return real_epoll_ctl(epfd, op, fd, ev);
    return th_epreg_ctl(epfd, op, fd, ev);
}

TH_EXPORT int epoll_wait(int epfd, struct epoll_event *evs, int maxevents, int timeout)
{
    th_resolve();
    if (!th_active() || maxevents <= 0 || !th_epreg_has_listener(epfd))
        return real_epoll_wait(epfd, evs, maxevents, timeout);
    if (th_epreg_pass_begin(epfd))
        return th_epreg_pass_end(epfd, evs, real_epoll_wait(epfd, evs, maxevents, timeout));
    return th_epreg_wait(epfd, evs, maxevents, th_deadline_ms(timeout), NULL, false);
}

TH_EXPORT int epoll_pwait(int epfd, struct epoll_event *evs, int maxevents, int timeout,
                          const sigset_t *sigmask)
{
    th_resolve();
    if (!th_active() || maxevents <= 0 || !th_epreg_has_listener(epfd))
        return real_epoll_pwait(epfd, evs, maxevents, timeout, sigmask);
    if (th_epreg_pass_begin(epfd))
        return th_epreg_pass_end(epfd, evs,
                                 real_epoll_pwait(epfd, evs, maxevents, timeout, sigmask));
    return th_epreg_wait(epfd, evs, maxevents, th_deadline_ms(timeout), sigmask, false);
}

TH_EXPORT int epoll_pwait2(int epfd, struct epoll_event *evs, int maxevents,
                           const struct timespec *timeout, const sigset_t *sigmask)
{
    th_resolve();
    if (real_epoll_pwait2 == NULL) {
        errno = ENOSYS;
        return -1;
    }
    if (!th_active() || maxevents <= 0 || !th_epreg_has_listener(epfd) ||
        !th_timespec_valid(timeout))
        return real_epoll_pwait2(epfd, evs, maxevents, timeout, sigmask);
    if (th_epreg_pass_begin(epfd))
        return th_epreg_pass_end(epfd, evs,
                                 real_epoll_pwait2(epfd, evs, maxevents, timeout, sigmask));
    return th_epreg_wait(epfd, evs, maxevents, th_deadline_ts(timeout), sigmask, true);
}

/*
 * close, dup, dup2, dup3 and listen: the calls that change what an fd
 * number means.  Each one makes the shim forget what it knew about the
 * number (listener, epoll instance, mirror entry) before the number can be
 * reused, and releases an accept lock held for a listener being closed.
 */
#include "thunder.h"

static void forget(int fd)
{
    int saved_errno = errno;
    struct th_listener *l = th_fd_is_listener(fd) ? th_fd_listener(fd) : NULL;

    if (l && th_held_has(l))
        th_held_release(l);
    if (l || th_fd_is_epoll(fd))
        th_epreg_forget_fd(fd);
    th_mirror_forget_fd(fd);
    /* the last fd of a listener (a dup'ed one keeps it): recycle the entry */
    if (l && !th_fd_listener_shared(fd, l))
        th_listener_closed(l);
    th_fd_forget(fd);
    errno = saved_errno;
}

TH_EXPORT int close(int fd)
{
    th_resolve();
    if (th_cfg.mode != TH_MODE_OFF)
        forget(fd);
    return real_close(fd);
}

TH_EXPORT int dup(int oldfd)
{
    int r;

    th_resolve();
    r = real_dup(oldfd);
    if (r >= 0 && th_cfg.mode != TH_MODE_OFF)
        th_fd_forget(r);
    return r;
}

TH_EXPORT int dup2(int oldfd, int newfd)
{
    th_resolve();
    if (th_cfg.mode != TH_MODE_OFF && oldfd != newfd)
        forget(newfd);
    return real_dup2(oldfd, newfd);
}

TH_EXPORT int dup3(int oldfd, int newfd, int flags)
{
    th_resolve();
    if (th_cfg.mode != TH_MODE_OFF && oldfd != newfd)
        forget(newfd);
    return real_dup3(oldfd, newfd, flags);
}

/* A socket seen before listen() was cached as "not a listener". */
TH_EXPORT int listen(int fd, int backlog)
{
    int r;

    th_resolve();
    r = real_listen(fd, backlog);
    if (r == 0 && th_cfg.mode != TH_MODE_OFF)
        th_fd_forget(fd);
    return r;
}

/*
 * fcntl, fcntl64 and ioctl: passed through untouched, and only watched for
 * a change of a listener's O_NONBLOCK (F_SETFL, FIONBIO), and, as dup()
 * is (hook_fd.c), for the new number F_DUPFD returns.  A further
 * accept of a wake-up may be refused only on a listener that does not
 * block; hook_accept.c asks that once and listener.c keeps the answer
 * until the program changes it here, so a refusal costs no fcntl of its
 * own.  Only fds already known as listeners are looked at: no system call
 * is added, and a program that sets O_NONBLOCK on every new socket pays an
 * array lookup.  The optional argument is read and passed on as the
 * pointer-sized value libc's own wrappers read.
 */
#undef _FILE_OFFSET_BITS   /* define fcntl itself, not a redirect to fcntl64 */
#include "thunder.h"

#include <fcntl.h>
#include <stdarg.h>
#include <sys/ioctl.h>

static void nonblocking_may_change(int fd)
{
    struct th_listener *l;

    if (th_cfg.mode != TH_MODE_OFF && th_fd_is_listener(fd) && (l = th_fd_listener(fd)) != NULL)
        th_listener_note_blocking(l, -1);
}

/* The optional third argument, read as libc's own wrappers read it. */
#define THIRD_ARG(last, arg)               \
    do {                                   \
        va_list ap;                        \
        va_start(ap, last);                \
        (arg) = va_arg(ap, void *);        \
        va_end(ap);                        \
    } while (0)

/* The real fcntl, then what it changed that the shim keeps. */
static int fcntl_via(int (*real)(int, int, ...), int fd, int cmd, void *arg)
{
    int r = real(fd, cmd, arg);

    if (r < 0 || th_cfg.mode == TH_MODE_OFF)
        return r;
    if (cmd == F_DUPFD || cmd == F_DUPFD_CLOEXEC)
        th_fd_forget(r);
    else if (cmd == F_SETFL)
        nonblocking_may_change(fd);
    return r;
}

TH_EXPORT int fcntl(int fd, int cmd, ...)
{
    void *arg;

    THIRD_ARG(cmd, arg);
    th_resolve();
    return fcntl_via(real_fcntl, fd, cmd, arg);
}

/* glibc >= 2.28 routes fcntl here for programs built with 64-bit offsets. */
TH_EXPORT int fcntl64(int fd, int cmd, ...)
{
    void *arg;

    THIRD_ARG(cmd, arg);
    th_resolve();
    return fcntl_via(real_fcntl64 ? real_fcntl64 : real_fcntl, fd, cmd, arg);
}

TH_EXPORT int ioctl(int fd, unsigned long request, ...)
{
    void *arg;
    int r;

    THIRD_ARG(request, arg);
    th_resolve();
    r = real_ioctl(fd, request, arg);
    if (r == 0 && request == FIONBIO)
        nonblocking_may_change(fd);
    return r;
}

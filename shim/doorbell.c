/*
 * A per-thread wake-up fd that another process can ring.
 *
 * A thread whose poll set holds other fds besides the listener must not
 * sleep on a futex: it has to keep serving those fds.  So it queues for
 * the lock like everyone else, then sleeps in the real ppoll on its own
 * fds plus this doorbell; the process that hands it the lock rings it.
 * The same path serves ppoll/pselect with a signal mask, because ppoll
 * applies the mask atomically where a futex cannot.
 *
 * The doorbell is an AF_UNIX datagram socket bound in the abstract
 * namespace as "libthunder.<euid>.<tid>": no file, nothing to clean up,
 * gone when the thread's fd closes.  A ring is a one-byte datagram; a
 * stray datagram only causes a spurious look at the lock word.  If the
 * program closes or reuses the fd number, a new doorbell is made: the
 * close/dup hooks tell fdtable.c, and only after some doorbell number was
 * forgotten does a thread check its own with fstat (the inode), so an
 * ordinary wait costs no system call here.
 */
#include "thunder.h"

#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

static __thread int bell_fd = -1;
static _Atomic bool given_up;      /* the fd limit was reached: no more doorbells */
static __thread pid_t bell_pid;
static __thread ino_t bell_ino;
static __thread uint32_t bell_epoch;   /* th_fd_doorbells_forgotten() when last proven */

static socklen_t bell_address(struct sockaddr_un *sun, uid_t uid, pid_t tid)
{
    int len;

    memset(sun, 0, sizeof(*sun));
    sun->sun_family = AF_UNIX;
    /* sun_path[0] == '\0': abstract namespace */
    len = snprintf(sun->sun_path + 1, sizeof(sun->sun_path) - 1, "libthunder.%u.%d",
                   (unsigned)uid, (int)tid);
    return (socklen_t)(offsetof(struct sockaddr_un, sun_path) + 1 + (size_t)len);
}

static void proven(void)
{
    th_fd_mark_doorbell(bell_fd);
    bell_epoch = th_fd_doorbells_forgotten();
}

static bool still_ours(void)
{
    struct stat st;
    uint32_t epoch;

    if (bell_fd < 0 || bell_pid != th_pid)
        return false;
    epoch = th_fd_doorbells_forgotten();
    if (epoch == bell_epoch && th_fd_is_doorbell(bell_fd))
        return true;                   /* no doorbell number was let go since */
    if (fstat(bell_fd, &st) != 0 || st.st_ino != bell_ino)
        return false;
    proven();
    return true;
}

int th_doorbell_fd(void)
{
    int saved_errno = errno;
    struct sockaddr_un sun;
    struct stat st;
    socklen_t len;
    int fd;

    if (still_ours())
        return bell_fd;
    bell_fd = -1;
    if (atomic_load_explicit(&given_up, memory_order_relaxed))
        return -1;
    len = bell_address(&sun, geteuid(), th_gettid());
    fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd >= 0 && (bind(fd, (struct sockaddr *)&sun, len) < 0 || fstat(fd, &st) < 0)) {
        th_debug("no doorbell for thread %d (%s); mixed waits retry instead",
                 (int)th_gettid(), strerror(errno));
        real_close(fd);
        fd = -1;
    }
    if (fd >= 0) {
        bell_fd = fd;
        bell_pid = th_pid;
        bell_ino = st.st_ino;
        proven();
    }
    errno = saved_errno;
    return bell_fd;
}

void th_doorbell_ring(uid_t uid, pid_t tid)
{
    int saved_errno = errno;
    struct sockaddr_un sun;
    socklen_t len = bell_address(&sun, uid, tid);
    int fd = th_doorbell_fd();

    /* refused (no such thread) or full (already ringing): both are fine */
    if (fd >= 0)
        sendto(fd, "", 1, MSG_DONTWAIT | MSG_NOSIGNAL, (struct sockaddr *)&sun, len);
    errno = saved_errno;
}

void th_doorbell_drain(int fd)
{
    int saved_errno = errno;
    char buf[64];

    while (recv(fd, buf, sizeof(buf), MSG_DONTWAIT) > 0)
        ;
    errno = saved_errno;
}

void th_doorbell_after_fork(void)
{
    /* the copy belongs to the parent's thread; the child makes its own */
    if (bell_fd >= 0) {
        th_fd_forget(bell_fd);
        real_close(bell_fd);
    }
    bell_fd = -1;
}

/*
 * The program hit its fd limit: this thread's doorbell is closed and no
 * new one is made in this process (waits sleep on the futex instead, and
 * a hand-off to a thread without a doorbell is seen at its next check).
 * True if an fd was given back.
 */
bool th_doorbell_give_up(void)
{
    bool mine = still_ours();

    atomic_store(&given_up, true);
    if (mine)
        real_close(bell_fd);
    bell_fd = -1;
    return mine;
}

/*
 * What the shim knows about each fd, in one place.
 *
 * A socket with SO_ACCEPTCONN is a listener; everything else is "other".
 * The answer is cached per fd number (one getsockopt on first sight) and
 * forgotten by the close/dup2/dup3/dup/listen hooks, so fd reuse cannot
 * leave a stale answer behind.  An fd that accept returned is a connected
 * socket, never a listener: the accept hooks say so at once, and it costs
 * no getsockopt later.  Threads race on the cache only to write the same
 * answer, so relaxed atomics are enough.
 */
#include "thunder.h"

#include <fcntl.h>
#include <netinet/in.h>
#include <sys/stat.h>

#define CACHED_FDS 65536

enum fd_kind {
    KIND_UNKNOWN = 0,
    KIND_OTHER,          /* not a listener, or a listener we leave alone */
    KIND_LISTENER,       /* a managed listener; see listener_index */
    KIND_EPOLL,          /* an epoll instance created in this process image */
    KIND_DOORBELL,       /* a thread's doorbell (doorbell.c) */
};

static _Atomic uint8_t kind_of[CACHED_FDS];
static _Atomic uint8_t listener_index[CACHED_FDS];
_Static_assert(TH_MAX_LISTENERS <= 256, "listener_index holds a table index in a byte");
static _Atomic int highest_listener_fd = -1;   /* bounds the scan below */
static _Atomic uint32_t doorbells_forgotten;    /* see th_fd_doorbells_forgotten */
static _Atomic uint16_t generation_of[CACHED_FDS]; /* see th_fd_generation */

static uint16_t port_of(int fd)
{
    struct sockaddr_storage ss;
    socklen_t len = sizeof(ss);

    if (getsockname(fd, (struct sockaddr *)&ss, &len) < 0)
        return 0;
    if (ss.ss_family == AF_INET)
        return ntohs(((struct sockaddr_in *)&ss)->sin_port);
    if (ss.ss_family == AF_INET6)
        return ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
    return 0;
}

/* Look at the fd itself; NULL when it is not a managed listener. */
static struct th_listener *classify(int fd, enum fd_kind *kind)
{
    int accepting = 0;
    socklen_t len = sizeof(accepting);
    struct stat st;
    struct th_listener *l;

    *kind = KIND_OTHER;
    if (getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &accepting, &len) < 0) {
        if (errno == EBADF)
            *kind = KIND_UNKNOWN;        /* nothing to remember about a hole */
        return NULL;
    }
    if (!accepting || fstat(fd, &st) < 0)
        return NULL;
    l = th_listener_for_inode((uint64_t)st.st_ino, port_of(fd));
    if (l == NULL || !l->managed)
        return NULL;
    *kind = KIND_LISTENER;
    return l;
}

struct th_listener *th_fd_listener(int fd)
{
    int saved_errno;
    struct th_listener *l;
    enum fd_kind kind;

    if (fd < 0)
        return NULL;
    if (fd < CACHED_FDS) {
        kind = atomic_load_explicit(&kind_of[fd], memory_order_relaxed);
        if (kind == KIND_LISTENER)
            return th_listener_at(atomic_load_explicit(&listener_index[fd],
                                                       memory_order_relaxed));
        if (kind != KIND_UNKNOWN)
            return NULL;
    }
    saved_errno = errno;        /* classify's calls may fail */
    l = classify(fd, &kind);
    if (fd < CACHED_FDS) {
        if (l) {
            int high = atomic_load(&highest_listener_fd);
            atomic_store_explicit(&listener_index[fd], (uint8_t)l->index, memory_order_relaxed);
            while (fd > high && !atomic_compare_exchange_weak(&highest_listener_fd, &high, fd))
                ;
        }
        atomic_store_explicit(&kind_of[fd], (uint8_t)kind, memory_order_relaxed);
    }
    errno = saved_errno;
    return l;
}

bool th_fd_listener_shared(int fd, const struct th_listener *l)
{
    int high = atomic_load(&highest_listener_fd);

    for (int other = 0; other <= high && other < CACHED_FDS; other++)
        if (other != fd && atomic_load_explicit(&kind_of[other], memory_order_relaxed) == KIND_LISTENER &&
            atomic_load_explicit(&listener_index[other], memory_order_relaxed) == l->index)
            return true;
    return fd >= CACHED_FDS;    /* uncached numbers: do not guess, keep it */
}

/* A number now means kind; a doorbell it meant before is gone. */
static void set_kind(int fd, enum fd_kind kind)
{
    if (fd < 0 || fd >= CACHED_FDS)
        return;
    atomic_fetch_add_explicit(&generation_of[fd], 1, memory_order_relaxed);
    if (atomic_exchange_explicit(&kind_of[fd], kind, memory_order_relaxed) == KIND_DOORBELL)
        atomic_fetch_add(&doorbells_forgotten, 1);
}

void th_fd_forget(int fd)
{
    set_kind(fd, KIND_UNKNOWN);
}

void th_fd_mark_connected(int fd)
{
    set_kind(fd, KIND_OTHER);
}

void th_fd_mark_doorbell(int fd)
{
    set_kind(fd, KIND_DOORBELL);
}

/*
 * How many doorbell numbers the program has closed or reused so far.  A
 * thread whose doorbell was marked while this count stood where it stands
 * now still has it, without an fstat to prove it.
 */
uint32_t th_fd_doorbells_forgotten(void)
{
    return atomic_load_explicit(&doorbells_forgotten, memory_order_acquire);
}

/*
 * A number's generation changes each time any thread closes, dups onto or
 * marks it, so a thread that registered the number earlier can tell, with
 * one load, whether it still means the same file.  False for numbers
 * beyond the cache: those cannot be told apart.
 */
bool th_fd_generation(int fd, uint16_t *generation)
{
    if (fd < 0 || fd >= CACHED_FDS)
        return false;
    *generation = atomic_load_explicit(&generation_of[fd], memory_order_relaxed);
    return true;
}

bool th_fd_is_doorbell(int fd)
{
    return fd >= 0 && fd < CACHED_FDS &&
           atomic_load_explicit(&kind_of[fd], memory_order_relaxed) == KIND_DOORBELL;
}

void th_fd_mark_epoll(int fd)
{
    set_kind(fd, KIND_EPOLL);
}

bool th_fd_is_epoll(int fd)
{
    return fd >= 0 && fd < CACHED_FDS &&
           atomic_load_explicit(&kind_of[fd], memory_order_relaxed) == KIND_EPOLL;
}

bool th_fd_is_listener(int fd)
{
    return fd >= 0 && fd < CACHED_FDS &&
           atomic_load_explicit(&kind_of[fd], memory_order_relaxed) == KIND_LISTENER;
}

int th_fd_blocking(int fd)
{
    int saved_errno = errno;
    int flags = real_fcntl(fd, F_GETFL);

    errno = saved_errno;
    return flags < 0 ? -1 : !(flags & O_NONBLOCK);
}

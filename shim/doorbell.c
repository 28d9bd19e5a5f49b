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
 * namespace: no file, nothing to clean up, gone when the thread's fd
 * closes.  That namespace has no permissions (anyone in the network
 * namespace can bind any free name and send to any bound one) and its
 * names are public (/proc/net/unix), so:
 *
 *   - the name is "libthunder.<euid>.<16 random hex digits>", not derived
 *     from the tid: nobody can bind it first, and threads of servers in
 *     different PID namespaces never collide.  (If it is taken anyway,
 *     another is drawn.)  The waiter publishes it in its queue slot in the
 *     segment, which only its own user can read or write;
 *   - a ring is an 8-byte datagram carrying a per-doorbell secret, the
 *     token, published in the same slot.  A classic BPF socket filter on
 *     the doorbell accepts exactly that datagram and drops every other.
 *     AF_UNIX runs the receiver's filter in the sender's sendmsg
 *     (unix_dgram_sendmsg calls sk_filter on the receiving socket), so a
 *     flood from another user is dropped before it is queued: it never
 *     wakes the waiter, never fills its queue.
 *
 * A datagram that passes is at worst a spurious look at the lock word.
 * If the program closes or reuses the fd number, a new doorbell (new
 * name, new token) is made: the close/dup hooks tell fdtable.c, and only
 * after some doorbell number was forgotten does a thread check its own
 * with fstat (the inode), so an ordinary wait costs no system call here.
 */
#include "thunder.h"

#include <linux/filter.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#define BIND_ATTEMPTS 4

static __thread int bell_fd = -1;
static _Atomic bool given_up;      /* the fd limit was reached: no more doorbells */
static __thread pid_t bell_pid;
static __thread ino_t bell_ino;
static __thread uint32_t bell_epoch;   /* th_fd_doorbells_forgotten() when last proven */
static __thread struct th_bell_id bell_id;

/* "libthunder.<uid>.<name in 16 hex digits>", written out by hand: a
   hand-off rings a bell per connection, and snprintf was about 1,200 of
   the lock path's 7,400 instructions per connection (bench/instructions.sh). */
static size_t put_bell_name(char *out, uid_t uid, uint64_t name)
{
    static const char prefix[] = "libthunder.", hex[] = "0123456789abcdef";
    char digits[10];
    size_t n = sizeof(prefix) - 1, d = 0;
    unsigned u = (unsigned)uid;

    memcpy(out, prefix, n);
    do {
        digits[d++] = (char)('0' + u % 10);
        u /= 10;
    } while (u != 0);
    while (d > 0)
        out[n++] = digits[--d];
    out[n++] = '.';
    for (int shift = 60; shift >= 0; shift -= 4)
        out[n++] = hex[(name >> shift) & 15];
    return n;
}

static socklen_t bell_address(struct sockaddr_un *sun, uid_t uid, uint64_t name)
{
    size_t len;

    memset(sun, 0, sizeof(*sun));
    sun->sun_family = AF_UNIX;
    /* sun_path[0] == '\0': abstract namespace (at most 1 + 38 bytes) */
    len = put_bell_name(sun->sun_path + 1, uid, name);
    return (socklen_t)(offsetof(struct sockaddr_un, sun_path) + 1 + len);
}

/* The token as sent: big-endian, as BPF_ABS loads words. */
static void token_bytes(uint64_t token, unsigned char out[8])
{
    for (int i = 0; i < 8; i++)
        out[i] = (unsigned char)(token >> (56 - 8 * i));
}

/* Accept an 8-byte datagram equal to the token; drop anything else. */
static int attach_filter(int fd, uint64_t token)
{
    struct sock_filter code[] = {
        BPF_STMT(BPF_LD | BPF_W | BPF_LEN, 0),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, 8, 0, 4),
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, 0),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, (uint32_t)(token >> 32), 0, 2),
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, 4),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, (uint32_t)token, 1, 0),
        BPF_STMT(BPF_RET | BPF_K, 0),           /* drop */
        BPF_STMT(BPF_RET | BPF_K, 0xffff),      /* keep */
    };
    struct sock_fprog prog = { .len = TH_ARRAY_LEN(code), .filter = code };

    return setsockopt(fd, SOL_SOCKET, SO_ATTACH_FILTER, &prog, sizeof(prog));
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

/* A filtered socket bound at a fresh random name, or -1 (errno). */
static int make_bell(struct th_bell_id *id)
{
    int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);

    if (fd < 0)
        return -1;
    id->token = th_random64();
    /* before bind: no datagram can arrive unfiltered */
    if (attach_filter(fd, id->token) < 0) {
        int saved_errno = errno;
        real_close(fd);
        errno = saved_errno;
        return -1;
    }
    for (int attempt = 0; attempt < BIND_ATTEMPTS; attempt++) {
        struct sockaddr_un sun;
        socklen_t len;

        id->name = th_random64();
        len = bell_address(&sun, geteuid(), id->name);
        if (bind(fd, (struct sockaddr *)&sun, len) == 0)
            return fd;
        if (errno != EADDRINUSE)
            break;
        th_debug("doorbell name taken (by another user?); drawing another");
    }
    int saved_errno = errno;
    real_close(fd);
    errno = saved_errno;
    return -1;
}

int th_doorbell_fd(void)
{
    int saved_errno = errno;
    struct stat st;
    int fd;

    if (still_ours())
        return bell_fd;
    bell_fd = -1;
    if (atomic_load_explicit(&given_up, memory_order_relaxed))
        return -1;
    fd = make_bell(&bell_id);
    if (fd >= 0 && fstat(fd, &st) < 0) {
        real_close(fd);
        fd = -1;
    }
    if (fd < 0) {
        th_debug("no doorbell for thread %d (%s); mixed waits retry instead",
                 (int)th_gettid(), strerror(errno));
    } else {
        bell_fd = fd;
        bell_pid = th_pid;
        bell_ino = st.st_ino;
        proven();
    }
    errno = saved_errno;
    return bell_fd;
}

const struct th_bell_id *th_doorbell_id(void)
{
    return still_ours() ? &bell_id : NULL;
}

void th_doorbell_ring(uid_t uid, const struct th_bell_id *id)
{
    int saved_errno = errno;
    struct sockaddr_un sun;
    socklen_t len = bell_address(&sun, uid, id->name);
    unsigned char token[8];
    int fd = th_doorbell_fd();

    token_bytes(id->token, token);
    /* refused (no such thread) or full (already ringing): both are fine */
    if (fd >= 0)
        sendto(fd, token, sizeof(token), MSG_DONTWAIT | MSG_NOSIGNAL,
               (struct sockaddr *)&sun, len);
    errno = saved_errno;
}

/* Every ring queued, in one system call (recv would need one more to see
   the socket empty). */
void th_doorbell_drain(int fd)
{
    enum { BATCH = 8 };
    int saved_errno = errno;
    unsigned char buf[BATCH][16];
    struct iovec iov[BATCH];
    struct mmsghdr msgs[BATCH];

    memset(msgs, 0, sizeof(msgs));
    for (int i = 0; i < BATCH; i++) {
        iov[i] = (struct iovec){ .iov_base = buf[i], .iov_len = sizeof(buf[i]) };
        msgs[i].msg_hdr.msg_iov = &iov[i];
        msgs[i].msg_hdr.msg_iovlen = 1;
    }
    while (recvmmsg(fd, msgs, BATCH, MSG_DONTWAIT, NULL) == BATCH)
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

/*
 * The segment core (segcore.h): name, validation, liveness, the stale
 * check, the guard, open/map/create and "remove if stale", written once for
 * the library, thunder-stat and the tests.
 *
 * Nothing in an existing segment is trusted before it passes validation:
 * the file (regular, owner, mode 0600, size), then the header (magic,
 * version, size, uid, inode, ready).
 *
 * Every fd here is closed with the raw close system call: inside
 * libthunder.so a plain close() would resolve to the library's own close
 * hook (fd bookkeeping, its in-shim guard) for an fd that was never a
 * socket; in the tools it is simply close().  These fds are ours alone,
 * opened and closed within one function, so nothing else (no stdio, no
 * other thread) can be holding them.
 */
#define _GNU_SOURCE
#include "segcore.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#define READY_WAIT_MS 200     /* how long a creator may take to initialise */

/* ---- name ------------------------------------------------------------ */

void th_seg_prefix(char *buf, size_t len, uid_t uid)
{
    snprintf(buf, len, TH_SEG_PREFIX "%u.", (unsigned)uid);
}

void th_seg_name(char *buf, size_t len, uid_t uid, uint64_t inode)
{
    snprintf(buf, len, "/" TH_SEG_PREFIX "%u.%" PRIu64, (unsigned)uid, inode);
}

void th_seg_path(char *buf, size_t len, uid_t uid, uint64_t inode)
{
    snprintf(buf, len, TH_SHM_DIR "/" TH_SEG_PREFIX "%u.%" PRIu64, (unsigned)uid, inode);
}

bool th_seg_parse_name(const char *entry, uid_t uid, uint64_t *inode)
{
    char prefix[48], *end;
    size_t len;

    th_seg_prefix(prefix, sizeof(prefix), uid);
    len = strlen(prefix);
    if (strncmp(entry, prefix, len) != 0 || entry[len] < '0' || entry[len] > '9')
        return false;
    if (entry[len] == '0' && entry[len + 1] != '\0')
        return false;               /* one spelling per inode: no leading zero */
    errno = 0;
    *inode = strtoull(entry + len, &end, 10);
    return errno == 0 && *end == '\0';
}

const char *th_strategy_name(uint32_t strategy)
{
    static const char *const names[] = {
        [TH_STRAT_NONE] = "none",      [TH_STRAT_OBSERVE] = "observe",
        [TH_STRAT_LOCK] = "lock",      [TH_STRAT_EXCLUSIVE] = "exclusive",
        [TH_STRAT_JITTER] = "jitter",  [TH_STRAT_PASS] = "pass",
    };
    return strategy < sizeof(names) / sizeof(names[0]) ? names[strategy] : "?";
}

/* ---- validation ---------------------------------------------------------- */

const char *th_seg_check_file(const struct stat *st, uid_t uid)
{
    if (!S_ISREG(st->st_mode))
        return "not a regular file";
    if (st->st_uid != uid)
        return "owned by another user";
    if ((st->st_mode & 07777) != 0600)
        return "its mode is not 0600";
    if (st->st_size != (off_t)sizeof(struct th_seg))
        return "wrong size, not a libthunder segment (truncated, oversized or another layout)";
    return NULL;
}

const char *th_seg_check_header(const struct th_seg *seg, uid_t uid, uint64_t inode)
{
    if (seg->magic != TH_SEG_MAGIC)
        return "wrong magic (not a libthunder segment)";
    if (seg->version != TH_SEG_VERSION)
        return "different layout version (another libthunder release?)";
    if (seg->size != sizeof(struct th_seg))
        return "recorded size does not match";
    if (seg->uid != (uint32_t)uid)
        return "recorded owner is another user";
    if (seg->inode != inode)
        return "recorded socket inode does not match its name";
    if (!atomic_load_explicit(&seg->ready, memory_order_acquire))
        return "never finished initialising (creator died?)";
    return NULL;
}

const char *th_seg_open_error(int err)
{
    return err == ELOOP ? "a symbolic link (never followed)" : strerror(err);
}

bool th_seg_other_release(int fd)
{
    struct { uint64_t magic; uint32_t version; } head;

    return pread(fd, &head, sizeof(head), 0) == (ssize_t)sizeof(head) &&
           head.magic == TH_SEG_MAGIC && head.version != TH_SEG_VERSION;
}

bool th_seg_header_ready(int fd)
{
    uint32_t ready = 0;

    return pread(fd, &ready, sizeof(ready), offsetof(struct th_seg, ready)) ==
               (ssize_t)sizeof(ready) && ready != 0;
}

/* ---- liveness -------------------------------------------------------------- */

void th_seg_close(int fd)
{
    int saved_errno = errno;

    syscall(SYS_close, fd);      /* see the top of this file */
    errno = saved_errno;
}

bool th_thread_alive(int32_t pid, int32_t tid)
{
    int saved_errno = errno;
    bool alive;

    if (pid <= 0)
        return false;
    alive = syscall(SYS_tgkill, pid, tid > 0 ? tid : pid, 0) == 0 || errno == EPERM;
    errno = saved_errno;
    return alive;
}

/*
 * A process that has exited but is not reaped yet (a zombie) still answers
 * kill(pid, 0); for the lock and the segment it is gone.  This reads
 * /proc, so it is for the slow paths only (recovery, staleness, tools).
 */
bool th_pid_exited(int32_t pid)
{
    char path[40], buf[256], *close_paren;
    int saved_errno = errno, fd;
    ssize_t n;

    snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
    fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        errno = saved_errno;
        return false;               /* no /proc: trust the signal check */
    }
    n = read(fd, buf, sizeof(buf) - 1);
    th_seg_close(fd);
    errno = saved_errno;
    if (n <= 0)
        return false;
    buf[n] = '\0';
    close_paren = strrchr(buf, ')');
    return close_paren && close_paren[1] == ' ' &&
           (close_paren[2] == 'Z' || close_paren[2] == 'X');
}

/* EPERM (a pid reused by another user) counts as alive, to be safe. */
bool th_proc_alive(int32_t pid)
{
    return th_thread_alive(pid, pid) && !th_pid_exited(pid);
}

/* ---- the stale check ---------------------------------------------------- */

/*
 * Every attached process is gone: whatever is in the segment is history.
 * gone_pid (or 0) is a process that is leaving: its threads still queued
 * or holding the lock at its exit do not keep the segment alive.  The
 * creator registers itself before it sets ready (th_seg_create), so a
 * segment just made is never empty, never stale.
 */
bool th_seg_stale(const struct th_seg *seg, int32_t gone_pid)
{
    int32_t holder = atomic_load_explicit(&seg->holder_pid, memory_order_relaxed);

    if (holder && holder != gone_pid && th_proc_alive(holder))
        return false;
    for (int i = 0; i < TH_MAX_PROCS; i++) {
        int32_t pid = atomic_load_explicit(&seg->procs[i].pid, memory_order_relaxed);
        if (pid && pid != gone_pid && th_proc_alive(pid))
            return false;
    }
    for (int i = 0; i < TH_MAX_WAITERS; i++) {
        int32_t pid = seg->waiters[i].pid;
        if (atomic_load(&seg->waiters[i].state) != TH_W_FREE && pid != gone_pid &&
            th_proc_alive(pid))
            return false;
    }
    return true;
}

/* ---- the guard ----------------------------------------------------------------- */

/* A process died inside a few lines of bookkeeping: the state is usable. */
static int repaired(struct th_seg *seg, int r)
{
    if (r == EOWNERDEAD) {
        pthread_mutex_consistent(&seg->guard);
        return 0;
    }
    return r;
}

int th_seg_guard_lock(struct th_seg *seg)
{
    struct timespec until;

    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_sec += TH_SEG_GUARD_TIMEOUT_S;
    return repaired(seg, pthread_mutex_timedlock(&seg->guard, &until));
}

int th_seg_guard_trylock(struct th_seg *seg)
{
    return repaired(seg, pthread_mutex_trylock(&seg->guard));
}

void th_seg_guard_unlock(struct th_seg *seg)
{
    pthread_mutex_unlock(&seg->guard);
}

/* ---- open, map, create ------------------------------------------------------- */

/* Wait (bounded) for a creator that has not sized the file yet. */
static bool wait_for_size(int fd)
{
    for (int ms = 0; ms < READY_WAIT_MS; ms++) {
        struct stat st;
        if (fstat(fd, &st) < 0)
            return false;
        if (st.st_size != 0)
            return true;
        usleep(1000);
    }
    return false;
}

int th_seg_open_path(const char *path, bool writable)
{
    return open(path, (writable ? O_RDWR : O_RDONLY) | O_NOFOLLOW | O_CLOEXEC | O_NONBLOCK);
}

int th_seg_open_file(const char *path, uid_t uid, bool writable, bool patient,
                     const char **why)
{
    int fd = th_seg_open_path(path, writable);
    struct stat st;

    if (fd < 0) {
        *why = errno == ENOENT ? "" : th_seg_open_error(errno);
        return -1;
    }
    if (patient && fstat(fd, &st) == 0 && S_ISREG(st.st_mode))
        wait_for_size(fd);
    if (fstat(fd, &st) < 0)
        *why = strerror(errno);
    else
        *why = th_seg_check_file(&st, uid);
    if (*why == NULL)
        return fd;
    th_seg_close(fd);
    return -1;
}

struct th_seg *th_seg_map(int fd, bool writable)
{
    void *p = mmap(NULL, sizeof(struct th_seg), writable ? PROT_READ | PROT_WRITE : PROT_READ,
                   MAP_SHARED, fd, 0);

    return p == MAP_FAILED ? NULL : p;
}

void th_seg_unmap(struct th_seg *seg)
{
    munmap(seg, sizeof(*seg));
}

struct th_seg *th_seg_open(uid_t uid, uint64_t inode, bool writable, bool patient,
                           const char **why)
{
    char path[TH_SEG_PATH_MAX];
    struct th_seg *seg;
    int fd;

    th_seg_path(path, sizeof(path), uid, inode);
    fd = th_seg_open_file(path, uid, writable, patient, why);
    if (fd < 0) {
        if (*why && **why == '\0')
            *why = NULL;                    /* gone: the caller may retry */
        return NULL;
    }
    seg = th_seg_map(fd, writable);
    *why = seg ? NULL : strerror(errno);
    th_seg_close(fd);
    if (seg == NULL)
        return NULL;
    for (int ms = 0; patient && ms < READY_WAIT_MS && !atomic_load(&seg->ready); ms++)
        usleep(1000);
    if ((*why = th_seg_check_header(seg, uid, inode)) != NULL) {
        th_seg_unmap(seg);
        return NULL;
    }
    return seg;
}

static void init_guard(pthread_mutex_t *m)
{
    pthread_mutexattr_t attr;

    pthread_mutexattr_init(&attr);
    pthread_mutexattr_setpshared(&attr, PTHREAD_PROCESS_SHARED);
    pthread_mutexattr_setrobust(&attr, PTHREAD_MUTEX_ROBUST);
    pthread_mutexattr_settype(&attr, PTHREAD_MUTEX_ERRORCHECK);
    pthread_mutex_init(m, &attr);
    pthread_mutexattr_destroy(&attr);
}

static void init_segment(struct th_seg *seg, uid_t uid, uint64_t inode, uint16_t port,
                         int32_t creator_pid)
{
    memset(seg, 0, sizeof(*seg));
    seg->magic = TH_SEG_MAGIC;
    seg->version = TH_SEG_VERSION;
    seg->size = sizeof(*seg);
    seg->uid = (uint32_t)uid;
    seg->inode = inode;
    seg->port = port;
    init_guard(&seg->guard);
    /* registered before it is ready, so a concurrent sweep never sees it empty */
    atomic_store(&seg->procs[0].pid, creator_pid);
    atomic_store_explicit(&seg->ready, 1, memory_order_release);
}

struct th_seg *th_seg_create(uid_t uid, uint64_t inode, uint16_t port, int32_t creator_pid)
{
    char name[TH_SEG_PATH_MAX];
    struct th_seg *seg = NULL;
    int fd, saved_errno;

    th_seg_name(name, sizeof(name), uid, inode);
    fd = shm_open(name, O_RDWR | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
    if (fd < 0)
        return NULL;
    /* umask may have narrowed the mode; the owner needs exactly 0600 */
    if (fchmod(fd, 0600) < 0 || ftruncate(fd, sizeof(struct th_seg)) < 0 ||
        (seg = th_seg_map(fd, true)) == NULL) {
        saved_errno = errno;
        th_seg_close(fd);
        shm_unlink(name);
        errno = saved_errno;
        return NULL;
    }
    th_seg_close(fd);
    init_segment(seg, uid, inode, port, creator_pid);
    return seg;
}

/* ---- remove if stale ----------------------------------------------------------- */

/* An unlink that finds the name already gone (rm -f) still removed it. */
enum th_seg_removal th_seg_remove_if_stale_locked(struct th_seg *seg, int32_t gone_pid)
{
    char name[TH_SEG_PATH_MAX];

    if (atomic_load(&seg->unlinked))
        return TH_SEG_LEAVING;
    if (!th_seg_stale(seg, gone_pid))
        return TH_SEG_IN_USE;
    th_seg_name(name, sizeof(name), seg->uid, seg->inode);
    if (shm_unlink(name) < 0 && errno != ENOENT)
        return TH_SEG_UNLINK_FAILED;
    atomic_store(&seg->unlinked, 1);
    return TH_SEG_REMOVED;
}

enum th_seg_removal th_seg_remove_if_stale(struct th_seg *seg, bool patient)
{
    enum th_seg_removal result;
    int saved_errno;

    if ((patient ? th_seg_guard_lock(seg) : th_seg_guard_trylock(seg)) != 0)
        return TH_SEG_GUARD_BUSY;
    result = th_seg_remove_if_stale_locked(seg, 0);
    saved_errno = errno;
    th_seg_guard_unlock(seg);
    errno = saved_errno;
    return result;
}

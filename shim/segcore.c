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
#include <dirent.h>
#include <sys/mman.h>
#include <sys/random.h>
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

/* The name with an alternative's suffix (0: none), from "/": shm_open's. */
static void name_with_suffix(char *buf, size_t len, uid_t uid, uint64_t inode, uint64_t suffix)
{
    th_seg_name(buf, len, uid, inode);
    if (suffix != 0) {
        size_t used = strlen(buf);
        snprintf(buf + used, len - used, ".%016" PRIx64, suffix);
    }
}

void th_seg_path_of(char *buf, size_t len, const struct th_seg *seg)
{
    char name[TH_SEG_PATH_MAX];

    name_with_suffix(name, sizeof(name), seg->uid, seg->inode, seg->name_suffix);
    snprintf(buf, len, TH_SHM_DIR "%s", name);
}

/* ".<16 lowercase hex digits>", not all zero, and nothing after it. */
static bool is_suffix(const char *s)
{
    bool nonzero = false;

    if (*s++ != '.')
        return false;
    for (int i = 0; i < 16; i++, s++) {
        if (!((*s >= '0' && *s <= '9') || (*s >= 'a' && *s <= 'f')))
            return false;
        nonzero |= *s != '0';
    }
    return *s == '\0' && nonzero;
}

bool th_seg_parse_name(const char *entry, uid_t uid, uint64_t *inode)
{
    char prefix[48], *end;
    size_t len;

    th_seg_prefix(prefix, sizeof(prefix), uid);
    len = strlen(prefix);
    if (strncmp(entry, prefix, len) != 0 || entry[len] < '0' || entry[len] > '9')
        return false;
    if (entry[len] == '0' && entry[len + 1] != '\0' && entry[len + 1] != '.')
        return false;               /* one spelling per inode: no leading zero */
    errno = 0;
    *inode = strtoull(entry + len, &end, 10);
    return errno == 0 && (*end == '\0' || is_suffix(end));
}

/* An entry of TH_SHM_DIR that uid may trust as a segment file before opening it. */
static bool owned_file(int dir, const char *entry, uid_t uid)
{
    struct stat st;

    return fstatat(dir, entry, &st, AT_SYMLINK_NOFOLLOW) == 0 && S_ISREG(st.st_mode) &&
           st.st_uid == uid && (st.st_mode & 07777) == 0600;
}

/* The lowest-named alternative of (uid, inode) that uid owns, into path. */
static bool find_alternative(uid_t uid, uint64_t inode, char *path, size_t len)
{
    char plain[TH_SEG_PATH_MAX], best[TH_SEG_PATH_MAX] = "";
    DIR *dir = opendir(TH_SHM_DIR);
    struct dirent *de;
    size_t plain_len;

    if (dir == NULL)
        return false;
    th_seg_name(plain, sizeof(plain), uid, inode);
    plain_len = strlen(plain + 1);
    while ((de = readdir(dir)) != NULL) {
        if (strncmp(de->d_name, plain + 1, plain_len) != 0 || !is_suffix(de->d_name + plain_len))
            continue;
        if (strlen(de->d_name) < sizeof(best) &&
            (best[0] == '\0' || strcmp(de->d_name, best) < 0) &&
            owned_file(dirfd(dir), de->d_name, uid))
            strcpy(best, de->d_name);
    }
    closedir(dir);
    if (best[0] == '\0')
        return false;
    snprintf(path, len, "%s/%.*s", TH_SHM_DIR, (int)(sizeof(best) - 1), best);
    return true;
}

bool th_seg_find(uid_t uid, uint64_t inode, char *path, size_t len)
{
    struct stat st;

    /* ours, whatever it is: validation judges it.  (An alternative exists
       only while the plain name is not ours: creators look under a lock.) */
    th_seg_path(path, len, uid, inode);
    if (lstat(path, &st) == 0 && st.st_uid == uid)
        return true;
    if (find_alternative(uid, inode, path, len))
        return true;
    th_seg_path(path, len, uid, inode);
    return false;
}

bool th_seg_name_is_foreign(uid_t uid, uint64_t inode)
{
    char path[TH_SEG_PATH_MAX];
    struct stat st;

    th_seg_path(path, sizeof(path), uid, inode);
    return lstat(path, &st) == 0 ? st.st_uid != uid : errno != ENOENT;
}

/* ---- unpredictable values ---------------------------------------------- */

uint64_t th_random64(void)
{
    uint64_t v = 0;
    struct timespec ts;

    while (v == 0) {
        if (getrandom(&v, sizeof(v), GRND_NONBLOCK) != (ssize_t)sizeof(v)) {
            /* no entropy source (very old kernel): weaker, still not a pid */
            clock_gettime(CLOCK_MONOTONIC, &ts);
            v ^= (uint64_t)ts.tv_nsec * 0x9e3779b97f4a7c15ULL ^ (uint64_t)(uintptr_t)&v ^
                 ((uint64_t)getpid() << 32) ^ (uint64_t)ts.tv_sec;
        }
    }
    return v;
}

const char *th_strategy_name(uint32_t strategy)
{
    static const char *const names[] = {
        [TH_STRAT_NONE] = "none",      [TH_STRAT_OBSERVE] = "observe",
        [TH_STRAT_LOCK] = "lock",      [TH_STRAT_EXCLUSIVE] = "exclusive",
        [TH_STRAT_JITTER] = "jitter",  [TH_STRAT_PASS] = "pass",  [TH_STRAT_ALONE] = "alone",
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

/* The state letter of /proc/<pid>[/task/<tid>]/stat ('R', 'S', 'T'...); 0 if unknown. */
static char proc_state(int32_t pid, int32_t tid)
{
    char path[64], buf[256], *close_paren;
    int saved_errno = errno, fd;
    ssize_t n;

    if (tid > 0)
        snprintf(path, sizeof(path), "/proc/%d/task/%d/stat", (int)pid, (int)tid);
    else
        snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
    fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        errno = saved_errno;
        return 0;                   /* no /proc: trust the signal check */
    }
    n = read(fd, buf, sizeof(buf) - 1);
    th_seg_close(fd);
    errno = saved_errno;
    if (n <= 0)
        return 0;
    buf[n] = '\0';
    close_paren = strrchr(buf, ')');
    return close_paren && close_paren[1] == ' ' ? close_paren[2] : 0;
}

/* A zombie (exited, not reaped) still answers kill(pid, 0), but for the lock
   and the segment it is gone.  Reads /proc: slow paths only (recovery...). */
bool th_pid_exited(int32_t pid)
{
    char state = proc_state(pid, 0);

    return state == 'Z' || state == 'X';
}

/* Stopped by a signal (T) or by a debugger (t); reads /proc, slow paths only. */
bool th_thread_stopped(int32_t pid, int32_t tid)
{
    char state = proc_state(pid, tid);

    return state == 'T' || state == 't';
}

/* EPERM (a pid reused by another user) counts as alive, to be safe. */
bool th_proc_alive(int32_t pid)
{
    return th_thread_alive(pid, pid) && !th_pid_exited(pid);
}

/* ---- slots ------------------------------------------------------------ */

int th_seg_procs_used(const struct th_seg *seg)
{
    uint32_t used = atomic_load_explicit(&seg->procs_used, memory_order_relaxed);

    return used < TH_MAX_PROCS ? (int)used : TH_MAX_PROCS;
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
    int r = pthread_mutex_trylock(&seg->guard);   /* free: no deadline, no clock */

    if (r != EBUSY)
        return repaired(seg, r);
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

/*
 * Before anything is opened, the name is looked at without following it:
 * what is not a regular file of uid's is refused unopened, so a file,
 * FIFO or socket another user left at the name is never opened, read,
 * written or truncated (root could open it).  After the open, the fd
 * must still be that file.
 */
int th_seg_open_file(const char *path, uid_t uid, bool writable, bool patient,
                     const char **why)
{
    struct stat named, st;
    int fd;

    if (lstat(path, &named) < 0) {
        *why = errno == ENOENT ? "" : strerror(errno);
        return -1;
    }
    if (S_ISLNK(named.st_mode) || !S_ISREG(named.st_mode) || named.st_uid != uid) {
        *why = S_ISLNK(named.st_mode) ? th_seg_open_error(ELOOP)
                                      : th_seg_check_file(&named, uid);
        return -1;
    }
    if ((fd = th_seg_open_path(path, writable)) < 0) {
        *why = errno == ENOENT ? "" : th_seg_open_error(errno);
        return -1;
    }
    if (patient)
        wait_for_size(fd);
    if (fstat(fd, &st) < 0)
        *why = strerror(errno);
    else if (st.st_ino != named.st_ino || st.st_dev != named.st_dev)
        *why = "replaced while being opened";
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

struct th_seg *th_seg_open_at(const char *path, uid_t uid, uint64_t inode, bool writable,
                              bool patient, const char **why)
{
    struct th_seg *seg;
    int fd = th_seg_open_file(path, uid, writable, patient, why);

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

struct th_seg *th_seg_open(uid_t uid, uint64_t inode, bool writable, bool patient,
                           const char **why)
{
    char path[TH_SEG_PATH_MAX];

    th_seg_find(uid, inode, path, sizeof(path));
    return th_seg_open_at(path, uid, inode, writable, patient, why);
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

static void init_segment(struct th_seg *seg, uid_t uid, uint64_t inode, uint64_t suffix,
                         uint16_t port, int32_t creator_pid)
{
    memset(seg, 0, sizeof(*seg));
    seg->magic = TH_SEG_MAGIC;
    seg->version = TH_SEG_VERSION;
    seg->size = sizeof(*seg);
    seg->uid = (uint32_t)uid;
    seg->inode = inode;
    seg->name_suffix = suffix;
    seg->port = port;
    init_guard(&seg->guard);
    /* registered before it is ready, so a concurrent sweep never sees it empty */
    atomic_store(&seg->procs[0].pid, creator_pid);
    atomic_store(&seg->procs_used, 1);
    atomic_store_explicit(&seg->ready, 1, memory_order_release);
}

/*
 * Size the file and allocate its pages now.  ftruncate alone succeeds on a
 * full /dev/shm, and the first touch of a page that cannot be allocated
 * then kills the process with SIGBUS; allocated here, a full /dev/shm is an
 * ENOSPC the caller can report.
 */
static int allocate(int fd)
{
    int err;

    if (ftruncate(fd, sizeof(struct th_seg)) < 0)
        return -1;
    do
        err = posix_fallocate(fd, 0, sizeof(struct th_seg));
    while (err == EINTR);
    if (err != 0) {
        errno = err;
        return -1;
    }
    return 0;
}

struct th_seg *th_seg_create(uid_t uid, uint64_t inode, uint64_t suffix, uint16_t port,
                             int32_t creator_pid)
{
    char name[TH_SEG_PATH_MAX];
    struct th_seg *seg = NULL;
    int fd, saved_errno;

    name_with_suffix(name, sizeof(name), uid, inode, suffix);
    fd = shm_open(name, O_RDWR | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
    if (fd < 0)
        return NULL;
    /* umask may have narrowed the mode; the owner needs exactly 0600 */
    if (fchmod(fd, 0600) < 0 || allocate(fd) < 0 || (seg = th_seg_map(fd, true)) == NULL) {
        saved_errno = errno;
        th_seg_close(fd);
        shm_unlink(name);
        errno = saved_errno;
        return NULL;
    }
    th_seg_close(fd);
    init_segment(seg, uid, inode, suffix, port, creator_pid);
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
    name_with_suffix(name, sizeof(name), seg->uid, seg->inode, seg->name_suffix);
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

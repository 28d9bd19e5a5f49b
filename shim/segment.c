/*
 * Shared-memory segments: one per listening socket, named after the
 * effective uid and the socket inode, so every process holding the same
 * socket (inherited, re-executed, passed with SCM_RIGHTS) finds the same
 * lock and unrelated servers never do.
 *
 * Nothing in an existing segment is trusted before it passes validation:
 * owner, mode, size, magic, version, uid and inode.  A segment that fails
 * is refused with one warning and its listener runs pass-through.
 */
#include "thunder.h"

#include <dirent.h>
#include <fcntl.h>
#include <stdlib.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#define READY_WAIT_MS 200     /* how long a creator may take to initialise */
#define GUARD_TIMEOUT_S 1     /* a guard held longer than this is refused */

void th_seg_name(char *buf, size_t len, uid_t uid, uint64_t inode)
{
    snprintf(buf, len, "/" TH_SEG_PREFIX "%u.%" PRIu64, (unsigned)uid, inode);
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
 * /proc, so it is for the slow paths only (recovery, staleness).
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
    real_close(fd);
    errno = saved_errno;
    if (n <= 0)
        return false;
    buf[n] = '\0';
    close_paren = strrchr(buf, ')');
    return close_paren && close_paren[1] == ' ' &&
           (close_paren[2] == 'Z' || close_paren[2] == 'X');
}

static bool proc_alive(int32_t pid)
{
    return th_thread_alive(pid, pid) && !th_pid_exited(pid);
}

int th_seg_validate(const struct th_seg *seg, size_t mapped, uid_t uid,
                    uint64_t inode, const char **why)
{
    if (mapped != sizeof(struct th_seg))
        *why = "wrong size";
    else if (seg->magic != TH_SEG_MAGIC)
        *why = "wrong magic (not a libthunder segment)";
    else if (seg->version != TH_SEG_VERSION)
        *why = "different layout version (another libthunder release?)";
    else if (seg->size != sizeof(struct th_seg))
        *why = "recorded size does not match";
    else if (seg->uid != (uint32_t)uid)
        *why = "recorded owner is another user";
    else if (seg->inode != inode)
        *why = "recorded socket inode does not match its name";
    else
        return 0;
    return -1;
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

static void init_segment(struct th_seg *seg, uid_t uid, uint64_t inode, uint16_t port)
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
    atomic_store(&seg->procs[0].pid, th_pid);
    atomic_store_explicit(&seg->ready, 1, memory_order_release);
}

int th_guard_lock(struct th_seg *seg)
{
    struct timespec until;
    int r;

    th_self.in_shim++;
    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_sec += GUARD_TIMEOUT_S;
    r = pthread_mutex_timedlock(&seg->guard, &until);
    if (r == EOWNERDEAD) {
        /* a process died inside a few lines of bookkeeping; go on */
        pthread_mutex_consistent(&seg->guard);
        r = 0;
    }
    if (r != 0) {
        th_self.in_shim--;
        th_warn("segment of port %u: guard unavailable (%s); this call runs pass-through",
                seg->port, strerror(r));
        return -1;
    }
    return 0;
}

/* For the sweep: take the guard only if it is free right now. */
static int guard_trylock(struct th_seg *seg)
{
    int r;

    th_self.in_shim++;
    r = pthread_mutex_trylock(&seg->guard);
    if (r == EOWNERDEAD) {
        pthread_mutex_consistent(&seg->guard);
        r = 0;
    }
    if (r != 0)
        th_self.in_shim--;
    return r == 0 ? 0 : -1;
}

void th_guard_unlock(struct th_seg *seg)
{
    pthread_mutex_unlock(&seg->guard);
    th_self.in_shim--;
}

/* Take a slot's part out of seg->waiting, once (whoever swaps it to 0). */
void th_seg_drop_waiting(struct th_seg *seg, struct th_proc_stats *slot)
{
    int32_t part = atomic_exchange(&slot->waiting, 0);

    if (part != 0)
        atomic_fetch_sub(&seg->waiting, part);
}

/* Dead processes' parts of seg->waiting (killed inside a wait). */
void th_seg_drop_dead_waiting(struct th_seg *seg)
{
    for (int i = 0; i < TH_MAX_PROCS; i++) {
        struct th_proc_stats *s = &seg->procs[i];
        int32_t owner = atomic_load_explicit(&s->pid, memory_order_relaxed);
        if (owner != 0 && atomic_load_explicit(&s->waiting, memory_order_relaxed) != 0 &&
            !proc_alive(owner))
            th_seg_drop_waiting(seg, s);
    }
}

/* This process's statistics slot: its own, a free one, or a dead one's. */
static struct th_proc_stats *claim_slot_locked(struct th_seg *seg, pid_t pid)
{
    struct th_proc_stats *free_slot = NULL;

    for (int i = 0; i < TH_MAX_PROCS; i++) {
        struct th_proc_stats *s = &seg->procs[i];
        int32_t owner = atomic_load(&s->pid);
        if (owner == pid)
            return s;
        if (!free_slot && (owner == 0 || !proc_alive(owner)))
            free_slot = s;
    }
    if (free_slot) {
        th_seg_drop_waiting(seg, free_slot);   /* a dead owner's, if any */
        memset((void *)free_slot, 0, sizeof(*free_slot));
        atomic_store(&free_slot->pid, pid);
    }
    return free_slot;
}

/*
 * Every attached process is gone: whatever is in the segment is history.
 * gone_pid (or 0) is a process that is leaving: its threads still queued
 * or holding the lock at its exit do not keep the segment alive.
 */
static bool stale_except(const struct th_seg *seg, int32_t gone_pid)
{
    if (seg->holder_pid && seg->holder_pid != gone_pid && proc_alive(seg->holder_pid))
        return false;
    for (int i = 0; i < TH_MAX_PROCS; i++) {
        int32_t pid = atomic_load_explicit(&seg->procs[i].pid, memory_order_relaxed);
        if (pid && pid != gone_pid && proc_alive(pid))
            return false;
    }
    for (int i = 0; i < TH_MAX_WAITERS; i++) {
        int32_t pid = seg->waiters[i].pid;
        if (atomic_load(&seg->waiters[i].state) != TH_W_FREE && pid != gone_pid &&
            proc_alive(pid))
            return false;
    }
    return true;
}

static bool stale_locked(const struct th_seg *seg)
{
    return stale_except(seg, 0);
}

/*
 * A process leaves (exit, or its last fd of the listener closed): nothing of
 * it may stay in the queue, or two workers exiting together would each see
 * the other's threads still queued and neither would remove the segment.
 * A lock it holds becomes free; the next waiter's check hands it on.
 */
static void forget_process_locked(struct th_seg *seg, int32_t pid)
{
    for (int i = 0; i < TH_MAX_WAITERS; i++) {
        struct th_waiter *w = &seg->waiters[i];
        uint32_t state = atomic_load(&w->state);
        if (state == TH_W_FREE || w->pid != pid)
            continue;
        if (state == TH_W_QUEUED && seg->nqueued > 0)
            seg->nqueued--;
        atomic_store(&w->state, TH_W_FREE);
    }
    if (seg->holder_pid == pid)
        seg->holder_pid = seg->holder_tid = 0;
}

static void reset_locked(struct th_seg *seg)
{
    seg->holder_pid = seg->holder_tid = 0;
    seg->holder_in_wait = 0;
    seg->nqueued = 0;
    memset(seg->waiters, 0, sizeof(seg->waiters));
    memset(seg->procs, 0, sizeof(seg->procs));
}

/* Wait (bounded) for a creator that is still initialising. */
static bool wait_until(int fd, bool for_size)
{
    for (int ms = 0; ms < READY_WAIT_MS; ms++) {
        struct stat st;
        if (fstat(fd, &st) < 0)
            return false;
        if (!for_size || st.st_size != 0)
            return true;
        usleep(1000);
    }
    return false;
}

static struct th_seg *map_segment(int fd)
{
    void *p = mmap(NULL, sizeof(struct th_seg), PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);

    return p == MAP_FAILED ? NULL : p;
}

static struct th_seg *create_segment(const char *name, uid_t uid, uint64_t inode,
                                     uint16_t port)
{
    int fd = shm_open(name, O_RDWR | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
    struct th_seg *seg;

    if (fd < 0)
        return NULL;
    /* umask may have narrowed the mode; the owner needs exactly 0600 */
    if (fchmod(fd, 0600) < 0 || ftruncate(fd, sizeof(struct th_seg)) < 0 ||
        (seg = map_segment(fd)) == NULL) {
        int saved_errno = errno;
        real_close(fd);
        shm_unlink(name);
        errno = saved_errno;
        return NULL;
    }
    real_close(fd);
    init_segment(seg, uid, inode, port);
    th_debug("created segment %s", name);
    return seg;
}

/* Open what is already there; NULL with *why when it must be refused. */
static struct th_seg *open_existing(const char *name, uid_t uid, uint64_t inode,
                                    bool patient, const char **why)
{
    int fd = shm_open(name, O_RDWR | O_NOFOLLOW | O_CLOEXEC, 0);
    struct th_seg *seg = NULL;
    struct stat st;

    if (fd < 0) {
        *why = errno == ENOENT ? NULL : strerror(errno);   /* NULL: just retry */
        return NULL;
    }
    if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode))
        *why = "not a regular shared-memory file";
    else if (st.st_uid != uid)
        *why = "owned by another user";
    else if ((st.st_mode & 07777) != 0600)
        *why = "its mode is not 0600";
    else if ((patient && !wait_until(fd, true)) || fstat(fd, &st) < 0 ||
             st.st_size != (off_t)sizeof(struct th_seg))
        *why = "wrong size (truncated, oversized or another layout)";
    else if ((seg = map_segment(fd)) == NULL)
        *why = strerror(errno);
    real_close(fd);
    if (seg == NULL)
        return NULL;
    for (int ms = 0; patient && ms < READY_WAIT_MS && !atomic_load(&seg->ready); ms++)
        usleep(1000);
    if (!atomic_load(&seg->ready) || th_seg_validate(seg, sizeof(*seg), uid, inode, why) < 0) {
        if (!atomic_load(&seg->ready))
            *why = "never finished initialising (creator died?)";
        munmap(seg, sizeof(*seg));
        return NULL;
    }
    return seg;
}

/*
 * Remove this user's segments whose processes are all gone (killed without
 * exit(), so nobody removed them).  Run when a new segment is created, i.e.
 * once per server start; segments that fail validation are left for
 * thunder-preload gc to report.  Bounded: a few dozen names at most.
 */
static void sweep_stale(uid_t uid, uint64_t except)
{
    char prefix[48];
    DIR *dir = opendir("/dev/shm");
    struct dirent *de;
    int checked = 0;

    if (dir == NULL)
        return;
    snprintf(prefix, sizeof(prefix), TH_SEG_PREFIX "%u.", (unsigned)uid);
    while ((de = readdir(dir)) != NULL && checked < 64) {
        char name[300], *end;
        const char *why = NULL;
        uint64_t inode;
        struct th_seg *seg;

        if (strncmp(de->d_name, prefix, strlen(prefix)) != 0)
            continue;
        inode = strtoull(de->d_name + strlen(prefix), &end, 10);
        if (*end != '\0' || inode == except)
            continue;
        checked++;
        snprintf(name, sizeof(name), "/%s", de->d_name);
        /* never wait here: a half-made or busy segment is left for gc */
        if ((seg = open_existing(name, uid, inode, false, &why)) == NULL)
            continue;
        if (guard_trylock(seg) == 0) {
            if (!atomic_load(&seg->unlinked) && stale_locked(seg)) {
                shm_unlink(name);
                atomic_store(&seg->unlinked, 1);
                th_debug("removed stale segment /dev/shm%s", name);
            }
            th_guard_unlock(seg);
        }
        munmap(seg, sizeof(*seg));
    }
    closedir(dir);
}

struct th_seg *th_seg_attach(uint64_t inode, uint16_t port)
{
    uid_t uid = geteuid();
    char name[96];

    th_seg_name(name, sizeof(name), uid, inode);
    for (int attempt = 0; attempt < 4; attempt++) {
        const char *why = NULL;
        struct th_seg *seg = create_segment(name, uid, inode, port);

        if (seg) {
            sweep_stale(uid, inode);
            return seg;
        }
        if (errno != EEXIST) {
            th_warn("cannot create /dev/shm%s (%s); port %u runs pass-through",
                    name, strerror(errno), port);
            return NULL;
        }
        seg = open_existing(name, uid, inode, true, &why);
        if (seg == NULL && why) {
            th_warn("refusing /dev/shm%s: %s; port %u runs pass-through", name, why, port);
            return NULL;
        }
        if (seg == NULL)
            continue;                     /* removed meanwhile: create it */
        if (th_guard_lock(seg) < 0) {
            munmap(seg, sizeof(*seg));
            return NULL;
        }
        if (atomic_load(&seg->unlinked)) {   /* its last user is leaving */
            th_guard_unlock(seg);
            munmap(seg, sizeof(*seg));
            continue;
        }
        if (stale_locked(seg)) {
            th_debug("segment %s was left by dead processes; reusing it", name);
            reset_locked(seg);
        }
        seg->port = port;
        claim_slot_locked(seg, th_pid);   /* attached = registered, for the sweep */
        th_guard_unlock(seg);
        return seg;
    }
    th_warn("segment /dev/shm%s keeps changing; port %u runs pass-through", name, port);
    return NULL;
}

struct th_proc_stats *th_seg_claim_slot(struct th_seg *seg, pid_t pid)
{
    struct th_proc_stats *found;

    if (seg == NULL || th_guard_lock(seg) < 0)
        return NULL;
    found = claim_slot_locked(seg, pid);
    th_guard_unlock(seg);
    if (!found)
        th_warn("port %u: more than %d processes; statistics of this one are not kept",
                seg->port, TH_MAX_PROCS);
    return found;
}

void th_seg_detach(struct th_seg *seg, struct th_proc_stats *mine)
{
    char name[96];

    if (th_guard_lock(seg) < 0)
        return;
    if (mine) {
        th_seg_drop_waiting(seg, mine);
        atomic_store(&mine->pid, 0);
    }
    forget_process_locked(seg, th_pid);
    if (stale_except(seg, th_pid)) {
        th_seg_name(name, sizeof(name), seg->uid, seg->inode);
        shm_unlink(name);
        atomic_store(&seg->unlinked, 1);
        th_debug("removed segment %s (last process to leave)", name);
    }
    th_guard_unlock(seg);
}

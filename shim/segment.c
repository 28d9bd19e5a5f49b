/*
 * The library's segments: one per listening socket, named after the
 * effective uid and the socket inode, so every process holding the same
 * socket (inherited, re-executed, passed with SCM_RIGHTS) finds the same
 * lock and unrelated servers never do.
 *
 * Another local user may have taken the name first (socket inodes are
 * public, and the squatter's file cannot be removed from sticky /dev/shm
 * except by root).  Then the segment gets an alternative name, the plain
 * one plus 16 random hex digits (th_seg_find, segcore.h); the processes
 * holding the socket find it by its owner (theirs) and mode (0600), which
 * no other user can fake.  Two of them creating at the same moment would
 * make two alternatives: a creator holds a POSIX record lock on the
 * listening socket itself while it looks and creates, a lock only
 * processes holding the socket can take.  Nothing another user put at any
 * name is opened, removed or written, by root either.
 *
 * What a segment is (name, validation, liveness, the stale check, the
 * guard, creation, removal) is the segment core's (segcore.c), shared with
 * thunder-stat.  This layer adds what belongs to a process running the
 * library: its warnings, its pid, th_self.in_shim around the guard, and
 * the bookkeeping of its statistics slot and queue entries.  A segment
 * that fails validation is refused with one warning and its listener runs
 * pass-through.
 */
#include "thunder.h"

#include <dirent.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* The guard, with this thread marked as inside the library while it holds it. */
int th_guard_lock(struct th_seg *seg)
{
    int r;

    th_self.in_shim++;
    r = th_seg_guard_lock(seg);
    if (r != 0) {
        th_self.in_shim--;
        th_warn("segment of port %u: guard unavailable (%s); this call runs pass-through",
                seg->port, strerror(r));
        return -1;
    }
    return 0;
}

void th_guard_unlock(struct th_seg *seg)
{
    th_seg_guard_unlock(seg);
    th_self.in_shim--;
}

int th_seg_validate(const struct th_seg *seg, size_t mapped, uid_t uid,
                    uint64_t inode, const char **why)
{
    if (mapped != sizeof(struct th_seg))
        *why = "wrong size";
    else
        *why = th_seg_check_header(seg, uid, inode);
    return *why ? -1 : 0;
}

/* Take a slot's part out of seg->waiting, once (whoever swaps it to 0). */
void th_seg_drop_waiting(struct th_seg *seg, struct th_proc_stats *slot)
{
    int32_t part = atomic_exchange(&slot->waiting, 0);

    if (part != 0)
        atomic_fetch_sub(&seg->waiting, part);
}

/*
 * Dead processes' parts of seg->waiting (killed inside a wait).  Asked
 * on a busy path (burst.c), so a signal check only, no /proc read: a
 * zombie's part goes once it is reaped.
 */
void th_seg_drop_dead_waiting(struct th_seg *seg)
{
    int used = th_seg_procs_used(seg);

    for (int i = 0; i < used; i++) {
        struct th_proc_stats *s = &seg->procs[i];
        int32_t owner = atomic_load_explicit(&s->pid, memory_order_relaxed);
        if (owner != 0 && atomic_load_explicit(&s->waiting, memory_order_relaxed) != 0 &&
            !th_thread_alive(owner, owner))
            th_seg_drop_waiting(seg, s);
    }
}

/*
 * This process's statistics slot: its own, a free one, or a dead one's.
 * Slots never used are taken in order, so procs_used bounds every claimed
 * one and the scans on busy paths stop there.
 * Liveness (a /proc read each) is looked at only when no slot is free:
 * a thousand workers starting at once must not each read a thousand /proc
 * files under the guard, or the guard's timeout turns the storm into
 * pass-through calls.
 */
static struct th_proc_stats *claim_slot_locked(struct th_seg *seg, pid_t pid)
{
    struct th_proc_stats *free_slot = NULL;
    int used = th_seg_procs_used(seg);

    for (int i = 0; i < used; i++) {
        struct th_proc_stats *s = &seg->procs[i];
        int32_t owner = atomic_load(&s->pid);
        if (owner == pid)
            return s;
        if (!free_slot && owner == 0)
            free_slot = s;
    }
    if (!free_slot && used < TH_MAX_PROCS) {
        free_slot = &seg->procs[used];
        atomic_store(&seg->procs_used, (uint32_t)used + 1);
    }
    for (int i = 0; i < used && !free_slot; i++)
        if (!th_proc_alive(atomic_load(&seg->procs[i].pid)))
            free_slot = &seg->procs[i];
    if (free_slot) {
        th_seg_drop_waiting(seg, free_slot);   /* a dead owner's, if any */
        memset((void *)free_slot, 0, sizeof(*free_slot));
        atomic_store(&free_slot->pid, pid);
    }
    return free_slot;
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
    atomic_store(&seg->procs_used, 0);
    atomic_store(&seg->waiting, 0);      /* the dead processes' parts */
}

/*
 * Remove this user's segments whose processes are all gone (killed without
 * exit(), so nobody removed them).  Run when a new segment is created, i.e.
 * once per server start; segments that fail validation are left for
 * thunder-preload gc to report.  Bounded: a few dozen names at most, and
 * never a wait: a half-made or busy segment is left for gc too.  gc
 * removes with the same function (th_seg_remove_if_stale).
 */
static void sweep_stale(uid_t uid, uint64_t except)
{
    DIR *dir = opendir(TH_SHM_DIR);
    struct dirent *de;
    int checked = 0;

    if (dir == NULL)
        return;
    while ((de = readdir(dir)) != NULL && checked < 64) {
        char path[300];
        const char *why = NULL;
        uint64_t inode;
        struct th_seg *seg;

        if (!th_seg_parse_name(de->d_name, uid, &inode) || inode == except)
            continue;
        checked++;
        snprintf(path, sizeof(path), TH_SHM_DIR "/%s", de->d_name);
        if ((seg = th_seg_open_at(path, uid, inode, true, false, &why)) == NULL)
            continue;
        th_self.in_shim++;
        if (th_seg_remove_if_stale(seg, false) == TH_SEG_REMOVED)
            th_debug("removed stale segment %s", path);
        th_self.in_shim--;
        th_seg_unmap(seg);
    }
    closedir(dir);
}

/* Attach to what is there: NULL to retry (gone or leaving) or, with *refused, never. */
static struct th_seg *attach_existing(const char *path, uid_t uid, uint64_t inode,
                                      uint16_t port, bool *refused)
{
    const char *why = NULL;
    struct th_seg *seg = th_seg_open_at(path, uid, inode, true, true, &why);

    *refused = why != NULL;
    if (why)
        th_warn("refusing %s: %s; port %u runs pass-through", path, why, port);
    if (seg == NULL)
        return NULL;
    if (th_guard_lock(seg) < 0) {
        *refused = true;
        th_seg_unmap(seg);
        return NULL;
    }
    if (atomic_load(&seg->unlinked)) {   /* its last user is leaving */
        th_guard_unlock(seg);
        th_seg_unmap(seg);
        return NULL;
    }
    if (th_seg_stale(seg, 0)) {
        th_debug("segment %s was left by dead processes; reusing it", path);
        reset_locked(seg);
    }
    seg->port = port;
    claim_slot_locked(seg, th_pid);   /* attached = registered, for the sweep */
    th_guard_unlock(seg);
    return seg;
}

/* An fd of ours on the socket with this inode (from /proc/self/fd), or -1. */
static int socket_fd(uint64_t inode)
{
    char want[48], link[64], path[300];
    DIR *dir = opendir("/proc/self/fd");
    struct dirent *de;
    int found = -1;

    if (dir == NULL)
        return -1;
    snprintf(want, sizeof(want), "socket:[%llu]", (unsigned long long)inode);
    while (found < 0 && (de = readdir(dir)) != NULL) {
        ssize_t n;
        snprintf(path, sizeof(path), "/proc/self/fd/%s", de->d_name);
        n = readlink(path, link, sizeof(link) - 1);
        if (n > 0 && (link[n] = '\0', strcmp(link, want) == 0))
            found = atoi(de->d_name);
    }
    closedir(dir);
    return found;
}

/*
 * The creators' mutual exclusion: a write lock on byte 0 of the listening
 * socket, which only processes holding it can take (another user cannot
 * even name it).  Bounded: a creator stopped while holding it delays the
 * others by TH_SEG_GUARD_TIMEOUT_S at most, then they go on without it.
 * Returns the fd to unlock, or -1.
 */
static int lock_socket(uint64_t inode)
{
    struct flock fl = { .l_type = F_WRLCK, .l_whence = SEEK_SET, .l_len = 1 };
    int fd = socket_fd(inode);

    for (int ms = 0; fd >= 0 && ms < TH_SEG_GUARD_TIMEOUT_S * 1000; ms++) {
        if (real_fcntl(fd, F_SETLK, &fl) == 0)
            return fd;
        if (errno != EAGAIN && errno != EACCES)
            break;
        usleep(1000);
    }
    return -1;
}

static void unlock_socket(int fd)
{
    struct flock fl = { .l_type = F_UNLCK, .l_whence = SEEK_SET, .l_len = 1 };

    if (fd >= 0)
        real_fcntl(fd, F_SETLK, &fl);
}

/*
 * Make the segment, under the socket's lock: at the plain name when
 * nothing is there, else at a fresh alternative name.  NULL with errno
 * (EEXIST: someone else made one meanwhile, look again).
 */
static struct th_seg *create(uid_t uid, uint64_t inode, uint16_t port, char *path, size_t len)
{
    int locked = lock_socket(inode), saved_errno;
    uint64_t suffix = 0;
    struct th_seg *seg = NULL;

    errno = EEXIST;
    if (!th_seg_find(uid, inode, path, len)) {
        if (th_seg_name_is_foreign(uid, inode))
            suffix = th_random64();
        seg = th_seg_create(uid, inode, suffix, port, th_pid);
        if (seg && suffix) {
            th_seg_path_of(path, len, seg);
            th_warn("the name of port %u's segment is taken by another user; using %s",
                    port, path);
        }
    }
    saved_errno = errno;
    unlock_socket(locked);
    errno = saved_errno;
    return seg;
}

struct th_seg *th_seg_attach(uint64_t inode, uint16_t port)
{
    uid_t uid = geteuid();
    char path[TH_SEG_PATH_MAX];

    for (int attempt = 0; attempt < 4; attempt++) {
        struct th_seg *seg = NULL;
        bool refused;

        if (!th_seg_find(uid, inode, path, sizeof(path))) {
            if ((seg = create(uid, inode, port, path, sizeof(path))) != NULL) {
                th_debug("created segment %s", path);
                sweep_stale(uid, inode);
                return seg;
            }
            if (errno != EEXIST) {
                th_warn("cannot create %s (%s); port %u runs pass-through",
                        path, strerror(errno), port);
                return NULL;
            }
            continue;               /* made meanwhile: look again */
        }
        seg = attach_existing(path, uid, inode, port, &refused);
        if (seg || refused)
            return seg;
    }
    th_seg_path(path, sizeof(path), uid, inode);
    th_warn("segment %s keeps changing; port %u runs pass-through", path, port);
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
    char path[TH_SEG_PATH_MAX];

    if (th_guard_lock(seg) < 0)
        return;
    if (mine) {
        th_seg_drop_waiting(seg, mine);
        atomic_store(&mine->pid, 0);
    }
    forget_process_locked(seg, th_pid);
    if (th_seg_remove_if_stale_locked(seg, th_pid) == TH_SEG_REMOVED) {
        th_seg_path_of(path, sizeof(path), seg);
        th_debug("removed segment %s (last process to leave)", path);
    }
    th_guard_unlock(seg);
}

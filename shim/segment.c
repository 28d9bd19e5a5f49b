/*
 * The library's segments: one per listening socket, named after the
 * effective uid and the socket inode, so every process holding the same
 * socket (inherited, re-executed, passed with SCM_RIGHTS) finds the same
 * lock and unrelated servers never do.
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

/* This process's statistics slot: its own, a free one, or a dead one's. */
static struct th_proc_stats *claim_slot_locked(struct th_seg *seg, pid_t pid)
{
    struct th_proc_stats *free_slot = NULL;

    for (int i = 0; i < TH_MAX_PROCS; i++) {
        struct th_proc_stats *s = &seg->procs[i];
        int32_t owner = atomic_load(&s->pid);
        if (owner == pid)
            return s;
        if (!free_slot && (owner == 0 || !th_proc_alive(owner)))
            free_slot = s;
    }
    if (free_slot) {
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
        const char *why = NULL;
        uint64_t inode;
        struct th_seg *seg;

        if (!th_seg_parse_name(de->d_name, uid, &inode) || inode == except)
            continue;
        checked++;
        if ((seg = th_seg_open(uid, inode, true, false, &why)) == NULL)
            continue;
        th_self.in_shim++;
        if (th_seg_remove_if_stale(seg, false) == TH_SEG_REMOVED)
            th_debug("removed stale segment " TH_SHM_DIR "/%s", de->d_name);
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
    struct th_seg *seg = th_seg_open(uid, inode, true, true, &why);

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

struct th_seg *th_seg_attach(uint64_t inode, uint16_t port)
{
    uid_t uid = geteuid();
    char path[TH_SEG_PATH_MAX];

    th_seg_path(path, sizeof(path), uid, inode);
    for (int attempt = 0; attempt < 4; attempt++) {
        struct th_seg *seg = th_seg_create(uid, inode, port, th_pid);
        bool refused;

        if (seg) {
            th_debug("created segment %s", path);
            sweep_stale(uid, inode);
            return seg;
        }
        if (errno != EEXIST) {
            th_warn("cannot create %s (%s); port %u runs pass-through",
                    path, strerror(errno), port);
            return NULL;
        }
        seg = attach_existing(path, uid, inode, port, &refused);
        if (seg || refused)
            return seg;
    }
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
    if (mine)
        atomic_store(&mine->pid, 0);
    forget_process_locked(seg, th_pid);
    if (th_seg_remove_if_stale_locked(seg, th_pid) == TH_SEG_REMOVED) {
        th_seg_path(path, sizeof(path), seg->uid, seg->inode);
        th_debug("removed segment %s (last process to leave)", path);
    }
    th_guard_unlock(seg);
}

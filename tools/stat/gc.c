/*
 * --gc: remove what dead servers left in /dev/shm, for this user only.
 *
 * A valid segment is removed by the segment core's th_seg_remove_if_stale,
 * the very function the library's own sweep calls when a server starts:
 * under the segment's guard, only when every recorded process is gone,
 * and marked unlinked so that a server attaching at that moment creates a
 * fresh one.  So gc and the sweep agree by construction.
 *
 * A file at a segment's name that the library would refuse is removed too,
 * so the next server start can create a good one, except what may still
 * be in use or in the making: a segment of another release (its magic,
 * another version), a file just created and not ready yet, and anything
 * that is not a regular file of this user.
 */
#define _GNU_SOURCE
#include "stat.h"

#include <dirent.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define YOUNG_SECONDS 2         /* a file this new may still be initialising */

struct gc_counts {
    int removed, in_use, left;
};

static void gc_left(const char *path, const char *why, struct gc_counts *n)
{
    fprintf(stderr, "thunder-stat: left %s alone: %s\n", path, why);
    n->left++;
}

/* Remove a file that is not a usable segment, and say why. */
static void gc_remove_invalid(const char *path, const char *why, struct gc_counts *n)
{
    if (unlink(path) < 0) {
        fprintf(stderr, "thunder-stat: cannot remove %s: %s\n", path, strerror(errno));
        n->left++;
        return;
    }
    printf("removed %s: %s\n", path, why);
    n->removed++;
}

/* The library would refuse it: remove it, unless it may be in use or in the making. */
static void gc_invalid(const char *path, int fd, const struct stat *st, const char *why,
                       struct gc_counts *n)
{
    if (th_seg_other_release(fd))
        gc_left(path, "a segment of another libthunder release", n);
    else if (!th_seg_header_ready(fd) && time(NULL) - st->st_mtime < YOUNG_SECONDS)
        gc_left(path, "just created, may still be initialising", n);
    else
        gc_remove_invalid(path, why, n);
}

static void pid_list(const struct snapshot *s, char *out, size_t outlen)
{
    size_t o = 0;

    out[0] = '\0';
    for (int i = 0; i < s->nprocs && o + 16 < outlen; i++)
        o += (size_t)snprintf(out + o, outlen - o, "%s%d", i ? "," : "", (int)s->procs[i].pid);
    if (s->nprocs == 0)
        snprintf(out, outlen, "none recorded");
}

struct removal {
    struct th_seg *seg;
    enum th_seg_removal result;
};

static void remove_if_stale(void *arg)
{
    struct removal *r = arg;

    r->result = th_seg_remove_if_stale(r->seg, true);
}

/* A valid segment: the core decides; the snapshot only names its processes. */
static void gc_valid(const char *path, struct th_seg *seg, const struct snapshot *snap,
                     struct gc_counts *n)
{
    struct removal r = { .seg = seg };
    char pids[256];

    if (!stat_guarded(remove_if_stale, &r)) {
        gc_left(path, "truncated while being read", n);
        return;
    }
    switch (r.result) {
    case TH_SEG_REMOVED:
        pid_list(snap, pids, sizeof(pids));
        printf("removed %s: port %u, every process is gone (%s)\n", path, snap->port, pids);
        n->removed++;
        break;
    case TH_SEG_IN_USE: n->in_use++; break;
    case TH_SEG_GUARD_BUSY: gc_left(path, "its guard is busy", n); break;
    case TH_SEG_LEAVING: gc_left(path, "being removed by its last process", n); break;
    case TH_SEG_UNLINK_FAILED: gc_left(path, strerror(errno), n); break;
    }
}

/* A file that passed the file checks: map it writable (for the guard) and decide. */
static void gc_mapped(const char *path, int fd, uint64_t inode, const struct stat *st,
                      struct gc_counts *n)
{
    struct snapshot *snap = calloc(1, sizeof(*snap));
    struct th_seg *seg = th_seg_map(fd, true);
    const char *why;

    if (snap == NULL || seg == NULL) {
        gc_left(path, snap ? strerror(errno) : "out of memory", n);
    } else if ((why = stat_read_mapped(seg, inode, snap)) != NULL) {
        gc_invalid(path, fd, st, why, n);   /* the header is read with pread */
    } else {
        gc_valid(path, seg, snap, n);
    }
    if (seg)
        th_seg_unmap(seg);
    free(snap);
}

static void gc_one(const char *name, struct gc_counts *n)
{
    char path[300];
    int fd;
    uint64_t inode = 0;
    struct stat st;
    const char *why;

    snprintf(path, sizeof(path), TH_SHM_DIR "/%s", name);
    if ((fd = th_seg_open_path(path, true)) < 0) {
        if (errno != ENOENT)
            gc_left(path, th_seg_open_error(errno), n);
        return;
    }
    if (fstat(fd, &st) < 0)
        gc_left(path, strerror(errno), n);
    else if ((why = th_seg_check_file(&st, stat_uid)) != NULL &&
             (!S_ISREG(st.st_mode) || st.st_uid != stat_uid))
        gc_left(path, why, n);              /* never remove what is not ours */
    else if (why)
        gc_invalid(path, fd, &st, why, n);
    else if (!th_seg_parse_name(name, stat_uid, &inode))
        gc_remove_invalid(path, "no socket inode in its name, not a libthunder segment", n);
    else
        gc_mapped(path, fd, inode, &st, n);
    th_seg_close(fd);
}

int stat_gc(void)
{
    char prefix[48];
    struct gc_counts n = { 0 };
    DIR *dir = opendir(TH_SHM_DIR);
    struct dirent *de;

    if (dir == NULL) {
        fprintf(stderr, "thunder-stat: cannot open " TH_SHM_DIR ": %s\n", strerror(errno));
        return 1;
    }
    th_seg_prefix(prefix, sizeof(prefix), stat_uid);
    while ((de = readdir(dir)) != NULL)
        if (strncmp(de->d_name, prefix, strlen(prefix)) == 0)
            gc_one(de->d_name, &n);
    closedir(dir);
    printf("gc: %d removed, %d in use, %d left alone (uid %u)\n", n.removed, n.in_use,
           n.left, (unsigned)stat_uid);
    return 0;
}

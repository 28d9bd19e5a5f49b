/*
 * Reading this user's segments, read-only, through the segment core: a
 * file is checked (th_seg_open_file), mapped PROT_READ, so reading never
 * disturbs the server, and its header checked (th_seg_check_header) before
 * anything else in it is copied.  A file truncated under our feet raises
 * SIGBUS: that segment is skipped, not the run.
 */
#define _GNU_SOURCE
#include "stat.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>

uid_t stat_uid;

/* ---- the SIGBUS guard ---------------------------------------------------- */

static sigjmp_buf bus_jump;
static volatile sig_atomic_t bus_armed;

static void on_sigbus(int sig)
{
    if (bus_armed)
        siglongjmp(bus_jump, 1);
    signal(sig, SIG_DFL);
    raise(sig);
}

void stat_install_sigbus(void)
{
    struct sigaction sa = { .sa_handler = on_sigbus };

    sigemptyset(&sa.sa_mask);
    sigaction(SIGBUS, &sa, NULL);
}

/* ---- copying a validated mapping ------------------------------------------ */

#define LOAD(field) atomic_load_explicit(&(field), memory_order_relaxed)
/* Fields the library changes under its guard are plain ints: read them once. */
#define PEEK(field) __atomic_load_n(&(field), __ATOMIC_RELAXED)

static void copy_proc(const struct th_proc_stats *s, int32_t pid, struct proc_row *r)
{
    r->pid = pid;
    r->strategy = LOAD(s->strategy);
    r->waits = LOAD(s->waits);
    r->wakeups = LOAD(s->wakeups);
    r->spurious = LOAD(s->spurious);
    r->accepts = LOAD(s->accepts);
    r->eagain = LOAD(s->eagain);
    r->lock_waits = LOAD(s->lock_waits);
    r->lock_wait_ns = LOAD(s->lock_wait_ns);
    r->rotations = LOAD(s->rotations);
    r->refused = LOAD(s->refused);
    r->yields = LOAD(s->yields);
}

static void copy_segment(const struct th_seg *seg, struct snapshot *snap)
{
    snap->port = seg->port;
    snap->holder_pid = PEEK(seg->holder_pid);
    snap->nqueued = PEEK(seg->nqueued);
    snap->recoveries = LOAD(seg->recoveries);
    snap->nprocs = 0;
    for (int i = 0; i < TH_MAX_PROCS; i++) {
        int32_t pid = LOAD(seg->procs[i].pid);
        if (pid != 0)
            copy_proc(&seg->procs[i], pid, &snap->procs[snap->nprocs++]);
    }
}

bool stat_guarded(void (*fn)(void *arg), void *arg)
{
    volatile bool finished = false;

    if (sigsetjmp(bus_jump, 1) == 0) {
        bus_armed = 1;
        fn(arg);
        finished = true;
    }
    bus_armed = 0;
    return finished;
}

struct reading {
    const struct th_seg *seg;
    uint64_t inode;
    struct snapshot *snap;
    const char *why;
};

static void check_and_copy(void *arg)
{
    struct reading *r = arg;

    r->why = th_seg_check_header(r->seg, stat_uid, r->inode);
    if (r->why == NULL)
        copy_segment(r->seg, r->snap);
}

const char *stat_read_mapped(const struct th_seg *seg, uint64_t inode, struct snapshot *snap)
{
    struct reading r = { .seg = seg, .inode = inode, .snap = snap };

    return stat_guarded(check_and_copy, &r) ? r.why : "truncated while being read";
}

/* One segment into snap: NULL, or why it is skipped ("" when just gone). */
static const char *read_segment(const char *entry, uint64_t inode, struct snapshot *snap)
{
    const char *why = NULL;
    struct th_seg *seg;
    int fd;

    snprintf(snap->path, sizeof(snap->path), "%s/%.*s", TH_SHM_DIR,
             (int)(sizeof(snap->path) - sizeof(TH_SHM_DIR) - 1), entry);
    if ((fd = th_seg_open_file(snap->path, stat_uid, false, false, &why)) < 0)
        return why;
    seg = th_seg_map(fd, false);
    why = seg ? NULL : strerror(errno);
    th_seg_close(fd);
    if (seg == NULL)
        return why;
    snap->inode = inode;
    why = stat_read_mapped(seg, inode, snap);
    th_seg_unmap(seg);
    if (why == NULL)
        for (int i = 0; i < snap->nprocs; i++)
            snap->procs[i].alive = th_proc_alive(snap->procs[i].pid);
    return why;
}

/* ---- which listeners ------------------------------------------------------ */

/* The parent pid of pid, or 0: lets a master's pid select its listener. */
static int32_t parent_of(int32_t pid)
{
    char path[64], buf[256], *paren;
    FILE *f;
    int ppid = 0;

    snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
    if ((f = fopen(path, "re")) == NULL)
        return 0;
    if (fgets(buf, sizeof(buf), f) && (paren = strrchr(buf, ')')) != NULL &&
        sscanf(paren + 1, " %*c %d", &ppid) != 1)
        ppid = 0;
    fclose(f);
    return ppid;
}

/* A process of the listener is pid, or pid is its parent (a master). */
static bool has_process(const struct snapshot *s, long pid)
{
    for (int i = 0; i < s->nprocs; i++)
        if (s->procs[i].pid == pid || parent_of(s->procs[i].pid) == pid)
            return true;
    return false;
}

static bool matches(const struct snapshot *s, const struct options *o)
{
    if (o->port >= 0 && s->port != (uint32_t)o->port)
        return false;
    if (o->pid >= 0 && s->holder_pid != o->pid && !has_process(s, o->pid))
        return false;
    return o->any < 0 || s->port == (uint32_t)o->any || s->holder_pid == o->any ||
           has_process(s, o->any);
}

/* ---- every segment ---------------------------------------------------------- */

static struct snapshot *next_slot(struct collection *c)
{
    if (c->count == c->capacity) {
        int cap = c->capacity ? c->capacity * 2 : 8;
        struct snapshot *p = realloc(c->items, (size_t)cap * sizeof(*p));
        if (p == NULL)
            return NULL;
        c->items = p;
        c->capacity = cap;
    }
    return &c->items[c->count];
}

static int by_port(const void *a, const void *b)
{
    const struct snapshot *x = a, *y = b;

    if (x->port != y->port)
        return x->port < y->port ? -1 : 1;
    return x->inode < y->inode ? -1 : x->inode > y->inode;
}

/*
 * Another user's file under this user's names is no segment of ours and
 * not worth a line each: a squatter may have made thousands (README
 * "Security"; gc names them).
 */
static bool owned_by_user(int dir, const char *entry)
{
    struct stat st;

    return fstatat(dir, entry, &st, AT_SYMLINK_NOFOLLOW) == 0 && st.st_uid == stat_uid;
}

/* Read every segment of this user that passes the filter.  -1: I/O error. */
int stat_collect(const struct options *o, struct collection *c)
{
    DIR *dir = opendir(TH_SHM_DIR);
    struct dirent *de;

    c->count = 0;
    if (dir == NULL) {
        fprintf(stderr, "thunder-stat: cannot open " TH_SHM_DIR ": %s\n", strerror(errno));
        return -1;
    }
    while ((de = readdir(dir)) != NULL) {
        struct snapshot *snap;
        const char *why;
        uint64_t inode;

        if (!th_seg_parse_name(de->d_name, stat_uid, &inode) ||
            !owned_by_user(dirfd(dir), de->d_name))
            continue;
        if ((snap = next_slot(c)) == NULL) {
            fprintf(stderr, "thunder-stat: out of memory\n");
            closedir(dir);
            return -1;
        }
        why = read_segment(de->d_name, inode, snap);
        if (why) {
            if (*why)
                fprintf(stderr, "thunder-stat: skipping %s: %s\n", snap->path, why);
            continue;
        }
        if (matches(snap, o))
            c->count++;
    }
    closedir(dir);
    stat_resolve_addresses(c);
    qsort(c->items, (size_t)c->count, sizeof(*c->items), by_port);
    return 0;
}

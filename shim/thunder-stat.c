/*
 * thunder-stat - read libthunder's shared-memory segments from outside.
 *
 *   thunder-stat [--json|--kv] [--watch SECONDS] [PORT|PID]
 *   thunder-stat [--json|--kv] [--watch SECONDS] [--port PORT] [--pid PID]
 *   thunder-stat --gc
 *
 * Every segment of the current user (/dev/shm/libthunder.<euid>.<inode>)
 * is one listener.  Nothing in a segment is trusted: the file must be a
 * regular file of this user, mode 0600, of exactly the size of struct
 * th_seg, and its magic, version, uid and inode must match its name, or it
 * is reported on stderr and skipped.  It is mapped PROT_READ, so reading
 * never disturbs the server, and a file truncated under our feet (SIGBUS)
 * is skipped too.  Only --gc maps a segment writable: it takes the
 * segment's guard like the shim does, so a server attaching at the same
 * moment sees the segment marked unlinked and creates a fresh one.
 *
 * Output formats (documented in thunder-preload.1; tests parse --kv):
 *
 *   --kv    one line per process, then one line per listener:
 *     port=P inode=I pid=N alive=1 strategy=S accepts=N wakeups=N spurious=N
 *       eagain=N lock_waits=N lock_wait_ms=N rotations=N waits=N share=F
 *     listener port=P inode=I processes=N accepts=N jain=F holder=PID
 *       queued=N recoveries=N wakeups_per_accept=F address=A
 *   --json  one object per snapshot, on one line:
 *     {"uid":U,"listeners":[{"port":P,"inode":I,"address":"A","segment":"PATH",
 *      "nprocesses":N,"accepts":N,"jain":F,"wakeups_per_accept":F,
 *      "holder":PID,"queued":N,"recoveries":N,"processes":[{"pid":N,
 *      "alive":true,"strategy":"S","accepts":N,"share":F,"waits":N,
 *      "wakeups":N,"spurious":N,"eagain":N,"lock_waits":N,
 *      "lock_wait_ns":N,"lock_wait_ms":F,"rotations":N}]}]}
 *
 * Exit status: 0 (also when nothing is found), 1 on I/O errors, 2 on usage.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <limits.h>
#include <netinet/in.h>
#include <setjmp.h>
#include <signal.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "segment.h"

#define VERSION "0.1.0"
#define SHM_DIR "/dev/shm"
#define YOUNG_SECONDS 2         /* a file this new may still be initialising */
#define GUARD_TIMEOUT_S 1

static const char usage_line[] =
    "usage: thunder-stat [--json|--kv] [--watch SECONDS] [--port PORT] [--pid PID] "
    "[PORT|PID] | --gc | --help | --version";

/* ---- options -------------------------------------------------------- */

enum format { FMT_TABLE, FMT_KV, FMT_JSON };

struct options {
    enum format format;
    double watch_s;              /* 0: print once */
    bool gc;
    long any;                    /* positional: a port or a pid; -1 = none */
    long port;                   /* --port; -1 = none */
    long pid;                    /* --pid; -1 = none */
};

/* ---- one listener, copied out of its segment ------------------------- */

struct proc_row {
    int32_t pid;
    bool alive;
    uint32_t strategy;
    uint64_t waits, wakeups, spurious, accepts, eagain;
    uint64_t lock_waits, lock_wait_ns, rotations;
};

struct snapshot {
    char path[300];
    char address[INET6_ADDRSTRLEN + 8];
    uint64_t inode;
    uint32_t port;
    int32_t holder_pid;
    uint32_t nqueued;
    uint64_t recoveries;
    int nprocs;
    struct proc_row procs[TH_MAX_PROCS];
    int nwaiters;                /* queued waiters' pids, for --gc */
    int32_t waiter_pids[TH_MAX_WAITERS];
};

/* Totals and derived figures of one snapshot. */
struct figures {
    uint64_t accepts, wakeups;
    double jain, wakeups_per_accept;
};

static uid_t my_uid;

/* ---- small helpers ------------------------------------------------------ */

/* Why open() refused a name; O_NOFOLLOW turns a symbolic link into ELOOP. */
static const char *open_error(int err)
{
    return err == ELOOP ? "a symbolic link (never followed)" : strerror(err);
}

static void usage_error(const char *why)
{
    if (why)
        fprintf(stderr, "thunder-stat: %s\n", why);
    fprintf(stderr, "%s\n", usage_line);
    exit(2);
}

/* Strict decimal in [lo, hi]: digits only. */
static bool parse_long(const char *s, long lo, long hi, long *out)
{
    char *end;
    long v;

    if (*s < '0' || *s > '9')
        return false;
    errno = 0;
    v = strtol(s, &end, 10);
    if (errno || *end || v < lo || v > hi)
        return false;
    *out = v;
    return true;
}

/*
 * Alive and not a zombie: a killed worker whose master has not reaped it
 * yet holds nothing and will never touch the segment again.  EPERM means
 * the pid exists (reused by another user): counted alive, to be safe.
 */
static bool pid_alive(int32_t pid)
{
    char path[64], buf[256], *paren;
    FILE *f;
    bool zombie = false;

    if (pid <= 0)
        return false;
    if (kill(pid, 0) < 0 && errno != EPERM)
        return false;
    snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
    if ((f = fopen(path, "re")) == NULL)
        return true;            /* no /proc for it (another pid namespace?) */
    if (fgets(buf, sizeof(buf), f) && (paren = strrchr(buf, ')')) != NULL)
        zombie = paren[1] == ' ' && (paren[2] == 'Z' || paren[2] == 'X');
    fclose(f);
    return !zombie;
}

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

static const char *strategy_name(uint32_t s)
{
    static const char *const names[] = {
        [TH_STRAT_NONE] = "none",      [TH_STRAT_OBSERVE] = "observe",
        [TH_STRAT_LOCK] = "lock",      [TH_STRAT_EXCLUSIVE] = "exclusive",
        [TH_STRAT_JITTER] = "jitter",  [TH_STRAT_PASS] = "pass",
    };
    return s < sizeof(names) / sizeof(names[0]) ? names[s] : "?";
}

/* ---- /proc/net/tcp{,6}: socket inode -> local address ----------------- */

/*
 * The kernel prints each 32-bit word of the address as a native integer,
 * so storing the parsed words back in memory order rebuilds the address.
 */
static bool hex_to_addr(const char *hex, bool v6, char *out, size_t outlen)
{
    unsigned char raw[16];
    size_t words = v6 ? 4 : 1;

    if (strlen(hex) != words * 8)
        return false;
    for (size_t i = 0; i < words; i++) {
        char word[9];
        uint32_t w;

        memcpy(word, hex + i * 8, 8);
        word[8] = '\0';
        w = (uint32_t)strtoul(word, NULL, 16);
        memcpy(raw + i * 4, &w, 4);
    }
    return inet_ntop(v6 ? AF_INET6 : AF_INET, raw, out, (socklen_t)outlen) != NULL;
}

/* ---- reading a segment safely -------------------------------------------- */

static sigjmp_buf bus_jump;
static volatile sig_atomic_t bus_armed;

/* The file was truncated while mapped: abandon this segment, not the run. */
static void on_sigbus(int sig)
{
    if (bus_armed)
        siglongjmp(bus_jump, 1);
    signal(sig, SIG_DFL);
    raise(sig);
}

static void install_sigbus(void)
{
    struct sigaction sa = { .sa_handler = on_sigbus };

    sigemptyset(&sa.sa_mask);
    sigaction(SIGBUS, &sa, NULL);
}

/* Parse "libthunder.<uid>.<inode>"; false for other names. */
static bool segment_name(const char *name, uint64_t *inode)
{
    char prefix[48], *end;
    size_t len;

    snprintf(prefix, sizeof(prefix), TH_SEG_PREFIX "%u.", (unsigned)my_uid);
    len = strlen(prefix);
    if (strncmp(name, prefix, len) != 0 || name[len] < '0' || name[len] > '9')
        return false;
    errno = 0;
    *inode = strtoull(name + len, &end, 10);
    return errno == 0 && *end == '\0';
}

/* The file checks that need no mapping; NULL when fine, else why not. */
static const char *check_file(const struct stat *st)
{
    if (!S_ISREG(st->st_mode))
        return "not a regular file";
    if (st->st_uid != my_uid)
        return "owned by another user";
    if ((st->st_mode & 07777) != 0600)
        return "its mode is not 0600 (the shim refuses it)";
    if (st->st_size != (off_t)sizeof(struct th_seg))
        return "wrong size (truncated, or not a segment of this libthunder release)";
    return NULL;
}

/* The identity fields; NULL when they match the name, else why not. */
static const char *check_identity(const struct th_seg *seg, uint64_t inode)
{
    if (seg->magic != TH_SEG_MAGIC)
        return "wrong magic (not a libthunder segment)";
    if (seg->version != TH_SEG_VERSION)
        return "different layout version (another libthunder release?)";
    if (seg->size != sizeof(struct th_seg))
        return "recorded size does not match";
    if (seg->uid != (uint32_t)my_uid)
        return "recorded owner is another user";
    if (seg->inode != inode)
        return "recorded socket inode does not match its name";
    if (!atomic_load_explicit(&seg->ready, memory_order_acquire))
        return "not initialised (yet?)";
    return NULL;
}

#define LOAD(field) atomic_load_explicit(&(field), memory_order_relaxed)
/* Fields the shim changes under its guard are plain ints: read them once. */
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
}

/* Copy what we show out of a validated mapping (may raise SIGBUS). */
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
    snap->nwaiters = 0;
    for (int i = 0; i < TH_MAX_WAITERS; i++)
        if (LOAD(seg->waiters[i].state) != TH_W_FREE)
            snap->waiter_pids[snap->nwaiters++] = PEEK(seg->waiters[i].pid);
}

/*
 * Validate and copy a mapped segment under the SIGBUS guard.  Returns NULL
 * on success, else the reason to skip it.
 */
static const char *read_mapped(const struct th_seg *seg, uint64_t inode,
                               struct snapshot *snap)
{
    const char *volatile why = NULL;

    if (sigsetjmp(bus_jump, 1) == 0) {
        bus_armed = 1;
        why = check_identity(seg, inode);
        if (why == NULL)
            copy_segment(seg, snap);
    } else {
        why = "truncated while being read";
    }
    bus_armed = 0;
    return why;
}

/* Read one segment file read-only; NULL on success, else why it was skipped. */
static const char *read_segment(int dirfd, const char *name, uint64_t inode,
                                struct snapshot *snap)
{
    int fd = openat(dirfd, name, O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NONBLOCK);
    const char *why = NULL;
    struct stat st;
    void *map;

    if (fd < 0)
        return errno == ENOENT ? "" : open_error(errno);   /* "": gone, say nothing */
    if (fstat(fd, &st) < 0 || (why = check_file(&st)) != NULL) {
        why = why ? why : strerror(errno);
        close(fd);
        return why;
    }
    map = mmap(NULL, sizeof(struct th_seg), PROT_READ, MAP_SHARED, fd, 0);
    close(fd);
    if (map == MAP_FAILED)
        return strerror(errno);
    snap->inode = inode;
    snprintf(snap->path, sizeof(snap->path), SHM_DIR "/%s", name);
    why = read_mapped(map, inode, snap);
    munmap(map, sizeof(struct th_seg));
    if (why == NULL)
        for (int i = 0; i < snap->nprocs; i++)
            snap->procs[i].alive = pid_alive(snap->procs[i].pid);
    return why;
}

/* ---- collecting every segment ------------------------------------------- */

struct collection {
    struct snapshot *items;
    int count, capacity;
};

/*
 * Fill in the local addresses of the collected listeners from one
 * /proc/net file.  The kernel lists listening sockets before all others,
 * and a segment belongs to a listening socket, so reading stops at the
 * first socket that is not listening: a busy machine has 100000 sockets
 * in TIME_WAIT there, which would cost a third of a second per snapshot.
 */
static int read_proc_net(const char *file, bool v6, struct collection *c, int missing)
{
    FILE *f = fopen(file, "re");
    char line[512];

    if (f == NULL)
        return missing;
    if (fgets(line, sizeof(line), f) == NULL)        /* the header */
        missing = 0;
    while (missing > 0 && fgets(line, sizeof(line), f)) {
        char hex[40], ip[INET6_ADDRSTRLEN];
        unsigned port, state;
        uint64_t inode;

        if (sscanf(line, " %*s %39[0-9A-Fa-f]:%x %*s %x %*s %*s %*s %*s %*s %" SCNu64,
                   hex, &port, &state, &inode) != 4)
            continue;
        if (state != 0x0A)                            /* TCP_LISTEN */
            break;
        for (int i = 0; i < c->count; i++) {
            struct snapshot *s = &c->items[i];
            if (s->inode != inode || s->address[0] != '?' || !hex_to_addr(hex, v6, ip, sizeof(ip)))
                continue;
            snprintf(s->address, sizeof(s->address), v6 ? "[%s]:%u" : "%s:%u", ip, port);
            missing--;
        }
    }
    fclose(f);
    return missing;
}

/* "?" (with the port when known) for sockets not found: not TCP, or in
 * another network namespace, or already closed. */
static void resolve_addresses(struct collection *c)
{
    int missing = 0;

    for (int i = 0; i < c->count; i++) {
        struct snapshot *s = &c->items[i];
        snprintf(s->address, sizeof(s->address), s->port ? "?:%u" : "?", s->port);
        missing += s->port != 0;
    }
    missing = read_proc_net("/proc/net/tcp", false, c, missing);
    read_proc_net("/proc/net/tcp6", true, c, missing);
}

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

static bool matches(const struct snapshot *s, const struct options *o)
{
    bool port_ok = o->port < 0 || s->port == (uint32_t)o->port;
    bool pid_ok = o->pid < 0;

    for (int i = 0; i < s->nprocs && !pid_ok; i++)
        pid_ok = s->procs[i].pid == o->pid || parent_of(s->procs[i].pid) == o->pid;
    if (o->pid >= 0 && s->holder_pid == o->pid)
        pid_ok = true;
    if (o->any >= 0) {
        bool any_ok = s->port == (uint32_t)o->any || s->holder_pid == o->any;
        for (int i = 0; i < s->nprocs && !any_ok; i++)
            any_ok = s->procs[i].pid == o->any || parent_of(s->procs[i].pid) == o->any;
        if (!any_ok)
            return false;
    }
    return port_ok && pid_ok;
}

static int by_port(const void *a, const void *b)
{
    const struct snapshot *x = a, *y = b;

    if (x->port != y->port)
        return x->port < y->port ? -1 : 1;
    return x->inode < y->inode ? -1 : x->inode > y->inode;
}

/* Read every segment of this user that passes the filter.  -1: I/O error. */
static int collect(const struct options *o, struct collection *c)
{
    DIR *dir = opendir(SHM_DIR);
    struct dirent *de;

    c->count = 0;
    if (dir == NULL) {
        fprintf(stderr, "thunder-stat: cannot open " SHM_DIR ": %s\n", strerror(errno));
        return -1;
    }
    while ((de = readdir(dir)) != NULL) {
        struct snapshot *snap;
        const char *why;
        uint64_t inode;

        if (!segment_name(de->d_name, &inode))
            continue;
        if ((snap = next_slot(c)) == NULL) {
            fprintf(stderr, "thunder-stat: out of memory\n");
            closedir(dir);
            return -1;
        }
        why = read_segment(dirfd(dir), de->d_name, inode, snap);
        if (why) {
            if (*why)
                fprintf(stderr, "thunder-stat: skipping " SHM_DIR "/%s: %s\n", de->d_name, why);
            continue;
        }
        if (!matches(snap, o))
            continue;
        c->count++;
    }
    closedir(dir);
    resolve_addresses(c);
    qsort(c->items, (size_t)c->count, sizeof(*c->items), by_port);
    return 0;
}

/* ---- figures ---------------------------------------------------------------- */

/* Jain's index over per-process accepts: 1 even, 1/n one takes all, 0 none. */
static struct figures figures_of(const struct snapshot *s)
{
    struct figures f = { 0 };
    double sum = 0, squares = 0;

    for (int i = 0; i < s->nprocs; i++) {
        double x = (double)s->procs[i].accepts;
        f.accepts += s->procs[i].accepts;
        f.wakeups += s->procs[i].wakeups;
        sum += x;
        squares += x * x;
    }
    f.jain = squares > 0 ? sum * sum / (s->nprocs * squares) : 0.0;
    f.wakeups_per_accept = f.accepts ? (double)f.wakeups / (double)f.accepts : 0.0;
    return f;
}

static double share_of(const struct proc_row *r, const struct figures *f)
{
    return f->accepts ? (double)r->accepts / (double)f->accepts : 0.0;
}

/* ---- output ------------------------------------------------------------------ */

static void print_table(const struct snapshot *s)
{
    struct figures f = figures_of(s);

    printf("%s  inode %" PRIu64 "  %s\n", s->address, s->inode, s->path);
    printf("  processes %d  accepts %" PRIu64 "  jain %.4f  wakeups/accept %.3f"
           "  lock holder %d  queued %u  recoveries %" PRIu64 "\n",
           s->nprocs, f.accepts, f.jain, f.wakeups_per_accept, (int)s->holder_pid,
           s->nqueued, s->recoveries);
    printf("  %8s %-5s %-9s %9s %6s %9s %8s %8s %10s %10s %9s\n", "PID", "ALIVE",
           "STRATEGY", "ACCEPTS", "SHARE", "WAKEUPS", "SPURIOUS", "EAGAIN",
           "LOCK_WAITS", "LOCK_MS", "ROTATIONS");
    for (int i = 0; i < s->nprocs; i++) {
        const struct proc_row *r = &s->procs[i];
        printf("  %8d %-5s %-9s %9" PRIu64 " %5.1f%% %9" PRIu64 " %8" PRIu64 " %8" PRIu64
               " %10" PRIu64 " %10.1f %9" PRIu64 "\n",
               (int)r->pid, r->alive ? "yes" : "no", strategy_name(r->strategy), r->accepts,
               100.0 * share_of(r, &f), r->wakeups, r->spurious, r->eagain, r->lock_waits,
               (double)r->lock_wait_ns / 1e6, r->rotations);
    }
}

static void print_kv(const struct snapshot *s)
{
    struct figures f = figures_of(s);

    for (int i = 0; i < s->nprocs; i++) {
        const struct proc_row *r = &s->procs[i];
        printf("port=%u inode=%" PRIu64 " pid=%d alive=%d strategy=%s accepts=%" PRIu64
               " wakeups=%" PRIu64 " spurious=%" PRIu64 " eagain=%" PRIu64
               " lock_waits=%" PRIu64 " lock_wait_ms=%" PRIu64 " rotations=%" PRIu64
               " waits=%" PRIu64 " share=%.4f\n",
               s->port, s->inode, (int)r->pid, r->alive, strategy_name(r->strategy),
               r->accepts, r->wakeups, r->spurious, r->eagain, r->lock_waits,
               r->lock_wait_ns / 1000000, r->rotations, r->waits, share_of(r, &f));
    }
    printf("listener port=%u inode=%" PRIu64 " processes=%d accepts=%" PRIu64
           " jain=%.4f holder=%d queued=%u recoveries=%" PRIu64
           " wakeups_per_accept=%.3f address=%s\n",
           s->port, s->inode, s->nprocs, f.accepts, f.jain, (int)s->holder_pid,
           s->nqueued, s->recoveries, f.wakeups_per_accept, s->address);
}

/* Paths and addresses are ours ([0-9a-z./:[]] only), but escape anyway. */
static void json_string(const char *s)
{
    putchar('"');
    for (; *s; s++) {
        if (*s == '"' || *s == '\\')
            printf("\\%c", *s);
        else if ((unsigned char)*s < 0x20)
            printf("\\u%04x", (unsigned char)*s);
        else
            putchar(*s);
    }
    putchar('"');
}

static void print_json_proc(const struct proc_row *r, const struct figures *f)
{
    printf("{\"pid\":%d,\"alive\":%s,\"strategy\":\"%s\",\"accepts\":%" PRIu64
           ",\"share\":%.4f,\"waits\":%" PRIu64 ",\"wakeups\":%" PRIu64
           ",\"spurious\":%" PRIu64 ",\"eagain\":%" PRIu64 ",\"lock_waits\":%" PRIu64
           ",\"lock_wait_ns\":%" PRIu64 ",\"lock_wait_ms\":%.3f,\"rotations\":%" PRIu64 "}",
           (int)r->pid, r->alive ? "true" : "false", strategy_name(r->strategy), r->accepts,
           share_of(r, f), r->waits, r->wakeups, r->spurious, r->eagain, r->lock_waits,
           r->lock_wait_ns, (double)r->lock_wait_ns / 1e6, r->rotations);
}

static void print_json_listener(const struct snapshot *s)
{
    struct figures f = figures_of(s);

    printf("{\"port\":%u,\"inode\":%" PRIu64 ",\"address\":", s->port, s->inode);
    json_string(s->address);
    printf(",\"segment\":");
    json_string(s->path);
    printf(",\"nprocesses\":%d,\"accepts\":%" PRIu64 ",\"jain\":%.4f"
           ",\"wakeups_per_accept\":%.3f,\"holder\":%d,\"queued\":%u,\"recoveries\":%" PRIu64
           ",\"processes\":[",
           s->nprocs, f.accepts, f.jain, f.wakeups_per_accept, (int)s->holder_pid,
           s->nqueued, s->recoveries);
    for (int i = 0; i < s->nprocs; i++) {
        if (i)
            putchar(',');
        print_json_proc(&s->procs[i], &f);
    }
    printf("]}");
}

static void print_json(const struct collection *c)
{
    printf("{\"uid\":%u,\"listeners\":[", (unsigned)my_uid);
    for (int i = 0; i < c->count; i++) {
        if (i)
            putchar(',');
        print_json_listener(&c->items[i]);
    }
    printf("]}\n");
}

static void print_nothing(const struct options *o)
{
    /* the table is for people: stdout; --kv/--json stay parseable */
    FILE *to = o->format == FMT_TABLE ? stdout : stderr;

    fprintf(to, "no libthunder segments for uid %u", (unsigned)my_uid);
    if (o->any >= 0)
        fprintf(to, " matching port or pid %ld", o->any);
    if (o->port >= 0)
        fprintf(to, " matching port %ld", o->port);
    if (o->pid >= 0)
        fprintf(to, " matching pid %ld", o->pid);
    fputc('\n', to);
}

static void print_all(const struct collection *c, const struct options *o)
{
    if (o->format == FMT_JSON)
        print_json(c);
    if (c->count == 0) {
        print_nothing(o);
        return;
    }
    for (int i = 0; i < c->count; i++) {
        if (o->format == FMT_KV)
            print_kv(&c->items[i]);
        else if (o->format == FMT_TABLE) {
            if (i)
                putchar('\n');
            print_table(&c->items[i]);
        }
    }
}

/* ---- --watch ------------------------------------------------------------------ */

static volatile sig_atomic_t stop;

static void on_stop(int sig)
{
    (void)sig;
    stop = 1;
}

/* No SA_RESTART: the sleep must end on Ctrl-C. */
static void catch_stop(void)
{
    struct sigaction sa = { .sa_handler = on_stop };

    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
}

static void sleep_seconds(double s)
{
    struct timespec ts = { .tv_sec = (time_t)s };

    ts.tv_nsec = (long)((s - (double)ts.tv_sec) * 1e9);
    nanosleep(&ts, NULL);        /* EINTR: stop is set, the loop ends */
}

static int run_stat(const struct options *o)
{
    struct collection c = { 0 };
    bool tty = isatty(STDOUT_FILENO);
    int status = 0;

    if (o->watch_s > 0)
        catch_stop();
    do {
        if (collect(o, &c) < 0) {
            status = 1;
            break;
        }
        if (o->watch_s > 0 && o->format == FMT_TABLE) {
            time_t now = time(NULL);
            char when[32];
            strftime(when, sizeof(when), "%H:%M:%S", localtime(&now));
            /* clear the screen on a terminal, separate snapshots otherwise */
            printf(tty ? "\033[H\033[2J" : "\n");
            printf("thunder-stat  uid %u  %s  every %g s, Ctrl-C to stop\n\n",
                   (unsigned)my_uid, when, o->watch_s);
        }
        print_all(&c, o);
        if (fflush(stdout) == EOF) {
            status = 1;
            break;
        }
        if (o->watch_s > 0 && !stop)
            sleep_seconds(o->watch_s);
    } while (o->watch_s > 0 && !stop);
    free(c.items);
    return status;
}

/* ---- --gc ------------------------------------------------------------------------ */

struct gc_counts {
    int removed, in_use, left;
};

static bool every_process_dead(const struct snapshot *s)
{
    if (s->holder_pid && pid_alive(s->holder_pid))
        return false;
    for (int i = 0; i < s->nprocs; i++)
        if (pid_alive(s->procs[i].pid))
            return false;
    for (int i = 0; i < s->nwaiters; i++)
        if (pid_alive(s->waiter_pids[i]))
            return false;
    return true;
}

static int guard_lock(struct th_seg *seg)
{
    struct timespec until;
    int r;

    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_sec += GUARD_TIMEOUT_S;
    r = pthread_mutex_timedlock(&seg->guard, &until);
    if (r == EOWNERDEAD) {          /* died mid-bookkeeping, like the shim says */
        pthread_mutex_consistent(&seg->guard);
        r = 0;
    }
    return r;
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

/*
 * Under the guard, like the shim's own sweep: the segment is unlinked and
 * marked so, and an attacher that opened it meanwhile retries with a new one.
 */
static const char *gc_valid(int dirfd, const char *name, struct th_seg *seg,
                            struct snapshot *snap, const struct stat *st, bool *removed)
{
    const char *volatile why = NULL;

    *removed = false;
    if (sigsetjmp(bus_jump, 1) == 0) {
        bus_armed = 1;
        if (guard_lock(seg) != 0) {
            why = "its guard is busy; left alone";
        } else {
            copy_segment(seg, snap);
            if (atomic_load(&seg->unlinked))
                why = "being removed by its last process";
            else if (!every_process_dead(snap))
                why = NULL;                           /* in use */
            else if (snap->nprocs == 0 && time(NULL) - st->st_mtime < YOUNG_SECONDS)
                why = "just created, no process recorded yet; left alone";
            else if (unlinkat(dirfd, name, 0) < 0)
                why = strerror(errno);
            else {
                atomic_store(&seg->unlinked, 1);
                *removed = true;
                why = NULL;
            }
            pthread_mutex_unlock(&seg->guard);
        }
    } else {
        why = "truncated while being read";
    }
    bus_armed = 0;
    return why;
}

/* Remove a file that is not a usable segment, and say so. */
static void gc_remove_invalid(int dirfd, const char *name, const char *why,
                              struct gc_counts *n)
{
    if (unlinkat(dirfd, name, 0) < 0) {
        fprintf(stderr, "thunder-stat: cannot remove " SHM_DIR "/%s: %s\n", name, strerror(errno));
        n->left++;
        return;
    }
    printf("removed " SHM_DIR "/%s: %s\n", name, why);
    n->removed++;
}

static void gc_left(const char *name, const char *why, struct gc_counts *n)
{
    fprintf(stderr, "thunder-stat: left " SHM_DIR "/%s alone: %s\n", name, why);
    n->left++;
}

/* The first 16 bytes: a segment of another release (maybe in use)? */
static bool other_release(int fd)
{
    struct { uint64_t magic; uint32_t version, size; } head;

    return pread(fd, &head, sizeof(head), 0) == (ssize_t)sizeof(head) &&
           head.magic == TH_SEG_MAGIC && head.version != TH_SEG_VERSION;
}

/* The creator sets ready last; read without the mapping. */
static bool header_ready(int fd)
{
    uint32_t ready = 0;

    return pread(fd, &ready, sizeof(ready), offsetof(struct th_seg, ready)) ==
               (ssize_t)sizeof(ready) && ready != 0;
}

/*
 * A file of the right size: map it writable (for the guard) and decide.
 * Another release's layout (magic right, version different) may be in use
 * by a running server: it is left alone.  Anything else that the shim
 * would refuse is removed, so the next server start can create a good one.
 */
static void gc_mapped(int dirfd, const char *name, int fd, uint64_t inode,
                      const struct stat *st, struct gc_counts *n)
{
    struct snapshot *snap = calloc(1, sizeof(*snap));
    struct th_seg *seg = mmap(NULL, sizeof(*seg), PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    const char *why;
    bool removed = false;

    if (snap == NULL || seg == MAP_FAILED) {
        gc_left(name, snap ? strerror(errno) : "out of memory", n);
        free(snap);
        return;
    }
    /* the header is read with pread: the mapping may be what raised SIGBUS */
    why = read_mapped(seg, inode, snap);
    if (why && other_release(fd))
        gc_left(name, "a segment of another libthunder release", n);
    else if (why && !header_ready(fd) && time(NULL) - st->st_mtime < YOUNG_SECONDS)
        gc_left(name, "still initialising", n);
    else if (why)
        gc_remove_invalid(dirfd, name, why, n);
    else if ((why = gc_valid(dirfd, name, seg, snap, st, &removed)) != NULL)
        gc_left(name, why, n);
    else if (removed) {
        char pids[256];
        pid_list(snap, pids, sizeof(pids));
        printf("removed " SHM_DIR "/%s: port %u, every process is gone (%s)\n", name,
               snap->port, pids);
        n->removed++;
    } else {
        n->in_use++;
    }
    munmap(seg, sizeof(*seg));
    free(snap);
}

static void gc_one(int dirfd, const char *name, struct gc_counts *n)
{
    int fd = openat(dirfd, name, O_RDWR | O_NOFOLLOW | O_CLOEXEC | O_NONBLOCK);
    uint64_t inode = 0;
    struct stat st;

    if (fd < 0) {
        if (errno != ENOENT)
            gc_left(name, open_error(errno), n);
        return;
    }
    if (fstat(fd, &st) < 0)
        gc_left(name, strerror(errno), n);
    else if (!S_ISREG(st.st_mode))
        gc_left(name, "not a regular file", n);
    else if (st.st_uid != my_uid)
        gc_left(name, "owned by another user", n);
    else if (st.st_size != (off_t)sizeof(struct th_seg) && other_release(fd))
        gc_left(name, "a segment of another libthunder release", n);
    else if (st.st_size != (off_t)sizeof(struct th_seg) &&
             time(NULL) - st.st_mtime < YOUNG_SECONDS)
        gc_left(name, "just created, may still be initialising", n);
    else if (st.st_size != (off_t)sizeof(struct th_seg))
        gc_remove_invalid(dirfd, name, "wrong size, not a libthunder segment", n);
    else if (!segment_name(name, &inode))
        gc_remove_invalid(dirfd, name, "no socket inode in its name, not a libthunder segment", n);
    else
        gc_mapped(dirfd, name, fd, inode, &st, n);
    close(fd);
}

static int run_gc(void)
{
    char prefix[48];
    struct gc_counts n = { 0 };
    DIR *dir = opendir(SHM_DIR);
    struct dirent *de;

    if (dir == NULL) {
        fprintf(stderr, "thunder-stat: cannot open " SHM_DIR ": %s\n", strerror(errno));
        return 1;
    }
    snprintf(prefix, sizeof(prefix), TH_SEG_PREFIX "%u.", (unsigned)my_uid);
    while ((de = readdir(dir)) != NULL)
        if (strncmp(de->d_name, prefix, strlen(prefix)) == 0)
            gc_one(dirfd(dir), de->d_name, &n);
    closedir(dir);
    printf("gc: %d removed, %d in use, %d left alone (uid %u)\n", n.removed, n.in_use,
           n.left, (unsigned)my_uid);
    return 0;
}

/* ---- main ------------------------------------------------------------------------ */

static void parse_options(int argc, char **argv, struct options *o)
{
    static const struct option longopts[] = {
        { "json", no_argument, NULL, 'j' },      { "kv", no_argument, NULL, 'k' },
        { "watch", required_argument, NULL, 'w' }, { "gc", no_argument, NULL, 'g' },
        { "port", required_argument, NULL, 'p' }, { "pid", required_argument, NULL, 'P' },
        { "help", no_argument, NULL, 'h' },      { "version", no_argument, NULL, 'V' },
        { NULL, 0, NULL, 0 },
    };
    int c;
    char *end;

    *o = (struct options){ .format = FMT_TABLE, .any = -1, .port = -1, .pid = -1 };
    opterr = 0;
    while ((c = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
        switch (c) {
        case 'j': case 'k':
            if (o->format != FMT_TABLE)
                usage_error("--json and --kv exclude each other");
            o->format = c == 'j' ? FMT_JSON : FMT_KV;
            break;
        case 'w':
            o->watch_s = strtod(optarg, &end);
            if (*optarg == '\0' || *end || !(o->watch_s >= 0.1 && o->watch_s <= 86400))
                usage_error("--watch takes seconds from 0.1 to 86400");
            break;
        case 'g': o->gc = true; break;
        case 'p':
            if (!parse_long(optarg, 1, 65535, &o->port))
                usage_error("--port takes a port from 1 to 65535");
            break;
        case 'P':
            if (!parse_long(optarg, 1, INT32_MAX, &o->pid))
                usage_error("--pid takes a process id");
            break;
        case 'h':
            printf("%s\n", usage_line);
            exit(0);
        case 'V':
            printf("thunder-stat " VERSION "\n");
            exit(0);
        default:
            usage_error(NULL);
        }
    }
    if (optind < argc && !parse_long(argv[optind++], 1, INT32_MAX, &o->any))
        usage_error("PORT or PID must be a positive number");
    if (optind < argc)
        usage_error("only one PORT or PID");
    if (o->gc && (o->format != FMT_TABLE || o->watch_s > 0 || o->any >= 0 || o->port >= 0 ||
                  o->pid >= 0))
        usage_error("--gc takes no other option");
}

int main(int argc, char **argv)
{
    struct options o;

    parse_options(argc, argv, &o);
    my_uid = geteuid();
    install_sigbus();
    return o.gc ? run_gc() : run_stat(&o);
}

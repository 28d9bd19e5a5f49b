/*
 * The three human and script formats (thunder-preload.1 documents them;
 * the tests parse --kv):
 *
 *   table   one block per listener, for people
 *   --kv    one line per process, then one line per listener:
 *     port=P inode=I pid=N alive=1 strategy=S accepts=N wakeups=N spurious=N
 *       eagain=N lock_waits=N lock_wait_ms=N rotations=N waits=N share=F
 *       refused=N yields=N
 *     listener port=P inode=I processes=N accepts=N jain=F holder=PID
 *       queued=N recoveries=N wakeups_per_accept=F address=A
 *   --json  one object per snapshot, on one line:
 *     {"uid":U,"listeners":[{"port":P,"inode":I,"address":"A","segment":"PATH",
 *      "nprocesses":N,"accepts":N,"jain":F,"wakeups_per_accept":F,
 *      "holder":PID,"queued":N,"recoveries":N,"processes":[{"pid":N,
 *      "alive":true,"strategy":"S","accepts":N,"share":F,"waits":N,
 *      "wakeups":N,"spurious":N,"eagain":N,"lock_waits":N,
 *      "lock_wait_ns":N,"lock_wait_ms":F,"rotations":N,"refused":N,"yields":N}]}]}
 *
 * --prometheus is in prom.c.
 */
#include "stat.h"

#include <inttypes.h>

static void print_table(const struct snapshot *s)
{
    struct figures f = stat_figures(s);

    printf("%s  inode %" PRIu64 "  %s\n", s->address, s->inode, s->path);
    printf("  processes %d  accepts %" PRIu64 "  jain %.4f  wakeups/accept %.3f"
           "  lock holder %d  queued %u  recoveries %" PRIu64 "\n",
           s->nprocs, f.accepts, f.jain, f.wakeups_per_accept, (int)s->holder_pid,
           s->nqueued, s->recoveries);
    printf("  %8s %-5s %-9s %9s %6s %9s %8s %8s %10s %10s %9s %8s %8s\n", "PID", "ALIVE",
           "STRATEGY", "ACCEPTS", "SHARE", "WAKEUPS", "SPURIOUS", "EAGAIN",
           "LOCK_WAITS", "LOCK_MS", "ROTATIONS", "REFUSED", "YIELDS");
    for (int i = 0; i < s->nprocs; i++) {
        const struct proc_row *r = &s->procs[i];
        printf("  %8d %-5s %-9s %9" PRIu64 " %5.1f%% %9" PRIu64 " %8" PRIu64 " %8" PRIu64
               " %10" PRIu64 " %10.1f %9" PRIu64 " %8" PRIu64 " %8" PRIu64 "\n",
               (int)r->pid, r->alive ? "yes" : "no", th_strategy_name(r->strategy), r->accepts,
               100.0 * stat_share(r, &f), r->wakeups, r->spurious, r->eagain, r->lock_waits,
               (double)r->lock_wait_ns / 1e6, r->rotations, r->refused, r->yields);
    }
}

static void print_kv(const struct snapshot *s)
{
    struct figures f = stat_figures(s);

    for (int i = 0; i < s->nprocs; i++) {
        const struct proc_row *r = &s->procs[i];
        printf("port=%u inode=%" PRIu64 " pid=%d alive=%d strategy=%s accepts=%" PRIu64
               " wakeups=%" PRIu64 " spurious=%" PRIu64 " eagain=%" PRIu64
               " lock_waits=%" PRIu64 " lock_wait_ms=%" PRIu64 " rotations=%" PRIu64
               " waits=%" PRIu64 " share=%.4f refused=%" PRIu64 " yields=%" PRIu64 "\n",
               s->port, s->inode, (int)r->pid, r->alive, th_strategy_name(r->strategy),
               r->accepts, r->wakeups, r->spurious, r->eagain, r->lock_waits,
               r->lock_wait_ns / 1000000, r->rotations, r->waits, stat_share(r, &f), r->refused,
               r->yields);
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
           ",\"lock_wait_ns\":%" PRIu64 ",\"lock_wait_ms\":%.3f,\"rotations\":%" PRIu64
           ",\"refused\":%" PRIu64 ",\"yields\":%" PRIu64 "}",
           (int)r->pid, r->alive ? "true" : "false", th_strategy_name(r->strategy), r->accepts,
           stat_share(r, f), r->waits, r->wakeups, r->spurious, r->eagain, r->lock_waits,
           r->lock_wait_ns, (double)r->lock_wait_ns / 1e6, r->rotations, r->refused, r->yields);
}

static void print_json_listener(const struct snapshot *s)
{
    struct figures f = stat_figures(s);

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
    printf("{\"uid\":%u,\"listeners\":[", (unsigned)stat_uid);
    for (int i = 0; i < c->count; i++) {
        if (i)
            putchar(',');
        print_json_listener(&c->items[i]);
    }
    printf("]}\n");
}

static void print_nothing(const struct options *o)
{
    /* the table is for people: stdout; the other formats stay parseable */
    FILE *to = o->format == FMT_TABLE ? stdout : stderr;

    fprintf(to, "no libthunder segments for uid %u", (unsigned)stat_uid);
    if (o->any >= 0)
        fprintf(to, " matching port or pid %ld", o->any);
    if (o->port >= 0)
        fprintf(to, " matching port %ld", o->port);
    if (o->pid >= 0)
        fprintf(to, " matching pid %ld", o->pid);
    fputc('\n', to);
}

void stat_print(const struct collection *c, const struct options *o)
{
    if (o->format == FMT_JSON)
        print_json(c);
    if (o->format == FMT_PROMETHEUS)
        stat_print_prometheus(stdout, c);
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

/*
 * --prometheus: the statistics in Prometheus's text exposition format, and
 * --textfile DIR: the same written atomically to DIR/libthunder.prom for
 * node_exporter's textfile collector (a temporary file renamed over it, so
 * a scrape never reads half a file).
 *
 * Per listener and process, counters labelled {port, address, inode, pid};
 * per listener, gauges (and the recoveries counter) labelled {port,
 * address, inode}.  inode tells apart two listeners that share a port and
 * an unknown address ("?:80" from another network namespace), which would
 * otherwise be one series twice.  Times are in seconds.
 */
#define _GNU_SOURCE
#include "stat.h"

#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define TEXTFILE_NAME "libthunder.prom"

/* ---- per process --------------------------------------------------------- */

struct proc_metric {
    const char *name, *help;
    double (*value)(const struct proc_row *r);
};

static double accepts(const struct proc_row *r) { return (double)r->accepts; }
static double wakeups(const struct proc_row *r) { return (double)r->wakeups; }
static double spurious(const struct proc_row *r) { return (double)r->spurious; }
static double eagain(const struct proc_row *r) { return (double)r->eagain; }
static double waits(const struct proc_row *r) { return (double)r->waits; }
static double lock_waits(const struct proc_row *r) { return (double)r->lock_waits; }
static double lock_wait_s(const struct proc_row *r) { return (double)r->lock_wait_ns / 1e9; }
static double rotations(const struct proc_row *r) { return (double)r->rotations; }
static double refused(const struct proc_row *r) { return (double)r->refused; }
static double yields(const struct proc_row *r) { return (double)r->yields; }

static const struct proc_metric proc_metrics[] = {
    { "thunder_accepts_total", "Connections accepted by the process on the listener.", accepts },
    { "thunder_wakeups_total", "Waits that returned with the listener ready.", wakeups },
    { "thunder_spurious_wakeups_total",
      "Wake-ups after which the accept found no connection.", spurious },
    { "thunder_eagain_accepts_total", "Accepts that failed with EAGAIN.", eagain },
    { "thunder_waits_total", "Wait calls (poll, select, epoll) that included the listener.", waits },
    { "thunder_lock_waits_total", "Times the process waited for the listener's accept lock.",
      lock_waits },
    { "thunder_lock_wait_seconds_total", "Time spent waiting for the accept lock.", lock_wait_s },
    { "thunder_rotations_total", "Exclusive epoll entries moved to the tail of the wait queue.",
      rotations },
    { "thunder_refused_accepts_total",
      "Further accepts of one wake-up answered EAGAIN to leave a burst to idle workers.",
      refused },
    { "thunder_yields_total",
      "Waits that left the listener to other idle workers after taking connections at once.",
      yields },
};

/* ---- per listener ------------------------------------------------------------ */

struct listener_metric {
    const char *name, *type, *help;
    double (*value)(const struct snapshot *s);
};

static double processes(const struct snapshot *s) { return s->nprocs; }
static double jain(const struct snapshot *s) { return stat_figures(s).jain; }
static double queued(const struct snapshot *s) { return s->nqueued; }
static double holder(const struct snapshot *s) { return s->holder_pid; }
static double recoveries(const struct snapshot *s) { return (double)s->recoveries; }

static const struct listener_metric listener_metrics[] = {
    { "thunder_processes", "gauge", "Processes with statistics on the listener.", processes },
    { "thunder_jain_index", "gauge",
      "Jain's fairness index of accepts over the processes (1 = even).", jain },
    { "thunder_queued_waiters", "gauge", "Threads queued on the listener's accept lock.", queued },
    { "thunder_lock_holder_pid", "gauge", "Pid holding the accept lock, 0 when free.", holder },
    { "thunder_recoveries_total", "counter", "Dead or stalled lock holders taken over.",
      recoveries },
};

#define LEN(a) (sizeof(a) / sizeof((a)[0]))

/* A label value: backslash, double quote and newline escaped. */
static void label_value(FILE *out, const char *s)
{
    for (; *s; s++) {
        if (*s == '\\' || *s == '"')
            fprintf(out, "\\%c", *s);
        else if (*s == '\n')
            fputs("\\n", out);
        else
            fputc(*s, out);
    }
}

static void listener_labels(FILE *out, const struct snapshot *s)
{
    fprintf(out, "port=\"%u\",address=\"", s->port);
    label_value(out, s->address);
    fprintf(out, "\",inode=\"%" PRIu64 "\"", s->inode);
}

/* %.17g keeps every integer below 2^53 exact and prints no exponent for them. */
static void sample(FILE *out, double v)
{
    fprintf(out, "} %.17g\n", v);
}

void stat_print_prometheus(FILE *out, const struct collection *c)
{
    fprintf(out, "# HELP thunder_listeners Listeners (segments) of libthunder for this user.\n"
                 "# TYPE thunder_listeners gauge\nthunder_listeners %d\n", c->count);
    for (size_t m = 0; m < LEN(proc_metrics); m++) {
        fprintf(out, "# HELP %s %s\n# TYPE %s counter\n", proc_metrics[m].name,
                proc_metrics[m].help, proc_metrics[m].name);
        for (int i = 0; i < c->count; i++)
            for (int p = 0; p < c->items[i].nprocs; p++) {
                const struct proc_row *r = &c->items[i].procs[p];
                fprintf(out, "%s{", proc_metrics[m].name);
                listener_labels(out, &c->items[i]);
                fprintf(out, ",pid=\"%d\"", (int)r->pid);
                sample(out, proc_metrics[m].value(r));
            }
    }
    for (size_t m = 0; m < LEN(listener_metrics); m++) {
        fprintf(out, "# HELP %s %s\n# TYPE %s %s\n", listener_metrics[m].name,
                listener_metrics[m].help, listener_metrics[m].name, listener_metrics[m].type);
        for (int i = 0; i < c->count; i++) {
            fprintf(out, "%s{", listener_metrics[m].name);
            listener_labels(out, &c->items[i]);
            sample(out, listener_metrics[m].value(&c->items[i]));
        }
    }
}

/* ---- --textfile ------------------------------------------------------------------ */

/* Write DIR/libthunder.prom by rename: 0 or -1 with a message. */
int stat_write_textfile(const char *dir, const struct collection *c)
{
    char tmp[4096], final[4096];
    FILE *out;
    int fd, err;
    bool ok;

    if ((size_t)snprintf(final, sizeof(final), "%s/" TEXTFILE_NAME, dir) >= sizeof(final) ||
        (size_t)snprintf(tmp, sizeof(tmp), "%s/." TEXTFILE_NAME ".XXXXXX", dir) >= sizeof(tmp)) {
        fprintf(stderr, "thunder-stat: --textfile: directory name too long\n");
        return -1;
    }
    /* the temporary name does not end in .prom: the collector skips it */
    if ((fd = mkstemp(tmp)) < 0) {
        fprintf(stderr, "thunder-stat: cannot write in %s: %s\n", dir, strerror(errno));
        return -1;
    }
    if (fchmod(fd, 0644) < 0 || (out = fdopen(fd, "w")) == NULL) {
        fprintf(stderr, "thunder-stat: cannot write %s: %s\n", tmp, strerror(errno));
        close(fd);
        unlink(tmp);
        return -1;
    }
    stat_print_prometheus(out, c);
    ok = fflush(out) != EOF && fsync(fd) == 0;
    err = errno;
    if (fclose(out) == EOF && ok) {
        ok = false;
        err = errno;
    }
    if (ok && rename(tmp, final) < 0) {
        ok = false;
        err = errno;
    }
    if (!ok) {
        fprintf(stderr, "thunder-stat: cannot write %s: %s\n", final, strerror(err));
        unlink(tmp);
        return -1;
    }
    return 0;
}

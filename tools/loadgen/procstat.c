/*
 * procstat.c - the watched workers' counters from /proc, sampled before and
 * after the load: voluntary context switches summed over their threads
 * (the herd: each is a wake-up) and CPU time.  CPU time is the threads'
 * schedstat run time (nanoseconds), falling back to utime + stime of
 * /proc/PID/stat (10 ms ticks) without it.
 */
#define _GNU_SOURCE
#include "loadgen.h"

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* voluntary_ctxt_switches of one task, or false if it is gone. */
static bool read_task_switches(pid_t pid, pid_t tid,
                               unsigned long long *switches)
{
    char path[64];
    snprintf(path, sizeof path, "/proc/%d/task/%d/status", (int)pid, (int)tid);
    FILE *f = fopen(path, "r");
    if (!f)
        return false;
    char line[256];
    bool found = false;
    while (fgets(line, sizeof line, f))
        if (sscanf(line, "voluntary_ctxt_switches: %llu", switches) == 1) {
            found = true;
            break;
        }
    fclose(f);
    return found;
}

/* Nanoseconds one task has spent on a CPU (first field of schedstat). */
static bool read_task_cpu_ns(pid_t pid, pid_t tid, unsigned long long *ns)
{
    char path[64];
    snprintf(path, sizeof path, "/proc/%d/task/%d/schedstat", (int)pid, (int)tid);
    FILE *f = fopen(path, "r");
    if (!f)
        return false;
    bool found = fscanf(f, "%llu", ns) == 1;
    fclose(f);
    return found;
}

/*
 * utime + stime of the whole process (all its threads, dead ones too),
 * in nanoseconds.  False if the process is gone or a zombie.
 */
static bool read_process_cpu_ns(pid_t pid, unsigned long long *ns)
{
    char path[64], text[1024];
    snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
    FILE *f = fopen(path, "r");
    if (!f)
        return false;
    size_t len = fread(text, 1, sizeof text - 1, f);
    fclose(f);
    text[len] = '\0';

    /* The command name may contain spaces and ')': skip past the last ')'. */
    char *after_name = strrchr(text, ')');
    if (!after_name)
        return false;
    char state;
    unsigned long long utime, stime;
    /* Fields 3..15: state, then 10 fields we skip, then utime and stime. */
    if (sscanf(after_name + 1, " %c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu",
               &state, &utime, &stime) != 3)
        return false;
    if (state == 'Z' || state == 'X')
        return false;  /* dead, not yet reaped: treat as gone */
    *ns = (utime + stime) * (1000000000ULL / (unsigned long long)sysconf(_SC_CLK_TCK));
    return true;
}

/*
 * Samples one watched process.  CPU time comes from the tasks' schedstat
 * (nanoseconds) when the kernel has it: /proc/PID/stat counts in 10 ms
 * ticks, too coarse for a few hundred connections.  Only if schedstat is
 * missing do we fall back to utime + stime.
 */
static struct proc_sample sample_process(pid_t pid)
{
    struct proc_sample s = { 0 };
    unsigned long long stat_cpu_ns;
    if (!read_process_cpu_ns(pid, &stat_cpu_ns))
        return s;

    char dir_path[64];
    snprintf(dir_path, sizeof dir_path, "/proc/%d/task", (int)pid);
    DIR *dir = opendir(dir_path);
    if (!dir)
        return s;
    bool have_schedstat = true;
    struct dirent *entry;
    while ((entry = readdir(dir)) != NULL) {
        pid_t tid = (pid_t)atoi(entry->d_name);
        if (tid <= 0)
            continue;  /* "." and ".." */
        unsigned long long switches, cpu_ns;
        if (read_task_switches(pid, tid, &switches))
            s.voluntary_switches += switches;
        if (read_task_cpu_ns(pid, tid, &cpu_ns))
            s.cpu_ns += cpu_ns;
        else
            have_schedstat = false;
    }
    closedir(dir);
    if (!have_schedstat)
        s.cpu_ns = stat_cpu_ns;
    s.present = true;
    return s;
}

void sample_watched(const struct options *opt, struct proc_sample *out)
{
    for (size_t i = 0; i < opt->watched_count; i++)
        out[i] = sample_process(opt->watched[i]);
}

/*
 * Sums the watched processes' deltas.  A process missing at either end
 * is reported on stderr and left out: its counters are unknowable.
 */
void watched_deltas(const struct options *opt,
                           const struct proc_sample *before,
                           const struct proc_sample *after,
                           unsigned long long *wakeups,
                           unsigned long long *cpu_ns)
{
    *wakeups = 0;
    *cpu_ns = 0;
    for (size_t i = 0; i < opt->watched_count; i++) {
        if (!before[i].present || !after[i].present) {
            fprintf(stderr, "loadgen: pid %d %s; its wake-ups and CPU are not counted\n",
                    (int)opt->watched[i],
                    before[i].present ? "vanished during the run" : "was not running");
            continue;
        }
        /* A thread that exited takes its count with it: never go negative. */
        if (after[i].voluntary_switches > before[i].voluntary_switches)
            *wakeups += after[i].voluntary_switches - before[i].voluntary_switches;
        if (after[i].cpu_ns > before[i].cpu_ns)
            *cpu_ns += after[i].cpu_ns - before[i].cpu_ns;
    }
}

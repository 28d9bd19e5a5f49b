/*
 * results.c - from the clients' samples to loadgen's key=value output:
 * latency percentiles, per-worker accept counts, Jain's index, the
 * largest share, and the burst rounds' summary.
 */
#define _GNU_SOURCE
#include "loadgen.h"
#include "../common/fairness.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>

struct pid_count {
    pid_t pid;
    long accepts;
};

static void *checked_calloc(size_t n, size_t size)
{
    void *p = calloc(n ? n : 1, size);
    if (!p) {
        perror("loadgen: calloc");
        exit(1);
    }
    return p;
}

static int compare_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return (x > y) - (x < y);
}

static int compare_pid_count(const void *a, const void *b)
{
    pid_t x = ((const struct pid_count *)a)->pid;
    pid_t y = ((const struct pid_count *)b)->pid;
    return (x > y) - (x < y);
}

/* Nearest-rank percentile of sorted values; 0 when there are none. */
static uint64_t percentile(const uint64_t *sorted, size_t count, double p)
{
    if (count == 0)
        return 0;
    size_t rank = (size_t)(p * (double)count + 0.999999);
    if (rank < 1)
        rank = 1;
    if (rank > count)
        rank = count;
    return sorted[rank - 1];
}

/* The count of `pid` in a sorted table, added (0 accepts) if missing. */
static struct pid_count *entry_for(struct pid_count *counts, size_t *n, pid_t pid)
{
    struct pid_count key = { pid, 0 };
    struct pid_count *hit = bsearch(&key, counts, *n, sizeof *counts, compare_pid_count);
    if (hit)
        return hit;
    counts[(*n)++] = key;
    qsort(counts, *n, sizeof *counts, compare_pid_count);
    return bsearch(&key, counts, *n, sizeof *counts, compare_pid_count);
}

/*
 * Per-pid accept counts: every watched pid (even with 0 accepts), plus
 * every pid that answered without being watched (a respawned worker).
 * Replies that named no worker are not counted here.  Sorted by pid.
 */
static struct pid_count *count_per_pid(const struct options *opt,
                                       const struct client *clients, int client_count,
                                       size_t *count_out)
{
    size_t capacity = opt->watched_count;
    for (int c = 0; c < client_count; c++)
        capacity += clients[c].sample_count;
    struct pid_count *counts = checked_calloc(capacity, sizeof *counts);
    size_t n = 0;
    for (size_t i = 0; i < opt->watched_count; i++)
        entry_for(counts, &n, opt->watched[i]);
    for (int c = 0; c < client_count; c++)
        for (size_t s = 0; s < clients[c].sample_count; s++)
            if (clients[c].samples[s].pid > 0)
                entry_for(counts, &n, clients[c].samples[s].pid)->accepts++;
    *count_out = n;
    return counts;
}

static double jain_of_counts(const struct pid_count *counts, size_t n)
{
    double *values = checked_calloc(n, sizeof *values);
    for (size_t i = 0; i < n; i++)
        values[i] = (double)counts[i].accepts;
    double j = jain_index(values, n);
    free(values);
    return j;
}

/* The largest share one worker took of n replies (pid 0: not counted). */
double share_of_largest(const pid_t *pids, int n)
{
    struct pid_count *counts = checked_calloc((size_t)n, sizeof *counts);
    size_t distinct = 0;
    long most = 0, named = 0;
    for (int i = 0; i < n; i++) {
        if (pids[i] <= 0)
            continue;
        named++;
        struct pid_count *e = entry_for(counts, &distinct, pids[i]);
        if (++e->accepts > most)
            most = e->accepts;
    }
    free(counts);
    return named ? (double)most / (double)named : 0.0;
}

static void print_statuses(const struct client *clients, int client_count)
{
    const char *sep = "";
    bool any = false;
    for (int code = 100; code < 600; code++) {
        long n = 0;
        for (int c = 0; c < client_count; c++)
            n += clients[c].http_status[code];
        if (n == 0)
            continue;
        printf("%s%d:%ld", any ? sep : "http_statuses=", code, n);
        sep = ",";
        any = true;
    }
    if (any)
        printf("\n");
}

void print_results(const struct options *opt, const struct client *clients,
                   int client_count, double seconds,
                   const struct proc_sample *before, const struct proc_sample *after)
{
    long attempted = 0, failed = 0, failed_by[FAIL_KINDS] = { 0 };
    size_t ok = 0, k = 0, attributed = 0;
    for (int c = 0; c < client_count; c++) {
        attempted += clients[c].attempted;
        failed += clients[c].failed;
        ok += clients[c].sample_count;
        for (int kind = 0; kind < FAIL_KINDS; kind++)
            failed_by[kind] += clients[c].failed_by[kind];
    }
    uint64_t *latencies = checked_calloc(ok, sizeof *latencies);
    for (int c = 0; c < client_count; c++)
        for (size_t s = 0; s < clients[c].sample_count; s++) {
            latencies[k++] = clients[c].samples[s].latency_ns;
            attributed += clients[c].samples[s].pid > 0;
        }
    qsort(latencies, ok, sizeof *latencies, compare_u64);

    size_t pid_count;
    struct pid_count *counts = count_per_pid(opt, clients, client_count, &pid_count);
    size_t seen = 0;
    long most = 0;
    for (size_t i = 0; i < pid_count; i++) {
        seen += counts[i].accepts > 0;
        if (counts[i].accepts > most)
            most = counts[i].accepts;
    }

    printf("conns=%ld\n", attempted);
    printf("ok=%zu\n", ok);
    printf("failed=%ld\n", failed);
    printf("failed_connect=%ld\n", failed_by[FAIL_CONNECT]);
    printf("failed_timeout=%ld\n", failed_by[FAIL_TIMEOUT]);
    printf("failed_closed=%ld\n", failed_by[FAIL_CLOSED]);
    printf("failed_status=%ld\n", failed_by[FAIL_STATUS]);
    printf("seconds=%.3f\n", seconds);
    printf("rps=%.1f\n", seconds > 0 ? (double)ok / seconds : 0.0);
    printf("p50_us=%llu\n", (unsigned long long)(percentile(latencies, ok, 0.50) / 1000));
    printf("p99_us=%llu\n", (unsigned long long)(percentile(latencies, ok, 0.99) / 1000));
    printf("max_us=%llu\n", (unsigned long long)(ok ? latencies[ok - 1] / 1000 : 0));
    printf("attributed=%zu\n", attributed);
    printf("workers_seen=%zu\n", seen);
    printf("jain=%.4f\n", jain_of_counts(counts, pid_count));
    printf("max_share=%.4f\n", attributed ? (double)most / (double)attributed : 0.0);
    print_statuses(clients, client_count);
    if (opt->watched_count > 0) {
        unsigned long long wakeups, cpu_ns;
        watched_deltas(opt, before, after, &wakeups, &cpu_ns);
        double cpu_ms = (double)cpu_ns / 1e6;
        printf("wakeups=%llu\n", wakeups);
        printf("wakeups_per_conn=%.3f\n", ok ? (double)wakeups / (double)ok : 0.0);
        printf("cpu_ms_per_1000=%.2f\n", ok ? cpu_ms * 1000.0 / (double)ok : 0.0);
    }
    for (size_t i = 0; i < pid_count; i++)
        printf("pid=%d accepts=%ld\n", (int)counts[i].pid, counts[i].accepts);
    fflush(stdout);
    free(counts);
    free(latencies);
}

/*
 * The burst summary: round completion (mean, p99, max) and the mean over
 * rounds of the largest share; with -w and -s, the limit
 * ceil(K/N) x service time and the mean's ratio to it.
 */
void print_rounds(const struct options *opt, const struct round_result *rounds, int count)
{
    uint64_t *times = checked_calloc((size_t)count, sizeof *times);
    double sum_ms = 0, sum_share = 0;
    int shared = 0;
    for (int i = 0; i < count; i++) {
        times[i] = rounds[i].completion_ns;
        sum_ms += (double)rounds[i].completion_ns / 1e6;
        if (rounds[i].attributed > 0) {
            sum_share += rounds[i].max_share;
            shared++;
        }
    }
    qsort(times, (size_t)count, sizeof *times, compare_u64);
    double mean_ms = count ? sum_ms / count : 0;
    printf("burst=%d\n", opt->burst);
    printf("rounds=%d\n", count);
    printf("idle_ms=%d\n", opt->idle_ms);
    printf("round_ms_mean=%.3f\n", mean_ms);
    printf("round_ms_p99=%.3f\n", (double)percentile(times, (size_t)count, 0.99) / 1e6);
    printf("round_ms_max=%.3f\n", count ? (double)times[count - 1] / 1e6 : 0.0);
    printf("round_max_share_mean=%.4f\n", shared ? sum_share / shared : 0.0);
    if (opt->workers > 0 && opt->service_ms > 0) {
        double limit = ceil((double)opt->burst / opt->workers) * opt->service_ms;
        printf("round_limit_ms=%.3f\n", limit);
        printf("round_vs_limit=%.3f\n", mean_ms / limit);
    }
    free(times);
}

/*
 * httpload - bench/loadgen for HTTP servers (the peers: uWSGI, nginx).
 *
 *   httpload -p PORT [-n CONNS] [-c CONCURRENCY] [-d SECONDS] [-g GAP_US]
 *            [-P PID,PID,...] [-T TIMEOUT_MS]
 *
 * loadgen sends nothing and expects "PID\n" as the first line; an HTTP
 * server waits for a request and answers "HTTP/1.1 200 OK".  This client
 * does the same job with one "GET / HTTP/1.0" per connection: the server
 * answers and closes, the body's first decimal is the pid of the worker
 * that accepted.  Latency runs from connect() to the server's close.
 *
 * Same options, same /proc sampling (voluntary context switches and
 * schedstat CPU of every thread of the -P pids, 100 ms settle) and the
 * same output contract as loadgen, one key=value per line:
 *   conns ok failed seconds rps p50_us p99_us workers_seen jain max_share
 *   [wakeups wakeups_per_conn cpu_ms_per_1000]   (only with -P)
 *   pid=PID accepts=N                            (one line per pid, sorted)
 * Exit status: 0 if no connection failed, 1 if any did, 2 on usage error.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <limits.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#define MAX_CONC 256
#define MAX_WATCHED 1024
#define SETTLE_MS 100

static const char request[] = "GET / HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n";

struct sample { pid_t pid; uint64_t ns; };
struct client {
    pthread_t thread;
    struct sample *s;
    size_t n, cap;
    long attempted, failed;
};

static struct sockaddr_in server;
static long total_conns = 400, gap_us;
static int conc = 1, timeout_ms = 5000;
static double max_seconds = 30;
static pid_t watched[MAX_WATCHED];
static size_t nwatched;
static atomic_long claimed;
static struct timespec deadline;
static struct client clients[MAX_CONC];

static void usage(void)
{
    fprintf(stderr, "usage: httpload -p PORT [-n CONNS] [-c CONCURRENCY] [-d SECONDS]"
                    " [-g GAP_US] [-P PID,...] [-T TIMEOUT_MS]\n");
    exit(2);
}

static long num(const char *t, long lo, long hi)
{
    char *end;
    errno = 0;
    long v = strtol(t, &end, 10);
    if (errno || end == t || *end || v < lo || v > hi)
        usage();
    return v;
}

static struct timespec now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t;
}

static int64_t ns_between(struct timespec a, struct timespec b)
{
    return (int64_t)(b.tv_sec - a.tv_sec) * 1000000000LL + (b.tv_nsec - a.tv_nsec);
}

/* One request; the pid from the body, or 0 with *why set. */
static pid_t fetch(const char **why)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        *why = strerror(errno);
        return 0;
    }
    struct timeval tv = { .tv_sec = timeout_ms / 1000, .tv_usec = (timeout_ms % 1000) * 1000 };
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    char buf[4096];
    size_t len = 0;
    pid_t pid = 0;
    *why = NULL;
    if (connect(fd, (struct sockaddr *)&server, sizeof server) < 0 ||
        send(fd, request, sizeof request - 1, MSG_NOSIGNAL) != (ssize_t)(sizeof request - 1)) {
        *why = strerror(errno);
        goto out;
    }
    for (;;) {
        ssize_t got = read(fd, buf + len, sizeof buf - 1 - len);
        if (got == 0)
            break;
        if (got < 0) {
            if (errno == EINTR)
                continue;
            *why = errno == EAGAIN ? "timed out" : strerror(errno);
            goto out;
        }
        len += (size_t)got;
        if (len == sizeof buf - 1)
            break;
    }
    buf[len] = '\0';
    char *body = strstr(buf, "\r\n\r\n");
    if (strncmp(buf, "HTTP/1.", 7) != 0 || !body || strncmp(buf + 8, " 200", 4) != 0) {
        *why = len ? "not an HTTP 200 reply" : "closed without a reply";
        goto out;
    }
    body += 4;
    long v = strtol(body, NULL, 10);
    if (!isdigit((unsigned char)*body) || v <= 0 || v > INT32_MAX) {
        *why = "body is not a pid";
        goto out;
    }
    pid = (pid_t)v;
out:
    close(fd);
    return pid;
}

static void *run_client(void *arg)
{
    struct client *c = arg;
    while (ns_between(now(), deadline) > 0) {
        long attempt = atomic_fetch_add(&claimed, 1);
        if (attempt >= total_conns)
            break;
        c->attempted++;
        const char *why;
        struct timespec t0 = now();
        pid_t pid = fetch(&why);
        uint64_t ns = (uint64_t)ns_between(t0, now());
        if (pid) {
            if (c->n == c->cap) {
                c->cap = c->cap ? 2 * c->cap : 1024;
                c->s = realloc(c->s, c->cap * sizeof *c->s);
                if (!c->s) {
                    perror("httpload: realloc");
                    exit(1);
                }
            }
            c->s[c->n++] = (struct sample){ pid, ns };
        } else {
            c->failed++;
            if (c->failed <= 3)
                fprintf(stderr, "httpload: connection %ld failed: %s\n", attempt + 1, why);
        }
        if (gap_us > 0) {
            struct timespec g = { gap_us / 1000000, (gap_us % 1000000) * 1000 };
            nanosleep(&g, NULL);
        }
    }
    return NULL;
}

/* Voluntary switches and CPU ns summed over every thread of pid. */
static int sample_pid(pid_t pid, unsigned long long *sw, unsigned long long *cpu)
{
    char path[64];
    snprintf(path, sizeof path, "/proc/%d/task", (int)pid);
    DIR *d = opendir(path);
    if (!d)
        return 0;
    struct dirent *e;
    *sw = *cpu = 0;
    while ((e = readdir(d))) {
        if (!isdigit((unsigned char)e->d_name[0]))
            continue;
        char p[300], line[256];
        unsigned long long v;
        snprintf(p, sizeof p, "/proc/%d/task/%s/status", (int)pid, e->d_name);
        FILE *f = fopen(p, "r");
        if (f) {
            while (fgets(line, sizeof line, f))
                if (sscanf(line, "voluntary_ctxt_switches: %llu", &v) == 1)
                    *sw += v;
            fclose(f);
        }
        snprintf(p, sizeof p, "/proc/%d/task/%s/schedstat", (int)pid, e->d_name);
        f = fopen(p, "r");
        if (f) {
            if (fscanf(f, "%llu", &v) == 1)
                *cpu += v;
            fclose(f);
        }
    }
    closedir(d);
    return 1;
}

/* Nearest-rank percentile of sorted values, as loadgen computes it. */
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

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return (x > y) - (x < y);
}

struct count { pid_t pid; long n; };

static int cmp_count(const void *a, const void *b)
{
    const struct count *x = a, *y = b;
    return (x->pid > y->pid) - (x->pid < y->pid);
}

int main(int argc, char **argv)
{
    int port = -1, c;
    while ((c = getopt(argc, argv, "p:n:c:d:g:P:T:")) != -1) {
        switch (c) {
        case 'p': port = (int)num(optarg, 1, 65535); break;
        case 'n': total_conns = num(optarg, 1, LONG_MAX); break;
        case 'c': conc = (int)num(optarg, 1, MAX_CONC); break;
        case 'd': max_seconds = (double)num(optarg, 1, 3600); break;
        case 'g': gap_us = num(optarg, 0, 60000000); break;
        case 'T': timeout_ms = (int)num(optarg, 1, 3600000); break;
        case 'P':
            for (char *tok = strtok(optarg, ","); tok; tok = strtok(NULL, ","))
                if (nwatched < MAX_WATCHED)
                    watched[nwatched++] = (pid_t)num(tok, 1, INT32_MAX);
            break;
        default: usage();
        }
    }
    if (port < 0 || optind != argc)
        usage();
    server.sin_family = AF_INET;
    server.sin_port = htons((uint16_t)port);
    server.sin_addr.s_addr = htonl(INADDR_LOOPBACK);

    static unsigned long long sw0[MAX_WATCHED], cpu0[MAX_WATCHED], sw1[MAX_WATCHED], cpu1[MAX_WATCHED];
    static int ok0[MAX_WATCHED], ok1[MAX_WATCHED];
    for (size_t i = 0; i < nwatched; i++)
        ok0[i] = sample_pid(watched[i], &sw0[i], &cpu0[i]);

    struct timespec start = now();
    deadline = start;
    deadline.tv_sec += (time_t)max_seconds;
    for (int i = 0; i < conc; i++)
        if (pthread_create(&clients[i].thread, NULL, run_client, &clients[i]) != 0) {
            perror("httpload: pthread_create");
            return 1;
        }
    for (int i = 0; i < conc; i++)
        pthread_join(clients[i].thread, NULL);
    double seconds = (double)ns_between(start, now()) / 1e9;

    if (nwatched) {
        struct timespec settle = { 0, SETTLE_MS * 1000000L };
        nanosleep(&settle, NULL);
        for (size_t i = 0; i < nwatched; i++)
            ok1[i] = sample_pid(watched[i], &sw1[i], &cpu1[i]);
    }

    long attempted = 0, failed = 0;
    size_t ok = 0;
    for (int i = 0; i < conc; i++) {
        attempted += clients[i].attempted;
        failed += clients[i].failed;
        ok += clients[i].n;
    }
    uint64_t *lat = malloc((ok ? ok : 1) * sizeof *lat);
    struct count *counts = calloc(nwatched + ok + 1, sizeof *counts);
    if (!lat || !counts) {
        perror("httpload: malloc");
        return 1;
    }
    size_t k = 0, ncounts = 0;
    for (size_t i = 0; i < nwatched; i++)
        counts[ncounts++] = (struct count){ watched[i], 0 };
    qsort(counts, ncounts, sizeof *counts, cmp_count);
    for (int i = 0; i < conc; i++)
        for (size_t s = 0; s < clients[i].n; s++) {
            lat[k++] = clients[i].s[s].ns;
            struct count key = { clients[i].s[s].pid, 0 };
            struct count *hit = bsearch(&key, counts, ncounts, sizeof *counts, cmp_count);
            if (!hit) {
                counts[ncounts++] = key;
                qsort(counts, ncounts, sizeof *counts, cmp_count);
                hit = bsearch(&key, counts, ncounts, sizeof *counts, cmp_count);
            }
            hit->n++;
        }
    qsort(lat, ok, sizeof *lat, cmp_u64);
    double sum = 0, sq = 0;
    long most = 0;
    size_t seen = 0;
    for (size_t i = 0; i < ncounts; i++) {
        sum += (double)counts[i].n;
        sq += (double)counts[i].n * (double)counts[i].n;
        seen += counts[i].n > 0;
        if (counts[i].n > most)
            most = counts[i].n;
    }
    printf("conns=%ld\nok=%zu\nfailed=%ld\nseconds=%.3f\nrps=%.1f\n", attempted, ok,
           failed, seconds, seconds > 0 ? (double)ok / seconds : 0.0);
    printf("p50_us=%llu\np99_us=%llu\n", (unsigned long long)(percentile(lat, ok, 0.50) / 1000),
           (unsigned long long)(percentile(lat, ok, 0.99) / 1000));
    printf("workers_seen=%zu\njain=%.4f\nmax_share=%.4f\n", seen,
           ncounts && sq > 0 ? sum * sum / ((double)ncounts * sq) : 0.0,
           ok ? (double)most / (double)ok : 0.0);
    if (nwatched) {
        unsigned long long wake = 0, cpu = 0;
        for (size_t i = 0; i < nwatched; i++) {
            if (!ok0[i] || !ok1[i]) {
                fprintf(stderr, "httpload: pid %d not running at both samples\n", (int)watched[i]);
                continue;
            }
            if (sw1[i] > sw0[i])
                wake += sw1[i] - sw0[i];
            if (cpu1[i] > cpu0[i])
                cpu += cpu1[i] - cpu0[i];
        }
        printf("wakeups=%llu\nwakeups_per_conn=%.3f\ncpu_ms_per_1000=%.2f\n", wake,
               ok ? (double)wake / (double)ok : 0.0,
               ok ? (double)cpu / 1e6 * 1000.0 / (double)ok : 0.0);
    }
    for (size_t i = 0; i < ncounts; i++)
        printf("pid=%d accepts=%ld\n", (int)counts[i].pid, counts[i].n);
    return failed ? 1 : 0;
}

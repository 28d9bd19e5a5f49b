/*
 * loadgen - the one place where libthunder measures the herd and the
 * balance of a pre-fork server.
 *
 *   loadgen -p PORT [-n CONNS] [-c CONCURRENCY] [-d SECONDS] [-g GAP_US]
 *           [-P PID,PID,...] [-T TIMEOUT_MS] [-6] [-H]
 *
 * Opens up to CONNS connections (default 400) to 127.0.0.1:PORT (::1 with
 * -6) from CONCURRENCY client threads (default 1: sequential), stopping
 * after SECONDS (default 30) if CONNS is not reached first.  Each client
 * sleeps GAP_US microseconds between its connections (default 0).  Every
 * connection reads one line, the decimal pid of the worker that accepted
 * it, within TIMEOUT_MS (default 5000), or counts as failed.  With -H
 * (HTTP servers: uWSGI, nginx in bench/peers.sh) it sends
 * "GET / HTTP/1.0" instead and takes the pid from the body of a 200 reply.
 *
 * With -P, the watched workers' voluntary context switches (summed over
 * their threads) and CPU time are sampled before and after the load:
 * the switches per connection are the herd (1.0 is the limit).  CPU time
 * is the sum of the threads' schedstat run time (nanoseconds), falling
 * back to utime + stime of /proc/PID/stat (10 ms ticks) without it.
 * A pid that answers without being watched (a respawned worker) is
 * counted in the balance figures too.
 *
 * Output (stdout), one key=value per line, in this order:
 *   conns ok failed failed_connect failed_timeout failed_closed
 *   seconds rps p50_us p99_us max_us workers_seen jain max_share
 *   [wakeups wakeups_per_conn cpu_ms_per_1000]   (only with -P)
 *   pid=PID accepts=N                            (one line per pid, sorted)
 * where failed = failed_connect (connect refused or in error) +
 * failed_timeout (no reply within TIMEOUT_MS: stranded in the listen queue
 * or in a stuck worker) + failed_closed (closed or reset without a reply:
 * the worker that had accepted it died), and max_us is the slowest
 * connection.  SIGINT or SIGTERM ends the run early: no new connection is
 * started, those under way finish, and the results are printed as usual.
 * Exit status: 0 if no connection failed, 1 if any did, 2 on usage error.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <limits.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <time.h>
#include <unistd.h>

#define MAX_CONCURRENCY 1024
#define MAX_WATCHED 4096
#define MAX_TIMEOUT_MS 3600000
#define MAX_FAILURES_SHOWN 10

/* Workers finish going back to sleep before the "after" sample. */
#define SETTLE_MS 100

struct options {
    int port;
    long total_conns;
    int concurrency;
    double max_seconds;
    long gap_us;
    int timeout_ms;
    bool ipv6;
    bool http;
    pid_t watched[MAX_WATCHED];
    size_t watched_count;
};

/* How a connection failed; see the output description above. */
enum fail_kind { FAIL_CONNECT, FAIL_TIMEOUT, FAIL_CLOSED, FAIL_KINDS };
static const char TIMED_OUT[] = "timed out";

/* Set by SIGINT/SIGTERM: start no new connection. */
static volatile sig_atomic_t stop_requested;

/* One successful connection. */
struct sample {
    pid_t pid;
    uint64_t latency_ns;
};

/* What one client thread did; merged after all threads have joined. */
struct client {
    pthread_t thread;
    struct sample *samples;
    size_t sample_count, sample_capacity;
    long attempted, failed;
    long failed_by[FAIL_KINDS];
};

/* Shared by all client threads; only `claimed` changes during the run. */
struct run {
    struct options opt;
    struct sockaddr_storage server;
    socklen_t server_len;
    struct timespec deadline;
    atomic_long claimed;
    pthread_mutex_t failure_lock;   /* keeps the failure lines in order */
    int failures_shown;
};

/* Watched-process counters, read from /proc. */
struct proc_sample {
    bool present;
    unsigned long long voluntary_switches;
    unsigned long long cpu_ns;
};

struct pid_count {
    pid_t pid;
    long accepts;
};

/* ---- time ---------------------------------------------------------------- */

static struct timespec now_monotonic(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t;
}

static int64_t ns_between(struct timespec from, struct timespec to)
{
    return (int64_t)(to.tv_sec - from.tv_sec) * 1000000000LL +
           (to.tv_nsec - from.tv_nsec);
}

static struct timespec add_ns(struct timespec t, int64_t ns)
{
    int64_t total = t.tv_nsec + ns;
    t.tv_sec += total / 1000000000LL;
    t.tv_nsec = total % 1000000000LL;
    if (t.tv_nsec < 0) {
        t.tv_sec -= 1;
        t.tv_nsec += 1000000000LL;
    }
    return t;
}

/* Milliseconds left until `deadline`, rounded up so poll() never spins. */
static int ms_until(struct timespec deadline)
{
    int64_t ns = ns_between(now_monotonic(), deadline);
    if (ns <= 0)
        return 0;
    return (int)((ns + 999999) / 1000000);
}

/* ---- command line ---------------------------------------------------------- */

static void usage_and_exit(void)
{
    fprintf(stderr, "usage: loadgen -p PORT [-n CONNS] [-c CONCURRENCY] "
                    "[-d SECONDS] [-g GAP_US] [-P PID,PID,...] "
                    "[-T TIMEOUT_MS] [-6] [-H]\n");
    exit(2);
}

static long parse_long(const char *text, long min, long max)
{
    char *end;
    errno = 0;
    long value = strtol(text, &end, 10);
    if (errno != 0 || end == text || *end != '\0' || value < min || value > max)
        usage_and_exit();
    return value;
}

static double parse_seconds(const char *text)
{
    char *end;
    errno = 0;
    double value = strtod(text, &end);
    if (errno != 0 || end == text || *end != '\0' || !(value > 0) ||
        value > 86400)
        usage_and_exit();
    return value;
}

static void parse_pid_list(char *text, struct options *opt)
{
    for (char *item = strtok(text, ","); item; item = strtok(NULL, ",")) {
        if (opt->watched_count == MAX_WATCHED)
            usage_and_exit();
        opt->watched[opt->watched_count++] =
            (pid_t)parse_long(item, 1, INT32_MAX);
    }
    if (opt->watched_count == 0)
        usage_and_exit();
}

static void parse_options(int argc, char **argv, struct options *opt)
{
    *opt = (struct options){
        .port = -1, .total_conns = 400, .concurrency = 1, .max_seconds = 30,
        .gap_us = 0, .timeout_ms = 5000, .ipv6 = false,
    };
    int c;
    while ((c = getopt(argc, argv, "p:n:c:d:g:P:T:6H")) != -1) {
        switch (c) {
        case 'p': opt->port = (int)parse_long(optarg, 1, 65535); break;
        case 'n': opt->total_conns = parse_long(optarg, 1, LONG_MAX); break;
        case 'c': opt->concurrency = (int)parse_long(optarg, 1, MAX_CONCURRENCY); break;
        case 'd': opt->max_seconds = parse_seconds(optarg); break;
        case 'g': opt->gap_us = parse_long(optarg, 0, 60000000); break;
        case 'P': parse_pid_list(optarg, opt); break;
        case 'T': opt->timeout_ms = (int)parse_long(optarg, 1, MAX_TIMEOUT_MS); break;
        case '6': opt->ipv6 = true; break;
        case 'H': opt->http = true; break;
        default: usage_and_exit();
        }
    }
    if (opt->port < 0 || optind != argc)
        usage_and_exit();
}

static void set_server_address(struct run *run)
{
    memset(&run->server, 0, sizeof run->server);
    if (run->opt.ipv6) {
        struct sockaddr_in6 *a = (struct sockaddr_in6 *)&run->server;
        a->sin6_family = AF_INET6;
        a->sin6_port = htons((uint16_t)run->opt.port);
        a->sin6_addr = in6addr_loopback;
        run->server_len = sizeof *a;
    } else {
        struct sockaddr_in *a = (struct sockaddr_in *)&run->server;
        a->sin_family = AF_INET;
        a->sin_port = htons((uint16_t)run->opt.port);
        a->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        run->server_len = sizeof *a;
    }
}

/* ---- one connection ---------------------------------------------------------- */

/* Waits for `events` on fd until the deadline; false on timeout or error. */
static bool wait_for(int fd, short events, struct timespec deadline,
                     const char **why)
{
    struct pollfd watch = { .fd = fd, .events = events };
    for (;;) {
        int left = ms_until(deadline);
        if (left == 0) {
            *why = TIMED_OUT;
            return false;
        }
        int ready = poll(&watch, 1, left);
        if (ready > 0)
            return true;  /* errors show up in the next socket call */
        if (ready == 0) {
            *why = TIMED_OUT;
            return false;
        }
        if (errno != EINTR) {
            *why = strerror(errno);
            return false;
        }
    }
}

static bool connect_before(int fd, const struct run *run,
                           struct timespec deadline, const char **why)
{
    if (connect(fd, (const struct sockaddr *)&run->server, run->server_len) == 0)
        return true;
    if (errno != EINPROGRESS) {
        *why = strerror(errno);
        return false;
    }
    if (!wait_for(fd, POLLOUT, deadline, why))
        return false;
    int err = 0;
    socklen_t len = sizeof err;
    if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0)
        err = errno;
    if (err != 0) {
        *why = strerror(err);
        return false;
    }
    return true;
}

#define HTTP_REQUEST "GET / HTTP/1.0\r\n\r\n"

/* Reads until EOF, or (stop_at_newline) until the first newline. */
static bool read_reply_before(int fd, struct timespec deadline, char *reply, size_t cap,
                              bool stop_at_newline, size_t *len, const char **why)
{
    *len = 0;
    while (*len < cap - 1 && !(stop_at_newline && memchr(reply, '\n', *len))) {
        if (!wait_for(fd, POLLIN, deadline, why))
            return false;
        ssize_t got = read(fd, reply + *len, cap - 1 - *len);
        if (got == 0)
            break;
        if (got < 0) {
            if (errno == EAGAIN || errno == EINTR)
                continue;
            *why = strerror(errno);
            return false;
        }
        *len += (size_t)got;
    }
    reply[*len] = '\0';
    return true;
}

/* A decimal pid at text, ended by a newline or the end of the text. */
static bool parse_pid(const char *text, pid_t *pid)
{
    char *end;
    errno = 0;
    long value = strtol(text, &end, 10);
    if (!isdigit((unsigned char)text[0]) || errno != 0 || value <= 0 ||
        value > INT32_MAX || (*end != '\n' && *end != '\0'))
        return false;
    *pid = (pid_t)value;
    return true;
}

/* The reply is a pid line, or with -H an HTTP 200 whose body is one. */
static bool read_pid_before(int fd, const struct run *run, struct timespec deadline,
                            pid_t *pid, const char **why)
{
    char reply[4096];
    const char *body;
    size_t len;

    if (run->opt.http) {
        if (!wait_for(fd, POLLOUT, deadline, why))
            return false;
        if (send(fd, HTTP_REQUEST, sizeof HTTP_REQUEST - 1, MSG_NOSIGNAL) !=
            (ssize_t)(sizeof HTTP_REQUEST - 1)) {
            *why = strerror(errno);
            return false;
        }
    }
    if (!read_reply_before(fd, deadline, reply, run->opt.http ? sizeof reply : 32,
                           !run->opt.http, &len, why))
        return false;
    if (!run->opt.http) {
        if (parse_pid(reply, pid))
            return true;
        *why = len ? "reply is not a pid line" : "closed without a reply";
        return false;
    }
    body = strstr(reply, "\r\n\r\n");
    if (strncmp(reply, "HTTP/1.", 7) != 0 || strncmp(reply + 8, " 200", 4) != 0 || !body) {
        *why = len ? "not an HTTP 200 reply" : "closed without a reply";
        return false;
    }
    if (parse_pid(body + 4, pid))
        return true;
    *why = "body is not a pid";
    return false;
}

/* One connection, from connect() to the reply; fills the sample, or
 * the reason and kind of the failure. */
static bool fetch_one_pid(const struct run *run, struct sample *out,
                          const char **why, enum fail_kind *kind)
{
    int fd = socket(run->server.ss_family,
                    SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        *why = strerror(errno);
        *kind = FAIL_CONNECT;
        return false;
    }
    struct timespec start = now_monotonic();
    struct timespec deadline = add_ns(start, (int64_t)run->opt.timeout_ms * 1000000);
    bool connected = connect_before(fd, run, deadline, why);
    bool ok = connected && read_pid_before(fd, run, deadline, &out->pid, why);
    out->latency_ns = (uint64_t)ns_between(start, now_monotonic());
    close(fd);
    if (!ok)
        *kind = *why == TIMED_OUT ? FAIL_TIMEOUT : connected ? FAIL_CLOSED : FAIL_CONNECT;
    return ok;
}

/* ---- client threads ------------------------------------------------------------ */

static void on_stop_signal(int sig)
{
    (void)sig;
    stop_requested = 1;
}

/* Without SA_RESTART a waiting client wakes, sees EINTR and retries its
 * own wait; the loop then starts no new connection. */
static void catch_stop_signals(void)
{
    struct sigaction sa = { .sa_handler = on_stop_signal };
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
}

static void record_sample(struct client *client, struct sample s)
{
    if (client->sample_count == client->sample_capacity) {
        size_t capacity = client->sample_capacity ? 2 * client->sample_capacity : 1024;
        struct sample *grown = realloc(client->samples, capacity * sizeof *grown);
        if (!grown) {
            perror("loadgen: realloc");
            exit(1);
        }
        client->samples = grown;
        client->sample_capacity = capacity;
    }
    client->samples[client->sample_count++] = s;
}

static void report_failure(struct run *run, long attempt, const char *why)
{
    pthread_mutex_lock(&run->failure_lock);
    if (run->failures_shown < MAX_FAILURES_SHOWN)
        fprintf(stderr, "loadgen: connection %ld failed: %s\n", attempt + 1, why);
    else if (run->failures_shown == MAX_FAILURES_SHOWN)
        fprintf(stderr, "loadgen: further failures not shown\n");
    run->failures_shown++;
    pthread_mutex_unlock(&run->failure_lock);
}

/* Sleeps the gap between two connections, but never past the deadline. */
static void sleep_gap(const struct run *run)
{
    int64_t gap_ns = (int64_t)run->opt.gap_us * 1000;
    int64_t left_ns = ns_between(now_monotonic(), run->deadline);
    if (gap_ns > left_ns)
        gap_ns = left_ns;
    if (gap_ns <= 0)
        return;
    struct timespec pause_for = {
        .tv_sec = gap_ns / 1000000000LL, .tv_nsec = gap_ns % 1000000000LL,
    };
    while (nanosleep(&pause_for, &pause_for) < 0 && errno == EINTR)
        ;
}

struct client_args {
    struct run *run;
    struct client *client;
};

static void *client_thread(void *arg)
{
    struct client_args *args = arg;
    struct run *run = args->run;
    struct client *client = args->client;

    while (!stop_requested && ns_between(now_monotonic(), run->deadline) > 0) {
        long attempt = atomic_fetch_add(&run->claimed, 1);
        if (attempt >= run->opt.total_conns)
            break;
        client->attempted++;
        struct sample s;
        const char *why = "unknown";
        enum fail_kind kind;
        if (fetch_one_pid(run, &s, &why, &kind))
            record_sample(client, s);
        else {
            client->failed++;
            client->failed_by[kind]++;
            report_failure(run, attempt, why);
        }
        if (run->opt.gap_us > 0)
            sleep_gap(run);
    }
    return NULL;
}

static void run_clients(struct run *run, struct client *clients)
{
    static struct client_args args[MAX_CONCURRENCY];
    for (int i = 0; i < run->opt.concurrency; i++) {
        args[i] = (struct client_args){ .run = run, .client = &clients[i] };
        int err = pthread_create(&clients[i].thread, NULL, client_thread, &args[i]);
        if (err != 0) {
            fprintf(stderr, "loadgen: pthread_create: %s\n", strerror(err));
            exit(1);
        }
    }
    for (int i = 0; i < run->opt.concurrency; i++)
        pthread_join(clients[i].thread, NULL);
}

/* ---- /proc sampling --------------------------------------------------------------- */

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

static void sample_watched(const struct options *opt, struct proc_sample *out)
{
    for (size_t i = 0; i < opt->watched_count; i++)
        out[i] = sample_process(opt->watched[i]);
}

/* ---- results ------------------------------------------------------------------------- */

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

static struct pid_count *find_pid(struct pid_count *counts, size_t n, pid_t pid)
{
    for (size_t i = 0; i < n; i++)
        if (counts[i].pid == pid)
            return &counts[i];
    return NULL;
}

/*
 * Per-pid accept counts: every watched pid (even with 0 accepts), plus
 * every pid that answered without being watched (a respawned worker).
 * Returned sorted by pid.
 */
static struct pid_count *count_per_pid(const struct options *opt,
                                       const struct client *clients,
                                       size_t *count_out)
{
    size_t capacity = opt->watched_count;
    for (int c = 0; c < opt->concurrency; c++)
        capacity += clients[c].sample_count;
    struct pid_count *counts = calloc(capacity ? capacity : 1, sizeof *counts);
    if (!counts) {
        perror("loadgen: calloc");
        exit(1);
    }
    size_t n = 0;
    for (size_t i = 0; i < opt->watched_count; i++)
        if (!find_pid(counts, n, opt->watched[i]))
            counts[n++] = (struct pid_count){ opt->watched[i], 0 };

    /* Sort as we go so lookups of answering pids stay cheap. */
    qsort(counts, n, sizeof *counts, compare_pid_count);
    for (int c = 0; c < opt->concurrency; c++) {
        for (size_t s = 0; s < clients[c].sample_count; s++) {
            struct pid_count key = { clients[c].samples[s].pid, 0 };
            struct pid_count *hit = bsearch(&key, counts, n, sizeof *counts,
                                            compare_pid_count);
            if (!hit) {
                counts[n++] = key;
                qsort(counts, n, sizeof *counts, compare_pid_count);
                hit = bsearch(&key, counts, n, sizeof *counts, compare_pid_count);
            }
            hit->accepts++;
        }
    }
    *count_out = n;
    return counts;
}

/* Jain's index (Σx)² / (n·Σx²): 1 = perfectly even, 1/n = one takes all. */
static double jain_index(const struct pid_count *counts, size_t n)
{
    double sum = 0, sum_squares = 0;
    for (size_t i = 0; i < n; i++) {
        sum += (double)counts[i].accepts;
        sum_squares += (double)counts[i].accepts * (double)counts[i].accepts;
    }
    if (n == 0 || sum_squares == 0)
        return 0;
    return sum * sum / ((double)n * sum_squares);
}

/*
 * Sums the watched processes' deltas.  A process missing at either end
 * is reported on stderr and left out: its counters are unknowable.
 */
static void watched_deltas(const struct options *opt,
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

static void print_results(const struct options *opt, const struct client *clients,
                          double seconds, const struct proc_sample *before,
                          const struct proc_sample *after)
{
    long attempted = 0, failed = 0, failed_by[FAIL_KINDS] = { 0 };
    size_t ok = 0;
    for (int c = 0; c < opt->concurrency; c++) {
        attempted += clients[c].attempted;
        failed += clients[c].failed;
        ok += clients[c].sample_count;
        for (int kind = 0; kind < FAIL_KINDS; kind++)
            failed_by[kind] += clients[c].failed_by[kind];
    }

    uint64_t *latencies = malloc((ok ? ok : 1) * sizeof *latencies);
    if (!latencies) {
        perror("loadgen: malloc");
        exit(1);
    }
    size_t k = 0;
    for (int c = 0; c < opt->concurrency; c++)
        for (size_t s = 0; s < clients[c].sample_count; s++)
            latencies[k++] = clients[c].samples[s].latency_ns;
    qsort(latencies, ok, sizeof *latencies, compare_u64);

    size_t pid_count;
    struct pid_count *counts = count_per_pid(opt, clients, &pid_count);
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
    printf("seconds=%.3f\n", seconds);
    printf("rps=%.1f\n", seconds > 0 ? (double)ok / seconds : 0.0);
    printf("p50_us=%llu\n", (unsigned long long)(percentile(latencies, ok, 0.50) / 1000));
    printf("p99_us=%llu\n", (unsigned long long)(percentile(latencies, ok, 0.99) / 1000));
    printf("max_us=%llu\n", (unsigned long long)(ok ? latencies[ok - 1] / 1000 : 0));
    printf("workers_seen=%zu\n", seen);
    printf("jain=%.4f\n", jain_index(counts, pid_count));
    printf("max_share=%.4f\n", ok ? (double)most / (double)ok : 0.0);
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

int main(int argc, char **argv)
{
    static struct run run = { .failure_lock = PTHREAD_MUTEX_INITIALIZER };
    parse_options(argc, argv, &run.opt);
    set_server_address(&run);

    static struct client clients[MAX_CONCURRENCY];
    static struct proc_sample before[MAX_WATCHED], after[MAX_WATCHED];

    catch_stop_signals();
    sample_watched(&run.opt, before);
    struct timespec start = now_monotonic();
    run.deadline = add_ns(start, (int64_t)(run.opt.max_seconds * 1e9));
    run_clients(&run, clients);
    double seconds = (double)ns_between(start, now_monotonic()) / 1e9;

    if (run.opt.watched_count > 0) {
        struct timespec settle = { .tv_nsec = SETTLE_MS * 1000000L };
        nanosleep(&settle, NULL);
        sample_watched(&run.opt, after);
    }
    print_results(&run.opt, clients, seconds, before, after);

    long failed = 0;
    for (int c = 0; c < run.opt.concurrency; c++)
        failed += clients[c].failed;
    return failed ? 1 : 0;
}

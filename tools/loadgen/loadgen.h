/*
 * loadgen.h - what the parts of thunder-loadgen share.  main.c describes
 * the command line and the output; the parts are:
 *
 *   conn.c      one connection, as a state machine (connect, request, reply)
 *   clients.c   sequential and concurrent workloads (client threads)
 *   burst.c     the burst workload (rounds of K connections opened together)
 *   procstat.c  the watched workers' context switches and CPU time (/proc)
 *   results.c   percentiles, per-worker counts, Jain, the key=value output
 */
#pragma once

#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <time.h>

#define MAX_CONCURRENCY 1024
#define MAX_WATCHED 4096
#define MAX_BURST 4096
#define MAX_ROUNDS 100000
#define MAX_TIMEOUT_MS 3600000
#define MAX_FAILURES_SHOWN 10
#define REPLY_CAP 4096          /* bytes of a reply kept for parsing */
#define MAX_REQUEST 4096

/* What is sent and what ends a reply; see main.c. */
enum protocol { PROTO_LINE, PROTO_HTTP, PROTO_SEND, PROTO_CONNECT };

struct options {
    int port;
    long total_conns;
    int concurrency;
    double max_seconds;
    long gap_us;
    int timeout_ms;
    bool ipv6;
    enum protocol protocol;
    const char *http_path;
    const char *send_data;
    int burst;                  /* connections per round; 0 = no bursts */
    int rounds;
    int idle_ms;
    int service_ms;             /* the handler's sleep, for the round limit */
    int workers;                /* N, for the round limit ceil(K/N) */
    pid_t watched[MAX_WATCHED];
    size_t watched_count;
};

/* How a connection failed; see the output description in main.c. */
enum fail_kind { FAIL_CONNECT, FAIL_TIMEOUT, FAIL_CLOSED, FAIL_STATUS, FAIL_KINDS };

/* What every connection is made of, fixed before the first one. */
struct target {
    struct sockaddr_storage server;
    socklen_t server_len;
    enum protocol protocol;
    char request[MAX_REQUEST];
    size_t request_len;
    int timeout_ms;
};

enum conn_state { CONN_CONNECTING, CONN_SENDING, CONN_READING, CONN_DONE };

/* One connection in flight, and its outcome once state is CONN_DONE. */
struct conn {
    int fd;
    enum conn_state state;
    struct timespec start, deadline, last_data;
    size_t sent, len, total;
    /* outcome */
    bool ok;
    enum fail_kind kind;
    const char *why;
    pid_t pid;                  /* the worker the reply names; 0 = none */
    int http_status;            /* 0 when not HTTP or not parsed */
    uint64_t latency_ns;
    char reply[REPLY_CAP];      /* last: conn_start clears what is above */
};

/* One successful connection. */
struct sample {
    pid_t pid;                  /* 0 = the reply named no worker */
    uint64_t latency_ns;
};

/* What one client (a thread, or the burst loop) did. */
struct client {
    pthread_t thread;
    struct sample *samples;
    size_t sample_count, sample_capacity;
    long attempted, failed;
    long failed_by[FAIL_KINDS];
    long http_status[600];      /* replies by status code (HTTP only) */
};

/* Shared by all clients; only `claimed` and the failure count change. */
struct run {
    struct options opt;
    struct target target;
    struct timespec deadline;
    atomic_long claimed;
    pthread_mutex_t failure_lock;   /* keeps the failure lines in order */
    int failures_shown;
};

/* Per round of a burst run. */
struct round_result {
    uint64_t completion_ns;     /* first connect to last reply */
    double max_share;           /* largest share of one worker in the round */
    int answered, attributed;
};

/* Watched-process counters, read from /proc. */
struct proc_sample {
    bool present;
    unsigned long long voluntary_switches;
    unsigned long long cpu_ns;
};

/* Set by SIGINT/SIGTERM: start no new connection (clients.c). */
extern volatile sig_atomic_t stop_requested;

/* conn.c */
struct timespec now_monotonic(void);
int64_t ns_between(struct timespec from, struct timespec to);
struct timespec add_ns(struct timespec t, int64_t ns);
void target_init(struct target *t, const struct options *opt);
void conn_start(struct conn *c, const struct target *t);
short conn_events(const struct conn *c);
int conn_poll_ms(const struct conn *c, const struct target *t);
void conn_advance(struct conn *c, const struct target *t, short revents);
bool run_one_conn(const struct target *t, struct conn *c);

/* clients.c */
void catch_stop_signals(void);
void record_outcome(struct run *run, struct client *client, const struct conn *c,
                    long attempt);
void run_clients(struct run *run, struct client *clients);

/* burst.c */
struct round_result *run_bursts(struct run *run, struct client *client);

/* procstat.c */
void sample_watched(const struct options *opt, struct proc_sample *out);
void watched_deltas(const struct options *opt, const struct proc_sample *before,
                    const struct proc_sample *after, unsigned long long *wakeups,
                    unsigned long long *cpu_ns);

/* results.c */
void print_results(const struct options *opt, const struct client *clients,
                   int client_count, double seconds,
                   const struct proc_sample *before, const struct proc_sample *after);
void print_rounds(const struct options *opt, const struct round_result *rounds,
                  int count);
double share_of_largest(const pid_t *pids, int n);

/*
 * clients.c - the sequential and concurrent workloads: CONCURRENCY client
 * threads share one counter of connections to make; each makes them one
 * at a time, GAP_US apart, until the count or the time is reached or a
 * stop signal arrives.
 */
#define _GNU_SOURCE
#include "loadgen.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

volatile sig_atomic_t stop_requested;

static void on_stop_signal(int sig)
{
    (void)sig;
    stop_requested = 1;
}

/* Without SA_RESTART a waiting client wakes, sees EINTR and retries its
 * own wait; the loop then starts no new connection. */
void catch_stop_signals(void)
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

/* Counts a finished connection (attempt: its number, from 0, for messages). */
void record_outcome(struct run *run, struct client *client, const struct conn *c,
                    long attempt)
{
    client->attempted++;
    if (c->http_status > 0)
        client->http_status[c->http_status]++;
    if (c->ok) {
        record_sample(client, (struct sample){ c->pid, c->latency_ns });
        return;
    }
    client->failed++;
    client->failed_by[c->kind]++;
    if (c->kind == FAIL_STATUS && c->http_status > 0) {
        char why[64];
        snprintf(why, sizeof why, "HTTP status %d", c->http_status);
        report_failure(run, attempt, why);
    } else {
        report_failure(run, attempt, c->why ? c->why : "unknown");
    }
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
    while (nanosleep(&pause_for, &pause_for) < 0 && errno == EINTR && !stop_requested)
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
    struct conn *c = malloc(sizeof *c);
    if (!c) {
        perror("loadgen: malloc");
        exit(1);
    }
    while (!stop_requested && ns_between(now_monotonic(), run->deadline) > 0) {
        long attempt = atomic_fetch_add(&run->claimed, 1);
        if (attempt >= run->opt.total_conns)
            break;
        run_one_conn(&run->target, c);
        record_outcome(run, client, c, attempt);
        if (run->opt.gap_us > 0)
            sleep_gap(run);
    }
    free(c);
    return NULL;
}

void run_clients(struct run *run, struct client *clients)
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

/*
 * conn.c - one connection as a small state machine: connect (non-blocking),
 * send the request, read the reply, judge it.  The sequential and
 * concurrent clients drive one at a time (run_one_conn); the burst loop
 * drives a whole round of them from one poll() set.
 *
 * What ends a reply, by protocol:
 *   line     the first newline, or the server closing after some bytes
 *   http     the server closing (Connection: close); status 2xx/3xx is ok
 *   send     the server closing, or SEND_IDLE_MS without new bytes once
 *            some came (servers that keep the connection open)
 *   connect  the connection being established (nothing is read)
 * A reply whose text (line) or body (http) is a decimal pid names the
 * worker that accepted the connection (the examples, bench/peers).
 */
#define _GNU_SOURCE
#include "loadgen.h"

#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define NS_PER_SEC 1000000000LL
#define NS_PER_MS 1000000LL
#define SEND_IDLE_MS 200

static const char TIMED_OUT[] = "timed out";

/* ---- time ------------------------------------------------------------- */

struct timespec now_monotonic(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t;
}

int64_t ns_between(struct timespec from, struct timespec to)
{
    return (int64_t)(to.tv_sec - from.tv_sec) * NS_PER_SEC + (to.tv_nsec - from.tv_nsec);
}

struct timespec add_ns(struct timespec t, int64_t ns)
{
    int64_t total = t.tv_nsec + ns;
    t.tv_sec += total / NS_PER_SEC;
    t.tv_nsec = total % NS_PER_SEC;
    if (t.tv_nsec < 0) {
        t.tv_sec -= 1;
        t.tv_nsec += NS_PER_SEC;
    }
    return t;
}

/* Milliseconds left until `deadline`, rounded up so poll() never spins. */
static int ms_until(struct timespec deadline, struct timespec now)
{
    int64_t ns = ns_between(now, deadline);
    return ns <= 0 ? 0 : (int)((ns + NS_PER_MS - 1) / NS_PER_MS);
}

/* ---- the target --------------------------------------------------------- */

static void set_address(struct target *t, const struct options *opt)
{
    memset(&t->server, 0, sizeof t->server);
    if (opt->ipv6) {
        struct sockaddr_in6 *a = (struct sockaddr_in6 *)&t->server;
        a->sin6_family = AF_INET6;
        a->sin6_port = htons((uint16_t)opt->port);
        a->sin6_addr = in6addr_loopback;
        t->server_len = sizeof *a;
    } else {
        struct sockaddr_in *a = (struct sockaddr_in *)&t->server;
        a->sin_family = AF_INET;
        a->sin_port = htons((uint16_t)opt->port);
        a->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        t->server_len = sizeof *a;
    }
}

/* The options are checked by main.c: the request always fits. */
void target_init(struct target *t, const struct options *opt)
{
    set_address(t, opt);
    t->protocol = opt->protocol;
    t->timeout_ms = opt->timeout_ms;
    int len = 0;
    if (opt->protocol == PROTO_HTTP)
        len = snprintf(t->request, sizeof t->request,
                       "GET %s HTTP/1.0\r\nHost: %s:%d\r\nConnection: close\r\n\r\n",
                       opt->http_path, opt->ipv6 ? "[::1]" : "127.0.0.1", opt->port);
    else if (opt->protocol == PROTO_SEND)
        len = snprintf(t->request, sizeof t->request, "%s", opt->send_data);
    t->request_len = len > 0 ? (size_t)len : 0;
}

/* ---- judging a reply ---------------------------------------------------- */

/* A decimal pid at text, ended by a newline (or \r\n) or the end. */
static pid_t pid_at(const char *text)
{
    char *end;
    errno = 0;
    long value = strtol(text, &end, 10);
    if (!isdigit((unsigned char)text[0]) || errno != 0 || value <= 0 || value > INT32_MAX)
        return 0;
    if (*end == '\r')
        end++;
    return *end == '\n' || *end == '\0' ? (pid_t)value : 0;
}

static void finish(struct conn *c, bool ok, enum fail_kind kind, const char *why)
{
    c->ok = ok;
    c->kind = kind;
    c->why = why;
    c->state = CONN_DONE;
    c->latency_ns = (uint64_t)ns_between(c->start, now_monotonic());
    close(c->fd);
    c->fd = -1;
}

/* The whole reply is in (as much as REPLY_CAP keeps): is it a good one? */
static void judge_reply(struct conn *c, enum protocol protocol)
{
    c->reply[c->len] = '\0';
    if (c->total == 0) {
        finish(c, false, FAIL_CLOSED, "closed without a reply");
        return;
    }
    if (protocol != PROTO_HTTP) {
        c->pid = protocol == PROTO_LINE ? pid_at(c->reply) : 0;
        finish(c, true, FAIL_CONNECT, NULL);
        return;
    }
    int status = 0;
    if (sscanf(c->reply, "HTTP/1.%*1[01] %3d", &status) != 1 || status < 100 || status > 599) {
        finish(c, false, FAIL_STATUS, "not an HTTP reply");
        return;
    }
    c->http_status = status;
    if (status < 200 || status > 399) {
        finish(c, false, FAIL_STATUS, "HTTP status not 2xx/3xx");
        return;
    }
    const char *body = strstr(c->reply, "\r\n\r\n");
    c->pid = body ? pid_at(body + 4) : 0;
    finish(c, true, FAIL_CONNECT, NULL);
}

/* ---- the state machine ---------------------------------------------------- */

void conn_start(struct conn *c, const struct target *t)
{
    memset(c, 0, offsetof(struct conn, reply));
    c->reply[0] = '\0';
    c->start = now_monotonic();
    c->deadline = add_ns(c->start, (int64_t)t->timeout_ms * NS_PER_MS);
    c->state = CONN_CONNECTING;
    c->fd = socket(t->server.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (c->fd < 0) {
        c->state = CONN_DONE;
        c->kind = FAIL_CONNECT;
        c->why = strerror(errno);
        return;
    }
    if (connect(c->fd, (const struct sockaddr *)&t->server, t->server_len) < 0 &&
        errno != EINPROGRESS)
        finish(c, false, FAIL_CONNECT, strerror(errno));
}

short conn_events(const struct conn *c)
{
    switch (c->state) {
    case CONN_CONNECTING:
    case CONN_SENDING: return POLLOUT;
    case CONN_READING: return POLLIN;
    default: return 0;
    }
}

/* How long poll() may wait for this connection; ends it when time is up. */
int conn_poll_ms(const struct conn *c, const struct target *t)
{
    struct timespec now = now_monotonic();
    int left = ms_until(c->deadline, now);
    if (t->protocol == PROTO_SEND && c->state == CONN_READING && c->total > 0) {
        int idle = ms_until(add_ns(c->last_data, SEND_IDLE_MS * NS_PER_MS), now);
        if (idle < left)
            left = idle;
    }
    return left;
}

static void connected(struct conn *c, const struct target *t)
{
    int err = 0;
    socklen_t len = sizeof err;
    if (getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0)
        err = errno;
    if (err != 0)
        finish(c, false, FAIL_CONNECT, strerror(err));
    else if (t->protocol == PROTO_CONNECT)
        finish(c, true, FAIL_CONNECT, NULL);
    else
        c->state = t->request_len > 0 ? CONN_SENDING : CONN_READING;
}

static void send_some(struct conn *c, const struct target *t)
{
    ssize_t n = send(c->fd, t->request + c->sent, t->request_len - c->sent, MSG_NOSIGNAL);
    if (n < 0) {
        if (errno != EAGAIN && errno != EINTR)
            finish(c, false, FAIL_CLOSED, strerror(errno));
        return;
    }
    c->sent += (size_t)n;
    if (c->sent == t->request_len)
        c->state = CONN_READING;
}

static void read_some(struct conn *c, const struct target *t)
{
    char discard[4096];
    bool keep = c->len < REPLY_CAP - 1;
    char *into = keep ? c->reply + c->len : discard;
    size_t room = keep ? REPLY_CAP - 1 - c->len : sizeof discard;
    ssize_t n = read(c->fd, into, room);
    if (n < 0) {
        if (errno == EAGAIN || errno == EINTR)
            return;
        if (c->total > 0 && t->protocol != PROTO_HTTP)
            judge_reply(c, t->protocol);   /* reset after a reply: it is in */
        else
            finish(c, false, FAIL_CLOSED, strerror(errno));
        return;
    }
    if (n == 0) {
        judge_reply(c, t->protocol);
        return;
    }
    if (keep)
        c->len += (size_t)n;
    c->total += (size_t)n;
    c->last_data = now_monotonic();
    if (t->protocol == PROTO_LINE && (memchr(c->reply, '\n', c->len) || !keep))
        judge_reply(c, t->protocol);
}

/* One step after poll(): revents for this fd, 0 if poll() timed out. */
void conn_advance(struct conn *c, const struct target *t, short revents)
{
    if (c->state == CONN_DONE)
        return;
    if (revents == 0) {
        if (conn_poll_ms(c, t) > 0)
            return;
        if (t->protocol == PROTO_SEND && c->total > 0)
            judge_reply(c, t->protocol);   /* quiet long enough: done */
        else
            finish(c, false, FAIL_TIMEOUT, TIMED_OUT);
        return;
    }
    switch (c->state) {
    case CONN_CONNECTING: connected(c, t); break;
    case CONN_SENDING: send_some(c, t); break;
    case CONN_READING: read_some(c, t); break;
    default: break;
    }
}

/* Drives one connection to its end; true if it succeeded. */
bool run_one_conn(const struct target *t, struct conn *c)
{
    conn_start(c, t);
    while (c->state != CONN_DONE) {
        struct pollfd p = { .fd = c->fd, .events = conn_events(c) };
        int ready = poll(&p, 1, conn_poll_ms(c, t));
        if (ready < 0 && errno != EINTR) {
            finish(c, false, FAIL_CLOSED, strerror(errno));
            break;
        }
        conn_advance(c, t, ready > 0 ? (p.revents ? p.revents : POLLIN) : 0);
    }
    return c->ok;
}

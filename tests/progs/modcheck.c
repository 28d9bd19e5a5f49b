/*
 * modcheck - a program's epoll_ctl calls on a listener must behave exactly
 * as without the shim, even when the shim registered the listener with
 * EPOLLEXCLUSIVE (where the kernel itself refuses EPOLL_CTL_MOD) and moves
 * it to the tail after each accept.
 *
 *   modcheck [--expect-exclusive | --expect-plain]
 *
 * Prints TAP ("ok N - what" / "not ok N - what"), exit 1 if anything
 * failed.  The flag the kernel really has on the entry is read back from
 * /proc/self/fdinfo/EPFD; with an --expect option it is checked after
 * every step that re-registers the listener.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

enum expect { EXPECT_ANY, EXPECT_EXCLUSIVE, EXPECT_PLAIN };

static int checks, failures;
static enum expect expect_flag = EXPECT_ANY;
static int ep, listener;
static struct sockaddr_in addr;

static void check(bool ok, const char *what, const char *detail)
{
    checks++;
    if (!ok)
        failures++;
    printf("%s %d - %s", ok ? "ok" : "not ok", checks, what);
    if (!ok && detail)
        printf(" (%s)", detail);
    printf("\n");
}

static int open_listener(void)
{
    socklen_t len = sizeof(addr);
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);

    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    addr.sin_port = 0;
    if (fd < 0 || bind(fd, (struct sockaddr *)&addr, sizeof(addr)) < 0 || listen(fd, 64) < 0 ||
        getsockname(fd, (struct sockaddr *)&addr, &len) < 0) {
        perror("modcheck: listener");
        exit(2);
    }
    return fd;
}

/* A loopback connect completes into the backlog at once: one pending connection. */
static int connect_client(void)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

    if (fd < 0 || connect(fd, (struct sockaddr *)&addr, sizeof(addr)) < 0) {
        perror("modcheck: connect");
        exit(2);
    }
    return fd;
}

static int ctl(int op, uint32_t events, uint64_t data)
{
    struct epoll_event ev = { .events = events, .data.u64 = data };

    return epoll_ctl(ep, op, listener, op == EPOLL_CTL_DEL ? NULL : &ev);
}

/* Wait up to ms; returns the number of events, *data (and *events, unless
   NULL) from the first. */
static int wait_one(int ms, uint64_t *data, uint32_t *events)
{
    struct epoll_event ev[4];
    int n = epoll_wait(ep, ev, 4, ms);

    if (n > 0) {
        *data = ev[0].data.u64;
        if (events)
            *events = ev[0].events;
    }
    return n;
}

/* The listener's entry as the kernel has it: events, or -1 when absent. */
static long long entry_events(void)
{
    char path[64], line[256];
    long long events = -1;
    FILE *f;

    snprintf(path, sizeof(path), "/proc/self/fdinfo/%d", ep);
    if ((f = fopen(path, "r")) == NULL)
        return -1;
    while (fgets(line, sizeof(line), f)) {
        int tfd;
        unsigned ev;
        if (sscanf(line, "tfd: %d events: %x", &tfd, &ev) == 2 && tfd == listener)
            events = ev;
    }
    fclose(f);
    return events;
}

static void check_flag(const char *when)
{
    long long events = entry_events();
    bool exclusive = events >= 0 && (events & EPOLLEXCLUSIVE);
    char what[128], detail[64];

    if (expect_flag == EXPECT_ANY)
        return;
    snprintf(what, sizeof(what), "entry is %s %s",
             expect_flag == EXPECT_EXCLUSIVE ? "EPOLLEXCLUSIVE" : "plain", when);
    snprintf(detail, sizeof(detail), "events 0x%llx", events);
    check(exclusive == (expect_flag == EXPECT_EXCLUSIVE), what, detail);
}

static void expect_event(uint64_t want, const char *what)
{
    uint64_t data = 0;
    int n = wait_one(1000, &data, NULL);
    char detail[64];

    snprintf(detail, sizeof(detail), "%d events, data %llu, want data %llu", n,
             (unsigned long long)data, (unsigned long long)want);
    check(n == 1 && data == want, what, detail);
}

static void expect_quiet(const char *what)
{
    uint64_t data = 0;
    int n = wait_one(100, &data, NULL);
    char detail[64];

    snprintf(detail, sizeof(detail), "%d events, data %llu", n, (unsigned long long)data);
    check(n == 0, what, detail);
}

static void expect_ctl(int op, uint32_t events, uint64_t data, int want_errno, const char *what)
{
    char detail[96];
    int r;

    errno = 4242;                       /* success must leave errno alone */
    r = ctl(op, events, data);
    snprintf(detail, sizeof(detail), "returned %d, errno %d (%s)", r, errno,
             errno == 4242 ? "untouched" : strerror(errno));
    if (want_errno == 0)
        check(r == 0 && errno == 4242, what, detail);
    else
        check(r == -1 && errno == want_errno, what, detail);
}

static void steps_mod(void)
{
    expect_ctl(EPOLL_CTL_ADD, EPOLLIN, 1, 0, "ADD EPOLLIN data=1");
    check_flag("after ADD");
    connect_client();
    expect_event(1, "pending connection reported with data 1");
    expect_ctl(EPOLL_CTL_MOD, EPOLLIN, 2, 0, "MOD EPOLLIN data=2 succeeds");
    check_flag("after MOD");
    expect_event(2, "reported with the new data 2");
    expect_ctl(EPOLL_CTL_MOD, EPOLLOUT, 3, 0, "MOD to EPOLLOUT only succeeds");
    expect_quiet("a listener is never writable: no event");
    expect_ctl(EPOLL_CTL_MOD, EPOLLIN, 4, 0, "MOD back to EPOLLIN data=4");
    expect_event(4, "reported again with data 4");
}

static void steps_accept(void)
{
    int c = accept4(listener, NULL, NULL, SOCK_CLOEXEC);

    check(c >= 0, "accept the pending connection", strerror(errno));
    if (c >= 0)
        close(c);
    expect_quiet("nothing pending after the accept");
    check_flag("after the accept (rotation keeps it)");
    connect_client();
    expect_event(4, "next connection still reported with data 4");
}

static void steps_oneshot_and_errors(void)
{
    expect_ctl(EPOLL_CTL_MOD, EPOLLIN | EPOLLONESHOT, 5, 0, "MOD EPOLLIN|EPOLLONESHOT data=5");
    expect_event(5, "one-shot reported once with data 5");
    expect_quiet("one-shot: disarmed afterwards");
    expect_ctl(EPOLL_CTL_MOD, EPOLLIN, 6, 0, "MOD re-arms with data 6");
    check_flag("after re-arming without EPOLLONESHOT");
    expect_event(6, "reported with data 6");
    expect_ctl(EPOLL_CTL_DEL, 0, 0, 0, "DEL");
    expect_quiet("deleted: no event");
    expect_ctl(EPOLL_CTL_DEL, 0, 0, ENOENT, "second DEL fails with ENOENT");
    expect_ctl(EPOLL_CTL_MOD, EPOLLIN, 7, ENOENT, "MOD after DEL fails with ENOENT");
    expect_ctl(EPOLL_CTL_ADD, EPOLLIN, 8, 0, "ADD again data=8");
    check_flag("after the second ADD");
    expect_ctl(EPOLL_CTL_ADD, EPOLLIN, 9, EEXIST, "second ADD fails with EEXIST");
    expect_event(8, "reported with data 8");
    expect_ctl(EPOLL_CTL_ADD | 0x100, EPOLLIN, 9, EINVAL, "unknown op fails with EINVAL");
}

/* The one event is the listener's, EPOLLIN alone (a listener never has
   EPOLLRDHUP or EPOLLPRI to report, shim or not). */
static void expect_in_only(uint64_t want, const char *what)
{
    uint64_t data = 0;
    uint32_t events = 0;
    int n = wait_one(1000, &data, &events);
    char detail[96];

    snprintf(detail, sizeof(detail), "%d events, data %llu, events 0x%x; want data %llu, 0x%x", n,
             (unsigned long long)data, events, (unsigned long long)want, (unsigned)EPOLLIN);
    check(n == 1 && data == want && events == EPOLLIN, what, detail);
}

/* Events the kernel refuses with EPOLLEXCLUSIVE but a listener never
   reports: nginx adds its listener with EPOLLRDHUP when accept_mutex is
   on.  The shim's entry leaves them out and stays exclusive. */
static void steps_never_reported_events(void)
{
    expect_ctl(EPOLL_CTL_DEL, 0, 0, 0, "DEL before the EPOLLRDHUP steps");
    expect_ctl(EPOLL_CTL_ADD, EPOLLIN | EPOLLRDHUP, 10, 0, "ADD EPOLLIN|EPOLLRDHUP data=10");
    check_flag("after ADD with EPOLLRDHUP");
    expect_in_only(10, "pending connection reported with data 10, EPOLLIN");
    expect_ctl(EPOLL_CTL_MOD, EPOLLIN | EPOLLPRI, 11, 0, "MOD EPOLLIN|EPOLLPRI data=11");
    check_flag("after MOD with EPOLLPRI");
    expect_in_only(11, "reported with data 11, EPOLLIN");
    expect_ctl(EPOLL_CTL_MOD, EPOLLIN | EPOLLRDHUP | EPOLLONESHOT, 12, 0,
               "MOD EPOLLIN|EPOLLRDHUP|EPOLLONESHOT data=12");
    expect_in_only(12, "one-shot reported once with data 12, EPOLLIN");
    expect_quiet("one-shot with EPOLLRDHUP: disarmed afterwards");
    expect_ctl(EPOLL_CTL_MOD, EPOLLIN | EPOLLRDHUP, 13, 0, "MOD re-arms EPOLLIN|EPOLLRDHUP data=13");
    check_flag("after re-arming with EPOLLRDHUP");
    expect_in_only(13, "reported with data 13, EPOLLIN");
}

int main(int argc, char **argv)
{
    if (argc == 2 && strcmp(argv[1], "--expect-exclusive") == 0)
        expect_flag = EXPECT_EXCLUSIVE;
    else if (argc == 2 && strcmp(argv[1], "--expect-plain") == 0)
        expect_flag = EXPECT_PLAIN;
    else if (argc != 1) {
        fprintf(stderr, "usage: modcheck [--expect-exclusive | --expect-plain]\n");
        return 2;
    }
    listener = open_listener();
    ep = epoll_create1(EPOLL_CLOEXEC);
    if (ep < 0) {
        perror("modcheck: epoll_create1");
        return 2;
    }
    steps_mod();
    steps_accept();
    steps_oneshot_and_errors();
    steps_never_reported_events();
    printf("1..%d\n", checks);
    return failures ? 1 : 0;
}

/*
 * pollwait - the timing and signal contract of wait calls on a listener
 * while several processes contend for it (as under THUNDER_MODE=lock,
 * where the time may go into the accept lock instead of the real wait).
 *
 *   pollwait timeout CALL PROCS TIMEOUT_MS ROUNDS
 *       PROCS processes each call CALL ROUNDS times on an idle listener
 *       with TIMEOUT_MS; every call must return 0, leaving errno untouched.
 *   pollwait eintr CALL PROCS DELAY_MS
 *       PROCS processes each wait forever; SIGALRM (handler without
 *       SA_RESTART) arrives in all of them after DELAY_MS, as a master's
 *       SIGTERM reaches all its workers at once; every call must return
 *       -1 EINTR.
 *   pollwait eintr-queued CALL PROCS DELAY_MS
 *       the first process starts alone and waits 3 x DELAY_MS without a
 *       signal (under the lock it is the holder, in the real wait); the
 *       others start 100 ms later (queued for the lock) and get SIGALRM
 *       after DELAY_MS: theirs must return -1 EINTR, the first one 0.
 *
 * CALL is poll, ppoll, select, pselect or epoll (one instance per process,
 * created after fork).  The listener is opened before the fork, like a
 * pre-fork server's.  Output: one line per process, then
 *   calls=N bad=N errno_bad=N min_ms=X max_ms=Y
 * where bad counts calls with the wrong result and errno_bad successful
 * calls that changed errno.  Exit 0 if both are 0.
 * Time bounds are left to the caller.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/select.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define MAX_PROCS 64
#define ERRNO_MARK 4242

struct result {
    int calls, bad, errno_bad;
    double min_ms, max_ms;
};

static const char *call_name;
static int listener, ep = -1;
static volatile sig_atomic_t alarms;

static double now_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

static void on_alarm(int sig)
{
    (void)sig;
    alarms++;
}

static int open_listener(void)
{
    struct sockaddr_in addr = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);

    if (fd < 0 || bind(fd, (struct sockaddr *)&addr, sizeof(addr)) < 0 || listen(fd, 64) < 0) {
        perror("pollwait: listener");
        exit(2);
    }
    return fd;
}

/* One wait on the listener; timeout_ms < 0 = forever.  mask: for ppoll/pselect. */
static int wait_once(int timeout_ms, const sigset_t *mask)
{
    struct timespec ts = { .tv_sec = timeout_ms / 1000, .tv_nsec = (timeout_ms % 1000) * 1000000L };
    struct timeval tv = { .tv_sec = timeout_ms / 1000, .tv_usec = (timeout_ms % 1000) * 1000L };
    struct pollfd p = { .fd = listener, .events = POLLIN };
    struct epoll_event ev;
    fd_set set;

    FD_ZERO(&set);
    FD_SET(listener, &set);
    if (strcmp(call_name, "poll") == 0)
        return poll(&p, 1, timeout_ms);
    if (strcmp(call_name, "ppoll") == 0)
        return ppoll(&p, 1, timeout_ms < 0 ? NULL : &ts, mask);
    if (strcmp(call_name, "select") == 0)
        return select(listener + 1, &set, NULL, NULL, timeout_ms < 0 ? NULL : &tv);
    if (strcmp(call_name, "pselect") == 0)
        return pselect(listener + 1, &set, NULL, NULL, timeout_ms < 0 ? NULL : &ts, mask);
    return epoll_wait(ep, &ev, 1, timeout_ms);
}

static void prepare_call(void)
{
    struct epoll_event ev = { .events = EPOLLIN, .data.fd = listener };

    if (strcmp(call_name, "epoll") != 0)
        return;
    ep = epoll_create1(EPOLL_CLOEXEC);
    if (ep < 0 || epoll_ctl(ep, EPOLL_CTL_ADD, listener, &ev) < 0) {
        perror("pollwait: epoll");
        exit(2);
    }
}

static void note(struct result *r, double ms, bool ok)
{
    if (r->calls == 0 || ms < r->min_ms)
        r->min_ms = ms;
    if (ms > r->max_ms)
        r->max_ms = ms;
    r->calls++;
    r->bad += !ok;
}

static void run_timeouts(struct result *r, int timeout_ms, int rounds)
{
    for (int i = 0; i < rounds; i++) {
        double t0 = now_ms();
        int ret;

        errno = ERRNO_MARK;
        ret = wait_once(timeout_ms, NULL);
        note(r, now_ms() - t0, ret == 0);
        r->errno_bad += ret == 0 && errno != ERRNO_MARK;
        if (ret != 0 || errno != ERRNO_MARK)
            printf("pid %d: %s returned %d errno %d\n", getpid(), call_name, ret, errno);
    }
}

/* The quiet first process of eintr-queued: a plain timeout, no signal. */
static void run_quiet(struct result *r, int delay_ms)
{
    double t0 = now_ms();
    int ret = wait_once(3 * delay_ms, NULL);

    note(r, now_ms() - t0, ret == 0);
    if (ret != 0)
        printf("pid %d: quiet %s returned %d errno %d\n", getpid(), call_name, ret, errno);
}

static void run_eintr(struct result *r, int delay_ms)
{
    struct sigaction sa = { .sa_handler = on_alarm, .sa_flags = 0 };   /* no SA_RESTART */
    struct itimerval it = { .it_value = { .tv_sec = delay_ms / 1000,
                                          .tv_usec = (delay_ms % 1000) * 1000L } };
    sigset_t block, during;
    double t0;
    int ret, err;

    sigemptyset(&sa.sa_mask);
    sigaction(SIGALRM, &sa, NULL);
    sigemptyset(&block);
    sigaddset(&block, SIGALRM);
    /* ppoll/pselect: blocked outside the call, unblocked by its mask */
    if (call_name[0] == 'p' && strcmp(call_name, "poll") != 0)
        sigprocmask(SIG_BLOCK, &block, &during);
    else
        sigprocmask(SIG_BLOCK, NULL, &during);
    sigdelset(&during, SIGALRM);
    setitimer(ITIMER_REAL, &it, NULL);
    t0 = now_ms();
    ret = wait_once(-1, &during);
    err = errno;
    note(r, now_ms() - t0, ret == -1 && err == EINTR && alarms == 1);
    if (ret != -1 || err != EINTR || alarms != 1)
        printf("pid %d: %s returned %d errno %d alarms %d\n", getpid(), call_name, ret, err,
               (int)alarms);
}

enum scenario { TIMEOUTS, EINTR_ALL, EINTR_QUEUED };

static void run_child(enum scenario what, int index, int ms, int rounds, struct result *r)
{
    switch (what) {
    case TIMEOUTS:
        run_timeouts(r, ms, rounds);
        break;
    case EINTR_ALL:
        run_eintr(r, ms);
        break;
    case EINTR_QUEUED:
        if (index == 0) {
            run_quiet(r, ms);
        } else {
            usleep(100 * 1000);       /* queue behind the first one */
            run_eintr(r, ms);
        }
        break;
    }
}

/* Fork procs children that start together; gather their results. */
static struct result run_children(int procs, enum scenario what, int ms, int rounds)
{
    struct result total = { 0 };
    int go[2], out[2];
    pid_t pids[MAX_PROCS];

    if (pipe(go) < 0 || pipe(out) < 0)
        exit(2);
    for (int i = 0; i < procs; i++) {
        pids[i] = fork();
        if (pids[i] == 0) {
            struct result r = { 0 };
            char c;
            close(go[1]);
            prepare_call();
            if (what != TIMEOUTS)
                wait_once(0, NULL);   /* attach (or create) the segment now, not timed */
            if (read(go[0], &c, 1) < 0)
                _exit(2);
            run_child(what, i, ms, rounds, &r);
            fflush(stdout);
            _exit(write(out[1], &r, sizeof(r)) == (ssize_t)sizeof(r) ? 0 : 2);
        }
    }
    close(go[0]);
    close(go[1]);                     /* everyone starts now */
    close(out[1]);
    for (int i = 0; i < procs; i++) {
        struct result r;
        if (read(out[0], &r, sizeof(r)) != (ssize_t)sizeof(r)) {
            total.bad++;
            continue;
        }
        printf("proc calls=%d bad=%d errno_bad=%d min_ms=%.1f max_ms=%.1f\n", r.calls, r.bad,
               r.errno_bad, r.min_ms, r.max_ms);
        if (total.calls == 0 || r.min_ms < total.min_ms)
            total.min_ms = r.min_ms;
        if (r.max_ms > total.max_ms)
            total.max_ms = r.max_ms;
        total.calls += r.calls;
        total.bad += r.bad;
        total.errno_bad += r.errno_bad;
    }
    for (int i = 0; i < procs; i++)
        waitpid(pids[i], NULL, 0);
    return total;
}

static void usage(void)
{
    fprintf(stderr, "usage: pollwait timeout CALL PROCS TIMEOUT_MS ROUNDS\n"
                    "       pollwait eintr|eintr-queued CALL PROCS DELAY_MS\n"
                    "CALL: poll ppoll select pselect epoll\n");
    exit(2);
}

int main(int argc, char **argv)
{
    struct result total;
    enum scenario what;
    int procs;

    if (argc == 6 && strcmp(argv[1], "timeout") == 0)
        what = TIMEOUTS;
    else if (argc == 5 && strcmp(argv[1], "eintr") == 0)
        what = EINTR_ALL;
    else if (argc == 5 && strcmp(argv[1], "eintr-queued") == 0)
        what = EINTR_QUEUED;
    else
        usage();
    call_name = argv[2];
    if (strcmp(call_name, "poll") && strcmp(call_name, "ppoll") && strcmp(call_name, "select") &&
        strcmp(call_name, "pselect") && strcmp(call_name, "epoll"))
        usage();
    procs = atoi(argv[3]);
    if (procs < 1 || procs > MAX_PROCS)
        usage();
    setvbuf(stdout, NULL, _IOLBF, 0);
    listener = open_listener();
    total = run_children(procs, what, atoi(argv[4]), what == TIMEOUTS ? atoi(argv[5]) : 1);
    printf("calls=%d bad=%d errno_bad=%d min_ms=%.1f max_ms=%.1f\n", total.calls, total.bad,
           total.errno_bad, total.min_ms, total.max_ms);
    return total.bad || total.errno_bad ? 1 : 0;
}

/*
 * stopwait - one wait on an idle listener, for a test that stops and
 * continues the process meanwhile (SIGSTOP/SIGCONT, as a debugger or an
 * operator's ^Z does).  The real poll and select go on waiting after a
 * stop without a handler; the test compares the shim with that.
 *
 *   stopwait CALL TIMEOUT_MS [usr1]
 *       CALL poll, ppoll, select or pselect.  Prints "ready pid=PID" once
 *       listening, then, when the call returns,
 *           ret=R errno=NAME ms=M
 *       (NAME "-" when the call succeeded).  usr1: a SIGUSR1 handler
 *       without SA_RESTART is installed first.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/select.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static void on_usr1(int sig)
{
    (void)sig;
}

static int wait_once(const char *call, int fd, int ms)
{
    struct pollfd pfd = { .fd = fd, .events = POLLIN };
    struct timespec ts = { ms / 1000, (long)(ms % 1000) * 1000000L };
    struct timeval tv = { ms / 1000, (ms % 1000) * 1000 };
    fd_set set;

    FD_ZERO(&set);
    FD_SET(fd, &set);
    if (strcmp(call, "poll") == 0)
        return poll(&pfd, 1, ms);
    if (strcmp(call, "ppoll") == 0)
        return ppoll(&pfd, 1, &ts, NULL);
    if (strcmp(call, "select") == 0)
        return select(fd + 1, &set, NULL, NULL, &tv);
    if (strcmp(call, "pselect") == 0)
        return pselect(fd + 1, &set, NULL, NULL, &ts, NULL);
    fprintf(stderr, "stopwait: unknown call %s\n", call);
    exit(2);
}

int main(int argc, char **argv)
{
    struct sockaddr_in addr = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
    struct timespec t0, t1;
    int fd, r, err;

    if (argc < 3) {
        fprintf(stderr, "usage: stopwait poll|ppoll|select|pselect TIMEOUT_MS [usr1]\n");
        return 2;
    }
    if (argc > 3 && strcmp(argv[3], "usr1") == 0) {
        struct sigaction sa = { .sa_handler = on_usr1 };
        sigaction(SIGUSR1, &sa, NULL);
    }
    fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    if (fd < 0 || bind(fd, (struct sockaddr *)&addr, sizeof(addr)) < 0 || listen(fd, 8) < 0) {
        perror("stopwait: listener");
        return 1;
    }
    printf("ready pid=%d\n", (int)getpid());
    fflush(stdout);
    clock_gettime(CLOCK_MONOTONIC, &t0);
    r = wait_once(argv[1], fd, atoi(argv[2]));
    err = errno;
    clock_gettime(CLOCK_MONOTONIC, &t1);
    printf("ret=%d errno=%s ms=%ld\n", r, r < 0 ? strerrorname_np(err) : "-",
           (long)((t1.tv_sec - t0.tv_sec) * 1000 + (t1.tv_nsec - t0.tv_nsec) / 1000000));
    return 0;
}

/*
 * flipblock - a listener set back to blocking is never refused with EAGAIN.
 *
 * In a burst, the shim may refuse a further accept of one wake-up on a
 * listener that does not block (the program stops at EAGAIN, the kernel's
 * own "queue empty").  Whether the listener blocks is asked once and kept;
 * this program changes it and checks that the change is seen.  A child
 * keeps waiting on the listener (so other processes wait on it); each
 * round the parent rests 5 ms, queues two connections, polls, accepts one,
 * sets the listener blocking (F_SETFL, or FIONBIO with "ioctl"), and its
 * second accept must return the second connection, not -1/EAGAIN.
 *
 *   flipblock fcntl|ioctl ROUNDS   prints "ok N refused-while-nonblocking M"
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static struct sockaddr_in where = { .sin_family = AF_INET };

static void die(const char *what)
{
    printf("%s: %s\n", what, strerror(errno));
    exit(1);
}

static void set_blocking(int fd, bool blocking, bool with_ioctl)
{
    int flags = fcntl(fd, F_GETFL), on = !blocking;

    if (with_ioctl ? ioctl(fd, FIONBIO, &on) < 0
                   : fcntl(fd, F_SETFL, blocking ? flags & ~O_NONBLOCK : flags | O_NONBLOCK) < 0)
        die("set O_NONBLOCK");
}

static int client(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);

    if (fd < 0 || connect(fd, (struct sockaddr *)&where, sizeof(where)) < 0)
        die("connect");
    return fd;
}

/* waits on the listener in 1 ms slices until the parent closes the pipe */
static void keep_waiting(int listener, int from_parent)
{
    struct pollfd set[2] = { { .fd = listener, .events = POLLIN }, { .fd = from_parent, .events = POLLIN } };

    for (int i = 0; i < 10000; i++) {
        if (poll(set, 2, 1) > 0 && set[1].revents)
            _exit(0);
        if (set[0].revents)
            usleep(200);        /* never accepts: the parent takes them */
    }
    _exit(0);
}

int main(int argc, char **argv)
{
    bool with_ioctl = argc > 1 && strcmp(argv[1], "ioctl") == 0;
    int rounds = argc > 2 ? atoi(argv[2]) : 20, refused = 0, pipefd[2], listener;
    socklen_t len = sizeof(where);
    struct timespec rest = { 0, 5 * 1000 * 1000 };
    pid_t child;

    where.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    listener = socket(AF_INET, SOCK_STREAM, 0);
    if (listener < 0 || bind(listener, (struct sockaddr *)&where, sizeof(where)) < 0 ||
        listen(listener, 64) < 0 || getsockname(listener, (struct sockaddr *)&where, &len) < 0)
        die("listener");
    if (pipe(pipefd) < 0)
        die("pipe");
    if ((child = fork()) == 0) {
        close(pipefd[1]);
        keep_waiting(listener, pipefd[0]);
    }
    close(pipefd[0]);
    usleep(50 * 1000);
    for (int r = 0; r < rounds; r++) {
        struct pollfd set = { .fd = listener, .events = POLLIN };
        int c1, c2, a1, a2;

        set_blocking(listener, false, with_ioctl);
        nanosleep(&rest, NULL);
        poll(&set, 1, 5);                       /* a wait that sleeps: a rest */
        c1 = client();
        c2 = client();
        if (poll(&set, 1, 1000) != 1)
            die("poll");
        if ((a1 = accept(listener, NULL, NULL)) < 0)
            die("first accept");
        /* the same wake-up, still non-blocking: the shim may refuse it */
        a2 = accept(listener, NULL, NULL);
        if (a2 < 0 && errno != EAGAIN)
            die("second accept");
        if (a2 < 0) {
            refused++;
            set_blocking(listener, true, with_ioctl);
            if ((a2 = accept(listener, NULL, NULL)) < 0) {
                printf("round %d: accept on a blocking listener failed: %s\n", r, strerror(errno));
                return 1;
            }
        }
        close(a1);
        close(a2);
        close(c1);
        close(c2);
    }
    close(pipefd[1]);
    waitpid(child, NULL, 0);
    printf("ok %d refused-while-nonblocking %d\n", rounds, refused);
    return 0;
}

/*
 * overhead: nanoseconds per call of the interposed functions on fds that
 * are not listeners, so that running it with and without LD_PRELOAD (and
 * with THUNDER_MODE=off) shows what the shim costs a program that never
 * touches a listener.  Also times a rotation (EPOLL_CTL_DEL + ADD of an
 * exclusive listener entry), the price auto mode pays per accept.
 *
 *   overhead [ITERATIONS]      prints: name=ns_per_call lines
 */
#define _GNU_SOURCE
#include <netinet/in.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static double now_ns(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e9 + ts.tv_nsec;
}

static int make_listener(void)
{
    struct sockaddr_in sin = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);

    if (fd < 0 || bind(fd, (struct sockaddr *)&sin, sizeof(sin)) < 0 || listen(fd, 16) < 0) {
        perror("listener");
        exit(1);
    }
    return fd;
}

#define TIME(name, iters, stmt)                                            \
    do {                                                                   \
        double t0 = now_ns();                                              \
        for (long i_ = 0; i_ < (iters); i_++) {                            \
            stmt;                                                          \
        }                                                                  \
        printf("%s=%.1f\n", (name), (now_ns() - t0) / (double)(iters));    \
    } while (0)

int main(int argc, char **argv)
{
    long iters = argc > 1 ? atol(argv[1]) : 200000;
    int pipefd[2], sock, ep, lfd;
    struct epoll_event ev = { .events = EPOLLIN }, out;
    struct pollfd pfd;

    if (iters <= 0 || pipe(pipefd) < 0 || (ep = epoll_create1(0)) < 0) {
        fprintf(stderr, "usage: overhead [ITERATIONS>0]\n");
        return 2;
    }
    sock = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    ev.data.fd = pipefd[0];
    epoll_ctl(ep, EPOLL_CTL_ADD, pipefd[0], &ev);
    pfd = (struct pollfd){ .fd = pipefd[0], .events = POLLIN };

    TIME("poll_pipe_ns", iters, poll(&pfd, 1, 0));
    TIME("epoll_wait_pipe_ns", iters, epoll_wait(ep, &out, 1, 0));
    TIME("accept_nonlistener_ns", iters, accept(sock, NULL, NULL));
    TIME("close_badfd_ns", iters, close(-1));

    /* the cost of one rotation, done by hand with the real calls */
    lfd = make_listener();
    ev.events = EPOLLIN | EPOLLEXCLUSIVE;
    ev.data.fd = lfd;
    epoll_ctl(ep, EPOLL_CTL_ADD, lfd, &ev);
    TIME("rotation_del_add_ns", iters / 10 + 1,
         (epoll_ctl(ep, EPOLL_CTL_DEL, lfd, NULL), epoll_ctl(ep, EPOLL_CTL_ADD, lfd, &ev)));
    return 0;
}

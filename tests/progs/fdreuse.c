/*
 * fdreuse - poll and epoll answers stay exact while fd numbers are reused
 * quickly between listeners, pipes and epoll instances (the shim caches
 * what each number is and must forget it on close/dup2).
 *
 *   fdreuse ROUNDS       prints "ok" and exits 0, or says what went wrong
 */
#define _GNU_SOURCE
#include <netinet/in.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

static int listener(void)
{
    struct sockaddr_in sin = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);

    if (fd < 0 || bind(fd, (struct sockaddr *)&sin, sizeof(sin)) < 0 || listen(fd, 4) < 0) {
        perror("listener");
        exit(2);
    }
    return fd;
}

static void expect(int cond, const char *what, int round)
{
    if (!cond) {
        printf("round %d: %s\n", round, what);
        exit(1);
    }
}

int main(int argc, char **argv)
{
    int rounds = argc > 1 ? atoi(argv[1]) : 200;

    for (int r = 0; r < rounds; r++) {
        int l = listener(), p[2], ep;
        struct pollfd pfd = { .fd = l, .events = POLLIN };
        struct epoll_event ev = { .events = EPOLLIN }, out;

        expect(poll(&pfd, 1, 0) == 0, "idle listener reported ready", r);
        close(l);
        /* the same number, now a pipe with data: must be readable */
        expect(pipe(p) == 0, "pipe", r);
        if (p[0] != l)
            expect(dup2(p[0], l) == l, "dup2", r), close(p[0]);
        expect(write(p[1], "x", 1) == 1, "write", r);
        pfd = (struct pollfd){ .fd = l, .events = POLLIN };
        expect(poll(&pfd, 1, 0) == 1 && (pfd.revents & POLLIN), "pipe under a reused number not readable", r);
        /* an epoll instance watching it, then the number closed and reused */
        ep = epoll_create1(0);
        ev.data.fd = l;
        expect(epoll_ctl(ep, EPOLL_CTL_ADD, l, &ev) == 0, "epoll_ctl add pipe", r);
        expect(epoll_wait(ep, &out, 1, 0) == 1 && out.data.fd == l, "epoll did not report the pipe", r);
        close(l);
        close(p[1]);
        close(ep);
        /* closed numbers: POLLNVAL, as without the shim */
        pfd = (struct pollfd){ .fd = l, .events = POLLIN };
        expect(poll(&pfd, 1, 0) == 1 && (pfd.revents & POLLNVAL), "closed fd not POLLNVAL", r);
    }
    puts("ok");
    return 0;
}

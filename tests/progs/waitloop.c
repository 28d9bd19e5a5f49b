/*
 * waitloop N: N waits of each kind on fds that are not listeners, in a
 * process that does hold a listener, so that strace can count what a wait
 * with no managed listener costs under the shim (it must cost nothing).
 *
 * Every wait has timeout 0 on a pipe with one byte in it (ready), or on
 * an empty socketpair end (not ready): poll, ppoll, select, pselect,
 * epoll_wait, epoll_pwait.  Prints "ok waits=W" and exits 0, or one line
 * naming the failed call and exits 1.
 */
#define _GNU_SOURCE
#include <netinet/in.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/epoll.h>
#include <sys/select.h>
#include <sys/socket.h>
#include <unistd.h>

static int fail(const char *what)
{
    perror(what);
    return 1;
}

int main(int argc, char **argv)
{
    int n = argc > 1 ? atoi(argv[1]) : 100, lst, p[2], sp[2], ep, waits = 0;
    struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
    struct epoll_event ev = { .events = EPOLLIN }, out[4];
    struct timespec zero = { 0, 0 };

    lst = socket(AF_INET, SOCK_STREAM, 0);
    if (lst < 0 || bind(lst, (struct sockaddr *)&a, sizeof(a)) < 0 || listen(lst, 8) < 0)
        return fail("listener");
    if (pipe(p) < 0 || write(p[1], "x", 1) != 1 || socketpair(AF_UNIX, SOCK_STREAM, 0, sp) < 0)
        return fail("pipe/socketpair");
    if ((ep = epoll_create1(0)) < 0 || epoll_ctl(ep, EPOLL_CTL_ADD, p[0], &ev) < 0)
        return fail("epoll");
    ev.data.fd = sp[0];
    if (epoll_ctl(ep, EPOLL_CTL_ADD, sp[0], &ev) < 0)
        return fail("epoll_ctl");
    for (int i = 0; i < n; i++) {
        struct pollfd pf[2] = { { .fd = p[0], .events = POLLIN }, { .fd = sp[0], .events = POLLIN } };
        struct timeval tv = { 0, 0 };
        fd_set r;

        if (poll(pf, 2, 0) != 1)
            return fail("poll");
        if (ppoll(pf, 2, &zero, NULL) != 1)
            return fail("ppoll");
        FD_ZERO(&r);
        FD_SET(p[0], &r);
        FD_SET(sp[0], &r);
        if (select(sp[0] > p[0] ? sp[0] + 1 : p[0] + 1, &r, NULL, NULL, &tv) != 1)
            return fail("select");
        FD_ZERO(&r);
        FD_SET(sp[0], &r);
        if (pselect(sp[0] + 1, &r, NULL, NULL, &zero, NULL) != 0)
            return fail("pselect");
        if (epoll_wait(ep, out, 4, 0) != 1)
            return fail("epoll_wait");
        if (epoll_pwait(ep, out, 4, 0, NULL) != 1)
            return fail("epoll_pwait");
        waits += 6;
    }
    printf("ok waits=%d\n", waits);
    return 0;
}

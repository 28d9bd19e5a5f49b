/*
 * sharewait: an epoll instance that one process waits on alone, then
 * shares with a forked child, so a test can see that the waiting parent
 * finds out (the library keeps a thread's last plan for an instance and
 * looks again every 64 waits, epmemo.c).
 *
 * The parent adds a listener (127.0.0.1, any port) to a new instance and
 * waits on it 10 times (timeout 0); forks a child that waits on the same
 * instance 5 times and then tells the parent through a pipe; the parent
 * then waits 100 more times, stops the child and prints
 * "listener inode=I", then "parent=P child=C" and exits 0 (1 with a line
 * naming the failed call).
 */
#define _GNU_SOURCE
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

static int fail(const char *what)
{
    perror(what);
    return 1;
}

static int waits(int ep, int n)
{
    struct epoll_event out[4];

    for (int i = 0; i < n; i++)
        if (epoll_wait(ep, out, 4, 0) < 0)
            return -1;
    return 0;
}

int main(void)
{
    struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
    struct epoll_event ev = { .events = EPOLLIN };
    struct stat st;
    int lst, ep, told[2];
    char byte;
    pid_t child;

    lst = socket(AF_INET, SOCK_STREAM, 0);
    if (lst < 0 || bind(lst, (struct sockaddr *)&a, sizeof(a)) < 0 || listen(lst, 8) < 0 ||
        fstat(lst, &st) < 0)
        return fail("listener");
    printf("listener inode=%llu\n", (unsigned long long)st.st_ino);
    fflush(stdout);
    ev.data.fd = lst;
    if ((ep = epoll_create1(0)) < 0 || epoll_ctl(ep, EPOLL_CTL_ADD, lst, &ev) < 0 ||
        pipe(told) < 0)
        return fail("epoll/pipe");
    if (waits(ep, 10) < 0)
        return fail("epoll_wait (alone)");
    child = fork();
    if (child < 0)
        return fail("fork");
    if (child == 0) {
        alarm(20);              /* never outlives a parent that hung */
        if (waits(ep, 5) < 0 || write(told[1], "x", 1) != 1)
            _exit(1);
        pause();
        _exit(0);
    }
    if (read(told[0], &byte, 1) != 1)
        return fail("read (the child's waits)");
    if (waits(ep, 100) < 0)
        return fail("epoll_wait (shared)");
    kill(child, SIGTERM);
    waitpid(child, NULL, 0);
    printf("parent=%d child=%d\n", (int)getpid(), (int)child);
    return 0;
}

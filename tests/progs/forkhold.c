/*
 * forkhold - fork, exec and vfork while holding the accept lock.
 *
 * Waits with poll() on a listener (under THUNDER_MODE=lock the shim takes
 * the lock), and once a connection is pending - lock held - runs a child
 * with fork+exec, one with vfork+exec, and a forked child that itself polls
 * the listener with a timeout and exits.  Then accepts.  Nothing may
 * deadlock; the children must not believe they hold the parent's lock.
 *
 *   forkhold PORT_FILE     writes the port to PORT_FILE, serves 3 connections
 */
#define _GNU_SOURCE
#include <netinet/in.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

static int child_status(pid_t pid)
{
    int st;

    return waitpid(pid, &st, 0) == pid && WIFEXITED(st) ? WEXITSTATUS(st) : 99;
}

int main(int argc, char **argv)
{
    struct sockaddr_in sin = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
    socklen_t len = sizeof(sin);
    int l = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    FILE *f;

    if (argc != 2 || l < 0 || bind(l, (struct sockaddr *)&sin, sizeof(sin)) < 0 ||
        listen(l, 16) < 0 || getsockname(l, (struct sockaddr *)&sin, &len) < 0 ||
        (f = fopen(argv[1], "w")) == NULL) {
        fprintf(stderr, "usage: forkhold PORT_FILE\n");
        return 2;
    }
    fprintf(f, "%d\n", ntohs(sin.sin_port));
    fclose(f);
    for (int served = 0; served < 3;) {
        struct pollfd pfd = { .fd = l, .events = POLLIN };
        pid_t pid;
        int c;

        if (poll(&pfd, 1, 10000) != 1)
            return 3;                       /* nobody came: the test fails */
        pid = fork();
        if (pid == 0) {
            execl("/bin/true", "true", (char *)NULL);
            _exit(127);
        }
        if (child_status(pid) != 0)
            return 4;
        pid = vfork();
        if (pid == 0) {
            execl("/bin/true", "true", (char *)NULL);
            _exit(127);
        }
        if (child_status(pid) != 0)
            return 5;
        pid = fork();
        if (pid == 0) {
            /* a child polling the listener while the parent holds the lock */
            struct pollfd q = { .fd = l, .events = POLLIN };
            _exit(poll(&q, 1, 50) >= 0 ? 0 : 1);
        }
        if (child_status(pid) != 0)
            return 6;
        c = accept(l, NULL, NULL);
        if (c >= 0) {
            if (write(c, "ok\n", 3) != 3)
                return 7;
            close(c);
            served++;
        }
    }
    return 0;
}

/*
 * fdreuse - poll and epoll answers stay exact while fd numbers are reused
 * quickly between listeners, pipes and epoll instances (the shim caches
 * what each number is and must forget it on close/dup2), also when
 * another thread reuses a number this thread's poll watches.
 *
 *   fdreuse ROUNDS       prints "ok" and exits 0, or says what went wrong
 */
#define _GNU_SOURCE
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
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

struct reuse {
    int number;                 /* the watched pipe end, closed and reused */
    int write_end;
    pthread_barrier_t reused;
};

/* Another thread: the number now means a new pipe, which gets data later. */
static void *reuse_number(void *arg)
{
    struct reuse *ru = arg;
    int p[2];

    close(ru->number);
    close(ru->write_end);
    if (pipe(p) < 0)
        exit(2);
    if (p[0] != ru->number) {
        dup2(p[0], ru->number);
        close(p[0]);
    }
    pthread_barrier_wait(&ru->reused);
    usleep(50 * 1000);          /* the poll below is asleep by now */
    if (write(p[1], "x", 1) != 1)
        exit(2);
    ru->write_end = p[1];
    return NULL;
}

/*
 * This thread's poll watches a listener and a pipe; another thread closes
 * the pipe and reuses its number for a new one, which gets data while this
 * thread sleeps in poll: poll must wake for it, not time out.
 */
static void reused_by_another_thread(int round)
{
    struct reuse ru;
    int l = listener(), p[2];
    pthread_t t;

    expect(pipe(p) == 0, "pipe", round);
    ru = (struct reuse){ .number = p[0], .write_end = p[1] };
    struct pollfd set[2] = { { .fd = l, .events = POLLIN }, { .fd = p[0], .events = POLLIN } };
    expect(poll(set, 2, 1) == 0, "idle set reported ready", round);
    pthread_barrier_init(&ru.reused, NULL, 2);
    pthread_create(&t, NULL, reuse_number, &ru);
    pthread_barrier_wait(&ru.reused);
    expect(poll(set, 2, 3000) == 1 && (set[1].revents & POLLIN) && set[0].revents == 0,
           "poll missed data on a number another thread reused", round);
    pthread_join(t, NULL);
    pthread_barrier_destroy(&ru.reused);
    close(ru.number);
    close(ru.write_end);
    close(l);
}

int main(int argc, char **argv)
{
    int rounds = argc > 1 ? atoi(argv[1]) : 200;

    for (int r = 0; r < rounds / 10 + 1; r++)
        reused_by_another_thread(r);

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

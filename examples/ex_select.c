/*
 * ex_select - a copy of gunicorn's sync worker loop: select() on the
 * listener plus a self-pipe, with a one second timeout, then accept once.
 *
 * The pipe is how the signal handler wakes the worker (gunicorn's
 * PIPE); the timeout is when gunicorn tells the arbiter it is alive.
 * A mixed wait set like this one is what the shim must handle without
 * bringing the herd back: every select() sleeper is woken by a connection.
 */
#include "common.h"

#include <sys/select.h>

/* Created in each worker after fork; [1] is written by the handler. */
static int wakeup_pipe[2] = { -1, -1 };

static void stop_and_wake_select(int sig)
{
    int saved_errno = errno;
    stop_requested = 1;
    ssize_t ignored = write(wakeup_pipe[1], "!", 1);
    (void)ignored;  /* a full pipe already has a wake-up in it */
    (void)sig;
    errno = saved_errno;
}

static void open_wakeup_pipe(void)
{
    if (pipe2(wakeup_pipe, O_NONBLOCK | O_CLOEXEC) < 0)
        die("pipe2");
    catch_stop_signals(stop_and_wake_select);
}

static void drain_wakeup_pipe(void)
{
    char bytes[64];
    while (read(wakeup_pipe[0], bytes, sizeof bytes) > 0)
        ;
}

static void wait_with_select(int listener, void *unused)
{
    (void)unused;
    open_wakeup_pipe();
    int maxfd = listener > wakeup_pipe[0] ? listener : wakeup_pipe[0];

    while (!stop_requested) {
        /* select() overwrites both the set and the timeout: rebuild them. */
        fd_set readable;
        FD_ZERO(&readable);
        FD_SET(listener, &readable);
        FD_SET(wakeup_pipe[0], &readable);
        struct timeval timeout = { .tv_sec = 1, .tv_usec = 0 };

        int ready = select(maxfd + 1, &readable, NULL, NULL, &timeout);
        if (ready < 0) {
            if (errno == EINTR)
                continue;
            die("select");
        }
        if (ready == 0)
            continue;  /* timeout: here gunicorn notifies the arbiter */

        if (FD_ISSET(wakeup_pipe[0], &readable))
            drain_wakeup_pipe();  /* the loop condition sees the flag */

        if (FD_ISSET(listener, &readable)) {
            int client = accept4(listener, NULL, NULL,
                                 SOCK_NONBLOCK | SOCK_CLOEXEC);
            if (client < 0) {
                survive_accept_error(errno);
                continue;
            }
            answer_with_pid_and_close(client);
        }
    }
}

int main(int argc, char **argv)
{
    struct server_options opt = parse_options(argc, argv, 1);
    int listener = open_listener(&opt, LISTENER_NONBLOCKING);
    return run_master(&opt, listener, wait_with_select, NULL);
}

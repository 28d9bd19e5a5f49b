/*
 * ex_evloop - an event loop with keep-alive clients, like a libuv or
 * nginx worker.  Each worker creates its own epoll instance after fork;
 * it holds the listener AND the worker's open client sockets, all
 * level-triggered EPOLLIN, and epoll_wait() blocks with no timeout.
 *
 *   - listener readable: accept until EAGAIN (libuv does the same), make
 *     each client non-blocking, add it to the set, greet it with "PID\n";
 *   - client readable: for every "\n" received, send one "PID\n" back;
 *     on EOF or error, take it out of the set and close it.
 *
 * So a client can keep its connection open and ping the worker.  A shim
 * must not make this worker block on an accept lock: it has clients to
 * serve while another worker holds the lock.
 */
#include "common.h"

#include <sys/epoll.h>

#define MAX_EVENTS 64
#define READ_CHUNK 4096

static void watch_fd(int ep, int fd)
{
    struct epoll_event watch = { .events = EPOLLIN, .data.fd = fd };
    if (epoll_ctl(ep, EPOLL_CTL_ADD, fd, &watch) < 0)
        die("epoll_ctl(ADD)");
}

static void drop_client(int ep, int client)
{
    epoll_ctl(ep, EPOLL_CTL_DEL, client, NULL);
    close(client);
}

/*
 * Sends `count` pid lines.  Returns false if the client does not take
 * them all at once: a client that pings without reading its answers
 * would make us buffer without limit, so it is dropped instead.
 */
static bool send_pid_lines(int client, size_t count)
{
    char batch[READ_CHUNK];
    size_t lines_per_batch = sizeof batch / pid_line_len;
    for (size_t i = 0; i < lines_per_batch; i++)
        memcpy(batch + i * pid_line_len, pid_line, pid_line_len);

    while (count > 0) {
        size_t lines = count < lines_per_batch ? count : lines_per_batch;
        size_t bytes = lines * pid_line_len;
        ssize_t sent = send(client, batch, bytes, MSG_NOSIGNAL);
        if (sent != (ssize_t)bytes)
            return false;
        count -= lines;
    }
    return true;
}

static void accept_new_clients(int ep, int listener)
{
    while (!stop_requested) {
        int client = accept4(listener, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (client < 0) {
            if (errno != EAGAIN && errno != EWOULDBLOCK)
                survive_accept_error(errno);
            return;  /* EAGAIN: the backlog is empty, back to the loop */
        }
        watch_fd(ep, client);
        handler_pause();
        if (!send_pid_lines(client, 1))
            drop_client(ep, client);
    }
}

static void serve_client(int ep, int client)
{
    char data[READ_CHUNK];
    ssize_t got = read(client, data, sizeof data);
    if (got < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))
        return;
    if (got <= 0) {
        drop_client(ep, client);  /* EOF or a reset */
        return;
    }
    size_t newlines = 0;
    for (ssize_t i = 0; i < got; i++)
        newlines += data[i] == '\n';
    if (!send_pid_lines(client, newlines))
        drop_client(ep, client);
}

static void run_event_loop(int listener, void *unused)
{
    (void)unused;
    int ep = epoll_create1(EPOLL_CLOEXEC);
    if (ep < 0)
        die("epoll_create1");
    watch_fd(ep, listener);

    struct epoll_event events[MAX_EVENTS];
    while (!stop_requested) {
        int ready = epoll_wait(ep, events, MAX_EVENTS, -1);
        if (ready < 0) {
            if (errno == EINTR)
                continue;
            die("epoll_wait");
        }
        for (int i = 0; i < ready; i++) {
            if (events[i].data.fd == listener)
                accept_new_clients(ep, listener);
            else
                serve_client(ep, events[i].data.fd);
        }
    }
}

int main(int argc, char **argv)
{
    struct server_options opt = parse_options(argc, argv, 1);
    int listener = open_listener(&opt, LISTENER_NONBLOCKING);
    return run_master(&opt, listener, run_event_loop, NULL);
}

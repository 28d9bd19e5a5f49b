/*
 * ex_threads - the uWSGI "Zeeg problem": P worker processes (-w), each
 * running T threads (-t, default 4).  Each process creates its own epoll
 * instance after fork with the listener in it, and every thread loops on
 * epoll_wait(ep, events, 1, -1) followed by accept4().
 *
 * Two herds at once: every process's instance is woken by a connection
 * (as in ex_epoll), and inside each process every thread sleeping on that
 * instance competes too.  Answers carry the process id, because balance
 * is measured across processes.
 */
#include "common.h"

#include <pthread.h>
#include <sys/epoll.h>

struct process_state {
    int listener;
    int ep;
};

static void *accept_thread(void *arg)
{
    const struct process_state *process = arg;
    struct epoll_event event;

    /* Stop signals are blocked in this thread; exit() ends it. */
    for (;;) {
        int ready = epoll_wait(process->ep, &event, 1, -1);
        if (ready < 0) {
            if (errno == EINTR)
                continue;
            die("epoll_wait");
        }
        if (ready == 0 || event.data.fd != process->listener)
            continue;
        int client = accept4(process->listener, NULL, NULL, SOCK_CLOEXEC);
        if (client < 0) {
            survive_accept_error(errno);
            continue;
        }
        answer_with_pid_and_close(client);
    }
    return NULL;
}

static void start_accept_threads(struct process_state *process, int threads)
{
    for (int i = 0; i < threads; i++) {
        pthread_t thread;
        int err = pthread_create(&thread, NULL, accept_thread, process);
        if (err != 0) {
            errno = err;
            die("pthread_create");
        }
        pthread_detach(thread);
    }
}

static void run_threaded_worker(int listener, void *ctx)
{
    const struct server_options *opt = ctx;
    static struct process_state process;
    process.listener = listener;
    process.ep = epoll_create1(EPOLL_CLOEXEC);
    if (process.ep < 0)
        die("epoll_create1");
    struct epoll_event watch = { .events = EPOLLIN, .data.fd = listener };
    if (epoll_ctl(process.ep, EPOLL_CTL_ADD, listener, &watch) < 0)
        die("epoll_ctl(ADD listener)");

    /*
     * Block the stop signals before creating the threads (they inherit
     * the mask), so SIGTERM is always delivered to this main thread, which
     * waits for it in sigsuspend(): atomic unblock-and-sleep, no race.
     */
    sigset_t stop_signals, main_thread_mask;
    sigemptyset(&stop_signals);
    sigaddset(&stop_signals, SIGTERM);
    sigaddset(&stop_signals, SIGINT);
    if (sigprocmask(SIG_BLOCK, &stop_signals, &main_thread_mask) < 0)
        die("sigprocmask");

    start_accept_threads(&process, opt->threads);

    while (!stop_requested)
        sigsuspend(&main_thread_mask);
    /* Returning makes the worker call exit(0) while threads still wait. */
}

int main(int argc, char **argv)
{
    struct server_options opt = parse_options(argc, argv, 4);
    int listener = open_listener(&opt, LISTENER_NONBLOCKING);
    return run_master(&opt, listener, run_threaded_worker, &opt);
}

/*
 * common.h - what every example pre-fork server shares, so that each
 * examples/ex_*.c file shows nothing but the way its workers wait.
 *
 * Command line, identical for every example:
 *
 *     NAME [-w WORKERS] [-p PORT] [-t THREADS] [-s MS] [-r]
 *
 *   -w  worker processes (default 4)
 *   -p  TCP port on 127.0.0.1 (default 0: the kernel picks one)
 *   -t  threads per worker (default 1; only ex_threads uses it, default 4)
 *   -s  the handler sleeps MS milliseconds before it answers (default 0):
 *       an I/O-bound application, for the burst rounds' completion time
 *   -r  the master respawns a worker that dies unexpectedly
 *   An example may add its own letters (parse_options_with).
 *
 * Behaviour:
 *   - The master opens the listener (127.0.0.1, SO_REUSEADDR, backlog 1024),
 *     forks the workers, then prints exactly one line on stdout:
 *         port=PORT master=PID workers=PID,PID,...
 *     and one "respawn=PID" line for every worker it replaces (-r).
 *   - A worker answers a connection with its pid in decimal and "\n".
 *   - SIGTERM or SIGINT to the master: it sends SIGTERM to every worker,
 *     waits for them and exits 0 (1 if a worker did not stop cleanly).
 *   - A worker leaves its loop on SIGTERM/SIGINT and calls exit(0), not
 *     _exit(), so that atexit handlers and the destructors of a preloaded
 *     library run.  A worker also stops when the master dies.
 *
 * Everything is static inline in this header: each example is one
 * translation unit built by a one-line cc command.
 */
#ifndef LIBTHUNDER_EXAMPLES_COMMON_H
#define LIBTHUNDER_EXAMPLES_COMMON_H

#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define MAX_WORKERS 1024
#define MAX_THREADS 1024
#define MAX_SLEEP_MS 10000
#define LISTEN_BACKLOG 1024

/* How long the master lets its workers stop before it kills them. */
#define GRACEFUL_STOP_SECONDS 5

struct server_options {
    int workers;
    int port;
    int threads;
    int sleep_ms;
    bool respawn;
};

enum listener_mode { LISTENER_BLOCKING, LISTENER_NONBLOCKING };

/* The loop a worker runs until stop_requested is set; ctx is the example's. */
typedef void worker_loop_fn(int listener, void *ctx);

/*
 * Set by the worker's SIGTERM/SIGINT handler.  Every worker loop checks it;
 * the handler is installed without SA_RESTART, so a blocked wait returns
 * EINTR and the loop gets to see the flag.
 */
static volatile sig_atomic_t stop_requested;

/* -s: how long the handler sleeps before it answers (0: not at all). */
static int handler_sleep_ms;

/* "PID\n" of this worker, written once after fork, sent to every client. */
static char pid_line[24];
static size_t pid_line_len;

static inline void die(const char *what)
{
    fprintf(stderr, "[%d] %s: %s\n", (int)getpid(), what, strerror(errno));
    exit(1);
}

/* ---- command line ---------------------------------------------------- */

static inline void usage_and_exit(const char *program)
{
    fprintf(stderr, "usage: %s [-w WORKERS] [-p PORT] [-t THREADS] [-s MS] [-r]\n",
            program);
    exit(2);
}

/* A whole decimal integer in [min, max] into *value; false if text is not. */
static inline bool int_in_range(const char *text, int min, int max, int *value)
{
    char *end;
    errno = 0;
    long parsed = strtol(text, &end, 10);
    if (errno != 0 || end == text || *end != '\0' || parsed < min || parsed > max)
        return false;
    *value = (int)parsed;
    return true;
}

/* Parses a decimal integer in [min, max] or exits with the usage line. */
static inline int parse_int_option(const char *program, const char *text,
                                   int min, int max)
{
    int value;
    if (!int_in_range(text, min, max, &value))
        usage_and_exit(program);
    return value;
}

/*
 * An example's own options: their getopt letters (appended to the common
 * ones) and a function that takes one; it returns false on a bad value.
 */
struct extra_options {
    const char *letters;
    const char *usage;        /* appended to the usage line */
    bool (*take)(int letter, const char *arg);
};

static inline struct server_options parse_options_with(int argc, char **argv,
                                                       int default_threads,
                                                       const struct extra_options *extra)
{
    struct server_options opt = {
        .workers = 4, .port = 0, .threads = default_threads, .respawn = false,
    };
    char letters[64];
    int c;
    snprintf(letters, sizeof letters, "w:p:t:s:r%s", extra ? extra->letters : "");
    while ((c = getopt(argc, argv, letters)) != -1) {
        switch (c) {
        case 'w': opt.workers = parse_int_option(argv[0], optarg, 1, MAX_WORKERS); break;
        case 'p': opt.port = parse_int_option(argv[0], optarg, 0, 65535); break;
        case 't': opt.threads = parse_int_option(argv[0], optarg, 1, MAX_THREADS); break;
        case 's': opt.sleep_ms = parse_int_option(argv[0], optarg, 0, MAX_SLEEP_MS); break;
        case 'r': opt.respawn = true; break;
        default:
            if (c == '?' || !extra || !extra->take(c, optarg)) {
                if (extra)
                    fprintf(stderr, "%s: own options: %s\n", argv[0], extra->usage);
                usage_and_exit(argv[0]);
            }
        }
    }
    if (optind != argc)
        usage_and_exit(argv[0]);
    handler_sleep_ms = opt.sleep_ms;
    return opt;
}

static inline struct server_options parse_options(int argc, char **argv,
                                                  int default_threads)
{
    return parse_options_with(argc, argv, default_threads, NULL);
}

/* ---- the listening socket -------------------------------------------- */

static inline int open_listener(const struct server_options *opt,
                                enum listener_mode mode)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0)
        die("socket");

    /* Restarting the server must not wait for old TIME_WAIT sockets. */
    int one = 1;
    if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) < 0)
        die("setsockopt(SO_REUSEADDR)");

    struct sockaddr_in addr = {
        .sin_family = AF_INET,
        .sin_port = htons((uint16_t)opt->port),
        .sin_addr.s_addr = htonl(INADDR_LOOPBACK),
    };
    if (bind(fd, (struct sockaddr *)&addr, sizeof addr) < 0)
        die("bind");
    if (listen(fd, LISTEN_BACKLOG) < 0)
        die("listen");

    /* Legacy daemons switch the flag on with fcntl, so do we. */
    if (mode == LISTENER_NONBLOCKING) {
        int flags = fcntl(fd, F_GETFL);
        if (flags < 0 || fcntl(fd, F_SETFL, flags | O_NONBLOCK) < 0)
            die("fcntl(O_NONBLOCK)");
    }
    return fd;
}

static inline int listener_port(int listener)
{
    struct sockaddr_in addr;
    socklen_t len = sizeof addr;
    if (getsockname(listener, (struct sockaddr *)&addr, &len) < 0)
        die("getsockname");
    return ntohs(addr.sin_port);
}

/* ---- what a worker does with a connection ------------------------------ */

/* The work of an I/O-bound handler (-s): a wait the worker cannot skip.
 * A stop signal cuts it short. */
static inline void handler_pause(void)
{
    if (handler_sleep_ms <= 0)
        return;
    struct timespec pause_for = {
        .tv_sec = handler_sleep_ms / 1000,
        .tv_nsec = (long)(handler_sleep_ms % 1000) * 1000000L,
    };
    while (nanosleep(&pause_for, &pause_for) < 0 && errno == EINTR && !stop_requested)
        ;
}

/*
 * Sends "PID\n" and closes (after the handler's pause, with -s).  A client that has already gone is not the
 * worker's problem: MSG_NOSIGNAL turns the SIGPIPE into an ignored EPIPE.
 */
static inline void answer_with_pid_and_close(int client)
{
    handler_pause();
    (void)send(client, pid_line, pid_line_len, MSG_NOSIGNAL);
    close(client);
}

/*
 * Returns for every accept() error a busy server must shrug off, and exits
 * for the ones that mean the program (or a preloaded shim) is broken.
 * EAGAIN is normal: another worker, woken for the same connection, won.
 */
static inline void survive_accept_error(int err)
{
    switch (err) {
    case EAGAIN:
#if EWOULDBLOCK != EAGAIN
    case EWOULDBLOCK:
#endif
    case EINTR:
    case ECONNABORTED:
    /* accept(2): network errors of the pending connection, retry. */
    case EPROTO: case ENOPROTOOPT: case ENETDOWN: case ENETUNREACH:
    case EHOSTDOWN: case EHOSTUNREACH: case ENONET: case EOPNOTSUPP:
        return;
    case EMFILE: case ENFILE: case ENOBUFS: case ENOMEM: {
        /* Out of resources: the listener stays readable, so back off
         * instead of spinning on a level-triggered wake-up. */
        fprintf(stderr, "[%d] accept: %s (backing off)\n", (int)getpid(),
                strerror(err));
        struct timespec pause_for = { .tv_nsec = 10 * 1000 * 1000 };
        nanosleep(&pause_for, NULL);
        return;
    }
    default:
        errno = err;
        die("accept");
    }
}

/* ---- signals ------------------------------------------------------------ */

static inline void note_stop_request(int sig)
{
    (void)sig;
    stop_requested = 1;
}

/* No SA_RESTART: blocking calls must return EINTR so the loop sees the flag. */
static inline void catch_stop_signals(void (*handler)(int))
{
    struct sigaction sa = { .sa_handler = handler, .sa_flags = 0 };
    sigemptyset(&sa.sa_mask);
    if (sigaction(SIGTERM, &sa, NULL) < 0 || sigaction(SIGINT, &sa, NULL) < 0)
        die("sigaction");
}

/* The signals the master handles synchronously with sigwaitinfo(). */
static inline sigset_t master_signal_set(void)
{
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGCHLD);
    return set;
}

/* ---- worker start-up ---------------------------------------------------- */

/*
 * Runs first in every new worker.  The master keeps its signals blocked;
 * the worker installs its handler before unblocking them, so a SIGTERM
 * sent during start-up is kept pending and then just sets the flag.
 */
static inline void become_worker(pid_t master)
{
    catch_stop_signals(note_stop_request);
    sigset_t master_set = master_signal_set();
    if (sigprocmask(SIG_UNBLOCK, &master_set, NULL) < 0)
        die("sigprocmask");

    /* Stop with the master; if it died before prctl(), getppid() tells. */
    if (prctl(PR_SET_PDEATHSIG, SIGTERM) < 0)
        die("prctl(PR_SET_PDEATHSIG)");
    if (getppid() != master)
        exit(0);

    int len = snprintf(pid_line, sizeof pid_line, "%d\n", (int)getpid());
    pid_line_len = (size_t)len;
}

static inline pid_t start_worker(int listener, worker_loop_fn *loop, void *ctx)
{
    pid_t master = getpid();

    /* Anything still in the stdio buffer would be printed twice. */
    fflush(stdout);
    pid_t pid = fork();
    if (pid < 0)
        die("fork");
    if (pid > 0)
        return pid;

    become_worker(master);
    loop(listener, ctx);
    exit(0);
}

/* ---- master: supervision ------------------------------------------------ */

struct worker_table {
    pid_t pids[MAX_WORKERS];   /* 0 = slot empty (worker gone, not replaced) */
    int count;
};

static inline int find_worker(const struct worker_table *table, pid_t pid)
{
    for (int i = 0; i < table->count; i++)
        if (table->pids[i] == pid)
            return i;
    return -1;
}

static inline int live_workers(const struct worker_table *table)
{
    int live = 0;
    for (int i = 0; i < table->count; i++)
        live += table->pids[i] != 0;
    return live;
}

static inline void print_ready_line(int port, const struct worker_table *table)
{
    printf("port=%d master=%d workers=", port, (int)getpid());
    for (int i = 0; i < table->count; i++)
        printf("%s%d", i ? "," : "", (int)table->pids[i]);
    printf("\n");
    fflush(stdout);
}

static inline void describe_exit(pid_t pid, int status, const char *when)
{
    if (WIFEXITED(status))
        fprintf(stderr, "master: worker %d exited with status %d %s\n",
                (int)pid, WEXITSTATUS(status), when);
    else if (WIFSIGNALED(status))
        fprintf(stderr, "master: worker %d killed by signal %d %s\n",
                (int)pid, WTERMSIG(status), when);
}

/* Reaps workers that died on their own and, with -r, replaces them. */
static inline void reap_unexpected_deaths(struct worker_table *table,
                                          const struct server_options *opt,
                                          int listener, worker_loop_fn *loop,
                                          void *ctx)
{
    pid_t pid;
    int status;
    while ((pid = waitpid(-1, &status, WNOHANG)) > 0) {
        int slot = find_worker(table, pid);
        if (slot < 0)
            continue;
        describe_exit(pid, status, "unexpectedly");
        table->pids[slot] = 0;
        if (opt->respawn) {
            table->pids[slot] = start_worker(listener, loop, ctx);
            printf("respawn=%d\n", (int)table->pids[slot]);
            fflush(stdout);
        }
    }
}

/*
 * Sends SIGTERM to every worker and waits for all of them.  The signal is
 * repeated every second: a worker that was between its flag check and its
 * blocking call when the first one arrived would otherwise sleep on.
 * Returns 0 when every worker exited with status 0.
 */
static inline int stop_workers(struct worker_table *table)
{
    sigset_t child_only;
    sigemptyset(&child_only);
    sigaddset(&child_only, SIGCHLD);
    int unclean = 0;

    for (int second = 0; second < GRACEFUL_STOP_SECONDS && live_workers(table); second++) {
        for (int i = 0; i < table->count; i++)
            if (table->pids[i])
                kill(table->pids[i], SIGTERM);

        struct timespec deadline, now;
        clock_gettime(CLOCK_MONOTONIC, &deadline);
        deadline.tv_sec += 1;
        do {
            pid_t pid;
            int status;
            while ((pid = waitpid(-1, &status, WNOHANG)) > 0) {
                int slot = find_worker(table, pid);
                if (slot < 0)
                    continue;
                table->pids[slot] = 0;
                if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
                    describe_exit(pid, status, "while stopping");
                    unclean = 1;
                }
            }
            if (!live_workers(table))
                break;
            clock_gettime(CLOCK_MONOTONIC, &now);
            struct timespec left = {
                .tv_sec = deadline.tv_sec - now.tv_sec,
                .tv_nsec = deadline.tv_nsec - now.tv_nsec,
            };
            if (left.tv_nsec < 0) {
                left.tv_sec -= 1;
                left.tv_nsec += 1000000000L;
            }
            if (left.tv_sec < 0)
                break;
            sigtimedwait(&child_only, NULL, &left);
        } while (live_workers(table));
    }

    for (int i = 0; i < table->count; i++) {
        if (table->pids[i]) {
            fprintf(stderr, "master: worker %d did not stop, killing it\n",
                    (int)table->pids[i]);
            kill(table->pids[i], SIGKILL);
            waitpid(table->pids[i], NULL, 0);
            unclean = 1;
        }
    }
    return unclean;
}

/*
 * The whole life of the master: fork the workers, announce them, supervise
 * until SIGTERM/SIGINT, stop them.  Returns the master's exit status.
 * Signals are taken synchronously with sigwaitinfo(): no handler, no race
 * between checking a flag and going to sleep.
 */
static inline int run_master(const struct server_options *opt, int listener,
                             worker_loop_fn *loop, void *ctx)
{
    sigset_t master_set = master_signal_set();
    if (sigprocmask(SIG_BLOCK, &master_set, NULL) < 0)
        die("sigprocmask");

    static struct worker_table table;
    table.count = opt->workers;
    for (int i = 0; i < table.count; i++)
        table.pids[i] = start_worker(listener, loop, ctx);
    print_ready_line(listener_port(listener), &table);

    for (;;) {
        int sig = sigwaitinfo(&master_set, NULL);
        if (sig < 0) {
            if (errno == EINTR)
                continue;
            die("sigwaitinfo");
        }
        if (sig != SIGCHLD)
            break;
        reap_unexpected_deaths(&table, opt, listener, loop, ctx);
    }
    return stop_workers(&table);
}

#endif

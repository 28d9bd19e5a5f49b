/*
 * pollwait - the timing and signal contract of wait calls on a listener
 * while several processes contend for it (as under THUNDER_MODE=lock,
 * where the time may go into the accept lock instead of the real wait).
 *
 *   pollwait timeout CALL PROCS TIMEOUT_MS ROUNDS
 *       PROCS processes each call CALL ROUNDS times on an idle listener
 *       with TIMEOUT_MS; every call must return 0, leaving errno untouched.
 *   pollwait eintr CALL PROCS DELAY_MS
 *       PROCS processes each wait forever; SIGALRM (handler without
 *       SA_RESTART) arrives in all of them after DELAY_MS, as a master's
 *       SIGTERM reaches all its workers at once; every call must return
 *       -1 EINTR.
 *   pollwait eintr-queued CALL PROCS DELAY_MS
 *       the first process starts alone and waits 3 x DELAY_MS without a
 *       signal (under the lock it is the holder, in the real wait); the
 *       others start 100 ms later (queued for the lock) and get SIGALRM
 *       after DELAY_MS: theirs must return -1 EINTR, the first one 0.
 *
 *   pollwait signal CALL SHAPE SPEC...
 *       Every process makes one call: a wait of WAIT_MS, or for CALL accept
 *       a blocking accept on a blocking listener.  SIGNAL_AT_MS after the
 *       start the parent sends each SPEC process its signal with kill(2);
 *       CONNECT_AT_MS after the start it connects once per process, so a
 *       restarted accept returns a connection.
 *       SHAPE queued: one listener; a quiet process (never signalled)
 *         starts first - under the lock it is the holder, in the real wait -
 *         and one process per SPEC starts QUEUE_AFTER_MS later (queued for
 *         the lock when it is signalled).
 *       SHAPE holder: one listener per SPEC; the SPEC process starts first
 *         (the holder, in the real wait when signalled) and a quiet process
 *         queues behind it.
 *       SPEC is SIG/DISP, SIG one of TERM HUP CHLD ALRM USR1, DISP one of
 *         handler  a handler without SA_RESTART
 *         restart  a handler with SA_RESTART
 *         default  SIG_DFL (CHLD only: its default is to ignore it)
 *         ignore   SIG_IGN, set with signal()
 *         blocked  SIG_DFL, blocked by sigprocmask and the call's sigmask
 *                  (CHLD only: it must stay pending, as for a program that
 *                  reads it from a signalfd)
 *         unmask   handler; blocked by sigprocmask, unblocked by the call's
 *                  sigmask (CALL ppoll, pselect or epoll_pwait)
 *         mask     handler; unblocked in the program, blocked by the call's
 *                  sigmask (CALL ppoll, pselect or epoll_pwait)
 *       Output: one line per process, in start order,
 *         proc=I spec=SIG/DISP|quiet class=C handler=H ret_ms=X handler_ms=Y
 *       C is EINTR (-1, errno EINTR), DONE (timed out or accepted, errno
 *       untouched), DONE-errno-changed, READY (a wait reported the idle
 *       listener ready) or ERR-<errno>.  H says when the handler ran: none,
 *       at-return (as the call returned), early (while the call went on:
 *       more than EARLY_MS before it returned) or in-shim (while the shim
 *       was at its own work, and the call went on: see on_signal); or
 *       pending: the signal is still pending after the call.  The classes
 *       are for the caller to judge (with and without the shim); exit 0 if
 *       every process reported.
 *
 *   pollwait storm CALL MS SPEC...
 *       A quiet process and one process per SPEC repeat CALL with a 5 ms
 *       timeout for MS ms; the parent sends each SPEC process its signal
 *       as fast as it can, so signals also land while the shim does its
 *       own work around the real wait (under the lock the processes take
 *       turns as holder and queue).  Output, one line per process:
 *         proc=I spec=SIG/DISP|quiet class=C calls=N eintr=N handled=N lost=N
 *       with C EINTR if any call returned EINTR, DONE if none did, ERR-<e>
 *       on any other failure; lost counts calls during which a handler ran
 *       inside the shim without the call reporting it (see on_signal).
 *
 * CALL is poll, ppoll, select, pselect, epoll (epoll_wait) or epoll_pwait
 * (one epoll instance per process, created after fork); signal also takes
 * accept.  ppoll, pselect and epoll_pwait pass a sigmask: the mask the
 * process has, changed as blocked/unmask/mask say.  Listeners are opened before the
 * fork, like a pre-fork server's; every mode prints "listener inode=N" for
 * each, so the caller can remove a shim segment a killed run leaves.
 * The first three modes end with
 *   calls=N bad=N errno_bad=N min_ms=X max_ms=Y
 * where bad counts calls with the wrong result and errno_bad successful
 * calls that changed errno; exit 0 if both are 0.
 * Time bounds are left to the caller.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/prctl.h>
#include <sys/select.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <time.h>
#include <ucontext.h>
#include <unistd.h>

#define MAX_PROCS 64
#define MAX_SPECS 30
#define ERRNO_MARK 4242

/* the signal mode's timeline, in ms from the common start */
#define WAIT_MS 600
#define QUEUE_AFTER_MS 50
#define SIGNAL_AT_MS 200
#define CONNECT_AT_MS 500
#define EARLY_MS 100

struct result {
    int calls, bad, errno_bad;
    double min_ms, max_ms;
};

enum disp { DISP_HANDLER, DISP_RESTART, DISP_DEFAULT, DISP_IGNORE, DISP_BLOCKED, DISP_UNMASK,
            DISP_MASK, NDISPS };

struct spec {
    int sig;
    enum disp disp;
    char text[16];            /* as given: TERM/handler */
};

/* one process of the signal and storm modes */
struct proc {
    int listener;
    int start_ms;             /* after the common start */
    const struct spec *spec;  /* NULL: quiet, never signalled */
    pid_t pid;
};

/* what a child of the signal and storm modes reports */
struct report {
    int index;
    char text[200];
};

static const char *call_name;
static int listener, ep = -1;
static volatile sig_atomic_t handled, handler_ms = -1, in_shim;
static double call_t0;        /* when the current call began (for handler_ms) */

static double now_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

static void sleep_until(double t)
{
    double left = t - now_ms();

    if (left > 0)
        usleep((useconds_t)(left * 1000));
}

/*
 * Counts runs and notes when the first ran, relative to the call's start.
 * in_shim counts runs that interrupted code with SIGUSR2 blocked: neither
 * this program nor any call's mask blocks it, only the shim around a wait.
 * That is the mask a p-call (ppoll, epoll_pwait) puts back when a handler
 * interrupts it, so one such run comes with each EINTR of the shim's
 * sleeps; a run without the call failing is a handler that ran during the
 * shim's own work, an interruption the call never reported.
 */
static void on_signal(int sig, siginfo_t *info, void *context)
{
    const ucontext_t *uc = context;
    int saved_errno = errno;

    (void)sig;
    (void)info;
    if (handled++ == 0)
        handler_ms = (sig_atomic_t)(now_ms() - call_t0);
    if (sigismember(&uc->uc_sigmask, SIGUSR2) == 1)
        in_shim++;
    errno = saved_errno;
}

static bool is_call(const char *name)
{
    return strcmp(call_name, name) == 0;
}

/* The calls that take a sigmask of their own. */
static bool masked_call(void)
{
    return is_call("ppoll") || is_call("pselect") || is_call("epoll_pwait");
}

static bool epoll_call(void)
{
    return is_call("epoll") || is_call("epoll_pwait");
}

static int open_listener(bool blocking)
{
    struct sockaddr_in addr = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
    int fd = socket(AF_INET, SOCK_STREAM | (blocking ? 0 : SOCK_NONBLOCK), 0);
    struct stat st;

    if (fd < 0 || bind(fd, (struct sockaddr *)&addr, sizeof(addr)) < 0 || listen(fd, 64) < 0 ||
        fstat(fd, &st) < 0) {
        perror("pollwait: listener");
        exit(2);
    }
    printf("listener inode=%lu\n", (unsigned long)st.st_ino);
    return fd;
}

/* One wait on the listener; timeout_ms < 0 = forever.  mask: for the p-calls. */
static int wait_once(int timeout_ms, const sigset_t *mask)
{
    struct timespec ts = { .tv_sec = timeout_ms / 1000, .tv_nsec = (timeout_ms % 1000) * 1000000L };
    struct timeval tv = { .tv_sec = timeout_ms / 1000, .tv_usec = (timeout_ms % 1000) * 1000L };
    struct pollfd p = { .fd = listener, .events = POLLIN };
    struct epoll_event ev;
    fd_set set;

    FD_ZERO(&set);
    FD_SET(listener, &set);
    if (is_call("poll"))
        return poll(&p, 1, timeout_ms);
    if (is_call("ppoll"))
        return ppoll(&p, 1, timeout_ms < 0 ? NULL : &ts, mask);
    if (is_call("select"))
        return select(listener + 1, &set, NULL, NULL, timeout_ms < 0 ? NULL : &tv);
    if (is_call("pselect"))
        return pselect(listener + 1, &set, NULL, NULL, timeout_ms < 0 ? NULL : &ts, mask);
    if (is_call("epoll_pwait"))
        return epoll_pwait(ep, &ev, 1, timeout_ms, mask);
    return epoll_wait(ep, &ev, 1, timeout_ms);
}

static void prepare_call(void)
{
    struct epoll_event ev = { .events = EPOLLIN, .data.fd = listener };

    if (!epoll_call())
        return;
    ep = epoll_create1(EPOLL_CLOEXEC);
    if (ep < 0 || epoll_ctl(ep, EPOLL_CTL_ADD, listener, &ev) < 0) {
        perror("pollwait: epoll");
        exit(2);
    }
}

static void note(struct result *r, double ms, bool ok)
{
    if (r->calls == 0 || ms < r->min_ms)
        r->min_ms = ms;
    if (ms > r->max_ms)
        r->max_ms = ms;
    r->calls++;
    r->bad += !ok;
}

static void run_timeouts(struct result *r, int timeout_ms, int rounds)
{
    for (int i = 0; i < rounds; i++) {
        double t0 = now_ms();
        int ret;

        errno = ERRNO_MARK;
        ret = wait_once(timeout_ms, NULL);
        note(r, now_ms() - t0, ret == 0);
        r->errno_bad += ret == 0 && errno != ERRNO_MARK;
        if (ret != 0 || errno != ERRNO_MARK)
            printf("pid %d: %s returned %d errno %d\n", getpid(), call_name, ret, errno);
    }
}

/* The quiet first process of eintr-queued: a plain timeout, no signal. */
static void run_quiet(struct result *r, int delay_ms)
{
    double t0 = now_ms();
    int ret = wait_once(3 * delay_ms, NULL);

    note(r, now_ms() - t0, ret == 0);
    if (ret != 0)
        printf("pid %d: quiet %s returned %d errno %d\n", getpid(), call_name, ret, errno);
}

static void run_eintr(struct result *r, int delay_ms)
{
    struct sigaction sa = { .sa_sigaction = on_signal, .sa_flags = SA_SIGINFO };   /* no SA_RESTART */
    struct itimerval it = { .it_value = { .tv_sec = delay_ms / 1000,
                                          .tv_usec = (delay_ms % 1000) * 1000L } };
    sigset_t block, during;
    double t0;
    int ret, err;

    sigemptyset(&sa.sa_mask);
    sigaction(SIGALRM, &sa, NULL);
    sigemptyset(&block);
    sigaddset(&block, SIGALRM);
    /* the p-calls: blocked outside the call, unblocked by its mask */
    if (masked_call())
        sigprocmask(SIG_BLOCK, &block, &during);
    else
        sigprocmask(SIG_BLOCK, NULL, &during);
    sigdelset(&during, SIGALRM);
    setitimer(ITIMER_REAL, &it, NULL);
    t0 = now_ms();
    ret = wait_once(-1, &during);
    err = errno;
    note(r, now_ms() - t0, ret == -1 && err == EINTR && handled == 1);
    if (ret != -1 || err != EINTR || handled != 1)
        printf("pid %d: %s returned %d errno %d alarms %d\n", getpid(), call_name, ret, err,
               (int)handled);
}

enum scenario { TIMEOUTS, EINTR_ALL, EINTR_QUEUED };

static void run_child(enum scenario what, int index, int ms, int rounds, struct result *r)
{
    switch (what) {
    case TIMEOUTS:
        run_timeouts(r, ms, rounds);
        break;
    case EINTR_ALL:
        run_eintr(r, ms);
        break;
    case EINTR_QUEUED:
        if (index == 0) {
            run_quiet(r, ms);
        } else {
            usleep(100 * 1000);       /* queue behind the first one */
            run_eintr(r, ms);
        }
        break;
    }
}

/* Fork procs children that start together; gather their results. */
static struct result run_children(int procs, enum scenario what, int ms, int rounds)
{
    struct result total = { 0 };
    int go[2], out[2];
    pid_t pids[MAX_PROCS];

    if (pipe(go) < 0 || pipe(out) < 0)
        exit(2);
    for (int i = 0; i < procs; i++) {
        pids[i] = fork();
        if (pids[i] == 0) {
            struct result r = { 0 };
            char c;
            prctl(PR_SET_PDEATHSIG, SIGKILL);   /* a killed run leaves no waiter behind */
            close(go[1]);
            prepare_call();
            if (what != TIMEOUTS)
                wait_once(0, NULL);   /* attach (or create) the segment now, not timed */
            if (read(go[0], &c, 1) < 0)
                _exit(2);
            run_child(what, i, ms, rounds, &r);
            fflush(stdout);
            _exit(write(out[1], &r, sizeof(r)) == (ssize_t)sizeof(r) ? 0 : 2);
        }
    }
    close(go[0]);
    close(go[1]);                     /* everyone starts now */
    close(out[1]);
    for (int i = 0; i < procs; i++) {
        struct result r;
        if (read(out[0], &r, sizeof(r)) != (ssize_t)sizeof(r)) {
            total.bad++;
            continue;
        }
        printf("proc calls=%d bad=%d errno_bad=%d min_ms=%.1f max_ms=%.1f\n", r.calls, r.bad,
               r.errno_bad, r.min_ms, r.max_ms);
        if (total.calls == 0 || r.min_ms < total.min_ms)
            total.min_ms = r.min_ms;
        if (r.max_ms > total.max_ms)
            total.max_ms = r.max_ms;
        total.calls += r.calls;
        total.bad += r.bad;
        total.errno_bad += r.errno_bad;
    }
    for (int i = 0; i < procs; i++)
        waitpid(pids[i], NULL, 0);
    return total;
}

/* ---- the signal and storm modes ------------------------------------- */

static void usage(void)
{
    fprintf(stderr,
            "usage: pollwait timeout CALL PROCS TIMEOUT_MS ROUNDS\n"
            "       pollwait eintr|eintr-queued CALL PROCS DELAY_MS\n"
            "       pollwait signal CALL queued|holder SIG/DISP...\n"
            "       pollwait storm CALL MS SIG/DISP...\n"
            "CALL: poll ppoll select pselect epoll epoll_pwait (signal: also accept)\n"
            "SIG: TERM HUP CHLD ALRM USR1\n"
            "DISP: handler restart default ignore blocked unmask mask\n");
    exit(2);
}

static void parse_spec(const char *arg, struct spec *s)
{
    static const struct { const char *name; int sig; } sigs[] = {
        { "TERM", SIGTERM }, { "HUP", SIGHUP }, { "CHLD", SIGCHLD },
        { "ALRM", SIGALRM }, { "USR1", SIGUSR1 },
    };
    static const char *const disps[] = { "handler", "restart", "default", "ignore", "blocked",
                                         "unmask", "mask" };
    const char *slash = strchr(arg, '/');

    s->sig = 0;
    for (size_t i = 0; slash && i < sizeof(sigs) / sizeof(sigs[0]); i++)
        if (strncmp(arg, sigs[i].name, (size_t)(slash - arg)) == 0 &&
            strlen(sigs[i].name) == (size_t)(slash - arg))
            s->sig = sigs[i].sig;
    for (s->disp = 0; slash && s->disp < NDISPS && strcmp(slash + 1, disps[s->disp]) != 0;)
        s->disp++;
    if (s->sig == 0 || s->disp == NDISPS || strlen(arg) >= sizeof(s->text) ||
        ((s->disp == DISP_DEFAULT || s->disp == DISP_BLOCKED) && s->sig != SIGCHLD) ||
        ((s->disp == DISP_UNMASK || s->disp == DISP_MASK) && !masked_call()))
        usage();
    strcpy(s->text, arg);
}

/*
 * Set up a process's disposition for its spec (quiet: none) and the mask
 * its call passes: the process's own, changed for unmask and mask.
 */
static void apply_spec(const struct spec *s, sigset_t *call_mask)
{
    struct sigaction sa = { .sa_sigaction = on_signal, .sa_flags = SA_SIGINFO };
    sigset_t one;

    sigprocmask(SIG_BLOCK, NULL, call_mask);
    if (s == NULL)
        return;
    sigemptyset(&sa.sa_mask);
    sigemptyset(&one);
    sigaddset(&one, s->sig);
    if (s->disp == DISP_RESTART)
        sa.sa_flags |= SA_RESTART;
    if (s->disp == DISP_DEFAULT || s->disp == DISP_BLOCKED) {
        sa.sa_flags = 0;
        sa.sa_handler = SIG_DFL;
    }
    if (s->disp == DISP_IGNORE)
        signal(s->sig, SIG_IGN);      /* the other way programs set dispositions */
    else
        sigaction(s->sig, &sa, NULL);
    if (s->disp == DISP_BLOCKED) {
        sigprocmask(SIG_BLOCK, &one, NULL);
        sigaddset(call_mask, s->sig);
    } else if (s->disp == DISP_UNMASK) {
        sigprocmask(SIG_BLOCK, &one, NULL);
        sigdelset(call_mask, s->sig);
    } else if (s->disp == DISP_MASK) {
        sigaddset(call_mask, s->sig);
    }
}

/* Blocking accept; the connection is closed at once (the class is all we want). */
static int accept_once(void)
{
    int fd = accept(listener, NULL, NULL);

    if (fd >= 0)
        close(fd);
    return fd;
}

static void classify(char *buf, size_t len, int ret, int err, double ret_ms, int sig)
{
    char cls[32];
    bool intr = ret < 0 && err == EINTR;
    const char *when = handled == 0 ? "none" : handled > 1 ? "many" : in_shim && !intr ? "in-shim"
                     : ret_ms - handler_ms > EARLY_MS ? "early" : "at-return";
    sigset_t pending;

    if (sig && sigpending(&pending) == 0 && sigismember(&pending, sig) == 1)
        when = handled ? "ran-and-pending" : "pending";

    if (intr)
        strcpy(cls, "EINTR");
    else if (ret < 0)
        snprintf(cls, sizeof(cls), "ERR-%d", err);
    else if (ret > 0 && !is_call("accept"))
        strcpy(cls, "READY");
    else
        strcpy(cls, err == ERRNO_MARK ? "DONE" : "DONE-errno-changed");
    snprintf(buf, len, "class=%s handler=%s ret_ms=%.0f handler_ms=%d", cls, when, ret_ms,
             (int)handler_ms);
}

/* One call of the signal mode, after the common start (go). */
static void signal_call(const struct proc *p, const sigset_t *mask, struct report *rep)
{
    int ret, err;

    usleep((useconds_t)p->start_ms * 1000);
    call_t0 = now_ms();
    errno = ERRNO_MARK;
    ret = is_call("accept") ? accept_once() : wait_once(WAIT_MS, mask);
    err = errno;
    classify(rep->text, sizeof(rep->text), ret, err, now_ms() - call_t0, p->spec ? p->spec->sig : 0);
}

/* The stormed loop: short waits for ms, counting EINTR and handler runs. */
static void storm_calls(const sigset_t *mask, int ms, struct report *rep)
{
    double end = now_ms() + ms;
    int calls = 0, eintr = 0, other = 0, lost = 0;

    call_t0 = now_ms();
    while (now_ms() < end) {
        int before = in_shim, ret = wait_once(5, mask);
        bool intr = ret < 0 && errno == EINTR;

        calls++;
        eintr += intr;
        lost += in_shim - before > intr;    /* see on_signal */
        if (ret < 0 && errno != EINTR)
            other = errno;
    }
    if (other)
        snprintf(rep->text, sizeof(rep->text), "class=ERR-%d calls=%d", other, calls);
    else
        snprintf(rep->text, sizeof(rep->text), "class=%s calls=%d eintr=%d handled=%d lost=%d",
                 eintr ? "EINTR" : "DONE", calls, eintr, (int)handled, lost);
}

/*
 * A child of the signal and storm modes: set up, say ready, wait for the
 * common start, run, report.  It dies with the parent, so a killed run
 * leaves no accept blocked forever.
 */
static void proc_main(const struct proc *p, int index, int fds[3], int storm_ms)
{
    struct report rep = { .index = index };
    sigset_t mask;
    char c = 0;

    prctl(PR_SET_PDEATHSIG, SIGKILL);
    listener = p->listener;
    prepare_call();
    if (!is_call("accept"))
        wait_once(0, NULL);           /* attach (or create) the segment now */
    apply_spec(p->spec, &mask);
    if (write(fds[1], &c, 1) != 1 || read(fds[0], &c, 1) < 0)
        _exit(2);
    if (storm_ms)
        storm_calls(&mask, storm_ms, &rep);
    else
        signal_call(p, &mask, &rep);
    _exit(write(fds[2], &rep, sizeof(rep)) == (ssize_t)sizeof(rep) ? 0 : 2);
}

/*
 * Fork one child per proc, wait until all are set up (a signal must not
 * find a default disposition), start them; returns the pipe the reports
 * come on.
 */
static int start_procs(struct proc *procs, int n, int storm_ms)
{
    int ready[2], go[2], out[2], fds[3];
    char c;

    if (pipe(ready) < 0 || pipe(go) < 0 || pipe(out) < 0)
        exit(2);
    fds[0] = go[0];
    fds[1] = ready[1];
    fds[2] = out[1];
    fflush(stdout);
    for (int i = 0; i < n; i++) {
        procs[i].pid = fork();
        if (procs[i].pid < 0)
            exit(2);
        if (procs[i].pid == 0) {
            close(go[1]);
            proc_main(&procs[i], i, fds, storm_ms);
        }
    }
    close(ready[1]);
    for (int i = 0; i < n; i++)
        if (read(ready[0], &c, 1) != 1)
            break;                    /* a child died: its report will be missing */
    close(ready[0]);
    close(go[0]);
    close(go[1]);                     /* everyone starts now */
    close(out[1]);
    return out[0];
}

/* Print the reports in process order; returns how many came. */
static int collect(int out, struct proc *procs, int n)
{
    struct report reps[MAX_PROCS], r;
    int got = 0;

    for (int i = 0; i < n; i++)
        reps[i].index = -1;
    while (read(out, &r, sizeof(r)) == (ssize_t)sizeof(r))
        if (r.index >= 0 && r.index < n) {
            reps[r.index] = r;
            got++;
        }
    for (int i = 0; i < n; i++)
        printf("proc=%d spec=%s %s\n", i, procs[i].spec ? procs[i].spec->text : "quiet",
               reps[i].index == i ? reps[i].text : "class=NO-REPORT");
    for (int i = 0; i < n; i++)
        waitpid(procs[i].pid, NULL, 0);
    printf("procs=%d reported=%d\n", n, got);
    return got;
}

static void connect_to(int fd)
{
    struct sockaddr_in addr;
    socklen_t len = sizeof(addr);
    int c = socket(AF_INET, SOCK_STREAM, 0);

    if (c >= 0 && getsockname(fd, (struct sockaddr *)&addr, &len) == 0)
        connect(c, (struct sockaddr *)&addr, len);
    if (c >= 0)
        close(c);
}

/* The processes of a signal-mode shape (see the top of this file). */
static int build_shape(const char *shape, const struct spec *specs, int nspec, struct proc *procs)
{
    bool blocking = is_call("accept");
    int n = 0;

    if (strcmp(shape, "queued") == 0) {
        int l = open_listener(blocking);
        procs[n++] = (struct proc){ .listener = l };
        for (int i = 0; i < nspec; i++)
            procs[n++] = (struct proc){ .listener = l, .start_ms = QUEUE_AFTER_MS, .spec = &specs[i] };
    } else if (strcmp(shape, "holder") == 0) {
        for (int i = 0; i < nspec; i++) {
            int l = open_listener(blocking);
            procs[n++] = (struct proc){ .listener = l, .spec = &specs[i] };
            procs[n++] = (struct proc){ .listener = l, .start_ms = QUEUE_AFTER_MS };
        }
    } else {
        usage();
    }
    return n;
}

static int run_signal(const char *shape, char **args, int nargs)
{
    struct spec specs[MAX_SPECS];
    struct proc procs[MAX_PROCS];
    double start;
    int n, out;

    if (nargs < 1 || nargs > MAX_SPECS)
        usage();
    for (int i = 0; i < nargs; i++)
        parse_spec(args[i], &specs[i]);
    n = build_shape(shape, specs, nargs, procs);
    out = start_procs(procs, n, 0);
    start = now_ms();
    sleep_until(start + SIGNAL_AT_MS);
    for (int i = 0; i < n; i++)
        if (procs[i].spec)
            kill(procs[i].pid, procs[i].spec->sig);
    if (is_call("accept")) {
        sleep_until(start + CONNECT_AT_MS);
        for (int i = 0; i < n; i++)
            connect_to(procs[i].listener);
    }
    return collect(out, procs, n) == n ? 0 : 1;
}

static int run_storm(int ms, char **args, int nargs)
{
    struct spec specs[MAX_SPECS];
    struct proc procs[MAX_PROCS];
    double end;
    int l, out, n = nargs + 1;

    if (ms < 1 || nargs < 1 || nargs > MAX_SPECS || is_call("accept"))
        usage();
    l = open_listener(false);
    procs[0] = (struct proc){ .listener = l };
    for (int i = 0; i < nargs; i++) {
        parse_spec(args[i], &specs[i]);
        procs[i + 1] = (struct proc){ .listener = l, .spec = &specs[i] };
    }
    out = start_procs(procs, n, ms);
    end = now_ms() + ms;
    while (now_ms() < end)
        for (int i = 1; i < n; i++)
            kill(procs[i].pid, procs[i].spec->sig);
    return collect(out, procs, n) == n ? 0 : 1;
}

static void check_call(bool accept_ok)
{
    static const char *const calls[] = { "poll", "ppoll", "select", "pselect", "epoll",
                                         "epoll_pwait", "accept" };

    for (size_t i = 0; i < sizeof(calls) / sizeof(calls[0]); i++)
        if (is_call(calls[i]) && (accept_ok || !is_call("accept")))
            return;
    usage();
}

int main(int argc, char **argv)
{
    struct result total;
    enum scenario what;
    int procs;

    if (argc < 3)
        usage();
    call_name = argv[2];
    setvbuf(stdout, NULL, _IOLBF, 0);
    if (strcmp(argv[1], "signal") == 0 && argc >= 5) {
        check_call(true);
        return run_signal(argv[3], argv + 4, argc - 4);
    }
    check_call(false);
    if (strcmp(argv[1], "storm") == 0 && argc >= 5)
        return run_storm(atoi(argv[3]), argv + 4, argc - 4);
    if (argc == 6 && strcmp(argv[1], "timeout") == 0)
        what = TIMEOUTS;
    else if (argc == 5 && strcmp(argv[1], "eintr") == 0)
        what = EINTR_ALL;
    else if (argc == 5 && strcmp(argv[1], "eintr-queued") == 0)
        what = EINTR_QUEUED;
    else
        usage();
    procs = atoi(argv[3]);
    if (procs < 1 || procs > MAX_PROCS)
        usage();
    listener = open_listener(false);
    total = run_children(procs, what, atoi(argv[4]), what == TIMEOUTS ? atoi(argv[5]) : 1);
    printf("calls=%d bad=%d errno_bad=%d min_ms=%.1f max_ms=%.1f\n", total.calls, total.bad,
           total.errno_bad, total.min_ms, total.max_ms);
    return total.bad || total.errno_bad ? 1 : 0;
}

/*
 * killat - kill -9 a worker at a chosen point of its life, for the
 * process-death tests (tests/death.sh).
 *
 *   killat [-n] [-t TIMEOUT_MS] [-s SEGMENT] PID WHEN
 *
 * Attaches to PID with ptrace, follows its system calls and sends SIGKILL
 * at the entry of the first call that matches WHEN:
 *   wait    a wait: poll, ppoll, select, pselect6, epoll_wait/pwait/pwait2,
 *           FUTEX_WAIT (the queue lock) or restart_syscall, while the
 *           worker has no TCP connection in hand.  A lock holder in its
 *           real wait, a waiter queued for the lock, an idle worker.
 *   holder  a wait, as above, while PID holds the lock of SEGMENT (the
 *           /dev/shm file of the listener): the holder going back to, or
 *           sleeping in, its real wait.
 *   queued  a wait, as above, while PID has a thread queued in SEGMENT.
 *   accept  accept or accept4: woken for a connection that is still in
 *           the listen queue (under the lock mode the worker holds the
 *           lock here).
 *   rotate  epoll_ctl(EPOLL_CTL_ADD) while a TCP connection is in hand:
 *           between the DEL and the ADD of the rotation after an accept.
 *           The connection in hand dies with the worker, as it would
 *           with or without any shim; the test counts it apart.
 *
 * A connection is "in hand" when one of PID's fds is a TCP socket that is
 * not listening (/proc/PID/fd against /proc/net/tcp and tcp6).  Waiting
 * for the point, not guessing it from outside, is what makes "no
 * connection lost" a claim about the shim rather than about luck.
 *
 * -n (dry run) lets PID go on at the point instead: what the tracing alone
 * costs the server.
 * Prints "killed pid=PID at=WHEN syscall=NR in_hand=0|1" and exits 0; exits 3 with
 * "not reached" if PID did not get there within TIMEOUT_MS (default 3000;
 * ptrace lets go of it when we exit), 2 on error (PID gone, no ptrace).
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <fcntl.h>
#include <errno.h>
#include <linux/futex.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/mman.h>
#include <sys/ptrace.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include "segcore.h"

enum when { AT_WAIT, AT_HOLDER, AT_QUEUED, AT_ACCEPT, AT_ROTATE };
static const char *const when_names[] = { "wait", "holder", "queued", "accept", "rotate" };

/* The listener's segment, for holder and queued (read only: PID is
 * stopped while we look, so its part of the lock cannot change). */
static const volatile struct th_seg *seg;
static bool dry_run;

#define MAX_FDS 1024

static void on_timeout(int sig)
{
    (void)sig;
    /* exiting detaches the tracee, which goes on as if nothing happened */
    static const char msg[] = "not reached\n";
    (void)!write(STDOUT_FILENO, msg, sizeof msg - 1);
    _exit(3);
}

static bool is_wait_call(const struct __ptrace_syscall_info *si)
{
    long nr = (long)si->entry.nr;

    if (nr == SYS_futex) {
        int op = (int)si->entry.args[1] & FUTEX_CMD_MASK;
        return op == FUTEX_WAIT || op == FUTEX_WAIT_BITSET;
    }
    return nr == SYS_ppoll || nr == SYS_pselect6 || nr == SYS_epoll_pwait ||
#ifdef SYS_poll
           nr == SYS_poll ||
#endif
#ifdef SYS_select
           nr == SYS_select ||
#endif
#ifdef SYS_epoll_wait
           nr == SYS_epoll_wait ||
#endif
#ifdef SYS_epoll_pwait2
           nr == SYS_epoll_pwait2 ||
#endif
           nr == SYS_restart_syscall;
}

static bool is_accept_call(const struct __ptrace_syscall_info *si)
{
    long nr = (long)si->entry.nr;
#ifdef SYS_accept
    if (nr == SYS_accept)
        return true;
#endif
    return nr == SYS_accept4;
}

static bool is_rotation_add(const struct __ptrace_syscall_info *si)
{
    return (long)si->entry.nr == SYS_epoll_ctl && (int)si->entry.args[1] == EPOLL_CTL_ADD;
}

/* The socket inodes among PID's open fds; returns how many. */
static int socket_inodes(pid_t pid, unsigned long *inodes, int max)
{
    char dir_path[64], link_path[384], target[64];
    int n = 0;

    snprintf(dir_path, sizeof dir_path, "/proc/%d/fd", (int)pid);
    DIR *dir = opendir(dir_path);
    if (!dir)
        return 0;
    for (struct dirent *e; (e = readdir(dir)) && n < max;) {
        snprintf(link_path, sizeof link_path, "%s/%s", dir_path, e->d_name);
        ssize_t len = readlink(link_path, target, sizeof target - 1);
        if (len <= 0)
            continue;
        target[len] = '\0';
        if (sscanf(target, "socket:[%lu]", &inodes[n]) == 1)
            n++;
    }
    closedir(dir);
    return n;
}

/* Is one of the inodes a TCP socket that is not listening (state 0A)? */
static bool connection_among(const char *table, const unsigned long *inodes, int n)
{
    char line[512];
    FILE *f = fopen(table, "r");
    bool found = false;

    if (!f)
        return false;
    while (!found && fgets(line, sizeof line, f)) {
        unsigned state;
        unsigned long inode;
        /* sl local rem st tx:rx tr:when retrnsmt uid timeout inode */
        if (sscanf(line, " %*s %*s %*s %x %*s %*s %*s %*s %*s %lu", &state, &inode) != 2)
            continue;
        for (int i = 0; i < n && !found; i++)
            found = inode == inodes[i] && state != 0x0A;
    }
    fclose(f);
    return found;
}

static bool connection_in_hand(pid_t pid)
{
    unsigned long inodes[MAX_FDS];
    int n = socket_inodes(pid, inodes, MAX_FDS);

    return n > 0 && (connection_among("/proc/net/tcp", inodes, n) ||
                     connection_among("/proc/net/tcp6", inodes, n));
}

static bool holds_lock(pid_t pid)
{
    return seg->holder_pid == pid;
}

static bool is_queued(pid_t pid)
{
    for (int i = 0; i < TH_MAX_WAITERS; i++)
        if (seg->waiters[i].pid == pid && seg->waiters[i].state == TH_W_QUEUED)
            return true;
    return false;
}

/* Is this system call the one WHEN waits for? */
static bool is_the_call(pid_t pid, enum when when, const struct __ptrace_syscall_info *si)
{
    switch (when) {
    case AT_WAIT: return is_wait_call(si);
    case AT_HOLDER: return is_wait_call(si) && holds_lock(pid);
    case AT_QUEUED: return is_wait_call(si) && is_queued(pid);
    case AT_ACCEPT: return is_accept_call(si);
    case AT_ROTATE: return is_rotation_add(si);
    }
    return false;
}

/* Does this syscall entry stop match WHEN?  Sets *in_hand.  Only the
 * rotation is caught with a connection in hand: it comes after an accept. */
static bool is_the_point(pid_t pid, enum when when, const struct __ptrace_syscall_info *si,
                         bool *in_hand)
{
    if (!is_the_call(pid, when, si))
        return false;
    *in_hand = connection_in_hand(pid);
    return *in_hand == (when == AT_ROTATE);
}

static int parse_when(const char *s, enum when *when)
{
    for (int i = 0; i < (int)(sizeof when_names / sizeof *when_names); i++) {
        if (strcmp(s, when_names[i]) == 0) {
            *when = (enum when)i;
            return 0;
        }
    }
    return -1;
}

/* Follows PID's system calls until the point; returns the exit status. */
static int follow_until(pid_t pid, enum when when)
{
    int status;
    unsigned pending_signal = 0;

    for (;;) {
        if (ptrace(PTRACE_SYSCALL, pid, 0, (void *)(unsigned long)pending_signal) < 0) {
            perror("killat: PTRACE_SYSCALL");
            return 2;
        }
        pending_signal = 0;
        if (waitpid(pid, &status, __WALL) < 0) {
            perror("killat: waitpid");
            return 2;
        }
        if (WIFEXITED(status) || WIFSIGNALED(status)) {
            fprintf(stderr, "killat: %d exited on its own\n", (int)pid);
            return 2;
        }
        if (!WIFSTOPPED(status))
            continue;
        if (WSTOPSIG(status) != (SIGTRAP | 0x80)) {
            /* a signal for the worker (hand it on) or our own stop event */
            if ((status >> 16) != PTRACE_EVENT_STOP)
                pending_signal = (unsigned)WSTOPSIG(status);
            continue;
        }
        struct __ptrace_syscall_info si;
        bool in_hand = false;
        if (ptrace(PTRACE_GET_SYSCALL_INFO, pid, sizeof si, &si) <= 0 ||
            si.op != PTRACE_SYSCALL_INFO_ENTRY || !is_the_point(pid, when, &si, &in_hand))
            continue;
        if (!dry_run)
            kill(pid, SIGKILL);
        printf("%s pid=%d at=%s syscall=%llu in_hand=%d\n", dry_run ? "reached" : "killed", (int)pid, when_names[when],
               (unsigned long long)si.entry.nr, in_hand);
        return 0;
    }
}

/* Checked and mapped read-only by the segment core. */
static int map_segment(const char *path)
{
    const char *why = NULL;
    int fd = th_seg_open_file(path, geteuid(), false, false, &why);
    struct th_seg *p = fd < 0 ? NULL : th_seg_map(fd, false);

    if (fd >= 0) {
        why = p ? NULL : strerror(errno);
        th_seg_close(fd);
    }
    if (p == NULL) {
        fprintf(stderr, "killat: cannot map %s: %s\n", path, why && *why ? why : "gone");
        return -1;
    }
    seg = p;
    return 0;
}

static int usage(void)
{
    fprintf(stderr, "usage: killat [-n] [-t TIMEOUT_MS] [-s SEGMENT] PID "
                    "wait|holder|queued|accept|rotate\n");
    return 2;
}

int main(int argc, char **argv)
{
    enum when when;
    long timeout_ms = 3000;
    const char *segment = NULL;

    for (int opt; (opt = getopt(argc, argv, "nt:s:")) != -1;) {
        if (opt == 'n')
            dry_run = true;
        else if (opt == 't')
            timeout_ms = atol(optarg);
        else if (opt == 's')
            segment = optarg;
        else
            return usage();
    }
    if (argc - optind != 2 || parse_when(argv[optind + 1], &when) < 0)
        return usage();
    pid_t pid = (pid_t)atoi(argv[optind]);
    if (pid <= 0 || timeout_ms <= 0) {
        fprintf(stderr, "killat: bad PID or TIMEOUT_MS\n");
        return 2;
    }
    if ((when == AT_HOLDER || when == AT_QUEUED) && (!segment || map_segment(segment) < 0))
        return usage();
    signal(SIGALRM, on_timeout);
    alarm((unsigned)((timeout_ms + 999) / 1000));

    if (ptrace(PTRACE_SEIZE, pid, 0, (void *)PTRACE_O_TRACESYSGOOD) < 0 ||
        ptrace(PTRACE_INTERRUPT, pid, 0, 0) < 0) {
        fprintf(stderr, "killat: cannot trace %d: %s\n", (int)pid, strerror(errno));
        return 2;
    }
    int status;
    if (waitpid(pid, &status, __WALL) < 0 || !WIFSTOPPED(status)) {
        fprintf(stderr, "killat: %d did not stop\n", (int)pid);
        return 2;
    }
    return follow_until(pid, when);
}

/*
 * A minimal TAP harness for the unit tests.
 *
 * Each case runs in its own forked process (and process group): a case
 * that crashes, hangs or leaves contending children behind is reported as
 * "not ok" and cleaned up, and the next case starts from a fresh copy of
 * the shim's global state (th_cfg, per-thread facts).  Output is one
 * "ok N - name" / "not ok N - name" line per case, diagnostics as "# ..."
 * lines, and the plan "1..N" first, as tests/run-all.sh expects.
 */
#pragma once

#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define TAP_CASE_TIMEOUT_S 30     /* far above any case's normal run time */
#define TAP_SKIP_STATUS 77        /* a case exits with this to be skipped */

struct tap_case {
    const char *name;
    void (*fn)(void);
};

/* Set in the case process when an expectation fails; its exit status. */
static int tap_case_failed;

/* Run in each case's process before the case (main may set it). */
static void (*tap_setup)(void);

static inline void tap_diag(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static inline void tap_diag(const char *fmt, ...)
{
    va_list ap;

    fputs("# ", stdout);
    va_start(ap, fmt);
    vprintf(fmt, ap);
    va_end(ap);
    fputc('\n', stdout);
    fflush(stdout);
}

static inline void tap_expect(bool ok, const char *file, int line, const char *what)
{
    if (ok)
        return;
    tap_case_failed = 1;
    tap_diag("%s:%d: expected %s", file, line, what);
}

/* EXPECT(cond): record a failure and go on, so one run shows every problem. */
#define EXPECT(cond) tap_expect((cond), __FILE__, __LINE__, #cond)
/* EXPECT_EQ for integers: shows both values. */
#define EXPECT_EQ(a, b)                                                          \
    do {                                                                         \
        long long tap_a_ = (long long)(a), tap_b_ = (long long)(b);              \
        if (tap_a_ != tap_b_) {                                                  \
            tap_case_failed = 1;                                                 \
            tap_diag("%s:%d: expected %s == %s, got %lld and %lld", __FILE__,    \
                     __LINE__, #a, #b, tap_a_, tap_b_);                          \
        }                                                                        \
    } while (0)
/* REQUIRE(cond): a precondition; without it the rest of the case is moot. */
#define REQUIRE(cond)                                                            \
    do {                                                                         \
        if (!(cond)) {                                                           \
            tap_diag("%s:%d: required %s", __FILE__, __LINE__, #cond);           \
            exit(1);                                                             \
        }                                                                        \
    } while (0)

static inline void tap_skip(const char *why)
{
    tap_diag("SKIP %s", why);
    exit(TAP_SKIP_STATUS);
}

static inline double tap_now_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

/* Wait for the case process, killing its whole group when it overstays. */
static inline int tap_wait_case(pid_t pid, bool *timed_out)
{
    double until = tap_now_ms() + TAP_CASE_TIMEOUT_S * 1000.0;
    int status = 0;

    *timed_out = false;
    while (waitpid(pid, &status, WNOHANG) == 0) {
        if (tap_now_ms() > until) {
            *timed_out = true;
            kill(-pid, SIGKILL);
            waitpid(pid, &status, 0);
            break;
        }
        usleep(2000);
    }
    kill(-pid, SIGKILL);          /* children the case left behind */
    return status;
}

/* Print what the case wrote, every line as a TAP diagnostic. */
static inline void tap_print_output(int fd)
{
    char buf[4096];
    bool line_start = true;
    ssize_t n;

    for (off_t off = 0; (n = pread(fd, buf, sizeof(buf), off)) > 0; off += n) {
        for (ssize_t i = 0; i < n; i++) {
            if (line_start && buf[i] != '#')
                fputs("# ", stdout);
            fputc(buf[i], stdout);
            line_start = buf[i] == '\n';
        }
    }
    if (!line_start)
        fputc('\n', stdout);
}

static inline void tap_print_result(int n, const char *name, int status, bool timed_out)
{
    if (timed_out)
        printf("not ok %d - %s\n# timed out after %d s\n", n, name, TAP_CASE_TIMEOUT_S);
    else if (WIFSIGNALED(status))
        printf("not ok %d - %s\n# crashed: signal %d (%s)\n", n, name, WTERMSIG(status),
               strsignal(WTERMSIG(status)));
    else if (WEXITSTATUS(status) == TAP_SKIP_STATUS)
        printf("ok %d - %s # SKIP\n", n, name);
    else
        printf("%s %d - %s\n", WEXITSTATUS(status) ? "not ok" : "ok", n, name);
}

/*
 * One case in its own process; its stdout and stderr go to a memory file
 * that is printed after the result line, where TAP readers expect the
 * diagnostics of a test.
 */
static inline bool tap_run_one(int n, const struct tap_case *c, void (*cleanup)(pid_t))
{
    int out = memfd_create("tap-case", MFD_CLOEXEC);
    bool timed_out;
    pid_t pid;
    int status;

    fflush(stdout);
    pid = fork();
    if (pid == 0) {
        setpgid(0, 0);
        if (out >= 0) {
            dup2(out, STDOUT_FILENO);
            dup2(out, STDERR_FILENO);
        }
        if (tap_setup)
            tap_setup();
        c->fn();
        fflush(stdout);
        exit(tap_case_failed);
    }
    if (pid < 0) {
        printf("not ok %d - %s\n# fork: %s\n", n, c->name, strerror(errno));
        return false;
    }
    setpgid(pid, pid);            /* also here: no race with an early kill */
    status = tap_wait_case(pid, &timed_out);
    if (cleanup)
        cleanup(pid);
    tap_print_result(n, c->name, status, timed_out);
    if (out >= 0) {
        tap_print_output(out);
        close(out);
    }
    fflush(stdout);
    return !timed_out && WIFEXITED(status) &&
           (WEXITSTATUS(status) == 0 || WEXITSTATUS(status) == TAP_SKIP_STATUS);
}

/*
 * Run every case; cleanup(pid) runs after each one (e.g. to remove the
 * segments a crashed case could not).  Returns the exit status for main.
 */
static inline int tap_run(const struct tap_case *cases, size_t ncases, void (*cleanup)(pid_t))
{
    int failed = 0;

    setvbuf(stdout, NULL, _IOLBF, 0);
    printf("1..%zu\n", ncases);
    for (size_t i = 0; i < ncases; i++)
        failed += !tap_run_one((int)i + 1, &cases[i], cleanup);
    return failed ? 1 : 0;
}

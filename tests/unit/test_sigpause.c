/*
 * th_sig_pause (signals.c): the pause a blocking accept takes in a burst
 * keeps accept's own signal semantics.  A signal that arrives while it
 * sleeps is delivered at its end; a handler without SA_RESTART makes it
 * report an interruption (the accept then fails with EINTR, as the
 * kernel's would), a handler with SA_RESTART does not (the kernel
 * restarts accept), and a signal the caller blocks stays pending.
 *
 * Another thread sends the signal 20 ms into a pause of 1 s: wide
 * margins, only the order matters.
 */
#include "thunder.h"
#include "tap.h"

#include <pthread.h>

#define PAUSE_MS 1000
#define SEND_AFTER_MS 20

static volatile sig_atomic_t handled;

static void on_signal(int sig TH_UNUSED)
{
    handled++;
}

static void install(int sig, void (*handler)(int), int flags)
{
    struct sigaction sa = { .sa_handler = handler, .sa_flags = flags };

    sigemptyset(&sa.sa_mask);
    REQUIRE(sigaction(sig, &sa, NULL) == 0);
}

struct sender {
    pthread_t target;
    int sig;
};

static void *send_later(void *arg)
{
    const struct sender *s = arg;
    struct timespec ts = { .tv_nsec = SEND_AFTER_MS * 1000000L };

    nanosleep(&ts, NULL);
    pthread_kill(s->target, s->sig);
    return NULL;
}

/* th_sig_pause(PAUSE_MS) with sig sent to this thread during it. */
static bool pause_with_signal(int sig, double *took_ms)
{
    struct sender s = { .target = pthread_self(), .sig = sig };
    pthread_t thread;
    double start = tap_now_ms();
    bool interrupted;

    th_resolve();
    REQUIRE(pthread_create(&thread, NULL, send_later, &s) == 0);
    interrupted = th_sig_pause(PAUSE_MS);
    *took_ms = tap_now_ms() - start;
    pthread_join(thread, NULL);
    return interrupted;
}

static void test_quiet_pause(void)
{
    double start = tap_now_ms();

    th_resolve();
    errno = EBADF;
    EXPECT(!th_sig_pause(50));
    EXPECT(tap_now_ms() - start >= 45);
    EXPECT_EQ(errno, EBADF);                /* kept */
}

static void test_handler_without_restart_interrupts(void)
{
    double took;

    install(SIGUSR1, on_signal, 0);
    EXPECT(pause_with_signal(SIGUSR1, &took));
    EXPECT_EQ(handled, 1);                  /* delivered at the end of the pause */
    EXPECT(took >= PAUSE_MS - 50);          /* held, not cut short */
}

static void test_handler_with_restart_does_not(void)
{
    double took;

    install(SIGUSR1, on_signal, SA_RESTART);
    EXPECT(!pause_with_signal(SIGUSR1, &took));
    EXPECT_EQ(handled, 1);
}

static void test_ignored_signal_does_not(void)
{
    double took;

    install(SIGUSR1, SIG_IGN, 0);
    EXPECT(!pause_with_signal(SIGUSR1, &took));
    EXPECT_EQ(handled, 0);
}

static void test_callers_blocked_signal_stays_pending(void)
{
    sigset_t set, pending;
    double took;

    install(SIGUSR1, on_signal, 0);
    sigemptyset(&set);
    sigaddset(&set, SIGUSR1);
    REQUIRE(pthread_sigmask(SIG_BLOCK, &set, NULL) == 0);
    EXPECT(!pause_with_signal(SIGUSR1, &took));
    EXPECT_EQ(handled, 0);
    REQUIRE(sigpending(&pending) == 0);
    EXPECT(sigismember(&pending, SIGUSR1) == 1);
    REQUIRE(pthread_sigmask(SIG_BLOCK, NULL, &set) == 0);
    EXPECT(sigismember(&set, SIGUSR1) == 1); /* the caller's mask is back */
}

static const struct tap_case cases[] = {
    { "no signal: sleeps, not interrupted", test_quiet_pause },
    { "handler without SA_RESTART: delivered at the end, interrupts",
      test_handler_without_restart_interrupts },
    { "handler with SA_RESTART: delivered, does not interrupt",
      test_handler_with_restart_does_not },
    { "ignored signal: does not interrupt", test_ignored_signal_does_not },
    { "signal the caller blocks: stays pending, mask unchanged",
      test_callers_blocked_signal_stays_pending },
};

int main(void)
{
    return tap_run(cases, TH_ARRAY_LEN(cases), NULL);
}

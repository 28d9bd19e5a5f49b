/*
 * The one place for time arithmetic.  Every wait call turns its timeout
 * into an absolute CLOCK_MONOTONIC deadline on entry, so time spent waiting
 * for the lock is charged against the caller's timeout, and whatever is
 * left goes to the real call.
 */
#include "thunder.h"

int64_t th_now_ns(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * TH_NS_PER_S + ts.tv_nsec;
}

static int64_t after_ns(int64_t ns)
{
    int64_t now = th_now_ns();

    return ns >= TH_FOREVER - now ? TH_FOREVER : now + ns;
}

int64_t th_deadline_ms(int timeout_ms)
{
    return timeout_ms < 0 ? TH_FOREVER : after_ns((int64_t)timeout_ms * TH_NS_PER_MS);
}

int64_t th_deadline_ts(const struct timespec *ts)
{
    if (ts == NULL)
        return TH_FOREVER;
    if (ts->tv_sec < 0 || ts->tv_nsec < 0)
        return th_now_ns();         /* the real call fails with EINVAL */
    if (ts->tv_sec >= TH_FOREVER / TH_NS_PER_S / 2)
        return TH_FOREVER;
    return after_ns((int64_t)ts->tv_sec * TH_NS_PER_S + ts->tv_nsec);
}

int64_t th_deadline_tv(const struct timeval *tv)
{
    if (tv == NULL)
        return TH_FOREVER;
    if (tv->tv_sec < 0 || tv->tv_usec < 0)
        return th_now_ns();
    if (tv->tv_sec >= TH_FOREVER / TH_NS_PER_S / 2)
        return TH_FOREVER;
    return after_ns((int64_t)tv->tv_sec * TH_NS_PER_S + (int64_t)tv->tv_usec * TH_NS_PER_US);
}

/* now: a clock read the caller has just taken, or 0 to read the clock */
int64_t th_remaining_ns_at(int64_t deadline, int64_t now)
{
    if (deadline == TH_FOREVER)
        return TH_FOREVER;
    if (now == 0)
        now = th_now_ns();
    return deadline > now ? deadline - now : 0;
}

int64_t th_remaining_ns(int64_t deadline)
{
    return th_remaining_ns_at(deadline, 0);
}

int th_remaining_ms_at(int64_t deadline, int64_t now)
{
    int64_t ns = th_remaining_ns_at(deadline, now);

    if (ns == TH_FOREVER)
        return -1;
    /* round up: returning early would turn a wait into a busy loop */
    ns = (ns + TH_NS_PER_MS - 1) / TH_NS_PER_MS;
    return ns > INT32_MAX ? INT32_MAX : (int)ns;
}

int th_remaining_ms(int64_t deadline)
{
    return th_remaining_ms_at(deadline, 0);
}

int64_t th_min_deadline(int64_t deadline, unsigned cap_ms)
{
    int64_t cap = after_ns((int64_t)cap_ms * TH_NS_PER_MS);

    return cap < deadline ? cap : deadline;
}

void th_ns_to_timespec(int64_t ns, struct timespec *ts)
{
    ts->tv_sec = ns / TH_NS_PER_S;
    ts->tv_nsec = ns % TH_NS_PER_S;
}

void th_ns_to_timeval(int64_t ns, struct timeval *tv)
{
    tv->tv_sec = ns / TH_NS_PER_S;
    tv->tv_usec = (ns % TH_NS_PER_S) / TH_NS_PER_US;
}

bool th_timespec_valid(const struct timespec *ts)
{
    return ts == NULL || (ts->tv_sec >= 0 && ts->tv_nsec >= 0 && ts->tv_nsec < TH_NS_PER_S);
}

bool th_timeval_valid(const struct timeval *tv)
{
    return tv == NULL || (tv->tv_sec >= 0 && tv->tv_usec >= 0 &&
                          tv->tv_usec < TH_NS_PER_S / TH_NS_PER_US);
}

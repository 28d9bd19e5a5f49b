/*
 * One line per event on stderr: "libthunder: [pid] level: message".
 * Formatted into a stack buffer and written with a single write(2), so a
 * line never interleaves with another process's and no stdio lock is taken
 * (the logger runs in fork and signal paths).  errno is left as it was.
 */
#include "thunder.h"

#include <stdarg.h>
#include <stdio.h>
#include <unistd.h>

/* Warnings until the configuration is loaded (settings.c sets it once). */
static enum th_loglevel shown = TH_LOG_WARN;

void th_log_set_level(enum th_loglevel level)
{
    shown = level;
}

static const char *level_name(enum th_loglevel level)
{
    switch (level) {
    case TH_LOG_WARN:  return "warning";
    case TH_LOG_INFO:  return "info";
    case TH_LOG_DEBUG: return "debug";
    default:           return "error";
    }
}

static void vlog(enum th_loglevel level, const char *fmt, va_list ap)
{
    char line[512];
    int saved_errno = errno;
    int len = snprintf(line, sizeof(line), "libthunder: [%d] %s: ",
                       (int)getpid(), level_name(level));

    if (len < 0)
        len = 0;
    if ((size_t)len < sizeof(line)) {
        int more = vsnprintf(line + len, sizeof(line) - (size_t)len, fmt, ap);
        if (more > 0)
            len += more;
    }
    if ((size_t)len >= sizeof(line) - 1)
        len = (int)sizeof(line) - 2;     /* keep one newline at the end */
    line[len++] = '\n';
    if (write(STDERR_FILENO, line, (size_t)len) < 0) {
        /* nowhere left to report it */
    }
    errno = saved_errno;
}

void th_log(enum th_loglevel level, const char *fmt, ...)
{
    va_list ap;

    if (level > shown)
        return;
    va_start(ap, fmt);
    vlog(level, fmt, ap);
    va_end(ap);
}

/*
 * libFuzzer target for the THUNDER_* parser (shim/config.c).
 *
 * The input is split at NUL bytes: piece i is the value of variable i
 * (a missing piece means "unset"), and the remaining pieces become extra
 * environment entries, so unknown-name detection is fuzzed too.  The
 * parser must never crash, and must keep its contract: on success every
 * value is in range; on failure mode is off and there is exactly one
 * message line per rejected variable.
 */
#define _GNU_SOURCE   /* before any libc header: thunder.h needs sighandler_t */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "thunder.h"

static const char *const names[] = {
    "THUNDER_MODE", "THUNDER_BALANCE", "THUNDER_LOG", "THUNDER_PORTS",
    "THUNDER_JITTER_US", "THUNDER_RETRY_MS", "THUNDER_HOLD_MS", "THUNDER_CHECK_MS",
};
#define NVARS (sizeof(names) / sizeof(names[0]))

static char *values[NVARS];

static char *fake_getenv(const char *name)
{
    for (size_t i = 0; i < NVARS; i++)
        if (strcmp(name, names[i]) == 0)
            return values[i];
    return NULL;
}

static void ignore_line(const char *line)
{
    if (strchr(line, '\n'))
        abort();                     /* a warning must be one line */
}

static void check_success(const struct th_config *c)
{
    if (c->mode > TH_MODE_AUTO || c->lock.balance > TH_BALANCE_LIFO || c->log > TH_LOG_DEBUG ||
        c->jitter_us < 1 || c->jitter_us > 1000000 || c->retry_ms < 1 || c->retry_ms > 1000 ||
        c->lock.hold_ms < 1 || c->lock.hold_ms > 60000 || c->lock.check_ms < 1 || c->lock.check_ms > 1000 ||
        c->nports < 0 || c->nports > TH_MAX_PORT_RANGES)
        abort();
    for (int i = 0; i < c->nports; i++)
        if (c->ports[i].lo < 1 || c->ports[i].lo > c->ports[i].hi)
            abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *copy = malloc(size + 1), *p = copy, *end = copy + size;
    char *envp[16] = { NULL }, err[2048];
    struct th_config cfg;
    size_t nenv = 0, lines = 0;
    int bad = 0, r;

    memcpy(copy, data, size);
    copy[size] = '\0';
    for (size_t i = 0; i < NVARS; i++) {
        values[i] = p < end ? p : NULL;
        if (values[i] && values[i][0] == '\x01')
            values[i] = NULL;        /* a lone \x01 piece means "unset" */
        p += p < end ? strlen(p) + 1 : 0;
    }
    while (p < end && nenv < 15) {
        envp[nenv++] = p;
        p += strlen(p) + 1;
    }
    r = th_config_parse(&cfg, fake_getenv, envp, err, sizeof(err), ignore_line);
    if (r == 0) {
        check_success(&cfg);
    } else {
        for (const char *q = err; *q; q++)
            lines += *q == '\n';
        lines += err[0] != '\0';
        for (size_t i = 0; i < NVARS; i++)
            bad += values[i] != NULL && strstr(err, names[i]) != NULL;
        if (r != -1 || cfg.mode != TH_MODE_OFF || lines == 0 || (int)lines > (int)NVARS ||
            bad == 0)
            abort();
    }
    free(copy);
    return 0;
}

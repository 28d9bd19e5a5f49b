/*
 * Parsing the THUNDER_* variables: a table of variables, strict parsing,
 * and one human line per bad value.  Pure: it reads the environment only
 * through the getter it is given and writes only the struct it is given,
 * so the unit tests and the fuzzer drive exactly this code.  Loading the
 * process's configuration (once, at start) is settings.c.
 */
#include "thunder.h"

#include <ctype.h>
#include <stdio.h>
#include <string.h>

enum var_kind { VAR_WORD, VAR_UINT, VAR_PORTS };

struct var {
    const char *name;
    enum var_kind kind;
    const char *const *words;     /* VAR_WORD: accepted words, in enum order */
    unsigned lo, hi, def;         /* VAR_UINT: range and default; VAR_WORD: default index */
    size_t offset;                /* where the value goes in struct th_config */
};

static const char *const mode_words[] = {
    "off", "observe", "lock", "exclusive", "jitter", "auto", NULL
};
static const char *const balance_words[] = { "fifo", "lifo", NULL };
static const char *const log_words[] = { "off", "warn", "info", "debug", NULL };

#define CFG(field) offsetof(struct th_config, field)
static const struct var vars[] = {
    { "THUNDER_MODE",      VAR_WORD,  mode_words,    0, 0, TH_MODE_AUTO,    CFG(mode) },
    { "THUNDER_BALANCE",   VAR_WORD,  balance_words, 0, 0, TH_BALANCE_FIFO, CFG(lock.balance) },
    { "THUNDER_LOG",       VAR_WORD,  log_words,     0, 0, TH_LOG_WARN,     CFG(log) },
    { "THUNDER_PORTS",     VAR_PORTS, NULL,          0, 0, 0,               CFG(nports) },
    { "THUNDER_JITTER_US", VAR_UINT,  NULL, 1, 1000000, 1000, CFG(jitter_us) },
    { "THUNDER_RETRY_MS",  VAR_UINT,  NULL, 1, 1000,    20,   CFG(retry_ms) },
    { "THUNDER_HOLD_MS",   VAR_UINT,  NULL, 1, 60000,   100,  CFG(lock.hold_ms) },
    { "THUNDER_CHECK_MS",  VAR_UINT,  NULL, 1, 1000,    25,   CFG(lock.check_ms) },
};

const char *const *th_config_words(const char *name)
{
    for (size_t i = 0; i < TH_ARRAY_LEN(vars); i++)
        if (strcmp(vars[i].name, name) == 0)
            return vars[i].words;
    return NULL;
}

const char *th_mode_name(enum th_mode mode)
{
    return (unsigned)mode < TH_ARRAY_LEN(mode_words) - 1 ? mode_words[mode] : "?";
}

/* Quote a value for a one-line message: printable ASCII only, bounded. */
static void quote(char *out, size_t outlen, const char *value)
{
    size_t o = 0;

    for (const unsigned char *p = (const unsigned char *)value; *p && o + 5 < outlen; p++) {
        if (o > 60) {
            o += (size_t)snprintf(out + o, outlen - o, "...");
            break;
        }
        if (isprint(*p) && *p != '"' && *p != '\\')
            out[o++] = (char)*p;
        else
            o += (size_t)snprintf(out + o, outlen - o, "\\x%02x", *p);
    }
    out[o < outlen ? o : outlen - 1] = '\0';
}

static void accepted_words(char *out, size_t outlen, const char *const *words)
{
    size_t o = 0;

    out[0] = '\0';
    for (int i = 0; words[i] && o < outlen; i++)
        o += (size_t)snprintf(out + o, outlen - o, "%s%s", i ? "|" : "", words[i]);
}

/* Strict unsigned decimal: digits only, no sign, no spaces, no overflow. */
static bool parse_uint(const char *s, unsigned long long *out)
{
    unsigned long long v = 0;

    if (*s == '\0')
        return false;
    for (; *s; s++) {
        if (*s < '0' || *s > '9' || v > 100000000ULL)
            return false;
        v = v * 10 + (unsigned)(*s - '0');
    }
    *out = v;
    return true;
}

/* "8080,8443,9000-9010": ports 1..65535, ranges lo-hi with lo <= hi. */
static bool parse_ports(const char *s, struct th_config *cfg)
{
    char buf[256];
    char *save = NULL;

    if (strlen(s) >= sizeof(buf) || *s == '\0')
        return false;
    strcpy(buf, s);
    cfg->nports = 0;
    for (char *item = strtok_r(buf, ",", &save); item; item = strtok_r(NULL, ",", &save)) {
        unsigned long long lo, hi;
        char *dash = strchr(item, '-');

        if (dash)
            *dash = '\0';
        if (!parse_uint(item, &lo) || !parse_uint(dash ? dash + 1 : item, &hi))
            return false;
        if (lo < 1 || hi > 65535 || lo > hi || cfg->nports >= TH_MAX_PORT_RANGES)
            return false;
        cfg->ports[cfg->nports].lo = (uint16_t)lo;
        cfg->ports[cfg->nports].hi = (uint16_t)hi;
        cfg->nports++;
    }
    /* "8080,,8443" or a trailing comma leaves an empty item strtok skips */
    return cfg->nports > 0 && !strstr(s, ",,") && s[0] != ',' && s[strlen(s) - 1] != ',';
}

static int word_index(const char *const *words, const char *s)
{
    for (int i = 0; words[i]; i++)
        if (strcmp(words[i], s) == 0)
            return i;
    return -1;
}

static void set_default(struct th_config *cfg, const struct var *v)
{
    char *field = (char *)cfg + v->offset;

    if (v->kind == VAR_PORTS)
        cfg->nports = 0;
    else if (v->kind == VAR_WORD)
        *(int *)field = (int)v->def;      /* the enums are int-sized */
    else
        *(unsigned *)field = v->def;
}

/* Parse one set variable; on error write the one-line message to err. */
static bool parse_var(struct th_config *cfg, const struct var *v, const char *value,
                      char *err, size_t errlen)
{
    char *field = (char *)cfg + v->offset;
    char shown[96], accepted[128];
    unsigned long long n;

    quote(shown, sizeof(shown), value);
    switch (v->kind) {
    case VAR_WORD: {
        int i = word_index(v->words, value);
        if (i >= 0) {
            *(int *)field = i;
            return true;
        }
        accepted_words(accepted, sizeof(accepted), v->words);
        snprintf(err, errlen, "%s=\"%s\" is not valid (accepted: %s); running pass-through",
                 v->name, shown, accepted);
        return false;
    }
    case VAR_UINT:
        if (parse_uint(value, &n) && n >= v->lo && n <= v->hi) {
            *(unsigned *)field = (unsigned)n;
            return true;
        }
        snprintf(err, errlen, "%s=\"%s\" is not valid (accepted: an integer from %u to %u); "
                 "running pass-through", v->name, shown, v->lo, v->hi);
        return false;
    case VAR_PORTS:
        if (parse_ports(value, cfg))
            return true;
        snprintf(err, errlen, "%s=\"%s\" is not valid (accepted: ports 1-65535 and ranges "
                 "separated by commas, e.g. 8080,8443,9000-9010); running pass-through",
                 v->name, shown);
        return false;
    }
    return false;
}

/* Edit distance, for "did you mean"; names are short. */
static unsigned distance(const char *a, const char *b)
{
    unsigned row[64], n = (unsigned)strlen(b);

    if (n >= TH_ARRAY_LEN(row) || strlen(a) >= TH_ARRAY_LEN(row))
        return 99;
    for (unsigned j = 0; j <= n; j++)
        row[j] = j;
    for (unsigned i = 1; a[i - 1]; i++) {
        unsigned diag = row[0];
        row[0] = i;
        for (unsigned j = 1; j <= n; j++) {
            unsigned up = row[j];
            unsigned cost = a[i - 1] == b[j - 1] ? 0 : 1;
            unsigned best = diag + cost;
            if (row[j] + 1 < best)
                best = row[j] + 1;
            if (row[j - 1] + 1 < best)
                best = row[j - 1] + 1;
            row[j] = best;
            diag = up;
        }
    }
    return row[n];
}

static void report_unknown(char *const *envp, void (*warn_unknown)(const char *line))
{
    for (; envp && *envp; envp++) {
        char name[64], line[256];
        const char *eq = strchr(*envp, '=');
        size_t len = eq ? (size_t)(eq - *envp) : strlen(*envp);
        const char *best = NULL;
        unsigned best_d = 3;

        if (strncmp(*envp, "THUNDER_", 8) != 0 || len >= sizeof(name))
            continue;
        memcpy(name, *envp, len);
        name[len] = '\0';
        for (size_t i = 0; i < TH_ARRAY_LEN(vars); i++) {
            unsigned d = distance(name, vars[i].name);
            if (strcmp(name, vars[i].name) == 0)
                best_d = 0, best = NULL;
            if (best_d == 0)
                break;
            if (d < best_d)
                best_d = d, best = vars[i].name;
        }
        if (best_d == 0)
            continue;
        quote(line, 80, name);
        if (best)
            snprintf(line + strlen(line), sizeof(line) - strlen(line),
                     " is an unknown libthunder variable (did you mean %s?); ignored", best);
        else
            snprintf(line + strlen(line), sizeof(line) - strlen(line),
                     " is an unknown libthunder variable; ignored");
        warn_unknown(line);
    }
}

int th_config_parse(struct th_config *cfg, th_getenv_fn get, char *const *envp,
                    char *err, size_t errlen, void (*warn_unknown)(const char *line))
{
    int bad = 0;

    memset(cfg, 0, sizeof(*cfg));
    err[0] = '\0';
    for (size_t i = 0; i < TH_ARRAY_LEN(vars); i++) {
        const char *value = get(vars[i].name);

        set_default(cfg, &vars[i]);
        if (value == NULL)
            continue;
        if (!parse_var(cfg, &vars[i], value, err + strlen(err), errlen - strlen(err))) {
            bad = 1;
            set_default(cfg, &vars[i]);
            if (strlen(err) + 2 < errlen)
                strcat(err, "\n");
        }
    }
    if (warn_unknown)
        report_unknown(envp, warn_unknown);
    if (bad) {
        size_t len = strlen(err);
        if (len && err[len - 1] == '\n')
            err[len - 1] = '\0';
        cfg->mode = TH_MODE_OFF;
        return -1;
    }
    return 0;
}

bool th_ports_match(const struct th_config *cfg, uint16_t port)
{
    if (cfg->nports == 0)
        return true;
    for (int i = 0; i < cfg->nports; i++)
        if (port >= cfg->ports[i].lo && port <= cfg->ports[i].hi)
            return true;
    return false;
}

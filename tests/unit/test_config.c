/*
 * th_config_parse: defaults, valid values, every class of bad value for
 * every variable, unknown names, and THUNDER_PORTS.
 *
 * The parser reads through a getenv-shaped function, so each case hands it
 * a fake environment instead of touching the real one.
 */
#include "thunder.h"
#include "tap.h"

#include <ctype.h>

#define MAX_FAKE 16

/* The fake environment: "NAME=VALUE" strings, also passed as envp. */
static char *fake_env[MAX_FAKE + 1];
static int nfake;

static void fake_reset(void)
{
    nfake = 0;
    fake_env[0] = NULL;
}

static void fake_set(const char *name, const char *value)
{
    char *entry;

    REQUIRE(nfake < MAX_FAKE);
    REQUIRE(asprintf(&entry, "%s=%s", name, value) > 0);
    fake_env[nfake++] = entry;
    fake_env[nfake] = NULL;
}

static char *fake_getenv(const char *name)
{
    size_t len = strlen(name);

    for (int i = 0; i < nfake; i++)
        if (strncmp(fake_env[i], name, len) == 0 && fake_env[i][len] == '=')
            return fake_env[i] + len + 1;
    return NULL;
}

/* What warn_unknown received. */
static char unknown_lines[8][256];
static int nunknown;

static void collect_unknown(const char *line)
{
    if (nunknown < 8)
        snprintf(unknown_lines[nunknown], sizeof(unknown_lines[0]), "%s", line);
    nunknown++;
}

static struct th_config cfg;
static char err[2048];

static int parse(void)
{
    nunknown = 0;
    memset(err, 'x', sizeof(err));        /* the parser must terminate it */
    err[sizeof(err) - 1] = '\0';
    return th_config_parse(&cfg, fake_getenv, fake_env, err, sizeof(err), collect_unknown);
}

static int count_lines(const char *s)
{
    int n = *s ? 1 : 0;

    for (; *s; s++)
        n += *s == '\n';
    return n;
}

static bool printable_ascii(const char *s)
{
    for (; *s; s++)
        if (*s != '\n' && !(*s >= 0x20 && *s < 0x7f))
            return false;
    return true;
}

/* ---- defaults and valid values ------------------------------------- */

static void test_defaults(void)
{
    fake_reset();
    EXPECT_EQ(parse(), 0);
    EXPECT_EQ(err[0], '\0');
    EXPECT_EQ(nunknown, 0);
    EXPECT_EQ(cfg.mode, TH_MODE_AUTO);
    EXPECT_EQ(cfg.lock.balance, TH_BALANCE_FIFO);
    EXPECT_EQ(cfg.log, TH_LOG_WARN);
    EXPECT_EQ(cfg.nports, 0);
    EXPECT_EQ(cfg.jitter_us, 1000);
    EXPECT_EQ(cfg.retry_ms, 20);
    EXPECT_EQ(cfg.lock.hold_ms, 100);
    EXPECT_EQ(cfg.lock.check_ms, 25);
}

static void test_mode_words(void)
{
    static const struct { const char *word; enum th_mode mode; } words[] = {
        { "off", TH_MODE_OFF },       { "observe", TH_MODE_OBSERVE },
        { "lock", TH_MODE_LOCK },     { "exclusive", TH_MODE_EXCLUSIVE },
        { "jitter", TH_MODE_JITTER }, { "auto", TH_MODE_AUTO },
    };

    for (size_t i = 0; i < TH_ARRAY_LEN(words); i++) {
        fake_reset();
        fake_set("THUNDER_MODE", words[i].word);
        EXPECT_EQ(parse(), 0);
        EXPECT_EQ(cfg.mode, words[i].mode);
        /* th_mode_name is what the log shows: it must round-trip */
        EXPECT(strcmp(th_mode_name(words[i].mode), words[i].word) == 0);
    }
}

static void test_balance_and_log_words(void)
{
    static const char *const logs[] = { "off", "warn", "info", "debug" };

    fake_reset();
    fake_set("THUNDER_BALANCE", "lifo");
    EXPECT_EQ(parse(), 0);
    EXPECT_EQ(cfg.lock.balance, TH_BALANCE_LIFO);
    fake_reset();
    fake_set("THUNDER_BALANCE", "fifo");
    EXPECT_EQ(parse(), 0);
    EXPECT_EQ(cfg.lock.balance, TH_BALANCE_FIFO);
    for (int i = 0; i < 4; i++) {
        fake_reset();
        fake_set("THUNDER_LOG", logs[i]);
        EXPECT_EQ(parse(), 0);
        EXPECT_EQ(cfg.log, (enum th_loglevel)i);
    }
}

struct num_var {
    const char *name;
    size_t offset;
    unsigned lo, hi;
};

static const struct num_var num_vars[] = {
    { "THUNDER_JITTER_US", offsetof(struct th_config, jitter_us), 1, 1000000 },
    { "THUNDER_RETRY_MS", offsetof(struct th_config, retry_ms), 1, 1000 },
    { "THUNDER_HOLD_MS", offsetof(struct th_config, lock.hold_ms), 1, 60000 },
    { "THUNDER_CHECK_MS", offsetof(struct th_config, lock.check_ms), 1, 1000 },
};

static unsigned num_field(const struct num_var *v)
{
    return *(const unsigned *)((const char *)&cfg + v->offset);
}

static void test_numbers_in_range(void)
{
    for (size_t i = 0; i < TH_ARRAY_LEN(num_vars); i++) {
        const struct num_var *v = &num_vars[i];
        unsigned values[] = { v->lo, v->hi, (v->lo + v->hi) / 2 };

        for (size_t j = 0; j < TH_ARRAY_LEN(values); j++) {
            char text[16];
            snprintf(text, sizeof(text), "%u", values[j]);
            fake_reset();
            fake_set(v->name, text);
            EXPECT_EQ(parse(), 0);
            EXPECT_EQ(num_field(v), values[j]);
        }
    }
}

/* ---- bad values -------------------------------------------------------- */

/*
 * One bad value: -1, exactly one line naming the variable and what is
 * accepted, printable (the value is escaped), and the whole process
 * pass-through.
 */
static void expect_rejected(const char *name, const char *value)
{
    int r;

    fake_reset();
    if (strcmp(name, "THUNDER_MODE") != 0)
        fake_set("THUNDER_MODE", "lock");  /* a bad value must override it */
    fake_set(name, value);
    r = parse();
    if (r != -1 || count_lines(err) != 1 || strstr(err, name) == NULL ||
        strstr(err, "accepted") == NULL || !printable_ascii(err) || cfg.mode != TH_MODE_OFF) {
        tap_case_failed = 1;
        tap_diag("%s=\"%s\": parse=%d mode=%d lines=%d err=%s", name, value, r, cfg.mode,
                 count_lines(err), err);
    }
}

/* Every class of bad value that no variable accepts. */
static const char *const bad_for_all[] = {
    "",                 /* empty */
    "-1",               /* negative */
    " 1",               /* leading space */
    "1 ",               /* trailing space */
    "\xc3\xa9",         /* non-ASCII (e acute) */
    "1\xef\xbc\x90",    /* trailing non-ASCII digit (fullwidth 0) */
    "x\ny",             /* control character */
};

static void test_bad_words(void)
{
    static const char *const words[] = { "THUNDER_MODE", "THUNDER_BALANCE", "THUNDER_LOG" };
    static const char *const bad[] = {
        "fast", "lockx", "lock,", "1", "l\xd0\xbe" "ck" /* Cyrillic o */, "fifo lifo",
    };

    for (size_t i = 0; i < TH_ARRAY_LEN(words); i++) {
        for (size_t j = 0; j < TH_ARRAY_LEN(bad_for_all); j++)
            expect_rejected(words[i], bad_for_all[j]);
        for (size_t j = 0; j < TH_ARRAY_LEN(bad); j++)
            expect_rejected(words[i], bad[j]);
    }
}

static void test_bad_numbers(void)
{
    static const char *const bad[] = {
        "abc", "0", "+5", "0x10", "1e3", "10ms", "1.5", "99999999999999999999",
        "4294967297",   /* wraps to 1 in 32 bits */
    };

    for (size_t i = 0; i < TH_ARRAY_LEN(num_vars); i++) {
        const struct num_var *v = &num_vars[i];
        char above[16];

        snprintf(above, sizeof(above), "%u", v->hi + 1);
        expect_rejected(v->name, above);
        for (size_t j = 0; j < TH_ARRAY_LEN(bad_for_all); j++)
            expect_rejected(v->name, bad_for_all[j]);
        for (size_t j = 0; j < TH_ARRAY_LEN(bad); j++)
            expect_rejected(v->name, bad[j]);
    }
}

static void test_bad_ports(void)
{
    static const char *const bad[] = {
        "0", "65536", "10-5", "8080,", ",8080", "80,,81", "abc", "-80", "80-",
        "1-2-3", "80;81", "80 81", "99999999999", "80-65536",
    };

    for (size_t j = 0; j < TH_ARRAY_LEN(bad_for_all); j++)
        expect_rejected("THUNDER_PORTS", bad_for_all[j]);
    for (size_t j = 0; j < TH_ARRAY_LEN(bad); j++)
        expect_rejected("THUNDER_PORTS", bad[j]);
}

/* A long hostile value is cut, escaped and still one line. */
static void test_bad_value_is_bounded(void)
{
    char value[4000];

    memset(value, '\x01', sizeof(value) - 1);
    value[sizeof(value) - 1] = '\0';
    expect_rejected("THUNDER_MODE", value);
    EXPECT(strlen(err) < 400);
}

/* Two bad variables: one line each, each naming its own variable. */
static void test_two_bad_values(void)
{
    fake_reset();
    fake_set("THUNDER_MODE", "fast");
    fake_set("THUNDER_HOLD_MS", "0");
    EXPECT_EQ(parse(), -1);
    EXPECT_EQ(count_lines(err), 2);
    EXPECT(strstr(err, "THUNDER_MODE") != NULL);
    EXPECT(strstr(err, "THUNDER_HOLD_MS") != NULL);
    EXPECT_EQ(cfg.mode, TH_MODE_OFF);
}

/* ---- unknown names ----------------------------------------------------- */

static void test_unknown_did_you_mean(void)
{
    static const struct { const char *typo, *meant; } typos[] = {
        { "THUNDER_MDOE", "THUNDER_MODE" },
        { "THUNDER_PORT", "THUNDER_PORTS" },
        { "THUNDER_HOLDMS", "THUNDER_HOLD_MS" },
        { "THUNDER_BALANCED", "THUNDER_BALANCE" },
    };

    for (size_t i = 0; i < TH_ARRAY_LEN(typos); i++) {
        fake_reset();
        fake_set(typos[i].typo, "lock");
        EXPECT_EQ(parse(), 0);
        EXPECT_EQ(cfg.mode, TH_MODE_AUTO);      /* ignored, the shim still runs */
        EXPECT_EQ(nunknown, 1);
        if (nunknown == 1 && (strstr(unknown_lines[0], typos[i].typo) == NULL ||
                              strstr(unknown_lines[0], "unknown") == NULL ||
                              strstr(unknown_lines[0], typos[i].meant) == NULL)) {
            tap_case_failed = 1;
            tap_diag("%s: line \"%s\" should suggest %s", typos[i].typo, unknown_lines[0],
                     typos[i].meant);
        }
    }
}

static void test_unknown_without_suggestion(void)
{
    fake_reset();
    fake_set("THUNDER_COLOUR", "blue");
    fake_set("THUNDERBIRD", "1");             /* not our prefix */
    fake_set("MY_THUNDER_MODE", "x");         /* not our prefix */
    fake_set("THUNDER_MODE", "observe");      /* known: not reported */
    EXPECT_EQ(parse(), 0);
    EXPECT_EQ(cfg.mode, TH_MODE_OBSERVE);
    EXPECT_EQ(nunknown, 1);
    EXPECT(strstr(unknown_lines[0], "THUNDER_COLOUR") != NULL);
    EXPECT(strstr(unknown_lines[0], "did you mean") == NULL);
}

/* The callback may be NULL, and a bad value still reports unknown names. */
static void test_unknown_callback_optional(void)
{
    fake_reset();
    fake_set("THUNDER_MDOE", "lock");
    EXPECT_EQ(th_config_parse(&cfg, fake_getenv, fake_env, err, sizeof(err), NULL), 0);
    fake_set("THUNDER_MODE", "bogus");
    EXPECT_EQ(parse(), -1);
    EXPECT_EQ(nunknown, 1);
    EXPECT_EQ(count_lines(err), 1);
}

/* ---- ports ------------------------------------------------------------- */

static void test_ports_valid(void)
{
    fake_reset();
    fake_set("THUNDER_PORTS", "8080,8443,9000-9010");
    EXPECT_EQ(parse(), 0);
    EXPECT_EQ(cfg.nports, 3);
    EXPECT_EQ(cfg.ports[0].lo, 8080);
    EXPECT_EQ(cfg.ports[0].hi, 8080);
    EXPECT_EQ(cfg.ports[1].lo, 8443);
    EXPECT_EQ(cfg.ports[2].lo, 9000);
    EXPECT_EQ(cfg.ports[2].hi, 9010);

    fake_reset();
    fake_set("THUNDER_PORTS", "1-65535");
    EXPECT_EQ(parse(), 0);
    EXPECT_EQ(cfg.nports, 1);
    EXPECT_EQ(cfg.ports[0].lo, 1);
    EXPECT_EQ(cfg.ports[0].hi, 65535);

    static const char *const ok[] = { "1", "65535", "80-80", "80,80", "9000-9010,80" };
    for (size_t i = 0; i < TH_ARRAY_LEN(ok); i++) {
        fake_reset();
        fake_set("THUNDER_PORTS", ok[i]);
        if (parse() != 0) {
            tap_case_failed = 1;
            tap_diag("THUNDER_PORTS=%s refused: %s", ok[i], err);
        }
    }
}

/* As many ranges as the table holds are accepted; one more is refused. */
static void test_ports_table_size(void)
{
    char list[TH_MAX_PORT_RANGES * 8 + 16] = "";

    for (int i = 0; i < TH_MAX_PORT_RANGES; i++)
        snprintf(list + strlen(list), sizeof(list) - strlen(list), "%s%d", i ? "," : "",
                 1000 + i);
    fake_reset();
    fake_set("THUNDER_PORTS", list);
    EXPECT_EQ(parse(), 0);
    EXPECT_EQ(cfg.nports, TH_MAX_PORT_RANGES);
    strcat(list, ",2000");
    expect_rejected("THUNDER_PORTS", list);
}

static void test_port_filter(void)
{
    fake_reset();
    fake_set("THUNDER_PORTS", "8080,9000-9010");
    REQUIRE(parse() == 0);
    EXPECT(th_ports_match(&cfg, 8080));
    EXPECT(th_ports_match(&cfg, 9000));
    EXPECT(th_ports_match(&cfg, 9005));
    EXPECT(th_ports_match(&cfg, 9010));
    EXPECT(!th_ports_match(&cfg, 8081));
    EXPECT(!th_ports_match(&cfg, 8999));
    EXPECT(!th_ports_match(&cfg, 9011));
    EXPECT(!th_ports_match(&cfg, 0));
    cfg.nports = 0;                  /* no filter: everything is managed */
    EXPECT(th_ports_match(&cfg, 1));
    EXPECT(th_ports_match(&cfg, 65535));
}

static const struct tap_case cases[] = {
    { "defaults when nothing is set", test_defaults },
    { "every THUNDER_MODE word", test_mode_words },
    { "THUNDER_BALANCE and THUNDER_LOG words", test_balance_and_log_words },
    { "numeric variables accept their whole range", test_numbers_in_range },
    { "bad words: one line, names the variable, pass-through", test_bad_words },
    { "bad numbers: one line, names the variable, pass-through", test_bad_numbers },
    { "bad THUNDER_PORTS: one line, pass-through", test_bad_ports },
    { "a long hostile value gives one short printable line", test_bad_value_is_bounded },
    { "two bad variables give one line each", test_two_bad_values },
    { "unknown THUNDER_ name: did you mean", test_unknown_did_you_mean },
    { "unknown THUNDER_ name without a close match", test_unknown_without_suggestion },
    { "unknown-name callback optional, reported with bad values", test_unknown_callback_optional },
    { "THUNDER_PORTS lists and ranges", test_ports_valid },
    { "THUNDER_PORTS holds TH_MAX_PORT_RANGES ranges, not more", test_ports_table_size },
    { "th_ports_match follows the filter", test_port_filter },
};

int main(void)
{
    return tap_run(cases, TH_ARRAY_LEN(cases), NULL);
}

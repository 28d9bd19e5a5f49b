/*
 * The process's configuration: THUNDER_* read once, in the constructor.
 *
 * Read once because servers wipe their workers' environment (nginx keeps
 * only TZ): forked workers inherit the parsed struct instead.  Read with
 * secure_getenv, so a setuid program ignores them (and is not told about
 * unknown names either: the defaults apply silently).  A bad value is
 * never guessed at: one line on stderr names the variable, the value and
 * what is accepted, and the whole process runs pass-through
 * (THUNDER_MODE=off).  Parsing itself is config.c.
 */
#include "thunder.h"

#include <stdlib.h>
#include <string.h>
#include <sys/auxv.h>

struct th_config th_cfg = {
    .mode = TH_MODE_OFF,          /* until the constructor has parsed */
    .log = TH_LOG_WARN,
};

static void print_unknown(const char *line)
{
    th_warn("%s", line);
}

extern char **environ;

void th_config_load(void)
{
    struct th_config cfg;
    char err[1024];
    /*
     * AT_SECURE (setuid, setgid, file capabilities): the environment comes
     * from a less privileged user.  secure_getenv already returns NULL
     * there; the unknown-name scan reads environ directly, so it must not
     * run either, or that user could make a privileged program print.
     * Nothing is said instead: any line would be the user's to trigger.
     */
    bool secure = getauxval(AT_SECURE) != 0;

    if (th_config_parse(&cfg, secure_getenv, secure ? NULL : environ, err, sizeof(err),
                        secure ? NULL : print_unknown) < 0) {
        /* one line per bad variable, always shown: the user asked for something */
        char *save = NULL;
        for (char *line = strtok_r(err, "\n", &save); line; line = strtok_r(NULL, "\n", &save))
            th_log(TH_LOG_WARN, "%s", line);
    }
    th_cfg = cfg;
    th_log_set_level(cfg.log);
}

bool th_port_managed(uint16_t port)
{
    return th_ports_match(&th_cfg, port);
}

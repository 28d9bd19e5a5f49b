/*
 * thunder-stat - read libthunder's shared-memory segments from outside.
 *
 *   thunder-stat [--json|--kv|--prometheus] [--watch SECONDS] [PORT|PID]
 *   thunder-stat [...] [--port PORT] [--pid PID]
 *   thunder-stat --textfile DIR [--watch SECONDS]
 *   thunder-stat --gc
 *   thunder-stat --path INODE [--uid UID]
 *
 * Every segment of the current user is one listener; what a segment is,
 * and how it is checked before anything in it is trusted, is the segment
 * core's (shim/segcore.h).  --path prints the file of a socket inode's
 * segment, so that scripts never spell the name themselves.
 *
 * Exit status: 0 (also when nothing is found), 1 on I/O errors, 2 on usage.
 */
#define _GNU_SOURCE
#include "stat.h"

#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static const char usage_line[] =
    "usage: thunder-stat [--json|--kv|--prometheus] [--watch SECONDS] [--port PORT] [--pid PID] "
    "[PORT|PID] | --textfile DIR [--watch SECONDS] | --gc | --path INODE [--uid UID] | "
    "--help | --version";

static void usage_error(const char *why)
{
    if (why)
        fprintf(stderr, "thunder-stat: %s\n", why);
    fprintf(stderr, "%s\n", usage_line);
    exit(2);
}

/* Strict decimal in [lo, hi]: digits only. */
static bool parse_number(const char *s, unsigned long long lo, unsigned long long hi,
                         unsigned long long *out)
{
    char *end;
    unsigned long long v;

    if (*s < '0' || *s > '9')
        return false;
    errno = 0;
    v = strtoull(s, &end, 10);
    if (errno || *end || v < lo || v > hi)
        return false;
    *out = v;
    return true;
}

static bool parse_long(const char *s, long lo, long hi, long *out)
{
    unsigned long long v;

    if (!parse_number(s, (unsigned long long)lo, (unsigned long long)hi, &v))
        return false;
    *out = (long)v;
    return true;
}

/* ---- --watch -------------------------------------------------------------------- */

static volatile sig_atomic_t stop;

static void on_stop(int sig)
{
    (void)sig;
    stop = 1;
}

/* No SA_RESTART: the sleep must end on Ctrl-C. */
static void catch_stop(void)
{
    struct sigaction sa = { .sa_handler = on_stop };

    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
}

static void sleep_seconds(double s)
{
    struct timespec ts = { .tv_sec = (time_t)s };

    ts.tv_nsec = (long)((s - (double)ts.tv_sec) * 1e9);
    nanosleep(&ts, NULL);        /* EINTR: stop is set, the loop ends */
}

static void watch_header(const struct options *o, bool tty)
{
    time_t now = time(NULL);
    char when[32];

    strftime(when, sizeof(when), "%H:%M:%S", localtime(&now));
    /* clear the screen on a terminal, separate snapshots otherwise */
    printf(tty ? "\033[H\033[2J" : "\n");
    printf("thunder-stat  uid %u  %s  every %g s, Ctrl-C to stop\n\n", (unsigned)stat_uid, when,
           o->watch_s);
}

/* One snapshot, or one every watch_s seconds until SIGINT/SIGTERM. */
static int run_stat(const struct options *o)
{
    struct collection c = { 0 };
    bool tty = isatty(STDOUT_FILENO);
    int status = 0;

    if (o->watch_s > 0)
        catch_stop();
    do {
        if (stat_collect(o, &c) < 0) {
            status = 1;
            break;
        }
        if (o->textfile_dir) {
            if (stat_write_textfile(o->textfile_dir, &c) < 0) {
                status = 1;
                break;
            }
        } else {
            if (o->watch_s > 0 && o->format == FMT_TABLE)
                watch_header(o, tty);
            stat_print(&c, o);
            if (fflush(stdout) == EOF) {
                status = 1;
                break;
            }
        }
        if (o->watch_s > 0 && !stop)
            sleep_seconds(o->watch_s);
    } while (o->watch_s > 0 && !stop);
    free(c.items);
    return status;
}

/* ---- options ------------------------------------------------------------------------ */

enum action { STAT, GC, PATH };

struct command {
    enum action action;
    struct options o;
    unsigned long long inode, uid;     /* --path, --uid */
    bool uid_given;
};

static void set_format(struct options *o, enum format f)
{
    if (o->format != FMT_TABLE && o->format != f)
        usage_error("--json, --kv and --prometheus exclude each other");
    o->format = f;
}

static void parse_option(int c, struct command *cmd)
{
    struct options *o = &cmd->o;
    struct stat st;
    char *end;

    switch (c) {
    case 'j': set_format(o, FMT_JSON); break;
    case 'k': set_format(o, FMT_KV); break;
    case 'm': set_format(o, FMT_PROMETHEUS); break;
    case 't':
        if (stat(optarg, &st) < 0 || !S_ISDIR(st.st_mode))
            usage_error("--textfile takes an existing directory");
        o->textfile_dir = optarg;
        set_format(o, FMT_PROMETHEUS);
        break;
    case 'w':
        o->watch_s = strtod(optarg, &end);
        if (*optarg == '\0' || *end || !(o->watch_s >= 0.1 && o->watch_s <= 86400))
            usage_error("--watch takes seconds from 0.1 to 86400");
        break;
    case 'g':
    case 'a':
        if (cmd->action != STAT)
            usage_error("--gc and --path exclude each other");
        if (c == 'a' && !parse_number(optarg, 1, UINT64_MAX, &cmd->inode))
            usage_error("--path takes a socket inode");
        cmd->action = c == 'g' ? GC : PATH;
        break;
    case 'u':
        if (!parse_number(optarg, 0, UINT32_MAX - 1, &cmd->uid))
            usage_error("--uid takes a user id");
        cmd->uid_given = true;
        break;
    case 'p':
        if (!parse_long(optarg, 1, 65535, &o->port))
            usage_error("--port takes a port from 1 to 65535");
        break;
    case 'P':
        if (!parse_long(optarg, 1, INT32_MAX, &o->pid))
            usage_error("--pid takes a process id");
        break;
    case 'h':
        printf("%s\n", usage_line);
        exit(0);
    case 'V':
        printf("thunder-stat " TH_VERSION "\n");
        exit(0);
    default:
        usage_error(NULL);
    }
}

static void parse_options(int argc, char **argv, struct command *cmd)
{
    static const struct option longopts[] = {
        { "json", no_argument, NULL, 'j' },        { "kv", no_argument, NULL, 'k' },
        { "prometheus", no_argument, NULL, 'm' },  { "textfile", required_argument, NULL, 't' },
        { "watch", required_argument, NULL, 'w' }, { "gc", no_argument, NULL, 'g' },
        { "path", required_argument, NULL, 'a' },  { "uid", required_argument, NULL, 'u' },
        { "port", required_argument, NULL, 'p' },  { "pid", required_argument, NULL, 'P' },
        { "help", no_argument, NULL, 'h' },        { "version", no_argument, NULL, 'V' },
        { NULL, 0, NULL, 0 },
    };
    struct options *o = &cmd->o;
    bool filtered;
    int c;

    *cmd = (struct command){ .action = STAT };
    *o = (struct options){ .format = FMT_TABLE, .any = -1, .port = -1, .pid = -1 };
    opterr = 0;
    while ((c = getopt_long(argc, argv, "", longopts, NULL)) != -1)
        parse_option(c, cmd);
    if (optind < argc && !parse_long(argv[optind++], 1, INT32_MAX, &o->any))
        usage_error("PORT or PID must be a positive number");
    if (optind < argc)
        usage_error("only one PORT or PID");
    filtered = o->any >= 0 || o->port >= 0 || o->pid >= 0;
    if (cmd->action == GC && (o->format != FMT_TABLE || o->watch_s > 0 || filtered))
        usage_error("--gc takes no other option");
    if (cmd->action == PATH && (o->format != FMT_TABLE || o->watch_s > 0 || filtered))
        usage_error("--path takes no other option but --uid");
    if (cmd->uid_given && cmd->action != PATH)
        usage_error("--uid goes with --path only");
}

int main(int argc, char **argv)
{
    struct command cmd;
    char path[TH_SEG_PATH_MAX];

    parse_options(argc, argv, &cmd);
    stat_uid = geteuid();
    switch (cmd.action) {
    case PATH:
        th_seg_path(path, sizeof(path), cmd.uid_given ? (uid_t)cmd.uid : stat_uid, cmd.inode);
        printf("%s\n", path);
        return 0;
    case GC:
        stat_install_sigbus();
        return stat_gc();
    default:
        stat_install_sigbus();
        return run_stat(&cmd.o);
    }
}

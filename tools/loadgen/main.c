/*
 * thunder-loadgen - the one place where libthunder measures the herd and
 * the balance of a pre-fork server (installed as thunder-loadgen; built at
 * tools/thunder-loadgen).
 *
 *   thunder-loadgen -p PORT [-n CONNS] [-c CONCURRENCY] [-d SECONDS]
 *       [-g GAP_US] [-P PID,PID,...] [-T TIMEOUT_MS] [-6]
 *       [-H | --http[=PATH] | --send STRING | --connect-only]
 *       [--burst K [--rounds R] [--idle-ms MS] [--workers N --service-ms MS]]
 *
 * Opens up to CONNS connections (default 400) to 127.0.0.1:PORT (::1 with
 * -6) from CONCURRENCY client threads (default 1: sequential), stopping
 * after SECONDS (default 30) if CONNS is not reached first.  Each client
 * sleeps GAP_US microseconds between its connections (default 0).  A
 * connection that gets no complete reply within TIMEOUT_MS (default 5000)
 * has failed.  What a connection does (conn.c has the details):
 *   (default)       reads one line
 *   --http[=PATH]   sends "GET PATH HTTP/1.0" (Host, Connection: close;
 *                   PATH default /) and reads the reply to its end; a status
 *                   other than 2xx/3xx is a failure.  -H is --http=/.
 *   --send STRING   sends STRING (\r \n \t \\ escapes), reads until the
 *                   server closes or is quiet for 200 ms after replying
 *   --connect-only  connects and closes
 * A reply that is a decimal pid (the line, or the HTTP body) names the
 * worker that accepted the connection: the examples and bench/peers' apps
 * answer so.  The balance figures count those.
 *
 * --burst K: instead, ROUNDS rounds (default 50) of K connections opened
 * back-to-back (non-blocking connects, then the requests, then the
 * replies) with IDLE_MS (default 20) between rounds; -n, -c and -g do not
 * apply.  With --workers N and --service-ms MS (the handler's sleep) the
 * round time is compared with its limit ceil(K/N) x MS.
 *
 * With -P, the watched workers' voluntary context switches (summed over
 * their threads) and CPU time are sampled before and after the load: the
 * switches per connection are the herd (1.0 is the limit).  A pid that
 * answers without being watched (a respawned worker) is counted too.
 *
 * Output (stdout), one key=value per line, in this order:
 *   conns ok failed failed_connect failed_timeout failed_closed failed_status
 *   seconds rps p50_us p99_us max_us attributed workers_seen jain max_share
 *   [http_statuses=CODE:N,...]                   (HTTP: every status seen)
 *   [wakeups wakeups_per_conn cpu_ms_per_1000]   (only with -P)
 *   pid=PID accepts=N                            (one line per pid, sorted)
 *   [burst rounds idle_ms round_ms_mean round_ms_p99 round_ms_max
 *    round_max_share_mean [round_limit_ms round_vs_limit]]   (--burst)
 * where failed = failed_connect (refused or in error) + failed_timeout (no
 * reply within TIMEOUT_MS: stranded in the listen queue or a stuck worker)
 * + failed_closed (closed or reset without a reply: the worker died) +
 * failed_status (HTTP: not a reply, or a status other than 2xx/3xx);
 * attributed counts the replies that named a worker, and jain, max_share
 * and the per-round shares are over those.  SIGINT or SIGTERM ends the run
 * early: no new connection is started, those under way finish, and the
 * results are printed as usual.
 * Exit status: 0 if no connection failed, 1 if any did, 2 on usage error.
 */
#define _GNU_SOURCE
#include "loadgen.h"

#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

/* Workers finish going back to sleep before the "after" sample. */
#define SETTLE_MS 100

static void usage_and_exit(const char *why)
{
    if (why)
        fprintf(stderr, "thunder-loadgen: %s\n", why);
    fprintf(stderr, "usage: thunder-loadgen -p PORT [-n CONNS] [-c CONCURRENCY] [-d SECONDS] "
                    "[-g GAP_US] [-P PID,PID,...] [-T TIMEOUT_MS] [-6] "
                    "[-H | --http[=PATH] | --send STRING | --connect-only] "
                    "[--burst K [--rounds R] [--idle-ms MS] [--workers N --service-ms MS]]\n");
    exit(2);
}

static long parse_long(const char *text, long min, long max, const char *what)
{
    char *end;
    errno = 0;
    long value = strtol(text, &end, 10);
    if (errno != 0 || end == text || *end != '\0' || value < min || value > max) {
        char why[128];
        snprintf(why, sizeof why, "%s takes %ld to %ld, not '%.20s'", what, min, max, text);
        usage_and_exit(why);
    }
    return value;
}

static double parse_seconds(const char *text)
{
    char *end;
    errno = 0;
    double value = strtod(text, &end);
    if (errno != 0 || end == text || *end != '\0' || !(value > 0) || value > 86400)
        usage_and_exit("-d takes seconds, more than 0 and at most 86400");
    return value;
}

static void parse_pid_list(char *text, struct options *opt)
{
    for (char *item = strtok(text, ","); item; item = strtok(NULL, ",")) {
        if (opt->watched_count == MAX_WATCHED)
            usage_and_exit("too many pids for -P");
        opt->watched[opt->watched_count++] = (pid_t)parse_long(item, 1, INT32_MAX, "-P");
    }
    if (opt->watched_count == 0)
        usage_and_exit("-P needs a pid list");
}

/* --send's text with \r \n \t \\ turned into their bytes, in place. */
static const char *unescape(char *text)
{
    char *out = text;
    for (const char *in = text; *in; in++) {
        if (*in != '\\' || in[1] == '\0') {
            *out++ = *in;
            continue;
        }
        switch (*++in) {
        case 'r': *out++ = '\r'; break;
        case 'n': *out++ = '\n'; break;
        case 't': *out++ = '\t'; break;
        case '\\': *out++ = '\\'; break;
        default: *out++ = '\\'; *out++ = *in; break;
        }
    }
    *out = '\0';
    return text;
}

static bool valid_path(const char *path)
{
    if (path[0] != '/' || strlen(path) > 1024)
        return false;
    for (const char *p = path; *p; p++)
        if ((unsigned char)*p <= ' ' || *p == 0x7f)
            return false;
    return true;
}

enum { OPT_HTTP = 256, OPT_SEND, OPT_CONNECT_ONLY, OPT_BURST, OPT_ROUNDS, OPT_IDLE_MS,
       OPT_WORKERS, OPT_SERVICE_MS };

static const struct option long_options[] = {
    { "http", optional_argument, NULL, OPT_HTTP },
    { "send", required_argument, NULL, OPT_SEND },
    { "connect-only", no_argument, NULL, OPT_CONNECT_ONLY },
    { "burst", required_argument, NULL, OPT_BURST },
    { "rounds", required_argument, NULL, OPT_ROUNDS },
    { "idle-ms", required_argument, NULL, OPT_IDLE_MS },
    { "workers", required_argument, NULL, OPT_WORKERS },
    { "service-ms", required_argument, NULL, OPT_SERVICE_MS },
    { NULL, 0, NULL, 0 },
};

static void set_protocol(struct options *opt, enum protocol p)
{
    if (opt->protocol != PROTO_LINE && opt->protocol != p)
        usage_and_exit("-H/--http, --send and --connect-only exclude each other");
    opt->protocol = p;
}

static void parse_options(int argc, char **argv, struct options *opt)
{
    *opt = (struct options){
        .port = -1, .total_conns = 400, .concurrency = 1, .max_seconds = 30,
        .timeout_ms = 5000, .protocol = PROTO_LINE, .http_path = "/",
        .rounds = 50, .idle_ms = 20,
    };
    int c;
    while ((c = getopt_long(argc, argv, "p:n:c:d:g:P:T:6H", long_options, NULL)) != -1) {
        switch (c) {
        case 'p': opt->port = (int)parse_long(optarg, 1, 65535, "-p"); break;
        case 'n': opt->total_conns = parse_long(optarg, 1, LONG_MAX, "-n"); break;
        case 'c': opt->concurrency = (int)parse_long(optarg, 1, MAX_CONCURRENCY, "-c"); break;
        case 'd': opt->max_seconds = parse_seconds(optarg); break;
        case 'g': opt->gap_us = parse_long(optarg, 0, 60000000, "-g"); break;
        case 'P': parse_pid_list(optarg, opt); break;
        case 'T': opt->timeout_ms = (int)parse_long(optarg, 1, MAX_TIMEOUT_MS, "-T"); break;
        case '6': opt->ipv6 = true; break;
        case 'H': set_protocol(opt, PROTO_HTTP); break;
        case OPT_HTTP:
            set_protocol(opt, PROTO_HTTP);
            if (optarg)
                opt->http_path = optarg;
            if (!valid_path(opt->http_path))
                usage_and_exit("--http takes a path that starts with / (no spaces, at most 1024 bytes)");
            break;
        case OPT_SEND:
            set_protocol(opt, PROTO_SEND);
            opt->send_data = unescape(optarg);
            if (!opt->send_data[0] || strlen(opt->send_data) >= MAX_REQUEST)
                usage_and_exit("--send takes 1 to 4095 bytes");
            break;
        case OPT_CONNECT_ONLY: set_protocol(opt, PROTO_CONNECT); break;
        case OPT_BURST: opt->burst = (int)parse_long(optarg, 1, MAX_BURST, "--burst"); break;
        case OPT_ROUNDS: opt->rounds = (int)parse_long(optarg, 1, MAX_ROUNDS, "--rounds"); break;
        case OPT_IDLE_MS: opt->idle_ms = (int)parse_long(optarg, 0, 60000, "--idle-ms"); break;
        case OPT_WORKERS: opt->workers = (int)parse_long(optarg, 1, 65536, "--workers"); break;
        case OPT_SERVICE_MS: opt->service_ms = (int)parse_long(optarg, 1, 60000, "--service-ms"); break;
        default: usage_and_exit(NULL);
        }
    }
    if (opt->port < 0)
        usage_and_exit("-p PORT is required");
    if (optind != argc)
        usage_and_exit("unexpected argument");
    if (opt->burst > 0 && opt->concurrency > 1)
        usage_and_exit("--burst runs its rounds from one client: no -c");
}

/* A burst of K needs K descriptors at once: lift the soft limit to the hard one. */
static void allow_descriptors(int needed)
{
    struct rlimit lim;
    if (getrlimit(RLIMIT_NOFILE, &lim) == 0 && lim.rlim_cur < (rlim_t)needed + 64) {
        lim.rlim_cur = lim.rlim_max;
        setrlimit(RLIMIT_NOFILE, &lim);
    }
}

int main(int argc, char **argv)
{
    static struct run run = { .failure_lock = PTHREAD_MUTEX_INITIALIZER };
    static struct client clients[MAX_CONCURRENCY];
    static struct proc_sample before[MAX_WATCHED], after[MAX_WATCHED];
    struct round_result *rounds = NULL;

    parse_options(argc, argv, &run.opt);
    target_init(&run.target, &run.opt);
    allow_descriptors(run.opt.burst);
    catch_stop_signals();
    sample_watched(&run.opt, before);
    struct timespec start = now_monotonic();
    run.deadline = add_ns(start, (int64_t)(run.opt.max_seconds * 1e9));
    if (run.opt.burst > 0)
        rounds = run_bursts(&run, &clients[0]);
    else
        run_clients(&run, clients);
    double seconds = (double)ns_between(start, now_monotonic()) / 1e9;

    if (run.opt.watched_count > 0) {
        struct timespec settle = { .tv_nsec = SETTLE_MS * 1000000L };
        nanosleep(&settle, NULL);
        sample_watched(&run.opt, after);
    }
    int client_count = run.opt.burst > 0 ? 1 : run.opt.concurrency;
    print_results(&run.opt, clients, client_count, seconds, before, after);
    if (rounds) {
        print_rounds(&run.opt, rounds, (int)atomic_load(&run.claimed));
        free(rounds);
    }
    fflush(stdout);

    long failed = 0;
    for (int c = 0; c < client_count; c++)
        failed += clients[c].failed;
    return failed ? 1 : 0;
}

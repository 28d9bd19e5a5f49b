/*
 * squat - a hostile local user against a server under libthunder, for
 * tests/96-adversary.bats (run as another user, e.g. nobody).
 *
 *   squat names UID BEFORE AFTER TARGET
 *       learn where the kernel's inode counter is (a fresh socket on each
 *       CPU: the next listener's inode will be close), then create
 *       /dev/shm/libthunder.UID.N for N from BEFORE below to AFTER above
 *       the highest of them (at most MAX_NAMES names), and print
 *       "from=F to=T created=K": most
 *       regular files holding "squat N\n" (mode 0644), every 7th a FIFO,
 *       every 11th a symbolic link to TARGET (a file of the squatter's
 *       that must never be written through it).  Prints "created=K".
 *   squat unnames UID FROM TO
 *       remove what "names" made (only the caller's own files can go).
 *   squat bells UID FROM TO SECONDS
 *       bind the abstract names libthunder.UID.N (the tid-derived doorbell
 *       names of earlier releases) for N in [FROM, TO], hold them SECONDS,
 *       then exit.  Prints "bound=K" once they are bound.
 *   squat flood UID SECONDS MAX
 *       every millisecond, send datagrams (1 byte, 8 random bytes) to every
 *       doorbell of UID in /proc/net/unix, "@libthunder.UID.<16 hex>" (the
 *       tid-derived names of earlier releases are the bells squatter's own
 *       here); stop after SECONDS
 *       or MAX datagrams or SIGTERM.  Prints "sent=K names=M".
 *
 * Everything is bounded in count and time; it touches only the names it
 * is given and loopback-free abstract sockets.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <sched.h>
#include <fcntl.h>
#include <signal.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#define MAX_NAMES 65536
#define MAX_BELLS 4096

static double now_s(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* The highest inode of a fresh socket made on each CPU. */
static unsigned long long inode_counter(void)
{
    unsigned long long high = 0;
    long cpus = sysconf(_SC_NPROCESSORS_ONLN);

    for (long cpu = 0; cpu < cpus && cpu < CPU_SETSIZE; cpu++) {
        cpu_set_t one;
        struct stat st;
        int fd;

        CPU_ZERO(&one);
        CPU_SET((int)cpu, &one);
        if (sched_setaffinity(0, sizeof(one), &one) < 0)
            continue;
        if ((fd = socket(AF_INET, SOCK_STREAM, 0)) >= 0 && fstat(fd, &st) == 0 &&
            (unsigned long long)st.st_ino > high)
            high = (unsigned long long)st.st_ino;
        if (fd >= 0)
            close(fd);
    }
    return high;
}

static int squat_names(unsigned uid, unsigned long long before, unsigned long long after,
                       const char *target)
{
    unsigned long long base = inode_counter(), from, to;
    long created = 0;

    from = base > before ? base - before : 1;
    to = base + after;

    if (to < from || to - from >= MAX_NAMES) {
        fprintf(stderr, "squat: at most %d names\n", MAX_NAMES);
        return 2;
    }
    for (unsigned long long n = from; n <= to; n++) {
        char path[128], body[48];
        int fd, len;

        snprintf(path, sizeof(path), "/dev/shm/libthunder.%u.%llu", uid, n);
        if (n % 11 == 0) {
            created += symlink(target, path) == 0;
        } else if (n % 7 == 0) {
            created += mkfifo(path, 0644) == 0;
        } else if ((fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW, 0644)) >= 0) {
            len = snprintf(body, sizeof(body), "squat %llu\n", n);
            created += write(fd, body, (size_t)len) == len;
            close(fd);
        }
    }
    printf("from=%llu to=%llu created=%ld\n", from, to, created);
    return 0;
}

static int unsquat_names(unsigned uid, unsigned long long from, unsigned long long to)
{
    for (unsigned long long n = from; n <= to && to - from < MAX_NAMES; n++) {
        char path[128];
        struct stat st;

        snprintf(path, sizeof(path), "/dev/shm/libthunder.%u.%llu", uid, n);
        if (lstat(path, &st) == 0 && st.st_uid == geteuid())
            unlink(path);
    }
    return 0;
}

static socklen_t abstract(struct sockaddr_un *sun, const char *name)
{
    size_t len = strlen(name);

    memset(sun, 0, sizeof(*sun));
    sun->sun_family = AF_UNIX;
    if (len > sizeof(sun->sun_path) - 1)
        len = sizeof(sun->sun_path) - 1;
    memcpy(sun->sun_path + 1, name, len);
    return (socklen_t)(offsetof(struct sockaddr_un, sun_path) + 1 + len);
}

static int squat_bells(unsigned uid, long from, long to, int seconds)
{
    long bound = 0;

    if (to < from || to - from >= MAX_BELLS) {
        fprintf(stderr, "squat: at most %d doorbell names\n", MAX_BELLS);
        return 2;
    }
    for (long n = from; n <= to; n++) {
        char name[64];
        struct sockaddr_un sun;
        socklen_t len;
        int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);

        if (fd < 0)
            break;                      /* out of fds: hold what we have */
        snprintf(name, sizeof(name), "libthunder.%u.%ld", uid, n);
        len = abstract(&sun, name);
        if (bind(fd, (struct sockaddr *)&sun, len) == 0)
            bound++;
        else
            close(fd);
    }
    printf("bound=%ld\n", bound);
    fflush(stdout);
    sleep((unsigned)seconds);
    return 0;
}

/* The abstract "@libthunder.<uid>." names listed in /proc/net/unix. */
static int bell_names(unsigned uid, char names[][108], int max)
{
    char prefix[48];
    FILE *f = fopen("/proc/net/unix", "r");
    char line[512];
    int k = 0;

    if (f == NULL)
        return 0;
    snprintf(prefix, sizeof(prefix), " @libthunder.%u.", uid);
    while (k < max && fgets(line, sizeof(line), f)) {
        char *at = strstr(line, prefix);
        if (at == NULL)
            continue;
        at += 2;
        at[strcspn(at, " \n")] = '\0';
        if (strlen(at) == strlen(prefix) - 2 + 16 &&
            strspn(at + strlen(prefix) - 2, "0123456789abcdef") == 16)
            snprintf(names[k++], 108, "%s", at);
    }
    fclose(f);
    return k;
}

static volatile sig_atomic_t stopped;

static void on_term(int sig)
{
    (void)sig;
    stopped = 1;
}

static int flood(unsigned uid, int seconds, long max)
{
    static char names[1024][108];
    double end = now_s() + seconds;
    long sent = 0;
    int seen = 0, fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);

    if (fd < 0) {
        perror("squat: socket");
        return 1;
    }
    signal(SIGTERM, on_term);
    while (!stopped && sent < max && now_s() < end) {
        int k = bell_names(uid, names, 1024);
        if (k > seen)
            seen = k;
        for (int i = 0; i < k && sent < max; i++) {
            struct sockaddr_un sun;
            socklen_t len = abstract(&sun, names[i]);
            uint64_t junk = 0;
            getrandom(&junk, sizeof(junk), GRND_NONBLOCK);
            for (size_t size = 1; size <= 8; size += 7)
                if (sendto(fd, &junk, size, MSG_DONTWAIT, (struct sockaddr *)&sun, len) >= 0)
                    sent++;
        }
        usleep(1000);
    }
    printf("sent=%ld names=%d\n", sent, seen);
    return 0;
}

int main(int argc, char **argv)
{
    if (argc == 6 && strcmp(argv[1], "names") == 0)
        return squat_names((unsigned)atoi(argv[2]), strtoull(argv[3], NULL, 10),
                           strtoull(argv[4], NULL, 10), argv[5]);
    if (argc == 5 && strcmp(argv[1], "unnames") == 0)
        return unsquat_names((unsigned)atoi(argv[2]), strtoull(argv[3], NULL, 10),
                             strtoull(argv[4], NULL, 10));
    if (argc == 6 && strcmp(argv[1], "bells") == 0)
        return squat_bells((unsigned)atoi(argv[2]), atol(argv[3]), atol(argv[4]),
                           atoi(argv[5]));
    if (argc == 5 && strcmp(argv[1], "flood") == 0)
        return flood((unsigned)atoi(argv[2]), atoi(argv[3]), atol(argv[4]));
    fprintf(stderr, "usage: squat names UID FROM TO TARGET | unnames UID FROM TO | bells UID FROM TO SECONDS | "
                    "flood UID SECONDS MAX\n");
    return 2;
}

/*
 * secureprobe - what the shim does in a secure (setuid, AT_SECURE) process.
 *
 *   secureprobe [SHIM]
 *       SHIM, an absolute path, is loaded with dlopen: the loader ignores
 *       LD_PRELOAD in a secure process, so this is how the shim's
 *       constructor gets to run there at all.  Without SHIM (or with "-")
 *       the probe uses whatever poll/close it was linked with, i.e. the
 *       shim's if LD_PRELOAD took effect.
 *
 * It then polls (timeout 0) a loopback listener through the shim's poll
 * and closes it through the shim's close.  Under the default mode (auto)
 * the shim makes the listener's segment /dev/shm/libthunder.EUID.INODE
 * for that poll and removes it at the close; with THUNDER_MODE=off or a
 * bad value (pass-through) it makes none.  So "segment=1" shows that the
 * constructor ran and applied the defaults, whatever THUNDER_MODE says.
 *
 * Output on stdout, one key=value per line:
 *   secure=0|1            getauxval(AT_SECURE)
 *   ruid=N euid=N
 *   getenv_THUNDER_MODE=V the variable as the program sees it, "(unset)"
 *                         if absent: a test that sets it can check it is
 *                         really in the environment
 *   mapped_at_start=0|1   a libthunder.so in /proc/self/maps before dlopen
 *   dlopen=ok|none|failed: ERROR
 *   mapped=0|1            the same after dlopen
 *   inode=N               the listener's socket inode
 *   poll=N                what poll returned
 *   segment=0|1           the segment existed after the poll
 *   segment_after_close=0|1
 * The shim's own lines, if any, go to stderr.  Exit 0 unless the probe
 * itself could not run (2).
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <dlfcn.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/auxv.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "segcore.h"

typedef int (*poll_fn)(struct pollfd *, nfds_t, int);
typedef int (*close_fn)(int);

/* Is a file named libthunder.so mapped into this process? */
static bool shim_mapped(void)
{
    char line[4096];
    bool found = false;
    FILE *maps = fopen("/proc/self/maps", "r");

    if (maps == NULL) {
        perror("secureprobe: /proc/self/maps");
        exit(2);
    }
    while (!found && fgets(line, sizeof(line), maps)) {
        size_t len = strcspn(line, "\n");
        const char *tail = "/libthunder.so";
        size_t tlen = strlen(tail);

        found = len >= tlen && memcmp(line + len - tlen, tail, tlen) == 0;
    }
    fclose(maps);
    return found;
}

static int open_listener(void)
{
    struct sockaddr_in addr = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
    int fd = socket(AF_INET, SOCK_STREAM, 0);

    if (fd < 0 || bind(fd, (struct sockaddr *)&addr, sizeof(addr)) < 0 || listen(fd, 16) < 0) {
        perror("secureprobe: listener");
        exit(2);
    }
    return fd;
}

/* The segment the shim names after the effective uid and the inode. */
static bool segment_exists(unsigned long long inode)
{
    char path[TH_SEG_PATH_MAX];

    th_seg_path(path, sizeof(path), geteuid(), inode);
    return access(path, F_OK) == 0;
}

/* The shim's poll and close when it was dlopen'ed, else the linked ones. */
static void *shim_or(void *handle, const char *name, void *linked)
{
    void *p = handle ? dlsym(handle, name) : linked;

    if (p == NULL) {
        fprintf(stderr, "secureprobe: no %s in the shim: %s\n", name, dlerror());
        exit(2);
    }
    return p;
}

int main(int argc, char **argv)
{
    const char *mode = getenv("THUNDER_MODE");
    void *handle = NULL;
    struct stat st;
    struct pollfd p;
    poll_fn do_poll;
    close_fn do_close;
    int fd;

    setvbuf(stdout, NULL, _IOLBF, 0);   /* in order with the shim's stderr */
    printf("secure=%lu\n", getauxval(AT_SECURE));
    printf("ruid=%u euid=%u\n", (unsigned)getuid(), (unsigned)geteuid());
    printf("getenv_THUNDER_MODE=%s\n", mode ? mode : "(unset)");
    printf("mapped_at_start=%d\n", shim_mapped());
    if (argc > 1 && strcmp(argv[1], "-") != 0) {
        handle = dlopen(argv[1], RTLD_NOW | RTLD_LOCAL);
        if (handle)
            printf("dlopen=ok\n");
        else
            printf("dlopen=failed: %s\n", dlerror());
    } else {
        printf("dlopen=none\n");
    }
    printf("mapped=%d\n", shim_mapped());
    do_poll = (poll_fn)shim_or(handle, "poll", (void *)poll);
    do_close = (close_fn)shim_or(handle, "close", (void *)close);

    fd = open_listener();
    if (fstat(fd, &st) < 0) {
        perror("secureprobe: fstat");
        return 2;
    }
    printf("inode=%llu\n", (unsigned long long)st.st_ino);
    p = (struct pollfd){ .fd = fd, .events = POLLIN };
    printf("poll=%d\n", do_poll(&p, 1, 0));
    printf("segment=%d\n", segment_exists(st.st_ino));
    do_close(fd);
    printf("segment_after_close=%d\n", segment_exists(st.st_ino));
    return 0;
}

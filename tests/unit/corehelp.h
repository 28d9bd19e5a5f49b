/*
 * Helpers shared by the unit tests that make real segments, with the
 * segment core alone (test_segcore links nothing else; seghelp.h adds the
 * library's attach on top).
 *
 * Every case uses fake socket inodes derived from its own pid, so cases
 * (and concurrent runs of the suite) never meet, and the harness can
 * remove whatever a crashed case left in /dev/shm.
 */
#pragma once

#include "tap.h"          /* first: it defines _GNU_SOURCE */
#include "segcore.h"

#include <fcntl.h>
#include <inttypes.h>
#include <sys/stat.h>

#define FAKE_INODE_BASE 0xfff0000000ULL
#define FAKE_INODES_PER_CASE 64
#define TEST_PORT 4242

/* A socket inode no real socket has: unique per (case pid, k). */
static inline uint64_t fake_inode_of(pid_t pid, int k)
{
    return FAKE_INODE_BASE + ((uint64_t)pid << 6) + (uint64_t)k;
}

static inline uint64_t fake_inode(int k)
{
    return fake_inode_of(getpid(), k);
}

#define ISOLATED_UID 65534      /* "nobody" */

/*
 * Cases that leave broken segments in /dev/shm on purpose run, when we are
 * root, under another effective uid: every process creating a segment
 * sweeps its own user's, and must not meet ours (it would wait on them
 * and warn in the middle of someone else's test).
 */
static inline void isolate_uid(void)
{
    if (geteuid() != 0)
        return;
    REQUIRE(setegid(ISOLATED_UID) == 0);
    REQUIRE(seteuid(ISOLATED_UID) == 0);
}

/* The segment's file in /dev/shm. */
static inline void seg_path(char *buf, size_t len, uint64_t inode)
{
    th_seg_path(buf, len, geteuid(), inode);
}

static inline void seg_unlink(uint64_t inode)
{
    char path[TH_SEG_PATH_MAX];

    seg_path(path, sizeof(path), inode);
    unlink(path);
}

/* Is there a file (of any kind) at the segment's name? */
static inline bool seg_exists(uint64_t inode)
{
    char path[TH_SEG_PATH_MAX];
    struct stat st;

    seg_path(path, sizeof(path), inode);
    return lstat(path, &st) == 0;
}

/* A file we make ourselves at the segment's name, with a chosen mode and size. */
static inline int make_file(uint64_t inode, mode_t mode, off_t size)
{
    char path[TH_SEG_PATH_MAX];
    int fd;

    seg_path(path, sizeof(path), inode);
    fd = open(path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    REQUIRE(fd >= 0);
    REQUIRE(fchmod(fd, mode) == 0);
    REQUIRE(ftruncate(fd, size) == 0);
    return fd;
}

/* After each case: remove what it may have left (it may have crashed). */
static inline void seg_cleanup_case(pid_t pid)
{
    char path[160];

    for (int k = 0; k < FAKE_INODES_PER_CASE; k++) {
        seg_path(path, sizeof(path), fake_inode_of(pid, k));
        unlink(path);
        rmdir(path);
        th_seg_path(path, sizeof(path), ISOLATED_UID, fake_inode_of(pid, k));
        unlink(path);
        rmdir(path);
        snprintf(path, sizeof(path), "/dev/shm/libthunder-test.%d.%d", (int)pid, k);
        unlink(path);
    }
}

/* A pid that certainly belonged to a process that is gone (reaped). */
static inline pid_t dead_pid(void)
{
    pid_t pid = fork();

    if (pid == 0)
        _exit(0);
    REQUIRE(pid > 0);
    waitpid(pid, NULL, 0);
    return pid;
}

/* ---- capturing the shim's stderr lines ---------------------------------- */

static int capture_saved_fd = -1;
static int capture_fd = -1;

static inline void capture_begin(void)
{
    fflush(stderr);
    capture_fd = memfd_create("stderr", MFD_CLOEXEC);
    REQUIRE(capture_fd >= 0);
    capture_saved_fd = dup(STDERR_FILENO);
    dup2(capture_fd, STDERR_FILENO);
}

/* Restore stderr and return what was written (NUL-terminated, bounded). */
static inline void capture_end(char *buf, size_t len)
{
    ssize_t n;

    dup2(capture_saved_fd, STDERR_FILENO);
    close(capture_saved_fd);
    n = pread(capture_fd, buf, len - 1, 0);
    buf[n > 0 ? n : 0] = '\0';
    close(capture_fd);
}

static inline int count_substr(const char *hay, const char *needle)
{
    int n = 0;

    for (const char *p = hay; (p = strstr(p, needle)) != NULL; p += strlen(needle))
        n++;
    return n;
}

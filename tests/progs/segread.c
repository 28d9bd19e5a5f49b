/*
 * segread - print the per-process statistics of one libthunder segment, in
 * the line format of `thunder-stat --kv`, for tests that must count while
 * thunder-stat is not available.
 *
 *   segread /dev/shm/libthunder.UID.INODE
 *
 * One line per process slot in use:
 *   port=P inode=I pid=N alive=0|1 strategy=S waits=N accepts=N wakeups=N
 *   spurious=N eagain=N lock_waits=N lock_wait_ms=N rotations=N
 * then "recoveries=N".  The segment is validated (size, magic, version)
 * before anything in it is read, and only read.  Exit 1 if it is not a
 * valid segment, 2 on usage error.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "../../shim/segment.h"

static const char *strategy_name(uint32_t s)
{
    static const char *const names[] = { "none", "observe", "lock", "exclusive", "jitter", "pass" };

    return s < sizeof(names) / sizeof(names[0]) ? names[s] : "?";
}

static int alive(int32_t pid)
{
    return pid > 0 && (kill(pid, 0) == 0 || errno == EPERM);
}

static uint64_t get(const _Atomic uint64_t *v)
{
    return atomic_load_explicit(v, memory_order_relaxed);
}

static void print_slot(const struct th_seg *seg, const struct th_proc_stats *p)
{
    int32_t pid = atomic_load(&p->pid);

    printf("port=%u inode=%" PRIu64 " pid=%d alive=%d strategy=%s waits=%" PRIu64
           " accepts=%" PRIu64 " wakeups=%" PRIu64 " spurious=%" PRIu64 " eagain=%" PRIu64
           " lock_waits=%" PRIu64 " lock_wait_ms=%" PRIu64 " rotations=%" PRIu64 "\n",
           seg->port, seg->inode, pid, alive(pid), strategy_name(atomic_load(&p->strategy)),
           get(&p->waits), get(&p->accepts), get(&p->wakeups), get(&p->spurious),
           get(&p->eagain), get(&p->lock_waits), get(&p->lock_wait_ns) / 1000000,
           get(&p->rotations));
}

int main(int argc, char **argv)
{
    const struct th_seg *seg;
    struct stat st;
    int fd;

    if (argc != 2) {
        fprintf(stderr, "usage: segread /dev/shm/libthunder.UID.INODE\n");
        return 2;
    }
    fd = open(argv[1], O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0 || fstat(fd, &st) < 0 || st.st_size != (off_t)sizeof(struct th_seg)) {
        fprintf(stderr, "segread: %s: not a segment of this layout\n", argv[1]);
        return 1;
    }
    seg = mmap(NULL, sizeof(*seg), PROT_READ, MAP_SHARED, fd, 0);
    close(fd);
    if (seg == MAP_FAILED || seg->magic != TH_SEG_MAGIC || seg->version != TH_SEG_VERSION ||
        seg->size != sizeof(*seg)) {
        fprintf(stderr, "segread: %s: bad magic, version or size\n", argv[1]);
        return 1;
    }
    for (int i = 0; i < TH_MAX_PROCS; i++)
        if (atomic_load(&seg->procs[i].pid) != 0)
            print_slot(seg, &seg->procs[i]);
    printf("recoveries=%" PRIu64 "\n", atomic_load(&seg->recoveries));
    return 0;
}

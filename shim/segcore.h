/*
 * The segment core: everything known about a segment file (seglayout.h is
 * its layout) that the library, thunder-stat and the tests share.
 *
 *   name        /dev/shm/libthunder.<euid>.<socket inode>[.<16 hex>]: build,
 *               parse, find (the suffixed "alternative" names are for when
 *               another user holds the plain one: see th_seg_find)
 *   validation  the file (regular, owner, mode 0600, size) and the header
 *               (magic, version, size, uid, inode, ready); a reason string
 *   liveness    a thread alive, a pid exited (a zombie counts as exited)
 *   stale       every process recorded in the segment is gone
 *   guard       the robust process-shared mutex: timed lock, trylock, unlock
 *   open, map   read-only for the reader, read-write for the library and gc
 *   create      a fresh segment, exactly 0600, registered to its creator
 *   remove      "remove if stale": the library's sweep and gc call the same
 *               function, so they agree by construction
 *
 * It depends on nothing else of the library (no configuration, no logging,
 * no real_* pointers, no cached pid): problems come back as reason strings,
 * pids and uids as parameters.  Linked into libthunder.so, thunder-stat,
 * the test programs and the unit tests.
 */
#pragma once

#include "seglayout.h"

#include <stdbool.h>
#include <stddef.h>
#include <sys/stat.h>
#include <sys/types.h>

#define TH_SHM_DIR "/dev/shm"
#define TH_SEG_PATH_MAX 112   /* room for TH_SHM_DIR "/libthunder.<uid>.<inode>.<16 hex>" */
#define TH_SEG_GUARD_TIMEOUT_S 1    /* a guard held longer than this is refused */

/* ---- name ------------------------------------------------------------ */
/* "/libthunder.<uid>.<inode>", the name shm_open takes. */
void th_seg_name(char *buf, size_t len, uid_t uid, uint64_t inode);
/* TH_SHM_DIR "/libthunder.<uid>.<inode>", the file. */
void th_seg_path(char *buf, size_t len, uid_t uid, uint64_t inode);
/* "libthunder.<uid>.": what every entry of this user's segments starts with. */
void th_seg_prefix(char *buf, size_t len, uid_t uid);
/* TH_SHM_DIR "/..." of a mapped segment, its suffix included. */
void th_seg_path_of(char *buf, size_t len, const struct th_seg *seg);
/* A directory entry "libthunder.<uid>.<decimal inode>[.<16 hex>]"; false for any other. */
bool th_seg_parse_name(const char *entry, uid_t uid, uint64_t *inode);
/*
 * Where the segment of (uid, inode) is, into path.  Another local user can
 * create files at the plain name first (socket inodes are public in
 * /proc/net/tcp), and in sticky /dev/shm nobody but root can remove them;
 * so when the plain name is not uid's, the segment has an alternative
 * name, the plain one plus ".<16 random hex digits>", which nobody can
 * predict.  Only files owned by uid are candidates (no other user can
 * make one): the plain name when the file there is uid's, else the
 * lowest-named alternative with mode 0600.  False when uid has neither
 * (path is then the plain name).  Nothing is opened.
 */
bool th_seg_find(uid_t uid, uint64_t inode, char *path, size_t len);
/* Something not uid's (or not statable) is at the plain name. */
bool th_seg_name_is_foreign(uid_t uid, uint64_t inode);
/* 64 unpredictable bits, never 0 (getrandom; names, doorbell tokens). */
uint64_t th_random64(void);

/* How a process handles a listener (enum th_strategy), as shown: "lock"... */
const char *th_strategy_name(uint32_t strategy);

/* ---- validation: NULL when fine, else why not ------------------------- */
const char *th_seg_check_file(const struct stat *st, uid_t uid);
const char *th_seg_check_header(const struct th_seg *seg, uid_t uid, uint64_t inode);
/* Why open() refused a segment's name (O_NOFOLLOW makes a link ELOOP). */
const char *th_seg_open_error(int err);
/* A file whose magic is ours but its version another: maybe in use. */
bool th_seg_other_release(int fd);
/* The creator's "ready" flag, read with pread (no mapping needed). */
bool th_seg_header_ready(int fd);

/* ---- liveness ---------------------------------------------------------- */
bool th_thread_alive(int32_t pid, int32_t tid);
bool th_pid_exited(int32_t pid);    /* a zombie: exited, not reaped (reads /proc) */
bool th_thread_stopped(int32_t pid, int32_t tid);   /* SIGSTOP or a debugger (reads /proc) */
bool th_proc_alive(int32_t pid);    /* alive and not a zombie (reads /proc) */

/* procs[] slots ever claimed (0..TH_MAX_PROCS, whatever the file holds):
   the busy paths' scans stop there. */
int th_seg_procs_used(const struct th_seg *seg);

/* ---- the stale check (call it under the guard) ------------------------- */
/* Every recorded process is gone; gone_pid (or 0) is one that is leaving. */
bool th_seg_stale(const struct th_seg *seg, int32_t gone_pid);

/* ---- the guard: 0 or an error number (EOWNERDEAD is repaired, gives 0) -- */
int th_seg_guard_lock(struct th_seg *seg);      /* waits TH_SEG_GUARD_TIMEOUT_S */
int th_seg_guard_trylock(struct th_seg *seg);
void th_seg_guard_unlock(struct th_seg *seg);

/* ---- open, map, create ---------------------------------------------- */
/* open() without following a link or blocking on a FIFO: an fd or -1 (errno). */
int th_seg_open_path(const char *path, bool writable);
/*
 * Open path without following links or blocking on a FIFO, and check the
 * file; what is not a regular file of uid's is refused without being opened.  An fd (close it with th_seg_close), or -1 with *why set ("" when
 * the name is simply gone).  patient: wait (bounded) for a creator still
 * sizing it.
 */
int th_seg_open_file(const char *path, uid_t uid, bool writable, bool patient,
                     const char **why);
struct th_seg *th_seg_map(int fd, bool writable);     /* NULL with errno */
void th_seg_unmap(struct th_seg *seg);
void th_seg_close(int fd);
/*
 * The segment file at path (for socket inode), opened, checked and mapped;
 * NULL with *why (NULL when it just does not exist).  patient: wait
 * (bounded) for a creator still initialising it.
 */
struct th_seg *th_seg_open_at(const char *path, uid_t uid, uint64_t inode, bool writable,
                              bool patient, const char **why);
/* The same for the segment of (uid, inode), wherever th_seg_find finds it. */
struct th_seg *th_seg_open(uid_t uid, uint64_t inode, bool writable, bool patient,
                           const char **why);
/*
 * Create it (NULL with errno; EEXIST when it exists), at the plain name
 * (suffix 0) or an alternative one, with O_EXCL|O_NOFOLLOW (never through
 * anything already there), mode exactly 0600, with creator_pid in the
 * first statistics slot before it is ready, so that no sweep ever sees it
 * empty.
 */
struct th_seg *th_seg_create(uid_t uid, uint64_t inode, uint64_t suffix, uint16_t port,
                             int32_t creator_pid);

/* ---- remove if stale -------------------------------------------------- */
enum th_seg_removal {
    TH_SEG_REMOVED,       /* stale: the name is gone, the segment marked unlinked */
    TH_SEG_IN_USE,        /* a recorded process is alive */
    TH_SEG_GUARD_BUSY,    /* the guard could not be had: left alone */
    TH_SEG_LEAVING,       /* already unlinked by its last process */
    TH_SEG_UNLINK_FAILED, /* errno says why */
};
/*
 * Under the guard (a trylock when !patient, as the library's sweep must
 * never wait; a timed lock for gc): when every process is gone, unlink the
 * name and mark the segment unlinked, so an attacher that mapped it
 * meanwhile retries with a fresh one.
 */
enum th_seg_removal th_seg_remove_if_stale(struct th_seg *seg, bool patient);
/* The same, the guard already held; gone_pid (or 0) is a process leaving. */
enum th_seg_removal th_seg_remove_if_stale_locked(struct th_seg *seg, int32_t gone_pid);

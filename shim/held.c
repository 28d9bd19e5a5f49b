/*
 * The accept locks this thread holds.  A lock is taken before the real
 * wait and kept only when the wait reports its listener ready; it is then
 * released by the accept that follows, or when this thread waits again,
 * or (by the other waiters) after hold_ms.  The owner pid is recorded so
 * a forked child never believes it holds its parent's lock.
 *
 * Whether the segment marks a hold as in the real wait is remembered too:
 * a lock taken at once is marked by the take itself, and one released
 * after the wait needs no mark out first (the release ends the hold), so
 * an uncontended lock wait costs two trips through the segment's guard
 * (take, release), three when it keeps the lock for the accept (take,
 * mark out, release), not four.
 */
#include "thunder.h"

/* a wait takes at most this many; a thread never holds more */
#define MAX_HELD TH_MAX_WAIT_LISTENERS

struct held {
    struct th_listener *l;
    uint64_t gen;
    pid_t pid;
    bool in_wait;       /* as the segment marks it (th_lock_mark_waiting) */
};

static __thread struct held holds[MAX_HELD];
static __thread int nheld;

static int find(struct th_listener *l)
{
    for (int i = 0; i < nheld; i++)
        if (holds[i].l == l && holds[i].pid == th_pid)
            return i;
    return -1;
}

bool th_held_has(struct th_listener *l)
{
    return nheld && find(l) >= 0;
}

void th_held_add(struct th_listener *l, uint64_t gen, bool in_wait)
{
    if (nheld == MAX_HELD) {      /* cannot track it: do not keep it */
        th_lock_release_and_wake(l->seg, &th_cfg.lock, gen);
        return;
    }
    holds[nheld++] = (struct held){ .l = l, .gen = gen, .pid = th_pid, .in_wait = in_wait };
}

static void drop(int i, int lookers)
{
    struct held h = holds[i];

    holds[i] = holds[--nheld];
    if (h.pid == th_pid)
        th_lock_release_and_wake_lookers(h.l->seg, &th_cfg.lock, h.gen, lookers);
}

void th_held_release(struct th_listener *l)
{
    th_held_release_lookers(l, 0);
}

void th_held_release_lookers(struct th_listener *l, int lookers)
{
    int i = find(l);

    if (i >= 0)
        drop(i, lookers);
}

void th_held_release_all(void)
{
    while (nheld)
        drop(nheld - 1, 0);
}

void th_held_mark_waiting(bool in_wait)
{
    for (int i = 0; i < nheld; i++)
        if (holds[i].pid == th_pid && holds[i].in_wait != in_wait) {
            th_lock_mark_waiting(holds[i].l->seg, holds[i].gen, in_wait);
            holds[i].in_wait = in_wait;
        }
}

void th_held_forget_after_fork(void)
{
    nheld = 0;
}

int th_held_take(struct th_listener *const *ls, int k, bool may_block, int64_t deadline,
                 const sigset_t *sigmask, int bell, bool *held, bool *busy)
{
    bool blocked = false, look = false;

    for (int j = 0; j < k && !look; j++) {
        struct th_seg *seg = th_listener_seg(ls[j]);
        struct th_lock_wait w = { .params = &th_cfg.lock, .deadline = deadline,
                                  .sigmask = sigmask, .for_wait = true,
                                  .use_bell = bell >= 0, .bell = bell };
        int64_t waited;
        uint64_t gen;

        held[j] = busy[j] = false;
        if (seg == NULL)
            continue;                       /* refused segment: pass-through */
        /* block for one lock at most, and never while holding another */
        w.try_only = !may_block || blocked || nheld > 0;
        blocked = blocked || may_block;
        switch (th_lock_acquire(seg, &w, &gen, &waited)) {
        case TH_LOCK_OK:            /* at once: the take marked it in the wait */
            th_held_add(ls[j], gen, waited == 0);
            held[j] = true;
            break;
        case TH_LOCK_BUSY:
        case TH_LOCK_TIMEOUT:
            busy[j] = true;
            break;
        case TH_LOCK_INTR:
            th_held_release_all();
            errno = EINTR;
            return -1;
        case TH_LOCK_LOOK:              /* blocked, so it holds nothing */
            busy[j] = look = true;
            break;
        case TH_LOCK_ERROR:
            break;
        }
        if (waited) {
            TH_COUNT(ls[j], lock_waits, 1);
            TH_COUNT(ls[j], lock_wait_ns, (uint64_t)waited);
        }
    }
    return look ? 1 : 0;
}

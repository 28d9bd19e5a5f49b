/*
 * One object per listening socket (by inode) in this process: whether the
 * port filter lets us manage it, its shared segment once attached, and this
 * process's statistics slot in it.
 *
 * When the last fd of a listener is closed its entry is recycled and its
 * segment detached (the last process out removes it).  The mapping itself
 * is kept, because another thread may still be returning from a call on
 * it; so a process maps at most TH_MAX_MAPPED segments in its lifetime
 * (programs that open a listener per transfer, like FTP servers in passive
 * mode), and the listeners after that run pass-through.
 */
#include "thunder.h"

#include <pthread.h>
#include <unistd.h>

#define TH_MAX_MAPPED 256

enum { BLOCKING_UNKNOWN, BLOCKING_YES, BLOCKING_NO };   /* th_listener.blocking */

static struct th_listener table[TH_MAX_LISTENERS];
static _Atomic int count;          /* entries ever used; inode 0 = recycled */
static int mapped;                 /* segments mapped by this process, ever */
static pthread_mutex_t table_lock = PTHREAD_MUTEX_INITIALIZER;

struct th_listener *th_listener_at(int index)
{
    return index < atomic_load(&count) ? &table[index] : NULL;
}

static struct th_listener *find(uint64_t inode)
{
    int n = atomic_load(&count);

    for (int i = 0; i < n; i++)
        if (table[i].inode == inode && inode != 0)
            return &table[i];
    return NULL;
}

/* A recycled entry, or a new one; NULL when the table is full. */
static struct th_listener *free_entry_locked(void)
{
    int n = atomic_load(&count);

    for (int i = 0; i < n; i++)
        if (table[i].inode == 0)
            return &table[i];
    if (n == TH_MAX_LISTENERS)
        return NULL;
    table[n].index = n;
    return &table[n];
}

struct th_listener *th_listener_for_inode(uint64_t inode, uint16_t port)
{
    static bool warned_full;
    struct th_listener *l = find(inode);

    if (l)
        return l;
    th_self.in_shim++;
    pthread_mutex_lock(&table_lock);
    l = find(inode);
    if (l == NULL && (l = free_entry_locked()) != NULL) {
        l->port = port;
        l->managed = th_port_managed(port);
        l->seg = NULL;
        l->stats = NULL;
        atomic_store(&l->stats_pid, 0);
        atomic_store(&l->logged, 0);
        atomic_store(&l->blocking, BLOCKING_UNKNOWN);
        atomic_store(&l->attach_state, 0);
        atomic_store(&l->others_checked_ns, 0);
        atomic_store(&l->others_waits, 0);
        atomic_store(&l->others_active, false);
        atomic_store(&l->accepts_at_rotation, 0);
        atomic_store(&l->busy_pending, 0);
        atomic_store(&l->rate_at, 0);
        atomic_store(&l->rate_per_ms, 0);
        l->inode = inode;                /* publish after filling */
        if (l->index == atomic_load(&count))
            atomic_store(&count, l->index + 1);
        th_debug("listener inode %llu port %u: %s", (unsigned long long)inode,
                 port, l->managed ? "managed" : "not in THUNDER_PORTS, left alone");
    } else if (l == NULL && !warned_full) {
        warned_full = true;
        th_warn("more than %d listeners open at once; the others are left alone",
                TH_MAX_LISTENERS);
    }
    pthread_mutex_unlock(&table_lock);
    th_self.in_shim--;
    return l;
}

void th_listener_closed(struct th_listener *l)
{
    th_self.in_shim++;
    pthread_mutex_lock(&table_lock);
    if (l->inode != 0) {
        if (atomic_load(&l->attach_state) == 1)
            th_seg_detach(l->seg, atomic_load(&l->stats_pid) == th_pid ? l->stats : NULL);
        l->inode = 0;
    }
    pthread_mutex_unlock(&table_lock);
    th_self.in_shim--;
}

/* Claim this process's statistics slot (again after a fork); the first
   thread to get here claims it, under table_lock, the others wait for it. */
static struct th_proc_stats *my_stats(struct th_listener *l)
{
    if (atomic_load_explicit(&l->stats_pid, memory_order_acquire) != th_pid) {
        th_self.in_shim++;
        pthread_mutex_lock(&table_lock);
        if (atomic_load_explicit(&l->stats_pid, memory_order_relaxed) != th_pid) {
            l->stats = th_seg_claim_slot(l->seg, th_pid);
            atomic_store(&l->accepts_at_rotation, 0);
            atomic_store_explicit(&l->stats_pid, th_pid, memory_order_release);
        }
        pthread_mutex_unlock(&table_lock);
        th_self.in_shim--;
    }
    return l->stats;
}

/* The first call in this process: map the segment, claim the slot. */
static struct th_seg *attach(struct th_listener *l)
{
    int state = atomic_load_explicit(&l->attach_state, memory_order_acquire);
    int saved_errno = errno;      /* attaching tries calls that fail (EEXIST) */

    if (state == 0) {
        th_self.in_shim++;
        pthread_mutex_lock(&table_lock);
        if (atomic_load(&l->attach_state) == 0) {
            static bool warned_mapped;
            if (mapped < TH_MAX_MAPPED) {
                l->seg = th_seg_attach(l->inode, l->port);
                mapped += l->seg != NULL;
            } else if (!warned_mapped) {
                warned_mapped = true;
                th_warn("%d listeners used by this process so far; the newer ones run "
                        "pass-through", TH_MAX_MAPPED);
            }
            atomic_store_explicit(&l->attach_state, l->seg ? 1 : -1, memory_order_release);
        }
        pthread_mutex_unlock(&table_lock);
        th_self.in_shim--;
        state = atomic_load(&l->attach_state);
    }
    if (state < 0) {
        errno = saved_errno;
        return NULL;
    }
    my_stats(l);
    errno = saved_errno;
    return l->seg;
}

/* Every hook asks this, several times per connection: the common case
   (attached, this process's slot claimed) is two loads, nothing more. */
struct th_seg *th_listener_seg(struct th_listener *l)
{
    if (atomic_load_explicit(&l->attach_state, memory_order_acquire) > 0 &&
        atomic_load_explicit(&l->stats_pid, memory_order_acquire) == th_pid)
        return l->seg;
    return attach(l);
}

/* This process's statistics slot in l's segment (NULL without one). */
static struct th_proc_stats *stats_of(struct th_listener *l)
{
    return th_listener_seg(l) ? l->stats : NULL;
}

void th_count(struct th_listener *l, size_t field_offset, uint64_t n)
{
    struct th_proc_stats *stats = stats_of(l);

    if (stats == NULL)
        return;
    atomic_fetch_add_explicit((_Atomic uint64_t *)((char *)stats + field_offset), n,
                              memory_order_relaxed);
}

/*
 * O_NONBLOCK belongs to the open file, which every fd of the listener
 * (dups, and the same socket in other processes) shares: what an accept
 * hook found out is kept here until the program sets the flag again
 * through an fd known as this listener (hook_flags.c).  A change made by
 * another process sharing the socket, or through a number the shim never
 * saw as the listener, is not seen; a program whose workers change their
 * shared listener's flag under each other cannot know it either.
 */
int th_listener_blocking(struct th_listener *l)
{
    uint8_t known = atomic_load_explicit(&l->blocking, memory_order_relaxed);

    return known == BLOCKING_UNKNOWN ? -1 : known == BLOCKING_YES;
}

void th_listener_note_blocking(struct th_listener *l, int blocks)
{
    uint8_t known = blocks < 0 ? BLOCKING_UNKNOWN : blocks ? BLOCKING_YES : BLOCKING_NO;

    atomic_store_explicit(&l->blocking, known, memory_order_relaxed);
}

/* This process's successful accepts on l so far (0 without a segment). */
uint64_t th_listener_accepts(struct th_listener *l)
{
    struct th_proc_stats *stats = stats_of(l);

    if (stats == NULL)
        return 0;
    return atomic_load_explicit(&stats->accepts, memory_order_relaxed);
}

/* Every wait may come here: read first, and write the bit only once. */
static void log_once(struct th_listener *l, uint32_t bit, const char *why)
{
    if (!(atomic_load_explicit(&l->logged, memory_order_relaxed) & bit) &&
        !(atomic_fetch_or(&l->logged, bit) & bit))
        th_info("port %u (inode %llu): %s", l->port, (unsigned long long)l->inode, why);
}

void th_listener_set_strategy(struct th_listener *l, enum th_strategy s, const char *why)
{
    struct th_proc_stats *stats = stats_of(l);

    if (stats != NULL)
        atomic_store_explicit(&stats->strategy, s, memory_order_relaxed);
    log_once(l, 1u << s, why);
}

/* Said once; the strategy shown stays the one its other waits use. */
void th_listener_note_busy(struct th_listener *l)
{
    log_once(l, TH_LOGGED_BUSY, th_policy_busy_plan().why);
}

/*
 * Other processes wait on this listener if their wait counters moved
 * since the last look.  Counting, not asking whether they live: a worker
 * killed with -9 leaves its slot behind but its counters stand still.
 * One look at the slots per OTHERS_CHECK_MS (it is only asked when a
 * wake-up has already brought one connection).
 */
#define OTHERS_CHECK_MS 50

bool th_listener_others_wait(struct th_listener *l)
{
    struct th_seg *seg = th_listener_seg(l);
    int64_t now = th_now_ns();
    uint64_t sum = 0;
    bool active;

    if (seg == NULL)
        return false;
    if (now - atomic_load_explicit(&l->others_checked_ns, memory_order_relaxed) <
        OTHERS_CHECK_MS * TH_NS_PER_MS)
        return atomic_load_explicit(&l->others_active, memory_order_relaxed);
    for (int i = 0, used = th_seg_procs_used(seg); i < used; i++) {
        int32_t pid = atomic_load_explicit(&seg->procs[i].pid, memory_order_relaxed);
        if (pid != 0 && pid != th_pid)
            sum += atomic_load_explicit(&seg->procs[i].waits, memory_order_relaxed);
    }
    active = sum != atomic_exchange_explicit(&l->others_waits, sum, memory_order_relaxed);
    atomic_store_explicit(&l->others_active, active, memory_order_relaxed);
    atomic_store_explicit(&l->others_checked_ns, now, memory_order_relaxed);
    return active;
}

/* ---- seg->waiting -------------------------------------------------------- */

static void waiting_add(struct th_listener *l, int n)
{
    struct th_proc_stats *stats = stats_of(l);

    if (stats == NULL)
        return;
    atomic_fetch_add_explicit(&l->seg->waiting, n, memory_order_relaxed);
    atomic_fetch_add_explicit(&stats->waiting, n, memory_order_relaxed);
}

void th_waiting_count(struct th_listener *l)
{
    uint64_t bit = th_listener_bit(l->index);

    if (!(th_self.counted & bit)) {
        th_self.counted |= bit;
        waiting_add(l, 1);
    }
}

void th_waiting_done(struct th_listener *l)
{
    uint64_t bit = th_listener_bit(l->index);

    if (th_self.counted & bit) {
        th_self.counted &= ~bit;
        waiting_add(l, -1);
    }
}

void th_waiting_clear(void)
{
    uint64_t left = th_self.counted;

    for (int i = 0; left; i++, left >>= 1) {
        struct th_listener *l;
        if ((left & 1) && (l = th_listener_at(i)) != NULL)
            th_waiting_done(l);
    }
    th_self.counted = 0;
}

void th_count_yield(struct th_listener *l)
{
    struct th_proc_stats *stats = stats_of(l);

    if (stats != NULL)
        atomic_fetch_add_explicit(&stats->yields, 1, memory_order_relaxed);
}

/* seg->accept_seq after this thread's last accept on listener i, valid
   where th_self.accepted has bit i (a listener entry reused for another
   socket inherits it: one rotation more or less, nothing else) */
static __thread uint32_t my_accept_seq[TH_MAX_LISTENERS];

/*
 * An accept TH_QUIET_US or more after the one before it on the listener
 * (by any process) ends a quiet spell: the listener was idle (bursts,
 * burst.c th_burst_since_idle).  A saturated listener has short gaps of
 * its own, when the CPUs are busy elsewhere: 64 workers on 2 CPUs under
 * 128 clients in a closed loop, in 72,000 accepts, 526 gaps of 300-500
 * us, 63 of 500 us-1 ms, one longer.  With 300 us here, one every 5 ms
 * put the listener "in a burst" nearly all the time (ex_greedy: 0.64
 * refusals per accept; ex_epoll_excl: 0.17 yields per accept, 0.957x
 * the throughput without the library); with 800 us, 0.016 and 0.001
 * (0.99x).  A steady client 1 ms apart still leaves it quiet, and burst
 * rounds 20 ms apart measure the same.
 */
#define TH_QUIET_US 800
static void note_accept_time(struct th_seg *seg, int64_t now)
{
    int64_t last = atomic_exchange_explicit(&seg->last_accept_ns, now, memory_order_relaxed);

    if (now - last >= TH_QUIET_US * TH_NS_PER_US)
        atomic_store_explicit(&seg->quiet_ended_ns, now, memory_order_relaxed);
}

/*
 * A busy worker (policy.c) writes the line every accept wrote less often:
 * a process's busy accepts are added to accept_seq BUSY_BATCH at a time
 * (and at its next accept that is not a busy one), and the time of the
 * last accept only when the one there is BUSY_STALE_US old or more.  What
 * the others read from it stays a hint: a rotation's gap may miss up to
 * BUSY_BATCH - 1 accepts of each busy process, and a quiet spell is still
 * one, within BUSY_STALE_US.  (ex_epoll_excl, 4 workers, 8 clients in a
 * closed loop: without these writes at all, 1.011x the throughput and
 * 0.984x the CPU per connection, 11 pairs.)
 */
#define BUSY_BATCH 8
#define BUSY_STALE_US 100

static bool busy_defers(struct th_listener *l, int64_t now)
{
    int64_t last;

    if (atomic_load_explicit(&l->busy_pending, memory_order_relaxed) + 1 >= BUSY_BATCH)
        return false;
    last = atomic_load_explicit(&l->seg->last_accept_ns, memory_order_relaxed);
    if (now - last >= BUSY_STALE_US * TH_NS_PER_US)
        atomic_store_explicit(&l->seg->last_accept_ns, now, memory_order_relaxed);
    atomic_fetch_add_explicit(&l->busy_pending, 1, memory_order_relaxed);
    return true;
}

int64_t th_listener_since_quiet(struct th_listener *l, int64_t now)
{
    struct th_seg *seg = th_listener_seg(l);
    int64_t at = seg ? atomic_load_explicit(&seg->quiet_ended_ns, memory_order_relaxed) : 0;

    return at ? now - at : INT64_MAX;
}

uint32_t th_accept_gap(struct th_listener *l, int64_t now_ns, bool busy)
{
    uint64_t bit = th_listener_bit(l->index);
    uint32_t now, mine, before = my_accept_seq[l->index];
    bool seen = th_self.accepted & bit;

    if (th_listener_seg(l) == NULL)
        return UINT32_MAX;
    if (busy && seen && busy_defers(l, now_ns))
        return UINT32_MAX;
    mine = 1 + atomic_exchange_explicit(&l->busy_pending, 0, memory_order_relaxed);
    now = atomic_fetch_add_explicit(&l->seg->accept_seq, mine, memory_order_relaxed) + mine;
    note_accept_time(l->seg, now_ns);
    my_accept_seq[l->index] = now;
    th_self.accepted |= bit;
    return seen ? now - before - mine : UINT32_MAX;
}

/*
 * The listener's accepts (by every process) per millisecond, measured by
 * this process over windows of 1 ms or more that end at its accepts (the
 * rotation's turn, policy.c).  The thread that ends a window claims it;
 * the others read the last one's.
 */
uint32_t th_listener_rate(struct th_listener *l, int64_t now)
{
    int64_t at = atomic_load_explicit(&l->rate_at, memory_order_relaxed);
    uint32_t seq, before;

    if ((at != 0 && now - at < TH_NS_PER_MS) || th_listener_seg(l) == NULL ||
        !atomic_compare_exchange_strong(&l->rate_at, &at, now))
        return atomic_load_explicit(&l->rate_per_ms, memory_order_relaxed);
    seq = atomic_load_explicit(&l->seg->accept_seq, memory_order_relaxed);
    before = atomic_exchange_explicit(&l->rate_seq, seq, memory_order_relaxed);
    if (at != 0)
        atomic_store_explicit(&l->rate_per_ms,
                              (uint32_t)((uint64_t)(seq - before) * TH_NS_PER_MS /
                                         (uint64_t)(now - at)),
                              memory_order_relaxed);
    return atomic_load_explicit(&l->rate_per_ms, memory_order_relaxed);
}

/*
 * Other processes whose waits on l are passed through (policy.c: the
 * program rotates its own exclusive entry) are not counted in
 * seg->waiting, though they may sleep in a wait on it; one that stops
 * getting connections keeps that plan.  So a worker whose program stopped
 * rotating its own entry found nobody to rotate behind, and took nearly
 * every connection (ex_epoll_excl -R 4 -U 20, 4 workers: 1140 of 1200).
 * When no other thread is counted, they are presumed to wait; their slots
 * are read again every PASSERS_CHECK accepts of this process.
 */
#define PASSERS_CHECK 64

static int passers(struct th_listener *l, struct th_seg *seg)
{
    uint64_t now = th_listener_accepts(l) + 1;
    int n = 0;

    if (now - atomic_load_explicit(&l->passers_at, memory_order_relaxed) < PASSERS_CHECK)
        return atomic_load_explicit(&l->passers, memory_order_relaxed);
    for (int i = 0, used = th_seg_procs_used(seg); i < used; i++) {
        int32_t pid = atomic_load_explicit(&seg->procs[i].pid, memory_order_relaxed);
        n += pid != 0 && pid != th_pid &&
             atomic_load_explicit(&seg->procs[i].strategy, memory_order_relaxed) == TH_STRAT_PASS;
    }
    atomic_store_explicit(&l->passers, n, memory_order_relaxed);
    atomic_store_explicit(&l->passers_at, now, memory_order_relaxed);
    return n;
}

int th_waiting_others(struct th_listener *l)
{
    struct th_seg *seg = th_listener_seg(l);
    int n;

    if (seg == NULL)
        return 0;
    n = atomic_load_explicit(&seg->waiting, memory_order_relaxed) -
        ((th_self.counted & th_listener_bit(l->index)) ? 1 : 0);
    return n > 0 ? n : passers(l, seg);
}

/*
 * Does this thread wait on l alone?  No other thread is counted in a wait
 * on it, no other process passes its waits on it through (passers, above:
 * they are not counted), and none has accepted from it since this
 * thread's last accept (which there must have been).  So it is where a
 * program that lets one worker at a time wait on its listener leaves it
 * (nginx with accept_mutex on adds it to the holder's instance only):
 * nobody else to wake, nobody to spread to.  Two loads of lines that only
 * this thread writes while it holds true, and the passers' count, cached.
 */
bool th_listener_alone(struct th_listener *l)
{
    uint64_t bit = th_listener_bit(l->index);
    struct th_seg *seg = th_listener_seg(l);
    int others;

    if (seg == NULL || !(th_self.accepted & bit))
        return false;
    others = atomic_load_explicit(&seg->waiting, memory_order_relaxed) -
             ((th_self.counted & bit) ? 1 : 0);
    return others <= 0 &&
           atomic_load_explicit(&seg->accept_seq, memory_order_relaxed) == my_accept_seq[l->index] &&
           passers(l, seg) == 0;
}

void th_listeners_detach_all(void)
{
    int n = atomic_load(&count);

    for (int i = 0; i < n; i++) {
        struct th_listener *l = &table[i];
        if (l->inode == 0 || atomic_load(&l->attach_state) != 1)
            continue;
        th_seg_detach(l->seg, atomic_load(&l->stats_pid) == th_pid ? l->stats : NULL);
    }
}

void th_listeners_prepare_fork(void)
{
    pthread_mutex_lock(&table_lock);
}

void th_listeners_parent_fork(void)
{
    pthread_mutex_unlock(&table_lock);
}

void th_listeners_child_fork(void)
{
    pthread_mutex_unlock(&table_lock);   /* taken by prepare, in this very thread */
}

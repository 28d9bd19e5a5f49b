/*
 * One object per listening socket (by inode) in this process: whether the
 * port filter lets us manage it, its shared segment once attached, and this
 * process's statistics slot in it.  The table only grows; listeners are few.
 */
#include "thunder.h"

#include <pthread.h>
#include <unistd.h>

static struct th_listener table[TH_MAX_LISTENERS];
static _Atomic int count;
static pthread_mutex_t table_lock = PTHREAD_MUTEX_INITIALIZER;

struct th_listener *th_listener_at(int index)
{
    return index < atomic_load(&count) ? &table[index] : NULL;
}

static struct th_listener *find(uint64_t inode)
{
    int n = atomic_load(&count);

    for (int i = 0; i < n; i++)
        if (table[i].inode == inode)
            return &table[i];
    return NULL;
}

struct th_listener *th_listener_for_inode(uint64_t inode, uint16_t port)
{
    struct th_listener *l = find(inode);

    if (l)
        return l;
    th_self.in_shim++;
    pthread_mutex_lock(&table_lock);
    l = find(inode);
    if (l == NULL && atomic_load(&count) < TH_MAX_LISTENERS) {
        int i = atomic_load(&count);
        l = &table[i];
        l->inode = inode;
        l->port = port;
        l->managed = th_port_managed(port);
        l->index = i;
        atomic_store(&count, i + 1);     /* publish after filling */
        th_debug("listener inode %llu port %u: %s", (unsigned long long)inode,
                 port, l->managed ? "managed" : "not in THUNDER_PORTS, left alone");
    } else if (l == NULL) {
        th_warn("more than %d listeners; the others are left alone", TH_MAX_LISTENERS);
    }
    pthread_mutex_unlock(&table_lock);
    th_self.in_shim--;
    return l;
}

/* Claim this process's statistics slot (again after a fork). */
static struct th_proc_stats *my_stats(struct th_listener *l)
{
    if (atomic_load_explicit(&l->stats_pid, memory_order_acquire) != th_pid) {
        l->stats = th_seg_claim_slot(l->seg, th_pid);
        atomic_store_explicit(&l->stats_pid, th_pid, memory_order_release);
    }
    return l->stats;
}

struct th_seg *th_listener_seg(struct th_listener *l)
{
    int state = atomic_load_explicit(&l->attach_state, memory_order_acquire);

    if (state == 0) {
        th_self.in_shim++;
        pthread_mutex_lock(&table_lock);
        if (atomic_load(&l->attach_state) == 0) {
            l->seg = th_seg_attach(l->inode, l->port);
            atomic_store_explicit(&l->attach_state, l->seg ? 1 : -1, memory_order_release);
        }
        pthread_mutex_unlock(&table_lock);
        th_self.in_shim--;
        state = atomic_load(&l->attach_state);
    }
    if (state < 0)
        return NULL;
    my_stats(l);
    return l->seg;
}

void th_count(struct th_listener *l, size_t field_offset, uint64_t n)
{
    struct th_proc_stats *stats;

    if (th_listener_seg(l) == NULL || (stats = my_stats(l)) == NULL)
        return;
    atomic_fetch_add_explicit((_Atomic uint64_t *)((char *)stats + field_offset), n,
                              memory_order_relaxed);
}

void th_listener_set_strategy(struct th_listener *l, enum th_strategy s, const char *why)
{
    struct th_proc_stats *stats;
    uint32_t bit = 1u << s;

    if (th_listener_seg(l) && (stats = my_stats(l)) != NULL)
        atomic_store_explicit(&stats->strategy, s, memory_order_relaxed);
    if (!(atomic_fetch_or(&l->logged, bit) & bit))
        th_info("port %u (inode %llu): %s", l->port, (unsigned long long)l->inode, why);
}

void th_listeners_detach_all(void)
{
    int n = atomic_load(&count);

    for (int i = 0; i < n; i++) {
        struct th_listener *l = &table[i];
        if (atomic_load(&l->attach_state) != 1)
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
    pthread_mutex_init(&table_lock, NULL);
}

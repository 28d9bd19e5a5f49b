/*
 * The derived figures every output format shows: totals, Jain's index over
 * per-process accepts (tools/common/fairness.h, shared with loadgen) and
 * shares.
 */
#include "stat.h"

#include "../common/fairness.h"

/* Jain's index over per-process accepts: 1 even, 1/n one takes all, 0 none. */
struct figures stat_figures(const struct snapshot *s)
{
    struct figures f = { 0 };
    double accepts[TH_MAX_PROCS];

    for (int i = 0; i < s->nprocs; i++) {
        accepts[i] = (double)s->procs[i].accepts;
        f.accepts += s->procs[i].accepts;
        f.wakeups += s->procs[i].wakeups;
    }
    f.jain = jain_index(accepts, (size_t)s->nprocs);
    f.wakeups_per_accept = f.accepts ? (double)f.wakeups / (double)f.accepts : 0.0;
    return f;
}

double stat_share(const struct proc_row *r, const struct figures *f)
{
    return f->accepts ? (double)r->accepts / (double)f->accepts : 0.0;
}

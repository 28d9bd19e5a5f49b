/*
 * Keeping a wait call interruptible while the shim does its own work.
 *
 * A real poll() returns EINTR for any signal that arrives while it sleeps.
 * Around a managed wait the shim also queues for the lock, checks the
 * holder and hands the lock on; a signal handled during those few lines
 * would be consumed, and the call would then sleep as if nothing happened
 * (a master that SIGTERMs all its workers at once hits exactly that).  So
 * a managed wait blocks every signal on entry and does every sleep with a
 * p-variant (ppoll, epoll_pwait) that applies the caller's mask atomically:
 * a signal that arrived during the bookkeeping is pending, and the next
 * sleep returns EINTR at once, after its handler ran.
 */
#include "thunder.h"

#include <pthread.h>

void th_sig_enter(struct th_sigscope *scope, const sigset_t *callers_mask)
{
    sigset_t all;

    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &scope->orig);
    scope->wait_mask = callers_mask ? callers_mask : &scope->orig;
}

void th_sig_leave(struct th_sigscope *scope)
{
    int saved_errno = errno;

    pthread_sigmask(SIG_SETMASK, &scope->orig, NULL);
    errno = saved_errno;
}

/*
 * Load, fork and exit.
 *
 * The constructor reads the configuration once and resolves libc; until it
 * has run (a hook called from another library's constructor) th_cfg.mode
 * is off and every hook passes through.  Fork handlers take the process
 * locks in a fixed order so the child never inherits one mid-update, and
 * the child forgets the locks, epoll mirror and statistics slot of its
 * parent.  At exit the locks are released and the last process to leave a
 * segment removes it.
 */
#include "thunder.h"

#include <pthread.h>

static void prepare_fork(void)
{
    th_listeners_prepare_fork();
    th_epreg_prepare_fork();
}

static void parent_after_fork(void)
{
    th_epreg_parent_fork();
    th_listeners_parent_fork();
}

static void child_after_fork(void)
{
    th_self_refresh();
    th_epreg_child_fork();
    th_listeners_child_fork();
    th_held_forget_after_fork();
    th_mirror_after_fork();
    th_doorbell_after_fork();
}

static void load(void)
{
    th_self_refresh();
    th_resolve();
    th_config_load();
    if (th_cfg.mode != TH_MODE_OFF)
        th_sig_init();
    pthread_atfork(prepare_fork, parent_after_fork, child_after_fork);
    th_debug("loaded: mode %s, balance %s", th_mode_name(th_cfg.mode),
             th_cfg.lock.balance == TH_BALANCE_FIFO ? "fifo" : "lifo");
}

static pthread_once_t loaded = PTHREAD_ONCE_INIT;

void th_init(void)
{
    pthread_once(&loaded, load);
}

__attribute__((constructor)) static void thunder_constructor(void)
{
    th_init();
}

__attribute__((destructor)) static void thunder_destructor(void)
{
    if (th_cfg.mode == TH_MODE_OFF)
        return;
    th_held_release_all();
    th_listeners_detach_all();
}

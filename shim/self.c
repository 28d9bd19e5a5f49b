/*
 * Who is running: this thread's shim state and this process's pid.
 *
 * The lowest layer of the library: everything may call it and it calls
 * nothing of the library.  th_pid is refreshed by the fork handler in
 * init.c, so a child never mistakes itself for its parent (getpid() is a
 * system call; the pid is needed on every lock operation).
 */
#include "thunder.h"

#include <unistd.h>

__thread struct th_thread th_self __attribute__((tls_model("initial-exec")));
pid_t th_pid;

/* gettid is a system call: asked once per thread (again in a forked child). */
pid_t th_gettid(void)
{
    static __thread pid_t tid, tid_pid;

    if (tid == 0 || tid_pid != th_pid) {
        tid = gettid();
        tid_pid = th_pid;
    }
    return tid;
}

void th_self_refresh(void)
{
    th_pid = getpid();
    th_self.counted = 0;     /* a parent's count is not the child's */
}

/* A new wait call begins: what this thread knew about the last one is over. */
void th_self_new_wait(void)
{
    th_self.woke = th_self.rotated = th_self.took = th_self.refusable = th_self.passed = 0;
    th_self.busy = 0;
    th_self.slept = true;
}

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

pid_t th_gettid(void)
{
    return gettid();
}

void th_self_refresh(void)
{
    th_pid = getpid();
}

/*
 * ex_accept - the classic prefork loop: a BLOCKING listener, and every
 * worker simply sits in accept().
 *
 * Blocking accept() waiters are exclusive and queued in order, so the
 * kernel wakes exactly one per connection and rotates through them:
 * no herd and fair.  This is the reference the other examples are
 * measured against; the shim should leave it alone.
 *
 * SIGTERM: the handler is installed without SA_RESTART, so accept()
 * returns EINTR and the loop sees the flag.
 */
#include "common.h"

static void wait_in_accept(int listener, void *unused)
{
    (void)unused;
    while (!stop_requested) {
        int client = accept(listener, NULL, NULL);
        if (client < 0) {
            survive_accept_error(errno);
            continue;
        }
        answer_with_pid_and_close(client);
    }
}

int main(int argc, char **argv)
{
    struct server_options opt = parse_options(argc, argv, 1);
    int listener = open_listener(&opt, LISTENER_BLOCKING);
    return run_master(&opt, listener, wait_in_accept, NULL);
}

/*
 * The local address of each listener, from /proc/net/tcp and tcp6: a
 * segment knows its socket's inode and port, the kernel knows the rest.
 * "?" (with the port when known) for sockets not found there: not TCP, in
 * another network namespace, or already closed.
 */
#define _GNU_SOURCE
#include "stat.h"

#include <inttypes.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>

/*
 * The kernel prints each 32-bit word of the address as a native integer,
 * so storing the parsed words back in memory order rebuilds the address.
 */
static bool hex_to_addr(const char *hex, bool v6, char *out, size_t outlen)
{
    unsigned char raw[16];
    size_t words = v6 ? 4 : 1;

    if (strlen(hex) != words * 8)
        return false;
    for (size_t i = 0; i < words; i++) {
        char word[9];
        uint32_t w;

        memcpy(word, hex + i * 8, 8);
        word[8] = '\0';
        w = (uint32_t)strtoul(word, NULL, 16);
        memcpy(raw + i * 4, &w, 4);
    }
    return inet_ntop(v6 ? AF_INET6 : AF_INET, raw, out, (socklen_t)outlen) != NULL;
}

/*
 * Fill in the addresses of the collected listeners from one /proc/net
 * file.  The kernel lists listening sockets before all others, and a
 * segment belongs to a listening socket, so reading stops at the first
 * socket that is not listening: a busy machine has 100000 sockets in
 * TIME_WAIT there, which would cost a third of a second per snapshot.
 */
static int read_proc_net(const char *file, bool v6, struct collection *c, int missing)
{
    FILE *f = fopen(file, "re");
    char line[512];

    if (f == NULL)
        return missing;
    if (fgets(line, sizeof(line), f) == NULL)        /* the header */
        missing = 0;
    while (missing > 0 && fgets(line, sizeof(line), f)) {
        char hex[40], ip[INET6_ADDRSTRLEN];
        unsigned port, state;
        uint64_t inode;

        if (sscanf(line, " %*s %39[0-9A-Fa-f]:%x %*s %x %*s %*s %*s %*s %*s %" SCNu64,
                   hex, &port, &state, &inode) != 4)
            continue;
        if (state != 0x0A)                            /* TCP_LISTEN */
            break;
        for (int i = 0; i < c->count; i++) {
            struct snapshot *s = &c->items[i];
            if (s->inode != inode || s->address[0] != '?' || !hex_to_addr(hex, v6, ip, sizeof(ip)))
                continue;
            snprintf(s->address, sizeof(s->address), v6 ? "[%s]:%u" : "%s:%u", ip, port);
            missing--;
        }
    }
    fclose(f);
    return missing;
}

void stat_resolve_addresses(struct collection *c)
{
    int missing = 0;

    for (int i = 0; i < c->count; i++) {
        struct snapshot *s = &c->items[i];
        snprintf(s->address, sizeof(s->address), s->port ? "?:%u" : "?", s->port);
        missing += s->port != 0;
    }
    missing = read_proc_net("/proc/net/tcp", false, c, missing);
    read_proc_net("/proc/net/tcp6", true, c, missing);
}

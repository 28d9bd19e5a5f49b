/*
 * thunder-stat: what its parts share.  Every segment is read through the
 * segment core (shim/segcore.h); the parts are
 *
 *   read.c      collecting this user's segments into snapshots (read-only)
 *   procnet.c   the listeners' local addresses, from /proc/net/tcp{,6}
 *   format.c    the table, --kv and --json, and the figures they show
 *   prom.c      --prometheus and --textfile
 *   gc.c        --gc: remove what dead servers left, with the core's check
 *   main.c      options, --watch, --path
 */
#pragma once

#include <arpa/inet.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/types.h>

#include "segcore.h"

#ifndef TH_VERSION
#error "TH_VERSION comes from the top-level VERSION file (the Makefile passes it)"
#endif

enum format { FMT_TABLE, FMT_KV, FMT_JSON, FMT_PROMETHEUS };

struct options {
    enum format format;
    double watch_s;              /* 0: print once */
    const char *textfile_dir;    /* --textfile: write DIR/libthunder.prom */
    long any;                    /* positional: a port or a pid; -1 = none */
    long port;                   /* --port; -1 = none */
    long pid;                    /* --pid; -1 = none */
};

/* One process's row, copied out of its statistics slot. */
struct proc_row {
    int32_t pid;
    bool alive;
    uint32_t strategy;
    uint64_t waits, wakeups, spurious, accepts, eagain;
    uint64_t lock_waits, lock_wait_ns, rotations, refused, yields;
};

/* One listener, copied out of its segment. */
struct snapshot {
    char path[TH_SEG_PATH_MAX];
    char address[INET6_ADDRSTRLEN + 8];
    uint64_t inode;
    uint32_t port;
    int32_t holder_pid;
    uint32_t nqueued;
    uint64_t recoveries;
    int nprocs;
    struct proc_row procs[TH_MAX_PROCS];
};

struct collection {
    struct snapshot *items;
    int count, capacity;
};

/* Totals and derived figures of one snapshot. */
struct figures {
    uint64_t accepts, wakeups;
    double jain, wakeups_per_accept;
};

extern uid_t stat_uid;          /* whose segments: the effective uid */

/* read.c */
void stat_install_sigbus(void);
/* fn(arg) with a mapped segment: false when the file was truncated under it. */
bool stat_guarded(void (*fn)(void *arg), void *arg);
/* Check the header and copy the segment into snap: NULL, or why not. */
const char *stat_read_mapped(const struct th_seg *seg, uint64_t inode, struct snapshot *snap);
int stat_collect(const struct options *o, struct collection *c);

/* procnet.c */
void stat_resolve_addresses(struct collection *c);

/* format.c */
struct figures stat_figures(const struct snapshot *s);
double stat_share(const struct proc_row *r, const struct figures *f);
void stat_print(const struct collection *c, const struct options *o);   /* on stdout */

/* prom.c */
void stat_print_prometheus(FILE *out, const struct collection *c);
int stat_write_textfile(const char *dir, const struct collection *c);

/* gc.c */
int stat_gc(void);

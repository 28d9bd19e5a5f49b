/*
 * Segment helpers for the unit tests of the library's segment layer and
 * lock: the core's helpers (corehelp.h) and an attach as the shim does it.
 */
#pragma once

#include "thunder.h"
#include "corehelp.h"

/*
 * Attach and claim this process's statistics slot at once, as the shim
 * does: a segment without a live slot or holder counts as stale and any
 * process creating another segment may sweep it away (segment.c).
 */
static inline struct th_seg *attach_claimed(uint64_t inode)
{
    struct th_seg *seg = th_seg_attach(inode, TEST_PORT);

    REQUIRE(seg != NULL);
    REQUIRE(th_seg_claim_slot(seg, getpid()) != NULL);
    return seg;
}

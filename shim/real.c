/*
 * The real libc functions behind every hook.
 *
 * Resolved once, thread-safely, with dlsym(RTLD_NEXT): from the constructor
 * and again (a no-op then) at the top of each hook, so a hook that runs
 * before our constructor (another library's constructor, say) still works.
 * The shim never calls the interposed names itself, only these pointers,
 * so nothing it does can re-enter a hook.
 */
#include "thunder.h"

#include <dlfcn.h>
#include <link.h>
#include <pthread.h>

#define TH_SYM(ret, name, params, required) ret(*real_##name) params;
#include "syms.def"
#undef TH_SYM

/*
 * Where this very object is mapped, so that a symbol found in it (the
 * library loaded twice) is never taken for the real one.  Found once, by
 * walking the loaded objects' segments: dladdr() would search the symbol
 * table on each call, 46,000 instructions a time, which made every
 * process started under the library (a shell's /bin/true too) 24 times
 * as long to start in instructions (3.1 million against 0.13 million).
 */
struct span {
    uintptr_t lo, hi;
};

static int find_ours(struct dl_phdr_info *info, size_t size, void *data)
{
    struct span *ours = data;
    uintptr_t me = (uintptr_t)find_ours, lo = UINTPTR_MAX, hi = 0;

    (void)size;
    for (int i = 0; i < info->dlpi_phnum; i++) {
        const ElfW(Phdr) *ph = &info->dlpi_phdr[i];
        uintptr_t start = info->dlpi_addr + ph->p_vaddr;

        if (ph->p_type != PT_LOAD)
            continue;
        lo = start < lo ? start : lo;
        hi = start + ph->p_memsz > hi ? start + ph->p_memsz : hi;
    }
    if (me < lo || me >= hi)
        return 0;
    ours->lo = lo;
    ours->hi = hi;
    return 1;
}

/* Does p point into this very object?  (Called from resolve_all only,
   under pthread_once.) */
static bool is_ours(void *p)
{
    static struct span ours;

    if (ours.hi == 0)
        dl_iterate_phdr(find_ours, &ours);
    return p && (uintptr_t)p >= ours.lo && (uintptr_t)p < ours.hi;
}

static void *lookup(const char *name, int required)
{
    void *p = dlsym(RTLD_NEXT, name);

    if (is_ours(p))             /* never call ourselves */
        p = NULL;
    if (p == NULL) {
        /* libc itself came before us in LD_PRELOAD: nothing is "next" */
        void *libc = dlopen("libc.so.6", RTLD_LAZY | RTLD_NOLOAD);
        if (libc) {
            p = dlsym(libc, name);
            if (is_ours(p))
                p = NULL;
            dlclose(libc);
        }
    }
    if (p == NULL && required)
        th_warn("cannot find the real %s(); calls to it fail with ENOSYS", name);
    return p;
}

static void resolve_all(void)
{
#define TH_SYM(ret, name, params, required) \
    real_##name = (ret(*) params)lookup(#name, required);
#include "syms.def"
#undef TH_SYM
}

static pthread_once_t resolved = PTHREAD_ONCE_INIT;
_Atomic bool th_resolved;

void th_resolve_once(void)
{
    pthread_once(&resolved, resolve_all);
    atomic_store_explicit(&th_resolved, true, memory_order_release);
}

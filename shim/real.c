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
#include <pthread.h>

#define TH_SYM(ret, name, params, required) ret(*real_##name) params;
#include "syms.def"
#undef TH_SYM

/* Does p point into this very object (the library loaded twice)? */
static bool is_ours(void *p)
{
    Dl_info found, ours;

    return p && dladdr(p, &found) && dladdr((void *)is_ours, &ours) &&
           found.dli_fbase == ours.dli_fbase;
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

/*
 * nextwrap.c: a second preloaded library, loaded after vramshim, that wraps
 * rand() and finds the real one with dlsym(RTLD_NEXT) and dlvsym(RTLD_NEXT)
 * the way interposers do. If vramshim resolved "next" from its own place in
 * the chain, the wrapper would find itself and recurse forever.
 */
#define _GNU_SOURCE 1
#include <dlfcn.h>

__attribute__((visibility("default"))) int nextwrap_calls;

__attribute__((visibility("default"))) int rand(void)
{
    static int (*real_rand)(void);
    if (real_rand == 0)
        real_rand = (int (*)(void))dlsym(RTLD_NEXT, "rand");
    nextwrap_calls++;
    return real_rand() % 1000 + 1000000; /* recognisably wrapped */
}

__attribute__((visibility("default"))) void *nextwrap_versioned_rand(void)
{
    return dlvsym(RTLD_NEXT, "rand", "GLIBC_2.2.5");
}

/*
 * prog_dlvsym: a versioned look-up of dlsym itself still reaches vramshim
 * (issue 12, hole 7). An interposer loaded before vramshim that forwards
 * with dlvsym(RTLD_NEXT, "dlsym", "GLIBC_2.34") would otherwise get libc's
 * dlsym, and every driver pointer it then looked up would bypass the
 * hooks. The executable stands for such an interposer: it comes before
 * the preloaded library in the search order.
 */
#define _GNU_SOURCE 1
#include "check.h"

#include <dlfcn.h>
#include <string.h>

typedef void *(*dlsym_fn)(void *, const char *);

static bool in_vramshim(void *p)
{
    Dl_info info;
    return p && dladdr(p, &info) && strstr(info.dli_fname, "libvramshim");
}

int main(void)
{
    void *lib = check_libcuda();
    static const char *const versions[] = {"GLIBC_2.34", "GLIBC_2.2.5"};
    for (int i = 0; i < 2; i++) {
        void *next = dlvsym(RTLD_NEXT, "dlsym", versions[i]);
        CHECK(in_vramshim(next), "dlvsym(RTLD_NEXT, dlsym, %s) bypassed vramshim", versions[i]);
        CHECK(in_vramshim(dlvsym(RTLD_DEFAULT, "dlsym", versions[i])),
              "dlvsym(RTLD_DEFAULT, dlsym, %s) bypassed vramshim", versions[i]);
        CHECK(in_vramshim(dlvsym(RTLD_NEXT, "dlvsym", versions[i])),
              "dlvsym(RTLD_NEXT, dlvsym, %s) bypassed vramshim", versions[i]);
        /* what the interposer then looks up is swapped as usual */
        void *alloc = ((dlsym_fn)next)(lib, "cuMemAlloc_v2");
        CHECK(in_vramshim(alloc), "cuMemAlloc_v2 through %s's dlsym is not the hook",
              versions[i]);
        /* and RTLD_NEXT through it is still the caller's next: libc's rand */
        void *r = ((dlsym_fn)next)(RTLD_NEXT, "rand");
        CHECK(r == dlsym(RTLD_NEXT, "rand") && !in_vramshim(r), "RTLD_NEXT through %s",
              versions[i]);
    }
    /* the plain export is the default version */
    CHECK(dlsym(RTLD_DEFAULT, "dlsym") == dlvsym(RTLD_DEFAULT, "dlsym", "GLIBC_2.34"),
          "dlsym's default version is not GLIBC_2.34");
    printf("prog_dlvsym: ok\n");
    return 0;
}

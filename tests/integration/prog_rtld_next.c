/*
 * prog_rtld_next: dlsym(RTLD_NEXT) and dlvsym(RTLD_NEXT) keep their meaning
 * under vramshim: "next after the caller", not "next after vramshim".
 */
#define _GNU_SOURCE 1
#include "check.h"

#include <dlfcn.h>
#include <string.h>

int main(int argc, char **argv)
{
    (void)argc;
    const char *build = getenv("VRAMSHIM_BUILD");
    CHECK(build != NULL, "VRAMSHIM_BUILD");
    char preload[1024];
    snprintf(preload, sizeof preload, "%s/.libs/libvramshim.so %s/tests/integration/.libs/libnextwrap.so",
             build, build);
    check_reexec_with(argv, "LD_PRELOAD", preload);

    int r = rand();
    CHECK(r >= 1000000 && r < 1001000, "rand() was not wrapped: %d", r);
    int *calls = dlsym(RTLD_DEFAULT, "nextwrap_calls");
    CHECK(calls && *calls == 1, "the wrapper ran once");

    /* from the program, "next" is the first preloaded definition */
    void *next = dlsym(RTLD_NEXT, "rand");
    CHECK(next == dlsym(RTLD_DEFAULT, "rand"), "RTLD_NEXT from the program");
    Dl_info info;
    CHECK(dladdr(next, &info) && strstr(info.dli_fname, "libnextwrap"),
          "next rand is %s", info.dli_fname);

    /* the wrapper's versioned look-up reaches the C library */
    void *(*versioned)(void) = (void *(*)(void))dlsym(RTLD_DEFAULT, "nextwrap_versioned_rand");
    CHECK(versioned != NULL, "nextwrap_versioned_rand");
    void *libc_rand = versioned();
    CHECK(libc_rand && dladdr(libc_rand, &info) && strstr(info.dli_fname, "libc.so"),
          "dlvsym(RTLD_NEXT) gave %s", libc_rand ? info.dli_fname : "NULL");
    CHECK(dlsym(RTLD_NEXT, "no_such_symbol_anywhere") == NULL, "missing stays missing");
    printf("prog_rtld_next: ok\n");
    return 0;
}

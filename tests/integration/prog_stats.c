/*
 * prog_stats: allocate `argv[1]` bytes (default 1 MiB) on device 0 and print
 * vramshim's stats JSON; the shell tests read it.
 */
#include "check.h"

#include <dlfcn.h>

int main(int argc, char **argv)
{
    void *lib = check_libcuda();
    check_context(lib, 0);
    CUresult (*alloc)(CUdeviceptr *, size_t) = check_sym(lib, "cuMemAlloc_v2");
    CUdeviceptr d;
    CHECK_CU(alloc(&d, argc > 1 ? strtoull(argv[1], NULL, 0) : 1 << 20));
    int (*stats)(char *, size_t) = (int (*)(char *, size_t))dlsym(RTLD_DEFAULT,
                                                                   "vramshim_stats_json");
    if (stats == NULL) {
        printf("{}\n");
        return 0;
    }
    static char buf[1 << 16];
    stats(buf, sizeof buf);
    printf("%s\n", buf);
    return 0;
}

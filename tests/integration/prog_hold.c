/*
 * prog_hold: a live program for the exporter's test. Allocates argv[2] MiB
 * on device 0 as owner argv[1], prints "ready PID", and holds the memory
 * until its standard input closes.
 */
#include "check.h"

#include <unistd.h>

int main(int argc, char **argv)
{
    CHECK(argc == 3, "usage: prog_hold OWNER MIB");
    void *lib = check_libcuda();
    check_context(lib, 0);
    CUresult (*alloc)(CUdeviceptr *, size_t) = check_sym(lib, "cuMemAlloc_v2");
    CUdeviceptr d;
    CHECK(check_owner_push(argv[1]) == 0, "owner push");
    CHECK_CU(alloc(&d, strtoull(argv[2], NULL, 10) << 20));
    check_owner_pop();
    printf("ready %d\n", (int)getpid());
    fflush(stdout);
    char buf[64];
    while (read(0, buf, sizeof buf) > 0)
        ;
    return 0;
}

/*
 * prog_pool_import: a memory pool shared between processes (issue 12,
 * "imported memory is shown apart from the process's own and is not
 * charged to it (the exporter pays)").
 *
 * Process A makes a pool that exports as a file descriptor, allocates
 * 16 MiB from it, writes a pattern there, and starts process B with the
 * pool's descriptor and the block's export data. B, under its own 64 MiB
 * limit, imports the pool (cuMemPoolImportFromShareableHandle) and the
 * block (cuMemPoolImportPointer) and must see:
 *   - the pattern A wrote (the memory really is shared);
 *   - `imported` = 16 MiB, `allocated` and the pools' figures unchanged,
 *     and no allocation from the imported pool charged (the driver refuses
 *     it: imported pools do not support new allocations);
 *   - its own 64 MiB slice whole: cuMemAlloc fills it exactly, the next
 *     allocation is refused, and what vramshim charges equals what the test
 *     driver says B holds;
 *   - `imported` back to 0 after cuMemFreeAsync.
 * A, the exporter, is charged the pool's reserve all along.
 */
#include "check.h"

#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#define M (1ULL << 20)
#define LIMIT (64 * M)
#define SHARED (16 * M)

static struct {
    CUresult (*alloc)(CUdeviceptr *, size_t);
    CUresult (*mem_free)(CUdeviceptr);
    CUresult (*from_pool)(CUdeviceptr *, size_t, CUmemoryPool, CUstream);
    CUresult (*free_async)(CUdeviceptr, CUstream);
    CUresult (*sync)(CUstream);
    CUresult (*info)(size_t *, size_t *);
    CUresult (*htod)(CUdeviceptr, const void *, size_t);
    CUresult (*dtoh)(void *, CUdeviceptr, size_t);
    unsigned long long (*fk_held)(int);
} cu;

static void hex_encode(const unsigned char *in, size_t n, char *out)
{
    for (size_t i = 0; i < n; i++)
        sprintf(out + 2 * i, "%02x", in[i]);
}

static void hex_decode(const char *in, unsigned char *out, size_t n)
{
    CHECK(strlen(in) == 2 * n, "export data of %zu hex digits", strlen(in));
    for (size_t i = 0; i < n; i++) {
        unsigned v;
        CHECK(sscanf(in + 2 * i, "%2x", &v) == 1, "bad hex in the export data");
        out[i] = (unsigned char)v;
    }
}

/* B: the importer. */
static int importer(void *lib, int fd, const char *hex)
{
    CUresult (*import_pool)(CUmemoryPool *, void *, CUmemAllocationHandleType,
                            unsigned long long) =
        check_sym(lib, "cuMemPoolImportFromShareableHandle");
    CUresult (*import_ptr)(CUdeviceptr *, CUmemoryPool, CUmemPoolPtrExportData *) =
        check_sym(lib, "cuMemPoolImportPointer");
    CUmemPoolPtrExportData data;
    hex_decode(hex, data.reserved, sizeof data.reserved);
    unsigned long long held0 = cu.fk_held(0);

    CUmemoryPool pool;
    CHECK_CU(import_pool(&pool, (void *)(intptr_t)fd, CU_MEM_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR,
                         0));
    CUdeviceptr p;
    CHECK_CU(import_ptr(&p, pool, &data));
    unsigned char *want = malloc(SHARED), *got = malloc(SHARED);
    CHECK(want && got, "malloc");
    check_fill(want, SHARED, 7);
    CHECK_CU(cu.dtoh(got, p, SHARED));
    CHECK(memcmp(want, got, SHARED) == 0, "the imported block does not hold what A wrote");

    json_t *st = stats_get();
    CHECK_EQ_U64(stats_u64(st, "devices.0.imported"), SHARED);
    CHECK_EQ_U64(stats_u64(st, "devices.0.allocated"), 0);
    CHECK_EQ_U64(stats_u64(st, "devices.0.pools"), 0);
    json_decref(st);
    /* nothing can be allocated from an imported pool, and nothing is charged */
    CUdeviceptr q;
    CUresult rc = cu.from_pool(&q, 2 * M, pool, NULL);
    CHECK(rc != CUDA_SUCCESS, "an allocation from an imported pool succeeded");
    CHECK_CU(cu.sync(NULL));
    CHECK_EQ_U64(stats_now("devices.0.allocated"), 0);

    /* B's own slice is whole */
    size_t f, t;
    CHECK_CU(cu.info(&f, &t));
    CHECK_EQ_U64(f, LIMIT);
    CUdeviceptr mine;
    CHECK_CU(cu.alloc(&mine, LIMIT));
    CHECK_CU(cu.info(&f, &t));
    CHECK_EQ_U64(f, 0);
    rc = cu.alloc(&q, 2 * M);
    CHECK(rc == CUDA_ERROR_OUT_OF_MEMORY, "2 MiB past a full slice: %d", (int)rc);
    st = stats_get();
    CHECK_EQ_U64(stats_u64(st, "devices.0.allocated"), LIMIT);
    CHECK_EQ_U64(stats_u64(st, "devices.0.allocated"), cu.fk_held(0) - held0);
    CHECK_EQ_U64(stats_u64(st, "devices.0.imported"), SHARED);
    json_decref(st);
    check_invariants("B: imported block and a full slice");

    CHECK_CU(cu.mem_free(mine));
    CHECK_CU(cu.free_async(p, NULL));
    CHECK_CU(cu.sync(NULL));
    st = stats_get();
    CHECK_EQ_U64(stats_u64(st, "devices.0.imported"), 0);
    CHECK_EQ_U64(stats_u64(st, "devices.0.allocated"), 0);
    json_decref(st);
    CHECK_EQ_U64(cu.fk_held(0), held0);
    check_invariants("B: after the frees");
    free(want);
    free(got);
    printf("importer: ok\n");
    return 0;
}

/* A: the exporter, which pays for the pool. */
static int exporter(void *lib, char *self)
{
    CUresult (*pool_create)(CUmemoryPool *, const CUmemPoolProps *) =
        check_sym(lib, "cuMemPoolCreate");
    CUresult (*pool_destroy)(CUmemoryPool) = check_sym(lib, "cuMemPoolDestroy");
    CUresult (*export_pool)(void *, CUmemoryPool, CUmemAllocationHandleType,
                            unsigned long long) =
        check_sym(lib, "cuMemPoolExportToShareableHandle");
    CUresult (*export_ptr)(CUmemPoolPtrExportData *, CUdeviceptr) =
        check_sym(lib, "cuMemPoolExportPointer");
    CUmemPoolProps props = {.allocType = CU_MEM_ALLOCATION_TYPE_PINNED,
                            .handleTypes = CU_MEM_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR,
                            .location = {.type = CU_MEM_LOCATION_TYPE_DEVICE, .id = 0}};
    CUmemoryPool pool;
    CHECK_CU(pool_create(&pool, &props));
    CUdeviceptr p;
    CHECK_CU(cu.from_pool(&p, SHARED, pool, NULL));
    CHECK_CU(cu.sync(NULL));
    unsigned char *pattern = malloc(SHARED);
    CHECK(pattern, "malloc");
    check_fill(pattern, SHARED, 7);
    CHECK_CU(cu.htod(p, pattern, SHARED));
    free(pattern);
    CHECK_EQ_U64(stats_now("devices.0.pools"), SHARED);

    int fd;
    CHECK_CU(export_pool(&fd, pool, CU_MEM_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR, 0));
    CUmemPoolPtrExportData data;
    CHECK_CU(export_ptr(&data, p));
    char fd_text[16], hex[2 * sizeof data.reserved + 1];
    snprintf(fd_text, sizeof fd_text, "%d", fd);
    hex_encode(data.reserved, sizeof data.reserved, hex);
    char *args[] = {self, "import", fd_text, hex, NULL};
    FILE *to, *from;
    pid_t b = check_spawn("/proc/self/exe", args, false, &to, &from);
    char line[128] = "";
    CHECK(fgets(line, sizeof line, from) != NULL, "no word from the importer");
    int status;
    CHECK(waitpid(b, &status, 0) == b, "waitpid");
    CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0, "the importer failed (status %d)",
          status);
    CHECK(strcmp(line, "importer: ok\n") == 0, "the importer said: %s", line);
    fclose(to);
    fclose(from);
    close(fd);

    /* the exporter still pays, and the importer's frees changed nothing here */
    json_t *st = stats_get();
    CHECK_EQ_U64(stats_u64(st, "devices.0.pools"), SHARED);
    CHECK_EQ_U64(stats_u64(st, "devices.0.imported"), 0);
    json_decref(st);
    CHECK_CU(cu.free_async(p, NULL));
    CHECK_CU(pool_destroy(pool));
    CHECK_CU(cu.sync(NULL));
    CHECK_EQ_U64(stats_now("devices.0.pools"), 0);
    check_invariants("A: after the pool");
    printf("prog_pool_import: ok\n");
    return 0;
}

int main(int argc, char **argv)
{
    const char *env[] = {"VRAMSHIM_VRAM_LIMIT=64M", "VRAMSHIM_OFFLOAD=off", "FAKECUDA_MEM=1G",
                         NULL};
    check_reexec_env(argv, env);
    void *lib = check_libcuda();
    cu.alloc = check_sym(lib, "cuMemAlloc_v2");
    cu.mem_free = check_sym(lib, "cuMemFree_v2");
    cu.from_pool = check_sym(lib, "cuMemAllocFromPoolAsync");
    cu.free_async = check_sym(lib, "cuMemFreeAsync");
    cu.sync = check_sym(lib, "cuStreamSynchronize");
    cu.info = check_sym(lib, "cuMemGetInfo_v2");
    cu.htod = check_sym(lib, "cuMemcpyHtoD_v2");
    cu.dtoh = check_sym(lib, "cuMemcpyDtoH_v2");
    cu.fk_held = check_sym(lib, "fakecuda_held");
    check_context(lib, 0);
    if (argc == 4 && strcmp(argv[1], "import") == 0)
        return importer(lib, atoi(argv[2]), argv[3]);
    return exporter(lib, argv[0]);
}

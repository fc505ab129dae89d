/*
 * prog_faults: a move that fails half way loses nothing. Each driver call
 * a move makes (creating, mapping, unmapping, opening access, copying,
 * fencing) fails in turn, at each of its first calls, alone and then in
 * pairs, while a buffer goes to pinned host memory and back: afterwards
 * every byte reads back as written at the buffer's own address, vramshim's
 * books balance (vramshim_check), and the stats say where the bytes are.
 */
#include "check.h"

#include <fakecuda.h>
#include <errno.h>
#include <string.h>

#define M (1ULL << 20)
#define SIZE (8 * M) /* one chunk of four granules */

static const char *const calls[] = {"cuMemCreate", "cuMemMap", "cuMemUnmap",
                                    "cuMemSetAccess", "cuMemcpyDtoD_v2", "cuCtxSynchronize",
                                    "cuMemAddressReserve", "cuCtxPushCurrent_v2"};
#define N_CALLS (sizeof calls / sizeof calls[0])
#define SKIPS 4 /* no move makes more calls of one name than this */

static struct {
    void *lib;
    CUresult (*alloc)(CUdeviceptr *, size_t);
    CUresult (*release)(CUdeviceptr);
    CUresult (*htod)(CUdeviceptr, const void *, size_t);
    CUresult (*dtoh)(void *, CUdeviceptr, size_t);
    int (*inject)(const char *, unsigned, unsigned, CUresult);
    void (*clear)(void);
    int (*offload)(uint64_t);
    int (*prefetch)(uint64_t);
    int (*check)(void);
} cu;

static unsigned char want[SIZE], got[SIZE];
static unsigned long rounds, failed_moves;

/* One buffer through device -> pinned -> device with the failures armed
 * for one direction at a time. */
static void one_round(const char *a, unsigned skip_a, const char *b, unsigned skip_b)
{
    CUdeviceptr p;
    CHECK_CU(cu.alloc(&p, SIZE));
    check_fill(want, SIZE, (unsigned)rounds);
    CHECK_CU(cu.htod(p, want, SIZE));
    for (int dir = 0; dir < 2; dir++) {
        cu.inject(a, skip_a, 1, CUDA_ERROR_UNKNOWN);
        if (b)
            cu.inject(b, skip_b, 1, CUDA_ERROR_UNKNOWN);
        int rc = dir == 0 ? cu.offload(p) : cu.prefetch(p);
        cu.clear();
        failed_moves += rc != 0;
        CHECK(rc == 0 || rc == -ENOMEM, "%s(%s@%u%s%s@%u) returned %d",
              dir ? "prefetch" : "offload", a, skip_a, b ? ", " : "", b ? b : "", skip_b, rc);
        memset(got, 0, SIZE);
        CHECK_CU(cu.dtoh(got, p, SIZE));
        CHECK(memcmp(got, want, SIZE) == 0, "bytes lost after %s with %s@%u%s%s@%u failing",
              dir ? "prefetch" : "offload", a, skip_a, b ? " and " : "", b ? b : "", skip_b);
        CHECK(cu.check() == 0, "books do not balance after %s with %s@%u%s%s@%u failing",
              dir ? "prefetch" : "offload", a, skip_a, b ? " and " : "", b ? b : "", skip_b);
    }
    int rc = cu.prefetch(p);
    CHECK(rc == 0, "the buffer cannot come back once nothing fails (%d; after %s@%u%s%s@%u)",
          rc, a, skip_a, b ? " and " : "", b ? b : "", skip_b);
    CHECK_CU(cu.release(p));
    rounds++;
}

int main(int argc, char **argv)
{
    /* the pin budget leaves no room for host memory made ahead of need, so
     * every failure armed lands in the move itself */
    const char *env[] = {"FAKECUDA_MEM=256M", "VRAMSHIM_OFFLOAD=pinned",
                         "VRAMSHIM_PIN_LIMIT=16M", "VRAMSHIM_LOG=error", NULL};
    check_reexec_env(argv, env);
    cu.lib = check_libcuda();
    check_context(cu.lib, 0);
    cu.alloc = check_sym(cu.lib, "cuMemAlloc_v2");
    cu.release = check_sym(cu.lib, "cuMemFree_v2");
    cu.htod = check_sym(cu.lib, "cuMemcpyHtoD_v2");
    cu.dtoh = check_sym(cu.lib, "cuMemcpyDtoH_v2");
    cu.inject = check_sym(cu.lib, "fakecuda_inject");
    cu.clear = check_sym(cu.lib, "fakecuda_inject_clear");
    cu.offload = check_api("vramshim_offload");
    cu.prefetch = check_api("vramshim_prefetch");
    cu.check = check_api("vramshim_check");

    for (size_t i = 0; i < N_CALLS; i++)
        for (unsigned s = 0; s < SKIPS; s++)
            one_round(calls[i], s, NULL, 0);
    for (size_t i = 0; i < N_CALLS; i++)
        for (size_t j = i; j < N_CALLS; j++)
            for (unsigned s = 0; s < SKIPS; s++)
                one_round(calls[i], s, calls[j], (s + 1) % SKIPS);
    json_t *st = stats_get();
    CHECK_EQ_U64(stats_u64(st, "devices.0.allocated"), 0);
    CHECK_EQ_U64(stats_u64(st, "devices.0.offloaded_pinned"), 0);
    CHECK_EQ_U64(stats_u64(st, "pinned.offload"), 0);
    json_decref(st);
    CHECK(failed_moves > 0, "no failure reached a move: the test tests nothing");
    printf("faults: %lu rounds, %lu moves failed, 0 bytes lost\n", rounds, failed_moves);
    return 0;
}

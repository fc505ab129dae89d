/*
 * prog_memop: stream memory operations against buffers that move. One
 * thread queues 32-bit value writes (cuStreamWriteValue32, and pairs of
 * them through cuStreamBatchMemOp) into backed buffers while another keeps
 * moving those buffers to pinned memory and back; afterwards every word
 * holds the last value written to it. Without the gate a write queued
 * during a move lands in the old backing and is lost. A wait on a value
 * (cuStreamWaitValue32) holds its stream until another stream writes it.
 */
#include "check.h"

#include <pthread.h>
#include <string.h>

#define M (1ULL << 20)
#define BUFS 4
#define SIZE (8 * M)
#define WRITES ((uint32_t)check_ops(20000))

typedef CUresult (*word_fn)(CUstream, CUdeviceptr, cuuint32_t, unsigned int);
static struct {
    void *lib;
    word_fn write32, wait32;
    CUresult (*batch)(CUstream, unsigned int, CUstreamBatchMemOpParams *, unsigned int);
    CUresult (*alloc)(CUdeviceptr *, size_t);
    CUresult (*memset8)(CUdeviceptr, unsigned char, size_t);
    CUresult (*dtoh)(void *, CUdeviceptr, size_t);
    CUresult (*stream_create)(CUstream *, unsigned int);
    CUresult (*stream_sync)(CUstream);
    CUresult (*set_ctx)(CUcontext);
    CUresult (*get_ctx)(CUcontext *);
    int (*offload)(uint64_t);
    int (*prefetch)(uint64_t);
    CUcontext ctx;
} cu;

static CUdeviceptr buf[BUFS];
static uint32_t *shadow[BUFS];
static _Atomic int writing_done;

static void *mover(void *arg)
{
    (void)arg;
    CHECK_CU(cu.set_ctx(cu.ctx));
    uint64_t seed = 7;
    unsigned long moves = 0;
    while (!writing_done) {
        CUdeviceptr p = buf[check_rnd(&seed) % BUFS];
        int rc = (check_rnd(&seed) & 1) ? cu.offload(p) : cu.prefetch(p);
        CHECK(rc == 0 || rc == -12, "move: %d", rc);
        moves++;
    }
    return (void *)moves;
}

int main(int argc, char **argv)
{
    const char *env[] = {"FAKECUDA_MEM=512M", "VRAMSHIM_OFFLOAD=pinned",
                         "VRAMSHIM_PIN_LIMIT=256M", "VRAMSHIM_LOG=error", NULL};
    check_reexec_env(argv, env);
    cu.lib = check_libcuda();
    check_context(cu.lib, 0);
    cu.write32 = check_sym(cu.lib, "cuStreamWriteValue32_v2");
    cu.wait32 = check_sym(cu.lib, "cuStreamWaitValue32_v2");
    cu.batch = check_sym(cu.lib, "cuStreamBatchMemOp_v2");
    cu.alloc = check_sym(cu.lib, "cuMemAlloc_v2");
    cu.memset8 = check_sym(cu.lib, "cuMemsetD8_v2");
    cu.dtoh = check_sym(cu.lib, "cuMemcpyDtoH_v2");
    cu.stream_create = check_sym(cu.lib, "cuStreamCreate");
    cu.stream_sync = check_sym(cu.lib, "cuStreamSynchronize");
    cu.set_ctx = check_sym(cu.lib, "cuCtxSetCurrent");
    cu.get_ctx = check_sym(cu.lib, "cuCtxGetCurrent");
    cu.offload = check_api("vramshim_offload");
    cu.prefetch = check_api("vramshim_prefetch");
    CHECK_CU(cu.get_ctx(&cu.ctx));

    for (int i = 0; i < BUFS; i++) {
        CHECK_CU(cu.alloc(&buf[i], SIZE));
        CHECK_CU(cu.memset8(buf[i], 0, SIZE));
        shadow[i] = calloc(SIZE / 4, 4);
    }

    /* a wait holds its stream until another stream writes the value */
    CUstream waiter, writer;
    CHECK_CU(cu.stream_create(&waiter, 0));
    CHECK_CU(cu.stream_create(&writer, 0));
    CHECK_CU(cu.wait32(waiter, buf[0], 5, CU_STREAM_WAIT_VALUE_GEQ));
    CHECK_CU(cu.write32(waiter, buf[0] + 4, 77, 0)); /* runs only after the wait */
    CHECK_CU(cu.write32(writer, buf[0], 5, 0));
    CHECK_CU(cu.stream_sync(waiter));
    uint32_t two[2];
    CHECK_CU(cu.dtoh(two, buf[0], sizeof two));
    CHECK(two[0] == 5 && two[1] == 77, "wait then write: %u %u", two[0], two[1]);
    shadow[0][0] = 5;
    shadow[0][1] = 77;

    pthread_t t;
    CHECK(pthread_create(&t, NULL, mover, NULL) == 0, "thread");
    uint64_t seed = 11;
    for (uint32_t i = 1; i <= WRITES; i++) {
        int b = (int)(check_rnd(&seed) % BUFS);
        size_t w = 2 + check_rnd(&seed) % (SIZE / 4 - 2);
        if (i % 8) {
            CHECK_CU(cu.write32(writer, buf[b] + w * 4, i, 0));
            shadow[b][w] = i;
        } else { /* a batch of two writes */
            size_t w2 = 2 + check_rnd(&seed) % (SIZE / 4 - 2);
            CUstreamBatchMemOpParams p[2];
            memset(p, 0, sizeof p);
            p[0].writeValue.operation = CU_STREAM_MEM_OP_WRITE_VALUE_32;
            p[0].writeValue.address = buf[b] + w * 4;
            p[0].writeValue.value = i;
            p[1].writeValue.operation = CU_STREAM_MEM_OP_WRITE_VALUE_32;
            p[1].writeValue.address = buf[b] + w2 * 4;
            p[1].writeValue.value = ~i;
            CHECK_CU(cu.batch(writer, 2, p, 0));
            shadow[b][w] = i;
            shadow[b][w2] = ~i;
        }
    }
    writing_done = 1;
    void *moves;
    pthread_join(t, &moves);
    CHECK_CU(cu.stream_sync(writer));
    unsigned long lost = 0;
    uint32_t *got = malloc(SIZE);
    for (int b = 0; b < BUFS; b++) {
        CHECK_CU(cu.dtoh(got, buf[b], SIZE));
        for (size_t w = 0; w < SIZE / 4; w++)
            lost += got[w] != shadow[b][w];
    }
    CHECK(lost == 0, "%lu of %u writes lost while buffers moved", lost, WRITES);
    CHECK((unsigned long)(uintptr_t)moves > 0, "nothing moved: the test tests nothing");
    printf("memop: %u writes, %lu moves, 0 lost\n", WRITES, (unsigned long)(uintptr_t)moves);
    return 0;
}

/*
 * prog_limits: the limits of one process, against the test driver (1 GiB).
 * VRAM limit 256M, owner "vae" limited to 64M, pin limit 100M, set before
 * the library loads; later vramshim_set changes them while the program runs.
 * Offload is off: these are the refusals of limits alone (prog_offload
 * shows the same pressure moving buffers instead).
 * At every step the program checks what the driver calls return, what
 * cuMemGetInfo and cuDeviceTotalMem report, and the stats; and that the
 * refusals were logged with the rule and the owners.
 */
#include "check.h"

#include <errno.h>
#include <pthread.h>
#include <string.h>
#include <unistd.h>

#define M (1ULL << 20)

static struct {
    CUresult (*alloc)(CUdeviceptr *, size_t);
    CUresult (*release)(CUdeviceptr);
    CUresult (*pitch)(CUdeviceptr *, size_t *, size_t, size_t, unsigned);
    CUresult (*managed)(CUdeviceptr *, size_t, unsigned);
    CUresult (*alloc_async)(CUdeviceptr *, size_t, CUstream);
    CUresult (*free_async)(CUdeviceptr, CUstream);
    CUresult (*sync)(CUstream);
    CUresult (*info)(size_t *, size_t *);
    CUresult (*total)(size_t *, CUdevice);
    CUresult (*create)(CUmemGenericAllocationHandle *, size_t, const CUmemAllocationProp *,
                       unsigned long long);
    CUresult (*mem_release)(CUmemGenericAllocationHandle);
    CUresult (*host_alloc)(void **, size_t, unsigned);
    CUresult (*alloc_host)(void **, size_t);
    CUresult (*free_host)(void *);
    CUresult (*host_register)(void *, size_t, unsigned);
    CUresult (*host_unregister)(void *);
    CUresult (*set_ctx)(CUcontext);
    CUcontext ctx;
    int (*set)(const char *, const char *);
} cu;

static char log_path[] = "/tmp/vramshim-limits-XXXXXX";

static void open_driver(void)
{
    void *lib = check_libcuda();
#define SYM(field, name) cu.field = check_sym(lib, name)
    SYM(alloc, "cuMemAlloc_v2");
    SYM(release, "cuMemFree_v2");
    SYM(pitch, "cuMemAllocPitch_v2");
    SYM(managed, "cuMemAllocManaged");
    SYM(alloc_async, "cuMemAllocAsync");
    SYM(free_async, "cuMemFreeAsync");
    SYM(sync, "cuStreamSynchronize");
    SYM(info, "cuMemGetInfo_v2");
    SYM(total, "cuDeviceTotalMem_v2");
    SYM(create, "cuMemCreate");
    SYM(mem_release, "cuMemRelease");
    SYM(host_alloc, "cuMemHostAlloc");
    SYM(alloc_host, "cuMemAllocHost_v2");
    SYM(free_host, "cuMemFreeHost");
    SYM(host_register, "cuMemHostRegister_v2");
    SYM(host_unregister, "cuMemHostUnregister");
    SYM(set_ctx, "cuCtxSetCurrent");
#undef SYM
    check_context(lib, 0);
    CUresult (*get_ctx)(CUcontext *) = check_sym(lib, "cuCtxGetCurrent");
    CHECK_CU(get_ctx(&cu.ctx));
    cu.set = (int (*)(const char *, const char *))check_api("vramshim_set");
}

static void check_info(uint64_t want_free, uint64_t want_total)
{
    size_t f, t, dt;
    CHECK_CU(cu.info(&f, &t));
    CHECK_EQ_U64(f, want_free);
    CHECK_EQ_U64(t, want_total);
    CHECK_CU(cu.total(&dt, 0));
    CHECK_EQ_U64(dt, want_total);
}

static uint64_t ooms(void)
{
    json_t *st = stats_get();
    uint64_t n = stats_u64(st, "counters.oom_returned");
    json_decref(st);
    return n;
}

static bool log_has(const char *text)
{
    FILE *f = fopen(log_path, "r");
    CHECK(f != NULL, "cannot read the log %s", log_path);
    char line[2048];
    bool found = false;
    while (!found && fgets(line, sizeof line, f))
        found = strstr(line, text) != NULL;
    fclose(f);
    return found;
}

/* Up to the limit and no further, through every kind of device allocation. */
static void vram_limit(void)
{
    check_info(256 * M, 256 * M);
    CUdeviceptr p[4], extra;
    for (int i = 0; i < 4; i++) {
        CHECK_CU(cu.alloc(&p[i], 64 * M));
        check_info(256 * M - 64 * M * (uint64_t)(i + 1), 256 * M);
    }
    uint64_t before = ooms();
    CHECK(cu.alloc(&extra, 1) == CUDA_ERROR_OUT_OF_MEMORY, "one byte past the limit");
    CHECK_EQ_U64(ooms(), before + 1);
    CHECK(log_has("over the VRAM limit of 256.0M"), "no log line for the limit");
    CHECK(log_has("prog_limits 256.0M"), "the log line does not name the owner");

    /* recovers after freeing */
    CHECK_CU(cu.release(p[3]));
    check_info(64 * M, 256 * M);
    size_t pitch;
    CHECK(cu.pitch(&extra, &pitch, 64 * M, 2, 4) == CUDA_ERROR_OUT_OF_MEMORY,
          "pitched allocation past the limit");
    CHECK(cu.managed(&extra, 65 * M, CU_MEM_ATTACH_GLOBAL) == CUDA_ERROR_OUT_OF_MEMORY,
          "managed allocation past the limit");
    CHECK(cu.alloc_async(&extra, 65 * M, NULL) == CUDA_ERROR_OUT_OF_MEMORY,
          "stream-ordered allocation past the limit");
    CUmemAllocationProp prop;
    memset(&prop, 0, sizeof prop);
    prop.type = CU_MEM_ALLOCATION_TYPE_PINNED;
    prop.location.type = CU_MEM_LOCATION_TYPE_DEVICE;
    CUmemGenericAllocationHandle h;
    CHECK(cu.create(&h, 66 * M, &prop, 0) == CUDA_ERROR_OUT_OF_MEMORY,
          "cuMemCreate past the limit");

    /* each kind fits in what is left, and gives it back */
    CHECK_CU(cu.pitch(&extra, &pitch, 1000, 100, 4));
    check_info(64 * M - pitch * 100, 256 * M);
    CHECK_CU(cu.release(extra));
    CHECK_CU(cu.managed(&extra, 64 * M, CU_MEM_ATTACH_GLOBAL));
    check_info(0, 256 * M);
    CHECK_CU(cu.release(extra));
    CHECK_CU(cu.alloc_async(&extra, 64 * M, NULL));
    CHECK_CU(cu.free_async(extra, NULL));
    CHECK_CU(cu.sync(NULL));
    CHECK_CU(cu.create(&h, 64 * M, &prop, 0));
    check_info(0, 256 * M);
    CHECK_CU(cu.mem_release(h));
    check_info(64 * M, 256 * M);
    for (int i = 0; i < 3; i++)
        CHECK_CU(cu.release(p[i]));
    check_info(256 * M, 256 * M);
}

static void owner_limit(void)
{
    CUdeviceptr a, b, main_buf;
    CHECK_CU(cu.alloc(&main_buf, 100 * M));
    CHECK(check_owner_push("vae") == 0, "push");
    check_info(64 * M, 256 * M); /* the owner's room, not the process's */
    CHECK_CU(cu.alloc(&a, 48 * M));
    check_info(16 * M, 256 * M);
    CHECK(cu.alloc(&b, 17 * M) == CUDA_ERROR_OUT_OF_MEMORY, "vae past its 64M");
    CHECK(log_has("owner vae holds 48.0M there, and its limit is 64.0M"),
          "no log line for the owner limit");
    CHECK_CU(cu.alloc(&b, 16 * M));
    CHECK(check_owner_pop() == 0, "pop");
    check_info(256 * M - 164 * M, 256 * M); /* the default owner has no limit */
    json_t *st = stats_get();
    check_owner(st, "vae", 0, 64 * M, 2);
    json_decref(st);
    CHECK_CU(cu.release(a));
    CHECK_CU(cu.release(b));
    CHECK_CU(cu.release(main_buf));
}

/* The cap covers cuMemHostAlloc, cuMemAllocHost, cuMemHostRegister and
 * host-location cuMemCreate together, to the byte. */
static void pin_limit(void)
{
    void *a, *b, *c;
    CHECK_CU(cu.host_alloc(&a, 40 * M, 0));
    CHECK_CU(cu.alloc_host(&b, 30 * M));
    char *mem = aligned_alloc(4096, 30 * M);
    CHECK(cu.host_register(mem, 30 * M + 4096, 0) == CUDA_ERROR_OUT_OF_MEMORY,
          "register past the cap");
    CHECK(log_has("over the pin limit of 100.0M, 70.0M already pinned"),
          "no log line for the pin limit");
    CUmemAllocationProp prop;
    memset(&prop, 0, sizeof prop);
    prop.type = CU_MEM_ALLOCATION_TYPE_PINNED;
    prop.location.type = CU_MEM_LOCATION_TYPE_HOST_NUMA;
    CUmemGenericAllocationHandle h;
    CHECK(cu.create(&h, 32 * M, &prop, 0) == CUDA_ERROR_OUT_OF_MEMORY,
          "host cuMemCreate past the cap");
    CHECK_CU(cu.host_register(mem, 30 * M, 0)); /* exactly at the cap */
    CHECK(cu.host_alloc(&c, 1, 0) == CUDA_ERROR_OUT_OF_MEMORY, "one byte past the cap");
    json_t *st = stats_get();
    CHECK_EQ_U64(stats_u64(st, "pinned.app"), 100 * M);
    CHECK_EQ_U64(stats_u64(st, "pinned.limit"), 100 * M);
    json_decref(st);
    CHECK_CU(cu.host_unregister(mem));
    CHECK_CU(cu.create(&h, 30 * M, &prop, 0));
    CHECK(cu.alloc_host(&c, 1) == CUDA_ERROR_OUT_OF_MEMORY, "host handle counts");
    CHECK_CU(cu.mem_release(h));
    CHECK_CU(cu.free_host(a));
    CHECK_CU(cu.free_host(b));
    free(mem);

    /* A registration overlapping a registered range is the driver's
     * CUDA_ERROR_HOST_MEMORY_ALREADY_REGISTERED, and charges nothing: one
     * ending inside it, one inside it; one just after it is a range of its
     * own. */
    char *big = aligned_alloc(4096, 64 * M);
    CHECK_CU(cu.host_register(big + 32 * M, 16 * M, 0));
    CHECK(cu.host_register(big, 40 * M, 0) == CUDA_ERROR_HOST_MEMORY_ALREADY_REGISTERED,
          "a range ending inside a registered one");
    CHECK(cu.host_register(big + 40 * M, 4 * M, 0) == CUDA_ERROR_HOST_MEMORY_ALREADY_REGISTERED,
          "a range inside a registered one");
    CHECK_CU(cu.host_register(big + 48 * M, 4 * M, 0));
    CHECK_CU(cu.host_register(big, 32 * M, 0));
    st = stats_get();
    CHECK_EQ_U64(stats_u64(st, "pinned.app"), 52 * M);
    json_decref(st);
    CHECK_CU(cu.host_unregister(big));
    CHECK_CU(cu.host_unregister(big + 32 * M));
    CHECK_CU(cu.host_unregister(big + 48 * M));
    free(big);
}

/* Threads racing for the last bytes never overshoot, and together get
 * exactly what fits. */
struct racer {
    bool pinned;
    uint64_t got;
    void *ptrs[257];
    CUdeviceptr dptrs[257]; /* one thread may win every race, and one more */
    int n;
};

static void *race(void *arg)
{
    struct racer *r = arg;
    CHECK_CU(cu.set_ctx(cu.ctx));
    for (;;) {
        CUresult rc = r->pinned ? cu.host_alloc(&r->ptrs[r->n], M, 0)
                                : cu.alloc(&r->dptrs[r->n], M);
        if (rc == CUDA_ERROR_OUT_OF_MEMORY)
            break;
        CHECK_CU(rc);
        r->got += M;
        r->n++;
        CHECK(r->n <= 256, "more than fits");
    }
    return NULL;
}

static void races(bool pinned, uint64_t cap)
{
    enum { THREADS = 8 };
    static struct racer r[THREADS];
    pthread_t t[THREADS];
    memset(r, 0, sizeof r);
    for (int i = 0; i < THREADS; i++) {
        r[i].pinned = pinned;
        pthread_create(&t[i], NULL, race, &r[i]);
    }
    uint64_t total = 0;
    for (int i = 0; i < THREADS; i++) {
        pthread_join(t[i], NULL);
        total += r[i].got;
    }
    CHECK_EQ_U64(total, cap);
    for (int i = 0; i < THREADS; i++)
        for (int j = 0; j < r[i].n; j++)
            CHECK_CU(pinned ? cu.free_host(r[i].ptrs[j]) : cu.release(r[i].dptrs[j]));
}

static void changed_at_run_time(void)
{
    CUdeviceptr p[4];
    for (int i = 0; i < 4; i++)
        CHECK_CU(cu.alloc(&p[i], 50 * M));
    /* lowered below use: nothing more until use drops */
    CHECK(cu.set("vram_limit", "128M") == 0, "set vram_limit");
    check_info(0, 128 * M);
    CUdeviceptr q;
    CHECK(cu.alloc(&q, 1) == CUDA_ERROR_OUT_OF_MEMORY, "allocation over a lowered limit");
    CHECK_CU(cu.release(p[3]));
    CHECK_CU(cu.release(p[2]));
    check_info(28 * M, 128 * M);
    CHECK_CU(cu.alloc(&q, 28 * M));
    CHECK_CU(cu.release(q));

    /* bad input changes nothing */
    CHECK(cu.set("vram_limit", "12Q") == -EINVAL, "bad value accepted");
    CHECK(cu.set("vram_limitt", "1G") == -EINVAL, "bad key accepted");
    CHECK(cu.set("vram_limit", NULL) == -EINVAL, "NULL accepted");
    check_info(28 * M, 128 * M);

    CHECK(cu.set("vram_limit", "50%") == 0, "set a percentage");
    check_info(412 * M, 512 * M);
    CHECK(cu.set("vram_limit", "0:300M") == 0, "set per device");
    check_info(200 * M, 300 * M);
    CHECK(cu.set("vram_limit", "none") == 0, "clear");
    check_info(1024 * M - 100 * M, 1024 * M); /* the driver's own figures */
    json_t *st = stats_get();
    CHECK(json_is_null(json_array_get(json_object_get(json_object_get(st, "config"),
                                                      "vram_limit"),
                                      0)),
          "the stats still show a limit");
    json_decref(st);

    CHECK(cu.set("owner_limit", "prog_limits=120M") == 0, "set owner_limit");
    check_info(20 * M, 1024 * M);
    CHECK(cu.alloc(&q, 21 * M) == CUDA_ERROR_OUT_OF_MEMORY, "the new owner limit");
    CHECK(cu.set("owner_limit", "none") == 0, "clear owner_limit");

    void *h;
    CHECK(cu.set("pin_limit", "1M") == 0, "set pin_limit");
    CHECK(cu.host_alloc(&h, M + 1, 0) == CUDA_ERROR_OUT_OF_MEMORY, "the new pin limit");
    CHECK_CU(cu.host_alloc(&h, M, 0));
    CHECK_CU(cu.free_host(h));
    CHECK(cu.set("pin_limit", "default") == 0, "restore pin_limit");
    CHECK_CU(cu.host_alloc(&h, M + 1, 0));
    CHECK_CU(cu.free_host(h));
    CHECK_CU(cu.release(p[0]));
    CHECK_CU(cu.release(p[1]));
}

int main(int argc, char **argv)
{
    (void)argc;
    if (getenv("CHECK_REEXECED") == NULL) {
        int fd = mkstemp(log_path);
        CHECK(fd >= 0, "mkstemp");
        close(fd);
        char log_var[64];
        snprintf(log_var, sizeof log_var, "VRAMSHIM_LOG_FILE=%s", log_path);
        const char *env[] = {"VRAMSHIM_VRAM_LIMIT=256M", "VRAMSHIM_OWNER_LIMIT=vae=64M",
                             "VRAMSHIM_PIN_LIMIT=100M", "FAKECUDA_MEM=1G", log_var,
                             "VRAMSHIM_OFFLOAD=off", NULL};
        check_reexec_env(argv, env);
    }
    snprintf(log_path, sizeof log_path, "%s", getenv("VRAMSHIM_LOG_FILE"));
    open_driver();
    vram_limit();
    owner_limit();
    pin_limit();
    races(false, 256 * M);
    races(true, 100 * M);
    changed_at_run_time();
    unlink(log_path);
    printf("limits: ok\n");
    return 0;
}

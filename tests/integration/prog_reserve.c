/*
 * prog_reserve: VRAMSHIM_RESERVE_VRAM=256M holds while another process of
 * the test driver eats and frees device memory (FAKECUDA_SHM: both see one
 * 1 GiB device). The other process is this program again, run without
 * vramshim and driven through a pipe, so every step happens in a known
 * order without sleeping.
 *
 * VRAMSHIM_FREE_QUERY_MS=60000 makes the timing rule never fire, so each
 * ask of the driver here is one the near-the-reserve rule asked for:
 * far from the reserve, counting stands in for asking; near it, or about
 * to refuse, vramshim asks. Offload is off, so a refusal is a refusal.
 */
#include "check.h"

#include <errno.h>
#include <signal.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#define M (1ULL << 20)

static CUresult (*mem_alloc)(CUdeviceptr *, size_t);
static CUresult (*mem_free)(CUdeviceptr);
static CUresult (*mem_info)(size_t *, size_t *);

/* ---- the other process -------------------------------------------------- */

/* Commands on stdin, one a line: "a MiB" allocates, "f" frees all; each
 * answered "ok" or "no". */
static int eater(void)
{
    void *lib = check_libcuda();
    check_context(lib, 0);
    mem_alloc = check_sym(lib, "cuMemAlloc_v2");
    mem_free = check_sym(lib, "cuMemFree_v2");
    CUdeviceptr held[64];
    int n = 0;
    char line[64];
    while (fgets(line, sizeof line, stdin)) {
        bool ok = true;
        if (line[0] == 'a') {
            ok = n < 64 && mem_alloc(&held[n], strtoull(line + 2, NULL, 10) * M) ==
                               CUDA_SUCCESS;
            n += ok;
        } else if (line[0] == 'f') {
            while (n > 0)
                ok &= mem_free(held[--n]) == CUDA_SUCCESS;
        }
        printf("%s\n", ok ? "ok" : "no");
        fflush(stdout);
    }
    return 0;
}

static FILE *to_eater, *from_eater;
static pid_t eater_pid;

static void start_eater(char **argv)
{
    char *args[] = {argv[0], "eat", NULL};
    eater_pid = check_spawn("/proc/self/exe", args, true, &to_eater, &from_eater);
}

static void eater_do(const char *cmd)
{
    fprintf(to_eater, "%s\n", cmd);
    fflush(to_eater);
    char line[16];
    CHECK(fgets(line, sizeof line, from_eater) != NULL, "the other process died");
    CHECK(strcmp(line, "ok\n") == 0, "the other process could not %s", cmd);
}

/* ---- this process, under vramshim -------------------------------------- */

static uint64_t counter(const char *path)
{
    json_t *st = stats_get();
    uint64_t v = stats_u64(st, path);
    json_decref(st);
    return v;
}

static void check_free(uint64_t want)
{
    size_t f, t;
    CHECK_CU(mem_info(&f, &t));
    CHECK_EQ_U64(t, 1024 * M);
    CHECK_EQ_U64(f, want);
}

int main(int argc, char **argv)
{
    if (argc > 1 && strcmp(argv[1], "eat") == 0)
        return eater();
    if (getenv("CHECK_REEXECED") == NULL) {
        char shm[64];
        snprintf(shm, sizeof shm, "FAKECUDA_SHM=/vramshim-reserve-%d", (int)getpid());
        const char *env[] = {"FAKECUDA_MEM=1G", shm, "VRAMSHIM_RESERVE_VRAM=256M",
                             "VRAMSHIM_FREE_QUERY_MS=60000", "VRAMSHIM_LOG=error",
                             "VRAMSHIM_OFFLOAD=off", NULL};
        check_reexec_env(argv, env);
    }
    start_eater(argv);
    void *lib = check_libcuda();
    check_context(lib, 0);
    mem_alloc = check_sym(lib, "cuMemAlloc_v2");
    mem_free = check_sym(lib, "cuMemFree_v2");
    mem_info = check_sym(lib, "cuMemGetInfo_v2");
    int (*set)(const char *, const char *) = check_api("vramshim_set");

    check_free(768 * M);
    CUdeviceptr a, b, c, d, e;
    CHECK_CU(mem_alloc(&a, 64 * M));
    eater_do("a 512"); /* the device now has 448M free */

    /* far from the reserve by its own count: admitted without asking */
    uint64_t asks = counter("counters.free_queries");
    CHECK_CU(mem_alloc(&b, 64 * M));
    CHECK_EQ_U64(counter("counters.free_queries"), asks);

    /* near it: asks, and the other process's 512M counts */
    CHECK(mem_alloc(&c, 512 * M) == CUDA_ERROR_OUT_OF_MEMORY, "would leave 128M free");
    CHECK(counter("counters.free_queries") > asks, "refused without asking the driver");
    CHECK_CU(mem_alloc(&c, 128 * M)); /* leaves exactly 256M */
    CHECK(mem_alloc(&d, 2 * M) == CUDA_ERROR_OUT_OF_MEMORY, "below the reserve");
    check_free(0);
    unsigned long long (*used)(int) = check_sym(lib, "fakecuda_used");
    CHECK_EQ_U64(used(0), 768 * M); /* what the device really has in use */

    /* the other process leaves: room again, seen at once */
    eater_do("f");
    CHECK_CU(mem_alloc(&d, 2 * M));
    check_free(1024 * M - 258 * M - 256 * M);

    /* changed at run time */
    CHECK(set("reserve_vram", "0") == 0, "set reserve_vram");
    check_free(1024 * M - 258 * M);
    CHECK(set("reserve_vram", "50%") == 0, "set reserve_vram");
    check_free(1024 * M - 258 * M - 512 * M);
    CHECK(mem_alloc(&e, 255 * M) == CUDA_ERROR_OUT_OF_MEMORY, "below a 50%% reserve");
    CHECK_CU(mem_alloc(&e, 254 * M));
    CHECK(set("reserve_vram", "lots") == -EINVAL, "bad value accepted");
    check_free(0);

    CHECK_EQ_U64(counter("counters.oom_returned"), 3);
    for (CUdeviceptr *p = (CUdeviceptr[]){a, b, c, d, e}, *end = p + 5; p < end; p++)
        CHECK_CU(mem_free(*p));
    fclose(to_eater);
    int status;
    waitpid(eater_pid, &status, 0);
    CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0, "the other process failed");
    shm_unlink(getenv("FAKECUDA_SHM"));
    printf("reserve: ok\n");
    return 0;
}

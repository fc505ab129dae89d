/*
 * scenario.c: see scenario.h.
 */
#include "scenario.h"

#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#define MiB (1024ULL * 1024ULL)

void scenario_run(const struct cu_api *api, const char *owner)
{
    CUcontext ctx;
    CHECK_CU(api->Init(0));
    CHECK_CU(api->DevicePrimaryCtxRetain(&ctx, 0));
    CHECK_CU(api->CtxSetCurrent(ctx));

    /* device memory under the default owner */
    CUdeviceptr a, b, c, pitched, managed;
    size_t pitch;
    CHECK_CU(api->MemAlloc(&a, 1 * MiB));
    CHECK_CU(api->MemAlloc(&b, 3 * MiB));
    CHECK_CU(api->MemAlloc(&c, 100));
    CHECK_CU(api->MemAllocPitch(&pitched, &pitch, 1000, 10, 4));
    CHECK_CU(api->MemAllocManaged(&managed, 2 * MiB, CU_MEM_ATTACH_GLOBAL));
    uint64_t dflt = 1 * MiB + 3 * MiB + 100 + pitch * 10 + 2 * MiB;

    /* an explicit owner, stream-ordered */
    CUstream s;
    CHECK_CU(api->StreamCreate(&s, 0));
    CHECK(check_owner_push("weights") == 0, "push");
    CUdeviceptr w1, w2;
    CHECK_CU(api->MemAlloc(&w1, 5 * MiB));
    CHECK_CU(api->MemAllocAsync(&w2, 8 * MiB, s));
    CHECK(check_owner_pop() == 0, "pop");

    /* page-locked host memory */
    void *h1, *h2;
    CHECK_CU(api->MemHostAlloc(&h1, 1 * MiB, 0));
    CHECK_CU(api->MemAllocHost(&h2, 4096));
    char *plain = aligned_alloc(4096, 64 * 1024);
    CHECK_CU(api->MemHostRegister(plain, 64 * 1024, 0));

    /* data passes through untouched */
    unsigned char out[256], in[256];
    for (int i = 0; i < 256; i++)
        out[i] = (unsigned char)(i * 7 + 3);
    CHECK_CU(api->MemcpyHtoD(b + 12345, out, sizeof out));
    CHECK_CU(api->MemcpyDtoH(in, b + 12345, sizeof in));
    CHECK(memcmp(in, out, sizeof in) == 0, "round trip through device memory");

    json_t *st = stats_get();
    check_owner(st, owner, 0, dflt, 5);
    check_owner(st, "weights", 0, 13 * MiB, 2);
    CHECK_EQ_U64(stats_u64(st, "devices.0.allocated"), dflt + 13 * MiB);
    CHECK_EQ_U64(stats_u64(st, "devices.0.resident"), dflt + 13 * MiB);
    CHECK_EQ_U64(stats_u64(st, "devices.0.peak_resident"), dflt + 13 * MiB);
    CHECK_EQ_U64(stats_u64(st, "pinned.app"), 1 * MiB + 4096 + 64 * 1024);
    CHECK_EQ_U64(stats_u64(st, "counters.allocs"), 7);
    CHECK_EQ_U64(stats_u64(st, "counters.frees"), 0);
    json_decref(st);

    /* the figures the driver gives pass through, and the stats keep them */
    size_t free_b, total_b;
    CHECK_CU(api->MemGetInfo(&free_b, &total_b));
    st = stats_get();
    CHECK_EQ_U64(stats_u64(st, "devices.0.vram_free"), free_b);
    CHECK_EQ_U64(stats_u64(st, "devices.0.vram_total"), total_b);
    json_decref(st);

    /* release half, one of them stream-ordered */
    CHECK_CU(api->MemFree(b));
    CHECK_CU(api->MemFreeAsync(w2, s));
    CHECK_CU(api->StreamSynchronize(s));
    CHECK_CU(api->MemFreeHost(h1));
    CHECK_CU(api->MemHostUnregister(plain));
    st = stats_get();
    check_owner(st, owner, 0, dflt - 3 * MiB, 4);
    check_owner(st, "weights", 0, 5 * MiB, 1);
    CHECK_EQ_U64(stats_u64(st, "devices.0.allocated"), dflt - 3 * MiB + 5 * MiB);
    CHECK_EQ_U64(stats_u64(st, "devices.0.peak_resident"), dflt + 13 * MiB);
    CHECK_EQ_U64(stats_u64(st, "pinned.app"), 4096);
    CHECK_EQ_U64(stats_u64(st, "counters.frees"), 2);
    json_decref(st);

    /* a failed free changes nothing */
    CHECK(api->MemFree(b) != CUDA_SUCCESS, "double free must fail");
    CHECK(api->MemFreeHost(plain) != CUDA_SUCCESS, "freeing unregistered memory");

    CHECK_CU(api->MemFree(a));
    CHECK_CU(api->MemFree(c));
    CHECK_CU(api->MemFree(pitched));
    CHECK_CU(api->MemFree(managed));
    CHECK_CU(api->MemFree(w1));
    CHECK_CU(api->MemFreeHost(h2));
    st = stats_get();
    CHECK_EQ_U64(stats_u64(st, "devices.0.allocated"), 0);
    CHECK_EQ_U64(stats_u64(st, "pinned.app"), 0);
    CHECK_EQ_U64(stats_u64(st, "counters.allocs"), 7);
    CHECK_EQ_U64(stats_u64(st, "counters.frees"), 7);
    check_owner(st, owner, 0, 0, 0);
    check_owner(st, "weights", 0, 0, 0);
    json_decref(st);
    free(plain);
}

void scenario_own_socket(char *out, size_t cap)
{
    const char *dir = getenv("VRAMSHIM_SOCKET_DIR");
    CHECK(dir != NULL, "VRAMSHIM_SOCKET_DIR is not set (run through make check)");
    check_sock_path(dir, getpid(), out, cap);
}

void scenario_ask(const char *sock, const char *line, char *answer, size_t cap)
{
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    CHECK(fd >= 0, "socket");
    struct sockaddr_un a = {.sun_family = AF_UNIX};
    snprintf(a.sun_path, sizeof a.sun_path, "%s", sock);
    CHECK(connect(fd, (struct sockaddr *)&a, sizeof a) == 0, "connect %s", sock);
    CHECK(send(fd, line, strlen(line), MSG_NOSIGNAL) == (ssize_t)strlen(line), "send");
    /* the server closes once it has answered */
    char buf[4096];
    size_t used = 0;
    ssize_t r;
    while (used < sizeof buf - 1 && (r = recv(fd, buf + used, sizeof buf - 1 - used, 0)) > 0)
        used += (size_t)r;
    buf[used] = '\0';
    close(fd);
    CHECK(used > 0 && buf[used - 1] == '\n', "no answer to %s", line);
    buf[used - 1] = '\0';
    char *last = strrchr(buf, '\n');
    snprintf(answer, cap, "%s", last ? last + 1 : buf);
}

uint64_t scenario_seed(uint64_t dflt)
{
    const char *env = getenv("CHECK_SEED");
    uint64_t seed = dflt;
    if (env && *env) {
        char *end;
        seed = strtoull(env, &end, 0);
        CHECK(*end == '\0' && seed != 0, "CHECK_SEED=%s is not a nonzero number", env);
    }
    printf("seed %llu (CHECK_SEED=%llu draws the same again)\n", (unsigned long long)seed,
           (unsigned long long)seed);
    fflush(stdout);
    return seed;
}

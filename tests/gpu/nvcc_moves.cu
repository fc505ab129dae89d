// nvcc_moves: kernels keep running while vramshim moves their buffers
// (tests/gpu/run.sh, issue 4). Eight 256 MiB buffers under a 1 GiB
// VRAMSHIM_VRAM_LIMIT: every round each buffer is updated by a kernel in
// place, so buffers keep leaving and coming back; a second thread asks
// vramshim_offload / vramshim_prefetch on random buffers meanwhile (when
// vramshim is loaded). Prints "checksum <hex>" over every buffer at the
// end, which must equal the run without vramshim.
#include <cuda_runtime.h>
#include <dlfcn.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#define CHECK(call)                                                          \
    do {                                                                     \
        cudaError_t e_ = (call);                                             \
        if (e_ != cudaSuccess) {                                             \
            fprintf(stderr, "nvcc_moves: %s: %s\n", #call, cudaGetErrorString(e_)); \
            exit(1);                                                         \
        }                                                                    \
    } while (0)

#define BUFFERS 8
#define WORDS ((size_t)64 << 20) /* 256 MiB of uint32_t */
#define ROUNDS 6

__global__ void step(uint32_t *p, size_t n, uint32_t round)
{
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x)
        p[i] = p[i] * 2654435761u + round + (uint32_t)i;
}

static uint32_t *buf[BUFFERS];
static volatile int done;

static void *mover(void *arg)
{
    (void)arg;
    int (*offload)(uint64_t) = (int (*)(uint64_t))dlsym(RTLD_DEFAULT, "vramshim_offload");
    int (*prefetch)(uint64_t) = (int (*)(uint64_t))dlsym(RTLD_DEFAULT, "vramshim_prefetch");
    if (!offload || !prefetch)
        return NULL;
    unsigned s = 12345;
    while (!done) {
        s = s * 1103515245u + 12345u;
        uint64_t p = (uint64_t)(uintptr_t)buf[(s >> 16) % BUFFERS];
        int rc = (s >> 8) & 1 ? offload(p) : prefetch(p);
        if (rc != 0 && rc != -12 /* -ENOMEM: the budget said no */) {
            fprintf(stderr, "nvcc_moves: move returned %d\n", rc);
            exit(1);
        }
    }
    return NULL;
}

int main(void)
{
    for (int i = 0; i < BUFFERS; i++) {
        CHECK(cudaMalloc(&buf[i], WORDS * 4));
        CHECK(cudaMemset(buf[i], i + 1, WORDS * 4));
    }
    pthread_t t;
    pthread_create(&t, NULL, mover, NULL);
    cudaStream_t s;
    CHECK(cudaStreamCreate(&s));
    for (uint32_t r = 0; r < ROUNDS; r++)
        for (int i = 0; i < BUFFERS; i++)
            step<<<1024, 256, 0, s>>>(buf[i], WORDS, r * BUFFERS + (uint32_t)i);
    CHECK(cudaStreamSynchronize(s));
    done = 1;
    pthread_join(t, NULL);
    uint32_t *host = (uint32_t *)malloc(WORDS * 4);
    uint64_t h = 1469598103934665603ULL;
    for (int i = 0; i < BUFFERS; i++) {
        CHECK(cudaMemcpy(host, buf[i], WORDS * 4, cudaMemcpyDeviceToHost));
        for (size_t k = 0; k < WORDS; k++)
            h = (h ^ host[k]) * 1099511628211ULL;
        CHECK(cudaFree(buf[i]));
    }
    printf("checksum %016llx\n", (unsigned long long)h);
    return 0;
}

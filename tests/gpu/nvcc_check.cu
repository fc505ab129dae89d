// nvcc_check: a CUDA runtime program (static cudart, as nvcc builds by
// default) for tests/gpu/run.sh. It allocates through every runtime path
// vramshim must see (cudaMalloc, cudaMallocPitch, cudaMallocManaged,
// cudaMallocAsync, cudaHostAlloc, cudaHostRegister), runs kernels, and
// prints "checksum <hex>". Under vramshim it also prints what vramshim
// counted next to its own sums and exits 1 if they differ.
#include <cuda_runtime.h>
#include <dlfcn.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CHECK(call)                                                          \
    do {                                                                     \
        cudaError_t e_ = (call);                                             \
        if (e_ != cudaSuccess) {                                             \
            fprintf(stderr, "nvcc_check: %s: %s\n", #call, cudaGetErrorString(e_)); \
            exit(1);                                                         \
        }                                                                    \
    } while (0)

__global__ void fill(uint32_t *p, size_t n, uint32_t seed)
{
    size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x;
    if (i < n)
        p[i] = (uint32_t)i * 2654435761u + seed;
}

__global__ void mix(const uint32_t *a, const uint32_t *b, uint32_t *out, size_t n)
{
    size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x;
    if (i < n)
        out[i] = a[i] ^ (b[i] >> 3);
}

static uint64_t fnv(uint64_t h, const void *data, size_t n)
{
    const unsigned char *p = (const unsigned char *)data;
    for (size_t i = 0; i < n; i++)
        h = (h ^ p[i]) * 1099511628211ULL;
    return h;
}

static unsigned long long json_number(const char *doc, const char *key)
{
    const char *p = strstr(doc, key);
    return p ? strtoull(p + strlen(key), NULL, 10) : 0;
}

int main()
{
    const size_t n = 5 << 20, bytes = n * 4;
    uint32_t *a, *b, *out, *managed, *async_buf, *pitched;
    size_t pitch;
    cudaStream_t s;
    CHECK(cudaStreamCreate(&s));
    CHECK(cudaMalloc(&a, bytes));
    CHECK(cudaMalloc(&b, bytes));
    CHECK(cudaMalloc(&out, bytes));
    CHECK(cudaMallocPitch((void **)&pitched, &pitch, 1000 * 4, 100));
    CHECK(cudaMallocManaged(&managed, bytes));
    CHECK(cudaMallocAsync((void **)&async_buf, bytes, s));
    uint32_t *pinned, *registered = (uint32_t *)aligned_alloc(4096, bytes);
    CHECK(cudaHostAlloc((void **)&pinned, bytes, cudaHostAllocDefault));
    CHECK(cudaHostRegister(registered, bytes, cudaHostRegisterDefault));

    unsigned blocks = (unsigned)((n + 255) / 256);
    fill<<<blocks, 256, 0, s>>>(a, n, 1);
    fill<<<blocks, 256, 0, s>>>(b, n, 77);
    mix<<<blocks, 256, 0, s>>>(a, b, out, n);
    mix<<<blocks, 256, 0, s>>>(out, a, async_buf, n);
    mix<<<blocks, 256, 0, s>>>(async_buf, b, managed, n);
    CHECK(cudaMemcpyAsync(pinned, out, bytes, cudaMemcpyDeviceToHost, s));
    CHECK(cudaMemcpyAsync(registered, async_buf, bytes, cudaMemcpyDeviceToHost, s));
    CHECK(cudaStreamSynchronize(s));
    CHECK(cudaDeviceSynchronize());
    uint64_t h = 1469598103934665603ULL;
    h = fnv(h, pinned, bytes);
    h = fnv(h, registered, bytes);
    h = fnv(h, managed, bytes);
    printf("checksum %016llx\n", (unsigned long long)h);

    int ok = 1;
    int (*stats)(char *, size_t) = (int (*)(char *, size_t))dlsym(RTLD_DEFAULT, "vramshim_stats_json");
    if (stats) {
        static char doc[1 << 16];
        stats(doc, sizeof doc);
        unsigned long long device = 5ULL * bytes + pitch * 100, host = 2ULL * bytes;
        unsigned long long seen_dev = json_number(doc, "\"allocated\":");
        unsigned long long seen_host = json_number(doc, "\"app\":");
        printf("device bytes program=%llu vramshim=%llu\n", device, seen_dev);
        printf("pinned bytes program=%llu vramshim=%llu\n", host, seen_host);
        ok = seen_dev == device && seen_host == host;
    }
    CHECK(cudaFreeAsync(async_buf, s));
    CHECK(cudaStreamSynchronize(s));
    CHECK(cudaFree(a));
    CHECK(cudaFree(b));
    CHECK(cudaFree(out));
    CHECK(cudaFree(pitched));
    CHECK(cudaFree(managed));
    CHECK(cudaFreeHost(pinned));
    CHECK(cudaHostUnregister(registered));
    free(registered);
    return ok ? 0 : 1;
}

/*
 * fake_phys.c: the pages behind a VMM physical handle (fake_vmm.c).
 *
 * The handle's bytes must outlive any one mapping, and a handle may be
 * mapped at several addresses, exported as a file descriptor, bound to a
 * multicast object: a memfd does all of that. But every new mapping of a
 * memfd fills its page table one 4 KiB fault at a time, and a move of a
 * buffer maps new physical memory at its address each time; on a
 * paravirtualised machine that costs about 12 us a page, more than the
 * copy itself. So a handle starts as anonymous memory (transparent huge
 * pages where the kernel allows them: one fault per 2 MiB) that the kernel
 * moves, page tables and all, with mremap: from where it is parked to the
 * address it is mapped at, and back when it is unmapped. Nothing a
 * program can observe changes: the bytes survive unmapping and mapping,
 * an unmapped address faults (the mapping is made inaccessible before its
 * pages move away), and a handle whose pages must be reached another way
 * (a second or partial mapping, an export, a multicast binding, a dma-buf)
 * becomes a memfd holding the same bytes first, for good.
 *
 * That change copies the bytes while the one mapping is made read-only: a
 * device write racing it would fault instead of landing. No test maps a
 * handle a second time while work writes its first mapping.
 *
 * Huge pages only for memory of 2 MiB to FK_PHYS_HUGE_MAX (vramshim's
 * chunks and host blocks, a test's ordinary buffers; fk_advise_huge, also
 * for cuMemAlloc and cuMemHostAlloc memory): tests that make very large
 * allocations and touch a few bytes of each would otherwise hold 2 MiB
 * for every byte touched.
 */
#include "fake_internal.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#ifndef MREMAP_DONTUNMAP
#define MREMAP_DONTUNMAP 4 /* Linux 5.7 */
#endif

#define FK_PHYS_HUGE_MAX (64ULL << 20)

/* Can this kernel move pages out of a mapping and leave it in place
 * (MREMAP_DONTUNMAP)? Without it, every handle is a memfd from the start:
 * an unmapped address must never become a hole another mmap could take. */
static pthread_once_t probe_once = PTHREAD_ONCE_INIT;
static bool can_move;

static void probe(void)
{
    char *a = mmap(NULL, 2 * FK_PAGE, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE,
                   -1, 0);
    if (a == MAP_FAILED)
        return;
    /* as fk_phys_unmap asks it: to a place of its choosing (some kernels
     * refuse MREMAP_DONTUNMAP without MREMAP_FIXED) */
    can_move = mremap(a, FK_PAGE, FK_PAGE, MREMAP_MAYMOVE | MREMAP_FIXED | MREMAP_DONTUNMAP,
                      a + FK_PAGE) != MAP_FAILED;
    munmap(a, 2 * FK_PAGE);
}

/* A fresh inaccessible range of size bytes aligned to the granularity (so
 * that huge pages move whole), or NULL. */
static char *reserve_aligned(uint64_t size)
{
    uint64_t span = size + FK_GRANULARITY;
    char *p = mmap(NULL, span, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (p == MAP_FAILED)
        return NULL;
    uint64_t start = ((uint64_t)(uintptr_t)p + FK_GRANULARITY - 1) & ~(FK_GRANULARITY - 1);
    uint64_t head = start - (uint64_t)(uintptr_t)p;
    if (head)
        munmap(p, head);
    munmap((char *)(uintptr_t)(start + size), span - head - size);
    return (char *)(uintptr_t)start;
}

static int new_memfd(uint64_t size)
{
    int fd = memfd_create("fakecuda-vmm", MFD_CLOEXEC);
    if (fd >= 0 && ftruncate(fd, (off_t)size) != 0) {
        close(fd);
        fd = -1;
    }
    return fd;
}

void fk_advise_huge(void *p, uint64_t len)
{
    if (len >= FK_GRANULARITY && len <= FK_PHYS_HUGE_MAX)
        madvise(p, len, MADV_HUGEPAGE);
}

int fk_phys_init(struct fk_phys *p, uint64_t size)
{
    pthread_once(&probe_once, probe);
    *p = (struct fk_phys){.fd = -1, .size = size};
    if (can_move) {
        p->park = reserve_aligned(size);
        if (p->park) {
            fk_advise_huge(p->park, size);
            return 0;
        }
    }
    p->fd = new_memfd(size);
    return p->fd >= 0 ? 0 : -1;
}

void fk_phys_init_fd(struct fk_phys *p, int fd, uint64_t size)
{
    *p = (struct fk_phys){.fd = fd, .size = size};
}

/* Copy the resident pages of [from, +size) into fd (the others read as
 * zeros there too), so that an untouched handle allocates nothing. */
static int copy_resident(int fd, const char *from, uint64_t size)
{
    unsigned char vec[512];
    for (uint64_t off = 0; off < size; off += sizeof vec * FK_PAGE) {
        uint64_t len = size - off < sizeof vec * FK_PAGE ? size - off : sizeof vec * FK_PAGE;
        if (mincore((void *)(from + off), len, vec) != 0)
            return -1;
        for (uint64_t i = 0; i < len / FK_PAGE;) {
            if (!(vec[i] & 1)) {
                i++;
                continue;
            }
            uint64_t j = i;
            while (j < len / FK_PAGE && (vec[j] & 1))
                j++;
            uint64_t at = off + i * FK_PAGE, n = (j - i) * FK_PAGE;
            for (uint64_t done = 0; done < n;) {
                ssize_t w = pwrite(fd, from + at + done, n - done, (off_t)(at + done));
                if (w <= 0 && errno != EINTR)
                    return -1;
                if (w > 0)
                    done += (uint64_t)w;
            }
            i = j;
        }
    }
    return 0;
}

int fk_phys_fd(struct fk_phys *p, bool accessible)
{
    if (p->fd >= 0)
        return p->fd;
    int fd = new_memfd(p->size);
    if (fd < 0)
        return -1;
    char *where = p->at ? (char *)(uintptr_t)p->at : p->park;
    /* read-only while copied: a write now would be lost, so it faults */
    if (mprotect(where, p->size, PROT_READ) != 0 || copy_resident(fd, where, p->size) != 0) {
        mprotect(where, p->size, accessible ? PROT_READ | PROT_WRITE : PROT_NONE);
        close(fd);
        return -1;
    }
    if (p->at) {
        /* the memfd takes the mapping's place in one step */
        mmap(where, p->size, accessible ? PROT_READ | PROT_WRITE : PROT_NONE,
             MAP_SHARED | MAP_FIXED, fd, 0);
    } else {
        munmap(p->park, p->size);
        p->park = NULL;
    }
    p->fd = fd;
    return fd;
}

bool fk_phys_movable(const struct fk_phys *p, uint64_t size, uint64_t offset)
{
    return p->fd < 0 && p->at == 0 && offset == 0 && size == p->size;
}

int fk_phys_map(struct fk_phys *p, uint64_t va)
{
    void *to = mremap(p->park, p->size, p->size, MREMAP_MAYMOVE | MREMAP_FIXED,
                      (void *)(uintptr_t)va);
    if (to == MAP_FAILED)
        return -1;
    p->park = NULL;
    p->at = va;
    return 0;
}

bool fk_phys_mapped_at(const struct fk_phys *p, uint64_t va)
{
    return p->fd < 0 && p->at == va;
}

void fk_phys_unmap(struct fk_phys *p, bool keep)
{
    char *at = (char *)(uintptr_t)p->at;
    p->at = 0;
    if (!keep)
        return; /* the caller's reservation over the address frees them */
    /* inaccessible first, so that a late access faults rather than finds
     * the empty mapping mremap leaves behind */
    mprotect(at, p->size, PROT_NONE);
    char *park = reserve_aligned(p->size);
    void *moved = park ? mremap(at, p->size, p->size,
                                MREMAP_MAYMOVE | MREMAP_FIXED | MREMAP_DONTUNMAP, park)
                       : MAP_FAILED;
    if (moved == MAP_FAILED) {
        /* no room to park them: the handle reads zeros from now on, which
         * the tests would report; say why */
        fprintf(stderr, "fakecuda: parking a handle's pages failed (%s)\n", strerror(errno));
        if (park)
            munmap(park, p->size);
        park = reserve_aligned(p->size);
    }
    p->park = park;
}

void fk_phys_drop(struct fk_phys *p)
{
    if (p->fd >= 0)
        close(p->fd);
    if (p->park)
        munmap(p->park, p->size);
    p->fd = -1;
    p->park = NULL;
}

/*
 * dl_real.c: the C library's own dlsym and dlvsym.
 *
 * vramshim exports dlsym and dlvsym, so inside this library a call to either
 * name would bind to our own export (the preloaded object comes first in the
 * global scope, and an unversioned definition satisfies a versioned
 * reference). The real ones are therefore found by reading libc's dynamic
 * symbol table directly (GNU hash), once.
 *
 * dlsym(RTLD_NEXT, ...) from the program cannot simply be called from C:
 * glibc decides "next" from the return address, which would be ours. On
 * x86-64 hook_dlsym.c jumps to libc's function instead; elsewhere
 * vs_dl_next walks the link maps after the caller's object.
 *
 * Sanitizer runtimes (ASan, TSan...) call dlsym(RTLD_NEXT) while they set
 * up their interceptors, before those work; dlopen, dl_iterate_phdr and
 * pthread_once are among the intercepted. So this path calls libc's own
 * dlopen, dlclose and dladdr1, found the same way, walks the link maps
 * through _r_debug, and guards resolution with atomics alone.
 */
#define _GNU_SOURCE 1
#include "driver.h"

#include <dlfcn.h>
#include <elf.h>
#include <link.h>
#include <string.h>

typedef void *(*dlsym_fn)(void *, const char *);
typedef void *(*dlvsym_fn)(void *, const char *, const char *);
typedef void *(*dlopen_fn)(const char *, int);
typedef int (*dlclose_fn)(void *);
typedef int (*dladdr1_fn)(const void *, Dl_info *, void **, int);

static struct {
    dlsym_fn dlsym;
    dlvsym_fn dlvsym;
    dlopen_fn dlopen;
    dlclose_fn dlclose;
    dladdr1_fn dladdr1;
} libc_dl;
static _Atomic int resolved; /* 0 no, 1 being resolved, 2 yes */

/* Local string helpers: libc's may be a sanitizer's interceptor that is not
 * set up yet when this runs. */
static bool str_same(const char *a, const char *b)
{
    while (*a && *a == *b)
        a++, b++;
    return *a == *b;
}

static bool is_libc(const char *path)
{
    const char *base = path;
    for (const char *p = path; *p; p++)
        if (*p == '/')
            base = p + 1;
    static const char prefix[] = "libc.so";
    for (size_t i = 0; i < sizeof prefix - 1; i++)
        if (base[i] != prefix[i])
            return false;
    return true;
}

static uint32_t gnu_hash(const char *s)
{
    uint32_t h = 5381;
    for (const unsigned char *p = (const unsigned char *)s; *p; p++)
        h = h * 33 + *p;
    return h;
}

/* The default (non-hidden) version of `name` defined in one loaded object,
 * given its load address and dynamic section. */
static void *find_in_object(ElfW(Addr) base, const ElfW(Dyn) *dyn, const char *name)
{
    if (dyn == NULL)
        return NULL;
    ElfW(Addr) symtab = 0, strtab = 0, gnuhash = 0, versym = 0;
    for (; dyn->d_tag != DT_NULL; dyn++) {
        switch (dyn->d_tag) {
        case DT_SYMTAB: symtab = dyn->d_un.d_ptr; break;
        case DT_STRTAB: strtab = dyn->d_un.d_ptr; break;
        case DT_GNU_HASH: gnuhash = dyn->d_un.d_ptr; break;
        case DT_VERSYM: versym = dyn->d_un.d_ptr; break;
        }
    }
    if (!symtab || !strtab || !gnuhash)
        return NULL;
    /* glibc relocates these in place; other loaders may not. */
#define FIX(p) ((p) < base ? (p) + base : (p))
    const ElfW(Sym) *syms = (const ElfW(Sym) *)FIX(symtab);
    const char *strs = (const char *)FIX(strtab);
    const uint32_t *gh = (const uint32_t *)FIX(gnuhash);
    const uint16_t *vers = versym ? (const uint16_t *)FIX(versym) : NULL;
#undef FIX
    uint32_t nbuckets = gh[0], symoffset = gh[1], bloom_size = gh[2];
    const ElfW(Addr) *bloom = (const ElfW(Addr) *)(gh + 4);
    const uint32_t *buckets = (const uint32_t *)(bloom + bloom_size);
    const uint32_t *chain = buckets + nbuckets;
    uint32_t h = gnu_hash(name);
    uint32_t idx = buckets[h % nbuckets];
    if (idx < symoffset)
        return NULL;
    for (;; idx++) {
        uint32_t h2 = chain[idx - symoffset];
        const ElfW(Sym) *sym = &syms[idx];
        if ((h | 1) == (h2 | 1) && sym->st_shndx != SHN_UNDEF &&
            str_same(strs + sym->st_name, name) &&
            (vers == NULL || !(vers[idx] & 0x8000)))
            return (void *)(base + sym->st_value);
        if (h2 & 1)
            break;
    }
    return NULL;
}

static void resolve(void)
{
    int expected = 0;
    if (!atomic_compare_exchange_strong(&resolved, &expected, 1)) {
        while (atomic_load(&resolved) != 2) /* another thread, microseconds */
            ;
        return;
    }
    for (struct link_map *m = _r_debug.r_map; m; m = m->l_next) {
        if (m->l_name == NULL || !is_libc(m->l_name))
            continue;
        libc_dl.dlsym = (dlsym_fn)find_in_object(m->l_addr, m->l_ld, "dlsym");
        libc_dl.dlvsym = (dlvsym_fn)find_in_object(m->l_addr, m->l_ld, "dlvsym");
        libc_dl.dlopen = (dlopen_fn)find_in_object(m->l_addr, m->l_ld, "dlopen");
        libc_dl.dlclose = (dlclose_fn)find_in_object(m->l_addr, m->l_ld, "dlclose");
        libc_dl.dladdr1 = (dladdr1_fn)find_in_object(m->l_addr, m->l_ld, "dladdr1");
        break;
    }
    atomic_store(&resolved, 2);
    if (!libc_dl.dlsym || !libc_dl.dlvsym || !libc_dl.dlopen || !libc_dl.dlclose ||
        !libc_dl.dladdr1)
        vs_error("cannot find the C library's dynamic-linking functions; dynamic "
                 "look-ups through vramshim will fail");
}

static inline void ensure_resolved(void)
{
    if (VS_UNLIKELY(atomic_load_explicit(&resolved, memory_order_acquire) != 2))
        resolve();
}

void *vs_libc_dlsym(void)
{
    ensure_resolved();
    return (void *)libc_dl.dlsym;
}

void *vs_libc_dlvsym(void)
{
    ensure_resolved();
    return (void *)libc_dl.dlvsym;
}

void *vs_real_dlsym(void *handle, const char *name)
{
    ensure_resolved();
    return libc_dl.dlsym ? libc_dl.dlsym(handle, name) : NULL;
}

void *vs_real_dlvsym(void *handle, const char *name, const char *version)
{
    ensure_resolved();
    return libc_dl.dlvsym ? libc_dl.dlvsym(handle, name, version) : NULL;
}

void *vs_dl_next(const void *caller, const char *name, const char *version)
{
    ensure_resolved();
    if (!libc_dl.dladdr1 || !libc_dl.dlopen || !libc_dl.dlclose)
        return NULL;
    Dl_info info;
    struct link_map *self = NULL;
    if (!libc_dl.dladdr1(caller, &info, (void **)&self, RTLD_DL_LINKMAP) || self == NULL)
        return NULL;
    for (struct link_map *m = self->l_next; m; m = m->l_next) {
        if (m->l_name == NULL || m->l_name[0] == '\0')
            continue;
        /* A link map is a usable handle only once dlopen has set up its
         * search list; NOLOAD gives that without loading anything. */
        void *handle = libc_dl.dlopen(m->l_name, RTLD_LAZY | RTLD_NOLOAD);
        if (handle == NULL)
            continue;
        void *sym = version ? vs_real_dlvsym(handle, name, version)
                            : vs_real_dlsym(handle, name);
        libc_dl.dlclose(handle);
        if (sym == NULL)
            continue;
        /* dlsym on a handle also searches that object's dependencies; only
         * a definition in m itself is "next" here. */
        struct link_map *owner = NULL;
        if (libc_dl.dladdr1(sym, &info, (void **)&owner, RTLD_DL_LINKMAP) && owner == m)
            return sym;
    }
    return NULL;
}

/*
 * dl_real.c: the C library's own dlsym and dlvsym.
 *
 * vramshim exports dlsym and dlvsym, so inside this library a call to either
 * name would bind to our own export (the preloaded object comes first in the
 * global scope, and an unversioned definition satisfies a versioned
 * reference). The real ones are therefore found by reading libc's dynamic
 * symbol table directly (GNU hash), once.
 *
 * dlsym(RTLD_NEXT, ...) from the program cannot simply be forwarded: glibc
 * decides "next" from the return address, which would be ours. vs_dl_next
 * walks the link maps after the caller's object instead.
 */
#define _GNU_SOURCE 1
#include "vramshim_internal.h"

#include <dlfcn.h>
#include <elf.h>
#include <link.h>
#include <pthread.h>
#include <string.h>

typedef void *(*dlsym_fn)(void *, const char *);
typedef void *(*dlvsym_fn)(void *, const char *, const char *);

static dlsym_fn real_dlsym;
static dlvsym_fn real_dlvsym;
static pthread_once_t resolve_once = PTHREAD_ONCE_INIT;

struct lookup {
    const char *name;
    void *found;
};

static uint32_t gnu_hash(const char *s)
{
    uint32_t h = 5381;
    for (const unsigned char *p = (const unsigned char *)s; *p; p++)
        h = h * 33 + *p;
    return h;
}

/* The default (non-hidden) version of `name` defined in one loaded object. */
static void *find_in_object(struct dl_phdr_info *info, const char *name)
{
    const ElfW(Dyn) *dyn = NULL;
    for (int i = 0; i < info->dlpi_phnum; i++)
        if (info->dlpi_phdr[i].p_type == PT_DYNAMIC)
            dyn = (const ElfW(Dyn) *)(info->dlpi_addr + info->dlpi_phdr[i].p_vaddr);
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
#define FIX(p) ((p) < info->dlpi_addr ? (p) + info->dlpi_addr : (p))
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
            strcmp(strs + sym->st_name, name) == 0 &&
            (vers == NULL || !(vers[idx] & 0x8000)))
            return (void *)(info->dlpi_addr + sym->st_value);
        if (h2 & 1)
            break;
    }
    return NULL;
}

static int find_in_libc(struct dl_phdr_info *info, size_t size, void *data)
{
    (void)size;
    struct lookup *l = data;
    const char *slash = strrchr(info->dlpi_name, '/');
    const char *base = slash ? slash + 1 : info->dlpi_name;
    if (strncmp(base, "libc.so", 7) != 0)
        return 0;
    l->found = find_in_object(info, l->name);
    return l->found != NULL;
}

static void resolve(void)
{
    struct lookup l = {.name = "dlsym"};
    dl_iterate_phdr(find_in_libc, &l);
    real_dlsym = (dlsym_fn)l.found;
    l = (struct lookup){.name = "dlvsym"};
    dl_iterate_phdr(find_in_libc, &l);
    real_dlvsym = (dlvsym_fn)l.found;
    if (real_dlsym == NULL || real_dlvsym == NULL)
        vs_error("cannot find the C library's dlsym/dlvsym; dynamic look-ups "
                 "through vramshim will fail");
}

void *vs_real_dlsym(void *handle, const char *name)
{
    pthread_once(&resolve_once, resolve);
    return real_dlsym ? real_dlsym(handle, name) : NULL;
}

void *vs_real_dlvsym(void *handle, const char *name, const char *version)
{
    pthread_once(&resolve_once, resolve);
    return real_dlvsym ? real_dlvsym(handle, name, version) : NULL;
}

void *vs_dl_next(const void *caller, const char *name, const char *version)
{
    Dl_info info;
    struct link_map *self = NULL;
    if (!dladdr1(caller, &info, (void **)&self, RTLD_DL_LINKMAP) || self == NULL)
        return NULL;
    for (struct link_map *m = self->l_next; m; m = m->l_next) {
        if (m->l_name == NULL || m->l_name[0] == '\0')
            continue;
        /* A link map is a usable handle only once dlopen has set up its
         * search list; NOLOAD gives that without loading anything. */
        void *handle = dlopen(m->l_name, RTLD_LAZY | RTLD_NOLOAD);
        if (handle == NULL)
            continue;
        void *sym = version ? vs_real_dlvsym(handle, name, version)
                            : vs_real_dlsym(handle, name);
        dlclose(handle);
        if (sym == NULL)
            continue;
        /* dlsym on a handle also searches that object's dependencies; only
         * a definition in m itself is "next" here. */
        struct link_map *owner = NULL;
        if (dladdr1(sym, &info, (void **)&owner, RTLD_DL_LINKMAP) && owner == m)
            return sym;
    }
    return NULL;
}

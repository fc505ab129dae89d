/*
 * hook_dlsym.c: way in (c), dlsym and dlvsym.
 *
 * Static cudart finds cuGetProcAddress_v2 with dlsym on its libcuda handle,
 * and PyTorch looks up some eighty versioned names the same way. Whatever
 * the handle, a result that is a real driver pointer we hook is swapped for
 * the hook. NVML's memory figures are swapped by name (hook_nvml.c). Other
 * names are never inspected.
 *
 * RTLD_NEXT means "after the caller", and glibc finds the caller from the
 * return address. On x86-64 the exported entry points are a few
 * instructions of assembly that jump straight into libc's dlsym/dlvsym for
 * RTLD_NEXT, return address untouched, so glibc answers exactly as without
 * vramshim (and sanitizer runtimes, which ask during their own start-up,
 * never run our C code for it). Elsewhere vs_dl_next walks the link maps.
 * RTLD_NEXT answers are not swapped: "the next definition" of a driver name
 * is the driver's.
 *
 * Both are exported under libc's own symbol versions too (src/vramshim.map:
 * dlsym@GLIBC_2.2.5 and the default dlsym@@GLIBC_2.34 on x86-64), because
 * dlvsym(..., "dlsym", "GLIBC_2.34") matches hidden-versioned definitions
 * only: an unversioned export is skipped, and an interposer that forwards
 * that way would reach libc's dlsym past vramshim.
 */
#define _GNU_SOURCE 1
#include "init.h"

#include <dlfcn.h>
#include <string.h>

static void *swap_result(const char *name, void *sym)
{
    if (sym == NULL || name == NULL)
        return sym;
    if (name[0] == 'n' && strncmp(name, "nvml", 4) == 0)
        return vs_nvml_swap(name, sym);
    if (name[0] != 'c' || name[1] != 'u')
        return sym;
    if (!vs_real_ready() && !vs_driver_ready(false))
        return sym; /* libcuda is not loaded, so this is none of its pointers */
    void *hook = vs_hook_for_real(sym);
    return hook ? hook : sym;
}

void *vs_dlsym_body(void *handle, const char *name)
{
    return swap_result(name, vs_real_dlsym(handle, name));
}

void *vs_dlvsym_body(void *handle, const char *name, const char *version)
{
    return swap_result(name, vs_real_dlvsym(handle, name, version));
}

#if defined(__x86_64__)
/* dlsym(handle=rdi, name=rsi), dlvsym(handle=rdi, name=rsi, version=rdx).
 * For RTLD_NEXT (-1): fetch libc's function with the argument registers
 * saved and the stack 16-byte aligned, then jump to it. */
__asm__(".text\n"
        ".globl vs_dlsym_glibc_2_2_5\n"
        ".globl vs_dlsym_glibc_2_34\n"
        ".type vs_dlsym_glibc_2_2_5, @function\n"
        ".type vs_dlsym_glibc_2_34, @function\n"
        ".symver vs_dlsym_glibc_2_2_5, dlsym@GLIBC_2.2.5\n"
        ".symver vs_dlsym_glibc_2_34, dlsym@@GLIBC_2.34\n"
        "vs_dlsym_glibc_2_2_5:\n"
        "vs_dlsym_glibc_2_34:\n"
        "  endbr64\n"
        "  cmpq $-1, %rdi\n"
        "  jne vs_dlsym_body\n"
        "  pushq %rdi\n"
        "  pushq %rsi\n"
        "  subq $8, %rsp\n"
        "  call vs_libc_dlsym\n"
        "  addq $8, %rsp\n"
        "  popq %rsi\n"
        "  popq %rdi\n"
        "  testq %rax, %rax\n"
        "  jz 1f\n"
        "  jmp *%rax\n"
        "1:\n"
        "  ret\n"
        ".size vs_dlsym_glibc_2_2_5, .-vs_dlsym_glibc_2_2_5\n"
        ".size vs_dlsym_glibc_2_34, .-vs_dlsym_glibc_2_34\n"
        ".globl vs_dlvsym_glibc_2_2_5\n"
        ".globl vs_dlvsym_glibc_2_34\n"
        ".type vs_dlvsym_glibc_2_2_5, @function\n"
        ".type vs_dlvsym_glibc_2_34, @function\n"
        ".symver vs_dlvsym_glibc_2_2_5, dlvsym@GLIBC_2.2.5\n"
        ".symver vs_dlvsym_glibc_2_34, dlvsym@@GLIBC_2.34\n"
        "vs_dlvsym_glibc_2_2_5:\n"
        "vs_dlvsym_glibc_2_34:\n"
        "  endbr64\n"
        "  cmpq $-1, %rdi\n"
        "  jne vs_dlvsym_body\n"
        "  pushq %rdi\n"
        "  pushq %rsi\n"
        "  pushq %rdx\n"
        "  call vs_libc_dlvsym\n"
        "  popq %rdx\n"
        "  popq %rsi\n"
        "  popq %rdi\n"
        "  testq %rax, %rax\n"
        "  jz 2f\n"
        "  jmp *%rax\n"
        "2:\n"
        "  ret\n"
        ".size vs_dlvsym_glibc_2_2_5, .-vs_dlvsym_glibc_2_2_5\n"
        ".size vs_dlvsym_glibc_2_34, .-vs_dlvsym_glibc_2_34\n");
#else
VS_EXPORT void *dlsym(void *handle, const char *name)
{
    if (handle == RTLD_NEXT)
        return vs_dl_next(__builtin_return_address(0), name, NULL);
    return vs_dlsym_body(handle, name);
}

VS_EXPORT void *dlvsym(void *handle, const char *name, const char *version)
{
    if (handle == RTLD_NEXT)
        return vs_dl_next(__builtin_return_address(0), name, version);
    return vs_dlvsym_body(handle, name, version);
}
#endif

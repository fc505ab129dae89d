/*
 * fake_texref.c: legacy texture references of the test driver.
 *
 * A texture reference is module state (cuModuleGetTexRef) that kernels of
 * the module read through without naming its memory in their parameters:
 * the binding holds the device address given to cuTexRefSetAddress*, and
 * a read goes through that address to whatever is mapped there when the
 * kernel runs. Kernels here are host functions; one reads through a
 * reference by asking cuTexRefGetAddress_v2 for the address.
 *
 * From the driver API reference (Texture Reference Management, deprecated
 * but still exported):
 *   - cuModuleGetTexRef: "Returns in *pTexRef the handle of the texture
 *     reference of name name in the module hmod";
 *   - cuTexRefSetAddress: "Binds a linear address range to the texture
 *     reference ... Any previous address or CUDA array state associated
 *     with the texture reference is superseded"; the hardware's alignment of
 *     texture base addresses comes back as *ByteOffset, 0 for memory from
 *     cuMemAlloc, and "NULL may be passed" then;
 *   - cuTexRefSetAddress2D: binds Height rows of Pitch bytes, the format in
 *     desc;
 *   - cuTexRefGetAddress: "Returns in *pdptr the base address bound to the
 *     texture reference hTexRef, or returns CUDA_ERROR_INVALID_VALUE if the
 *     texture reference is not bound to any device memory range".
 * The alignment modelled is CU_DEVICE_ATTRIBUTE_TEXTURE_ALIGNMENT's usual
 * 512 bytes. Texture references live until the process ends here (the
 * driver's die with their module; no test reuses one after an unload).
 */
#include "fake_internal.h"

#include <stdlib.h>
#include <string.h>

#define FK_TEXTURE_ALIGNMENT 512u

struct fk_texref {
    const void *module;
    char name[64];
    uint64_t address, bytes; /* address 0: unbound */
    struct fk_texref *next;
};

static pthread_mutex_t texref_lock = PTHREAD_MUTEX_INITIALIZER;
static struct fk_texref *texrefs;

FK_EXPORT CUresult cuModuleGetTexRef(CUtexref *pTexRef, CUmodule hmod, const char *name)
{
    FK_ENTER("cuModuleGetTexRef");
    if (pTexRef == NULL || hmod == NULL || name == NULL || strlen(name) >= 64)
        return CUDA_ERROR_INVALID_VALUE;
    pthread_mutex_lock(&texref_lock);
    struct fk_texref *t = texrefs;
    while (t && (t->module != hmod || strcmp(t->name, name) != 0))
        t = t->next;
    if (t == NULL && (t = calloc(1, sizeof *t)) != NULL) {
        t->module = hmod;
        strcpy(t->name, name);
        t->next = texrefs;
        texrefs = t;
    }
    pthread_mutex_unlock(&texref_lock);
    if (t == NULL)
        return CUDA_ERROR_OUT_OF_MEMORY;
    *pTexRef = (CUtexref)t;
    return CUDA_SUCCESS;
}

static CUresult bind(CUtexref ref, uint64_t address, uint64_t bytes)
{
    if (ref == NULL)
        return CUDA_ERROR_INVALID_VALUE;
    if (bytes == 0 || !fk_device_range(address, bytes))
        return CUDA_ERROR_INVALID_VALUE;
    struct fk_texref *t = (struct fk_texref *)ref;
    pthread_mutex_lock(&texref_lock);
    t->address = address;
    t->bytes = bytes;
    pthread_mutex_unlock(&texref_lock);
    return CUDA_SUCCESS;
}

FK_EXPORT CUresult cuTexRefSetAddress_v2(size_t *ByteOffset, CUtexref hTexRef,
                                         CUdeviceptr dptr, size_t bytes)
{
    FK_ENTER("cuTexRefSetAddress_v2");
    size_t offset = dptr % FK_TEXTURE_ALIGNMENT;
    if (offset != 0 && ByteOffset == NULL)
        return CUDA_ERROR_INVALID_VALUE;
    CUresult rc = bind(hTexRef, dptr - offset, bytes + offset);
    if (rc == CUDA_SUCCESS && ByteOffset)
        *ByteOffset = offset;
    return rc;
}

FK_EXPORT CUresult cuTexRefSetAddress2D_v3(CUtexref hTexRef, const CUDA_ARRAY_DESCRIPTOR *desc,
                                           CUdeviceptr dptr, size_t Pitch)
{
    FK_ENTER("cuTexRefSetAddress2D_v3");
    if (desc == NULL || desc->Width == 0 || desc->Height == 0 || desc->NumChannels == 0 ||
        fk_format_bytes(desc->Format) == 0 ||
        Pitch < desc->Width * desc->NumChannels * fk_format_bytes(desc->Format))
        return CUDA_ERROR_INVALID_VALUE;
    return bind(hTexRef, dptr, (uint64_t)Pitch * desc->Height);
}

FK_EXPORT CUresult cuTexRefGetAddress_v2(CUdeviceptr *pdptr, CUtexref hTexRef)
{
    FK_ENTER("cuTexRefGetAddress_v2");
    if (pdptr == NULL || hTexRef == NULL)
        return CUDA_ERROR_INVALID_VALUE;
    struct fk_texref *t = (struct fk_texref *)hTexRef;
    pthread_mutex_lock(&texref_lock);
    uint64_t a = t->address;
    pthread_mutex_unlock(&texref_lock);
    if (a == 0)
        return CUDA_ERROR_INVALID_VALUE;
    *pdptr = a;
    return CUDA_SUCCESS;
}

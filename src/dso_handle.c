/*
 * dso_handle.c: the one thing the C start files gave the library that it
 * still needs.
 *
 * libvramshim is linked with -nostartfiles (Makefile.am) so that nothing of
 * it runs when the loader maps it into a process that never calls CUDA:
 * the start files' _init and frame_dummy would page in the library's text
 * (64 KB of resident set through the kernel's fault-around) in every shell
 * command that inherits LD_PRELOAD. What the start files defined and the
 * library uses is __dso_handle, the key atexit and pthread_atfork file
 * their handlers under; the rest (transactional-memory clone tables, frame
 * registration that PT_GNU_EH_FRAME makes unnecessary, the _init/_fini
 * frames) is unused here. What crtbegin's destructor did at a dlclose, give
 * back the handlers filed under __dso_handle, nothing does now: the library
 * is linked -z nodelete, so a dlclose leaves it mapped and the handlers
 * stay valid.
 */
__attribute__((visibility("hidden"))) void *__dso_handle = &__dso_handle;

/*
 * empty_preload.c: a preloadable library with one function and nothing
 * else, for bench_scale's start-up table: what any LD_PRELOAD costs a
 * process on this machine (the loader finds, maps and relocates one more
 * object), the floor under vramshim's own start-up figures.
 */
void vramshim_bench_empty_preload(void);
void vramshim_bench_empty_preload(void) {}

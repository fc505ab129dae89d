/*
 * test_overhead: device memory held beyond allocations (overhead.c) and
 * its charge in the budget. Items add and give back per handle, never
 * below zero; a context takes its modules with it but not libraries;
 * within the limit an item is refused whole and leaves nothing behind,
 * past it (contexts) it is charged all the same; the slice's free figure
 * and vramshim_check's expected charge count it; a reset forgets it all.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <string.h>

#include "fixture.h"

#define M (1ULL << 20)

static void with_limit(const char *limit)
{
    fixture_reset();
    vs_limits_init(&vs_state.cfg, vs_state.ram_bytes);
    char why[256];
    assert_int_equal(vs_limits_set("vram_limit", limit, why, sizeof why), 0);
    vs_budget_reset();
    vs_overhead_reset();
}

static uint64_t charged(int dev)
{
    struct vs_budget_view v;
    vs_budget_device_view(dev, &v);
    return v.charged;
}

static void add_and_give_back(void **state)
{
    (void)state;
    with_limit("256M");
    assert_true(vs_overhead_add(VS_OVERHEAD_CONTEXT, 0x100, 0, 0, 24 * M, false));
    assert_true(vs_overhead_add(VS_OVERHEAD_CONTEXT, 0x100, 0, 0, 8 * M, true));
    assert_int_equal(vs_overhead_device(0), 32 * M);
    assert_int_equal(charged(0), 32 * M);
    /* a lowered runtime limit gives back, never below zero */
    assert_true(vs_overhead_add(VS_OVERHEAD_CONTEXT, 0x100, 0, 0, -(int64_t)(40 * M), false));
    assert_int_equal(vs_overhead_device(0), 0);
    assert_int_equal(charged(0), 0);
    /* a handle in another space is another item */
    assert_true(vs_overhead_add(VS_OVERHEAD_MODULE, 0x100, 1, 0x200, 2 * M, true));
    assert_int_equal(vs_overhead_drop(VS_OVERHEAD_CONTEXT, 0x100), 0);
    assert_int_equal(vs_overhead_device(1), 2 * M);
    assert_int_equal(vs_overhead_drop(VS_OVERHEAD_MODULE, 0x100), 2 * M);
    assert_int_equal(charged(1), 0);
    assert_int_equal(vs_overhead_drop(VS_OVERHEAD_MODULE, 0x100), 0); /* twice: nothing */
}

static void context_takes_its_modules(void **state)
{
    (void)state;
    with_limit("256M");
    vs_overhead_add(VS_OVERHEAD_CONTEXT, 0xc1, 0, 0, 16 * M, false);
    vs_overhead_add(VS_OVERHEAD_CONTEXT, 0xc2, 0, 0, 16 * M, false);
    vs_overhead_add(VS_OVERHEAD_MODULE, 0xa, 0, 0xc1, 4 * M, true);
    vs_overhead_add(VS_OVERHEAD_MODULE, 0xb, 0, 0xc2, 2 * M, true);
    vs_overhead_add(VS_OVERHEAD_LIBRARY, 0xc, 0, 0xc1, 1 * M, true);
    assert_int_equal(vs_overhead_device(0), 39 * M);
    assert_int_equal(vs_overhead_drop(VS_OVERHEAD_CONTEXT, 0xc1), 20 * M);
    assert_int_equal(vs_overhead_device(0), 19 * M);
    assert_int_equal(charged(0), 19 * M);
    assert_int_equal(vs_overhead_drop(VS_OVERHEAD_MODULE, 0xa), 0); /* went with it */
    assert_int_equal(vs_overhead_drop(VS_OVERHEAD_LIBRARY, 0xc), 1 * M);
}

static void within_the_limit(void **state)
{
    (void)state;
    with_limit("64M");
    struct vs_charge c;
    assert_int_equal(vs_budget_charge_device(0, 0, 40 * M, &c), VS_ADMIT);
    vs_budget_settle(&c, true);
    /* a module that would pass the limit is refused and leaves nothing */
    assert_false(vs_overhead_add(VS_OVERHEAD_MODULE, 0xa, 0, 0xc1, 25 * M, true));
    assert_int_equal(vs_overhead_device(0), 0);
    assert_int_equal(vs_overhead_drop(VS_OVERHEAD_MODULE, 0xa), 0);
    assert_true(vs_overhead_add(VS_OVERHEAD_MODULE, 0xa, 0, 0xc1, 24 * M, true));
    /* the slice is full: no free memory, no allocation */
    uint64_t f, t;
    vs_budget_slice(0, 0, 1024 * M, 1024 * M, &f, &t);
    assert_int_equal(f, 0);
    assert_int_equal(t, 64 * M);
    assert_int_equal(vs_budget_charge_device(0, 0, 1, &c), VS_OVER_LIMIT);
    /* a context is charged past the limit all the same */
    assert_true(vs_overhead_add(VS_OVERHEAD_CONTEXT, 0xc1, 0, 0, 8 * M, false));
    assert_int_equal(charged(0), 72 * M);
    /* and vramshim_check expects it: the registry holds nothing, so the
     * budget's charge is the allocation's own plus the overhead */
    vs_budget_refund(&c);
    c = (struct vs_charge){.dev = 0, .owner = 0, .bytes = 40 * M};
    vs_budget_refund(&c);
    assert_int_equal(vs_core_check(), 0);
    vs_overhead_drop(VS_OVERHEAD_CONTEXT, 0xc1);
    assert_int_equal(charged(0), 0);
}

static void reset_forgets(void **state)
{
    (void)state;
    with_limit("64M");
    vs_overhead_add(VS_OVERHEAD_CONTEXT, 0xc1, 2, 0, 8 * M, false);
    vs_budget_reset();
    vs_overhead_reset();
    assert_int_equal(vs_overhead_device(2), 0);
    assert_int_equal(vs_overhead_drop(VS_OVERHEAD_CONTEXT, 0xc1), 0);
    assert_int_equal(charged(2), 0);
    /* bad devices are ignored */
    assert_true(vs_overhead_add(VS_OVERHEAD_CONTEXT, 0xc1, -1, 0, 8 * M, true));
    assert_true(vs_overhead_add(VS_OVERHEAD_CONTEXT, 0xc1, VS_MAX_DEVICES, 0, 8 * M, true));
    assert_int_equal(vs_overhead_drop(VS_OVERHEAD_CONTEXT, 0xc1), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(add_and_give_back),
        cmocka_unit_test(context_takes_its_modules),
        cmocka_unit_test(within_the_limit),
        cmocka_unit_test(reset_forgets),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

/*
 * test_limits: limits.c, the settings as they stand: changed at run time
 * by key and value, a bad value changing nothing, percentages resolved
 * only once the device's size is known, per-device limits over the
 * all-devices one, owner limits by name, and the generation the budget
 * watches.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <errno.h>
#include <string.h>

#include "fixture.h"

#define M (1ULL << 20)
#define G (1ULL << 30)

static int setup(void **state)
{
    (void)state;
    fixture_reset();
    return 0;
}

static void no_limit_by_default(void **state)
{
    (void)state;
    uint64_t limit, reserve;
    bool exact;
    vs_limits_for_device(0, 80 * G, &limit, &reserve, &exact);
    assert_true(exact);
    assert_int_equal(limit, VS_NO_LIMIT);
    assert_int_equal(reserve, 0);
    assert_int_equal(vs_limits_for_owner("anyone"), VS_NO_LIMIT);
    assert_int_equal(vs_limits_changes(), 0);
}

static void set_and_read_back(void **state)
{
    (void)state;
    char why[256];
    uint32_t gen = atomic_load(&vs_limits_gen);
    assert_int_equal(vs_limits_set("vram_limit", "0:8G,1:50%", why, sizeof why), 0);
    assert_true(atomic_load(&vs_limits_gen) != gen);
    assert_int_equal(vs_limits_changes(), 1);
    uint64_t limit, reserve;
    bool exact;
    vs_limits_for_device(0, 80 * G, &limit, &reserve, &exact);
    assert_int_equal(limit, 8 * G);
    vs_limits_for_device(1, 0, &limit, &reserve, &exact); /* size not known yet */
    assert_false(exact);
    vs_limits_for_device(1, 80 * G, &limit, &reserve, &exact);
    assert_true(exact);
    assert_int_equal(limit, 40 * G);
    vs_limits_for_device(2, 80 * G, &limit, &reserve, &exact);
    assert_int_equal(limit, VS_NO_LIMIT);

    assert_int_equal(vs_limits_set("reserve_vram", "1G", why, sizeof why), 0);
    vs_limits_for_device(0, 80 * G, &limit, &reserve, &exact);
    assert_int_equal(reserve, 1 * G);
    assert_int_equal(vs_limits_set("owner_limit", "vae=512M,unet=6G", why, sizeof why), 0);
    assert_int_equal(vs_limits_for_owner("vae"), 512 * M);
    assert_int_equal(vs_limits_for_owner("unet"), 6 * G);
    assert_int_equal(vs_limits_set("offload", "pinned", why, sizeof why), 0);
    assert_int_equal(vs_limits_offload(), VS_OFFLOAD_PINNED);
    assert_int_equal(vs_limits_set("idle_ms", "250", why, sizeof why), 0);
    assert_int_equal(vs_limits_idle_ms(), 250);
    assert_int_equal(vs_limits_set("pin_limit", "2G", why, sizeof why), 0);
    assert_int_equal(vs_limits_pin(), 2 * G);
    assert_int_equal(vs_limits_set("pin_limit", "default", why, sizeof why), 0);
    assert_int_equal(vs_limits_pin(), vs_default_pin_limit(vs_state.ram_bytes));
    assert_int_equal(vs_limits_set("vram_limit", "none", why, sizeof why), 0);
    vs_limits_for_device(0, 80 * G, &limit, &reserve, &exact);
    assert_int_equal(limit, VS_NO_LIMIT);

    struct vs_config cfg;
    vs_limits_config(&cfg);
    assert_int_equal(cfg.idle_ms, 250);
    assert_int_equal(cfg.offload, VS_OFFLOAD_PINNED);
}

static void bad_input_changes_nothing(void **state)
{
    (void)state;
    char why[256];
    assert_int_equal(vs_limits_set("vram_limit", "4G", why, sizeof why), 0);
    uint32_t gen = atomic_load(&vs_limits_gen);
    const char *bad[][2] = {{"vram_limit", "lots"}, {"vram_limit", "-1G"},
                            {"reserve_vram", ""},    {"offload", "sometimes"},
                            {"idle_ms", "-5"},       {"no_such_key", "1"},
                            {"owner_limit", "=3G"},  {"pin_limit", "12X"}};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        why[0] = '\0';
        assert_int_equal(vs_limits_set(bad[i][0], bad[i][1], why, sizeof why), -EINVAL);
        assert_true(why[0] != '\0'); /* says what was expected */
    }
    assert_int_equal(vs_limits_set(NULL, "1", why, sizeof why), -EINVAL);
    assert_int_equal(vs_limits_set("idle_ms", NULL, NULL, 0), -EINVAL);
    assert_int_equal(atomic_load(&vs_limits_gen), gen);
    assert_int_equal(vs_limits_changes(), 1);
    uint64_t limit, reserve;
    bool exact;
    vs_limits_for_device(0, 80 * G, &limit, &reserve, &exact);
    assert_int_equal(limit, 4 * G);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup(no_limit_by_default, setup),
        cmocka_unit_test_setup(set_and_read_back, setup),
        cmocka_unit_test_setup(bad_input_changes_nothing, setup),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

/*
 * test_relief: the order in which peers are asked for room (relief.c):
 * peers of higher priority than ours are never asked (they sort last and
 * are marked not eligible); of the rest, one that gave lately is asked
 * after every other (hysteresis), then lower priority first, then the most
 * idle first. Checked against the rule written out, over random sets.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <stdlib.h>

#include "fixture.h"

static void fixed_cases(void **state)
{
    (void)state;
    struct vs_relief_peer p[] = {
        {.pid = 1, .priority = 0, .idle_ms = 10},
        {.pid = 2, .priority = 0, .idle_ms = 5000},
        {.pid = 3, .priority = 9, .idle_ms = 99999}, /* above ours */
        {.pid = 4, .priority = -2, .idle_ms = 1},
        {.pid = 5, .priority = -5, .idle_ms = 100000, .gave_lately = true},
    };
    vs_relief_order(p, 5, 3);
    const pid_t want[] = {4, 2, 1, 5, 3};
    for (int i = 0; i < 5; i++)
        assert_int_equal(p[i].pid, want[i]);
    assert_true(p[0].eligible && p[3].eligible);
    assert_false(p[4].eligible);
}

/* a must be asked before b */
static bool before(const struct vs_relief_peer *a, const struct vs_relief_peer *b, int32_t mine)
{
    bool ea = a->priority <= mine, eb = b->priority <= mine;
    if (ea != eb)
        return ea;
    if (a->gave_lately != b->gave_lately)
        return !a->gave_lately;
    if (a->priority != b->priority)
        return a->priority < b->priority;
    return a->idle_ms >= b->idle_ms;
}

static void random_sets(void **state)
{
    (void)state;
    uint64_t seed = 12345;
    for (int round = 0; round < 2000; round++) {
        struct vs_relief_peer p[VS_RELIEF_MAX_PEERS];
        seed = seed * 6364136223846793005ULL + 1442695040888963407ULL;
        int n = (int)(seed >> 58) + 1;
        int32_t mine = (int32_t)((seed >> 40) % 7) - 3;
        for (int i = 0; i < n; i++) {
            seed = seed * 6364136223846793005ULL + 1442695040888963407ULL;
            p[i] = (struct vs_relief_peer){.pid = i + 1,
                                           .priority = (int32_t)((seed >> 33) % 7) - 3,
                                           .idle_ms = (seed >> 20) % 4,
                                           .gave_lately = (seed >> 10) & 1};
        }
        vs_relief_order(p, n, mine);
        for (int i = 0; i + 1 < n; i++)
            assert_true(before(&p[i], &p[i + 1], mine));
        for (int i = 0; i < n; i++)
            assert_int_equal(p[i].eligible, p[i].priority <= mine);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(fixed_cases),
        cmocka_unit_test(random_sets),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

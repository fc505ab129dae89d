/*
 * test_admit: admit.c, the hooks' side of the budget, with the offload
 * layer stubbed (make-room, pin yielding, host pool) and the clock driven
 * by the test (the link wraps clock_gettime: FIXTURE_CLOCK). A refusal is
 * the driver's CUDA_ERROR_OUT_OF_MEMORY, counted, with one log line naming
 * the rule and the owners, at most one a second per rule, the next
 * counting those left out; before refusing, room is asked for, exactly the
 * shortfall.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <string.h>

#include "fixture.h"
#include "hooks.h"

#define M (1ULL << 20)
#define SEC 1000000000ULL

/* ---- the clock and the stubbed offload layer ------------------------------ */
static uint64_t clock_ns;
FIXTURE_CLOCK(clock_ns)

static struct vs_charge held; /* what make-room may move off the device */
static uint64_t asked_shortfall, yield_gives;
static int make_room_calls, fit_calls;

uint64_t vs_tier_make_room(int dev, int owner, uint64_t shortfall, uint64_t bytes)
{
    (void)dev;
    (void)owner;
    (void)bytes;
    make_room_calls++;
    asked_shortfall = shortfall;
    uint64_t moved = held.bytes;
    vs_budget_refund(&held);
    held.bytes = 0;
    return moved;
}

uint64_t vs_tier_yield_pins(uint64_t bytes)
{
    (void)bytes;
    struct vs_charge c = {.dev = -1, .bytes = yield_gives};
    vs_budget_refund(&c);
    uint64_t gave = yield_gives;
    yield_gives = 0;
    return gave;
}

void vs_hostpool_fit_budget(void) { fit_calls++; }

static int setup(void **state)
{
    (void)state;
    fixture_reset();
    assert_int_equal(vs_limits_set("vram_limit", "64M", NULL, 0), 0);
    assert_int_equal(vs_limits_set("pin_limit", "32M", NULL, 0), 0);
    clock_ns += 100 * SEC; /* past every earlier test's second */
    held.bytes = 0;
    asked_shortfall = yield_gives = 0;
    make_room_calls = fit_calls = 0;
    fixture_log_capture();
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    vs_log_set_fd(2);
    return 0;
}

static uint64_t ooms(void)
{
    static struct vs_snapshot snap;
    vs_registry_snapshot(&snap);
    return snap.events.oom_returned;
}

/* Within the limit: admitted, no room asked for, nothing logged. */
static void admitted(void **state)
{
    (void)state;
    struct vs_charge c;
    assert_int_equal(vs_admit_device("cuMemAlloc", 0, 64 * M, &c), CUDA_SUCCESS);
    vs_budget_settle(&c, true);
    assert_int_equal(c.bytes, 64 * M);
    assert_int_equal(make_room_calls, 0);
    assert_int_equal(fixture_log_lines(), 0);
}

/* Over the limit with nothing to move: the driver's error, counted, and
 * one line that names the rule, the limit and the owner holding memory. */
static void refused_with_one_line(void **state)
{
    (void)state;
    vs_owner_push("unet");
    struct vs_charge c, d;
    assert_int_equal(vs_admit_device("cuMemAlloc", 0, 48 * M, &c), CUDA_SUCCESS);
    vs_budget_settle(&c, true);
    vs_owner_pop();
    assert_int_equal(vs_admit_device("cuMemAlloc", 0, 32 * M, &d), CUDA_ERROR_OUT_OF_MEMORY);
    assert_int_equal(ooms(), 1);
    assert_int_equal(make_room_calls, 1);
    assert_int_equal(asked_shortfall, 16 * M); /* 48 + 32 - 64 */
    assert_int_equal(fixture_log_lines(), 1);
    assert_non_null(strstr(fixture_log(), "cuMemAlloc: 32.0M on device 0 refused"));
    assert_non_null(strstr(fixture_log(), "VRAM limit of 64.0M"));
    assert_non_null(strstr(fixture_log(), "unet 48.0M"));
    vs_budget_refund(&c);
}

/* Make-room that frees the shortfall turns the refusal into success. */
static void room_made(void **state)
{
    (void)state;
    struct vs_charge c;
    assert_int_equal(vs_admit_device("cuMemAlloc", 0, 48 * M, &held), CUDA_SUCCESS);
    vs_budget_settle(&held, true);
    assert_int_equal(vs_admit_device("cuMemAlloc", 0, 32 * M, &c), CUDA_SUCCESS);
    vs_budget_settle(&c, true);
    assert_int_equal(make_room_calls, 1);
    assert_int_equal(ooms(), 0);
    assert_int_equal(fixture_log_lines(), 0);
    vs_budget_refund(&c);
}

/* A program probing by allocating until it fails: one line a second per
 * rule, and the next line counts the ones left out. */
static void one_line_a_second(void **state)
{
    (void)state;
    struct vs_charge c;
    for (int i = 0; i < 5; i++) {
        assert_int_equal(vs_admit_device("cuMemAlloc", 0, 128 * M, &c),
                         CUDA_ERROR_OUT_OF_MEMORY);
        clock_ns += SEC / 10;
    }
    assert_int_equal(fixture_log_lines(), 1);
    assert_int_equal(ooms(), 5);
    /* another rule has its own second */
    assert_int_equal(vs_admit_pinned("cuMemHostAlloc", 64 * M, &c), CUDA_ERROR_OUT_OF_MEMORY);
    assert_int_equal(fixture_log_lines(), 2);
    assert_non_null(strstr(fixture_log(), "over the pin limit of 32.0M"));
    clock_ns += SEC; /* a second after the first line */
    assert_int_equal(vs_admit_device("cuMemAlloc", 0, 128 * M, &c), CUDA_ERROR_OUT_OF_MEMORY);
    assert_int_equal(fixture_log_lines(), 3);
    assert_non_null(strstr(fixture_log(), "[4 more refusals in the last second]"));
}

/* Pinned: vramshim's own pins yield first; the pool then fits the budget. */
static void pins_yield_first(void **state)
{
    (void)state;
    struct vs_charge mine, app;
    assert_int_equal(vs_admit_pinned("staging", 24 * M, &mine), CUDA_SUCCESS);
    vs_budget_settle(&mine, true);
    yield_gives = 24 * M;
    assert_int_equal(vs_admit_pinned("cuMemHostAlloc", 16 * M, &app), CUDA_SUCCESS);
    vs_budget_settle(&app, true);
    assert_int_equal(fit_calls, 2);
    assert_int_equal(ooms(), 0);
    vs_budget_refund(&app);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(admitted, setup, teardown),
        cmocka_unit_test_setup_teardown(refused_with_one_line, setup, teardown),
        cmocka_unit_test_setup_teardown(room_made, setup, teardown),
        cmocka_unit_test_setup_teardown(one_line_a_second, setup, teardown),
        cmocka_unit_test_setup_teardown(pins_yield_first, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

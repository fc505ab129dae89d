/*
 * test_owner: owner.c, who an allocation belongs to: names interned once,
 * the per-thread stack behind vramshim_owner_push/pop with its bounds, long
 * names truncated, and every owner past the table's size counted together
 * as "(other)".
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fixture.h"

static int setup(void **state)
{
    (void)state;
    fixture_reset();
    return 0;
}

static void intern_once(void **state)
{
    (void)state;
    assert_int_equal(vs_owner_current(), 0);
    assert_string_equal(vs_owner_name(0), "unit");
    int vae = vs_owner_intern("vae");
    assert_int_equal(vs_owner_intern("unet"), vae + 1);
    assert_int_equal(vs_owner_intern("vae"), vae);
    assert_int_equal(vs_owner_count(), 3);
    assert_string_equal(vs_owner_name(-1), "?");
    assert_string_equal(vs_owner_name(VS_MAX_OWNERS), "?");
}

static void stack_bounds(void **state)
{
    (void)state;
    assert_int_equal(vs_owner_pop(), -ENOENT);
    assert_int_equal(vs_owner_push(NULL), -EINVAL);
    assert_int_equal(vs_owner_push(""), -EINVAL);
    for (int i = 0; i < VRAMSHIM_OWNER_STACK_MAX; i++) {
        char name[16];
        snprintf(name, sizeof name, "layer%d", i);
        assert_int_equal(vs_owner_push(name), 0);
        assert_string_equal(vs_owner_name(vs_owner_current()), name);
    }
    assert_int_equal(vs_owner_push("one-too-many"), -EOVERFLOW);
    assert_string_equal(vs_owner_name(vs_owner_current()), "layer15");
    for (int i = VRAMSHIM_OWNER_STACK_MAX - 1; i >= 0; i--)
        assert_int_equal(vs_owner_pop(), 0);
    assert_int_equal(vs_owner_current(), 0);
    assert_int_equal(vs_owner_pop(), -ENOENT);
}

static void long_names_truncated(void **state)
{
    (void)state;
    char name[200];
    memset(name, 'x', sizeof name - 1);
    name[sizeof name - 1] = '\0';
    int id = vs_owner_intern(name);
    assert_int_equal(strlen(vs_owner_name(id)), VRAMSHIM_OWNER_NAME_MAX);
    /* the same long name finds the same owner */
    assert_int_equal(vs_owner_intern(name), id);
}

static void past_the_table(void **state)
{
    (void)state;
    fixture_log_capture();
    int last = -1;
    for (int i = 0; i < VS_MAX_OWNERS + 10; i++) {
        char name[16];
        snprintf(name, sizeof name, "o%d", i);
        last = vs_owner_intern(name);
    }
    assert_int_equal(last, VS_MAX_OWNERS - 1);
    assert_string_equal(vs_owner_name(last), "(other)");
    assert_int_equal(vs_owner_count(), VS_MAX_OWNERS);
    assert_int_equal(fixture_log_lines(), 1); /* said once, not per owner */
    vs_log_set_fd(2);
}

static void *other_thread(void *arg)
{
    (void)arg;
    /* a new thread starts with the process default, whatever others pushed */
    int *seen = malloc(sizeof *seen);
    *seen = vs_owner_current();
    vs_owner_push("worker");
    return seen;
}

static void stacks_per_thread(void **state)
{
    (void)state;
    assert_int_equal(vs_owner_push("main-side"), 0);
    pthread_t t;
    void *seen;
    pthread_create(&t, NULL, other_thread, NULL);
    pthread_join(t, &seen);
    assert_int_equal(*(int *)seen, 0);
    free(seen);
    assert_string_equal(vs_owner_name(vs_owner_current()), "main-side");
    vs_owner_pop();
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup(intern_once, setup),
        cmocka_unit_test_setup(stack_bounds, setup),
        cmocka_unit_test_setup(long_names_truncated, setup),
        cmocka_unit_test_setup(past_the_table, setup),
        cmocka_unit_test_setup(stacks_per_thread, setup),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

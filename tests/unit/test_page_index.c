/*
 * test_page_index: page_index.c against a plain model (an array indexed by
 * page) over a long random sequence of puts and drops that grows the table
 * the way tier.c does, on keys crowded enough that probe runs collide and
 * wrap around the end of the table; and the deletion's back-shift on runs
 * built to cross the end.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <stdlib.h>
#include <string.h>

#include "fixture.h"

static void grow(struct vs_page_index *ix, uint64_t more)
{
    if (vs_page_index_fits(ix, more))
        return;
    uint64_t slots = vs_page_index_slots_for(ix->used + more);
    struct vs_page_slot *fresh = calloc(slots, sizeof *fresh);
    assert_non_null(fresh);
    vs_page_index_adopt(ix, fresh, slots);
}

static void release(struct vs_page_index *ix)
{
    free(ix->slot);
    memset(ix, 0, sizeof *ix);
}

/* Values are the addresses of cells of this array: distinct, never NULL. */
static char owners[8];

static void empty_answers_nothing(void **state)
{
    (void)state;
    struct vs_page_index ix = {0};
    assert_null(vs_page_index_get(&ix, 5));
    vs_page_index_drop(&ix, 5, &owners[0]); /* no table: nothing happens */
    assert_false(vs_page_index_fits(&ix, 1));
    assert_false(vs_page_index_put(&ix, 5, &owners[0])); /* no room */
    grow(&ix, 1);
    assert_true(vs_page_index_put(&ix, 5, &owners[0]));
    assert_ptr_equal(vs_page_index_get(&ix, 5), &owners[0]);
    assert_null(vs_page_index_get(&ix, 4));
    assert_null(vs_page_index_get(&ix, UINT64_MAX - 1));
    release(&ix);
}

/* A page already mapped keeps its first value (two buffers sharing a page
 * under a granularity below 2 MiB); a drop names the value it drops. */
static void first_keeps_shared_page(void **state)
{
    (void)state;
    struct vs_page_index ix = {0};
    grow(&ix, 4);
    assert_true(vs_page_index_put(&ix, 9, &owners[0]));
    assert_true(vs_page_index_put(&ix, 9, &owners[1]));
    assert_ptr_equal(vs_page_index_get(&ix, 9), &owners[0]);
    assert_int_equal(ix.used, 1);
    vs_page_index_drop(&ix, 9, &owners[1]); /* not its value: stays */
    assert_ptr_equal(vs_page_index_get(&ix, 9), &owners[0]);
    vs_page_index_drop(&ix, 9, &owners[0]);
    assert_null(vs_page_index_get(&ix, 9));
    assert_int_equal(ix.used, 0);
    assert_true(vs_page_index_put(&ix, 9, &owners[1]));
    vs_page_index_clear(&ix);
    assert_null(vs_page_index_get(&ix, 9));
    assert_int_equal(ix.used, 0);
    release(&ix);
}

/* Keys whose home is the table's last slot fill it and wrap to the first
 * ones; a key whose home is slot 0 goes after them. Dropping each in turn
 * must leave every other one findable: the back-shift has to move entries
 * across the end, and must not move the one living at home. */
static void drop_shifts_across_the_end(void **state)
{
    (void)state;
    for (int victim = 0; victim < 5; victim++) {
        struct vs_page_index ix = {0};
        grow(&ix, 1);
        uint64_t keys[5];
        int n = 0;
        for (uint64_t p = 1; n < 4; p++) /* page 0 is never a key */
            if (vs_page_home(&ix, p) == ix.mask)
                keys[n++] = p;
        for (uint64_t p = 1; n < 5; p++)
            if (vs_page_home(&ix, p) == 0)
                keys[n++] = p;
        for (int i = 0; i < 5; i++)
            assert_true(vs_page_index_put(&ix, keys[i], &owners[i]));
        assert_int_equal(ix.slot[ix.mask].key, keys[0]);
        assert_int_equal(ix.slot[3].key, keys[4]); /* pushed past the wrapped run */
        vs_page_index_drop(&ix, keys[victim], &owners[victim]);
        for (int i = 0; i < 5; i++)
            if (i == victim)
                assert_null(vs_page_index_get(&ix, keys[i]));
            else
                assert_ptr_equal(vs_page_index_get(&ix, keys[i]), &owners[i]);
        assert_int_equal(ix.used, 4);
        release(&ix);
    }
}

/* The other side of the end: entries past it whose homes are too (home 0
 * after a run from slot mask - 1) must stay where they are when an entry
 * before the end is dropped. */
static void drop_keeps_entries_home_past_the_end(void **state)
{
    (void)state;
    struct vs_page_index ix = {0};
    grow(&ix, 1);
    uint64_t want[3] = {ix.mask - 1, ix.mask, 0}, keys[3];
    for (int i = 0; i < 3; i++)
        for (uint64_t p = 1;; p++)
            if (vs_page_home(&ix, p) == want[i]) {
                keys[i] = p;
                break;
            }
    for (int i = 0; i < 3; i++)
        assert_true(vs_page_index_put(&ix, keys[i], &owners[i]));
    vs_page_index_drop(&ix, keys[0], &owners[0]);
    assert_null(vs_page_index_get(&ix, keys[0]));
    assert_ptr_equal(vs_page_index_get(&ix, keys[1]), &owners[1]);
    assert_ptr_equal(vs_page_index_get(&ix, keys[2]), &owners[2]);
    assert_int_equal(ix.slot[0].key, keys[2]);
    release(&ix);
}

/* 10^5 random puts and drops on 3,000 pages (clustered: neighbouring pages,
 * as a buffer's are), growing as tier.c grows it; after every step the
 * touched page and a random one agree with the model, and every 1,000
 * steps all of them do and `used` counts the model's pages. */
static void matches_model(void **state)
{
    (void)state;
    enum { PAGES = 3000 };
    static const char *model[PAGES];
    memset(model, 0, sizeof model);
    uint64_t base = 0x7f0000000000ULL >> VS_PAGE_SHIFT, in_model = 0;
    uint64_t x = 0x9e3779b97f4a7c15ULL;
    struct vs_page_index ix = {0};
    for (int step = 0; step < 100000; step++) {
        x ^= x << 13, x ^= x >> 7, x ^= x << 17;
        uint64_t p = (x >> 8) % PAGES, run = 1 + (x >> 40) % 8;
        const char *val = &owners[(x >> 20) % 8];
        bool put = (x >> 50) % 3 != 0 || in_model > PAGES * 3 / 4;
        if (in_model > PAGES * 3 / 4)
            put = false;
        for (uint64_t k = p; k < p + run && k < PAGES; k++) {
            if (put) {
                grow(&ix, 1);
                assert_true(vs_page_index_put(&ix, base + k, (void *)val));
                if (model[k] == NULL) {
                    model[k] = val;
                    in_model++;
                }
            } else {
                vs_page_index_drop(&ix, base + k, model[k] ? model[k] : val);
                in_model -= model[k] != NULL;
                model[k] = NULL;
            }
            assert_ptr_equal(vs_page_index_get(&ix, base + k), model[k]);
        }
        uint64_t q = (x >> 30) % PAGES;
        assert_ptr_equal(vs_page_index_get(&ix, base + q), model[q]);
        if (step % 1000 == 0) {
            for (uint64_t k = 0; k < PAGES; k++)
                assert_ptr_equal(vs_page_index_get(&ix, base + k), model[k]);
            assert_int_equal(ix.used, in_model);
            assert_true(ix.used * 2 <= ix.mask + 1); /* at most half full */
        }
    }
    release(&ix);
}

/* Page 0 is the key that means an empty slot: putting it is refused and
 * changes nothing (no device memory lies in the first 2 MiB). */
static void page_zero_is_refused(void **state)
{
    (void)state;
    struct vs_page_index ix = {0};
    grow(&ix, 2);
    assert_true(vs_page_index_put(&ix, 1, &owners[1]));
    assert_false(vs_page_index_put(&ix, 0, &owners[0]));
    assert_null(vs_page_index_get(&ix, 0));
    assert_ptr_equal(vs_page_index_get(&ix, 1), &owners[1]);
    assert_int_equal(ix.used, 1);
    vs_page_index_drop(&ix, 0, &owners[0]);
    assert_int_equal(ix.used, 1);
    release(&ix);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(empty_answers_nothing),
        cmocka_unit_test(first_keeps_shared_page),
        cmocka_unit_test(drop_shifts_across_the_end),
        cmocka_unit_test(drop_keeps_entries_home_past_the_end),
        cmocka_unit_test(matches_model),
        cmocka_unit_test(page_zero_is_refused),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

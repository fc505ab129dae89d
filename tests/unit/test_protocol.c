/*
 * test_protocol: control-socket requests. Every request the tool sends
 * parses to what it means; everything else (malformed, oversized, nested,
 * duplicated, unknown, truncated at every byte) is refused with a reason.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fixture.h"

static int parse(const char *s, struct vs_request *req)
{
    char why[128] = "";
    int rc = vs_request_parse(s, strlen(s), req, why, sizeof why);
    if (rc != 0)
        assert_true(strlen(why) > 0);
    return rc;
}

static void good(void **state)
{
    (void)state;
    struct vs_request r;
    assert_int_equal(parse("{\"cmd\":\"hello\"}", &r), 0);
    assert_int_equal(r.cmd, VS_REQ_HELLO);
    assert_int_equal(parse(" { \"cmd\" : \"stats\" } \n", &r), 0);
    assert_int_equal(r.cmd, VS_REQ_STATS);
    assert_int_equal(parse("{\"cmd\":\"set\",\"key\":\"vram_limit\",\"value\":\"4G\"}", &r), 0);
    assert_int_equal(r.cmd, VS_REQ_SET);
    assert_string_equal(r.key, "vram_limit");
    assert_string_equal(r.value, "4G");
    assert_int_equal(parse("{\"value\":\"a\\\"b\\\\c\",\"key\":\"k\",\"cmd\":\"set\"}", &r), 0);
    assert_string_equal(r.value, "a\"b\\c");
    assert_int_equal(parse("{\"cmd\":\"evict\",\"owner\":\"unet\",\"bytes\":18446744073709551615}", &r), 0);
    assert_int_equal(r.cmd, VS_REQ_EVICT);
    assert_true(r.has_owner && r.has_bytes);
    assert_string_equal(r.owner, "unet");
    assert_true(r.bytes == UINT64_MAX);
    assert_int_equal(parse("{\"cmd\":\"evict\"}", &r), 0);
    assert_false(r.has_owner || r.has_bytes);
    assert_int_equal(parse("{\"cmd\":\"free\"}", &r), 0);
    assert_int_equal(r.cmd, VS_REQ_FREE);
    assert_int_equal(parse("{\"cmd\":\"share\",\"base\":140737488355328,"
                           "\"token\":18446744073709551615}", &r), 0);
    assert_int_equal(r.cmd, VS_REQ_SHARE);
    assert_true(r.base == 140737488355328ULL && r.token == UINT64_MAX);
    assert_int_equal(parse("{\"cmd\":\"peer\",\"uuid\":\"GPU-1\",\"priority\":-5}", &r), 0);
    assert_int_equal(r.cmd, VS_REQ_PEER);
    assert_string_equal(r.uuid, "GPU-1");
    assert_int_equal(r.priority, -5);
    assert_int_equal(parse("{\"cmd\":\"relieve\",\"uuid\":\"GPU-1\",\"priority\":1000,"
                           "\"bytes\":1048576}", &r), 0);
    assert_int_equal(r.cmd, VS_REQ_RELIEVE);
    assert_int_equal(r.priority, 1000);
    assert_true(r.bytes == 1048576);
}

/* The answers relief.c reads, strictly. */
static void relief_answers(void **state)
{
    (void)state;
    struct vs_relief_answer a;
    const char *probe = "{\"ok\":true,\"resident\":5,\"idle_ms\":7,\"priority\":-3}";
    assert_int_equal(vs_relief_answer_parse(probe, strlen(probe), &a), 0);
    assert_true(a.ok && a.resident == 5 && a.idle_ms == 7 && a.priority == -3);
    const char *gave = "{\"ok\":true,\"moved\":67108864}";
    assert_int_equal(vs_relief_answer_parse(gave, strlen(gave), &a), 0);
    assert_true(a.ok && a.moved == 67108864);
    const char *no = "{\"ok\":false,\"error\":\"priority 0 is below ours (5)\"}";
    assert_int_equal(vs_relief_answer_parse(no, strlen(no), &a), 0);
    assert_false(a.ok);
    assert_string_equal(a.error, "priority 0 is below ours (5)");
    const char *bad[] = {"", "{}", "{\"moved\":1}", "{\"ok\":true,\"moved\":-1}",
                         "{\"ok\":true,\"moved\":1,\"moved\":2}", "{\"ok\":true}x",
                         "{\"ok\":true,\"priority\":1001}", "{\"ok\":true,\"stats\":{}}",
                         "{\"ok\":true,\"priority\":1,\"priority\":1}"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        if (vs_relief_answer_parse(bad[i], strlen(bad[i]), &a) != -EINVAL)
            fail_msg("accepted: %s", bad[i]);
}

static void bad(void **state)
{
    (void)state;
    const char *bad[] = {
        "", " ", "{", "}", "[]", "null", "{}", "{\"cmd\":\"stats\"}x",
        "{\"cmd\":\"stats\",}", "{\"cmd\":\"stats\" \"key\":\"x\"}", "{\"cmd\":stats}",
        "{\"cmd\":\"reboot\"}", "{\"cmd\":\"stats\",\"cmd\":\"stats\"}",
        "{\"cmd\":\"stats\",\"extra\":\"1\"}", "{\"cmd\":{\"x\":1}}", "{\"cmd\":[\"stats\"]}",
        "{\"cmd\":\"set\",\"key\":\"vram_limit\"}", "{\"cmd\":\"set\",\"value\":\"4G\"}",
        "{\"cmd\":\"stats\",\"key\":\"a\",\"value\":\"b\"}", "{\"cmd\":\"stats\",\"bytes\":1}",
        "{\"cmd\":\"evict\",\"bytes\":-1}", "{\"cmd\":\"evict\",\"bytes\":18446744073709551616}",
        "{\"cmd\":\"evict\",\"bytes\":\"1\"}", "{\"cmd\":\"evict\",\"owner\":\"\"}",
        "{\"cmd\":\"set\",\"key\":\"k\",\"value\":\"\\u0041\"}",
        "{\"cmd\":\"set\",\"key\":\"k\",\"value\":\"a\nb\"}", "{\"cmd\":\"stats\"\0}",
        "{\"cmd\":\"share\",\"base\":1}", "{\"cmd\":\"share\",\"token\":1}",
        "{\"cmd\":\"share\",\"base\":-1,\"token\":1}", "{\"cmd\":\"evict\",\"base\":1}",
        "{\"cmd\":\"stats\",\"token\":1}",
        "{\"cmd\":\"peer\",\"uuid\":\"G\"}", "{\"cmd\":\"peer\",\"priority\":0}",
        "{\"cmd\":\"relieve\",\"uuid\":\"G\",\"priority\":0}",
        "{\"cmd\":\"peer\",\"uuid\":\"\",\"priority\":0}",
        "{\"cmd\":\"peer\",\"uuid\":\"G\",\"priority\":1001}",
        "{\"cmd\":\"peer\",\"uuid\":\"G\",\"priority\":-}",
        "{\"cmd\":\"stats\",\"uuid\":\"G\",\"priority\":0}",
        "{\"cmd\":\"relieve\",\"uuid\":\"G\",\"priority\":0,\"bytes\":1,\"owner\":\"x\"}",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        struct vs_request r;
        if (parse(bad[i], &r) != -EINVAL)
            fail_msg("accepted: %s", bad[i]);
    }
    /* a value longer than its field, and a request past the size limit */
    char big[VS_REQUEST_MAX + 64];
    snprintf(big, sizeof big, "{\"cmd\":\"set\",\"key\":\"k\",\"value\":\"%0300d\"}", 0);
    struct vs_request r;
    assert_int_equal(parse(big, &r), -EINVAL);
    memset(big, ' ', sizeof big - 1);
    big[sizeof big - 1] = '\0';
    memcpy(big, "{\"cmd\":\"stats\"}", 15);
    assert_int_equal(parse(big, &r), -EINVAL);
}

/* Every prefix of a good request is refused, reading no byte past it. */
static void truncated(void **state)
{
    (void)state;
    const char *full = "{\"cmd\":\"evict\",\"owner\":\"unet\",\"bytes\":1024}";
    for (size_t n = 0; n < strlen(full); n++) {
        char *copy = malloc(n ? n : 1);
        memcpy(copy, full, n);
        struct vs_request r;
        char why[64];
        assert_int_equal(vs_request_parse(copy, n, &r, why, sizeof why), -EINVAL);
        free(copy);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(good),
        cmocka_unit_test(bad),
        cmocka_unit_test(truncated),
        cmocka_unit_test(relief_answers),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

/*
 * test_stats: the stats document is valid JSON with every field of the
 * contract, its figures equal the registry's, names are escaped, and a short
 * buffer gets a NUL-terminated prefix and the full length back.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <errno.h>
#include <jansson.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "fixture.h"

static int setup(void **state)
{
    (void)state;
    fixture_reset();
    return 0;
}

static json_t *document(void)
{
    static char buf[1 << 16];
    int n = vs_stats_write_json(buf, sizeof buf, &vs_state.cfg);
    assert_true(n > 0 && n < (int)sizeof buf);
    assert_int_equal(strlen(buf), (size_t)n);
    json_error_t err;
    json_t *root = json_loads(buf, 0, &err);
    if (root == NULL)
        fail_msg("invalid JSON (%s): %s", err.text, buf);
    return root;
}

static void every_field(void **state)
{
    (void)state;
    json_t *root = document();
    const char *top[] = {"pid", "cmd", "uptime_s", "config", "devices", "pinned",
                         "owners", "counters"};
    for (size_t i = 0; i < sizeof top / sizeof top[0]; i++)
        assert_non_null(json_object_get(root, top[i]));
    const char *config[] = {"vram_limit", "reserve_vram", "pin_limit", "offload", "idle_ms"};
    for (size_t i = 0; i < 5; i++)
        assert_non_null(json_object_get(json_object_get(root, "config"), config[i]));
    const char *pinned[] = {"limit", "app", "offload", "staging"};
    for (size_t i = 0; i < 4; i++)
        assert_non_null(json_object_get(json_object_get(root, "pinned"), pinned[i]));
    const char *counters[] = {"allocs", "frees", "oom_returned", "evictions", "restores",
                              "bytes_evicted", "bytes_restored", "launches", "fast_copies",
                              "fast_copy_bytes", "fast_copy_ns", "prefaults",
                              "prefault_bytes", "prefault_ns"};
    for (size_t i = 0; i < sizeof counters / sizeof counters[0]; i++)
        assert_non_null(json_object_get(json_object_get(root, "counters"), counters[i]));
    assert_string_equal(json_string_value(json_object_get(json_object_get(root, "config"),
                                                          "offload")), "auto");
    /* the default pin limit of 16 GiB of RAM */
    assert_int_equal(json_integer_value(json_object_get(json_object_get(root, "pinned"),
                                                        "limit")),
                     vs_default_pin_limit(16ULL << 30));
    json_decref(root);
}

static void figures_follow_registry(void **state)
{
    (void)state;
    int vae = vs_owner_intern("vae");
    vs_registry_add(0x10000000, 1000, 0, VS_KIND_DEVICE, vae);
    vs_registry_add(0x20000000, 24, 1, VS_KIND_DEVICE, vae);
    vs_registry_add(0x30000000, 500, 1, VS_KIND_DEVICE, 0);
    vs_registry_add(0x40000000, 4096, -1, VS_KIND_HOST_REGISTERED, 0);
    vs_count_launch();
    vs_count_launch();
    json_t *root = document();
    json_t *devices = json_object_get(root, "devices");
    assert_int_equal(json_array_size(devices), 2);
    json_t *d1 = json_array_get(devices, 1);
    assert_int_equal(json_integer_value(json_object_get(d1, "index")), 1);
    assert_int_equal(json_integer_value(json_object_get(d1, "allocated")), 524);
    assert_int_equal(json_integer_value(json_object_get(d1, "resident")), 524);
    assert_true(json_is_null(json_object_get(d1, "vram_total"))); /* no driver here */
    json_t *owners = json_object_get(root, "owners");
    assert_int_equal(json_array_size(owners), 3);
    size_t i;
    json_t *o;
    int seen = 0;
    json_array_foreach(owners, i, o) {
        const char *name = json_string_value(json_object_get(o, "name"));
        int dev = (int)json_integer_value(json_object_get(o, "device"));
        json_int_t bytes = json_integer_value(json_object_get(o, "allocated"));
        if (strcmp(name, "vae") == 0 && dev == 0 && bytes == 1000) seen |= 1;
        if (strcmp(name, "vae") == 0 && dev == 1 && bytes == 24) seen |= 2;
        if (strcmp(name, "unit") == 0 && dev == 1 && bytes == 500) seen |= 4;
    }
    assert_int_equal(seen, 7);
    json_t *c = json_object_get(root, "counters");
    assert_int_equal(json_integer_value(json_object_get(c, "allocs")), 3);
    assert_int_equal(json_integer_value(json_object_get(c, "launches")), 2);
    assert_int_equal(json_integer_value(json_object_get(json_object_get(root, "pinned"),
                                                        "app")), 4096);
    json_decref(root);
}

/* Fast copies and prefaults: counted, in the document and the summary. */
static void fast_copies_counted(void **state)
{
    (void)state;
    vs_count_fast_copy(24ULL << 20, 2000000); /* 24 MiB in 2 ms */
    vs_count_fast_copy(8ULL << 20, 1000000);
    vs_count_prefault(1ULL << 30, 100000000);
    json_t *root = document();
    json_t *c = json_object_get(root, "counters");
    assert_int_equal(json_integer_value(json_object_get(c, "fast_copies")), 2);
    assert_int_equal(json_integer_value(json_object_get(c, "fast_copy_bytes")), 32 << 20);
    assert_int_equal(json_integer_value(json_object_get(c, "fast_copy_ns")), 3000000);
    assert_int_equal(json_integer_value(json_object_get(c, "prefaults")), 1);
    assert_int_equal(json_integer_value(json_object_get(c, "prefault_bytes")), 1 << 30);
    assert_int_equal(json_integer_value(json_object_get(c, "prefault_ns")), 100000000);
    json_decref(root);
    char path[] = "/tmp/vramshim-summary-XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    unlink(path);
    struct vs_config cfg;
    vs_config_defaults(&cfg);
    vs_stats_print_summary(fd, &cfg);
    char text[4096] = {0};
    assert_true(pread(fd, text, sizeof text - 1, 0) > 0);
    close(fd);
    /* 32 MiB in 3 ms: 11.2 GB/s; 1 GiB in 100 ms: 10.7 GB/s */
    assert_non_null(strstr(text, "loaded: 2 fast copies, 32.0M at 11.2 GB/s"));
    assert_non_null(strstr(text, "prefaulted before pinning: 1 ranges, 1.0G at 10.7 GB/s"));
}

static void names_are_escaped(void **state)
{
    (void)state;
    int odd = vs_owner_intern("a\"b\\c\n");
    vs_registry_add(0x50000000, 8, 0, VS_KIND_DEVICE, odd);
    json_t *root = document();
    json_t *o = json_array_get(json_object_get(root, "owners"), 0);
    assert_string_equal(json_string_value(json_object_get(o, "name")), "a\"b\\c\n");
    json_decref(root);
}

static void short_buffer(void **state)
{
    (void)state;
    char full[1 << 14], part[40];
    int n = vs_stats_write_json(full, sizeof full, &vs_state.cfg);
    int m = vs_stats_write_json(part, sizeof part, &vs_state.cfg);
    assert_true(n > (int)sizeof part);
    assert_true(m >= n - 2 && m <= n + 2); /* uptime may gain a digit */
    assert_int_equal(strlen(part), sizeof part - 1);
    assert_memory_equal(part, full, 20);
    assert_true(vs_stats_write_json(NULL, 0, &vs_state.cfg) > 0);
}

static void config_in_document(void **state)
{
    (void)state;
    vs_state.cfg.vram_limit_all = (struct vs_size_spec){.kind = VS_SIZE_BYTES, .bytes = 4096};
    vs_state.cfg.vram_limit_dev[1] = (struct vs_size_spec){.kind = VS_SIZE_BYTES, .bytes = 8192};
    vs_state.cfg.offload = VS_OFFLOAD_OFF;
    vs_registry_add(0x60000000, 8, 1, VS_KIND_DEVICE, 0);
    json_t *root = document();
    json_t *cfg = json_object_get(root, "config");
    json_t *lim = json_object_get(cfg, "vram_limit");
    assert_int_equal(json_array_size(lim), 2);
    assert_int_equal(json_integer_value(json_array_get(lim, 0)), 4096);
    assert_int_equal(json_integer_value(json_array_get(lim, 1)), 8192);
    assert_string_equal(json_string_value(json_object_get(cfg, "offload")), "off");
    json_decref(root);
}

/* A document that grows between passes, as stats do when owners or
 * devices appear while they are written: what comes back is only ever
 * bytes the writer wrote, and its length is the length it wrote. */
struct growing {
    int calls, size;
};

static int grow_writer(char *buf, size_t cap, void *arg)
{
    struct growing *g = arg;
    g->calls++;
    g->size = g->size * 2 + 1000; /* every pass needs more than the last */
    if (g->calls >= 4)
        g->size = 70000; /* then it settles */
    for (int i = 0; i < g->size && (size_t)i + 1 < cap; i++)
        buf[i] = 'a' + (char)(i % 26);
    if (cap > 0)
        buf[(size_t)g->size < cap ? (size_t)g->size : cap - 1] = '\0';
    return g->size;
}

static void built_by_the_pass_that_fits(void **state)
{
    struct growing g = {0, 40000};
    size_t len = 0;
    char *doc = vs_build_text(grow_writer, &g, &len);
    assert_non_null(doc);
    assert_int_equal(len, 70000);
    assert_int_equal(strlen(doc), len); /* no byte past what was written */
    for (size_t i = 0; i < len; i++)
        assert_int_equal(doc[i], 'a' + (char)(i % 26));
    free(doc);
}

static int failing_writer(char *buf, size_t cap, void *arg) { return -ENOMEM; }

static void a_failed_pass_is_an_error(void **state)
{
    size_t len = 12345;
    errno = 0;
    assert_null(vs_build_text(failing_writer, NULL, &len));
    assert_int_equal(errno, ENOMEM);
    assert_int_equal(len, 12345);
}

static void stats_document_whole(void **state)
{
    struct vs_config cfg;
    vs_config_defaults(&cfg);
    size_t len;
    char *doc = vs_stats_json_alloc(&cfg, &len);
    assert_non_null(doc);
    assert_int_equal(strlen(doc), len);
    json_t *root = json_loads(doc, 0, NULL);
    assert_non_null(root);
    assert_int_equal(json_integer_value(json_object_get(json_object_get(root, "counters"),
                                                        "share_refused")), 0);
    json_decref(root);
    free(doc);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup(every_field, setup),
        cmocka_unit_test_setup(figures_follow_registry, setup),
        cmocka_unit_test_setup(names_are_escaped, setup),
        cmocka_unit_test_setup(fast_copies_counted, setup),
        cmocka_unit_test_setup(short_buffer, setup),
        cmocka_unit_test_setup(config_in_document, setup),
        cmocka_unit_test_setup(built_by_the_pass_that_fits, setup),
        cmocka_unit_test_setup(a_failed_pass_is_an_error, setup),
        cmocka_unit_test_setup(stats_document_whole, setup),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

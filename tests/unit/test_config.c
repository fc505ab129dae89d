/*
 * test_config: every parser of config.c on good and bad input, and
 * vs_config_load: one warning naming the variable and value per bad value,
 * the default kept.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <stdio.h>
#include <string.h>

#include "fixture.h"

#define GiB (1ULL << 30)
#define MiB (1ULL << 20)

static void sizes_good(void **state)
{
    (void)state;
    struct { const char *in; uint64_t want; } cases[] = {
        {"0", 0}, {"4096", 4096}, {"1B", 1}, {"8G", 8 * GiB}, {"8g", 8 * GiB},
        {"512M", 512 * MiB}, {"512mb", 512 * MiB}, {"2K", 2048}, {"1T", 1ULL << 40},
        {"1.5G", 3 * GiB / 2}, {"8GiB", 8 * GiB}, {"8GB", 8 * GiB},
        {"17179869184T", 0}, /* overflow: checked below as bad */
    };
    for (size_t i = 0; i + 1 < sizeof cases / sizeof cases[0]; i++) {
        uint64_t got = 1;
        assert_int_equal(vs_parse_size(cases[i].in, &got), 0);
        assert_int_equal(got, cases[i].want);
    }
}

static void sizes_bad(void **state)
{
    (void)state;
    const char *bad[] = {"", "G", "-1", "8Q", "8 G", " 8G", "8G ", "1.5", "1.G",
                         "8GG", "0x10", "17179869184T", "99999999999999999999",
                         "8Gi", "8iB", "40%"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        uint64_t got = 12345;
        assert_int_not_equal(vs_parse_size(bad[i], &got), 0);
        assert_int_equal(got, 12345); /* untouched */
    }
    assert_int_not_equal(vs_parse_size(NULL, NULL), 0);
}

static void percent_and_size(void **state)
{
    (void)state;
    struct vs_size_spec s;
    assert_int_equal(vs_parse_size_or_percent("40%", &s), 0);
    assert_int_equal(s.kind, VS_SIZE_PERCENT);
    assert_true(s.percent == 40.0);
    assert_int_equal(vs_size_resolve(&s, 80 * GiB), 32 * GiB);
    assert_int_equal(vs_parse_size_or_percent("12.5%", &s), 0);
    assert_int_equal(vs_size_resolve(&s, 8 * GiB), 1 * GiB);
    assert_int_equal(vs_parse_size_or_percent("2G", &s), 0);
    assert_int_equal(s.kind, VS_SIZE_BYTES);
    assert_int_equal(vs_size_resolve(&s, 80 * GiB), 2 * GiB);
    const char *bad[] = {"%", "0%", "101%", "-5%", "abc%", "5%%", "1e2%", ""};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        assert_int_not_equal(vs_parse_size_or_percent(bad[i], &s), 0);
}

static void device_lists(void **state)
{
    (void)state;
    struct vs_size_spec all, per[VS_MAX_DEVICES];
    memset(per, 0, sizeof per);
    assert_int_equal(vs_parse_device_sizes("0:8G,1:12G", &all, per), 0);
    assert_int_equal(all.kind, VS_SIZE_NONE);
    assert_int_equal(per[0].bytes, 8 * GiB);
    assert_int_equal(per[1].bytes, 12 * GiB);
    assert_int_equal(per[2].kind, VS_SIZE_NONE);
    assert_int_equal(vs_parse_device_sizes("3:50%", &all, per), 0);
    assert_int_equal(per[3].kind, VS_SIZE_PERCENT);
    assert_int_equal(per[0].kind, VS_SIZE_NONE);
    assert_int_equal(vs_parse_device_sizes("8G", &all, per), 0);
    assert_int_equal(all.bytes, 8 * GiB);

    const char *bad[] = {"0:8G,0:4G", "0:", ":8G", "x:8G", "16:1G", "0:8G,",
                         ",0:8G", "0:8G,,1:4G", "0:8Q", "0=8G", "-1:1G"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        struct vs_size_spec keep = {.kind = VS_SIZE_BYTES, .bytes = 7};
        all = keep;
        assert_int_not_equal(vs_parse_device_sizes(bad[i], &all, per), 0);
        assert_int_equal(all.bytes, 7);
    }
}

static void owner_lists(void **state)
{
    (void)state;
    struct vs_owner_limit lim[VS_MAX_OWNER_LIMITS];
    int n = 0;
    assert_int_equal(vs_parse_owner_limits("unet=8G,vae=2G", lim, VS_MAX_OWNER_LIMITS, &n), 0);
    assert_int_equal(n, 2);
    assert_string_equal(lim[0].name, "unet");
    assert_int_equal(lim[0].bytes, 8 * GiB);
    assert_string_equal(lim[1].name, "vae");
    assert_int_equal(lim[1].bytes, 2 * GiB);
    const char *bad[] = {"unet", "unet=", "=8G", "unet=8G,unet=1G", "un et=1G",
                         "unet=8G,", "a=1G,,b=2G", "unet=8Q", "x\"y=1G"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        n = 99;
        assert_int_not_equal(vs_parse_owner_limits(bad[i], lim, VS_MAX_OWNER_LIMITS, &n), 0);
        assert_int_equal(n, 99);
    }
}

static void small_parsers(void **state)
{
    (void)state;
    enum vs_offload_mode m;
    assert_int_equal(vs_parse_offload("off", &m), 0);
    assert_int_equal(m, VS_OFFLOAD_OFF);
    assert_int_equal(vs_parse_offload("pinned", &m), 0);
    assert_int_equal(vs_parse_offload("auto", &m), 0);
    assert_int_equal(m, VS_OFFLOAD_AUTO);
    assert_int_not_equal(vs_parse_offload("AUTO ", &m), 0);
    assert_int_not_equal(vs_parse_offload("", &m), 0);
    enum vs_log_level l;
    assert_int_equal(vs_parse_log_level("DEBUG", &l), 0);
    assert_int_equal(l, VS_LOG_DEBUG);
    assert_int_not_equal(vs_parse_log_level("verbose", &l), 0);
    uint32_t u;
    assert_int_equal(vs_parse_uint32("250", 0, 1000, &u), 0);
    assert_int_equal(u, 250);
    assert_int_not_equal(vs_parse_uint32("1001", 0, 1000, &u), 0);
    assert_int_not_equal(vs_parse_uint32("-1", 0, 1000, &u), 0);
    assert_int_not_equal(vs_parse_uint32("99999999999999999999999", 0, 1000, &u), 0);
    bool b;
    assert_int_equal(vs_parse_bool("1", &b), 0);
    assert_true(b);
    assert_int_equal(vs_parse_bool("off", &b), 0);
    assert_false(b);
    assert_int_not_equal(vs_parse_bool("2", &b), 0);
}

static void pin_limit_formula(void **state)
{
    (void)state;
    /* max(40% RAM, min(90% RAM, RAM - 4G)) */
    assert_int_equal(vs_default_pin_limit(8 * GiB), 4 * GiB);          /* RAM - 4G */
    assert_int_equal(vs_default_pin_limit(64 * GiB), 64 * GiB / 10 * 9);
    assert_int_equal(vs_default_pin_limit(100 * GiB), 100 * GiB / 10 * 9);
    assert_int_equal(vs_default_pin_limit(2 * GiB), 2 * GiB / 10 * 4);
}

/* A fake environment for vs_config_load. */
static const char *env_names[16], *env_values[16];
static int env_n;
static const char *table_env(const char *name)
{
    for (int i = 0; i < env_n; i++)
        if (strcmp(env_names[i], name) == 0)
            return env_values[i];
    return NULL;
}
static void env_set(const char *name, const char *value)
{
    env_names[env_n] = name;
    env_values[env_n++] = value;
}

/* vs_config_load over the table with its log captured: its result and the
 * number of lines it logged must be these. */
static void load_logged(struct vs_config *cfg, int rc, int lines)
{
    fixture_log_capture();
    assert_int_equal(vs_config_load(cfg, table_env), rc);
    assert_int_equal(fixture_log_lines(), lines);
}

static void assert_defaults(const struct vs_config *cfg)
{
    struct vs_config dflt;
    vs_config_defaults(&dflt);
    assert_memory_equal(cfg, &dflt, sizeof *cfg);
}

/* A load with var=value alone set, a value it refuses: one line, and every
 * setting at its default. Returns the line. */
static const char *load_refusing(const char *var, const char *value)
{
    env_n = 0;
    env_set(var, value);
    struct vs_config cfg;
    load_logged(&cfg, 1, 1);
    assert_defaults(&cfg);
    return fixture_log();
}

static void load_good(void **state)
{
    (void)state;
    env_n = 0;
    env_set("VRAMSHIM_VRAM_LIMIT", "0:8G,1:40%");
    env_set("VRAMSHIM_RESERVE_VRAM", "1G");
    env_set("VRAMSHIM_PIN_LIMIT", "50%");
    env_set("VRAMSHIM_OFFLOAD", "pinned");
    env_set("VRAMSHIM_IDLE_MS", "250");
    env_set("VRAMSHIM_FENCE_MS", "40");
    env_set("VRAMSHIM_FREE_QUERY_MS", "0");
    env_set("VRAMSHIM_OWNER", "comfy");
    env_set("VRAMSHIM_OWNER_LIMIT", "unet=8G");
    env_set("VRAMSHIM_SOCKET_DIR", "/tmp/x");
    env_set("VRAMSHIM_DISABLE", "0");
    env_set("VRAMSHIM_FAST_COPY_MIN", "32M");
    env_set("VRAMSHIM_COPY_THREADS", "6");
    env_set("VRAMSHIM_STAGING", "128M");
    struct vs_config cfg;
    load_logged(&cfg, 0, 0);
    assert_int_equal(cfg.fast_copy_min, 32 * MiB);
    assert_int_equal(cfg.copy_threads, 6);
    assert_int_equal(cfg.staging_bytes, 128 * MiB);
    assert_int_equal(cfg.vram_limit_dev[0].bytes, 8 * GiB);
    assert_int_equal(cfg.vram_limit_dev[1].kind, VS_SIZE_PERCENT);
    assert_int_equal(cfg.reserve_vram.bytes, GiB);
    assert_int_equal(cfg.pin_limit.kind, VS_SIZE_PERCENT);
    assert_int_equal(cfg.offload, VS_OFFLOAD_PINNED);
    assert_int_equal(cfg.idle_ms, 250);
    assert_int_equal(cfg.fence_ms, 40);
    assert_int_equal(cfg.free_query_ms, 0);
    assert_string_equal(cfg.owner, "comfy");
    assert_int_equal(cfg.n_owner_limits, 1);
    assert_string_equal(cfg.socket_dir, "/tmp/x");
    assert_false(cfg.disable);
}

/* The fast copy defaults, and 0 turning it off. */
static void relief_settings(void **state)
{
    (void)state;
    struct vs_config cfg;
    env_n = 0;
    assert_int_equal(vs_config_load(&cfg, table_env), 0);
    assert_int_equal(cfg.priority, 0);
    assert_int_equal(cfg.idle_release_ms, 0); /* off */
    assert_int_equal(cfg.relief_ms, 5000);
    env_set("VRAMSHIM_PRIORITY", "-1000");
    env_set("VRAMSHIM_IDLE_RELEASE", "10m");
    env_set("VRAMSHIM_RELIEF_MS", "250");
    assert_int_equal(vs_config_load(&cfg, table_env), 0);
    assert_int_equal(cfg.priority, -1000);
    assert_int_equal(cfg.idle_release_ms, 600000);
    assert_int_equal(cfg.relief_ms, 250);
    uint32_t ms;
    const struct {
        const char *text;
        uint32_t ms;
    } good[] = {{"off", 0}, {"OFF", 0}, {"500", 500}, {"500ms", 500}, {"30s", 30000},
                {"1h", 3600000}, {"24h", 86400000}, {"1440m", 86400000}};
    for (size_t i = 0; i < sizeof good / sizeof good[0]; i++) {
        assert_int_equal(vs_parse_duration_ms(good[i].text, &ms), 0);
        assert_int_equal(ms, good[i].ms);
    }
    const char *bad[] = {"", "0", "0s", "-1s", "1d", "s", "86400001", "1.5s", "99999999999999s"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        if (vs_parse_duration_ms(bad[i], &ms) == 0)
            fail_msg("accepted: %s", bad[i]);
    int32_t p;
    assert_int_equal(vs_parse_priority("7", &p), 0);
    assert_int_equal(p, 7);
    assert_int_not_equal(vs_parse_priority("-", &p), 0);
    assert_int_not_equal(vs_parse_priority("+1", &p), 0);
}

static void fast_copy_settings(void **state)
{
    (void)state;
    struct vs_config cfg;
    env_n = 0;
    assert_int_equal(vs_config_load(&cfg, table_env), 0);
    assert_int_equal(cfg.fast_copy_min, 8 * MiB);
    assert_int_equal(cfg.copy_threads, 0); /* the machine's default */
    assert_int_equal(cfg.staging_bytes, 64 * MiB);
    assert_int_equal(cfg.fence_ms, 5000);
    env_set("VRAMSHIM_FAST_COPY_MIN", "0");
    assert_int_equal(vs_config_load(&cfg, table_env), 0);
    assert_int_equal(cfg.fast_copy_min, 0);
}

/* Each bad value: exactly one line, naming the variable and the value, and
 * the setting at its default. */
static void load_bad_each(void **state)
{
    (void)state;
    struct { const char *var, *value; } bad[] = {
        {"VRAMSHIM_VRAM_LIMIT", "8Q"},     {"VRAMSHIM_RESERVE_VRAM", "lots"},
        {"VRAMSHIM_PIN_LIMIT", "150%"},    {"VRAMSHIM_OFFLOAD", "sometimes"},
        {"VRAMSHIM_IDLE_MS", "-5"},        {"VRAMSHIM_OWNER", "two words"},
        {"VRAMSHIM_OWNER_LIMIT", "unet:8G"}, {"VRAMSHIM_SOCKET_DIR", ""},
        {"VRAMSHIM_LOG", "loud"},          {"VRAMSHIM_LOG_FILE", ""},
        {"VRAMSHIM_DISABLE", "maybe"},     {"VRAMSHIM_FREE_QUERY_MS", "60001"},
        {"VRAMSHIM_FREE_QUERY_MS", "soon"}, {"VRAMSHIM_FAST_COPY_MIN", "big"},
        {"VRAMSHIM_COPY_THREADS", "0"},    {"VRAMSHIM_COPY_THREADS", "65"},
        {"VRAMSHIM_STAGING", "1M"},        {"VRAMSHIM_STAGING", "2G"},
        {"VRAMSHIM_FENCE_MS", "soon"},     {"VRAMSHIM_FENCE_MS", "86400001"},
        {"VRAMSHIM_PRIORITY", "high"},     {"VRAMSHIM_PRIORITY", "1001"},
        {"VRAMSHIM_PRIORITY", "--1"},      {"VRAMSHIM_IDLE_RELEASE", "soon"},
        {"VRAMSHIM_IDLE_RELEASE", "0"},    {"VRAMSHIM_IDLE_RELEASE", "25h"},
        {"VRAMSHIM_IDLE_RELEASE", "5 m"},  {"VRAMSHIM_RELIEF_MS", "99"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        const char *log = load_refusing(bad[i].var, bad[i].value);
        assert_non_null(strstr(log, bad[i].var));
        char quoted[128];
        snprintf(quoted, sizeof quoted, "\"%s\"", bad[i].value);
        assert_non_null(strstr(log, quoted));
        assert_non_null(strstr(log, "using the default"));
        vs_log_set_level(VS_LOG_WARN);
    }
}

/* HAMi's memory limits: the every-device form and the per-device form
 * (which wins for its device), in HAMi's own value syntax, silently. */
static void hami_limits(void **state)
{
    (void)state;
    env_n = 0;
    env_set("CUDA_DEVICE_MEMORY_LIMIT", "3000m");
    env_set("CUDA_DEVICE_MEMORY_LIMIT_1", "1048576k");
    env_set("CUDA_DEVICE_MEMORY_LIMIT_15", "1073741824");
    env_set("CUDA_DEVICE_MEMORY_LIMIT_16", "1g"); /* past the last device: not read */
    struct vs_config cfg;
    load_logged(&cfg, 0, 0);
    assert_int_equal(cfg.vram_limit_all.kind, VS_SIZE_BYTES);
    assert_int_equal(cfg.vram_limit_all.bytes, 3000 * MiB);
    assert_int_equal(cfg.vram_limit_dev[0].kind, VS_SIZE_NONE);
    assert_int_equal(cfg.vram_limit_dev[1].bytes, GiB);
    assert_int_equal(cfg.vram_limit_dev[15].bytes, GiB);

    env_n = 0; /* the per-device form alone */
    env_set("CUDA_DEVICE_MEMORY_LIMIT_0", "2G");
    assert_int_equal(vs_config_load(&cfg, table_env), 0);
    assert_int_equal(cfg.vram_limit_all.kind, VS_SIZE_NONE);
    assert_int_equal(cfg.vram_limit_dev[0].bytes, 2 * GiB);
    assert_int_equal(fixture_log_lines(), 0);
}

/* VRAMSHIM_VRAM_LIMIT wins over either HAMi form, with one line saying so;
 * a bad VRAMSHIM_VRAM_LIMIT still wins (its own line names the default). */
static void hami_conflict(void **state)
{
    (void)state;
    const char *hami[] = {"CUDA_DEVICE_MEMORY_LIMIT", "CUDA_DEVICE_MEMORY_LIMIT_3"};
    for (int i = 0; i < 2; i++) {
        env_n = 0;
        env_set("VRAMSHIM_VRAM_LIMIT", "4G");
        env_set(hami[i], "1g");
        struct vs_config cfg;
        load_logged(&cfg, 0, 1);
        assert_non_null(strstr(fixture_log(), "VRAMSHIM_VRAM_LIMIT is set and wins"));
        assert_non_null(strstr(fixture_log(), "CUDA_DEVICE_MEMORY_LIMIT"));
        assert_int_equal(cfg.vram_limit_all.bytes, 4 * GiB);
        assert_int_equal(cfg.vram_limit_dev[3].kind, VS_SIZE_NONE);
    }
    env_n = 0;
    env_set("VRAMSHIM_VRAM_LIMIT", "4Q");
    env_set("CUDA_DEVICE_MEMORY_LIMIT", "1g");
    struct vs_config cfg;
    load_logged(&cfg, 1, 2);
    assert_defaults(&cfg);
}

/* A bad HAMi value: one line naming it, and no limit from it. */
static void hami_bad(void **state)
{
    (void)state;
    struct { const char *var, *value; } bad[] = {
        {"CUDA_DEVICE_MEMORY_LIMIT", "1q"},   {"CUDA_DEVICE_MEMORY_LIMIT", "0"},
        {"CUDA_DEVICE_MEMORY_LIMIT", ""},     {"CUDA_DEVICE_MEMORY_LIMIT", "40%"},
        {"CUDA_DEVICE_MEMORY_LIMIT_2", "-1"}, {"CUDA_DEVICE_MEMORY_LIMIT_0", "1g "},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        const char *log = load_refusing(bad[i].var, bad[i].value);
        char quoted[128];
        snprintf(quoted, sizeof quoted, "%s=\"%s\"", bad[i].var, bad[i].value);
        assert_non_null(strstr(log, quoted));
    }
    /* one bad form leaves the other in force */
    env_n = 0;
    env_set("CUDA_DEVICE_MEMORY_LIMIT", "lots");
    env_set("CUDA_DEVICE_MEMORY_LIMIT_1", "2g");
    struct vs_config cfg;
    load_logged(&cfg, 1, 1);
    assert_int_equal(cfg.vram_limit_all.kind, VS_SIZE_NONE);
    assert_int_equal(cfg.vram_limit_dev[1].bytes, 2 * GiB);
}

/* HAMi settings vramshim does not enforce: one line naming every one set,
 * nothing changed; an SM limit that asks for nothing is not mentioned. */
static void hami_unenforced(void **state)
{
    (void)state;
    env_n = 0;
    env_set("CUDA_DEVICE_SM_LIMIT", "50");
    env_set("CUDA_DEVICE_SM_LIMIT_1", "30");
    env_set("GPU_CORE_UTILIZATION_POLICY", "force");
    env_set("CUDA_OVERSUBSCRIBE", "true");
    struct vs_config cfg;
    load_logged(&cfg, 0, 1);
    const char *log = fixture_log();
    assert_non_null(strstr(log, "does not enforce"));
    assert_non_null(strstr(log, "CUDA_DEVICE_SM_LIMIT=\"50\""));
    assert_non_null(strstr(log, "CUDA_DEVICE_SM_LIMIT_1=\"30\""));
    assert_non_null(strstr(log, "GPU_CORE_UTILIZATION_POLICY=\"force\""));
    assert_non_null(strstr(log, "CUDA_OVERSUBSCRIBE=\"true\""));
    assert_defaults(&cfg);

    env_n = 0;
    env_set("CUDA_DEVICE_SM_LIMIT", "100");
    env_set("CUDA_DEVICE_SM_LIMIT_0", "0");
    load_logged(&cfg, 0, 0);
}

int main(void)
{
    fixture_reset();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(sizes_good),       cmocka_unit_test(sizes_bad),
        cmocka_unit_test(percent_and_size), cmocka_unit_test(device_lists),
        cmocka_unit_test(owner_lists),      cmocka_unit_test(small_parsers),
        cmocka_unit_test(pin_limit_formula), cmocka_unit_test(load_good),
        cmocka_unit_test(load_bad_each),    cmocka_unit_test(hami_limits),
        cmocka_unit_test(hami_conflict),    cmocka_unit_test(hami_bad),
        cmocka_unit_test(hami_unenforced),  cmocka_unit_test(fast_copy_settings),
        cmocka_unit_test(relief_settings),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

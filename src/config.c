/*
 * config.c: the VRAMSHIM_* environment, read once at start.
 *
 * Each variable has a parser that either accepts the whole value or rejects
 * it; a rejected value produces exactly one warning that names the variable,
 * the value and what was expected, and the setting keeps its default. Nothing
 * here runs after initialisation, so nothing here is on a hot path. HAMi's
 * settings are read too (see load_hami), so a HAMi cluster's containers
 * keep their memory slices under vramshim.
 */
#include "core.h"

#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* A number (integer or decimal) with an optional binary suffix. Strict:
 * "8G", "512m", "1.5G", "4096", "8GB", "8GiB" pass; "", "-1", "8Q", "8 G",
 * "G" and anything past 2^64 fail. */
int vs_parse_size(const char *s, uint64_t *out)
{
    if (s == NULL || !isdigit((unsigned char)s[0]))
        return -EINVAL;
    const char *p = s;
    uint64_t whole = 0;
    while (isdigit((unsigned char)*p)) {
        unsigned d = (unsigned)(*p - '0');
        if (whole > (UINT64_MAX - d) / 10)
            return -EINVAL;
        whole = whole * 10 + d;
        p++;
    }
    double frac = 0.0, scale = 0.1;
    bool has_frac = false;
    if (*p == '.') {
        p++;
        if (!isdigit((unsigned char)*p))
            return -EINVAL;
        while (isdigit((unsigned char)*p)) {
            frac += (*p - '0') * scale;
            scale /= 10;
            p++;
            has_frac = true;
        }
    }
    unsigned shift = 0;
    switch (toupper((unsigned char)*p)) {
    case 'B': shift = 0; p++; break;
    case 'K': shift = 10; p++; break;
    case 'M': shift = 20; p++; break;
    case 'G': shift = 30; p++; break;
    case 'T': shift = 40; p++; break;
    case '\0': break;
    default: return -EINVAL;
    }
    if (shift > 0) {
        if (strcasecmp(p, "iB") == 0)
            p += 2;
        else if (toupper((unsigned char)*p) == 'B')
            p++;
    }
    if (*p != '\0')
        return -EINVAL;
    if (shift > 0 && whole > (UINT64_MAX >> shift))
        return -EINVAL;
    uint64_t bytes = whole << shift;
    if (has_frac) {
        if (shift == 0)
            return -EINVAL; /* a fraction of a byte */
        double extra = frac * (double)(1ULL << shift);
        if ((double)(UINT64_MAX - bytes) < extra)
            return -EINVAL;
        bytes += (uint64_t)extra;
    }
    *out = bytes;
    return 0;
}

int vs_parse_size_or_percent(const char *s, struct vs_size_spec *out)
{
    if (s == NULL || *s == '\0')
        return -EINVAL;
    size_t n = strlen(s);
    if (s[n - 1] == '%') {
        char num[32];
        if (n - 1 == 0 || n - 1 >= sizeof num)
            return -EINVAL;
        memcpy(num, s, n - 1);
        num[n - 1] = '\0';
        for (size_t i = 0; i < n - 1; i++)
            if (!isdigit((unsigned char)num[i]) && num[i] != '.')
                return -EINVAL;
        char *end;
        double pct = strtod(num, &end);
        if (*end != '\0' || !(pct > 0.0) || pct > 100.0 || isnan(pct))
            return -EINVAL;
        out->kind = VS_SIZE_PERCENT;
        out->percent = pct;
        out->bytes = 0;
        return 0;
    }
    uint64_t bytes;
    if (vs_parse_size(s, &bytes) != 0)
        return -EINVAL;
    out->kind = VS_SIZE_BYTES;
    out->bytes = bytes;
    out->percent = 0;
    return 0;
}

/* "8G" or "40%" for every device, or "0:8G,1:12G" per device. The whole
 * value is checked before anything is written. */
int vs_parse_device_sizes(const char *s, struct vs_size_spec *all,
                          struct vs_size_spec per_dev[VS_MAX_DEVICES])
{
    if (s == NULL || *s == '\0')
        return -EINVAL;
    if (strchr(s, ':') == NULL) {
        struct vs_size_spec one;
        if (vs_parse_size_or_percent(s, &one) != 0)
            return -EINVAL;
        *all = one;
        for (int i = 0; i < VS_MAX_DEVICES; i++)
            per_dev[i].kind = VS_SIZE_NONE;
        return 0;
    }
    struct vs_size_spec tmp[VS_MAX_DEVICES];
    memset(tmp, 0, sizeof tmp);
    char buf[512];
    if (strlen(s) >= sizeof buf)
        return -EINVAL;
    strcpy(buf, s);
    char *save = NULL;
    for (char *item = strtok_r(buf, ",", &save); item;
         item = strtok_r(NULL, ",", &save)) {
        char *colon = strchr(item, ':');
        if (colon == NULL || colon == item)
            return -EINVAL;
        *colon = '\0';
        uint32_t dev;
        if (vs_parse_uint32(item, 0, VS_MAX_DEVICES - 1, &dev) != 0)
            return -EINVAL;
        if (tmp[dev].kind != VS_SIZE_NONE)
            return -EINVAL; /* the same device twice */
        if (vs_parse_size_or_percent(colon + 1, &tmp[dev]) != 0)
            return -EINVAL;
    }
    /* strtok_r skips empty items; "0:8G,,1:4G" or a trailing comma is a typo */
    if (strstr(s, ",,") || s[0] == ',' || s[strlen(s) - 1] == ',')
        return -EINVAL;
    all->kind = VS_SIZE_NONE;
    memcpy(per_dev, tmp, sizeof tmp);
    return 0;
}

static bool owner_name_ok(const char *name)
{
    size_t n = strlen(name);
    if (n == 0 || n > VRAMSHIM_OWNER_NAME_MAX)
        return false;
    for (size_t i = 0; i < n; i++)
        if (!isgraph((unsigned char)name[i]) || name[i] == '"' ||
            name[i] == '\\')
            return false;
    return true;
}

int vs_parse_owner_limits(const char *s, struct vs_owner_limit *out, int max,
                          int *n_out)
{
    if (s == NULL || *s == '\0')
        return -EINVAL;
    char buf[2048];
    if (strlen(s) >= sizeof buf || strstr(s, ",,") || s[0] == ',' ||
        s[strlen(s) - 1] == ',')
        return -EINVAL;
    strcpy(buf, s);
    struct vs_owner_limit tmp[VS_MAX_OWNER_LIMITS];
    int n = 0;
    char *save = NULL;
    for (char *item = strtok_r(buf, ",", &save); item;
         item = strtok_r(NULL, ",", &save)) {
        char *eq = strchr(item, '=');
        if (eq == NULL || n >= max || n >= VS_MAX_OWNER_LIMITS)
            return -EINVAL;
        *eq = '\0';
        if (!owner_name_ok(item))
            return -EINVAL;
        for (int i = 0; i < n; i++)
            if (strcmp(tmp[i].name, item) == 0)
                return -EINVAL;
        if (vs_parse_size(eq + 1, &tmp[n].bytes) != 0)
            return -EINVAL;
        snprintf(tmp[n].name, sizeof tmp[n].name, "%s", item);
        n++;
    }
    memcpy(out, tmp, sizeof tmp[0] * (size_t)n);
    *n_out = n;
    return 0;
}

int vs_parse_offload(const char *s, enum vs_offload_mode *out)
{
    static const char *const names[] = {"off", "pinned", "auto"};
    for (int i = 0; i < 3; i++) {
        if (s && strcasecmp(s, names[i]) == 0) {
            *out = (enum vs_offload_mode)i;
            return 0;
        }
    }
    return -EINVAL;
}

const char *vs_offload_name(enum vs_offload_mode mode)
{
    switch (mode) {
    case VS_OFFLOAD_OFF: return "off";
    case VS_OFFLOAD_PINNED: return "pinned";
    default: return "auto";
    }
}

int vs_parse_log_level(const char *s, enum vs_log_level *out)
{
    static const char *const names[] = {"error", "warn", "info", "debug"};
    for (int i = 0; i < 4; i++) {
        if (s && strcasecmp(s, names[i]) == 0) {
            *out = (enum vs_log_level)i;
            return 0;
        }
    }
    return -EINVAL;
}

int vs_parse_uint32(const char *s, uint32_t min, uint32_t max, uint32_t *out)
{
    if (s == NULL || !isdigit((unsigned char)s[0]))
        return -EINVAL;
    uint64_t v = 0;
    for (const char *p = s; *p; p++) {
        if (!isdigit((unsigned char)*p))
            return -EINVAL;
        v = v * 10 + (uint64_t)(*p - '0');
        if (v > max)
            return -EINVAL;
    }
    if (v < min)
        return -EINVAL;
    *out = (uint32_t)v;
    return 0;
}

int vs_parse_priority(const char *s, int32_t *out)
{
    uint32_t mag;
    bool neg = s && s[0] == '-';
    if (s == NULL || vs_parse_uint32(s + neg, 0, 1000, &mag) != 0)
        return -EINVAL;
    *out = neg ? -(int32_t)mag : (int32_t)mag;
    return 0;
}

/* "off" (0), or milliseconds: a number with ms, s, m or h after it (plain
 * digits are milliseconds), from 1 ms to 24 h. */
int vs_parse_duration_ms(const char *s, uint32_t *out)
{
    if (s && strcasecmp(s, "off") == 0) {
        *out = 0;
        return 0;
    }
    if (s == NULL || !isdigit((unsigned char)s[0]))
        return -EINVAL;
    char digits[16];
    size_t n = 0;
    while (isdigit((unsigned char)s[n]) && n < sizeof digits - 1) {
        digits[n] = s[n];
        n++;
    }
    digits[n] = '\0';
    static const struct {
        const char *suffix;
        uint32_t ms;
    } units[] = {{"", 1}, {"ms", 1}, {"s", 1000}, {"m", 60000}, {"h", 3600000}};
    const uint32_t day = 86400000;
    for (size_t i = 0; i < sizeof units / sizeof units[0]; i++) {
        uint32_t v;
        if (strcasecmp(s + n, units[i].suffix) != 0 ||
            vs_parse_uint32(digits, 1, day / units[i].ms, &v) != 0)
            continue;
        *out = v * units[i].ms;
        return 0;
    }
    return -EINVAL;
}

int vs_parse_bool(const char *s, bool *out)
{
    static const char *const yes[] = {"1", "true", "yes", "on"};
    static const char *const no[] = {"0", "false", "no", "off"};
    for (int i = 0; i < 4 && s; i++) {
        if (strcasecmp(s, yes[i]) == 0) {
            *out = true;
            return 0;
        }
        if (strcasecmp(s, no[i]) == 0) {
            *out = false;
            return 0;
        }
    }
    return -EINVAL;
}

uint64_t vs_size_resolve(const struct vs_size_spec *spec, uint64_t whole)
{
    switch (spec->kind) {
    case VS_SIZE_BYTES: return spec->bytes;
    case VS_SIZE_PERCENT: return (uint64_t)((double)whole * spec->percent / 100.0);
    default: return 0;
    }
}

uint64_t vs_default_pin_limit(uint64_t ram)
{
    const uint64_t four_g = 4ULL << 30;
    uint64_t forty = ram / 10 * 4;
    uint64_t ninety = ram / 10 * 9;
    uint64_t less4 = ram > four_g ? ram - four_g : 0;
    uint64_t inner = ninety < less4 ? ninety : less4;
    return forty > inner ? forty : inner;
}

void vs_config_defaults(struct vs_config *cfg)
{
    memset(cfg, 0, sizeof *cfg);
    cfg->offload = VS_OFFLOAD_AUTO;
    cfg->idle_ms = 1000;
    cfg->fence_ms = 5000;
    cfg->relief_ms = 5000;
    cfg->free_query_ms = 100;
    cfg->fast_copy_min = VS_FAST_COPY_MIN_DEFAULT;
    cfg->staging_bytes = VS_STAGING_DEFAULT;
    cfg->log_level = VS_LOG_WARN;
    cfg->reserve_vram.kind = VS_SIZE_BYTES; /* 0 */
}

static int bad(const char *var, const char *value, const char *expected,
               const char *dflt)
{
    vs_warn("%s=\"%.200s\" is not valid (expected %s); using the default (%s)",
            var, value, expected, dflt);
    return 1;
}

static int load_path(const char *var, const char *v, char *dst, size_t cap)
{
    if (v[0] == '\0' || strlen(v) >= cap)
        return bad(var, v, "a non-empty path shorter than 256 bytes",
                   strcmp(var, "VRAMSHIM_LOG_FILE") == 0 ? "stderr"
                                                        : "the usual place");
    snprintf(dst, cap, "%s", v);
    return 0;
}

/* ---- HAMi's settings -------------------------------------------------
 * HAMi's device plugin hands each container its memory slice as
 * CUDA_DEVICE_MEMORY_LIMIT (every device) and CUDA_DEVICE_MEMORY_LIMIT_<i>
 * (device i, which wins over the first), values like 1g, 1024m, 1048576k or
 * plain bytes; HAMi-core reads 0 as no limit and warns (HAMi-core README,
 * src/multiprocess/multiprocess_memory_limit.c: get_limit_from_env,
 * do_init_device_memory_limits). vramshim takes them as its VRAM limit, so
 * a HAMi cluster can swap the library in unchanged, unless
 * VRAMSHIM_VRAM_LIMIT is set: vramshim's own variable wins. */

static bool hami_memory_set(vs_env_fn env)
{
    if (env("CUDA_DEVICE_MEMORY_LIMIT"))
        return true;
    for (int i = 0; i < VS_MAX_DEVICES; i++) {
        char name[40];
        snprintf(name, sizeof name, "CUDA_DEVICE_MEMORY_LIMIT_%d", i);
        if (env(name))
            return true;
    }
    return false;
}

/* One HAMi memory value: a size above zero (vramshim's size syntax, which
 * takes HAMi's), or one line and no limit from it. */
static int hami_size(const char *var, const char *v, struct vs_size_spec *out)
{
    uint64_t bytes;
    if (vs_parse_size(v, &bytes) != 0 || bytes == 0)
        return bad(var, v, "a size above 0 like 8g or 1024m (HAMi's form)",
                   "no limit from it");
    out->kind = VS_SIZE_BYTES;
    out->bytes = bytes;
    out->percent = 0;
    return 0;
}

/* HAMi settings that vramshim does not enforce: compute slicing, HAMi's own
 * shared region and oversubscription switch (vramshim offloads by its own
 * VRAMSHIM_OFFLOAD), its OOM killer and task priority. A value that asks for
 * nothing (an SM limit of 0 or 100) is not mentioned. */
static const char *const hami_unenforced[] = {
    "CUDA_DEVICE_SM_LIMIT", "GPU_CORE_UTILIZATION_POLICY", "CUDA_TASK_PRIORITY",
    "CUDA_OVERSUBSCRIBE", "CUDA_DEVICE_MEMORY_SHARED_CACHE", "ACTIVE_OOM_KILLER",
};

static void note_unenforced_one(char *list, size_t cap, const char *name, const char *v)
{
    bool sm = strncmp(name, "CUDA_DEVICE_SM_LIMIT", 20) == 0;
    if (v == NULL || (sm && (strcmp(v, "0") == 0 || strcmp(v, "100") == 0)))
        return;
    size_t used = strlen(list);
    if (used < cap)
        snprintf(list + used, cap - used, "%s%s=\"%.40s\"", used ? ", " : "", name, v);
}

static void note_unenforced(vs_env_fn env)
{
    char list[1024] = "";
    for (size_t i = 0; i < sizeof hami_unenforced / sizeof hami_unenforced[0]; i++)
        note_unenforced_one(list, sizeof list, hami_unenforced[i], env(hami_unenforced[i]));
    for (int d = 0; d < VS_MAX_DEVICES; d++) {
        char name[40];
        snprintf(name, sizeof name, "CUDA_DEVICE_SM_LIMIT_%d", d);
        note_unenforced_one(list, sizeof list, name, env(name));
    }
    if (list[0])
        vs_warn("HAMi settings vramshim does not enforce (it limits memory, it does not "
                "slice compute): %s",
                list);
}

static int load_hami(struct vs_config *cfg, vs_env_fn env, bool own_limit_set)
{
    note_unenforced(env);
    if (!hami_memory_set(env))
        return 0;
    if (own_limit_set) {
        vs_warn("VRAMSHIM_VRAM_LIMIT is set and wins: HAMi's CUDA_DEVICE_MEMORY_LIMIT "
                "settings are ignored");
        return 0;
    }
    int errors = 0;
    const char *v = env("CUDA_DEVICE_MEMORY_LIMIT");
    if (v)
        errors += hami_size("CUDA_DEVICE_MEMORY_LIMIT", v, &cfg->vram_limit_all);
    for (int i = 0; i < VS_MAX_DEVICES; i++) {
        char name[40];
        snprintf(name, sizeof name, "CUDA_DEVICE_MEMORY_LIMIT_%d", i);
        if ((v = env(name)))
            errors += hami_size(name, v, &cfg->vram_limit_dev[i]);
    }
    return errors;
}

int vs_config_load(struct vs_config *cfg, vs_env_fn env)
{
    int errors = 0;
    const char *v;
    vs_config_defaults(cfg);

    /* The log settings first, so the other warnings go where asked. */
    if ((v = env("VRAMSHIM_LOG")) && vs_parse_log_level(v, &cfg->log_level))
        errors += bad("VRAMSHIM_LOG", v, "error, warn, info or debug", "warn");
    vs_log_set_level(cfg->log_level);
    if ((v = env("VRAMSHIM_LOG_FILE"))) {
        errors += load_path("VRAMSHIM_LOG_FILE", v, cfg->log_file,
                            sizeof cfg->log_file);
        int rc = cfg->log_file[0] ? vs_log_open_file(cfg->log_file) : 0;
        if (rc != 0) {
            vs_warn("VRAMSHIM_LOG_FILE=\"%s\" cannot be opened (%s); logging to "
                    "stderr",
                    cfg->log_file,
                    rc == -EINVAL ? "not a regular file"
                    : rc == -ELOOP ? "a symbolic link, which is not followed"
                                   : strerror(-rc));
            cfg->log_file[0] = '\0';
            errors++;
        }
    }

    if ((v = env("VRAMSHIM_DISABLE")) && vs_parse_bool(v, &cfg->disable))
        errors += bad("VRAMSHIM_DISABLE", v, "0 or 1", "0");
    if ((v = env("VRAMSHIM_VRAM_LIMIT")) &&
        vs_parse_device_sizes(v, &cfg->vram_limit_all, cfg->vram_limit_dev))
        errors += bad("VRAMSHIM_VRAM_LIMIT", v,
                      "a size like 8G or 512M, a percentage like 40%, or per "
                      "device like 0:8G,1:12G",
                      "none");
    errors += load_hami(cfg, env, v != NULL);
    if ((v = env("VRAMSHIM_RESERVE_VRAM")) &&
        vs_parse_size_or_percent(v, &cfg->reserve_vram))
        errors += bad("VRAMSHIM_RESERVE_VRAM", v,
                      "a size like 1G or a percentage like 10%", "0");
    if ((v = env("VRAMSHIM_PIN_LIMIT")) &&
        vs_parse_size_or_percent(v, &cfg->pin_limit))
        errors += bad("VRAMSHIM_PIN_LIMIT", v,
                      "a size like 16G or a percentage of RAM like 50%",
                      "max(40% RAM, min(90% RAM, RAM - 4G))");
    if ((v = env("VRAMSHIM_OFFLOAD")) && vs_parse_offload(v, &cfg->offload))
        errors += bad("VRAMSHIM_OFFLOAD", v, "off, pinned or auto", "auto");
    if ((v = env("VRAMSHIM_IDLE_MS")) &&
        vs_parse_uint32(v, 0, 86400000, &cfg->idle_ms))
        errors += bad("VRAMSHIM_IDLE_MS", v,
                      "milliseconds from 0 to 86400000", "1000");
    if ((v = env("VRAMSHIM_FENCE_MS")) &&
        vs_parse_uint32(v, 0, 86400000, &cfg->fence_ms))
        errors += bad("VRAMSHIM_FENCE_MS", v,
                      "milliseconds from 0 to 86400000", "5000");
    if ((v = env("VRAMSHIM_PRIORITY")) && vs_parse_priority(v, &cfg->priority))
        errors += bad("VRAMSHIM_PRIORITY", v, "an integer from -1000 to 1000", "0");
    if ((v = env("VRAMSHIM_IDLE_RELEASE")) &&
        vs_parse_duration_ms(v, &cfg->idle_release_ms))
        errors += bad("VRAMSHIM_IDLE_RELEASE", v,
                      "off, or a time like 500ms, 30s, 10m, 1h (at most 24h)", "off");
    if ((v = env("VRAMSHIM_RELIEF_MS")) && vs_parse_uint32(v, 100, 600000, &cfg->relief_ms))
        errors += bad("VRAMSHIM_RELIEF_MS", v, "milliseconds from 100 to 600000", "5000");
    if ((v = env("VRAMSHIM_FREE_QUERY_MS")) &&
        vs_parse_uint32(v, 0, 60000, &cfg->free_query_ms))
        errors += bad("VRAMSHIM_FREE_QUERY_MS", v,
                      "milliseconds from 0 to 60000", "100");
    if ((v = env("VRAMSHIM_FAST_COPY_MIN")) && vs_parse_size(v, &cfg->fast_copy_min))
        errors += bad("VRAMSHIM_FAST_COPY_MIN", v, "a size like 8M, or 0 for off", "8M");
    if ((v = env("VRAMSHIM_COPY_THREADS")) &&
        vs_parse_uint32(v, 1, VS_COPY_THREADS_MAX, &cfg->copy_threads))
        errors += bad("VRAMSHIM_COPY_THREADS", v, "a number of threads from 1 to 64",
                      "half the cores, 2 to 8");
    if ((v = env("VRAMSHIM_STAGING"))) {
        uint64_t bytes;
        if (vs_parse_size(v, &bytes) || bytes < VS_STAGING_PIECE || bytes > VS_STAGING_MAX)
            errors += bad("VRAMSHIM_STAGING", v, "a size from 4M to 1G", "64M");
        else
            cfg->staging_bytes = bytes;
    }
    if ((v = env("VRAMSHIM_OWNER"))) {
        if (owner_name_ok(v))
            snprintf(cfg->owner, sizeof cfg->owner, "%s", v);
        else
            errors += bad("VRAMSHIM_OWNER", v,
                          "1 to 47 printable characters without spaces, quotes "
                          "or backslashes",
                          "the program's name");
    }
    if ((v = env("VRAMSHIM_OWNER_LIMIT")) &&
        vs_parse_owner_limits(v, cfg->owner_limits, VS_MAX_OWNER_LIMITS,
                              &cfg->n_owner_limits))
        errors += bad("VRAMSHIM_OWNER_LIMIT", v,
                      "owner=size pairs like unet=8G,vae=2G", "none");
    if ((v = env("VRAMSHIM_SOCKET_DIR"))) {
        /* relative, it would name a different place in each working directory */
        if (v[0] != '\0' && v[0] != '/')
            errors += bad("VRAMSHIM_SOCKET_DIR", v, "an absolute path", "the usual place");
        else
            errors += load_path("VRAMSHIM_SOCKET_DIR", v, cfg->socket_dir,
                                sizeof cfg->socket_dir);
    }
    return errors;
}

/*
 * protocol.c: the control socket's protocol, shared by the library's server
 * (control.c) and the tool: where the sockets live, and the requests.
 *
 * A request is one line holding one flat JSON object whose values are
 * strings or non-negative integers: {"cmd":"set","key":"vram_limit",
 * "value":"4G"}. That is all the tool sends, so the parser accepts exactly
 * that and nothing more: no nesting, no \u escapes, no duplicate or unknown
 * members, at most VS_REQUEST_MAX bytes. Anything else is refused with a
 * reason and changes nothing. It reads only the bytes it is given and never
 * allocates, which keeps it safe to fuzz (tests/fuzz/) and to run inside
 * someone else's process.
 */
#include "core.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* VRAMSHIM_SOCKET_DIR, else $XDG_RUNTIME_DIR/vramshim, else /tmp/vramshim-$UID. */
int vs_control_dir(const char *configured, char *out, size_t cap)
{
    int n;
    const char *xdg = getenv("XDG_RUNTIME_DIR");
    if (configured && configured[0])
        n = snprintf(out, cap, "%s", configured);
    else if (xdg && xdg[0] == '/')
        n = snprintf(out, cap, "%s/vramshim", xdg);
    else
        n = snprintf(out, cap, "/tmp/vramshim-%u", (unsigned)getuid());
    return n > 0 && (size_t)n < cap ? 0 : -ENAMETOOLONG;
}


struct cursor {
    const char *p, *end;
};

static void skip_space(struct cursor *c)
{
    while (c->p < c->end && (*c->p == ' ' || *c->p == '\t' || *c->p == '\r' || *c->p == '\n'))
        c->p++;
}

static bool eat(struct cursor *c, char ch)
{
    skip_space(c);
    if (c->p < c->end && *c->p == ch) {
        c->p++;
        return true;
    }
    return false;
}

/* A string into out (NUL-terminated, at most cap-1 bytes). */
static bool read_string(struct cursor *c, char *out, size_t cap)
{
    if (!eat(c, '"'))
        return false;
    size_t n = 0;
    while (c->p < c->end) {
        unsigned char ch = (unsigned char)*c->p++;
        if (ch == '"') {
            out[n] = '\0';
            return true;
        }
        if (ch < 0x20)
            return false;
        if (ch == '\\') {
            if (c->p >= c->end)
                return false;
            ch = (unsigned char)*c->p++;
            if (ch != '"' && ch != '\\' && ch != '/')
                return false;
        }
        if (n + 1 >= cap)
            return false;
        out[n++] = (char)ch;
    }
    return false;
}

static bool read_uint(struct cursor *c, uint64_t *out)
{
    skip_space(c);
    if (c->p >= c->end || *c->p < '0' || *c->p > '9')
        return false;
    uint64_t v = 0;
    while (c->p < c->end && *c->p >= '0' && *c->p <= '9') {
        unsigned d = (unsigned)(*c->p++ - '0');
        if (v > (UINT64_MAX - d) / 10)
            return false;
        v = v * 10 + d;
    }
    *out = v;
    return true;
}

/* The value of `name`, one of names[0..n), into slots[i]: false when the
 * name is unknown, already seen (a bit of *seen each) or not a number. */
static bool read_named_uint(struct cursor *c, const char *name, const char *const *names,
                            uint64_t *const *slots, size_t n, unsigned *seen)
{
    size_t i = 0;
    while (i < n && strcmp(name, names[i]) != 0)
        i++;
    if (i == n || (*seen & (1u << i)) || !read_uint(c, slots[i]))
        return false;
    *seen |= 1u << i;
    return true;
}

/* An integer from -1000 to 1000 (a priority). */
static bool read_priority(struct cursor *c, int32_t *out)
{
    skip_space(c);
    bool neg = c->p < c->end && *c->p == '-';
    c->p += neg;
    uint64_t v;
    if (!read_uint(c, &v) || v > 1000)
        return false;
    *out = neg ? -(int32_t)v : (int32_t)v;
    return true;
}

static int fail(char *why, size_t len, const char *reason)
{
    snprintf(why, len, "%s", reason);
    return -EINVAL;
}

static const struct {
    const char *name;
    enum vs_request_cmd cmd;
} commands[] = {
    {"hello", VS_REQ_HELLO}, {"stats", VS_REQ_STATS}, {"set", VS_REQ_SET},
    {"evict", VS_REQ_EVICT}, {"free", VS_REQ_FREE}, {"share", VS_REQ_SHARE},
    {"peer", VS_REQ_PEER},   {"relieve", VS_REQ_RELIEVE},
};

int vs_request_parse(const char *buf, size_t len, struct vs_request *req, char *why,
                     size_t why_len)
{
    memset(req, 0, sizeof *req);
    if (len > VS_REQUEST_MAX)
        return fail(why, why_len, "request too long");
    struct cursor c = {buf, buf + len};
    char cmd[16] = "";
    bool have_cmd = false, have_key = false, have_value = false, have_owner = false,
         have_bytes = false, have_base = false, have_token = false, have_uuid = false,
         have_priority = false;
    if (!eat(&c, '{'))
        return fail(why, why_len, "expected a JSON object");
    if (!eat(&c, '}')) {
        do {
            char name[16];
            if (!read_string(&c, name, sizeof name) || !eat(&c, ':'))
                return fail(why, why_len, "expected \"member\": value");
            bool *seen;
            if (strcmp(name, "cmd") == 0) {
                seen = &have_cmd;
                if (*seen || !read_string(&c, cmd, sizeof cmd))
                    return fail(why, why_len, "bad cmd");
            } else if (strcmp(name, "key") == 0) {
                seen = &have_key;
                if (*seen || !read_string(&c, req->key, sizeof req->key))
                    return fail(why, why_len, "bad key");
            } else if (strcmp(name, "value") == 0) {
                seen = &have_value;
                if (*seen || !read_string(&c, req->value, sizeof req->value))
                    return fail(why, why_len, "bad value");
            } else if (strcmp(name, "owner") == 0) {
                seen = &have_owner;
                if (*seen || !read_string(&c, req->owner, sizeof req->owner) ||
                    req->owner[0] == '\0')
                    return fail(why, why_len, "bad owner");
            } else if (strcmp(name, "bytes") == 0) {
                seen = &have_bytes;
                if (*seen || !read_uint(&c, &req->bytes))
                    return fail(why, why_len, "bad bytes");
            } else if (strcmp(name, "base") == 0) {
                seen = &have_base;
                if (*seen || !read_uint(&c, &req->base))
                    return fail(why, why_len, "bad base");
            } else if (strcmp(name, "token") == 0) {
                seen = &have_token;
                if (*seen || !read_uint(&c, &req->token))
                    return fail(why, why_len, "bad token");
            } else if (strcmp(name, "uuid") == 0) {
                seen = &have_uuid;
                if (*seen || !read_string(&c, req->uuid, sizeof req->uuid) ||
                    req->uuid[0] == '\0')
                    return fail(why, why_len, "bad uuid");
            } else if (strcmp(name, "priority") == 0) {
                seen = &have_priority;
                if (*seen || !read_priority(&c, &req->priority))
                    return fail(why, why_len, "bad priority (an integer from -1000 to 1000)");
            } else {
                return fail(why, why_len, "unknown member");
            }
            *seen = true;
        } while (eat(&c, ','));
        if (!eat(&c, '}'))
            return fail(why, why_len, "expected , or }");
    }
    skip_space(&c);
    if (c.p != c.end)
        return fail(why, why_len, "trailing bytes after the object");
    if (!have_cmd)
        return fail(why, why_len, "no cmd");
    req->cmd = VS_REQ_NONE;
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        if (strcmp(cmd, commands[i].name) == 0)
            req->cmd = commands[i].cmd;
    if (req->cmd == VS_REQ_NONE)
        return fail(why, why_len, "unknown cmd");
    if ((req->cmd == VS_REQ_SET) != (have_key && have_value) ||
        (req->cmd != VS_REQ_SET && (have_key || have_value)))
        return fail(why, why_len, "set takes key and value, and only set does");
    if (req->cmd != VS_REQ_EVICT && have_owner)
        return fail(why, why_len, "only evict takes owner");
    if (req->cmd != VS_REQ_EVICT && req->cmd != VS_REQ_RELIEVE && have_bytes)
        return fail(why, why_len, "only evict and relieve take bytes");
    bool relief = req->cmd == VS_REQ_PEER || req->cmd == VS_REQ_RELIEVE;
    if (relief != have_uuid || relief != have_priority ||
        (req->cmd == VS_REQ_RELIEVE && !have_bytes))
        return fail(why, why_len, "peer takes uuid and priority, relieve uuid, priority and "
                                  "bytes, and only they do");
    if ((req->cmd == VS_REQ_SHARE) != (have_base && have_token) ||
        (req->cmd != VS_REQ_SHARE && (have_base || have_token)))
        return fail(why, why_len, "share takes base and token, and only share does");
    req->has_owner = have_owner;
    req->has_bytes = have_bytes;
    return 0;
}

/* ---- the answer to a share request, as the importer reads it ------------ */

static bool read_bool(struct cursor *c, bool *out)
{
    skip_space(c);
    size_t left = (size_t)(c->end - c->p);
    if (left >= 4 && memcmp(c->p, "true", 4) == 0) {
        c->p += 4;
        *out = true;
        return true;
    }
    if (left >= 5 && memcmp(c->p, "false", 5) == 0) {
        c->p += 5;
        *out = false;
        return true;
    }
    return false;
}

int vs_share_answer_parse(const char *buf, size_t len, struct vs_share_answer *a)
{
    memset(a, 0, sizeof *a);
    struct cursor c = {buf, buf + len};
    bool have_ok = false;
    unsigned seen = 0;
    static const char *const numbers[] = {"size", "span", "gran", "chunk", "n"};
    uint64_t *slots[] = {&a->size, &a->span, &a->gran, &a->chunk, &a->n};
    if (!eat(&c, '{'))
        return -EINVAL;
    if (!eat(&c, '}')) {
        do {
            char name[16];
            if (!read_string(&c, name, sizeof name) || !eat(&c, ':'))
                return -EINVAL;
            if (strcmp(name, "ok") == 0) {
                if (have_ok || !read_bool(&c, &a->ok))
                    return -EINVAL;
                have_ok = true;
                continue;
            }
            if (strcmp(name, "error") == 0) {
                if (a->error[0] || !read_string(&c, a->error, sizeof a->error) ||
                    a->error[0] == '\0')
                    return -EINVAL;
                continue;
            }
            if (!read_named_uint(&c, name, numbers, slots, 5, &seen))
                return -EINVAL;
        } while (eat(&c, ','));
        if (!eat(&c, '}'))
            return -EINVAL;
    }
    skip_space(&c);
    if (c.p != c.end || !have_ok)
        return -EINVAL;
    if (a->ok && seen != 0x1f)
        return -EINVAL; /* a layout is all five numbers */
    return 0;
}

int vs_relief_answer_parse(const char *buf, size_t len, struct vs_relief_answer *a)
{
    memset(a, 0, sizeof *a);
    struct cursor c = {buf, buf + len};
    bool have_ok = false, have_priority = false;
    unsigned seen = 0;
    static const char *const numbers[] = {"resident", "idle_ms", "moved"};
    uint64_t *slots[] = {&a->resident, &a->idle_ms, &a->moved};
    if (!eat(&c, '{'))
        return -EINVAL;
    do {
        char name[16];
        if (!read_string(&c, name, sizeof name) || !eat(&c, ':'))
            return -EINVAL;
        if (strcmp(name, "ok") == 0) {
            if (have_ok || !read_bool(&c, &a->ok))
                return -EINVAL;
            have_ok = true;
        } else if (strcmp(name, "error") == 0) {
            if (a->error[0] || !read_string(&c, a->error, sizeof a->error) ||
                a->error[0] == '\0')
                return -EINVAL;
        } else if (strcmp(name, "priority") == 0) {
            if (have_priority || !read_priority(&c, &a->priority))
                return -EINVAL;
            have_priority = true;
        } else {
            if (!read_named_uint(&c, name, numbers, slots, 3, &seen))
                return -EINVAL;
        }
    } while (eat(&c, ','));
    if (!eat(&c, '}'))
        return -EINVAL;
    skip_space(&c);
    return c.p == c.end && have_ok ? 0 : -EINVAL;
}

int vs_share_answer_check(const struct vs_share_answer *a, uint64_t handle_size, char *why,
                          size_t why_len)
{
    if (!a->ok) {
        snprintf(why, why_len, "refused: %s", a->error[0] ? a->error : "no reason given");
        return -EACCES;
    }
    const char *bad = NULL;
    if (a->size != handle_size)
        bad = "its size is not the handle's";
    else if (a->gran == 0 || (a->gran & (a->gran - 1)) != 0 || a->gran > (1ULL << 30))
        bad = "its granularity is not a power of two up to 1 GiB";
    else if (a->span != (a->size + a->gran - 1) / a->gran * a->gran || a->span < a->size)
        bad = "its span is not the size rounded up to the granularity";
    else if (a->chunk != a->gran * VS_CHUNK_GRANULES)
        bad = "its chunk is not 32 granules";
    else if (a->n == 0 || a->n > VS_SHARE_MAX_CHUNKS ||
             a->n != (a->span + a->chunk - 1) / a->chunk)
        bad = "its chunk count does not cover the span";
    if (bad == NULL)
        return 0;
    snprintf(why, why_len, "an answer that does not fit the handle (%s)", bad);
    return -EPROTO;
}

/* Whether two tokens are equal, in time that does not depend on where they
 * differ. */
bool vs_equal_ct(uint64_t a, uint64_t b)
{
    volatile uint64_t diff = a ^ b;
    uint64_t d = diff;
    return ((d | (0 - d)) >> 63) == 0;
}

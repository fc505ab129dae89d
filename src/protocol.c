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

/* A member the requests and answers may hold: its name, how its value is
 * read, and where it goes. */
enum member_kind { MEMBER_STRING, MEMBER_NAME /* a string, not empty */, MEMBER_UINT,
                   MEMBER_PRIORITY, MEMBER_BOOL };
struct member {
    const char *name;
    enum member_kind kind;
    void *slot;
    size_t cap;      /* a string's room, its NUL included */
    const char *bad; /* why a bad value, or a second one, is refused (requests) */
};

static bool read_value(struct cursor *c, const struct member *m)
{
    switch (m->kind) {
    case MEMBER_STRING:
        return read_string(c, m->slot, m->cap);
    case MEMBER_NAME:
        return read_string(c, m->slot, m->cap) && ((const char *)m->slot)[0] != '\0';
    case MEMBER_UINT:
        return read_uint(c, m->slot);
    case MEMBER_PRIORITY:
        return read_priority(c, m->slot);
    case MEMBER_BOOL:
        return read_bool(c, m->slot);
    }
    return false;
}

/* The whole input as one flat object whose members are among members[0..n),
 * each at most once, their values in their slots; *seen gets bit i for
 * members[i]. False with *why when it is anything else. */
static bool read_object(struct cursor *c, const struct member *members, size_t n,
                        unsigned *seen, const char **why)
{
    *seen = 0;
    if (!eat(c, '{')) {
        *why = "expected a JSON object";
        return false;
    }
    if (!eat(c, '}')) {
        do {
            char name[16];
            if (!read_string(c, name, sizeof name) || !eat(c, ':')) {
                *why = "expected \"member\": value";
                return false;
            }
            size_t i = 0;
            while (i < n && strcmp(name, members[i].name) != 0)
                i++;
            if (i == n) {
                *why = "unknown member";
                return false;
            }
            if ((*seen & (1u << i)) || !read_value(c, &members[i])) {
                *why = members[i].bad;
                return false;
            }
            *seen |= 1u << i;
        } while (eat(c, ','));
        if (!eat(c, '}')) {
            *why = "expected , or }";
            return false;
        }
    }
    skip_space(c);
    if (c->p != c->end) {
        *why = "trailing bytes after the object";
        return false;
    }
    return true;
}

static bool has(unsigned seen, unsigned member)
{
    return (seen & (1u << member)) != 0;
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
    char cmd[16] = "";
    enum { CMD, KEY, VALUE, OWNER, BYTES, BASE, TOKEN, UUID, PRIORITY, MEMBERS };
    const struct member members[MEMBERS] = {
        [CMD] = {"cmd", MEMBER_STRING, cmd, sizeof cmd, "bad cmd"},
        [KEY] = {"key", MEMBER_STRING, req->key, sizeof req->key, "bad key"},
        [VALUE] = {"value", MEMBER_STRING, req->value, sizeof req->value, "bad value"},
        [OWNER] = {"owner", MEMBER_NAME, req->owner, sizeof req->owner, "bad owner"},
        [BYTES] = {"bytes", MEMBER_UINT, &req->bytes, 0, "bad bytes"},
        [BASE] = {"base", MEMBER_UINT, &req->base, 0, "bad base"},
        [TOKEN] = {"token", MEMBER_UINT, &req->token, 0, "bad token"},
        [UUID] = {"uuid", MEMBER_NAME, req->uuid, sizeof req->uuid, "bad uuid"},
        [PRIORITY] = {"priority", MEMBER_PRIORITY, &req->priority, 0,
                      "bad priority (an integer from -1000 to 1000)"},
    };
    struct cursor c = {buf, buf + len};
    unsigned seen;
    const char *bad;
    if (!read_object(&c, members, MEMBERS, &seen, &bad))
        return fail(why, why_len, bad);
    bool have_key = has(seen, KEY), have_value = has(seen, VALUE), have_owner = has(seen, OWNER),
         have_bytes = has(seen, BYTES), have_base = has(seen, BASE),
         have_token = has(seen, TOKEN), have_uuid = has(seen, UUID),
         have_priority = has(seen, PRIORITY);
    if (!has(seen, CMD))
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

int vs_share_answer_parse(const char *buf, size_t len, struct vs_share_answer *a)
{
    memset(a, 0, sizeof *a);
    enum { OK, ERROR, SIZE, SPAN, GRAN, CHUNK, N, MEMBERS };
    const struct member members[MEMBERS] = {
        [OK] = {"ok", MEMBER_BOOL, &a->ok, 0},
        [ERROR] = {"error", MEMBER_NAME, a->error, sizeof a->error},
        [SIZE] = {"size", MEMBER_UINT, &a->size, 0},
        [SPAN] = {"span", MEMBER_UINT, &a->span, 0},
        [GRAN] = {"gran", MEMBER_UINT, &a->gran, 0},
        [CHUNK] = {"chunk", MEMBER_UINT, &a->chunk, 0},
        [N] = {"n", MEMBER_UINT, &a->n, 0},
    };
    const unsigned layout = 1u << SIZE | 1u << SPAN | 1u << GRAN | 1u << CHUNK | 1u << N;
    struct cursor c = {buf, buf + len};
    unsigned seen;
    const char *bad;
    if (!read_object(&c, members, MEMBERS, &seen, &bad) || !has(seen, OK))
        return -EINVAL;
    if (a->ok && (seen & layout) != layout)
        return -EINVAL; /* a layout is all five numbers */
    return 0;
}

int vs_relief_answer_parse(const char *buf, size_t len, struct vs_relief_answer *a)
{
    memset(a, 0, sizeof *a);
    enum { OK, ERROR, PRIORITY, RESIDENT, IDLE_MS, MOVED, MEMBERS };
    const struct member members[MEMBERS] = {
        [OK] = {"ok", MEMBER_BOOL, &a->ok, 0},
        [ERROR] = {"error", MEMBER_NAME, a->error, sizeof a->error},
        [PRIORITY] = {"priority", MEMBER_PRIORITY, &a->priority, 0},
        [RESIDENT] = {"resident", MEMBER_UINT, &a->resident, 0},
        [IDLE_MS] = {"idle_ms", MEMBER_UINT, &a->idle_ms, 0},
        [MOVED] = {"moved", MEMBER_UINT, &a->moved, 0},
    };
    struct cursor c = {buf, buf + len};
    unsigned seen;
    const char *bad;
    return read_object(&c, members, MEMBERS, &seen, &bad) && has(seen, OK) ? 0 : -EINVAL;
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

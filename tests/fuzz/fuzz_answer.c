/*
 * fuzz_answer: libFuzzer target for what the connecting sides read from a
 * server (tests/fuzz/run.sh builds and runs it beside fuzz_request): the
 * importer's share answer (src/protocol.c: parsed strictly, then checked
 * against the handle), relief.c's answers from peers (parsed strictly,
 * priority in range) and the tool's answers (tools/client.c: any JSON,
 * made printable before anything prints it). The first byte picks which.
 */
#include "client.h"
#include "core.h"

#include <string.h>

/* No string or key left with a byte a terminal obeys. */
static void assert_printable(json_t *v)
{
    const char *key;
    json_t *member;
    size_t i;
    if (json_is_string(v)) {
        for (const unsigned char *p = (const unsigned char *)json_string_value(v); *p; p++)
            if (*p < 0x20 || *p == 0x7f || (*p == 0xc2 && p[1] >= 0x80 && p[1] <= 0x9f))
                __builtin_trap();
    } else if (json_is_array(v)) {
        json_array_foreach(v, i, member) assert_printable(member);
    } else if (json_is_object(v)) {
        json_object_foreach(v, key, member) {
            json_t *k = json_string(key);
            assert_printable(k);
            json_decref(k);
            assert_printable(member);
        }
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size == 0)
        return 0;
    const char *text = (const char *)data + 1;
    size_t len = size - 1;
    if (data[0] & 1) {
        json_t *answer = json_loadb(text, len, 0, NULL);
        if (answer) {
            client_make_printable(answer);
            assert_printable(answer);
            json_decref(answer);
        }
        return 0;
    }
    if (data[0] & 2) {
        struct vs_relief_answer r;
        if (vs_relief_answer_parse(text, len, &r) == 0 &&
            (r.priority < -1000 || r.priority > 1000 || strlen(r.error) >= sizeof r.error))
            __builtin_trap();
        return 0;
    }
    struct vs_share_answer a;
    if (vs_share_answer_parse(text, len, &a) != 0)
        return 0;
    if (a.error[0] && strlen(a.error) >= sizeof a.error)
        __builtin_trap();
    char why[256];
    uint64_t handle_size = a.size; /* the case that passes the size check */
    if (vs_share_answer_check(&a, handle_size, why, sizeof why) == 0) {
        /* what the importer then maps: n chunks that cover the size, no more */
        if (!a.ok || a.n == 0 || a.n > VS_SHARE_MAX_CHUNKS || a.span < a.size ||
            a.n * a.chunk < a.span || (a.n - 1) * a.chunk >= a.span || a.span % a.gran != 0)
            __builtin_trap();
    } else if (why[0] == '\0') {
        __builtin_trap();
    }
    return 0;
}

/*
 * fuzz_request: libFuzzer target for the control socket's request parser
 * (src/protocol.c), the one piece of vramshim that reads bytes from another
 * process. Built and run for a bounded time by tests/fuzz/run.sh.
 */
#include "core.h"

#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct vs_request req;
    char why[128];
    if (vs_request_parse((const char *)data, size, &req, why, sizeof why) == 0) {
        /* what parsed must be well-formed */
        if (req.cmd == VS_REQ_NONE || strlen(req.key) >= sizeof req.key ||
            strlen(req.value) >= sizeof req.value || strlen(req.owner) >= sizeof req.owner)
            __builtin_trap();
    } else if (why[0] == '\0') {
        __builtin_trap();
    }
    return 0;
}

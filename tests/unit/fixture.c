/*
 * fixture.c: see fixture.h.
 */
#define _GNU_SOURCE 1
#include "fixture.h"

#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

void fixture_reset(void)
{
    vs_config_defaults(&vs_state.cfg);
    vs_state.ram_bytes = 16ULL << 30;
    vs_state.start_ns = vs_now_ns();
    vs_owner_init("unit");
    vs_owner_reset_thread();
    vs_registry_init();
    vs_registry_reset();
    vs_limits_init(&vs_state.cfg, vs_state.ram_bytes);
    vs_budget_reset();
    static const struct vs_device_query no_driver;
    vs_query_set(&no_driver);
    vs_log_set_level(VS_LOG_WARN);
}

static int capture_fd = -1;
static char captured[1 << 16];

void fixture_log_capture(void)
{
    if (capture_fd < 0)
        capture_fd = memfd_create("vramshim-log", 0);
    ftruncate(capture_fd, 0);
    lseek(capture_fd, 0, SEEK_SET);
    vs_log_set_fd(capture_fd);
}

const char *fixture_log(void)
{
    ssize_t n = pread(capture_fd, captured, sizeof captured - 1, 0);
    captured[n > 0 ? n : 0] = '\0';
    return captured;
}

int fixture_log_lines(void)
{
    int lines = 0;
    for (const char *p = fixture_log(); *p; p++)
        lines += *p == '\n';
    return lines;
}

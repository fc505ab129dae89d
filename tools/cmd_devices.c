/*
 * cmd_devices.c: `vramshim devices`: each physical device, told apart by
 * its UUID (CUDA_VISIBLE_DEVICES gives one device different indices in
 * different processes), with its total, the free memory as the driver last
 * reported it, and every process on it with what it holds resident and
 * offloaded and the relief it gave and took. Built from one stats answer
 * per process.
 */
#include "client.h"
#include "cmd.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char devices_usage[] =
    "usage: vramshim devices [--json]\n"
    "Lists each physical device the processes of this user run on (by UUID): its\n"
    "total, the free memory the driver last reported, and every process on it with\n"
    "the memory it holds resident and offloaded and the relief it gave and took.\n"
    "--json prints one JSON array.\n";

static uint64_t num(json_t *obj, const char *key)
{
    return (uint64_t)json_integer_value(json_object_get(obj, key));
}

static const char *mib(uint64_t bytes, char *buf, size_t cap)
{
    snprintf(buf, cap, "%.1f MiB", (double)bytes / (1 << 20));
    return buf;
}

/* The entry of `all` for uuid, made if new. */
static json_t *device_entry(json_t *all, const char *uuid, json_t *dev)
{
    size_t i;
    json_t *d;
    json_array_foreach(all, i, d) if (strcmp(json_string_value(json_object_get(d, "uuid")), uuid) == 0)
        return d;
    d = json_pack("{s:s, s:O, s:I, s:O, s:[]}", "uuid", uuid, "name",
                  json_object_get(dev, "name") ? json_object_get(dev, "name") : json_null(),
                  "vram_total", (json_int_t)num(dev, "vram_total"), "vram_free",
                  json_object_get(dev, "vram_free") ? json_object_get(dev, "vram_free")
                                                    : json_null(),
                  "processes");
    json_array_append_new(all, d);
    return d;
}

/* Every process's devices, grouped by UUID: [{uuid, name, vram_total,
 * vram_free, processes: [{pid, cmd, index, resident, offloaded, relief...}]}]. */
json_t *cmd_devices_collect(void)
{
    pid_t pids[1024];
    uint64_t ns[1024];
    int n = client_list_all(pids, ns, 1024);
    json_t *all = json_array();
    for (int p = 0; p < n; p++) {
        int code;
        json_t *answer = client_request_ns(pids[p], ns[p], "{\"cmd\":\"stats\"}", &code);
        json_t *st = answer ? json_object_get(answer, "stats") : NULL;
        if (st == NULL) {
            json_decref(answer);
            continue; /* gone between the listing and the question */
        }
        json_t *cn = json_object_get(st, "counters");
        size_t i;
        json_t *dev;
        json_array_foreach(json_object_get(st, "devices"), i, dev) {
            const char *uuid = json_string_value(json_object_get(dev, "uuid"));
            if (uuid == NULL || num(dev, "allocated") == 0)
                continue; /* a device the process does not use */
            json_t *d = device_entry(all, uuid, dev);
            /* the freshest free figure of any process */
            json_t *free_now = json_object_get(dev, "vram_free");
            if (json_is_integer(free_now))
                json_object_set(d, "vram_free", free_now);
            json_array_append_new(
                json_object_get(d, "processes"),
                json_pack("{s:I, s:O, s:I, s:I, s:I, s:I, s:I, s:I, s:I}", "pid",
                          (json_int_t)pids[p], "cmd", json_object_get(st, "cmd"), "index",
                          (json_int_t)num(dev, "index"), "resident",
                          (json_int_t)num(dev, "resident"), "offloaded",
                          (json_int_t)(num(dev, "offloaded_pinned") +
                                       num(dev, "offloaded_pageable")),
                          "relief_given", (json_int_t)num(cn, "relief_given"), "relief_taken",
                          (json_int_t)num(cn, "relief_taken"), "relief_bytes_given",
                          (json_int_t)num(cn, "relief_bytes_given"), "relief_bytes_taken",
                          (json_int_t)num(cn, "relief_bytes_taken")));
        }
        json_decref(answer);
    }
    return all;
}

int cmd_devices(int argc, char **argv)
{
    bool json = false;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            fputs(devices_usage, stdout);
            return 0;
        }
        if (strcmp(argv[i], "--json") == 0)
            json = true;
        else
            return cmd_usage_error(devices_usage, "devices: unexpected argument '%s'", argv[i]);
    }
    json_t *all = cmd_devices_collect();
    if (json) {
        cmd_print_json(all, 0);
        json_decref(all);
        return 0;
    }
    size_t i;
    json_t *d;
    json_array_foreach(all, i, d) {
        char a[32], b[32];
        json_t *free_now = json_object_get(d, "vram_free");
        printf("%s  %s  total %s, free %s\n", json_string_value(json_object_get(d, "uuid")),
               json_is_string(json_object_get(d, "name"))
                   ? json_string_value(json_object_get(d, "name"))
                   : "?",
               mib(num(d, "vram_total"), a, sizeof a),
               json_is_integer(free_now) ? mib((uint64_t)json_integer_value(free_now), b, sizeof b)
                                         : "unknown");
        printf("  %-8s %-5s %-14s %-14s %-16s %s\n", "PID", "INDEX", "RESIDENT", "OFFLOADED",
               "RELIEF GIVE/TAKE", "COMMAND");
        size_t k;
        json_t *p;
        json_array_foreach(json_object_get(d, "processes"), k, p) {
            char c[32], e[32], relief[40];
            snprintf(relief, sizeof relief, "%llu/%llu",
                     (unsigned long long)num(p, "relief_given"),
                     (unsigned long long)num(p, "relief_taken"));
            printf("  %-8llu %-5llu %-14s %-14s %-16s %s\n", (unsigned long long)num(p, "pid"),
                   (unsigned long long)num(p, "index"), mib(num(p, "resident"), c, sizeof c),
                   mib(num(p, "offloaded"), e, sizeof e), relief,
                   json_string_value(json_object_get(p, "cmd")));
        }
    }
    if (json_array_size(all) == 0)
        printf("no process under vramshim holds device memory\n");
    json_decref(all);
    return 0;
}

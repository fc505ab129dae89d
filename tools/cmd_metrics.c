/*
 * cmd_metrics.c: `vramshim metrics`, every process in the Prometheus text
 * exposition format (version 0.0.4): one family at a time, each with its
 * HELP and TYPE lines, samples labelled by pid, device and owner. Label
 * values are escaped as the format asks (backslash, quote, newline).
 */
#include "client.h"
#include "cmd.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char metrics_usage[] =
    "usage: vramshim metrics\n"
    "Prints every process running under vramshim for this user in the Prometheus\n"
    "text exposition format, for a node exporter's textfile collector or a scrape.\n";

static void label_value(const char *s)
{
    for (; s && *s; s++) {
        if (*s == '\\' || *s == '"')
            printf("\\%c", *s);
        else if (*s == '\n')
            printf("\\n");
        else
            putchar(*s);
    }
}

static void family(const char *name, const char *type, const char *help)
{
    printf("# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

static long long num(json_t *obj, const char *key)
{
    return (long long)json_integer_value(json_object_get(obj, key));
}

/* Per process: one sample from a member of the document's top level object
 * `section` (or the top level itself when section is NULL). */
static void per_process(json_t *all, const char *name, const char *type, const char *help,
                        const char *section, const char *key)
{
    family(name, type, help);
    size_t i;
    json_t *st;
    json_array_foreach(all, i, st) {
        json_t *obj = section ? json_object_get(st, section) : st;
        json_t *v = json_object_get(obj, key);
        if (!json_is_number(v))
            continue;
        printf("%s{pid=\"%lld\"} %.17g\n", name, num(st, "pid"), json_number_value(v));
    }
}

static void per_device(json_t *all, const char *name, const char *help, const char *key)
{
    family(name, "gauge", help);
    size_t i, d;
    json_t *st, *dev;
    json_array_foreach(all, i, st) json_array_foreach(json_object_get(st, "devices"), d, dev)
    {
        json_t *v = json_object_get(dev, key);
        if (json_is_integer(v))
            printf("%s{pid=\"%lld\",device=\"%lld\"} %lld\n", name, num(st, "pid"),
                   num(dev, "index"), (long long)json_integer_value(v));
    }
}

static void per_owner(json_t *all, const char *name, const char *help, const char *key)
{
    family(name, "gauge", help);
    size_t i, k;
    json_t *st, *o;
    json_array_foreach(all, i, st) json_array_foreach(json_object_get(st, "owners"), k, o)
    {
        printf("%s{pid=\"%lld\",device=\"%lld\",owner=\"", name, num(st, "pid"), num(o, "device"));
        label_value(json_string_value(json_object_get(o, "name")));
        printf("\"} %lld\n", num(o, key));
    }
}

int cmd_metrics(int argc, char **argv)
{
    if (argc > 1 && (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0)) {
        fputs(metrics_usage, stdout);
        return 0;
    }
    if (argc > 1)
        return cmd_usage_error(metrics_usage, "metrics: unexpected argument '%s'", argv[1]);
    pid_t pids[1024];
    int n = client_list(pids, 1024);
    json_t *all = json_array();
    for (int i = 0; i < n; i++) {
        int code;
        json_t *answer = client_request(pids[i], "{\"cmd\":\"stats\"}", &code);
        if (answer && json_is_true(json_object_get(answer, "ok")))
            json_array_append(all, json_object_get(answer, "stats"));
        json_decref(answer);
    }
    per_process(all, "vramshim_uptime_seconds", "gauge", "Seconds since the process loaded vramshim.",
                NULL, "uptime_s");
    per_device(all, "vramshim_device_allocated_bytes", "Device memory the process allocated.",
               "allocated");
    per_device(all, "vramshim_device_resident_bytes", "Device memory the process holds on the device.",
               "resident");
    per_device(all, "vramshim_device_offloaded_pinned_bytes",
               "Device allocations whose bytes live in page-locked host memory.", "offloaded_pinned");
    per_device(all, "vramshim_device_offloaded_pageable_bytes",
               "Device allocations whose bytes live in pageable host memory.", "offloaded_pageable");
    per_device(all, "vramshim_device_peak_resident_bytes", "Most device memory held at once.",
               "peak_resident");
    per_device(all, "vramshim_device_total_bytes", "The device's memory.", "vram_total");
    per_device(all, "vramshim_device_free_bytes", "Free device memory, as the driver last said.",
               "vram_free");
    per_owner(all, "vramshim_owner_allocated_bytes", "Device memory an owner allocated.", "allocated");
    per_owner(all, "vramshim_owner_resident_bytes", "Device memory an owner holds on the device.",
              "resident");
    per_owner(all, "vramshim_owner_allocations", "Live device allocations of an owner.",
              "allocations");
    per_process(all, "vramshim_pin_limit_bytes", "gauge", "The cap on page-locked host memory.",
                "pinned", "limit");
    per_process(all, "vramshim_pinned_app_bytes", "gauge", "Page-locked host memory the program pinned.",
                "pinned", "app");
    per_process(all, "vramshim_pinned_offload_bytes", "gauge",
                "Page-locked host memory vramshim pinned for offloaded buffers.", "pinned", "offload");
    static const char *const counters[][2] = {
        {"allocs", "Device allocations made."},
        {"frees", "Device allocations released."},
        {"oom_returned", "Calls answered with CUDA_ERROR_OUT_OF_MEMORY."},
        {"evictions", "Buffers moved to host memory."},
        {"restores", "Buffers brought back to the device."},
        {"bytes_evicted", "Bytes moved to host memory."},
        {"bytes_restored", "Bytes brought back to the device."},
        {"launches", "Kernel and graph launches."},
    };
    for (size_t c = 0; c < sizeof counters / sizeof counters[0]; c++) {
        char name[64];
        snprintf(name, sizeof name, "vramshim_%s_total", counters[c][0]);
        per_process(all, name, "counter", counters[c][1], "counters", counters[c][0]);
    }
    json_decref(all);
    return 0;
}

/*
 * cmd_metrics.c: `vramshim metrics`, every process in the Prometheus text
 * exposition format (version 0.0.4): one family at a time, each with its
 * HELP and TYPE lines, samples labelled by pid and command, device index and
 * UUID, and owner. Label values are escaped as the format asks (backslash,
 * quote, newline). The collection and the document are shared with
 * `vramshim exporter` (metrics.h).
 */
#define _GNU_SOURCE 1
#include "client.h"
#include "cmd.h"
#include "metrics.h"

#include <dirent.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

/* Where metrics_collect notes the subdirectory a document came from. */
#define METRICS_DIR_KEY "_socket_subdir"

static const char metrics_usage[] =
    "usage: vramshim metrics\n"
    "Prints every process running under vramshim for this user (sockets in the socket\n"
    "directory and its subdirectories) in the Prometheus text exposition format, for a\n"
    "node exporter's textfile collector; `vramshim exporter` serves the same over HTTP.\n";

static void label_value(FILE *out, const char *s)
{
    for (; s && *s; s++) {
        if (*s == '\\' || *s == '"')
            fprintf(out, "\\%c", *s);
        else if (*s == '\n')
            fputs("\\n", out);
        else
            putc(*s, out);
    }
}

static void family(FILE *out, const char *name, const char *type, const char *help)
{
    fprintf(out, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

static long long num(json_t *obj, const char *key)
{
    return (long long)json_integer_value(json_object_get(obj, key));
}

/* The command line as a label: its first COMMAND_LABEL_MAX bytes, cut
 * before a character that would not fit whole (label values are UTF-8). */
#define COMMAND_LABEL_MAX 120
static void command_label(FILE *out, json_t *st)
{
    const char *cmd = json_string_value(json_object_get(st, "cmd"));
    char buf[COMMAND_LABEL_MAX + 1];
    size_t n = cmd ? strlen(cmd) : 0;
    if (n > COMMAND_LABEL_MAX) {
        n = COMMAND_LABEL_MAX;
        while (n > 0 && ((unsigned char)cmd[n] & 0xc0) == 0x80)
            n--;
    }
    memcpy(buf, cmd ? cmd : "", n);
    buf[n] = '\0';
    fputs(",command=\"", out);
    label_value(out, buf);
    putc('"', out);
}

/* The labels every sample of a process carries: pid, command and, for a
 * process found in a subdirectory of the socket directory, that
 * subdirectory (pids repeat across containers). */
static void process_labels(FILE *out, const char *name, json_t *st)
{
    fprintf(out, "%s{pid=\"%lld\"", name, num(st, "pid"));
    command_label(out, st);
    const char *dir = json_string_value(json_object_get(st, METRICS_DIR_KEY));
    if (dir && *dir) {
        fputs(",dir=\"", out);
        label_value(out, dir);
        putc('"', out);
    }
}

/* ... and a device's samples its index and UUID. */
static void device_labels(FILE *out, json_t *st, long long index)
{
    fprintf(out, ",device=\"%lld\",uuid=\"", index);
    size_t d;
    json_t *dev;
    json_array_foreach(json_object_get(st, "devices"), d, dev) if (num(dev, "index") == index)
        label_value(out, json_string_value(json_object_get(dev, "uuid")));
    putc('"', out);
}

/* Per process: one sample from a member of the document's top level object
 * `section` (or the top level itself when section is NULL). */
static void per_process_scaled(FILE *out, json_t *all, const char *name, const char *type,
                               const char *help, const char *section, const char *key,
                               double scale)
{
    family(out, name, type, help);
    size_t i;
    json_t *st;
    json_array_foreach(all, i, st) {
        json_t *obj = section ? json_object_get(st, section) : st;
        json_t *v = json_object_get(obj, key);
        if (!json_is_number(v))
            continue;
        process_labels(out, name, st);
        fprintf(out, "} %.17g\n", json_number_value(v) * scale);
    }
}

static void per_process(FILE *out, json_t *all, const char *name, const char *type,
                        const char *help, const char *section, const char *key)
{
    per_process_scaled(out, all, name, type, help, section, key, 1);
}

static void per_device(FILE *out, json_t *all, const char *name, const char *help, const char *key)
{
    family(out, name, "gauge", help);
    size_t i, d;
    json_t *st, *dev;
    json_array_foreach(all, i, st) json_array_foreach(json_object_get(st, "devices"), d, dev)
    {
        json_t *v = json_object_get(dev, key);
        if (!json_is_integer(v))
            continue;
        process_labels(out, name, st);
        device_labels(out, st, num(dev, "index"));
        fprintf(out, "} %lld\n", (long long)json_integer_value(v));
    }
}

static void per_owner(FILE *out, json_t *all, const char *name, const char *help, const char *key)
{
    family(out, name, "gauge", help);
    size_t i, k;
    json_t *st, *o;
    json_array_foreach(all, i, st) json_array_foreach(json_object_get(st, "owners"), k, o)
    {
        process_labels(out, name, st);
        device_labels(out, st, num(o, "device"));
        fputs(",owner=\"", out);
        label_value(out, json_string_value(json_object_get(o, "name")));
        fprintf(out, "\"} %lld\n", num(o, key));
    }
}

uint64_t metrics_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

#define MAX_PROCESSES 1024

static void collect_dir(json_t *all, const char *dir, const char *sub, uint64_t deadline_ms)
{
    pid_t pids[MAX_PROCESSES];
    int n = client_list_in(dir, pids, MAX_PROCESSES);
    for (int i = 0; i < n && json_array_size(all) < MAX_PROCESSES; i++) {
        if (deadline_ms && metrics_now_ms() >= deadline_ms)
            return;
        int code;
        json_t *answer = client_request_in(dir, pids[i], "{\"cmd\":\"stats\"}", &code);
        json_t *st = json_object_get(answer, "stats");
        if (json_is_true(json_object_get(answer, "ok")) && json_is_object(st)) {
            json_object_set_new(st, METRICS_DIR_KEY, json_string(sub));
            json_array_append(all, st);
        }
        json_decref(answer);
    }
}

json_t *metrics_collect(uint64_t deadline_ms)
{
    json_t *all = json_array();
    const char *root = client_dir();
    collect_dir(all, root, "", deadline_ms);
    DIR *d = opendir(root);
    struct dirent *e;
    while (d && (e = readdir(d)) != NULL) {
        struct stat st;
        bool is_dir = e->d_type == DT_DIR ||
                      (e->d_type == DT_UNKNOWN &&
                       fstatat(dirfd(d), e->d_name, &st, AT_SYMLINK_NOFOLLOW) == 0 &&
                       S_ISDIR(st.st_mode));
        if (e->d_name[0] == '.' || !is_dir)
            continue;
        char sub[PATH_MAX];
        if (snprintf(sub, sizeof sub, "%s/%s", root, e->d_name) < (int)sizeof sub)
            collect_dir(all, sub, e->d_name, deadline_ms);
    }
    if (d)
        closedir(d);
    return all;
}

int cmd_metrics(int argc, char **argv)
{
    if (argc > 1 && (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0)) {
        fputs(metrics_usage, stdout);
        return 0;
    }
    if (argc > 1)
        return cmd_usage_error(metrics_usage, "metrics: unexpected argument '%s'", argv[1]);
    json_t *all = metrics_collect(0);
    metrics_write(stdout, all);
    json_decref(all);
    return 0;
}

void metrics_write(FILE *out, json_t *all)
{
    per_process(out, all, "vramshim_uptime_seconds", "gauge",
                "Seconds since the process loaded vramshim.", NULL, "uptime_s");
    per_device(out, all, "vramshim_device_allocated_bytes", "Device memory the process allocated.",
               "allocated");
    per_device(out, all, "vramshim_device_resident_bytes",
               "Device memory the process holds on the device.", "resident");
    per_device(out, all, "vramshim_device_offloaded_pinned_bytes",
               "Device allocations whose bytes live in page-locked host memory.",
               "offloaded_pinned");
    per_device(out, all, "vramshim_device_offloaded_pageable_bytes",
               "Device allocations whose bytes live in pageable host memory.",
               "offloaded_pageable");
    per_device(out, all, "vramshim_device_peak_resident_bytes", "Most device memory held at once.",
               "peak_resident");
    per_device(out, all, "vramshim_device_pools_bytes",
               "Device memory the process's memory pools reserve (inside allocated).", "pools");
    per_device(out, all, "vramshim_device_graph_memory_bytes",
               "Device memory reserved for the process's graphs (inside allocated).",
               "graph_memory");
    per_device(out, all, "vramshim_device_total_bytes", "The device's memory.", "vram_total");
    per_device(out, all, "vramshim_device_free_bytes",
               "Free device memory, as the driver last said.", "vram_free");
    per_device(out, all, "vramshim_device_overhead_bytes",
               "Device memory held beyond allocations: contexts, runtime limits, modules.",
               "overhead");
    per_device(out, all, "vramshim_device_arrays_bytes",
               "CUDA arrays (inside the allocated figure).", "arrays");
    per_device(out, all, "vramshim_device_imported_bytes",
               "Memory mapped from other processes' handles, charged to them.", "imported");
    per_owner(out, all, "vramshim_owner_allocated_bytes", "Device memory an owner allocated.",
              "allocated");
    per_owner(out, all, "vramshim_owner_resident_bytes",
              "Device memory an owner holds on the device.", "resident");
    per_owner(out, all, "vramshim_owner_allocations", "Live device allocations of an owner.",
              "allocations");
    per_process(out, all, "vramshim_pin_limit_bytes", "gauge",
                "The cap on page-locked host memory.", "pinned", "limit");
    per_process(out, all, "vramshim_pinned_app_bytes", "gauge",
                "Page-locked host memory the program pinned.", "pinned", "app");
    per_process(out, all, "vramshim_pinned_offload_bytes", "gauge",
                "Page-locked host memory vramshim pinned for offloaded buffers.", "pinned",
                "offload");
    static const char *const counters[][2] = {
        {"allocs", "Device allocations made."},
        {"frees", "Device allocations released."},
        {"oom_returned", "Calls answered with CUDA_ERROR_OUT_OF_MEMORY."},
        {"evictions", "Buffers moved to host memory."},
        {"restores", "Buffers brought back to the device."},
        {"bytes_evicted", "Bytes moved to host memory."},
        {"bytes_restored", "Bytes brought back to the device."},
        {"launches", "Kernel and graph launches."},
        {"fast_copies", "Pageable copies vramshim staged with its copy threads."},
        {"fast_copy_bytes", "Bytes moved by those copies."},
        {"fast_copy_fallbacks",
         "Copies big enough to stage that went to the driver: every staging slot was busy."},
        {"prefaults", "Ranges faulted in by the copy threads before the driver pinned them."},
        {"prefault_bytes", "Bytes faulted in before pinning."},
        {"relief_given", "Times this process moved buffers out for another process on its device."},
        {"relief_taken", "Times other processes on the device moved buffers out for this one."},
        {"relief_bytes_given", "Bytes this process moved out for other processes."},
        {"relief_bytes_taken", "Bytes other processes moved out for this one."},
    };
    for (size_t c = 0; c < sizeof counters / sizeof counters[0]; c++) {
        char name[64];
        snprintf(name, sizeof name, "vramshim_%s_total", counters[c][0]);
        per_process(out, all, name, "counter", counters[c][1], "counters", counters[c][0]);
    }
    /* the time they took, so a rate() of bytes over seconds is GB/s */
    per_process_scaled(out, all, "vramshim_fast_copy_seconds_total", "counter",
                       "Seconds the program spent in staged copies.", "counters",
                       "fast_copy_ns", 1e-9);
    per_process_scaled(out, all, "vramshim_prefault_seconds_total", "counter",
                       "Seconds spent faulting in ranges before pinning.", "counters",
                       "prefault_ns", 1e-9);
}

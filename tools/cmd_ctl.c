/*
 * cmd_ctl.c: the tool's commands that talk to running processes: ls,
 * stats, set, evict and free. Exit codes as the contract fixes them: 0 done,
 * 1 the target refused or failed, 2 usage error, 3 no such process.
 */
#include "client.h"
#include "cmd.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char ls_usage[] =
    "usage: vramshim ls [--json]\n"
    "Lists every live process running under vramshim for this user: pid, device\n"
    "memory held, uptime and command. --json prints one JSON array of their stats.\n"
    "In a socket directory shared by a group (VRAMSHIM_SOCKET_DIR with every group\n"
    "permission, none for others) the group's other users' processes are listed\n"
    "too; they answer stats, not set, evict or free.\n";
static const char stats_usage[] =
    "usage: vramshim stats [--json] PID\n"
    "Shows one process: per device, per owner, counters. --json prints the stats\n"
    "document (fields in vramshim(7)).\n";
static const char set_usage[] =
    "usage: vramshim set PID KEY=VALUE...\n"
    "Changes settings of a running process. Keys: vram_limit, reserve_vram, pin_limit,\n"
    "offload, idle_ms, priority, idle_release, relief_ms, owner_limit; values as in the\n"
    "VRAMSHIM_* variables (none clears vram_limit and owner_limit, default restores\n"
    "pin_limit).\n";
static const char evict_usage[] =
    "usage: vramshim evict PID [--owner N] [--bytes S]\n"
    "Offloads idle buffers of a process now (untouched for its idle_ms): all of them,\n"
    "or those of owner N, or until S bytes have moved. Prints the bytes moved.\n";
static const char free_usage[] =
    "usage: vramshim free PID\n"
    "Offloads everything of a process that can be offloaded, idle or not (like an\n"
    "application's \"free memory\" button). Prints the bytes moved.\n";

static bool wants_help(int argc, char **argv)
{
    for (int i = 1; i < argc; i++)
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0)
            return true;
    return false;
}

static uint64_t num(json_t *obj, const char *key)
{
    return (uint64_t)json_integer_value(json_object_get(obj, key));
}

static const char *mib(uint64_t bytes, char *buf, size_t cap)
{
    snprintf(buf, cap, "%.1f MiB", (double)bytes / (1 << 20));
    return buf;
}

/* ---- ls ------------------------------------------------------------------ */

int cmd_ls(int argc, char **argv)
{
    if (wants_help(argc, argv)) {
        fputs(ls_usage, stdout);
        return 0;
    }
    bool json = false;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--json") == 0)
            json = true;
        else
            return cmd_usage_error(ls_usage, "ls: unexpected argument '%s'", argv[i]);
    }
    pid_t pids[1024];
    uint64_t ns[1024];
    int n = client_list_all(pids, ns, 1024);
    json_t *all = json_array();
    if (!json)
        printf("%-8s %-14s %-8s %s\n", "PID", "RESIDENT", "UPTIME", "COMMAND");
    for (int i = 0; i < n; i++) {
        int code;
        json_t *answer = client_request_ns(pids[i], ns[i], "{\"cmd\":\"hello\"}", &code);
        if (answer == NULL)
            continue; /* gone between the listing and the question */
        json_t *st = json_object_get(answer, "hello");
        if (json) {
            json_array_append(all, st);
        } else {
            uint64_t resident = 0;
            size_t d;
            json_t *dev;
            json_array_foreach(json_object_get(st, "devices"), d, dev) resident += num(dev, "resident");
            char b[32];
            char where[48] = "";
            if (client_pidns_foreign(ns[i]))
                snprintf(where, sizeof where, "  [pid namespace %llu]",
                         (unsigned long long)ns[i]);
            printf("%-8d %-14s %-8.0f %s%s\n", (int)pids[i], mib(resident, b, sizeof b),
                   json_number_value(json_object_get(st, "uptime_s")),
                   json_string_value(json_object_get(st, "cmd")), where);
        }
        json_decref(answer);
    }
    if (json)
        cmd_print_json(all, 0);
    json_decref(all);
    return 0;
}

/* ---- stats --------------------------------------------------------------- */

static void print_stats(json_t *st)
{
    char a[32], b[32], c[32];
    printf("pid %lld  %s  up %.0f s\n", (long long)json_integer_value(json_object_get(st, "pid")),
           json_string_value(json_object_get(st, "cmd")),
           json_number_value(json_object_get(st, "uptime_s")));
    size_t i;
    json_t *dev;
    json_array_foreach(json_object_get(st, "devices"), i, dev) {
        json_t *limit = json_array_get(json_object_get(json_object_get(st, "config"), "vram_limit"), i);
        printf("device %lld %s: resident %s (peak %s), limit %s\n",
               (long long)num(dev, "index"), json_string_value(json_object_get(dev, "name")),
               mib(num(dev, "resident"), a, sizeof a), mib(num(dev, "peak_resident"), b, sizeof b),
               json_is_integer(limit) ? mib((uint64_t)json_integer_value(limit), c, sizeof c) : "none");
    }
    json_t *pinned = json_object_get(st, "pinned");
    printf("pinned host: %s of %s\n", mib(num(pinned, "app"), a, sizeof a),
           mib(num(pinned, "limit"), b, sizeof b));
    json_t *o;
    json_array_foreach(json_object_get(st, "owners"), i, o)
        printf("owner %-20s device %lld: %s in %llu allocations (peak %s)\n",
               json_string_value(json_object_get(o, "name")), (long long)num(o, "device"),
               mib(num(o, "allocated"), a, sizeof a), (unsigned long long)num(o, "allocations"),
               mib(num(o, "peak"), b, sizeof b));
    json_t *cn = json_object_get(st, "counters");
    printf("allocs %llu, frees %llu, OOM returned %llu, launches %llu\n",
           (unsigned long long)num(cn, "allocs"), (unsigned long long)num(cn, "frees"),
           (unsigned long long)num(cn, "oom_returned"), (unsigned long long)num(cn, "launches"));
}

int cmd_stats(int argc, char **argv)
{
    if (wants_help(argc, argv)) {
        fputs(stats_usage, stdout);
        return 0;
    }
    bool json = false;
    const char *pid_arg = NULL;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--json") == 0)
            json = true;
        else if (pid_arg == NULL)
            pid_arg = argv[i];
        else
            return cmd_usage_error(stats_usage, "stats: unexpected argument '%s'", argv[i]);
    }
    pid_t pid;
    if (!client_parse_pid(pid_arg, &pid))
        return cmd_usage_error(stats_usage, "stats: '%s' is not a PID", pid_arg ? pid_arg : "");
    int code;
    json_t *answer = client_request(pid, "{\"cmd\":\"stats\"}", &code);
    if (answer == NULL)
        return code;
    if (!client_ok(answer, pid)) {
        json_decref(answer);
        return EXIT_REFUSED;
    }
    json_t *st = json_object_get(answer, "stats");
    if (json)
        cmd_print_json(st, JSON_PRESERVE_ORDER);
    else
        print_stats(st);
    json_decref(answer);
    return 0;
}

/* ---- set, evict, free ------------------------------------------------------ */

/* Send one request; on success, print the bytes moved when `report_moved`
 * (evict and free). Returns the exit code. */
static int send_request(pid_t pid, json_t *request, bool report_moved)
{
    char *line = json_dumps(request, JSON_COMPACT);
    int code;
    json_t *answer = client_request(pid, line, &code);
    free(line);
    if (answer == NULL)
        return code;
    code = client_ok(answer, pid) ? 0 : EXIT_REFUSED;
    if (code == 0 && report_moved) {
        char b[32];
        uint64_t moved = (uint64_t)json_integer_value(json_object_get(answer, "moved"));
        printf("%d: moved %s (%llu bytes) to host memory\n", (int)pid, mib(moved, b, sizeof b),
               (unsigned long long)moved);
    }
    json_decref(answer);
    return code;
}

int cmd_set(int argc, char **argv)
{
    if (wants_help(argc, argv)) {
        fputs(set_usage, stdout);
        return 0;
    }
    pid_t pid;
    if (argc < 2 || !client_parse_pid(argv[1], &pid))
        return cmd_usage_error(set_usage, "set: '%s' is not a PID", argc > 1 ? argv[1] : "");
    if (argc < 3)
        return cmd_usage_error(set_usage, "set: no KEY=VALUE given%s", "");
    for (int i = 2; i < argc; i++) {
        const char *eq = strchr(argv[i], '=');
        if (eq == NULL || eq == argv[i] || eq[1] == '\0')
            return cmd_usage_error(set_usage, "set: '%s' is not KEY=VALUE", argv[i]);
    }
    for (int i = 2; i < argc; i++) {
        const char *eq = strchr(argv[i], '=');
        json_t *req = json_pack("{s:s, s:s%, s:s}", "cmd", "set", "key", argv[i],
                                (size_t)(eq - argv[i]), "value", eq + 1);
        int code = send_request(pid, req, false);
        json_decref(req);
        if (code != 0)
            return code;
        printf("%d: %s\n", (int)pid, argv[i]);
    }
    return 0;
}

int cmd_evict(int argc, char **argv)
{
    if (wants_help(argc, argv)) {
        fputs(evict_usage, stdout);
        return 0;
    }
    pid_t pid;
    if (argc < 2 || !client_parse_pid(argv[1], &pid))
        return cmd_usage_error(evict_usage, "evict: '%s' is not a PID", argc > 1 ? argv[1] : "");
    json_t *req = json_pack("{s:s}", "cmd", "evict");
    for (int i = 2; i < argc; i++) {
        bool has_value = i + 1 < argc;
        if (strcmp(argv[i], "--owner") == 0 && has_value) {
            json_object_set_new(req, "owner", json_string(argv[++i]));
        } else if (strcmp(argv[i], "--bytes") == 0 && has_value) {
            uint64_t bytes;
            if (vs_parse_size(argv[++i], &bytes)) {
                json_decref(req);
                return cmd_usage_error(evict_usage, "evict: --bytes '%s' is not a size", argv[i]);
            }
            json_object_set_new(req, "bytes", json_integer((json_int_t)bytes));
        } else {
            json_decref(req);
            return cmd_usage_error(evict_usage, "evict: unexpected argument '%s'", argv[i]);
        }
    }
    int code = send_request(pid, req, true);
    json_decref(req);
    return code;
}

int cmd_free(int argc, char **argv)
{
    if (wants_help(argc, argv)) {
        fputs(free_usage, stdout);
        return 0;
    }
    pid_t pid;
    if (argc != 2 || !client_parse_pid(argv[1], &pid))
        return cmd_usage_error(free_usage, "free: expected exactly one PID%s", "");
    json_t *req = json_pack("{s:s}", "cmd", "free");
    int code = send_request(pid, req, true);
    json_decref(req);
    return code;
}

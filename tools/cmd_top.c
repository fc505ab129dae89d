/*
 * cmd_top.c: `vramshim top`, a live view of every process running under
 * vramshim for this user, redrawn every second until q.
 *
 * Each frame asks every socket for its stats (the same request as `stats
 * --json`), so top holds no state of its own except the previous eviction
 * counter of each pid, from which the evictions per second are worked out.
 * The terminal is driven with plain ANSI sequences and termios rather than
 * curses: the alternate screen, a hidden cursor, and non-canonical input so
 * a single q is read at once. Whatever ends top (q, a signal, a failed
 * write) puts the terminal back as it was. --once prints one frame without
 * touching the terminal, for scripts and for a pipe.
 */
#include "client.h"
#include "cmd.h"

#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>

static const char top_usage[] =
    "usage: vramshim top [--once] [--interval SECONDS]\n"
    "Live view of every process running under vramshim for this user, redrawn every\n"
    "second (or every SECONDS, 0.1 to 60); q quits. Grouped by physical device (its\n"
    "UUID): memory in use by all of them, the device's total and free; then each\n"
    "process on it: resident, limit, offloaded (pinned + pageable), evictions per\n"
    "second, OOM returned, relief given/taken (times it moved buffers out for another\n"
    "process / others did for it), top owners;\n"
    "below, what each process loaded through vramshim's fast copies (bytes, count, GB/s).\n"
    "--once prints one frame to stdout and exits (evictions per second show as -).\n";

#define TOP_MAX_PIDS 1024

/* The previous sample of each pid's eviction counter. */
struct rate_sample {
    pid_t pid;
    uint64_t evictions;
    double at;
};
static struct rate_sample prev[TOP_MAX_PIDS], cur[TOP_MAX_PIDS];
static int n_prev, n_cur;

static volatile sig_atomic_t stop_signal, resized;
static struct termios saved_tio;
static bool tio_saved;

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

static uint64_t num(json_t *obj, const char *key)
{
    return (uint64_t)json_integer_value(json_object_get(obj, key));
}

/* -1: no earlier sample of this pid, so no rate yet. */
static double eviction_rate(pid_t pid, uint64_t evictions, double at)
{
    if (n_cur < TOP_MAX_PIDS)
        cur[n_cur++] = (struct rate_sample){pid, evictions, at};
    for (int i = 0; i < n_prev; i++)
        if (prev[i].pid == pid && at > prev[i].at && evictions >= prev[i].evictions)
            return (double)(evictions - prev[i].evictions) / (at - prev[i].at);
    return -1;
}

/* ---- one frame, as text ----------------------------------------------------- */

struct frame {
    char *buf;
    size_t len, cap;
    int width; /* lines are cut here; 0: never */
    int line_start;
};

static void emit(struct frame *f, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void emit(struct frame *f, const char *fmt, ...)
{
    char piece[1024];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(piece, sizeof piece, fmt, ap);
    va_end(ap);
    if (n < 0)
        return;
    for (const char *p = piece; *p; p++) {
        if (*p == '\n') {
            f->line_start = (int)f->len + 1;
        } else if (f->width > 0 && (int)f->len - f->line_start >= f->width) {
            continue; /* past the right edge: dropped, not wrapped */
        }
        if (f->len + 1 >= f->cap) {
            size_t cap = f->cap ? f->cap * 2 : 8192;
            char *b = realloc(f->buf, cap);
            if (b == NULL)
                return;
            f->buf = b;
            f->cap = cap;
        }
        f->buf[f->len++] = *p;
        f->buf[f->len] = '\0';
    }
}

static const char *size_text(uint64_t bytes, char *buf, size_t cap)
{
    return vs_human_size(bytes, buf, cap);
}

/* The owners of one device, largest first, as "name size, ...". */
static void top_owners(json_t *st, int device, char *out, size_t cap)
{
    json_t *picked[4] = {0};
    size_t i;
    json_t *o;
    json_array_foreach(json_object_get(st, "owners"), i, o) {
        if ((int)num(o, "device") != device || num(o, "allocated") == 0)
            continue;
        for (int k = 0; k < 4; k++) {
            if (picked[k] == NULL || num(o, "allocated") > num(picked[k], "allocated")) {
                memmove(&picked[k + 1], &picked[k], (size_t)(3 - k) * sizeof picked[0]);
                picked[k] = o;
                break;
            }
        }
    }
    out[0] = '\0';
    size_t len = 0;
    for (int k = 0; k < 4 && picked[k]; k++) {
        char s[32];
        int n = snprintf(out + len, cap - len, "%s%s %s", k ? ", " : "",
                         json_string_value(json_object_get(picked[k], "name")),
                         size_text(num(picked[k], "allocated"), s, sizeof s));
        if (n < 0 || (size_t)n >= cap - len)
            break;
        len += (size_t)n;
    }
}

/* "/usr/bin/python3 train.py" shows as "python3 train.py". */
static const char *short_command(const char *cmd)
{
    if (cmd == NULL)
        return "?";
    const char *space = strchr(cmd, ' ');
    const char *end = space ? space : cmd + strlen(cmd);
    const char *start = cmd;
    for (const char *p = cmd; p < end; p++)
        if (*p == '/' && p + 1 < end)
            start = p + 1;
    return start;
}

/* One physical device: keyed by UUID (indices differ between processes
 * under CUDA_VISIBLE_DEVICES), else by index. */
struct device_sum {
    char key[64], name[64];
    uint64_t resident, offloaded, total, free;
    bool has_free;
};

static void device_key(json_t *dv, size_t index, char *out, size_t cap)
{
    const char *uuid = json_string_value(json_object_get(dv, "uuid"));
    if (uuid)
        snprintf(out, cap, "%s", uuid);
    else
        snprintf(out, cap, "device %zu", index);
}

static bool holds(json_t *dv)
{
    return num(dv, "allocated") || num(dv, "offloaded_pinned") || num(dv, "offloaded_pageable") ||
           num(dv, "overhead");
}

/* One process's row for one of its devices. */
static void draw_row(struct frame *f, json_t *st, size_t d, json_t *dv, double rate, bool rates)
{
    char a[32], b[32], c[32], owners[256], r[16], relief[32];
    json_t *counters = json_object_get(st, "counters");
    json_t *limit = json_array_get(json_object_get(json_object_get(st, "config"), "vram_limit"), d);
    top_owners(st, (int)d, owners, sizeof owners);
    if (rates && rate >= 0)
        snprintf(r, sizeof r, "%.1f", rate);
    else
        snprintf(r, sizeof r, "-");
    snprintf(relief, sizeof relief, "%llu/%llu", (unsigned long long)num(counters, "relief_given"),
             (unsigned long long)num(counters, "relief_taken"));
    emit(f, "%-8d %-3zu %9s %9s %9s %8s %5llu %-9s %-16.16s %s\n", (int)num(st, "pid"), d,
         size_text(num(dv, "resident"), a, sizeof a),
         json_is_integer(limit) ? size_text((uint64_t)json_integer_value(limit), b, sizeof b)
                                : "none",
         size_text(num(dv, "offloaded_pinned") + num(dv, "offloaded_pageable"), c, sizeof c), r,
         (unsigned long long)num(counters, "oom_returned"), relief,
         short_command(json_string_value(json_object_get(st, "cmd"))), owners);
}

static void draw(struct frame *f, json_t *all, bool rates)
{
    struct device_sum dev[VS_MAX_DEVICES] = {0};
    int n_dev = 0;
    size_t i, d;
    json_t *st, *dv;
    json_array_foreach(all, i, st) {
        json_array_foreach(json_object_get(st, "devices"), d, dv) {
            char key[64];
            device_key(dv, d, key, sizeof key);
            int k = 0;
            while (k < n_dev && strcmp(dev[k].key, key) != 0)
                k++;
            if (k == n_dev) {
                if (n_dev == VS_MAX_DEVICES)
                    continue;
                n_dev++;
                snprintf(dev[k].key, sizeof dev[k].key, "%s", key);
            }
            struct device_sum *s = &dev[k];
            snprintf(s->name, sizeof s->name, "%s",
                     json_string_value(json_object_get(dv, "name")) ?: "?");
            s->resident += num(dv, "resident");
            s->offloaded += num(dv, "offloaded_pinned") + num(dv, "offloaded_pageable");
            if (json_is_integer(json_object_get(dv, "vram_total")))
                s->total = num(dv, "vram_total");
            if (json_is_integer(json_object_get(dv, "vram_free"))) {
                s->free = num(dv, "vram_free");
                s->has_free = true;
            }
        }
    }
    time_t t = time(NULL);
    struct tm tm;
    localtime_r(&t, &tm);
    emit(f, "vramshim top - %02d:%02d:%02d - %zu process%s%s\n", tm.tm_hour, tm.tm_min,
         tm.tm_sec, json_array_size(all), json_array_size(all) == 1 ? "" : "es",
         rates ? "  (q quits)" : "");
    /* each pid's rate is worked out once a frame, whatever its devices */
    double at = now_s(), rate[TOP_MAX_PIDS];
    json_array_foreach(all, i, st) {
        if (i < TOP_MAX_PIDS)
            rate[i] = eviction_rate((pid_t)num(st, "pid"),
                                    num(json_object_get(st, "counters"), "evictions"), at);
    }
    char a[32], b[32], c[32], e[32];
    for (int k = 0; k < n_dev; k++) {
        emit(f, "\n%s (%s): in use %s, offloaded %s, total %s, free %s\n", dev[k].name,
             dev[k].key, size_text(dev[k].resident, a, sizeof a),
             size_text(dev[k].offloaded, b, sizeof b),
             dev[k].total ? size_text(dev[k].total, c, sizeof c) : "?",
             dev[k].has_free ? size_text(dev[k].free, e, sizeof e) : "?");
        emit(f, "%-8s %-3s %9s %9s %9s %8s %5s %-9s %-16s %s\n", "PID", "DEV", "RESIDENT",
             "LIMIT", "OFFLOADED", "EVICT/S", "OOM", "RELIEF", "COMMAND", "TOP OWNERS");
        json_array_foreach(all, i, st) {
            json_array_foreach(json_object_get(st, "devices"), d, dv) {
                char key[64];
                device_key(dv, d, key, sizeof key);
                if (holds(dv) && strcmp(key, dev[k].key) == 0)
                    draw_row(f, st, d, dv, i < TOP_MAX_PIDS ? rate[i] : -1, rates);
            }
        }
    }
    bool idle_header = false;
    json_array_foreach(all, i, st) { /* processes that hold nothing on any device */
        bool any = false;
        json_array_foreach(json_object_get(st, "devices"), d, dv) any |= holds(dv);
        if (any)
            continue;
        if (!idle_header)
            emit(f, "\nholding no device memory:\n");
        idle_header = true;
        emit(f, "%-8d %-3s %9s %9s %9s %8s %5llu %-9s %-16.16s\n", (int)num(st, "pid"), "-",
             "0B", "-", "0B", "-",
             (unsigned long long)num(json_object_get(st, "counters"), "oom_returned"), "-",
             short_command(json_string_value(json_object_get(st, "cmd"))));
    }
    json_array_foreach(all, i, st) { /* memory beside the allocations, per device */
        json_array_foreach(json_object_get(st, "devices"), d, dv) {
            uint64_t over = num(dv, "overhead"), arrays = num(dv, "arrays"),
                     imported = num(dv, "imported");
            const char *source = json_string_value(json_object_get(dv, "overhead_source"));
            if (over || arrays || imported)
                emit(f, "%-8d dev %zu: overhead %s (%s), arrays %s, imported %s\n",
                     (int)num(st, "pid"), d, size_text(over, a, sizeof a), source ? source : "-",
                     size_text(arrays, b, sizeof b), size_text(imported, c, sizeof c));
        }
    }
    json_array_foreach(all, i, st) { /* fast copies: bytes per nanosecond is GB/s */
        json_t *counters = json_object_get(st, "counters");
        uint64_t copies = num(counters, "fast_copies"), ns = num(counters, "fast_copy_ns");
        if (copies == 0)
            continue;
        emit(f, "%-8d loaded %s in %llu fast copies, %.1f GB/s\n", (int)num(st, "pid"),
             size_text(num(counters, "fast_copy_bytes"), a, sizeof a),
             (unsigned long long)copies,
             ns ? (double)num(counters, "fast_copy_bytes") / (double)ns : 0.0);
    }
    memcpy(prev, cur, sizeof cur[0] * (size_t)n_cur);
    n_prev = n_cur;
    n_cur = 0;
}

/* Every live process's stats, in pid order. */
static json_t *collect(void)
{
    pid_t pids[TOP_MAX_PIDS];
    int n = client_list(pids, TOP_MAX_PIDS);
    json_t *all = json_array();
    for (int i = 0; i < n; i++) {
        int code;
        /* a process that went away, or hangs, is left out of this frame;
         * client_request has already said why on stderr, which top hides */
        json_t *answer = client_request(pids[i], "{\"cmd\":\"stats\"}", &code);
        if (answer == NULL)
            continue;
        json_t *st = json_object_get(answer, "stats");
        if (json_is_object(st))
            json_array_append(all, st);
        json_decref(answer);
    }
    return all;
}

/* ---- the terminal -------------------------------------------------------------- */

static void on_signal(int sig)
{
    if (sig == SIGWINCH)
        resized = 1;
    else
        stop_signal = sig;
}

static void write_all(const char *s, size_t len)
{
    while (len > 0) {
        ssize_t n = write(STDOUT_FILENO, s, len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return;
        s += n;
        len -= (size_t)n;
    }
}

static void terminal_enter(void)
{
    if (tcgetattr(STDIN_FILENO, &saved_tio) == 0) {
        struct termios raw = saved_tio;
        raw.c_lflag &= ~(tcflag_t)(ICANON | ECHO); /* ISIG stays: ^C still stops us */
        raw.c_cc[VMIN] = 0;
        raw.c_cc[VTIME] = 0;
        tio_saved = tcsetattr(STDIN_FILENO, TCSANOW, &raw) == 0;
    }
    static const char enter[] = "\033[?1049h\033[?25l";
    write_all(enter, sizeof enter - 1);
}

static void terminal_leave(void)
{
    static const char leave[] = "\033[?25h\033[?1049l";
    write_all(leave, sizeof leave - 1);
    if (tio_saved)
        tcsetattr(STDIN_FILENO, TCSANOW, &saved_tio);
}

static int terminal_width(void)
{
    struct winsize ws;
    if (ioctl(STDOUT_FILENO, TIOCGWINSZ, &ws) == 0 && ws.ws_col > 0)
        return ws.ws_col;
    return 0;
}

/* Wait up to `seconds` for a key; true when it asks to quit. */
static bool quit_pressed(double seconds)
{
    double until = now_s() + seconds;
    while (!stop_signal && !resized) {
        int left_ms = (int)((until - now_s()) * 1000);
        if (left_ms <= 0)
            return false;
        struct pollfd p = {.fd = STDIN_FILENO, .events = POLLIN};
        int r = poll(&p, 1, left_ms);
        if (r < 0 && errno != EINTR)
            return false;
        if (r > 0) {
            char keys[64];
            ssize_t n = read(STDIN_FILENO, keys, sizeof keys);
            if (n == 0)
                return true; /* end of input: nobody is left to press q */
            for (ssize_t k = 0; k < n; k++)
                if (keys[k] == 'q' || keys[k] == 'Q')
                    return true;
        }
    }
    return stop_signal != 0;
}

static int run_live(double interval)
{
    struct sigaction sa = {.sa_handler = on_signal};
    sigemptyset(&sa.sa_mask);
    int sigs[] = {SIGINT, SIGTERM, SIGHUP, SIGWINCH};
    for (size_t i = 0; i < sizeof sigs / sizeof sigs[0]; i++)
        sigaction(sigs[i], &sa, NULL);
    /* one process that cannot be reached would print over the frame */
    if (freopen("/dev/null", "w", stderr) == NULL)
        return EXIT_REFUSED;
    terminal_enter();
    struct frame f = {0};
    do {
        resized = 0;
        f.len = 0;
        f.line_start = 0;
        f.width = terminal_width();
        emit(&f, "%s", "\033[H\033[2J");
        f.line_start = (int)f.len;
        json_t *all = collect();
        draw(&f, all, true);
        json_decref(all);
        if (f.buf)
            write_all(f.buf, f.len);
    } while (!quit_pressed(interval));
    terminal_leave();
    free(f.buf);
    return 0;
}

int cmd_top(int argc, char **argv)
{
    bool once = false;
    double interval = 1.0;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            fputs(top_usage, stdout);
            return 0;
        }
        if (strcmp(argv[i], "--once") == 0) {
            once = true;
        } else if (strcmp(argv[i], "--interval") == 0 && i + 1 < argc) {
            char *end;
            errno = 0;
            interval = strtod(argv[++i], &end);
            if (errno || end == argv[i] || *end || !(interval >= 0.1 && interval <= 60))
                return cmd_usage_error(top_usage, "top: --interval '%s' is not 0.1 to 60 seconds",
                                       argv[i]);
        } else {
            return cmd_usage_error(top_usage, "top: unexpected argument '%s'", argv[i]);
        }
    }
    if (once) {
        struct frame f = {0};
        json_t *all = collect();
        draw(&f, all, false);
        json_decref(all);
        if (f.buf)
            fputs(f.buf, stdout);
        free(f.buf);
        return 0;
    }
    return run_live(interval);
}

/*
 * log.c: one line per event, to stderr or VRAMSHIM_LOG_FILE.
 *
 * vramshim lives inside someone else's process, so a log line is formatted
 * into a stack buffer and written with a single write(2): no stdio state is
 * shared with the program, no allocation, and lines from several threads
 * never interleave.
 */
#include "core.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static _Atomic int log_level = VS_LOG_WARN;
static _Atomic int log_fd = 2;
static _Atomic int log_pid;

static const char *const level_names[] = {"error", "warn", "info", "debug"};

/* Lines about the settings, held until the process first loads the driver:
 * a shell, `timeout` or `ls` that merely inherits a bad VRAMSHIM_* value
 * says nothing, and the line comes once, from the program that uses CUDA. */
static bool holding;
static char held[4096];
static size_t held_len;

void vs_log_set_level(enum vs_log_level level) { log_level = level; }
enum vs_log_level vs_log_get_level(void) { return (enum vs_log_level)log_level; }
void vs_log_set_fd(int fd) { log_fd = fd; }
int vs_log_get_fd(void) { return log_fd; }
void vs_log_refresh_pid(void) { log_pid = (int)getpid(); }
void vs_log_hold(bool hold) { holding = hold; }

void vs_log_release_held(void)
{
    if (held_len == 0)
        return;
    ssize_t w = write(log_fd, held, held_len);
    (void)w;
    held_len = 0;
}

/* Only a regular file, opened so that nothing can stall or redirect us: no
 * symlink is followed (another user's link in /tmp would aim our lines at
 * our own files), and a FIFO without a reader fails at once (ENXIO) rather
 * than blocking every process that inherits LD_PRELOAD in its constructor. */
int vs_log_open_file(const char *path)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK,
                  0600);
    if (fd < 0)
        return errno == ELOOP ? -ELOOP : -errno;
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        close(fd);
        return -EINVAL;
    }
    log_fd = fd;
    return 0;
}

void vs_log(enum vs_log_level level, const char *fmt, ...)
{
    if ((int)level > log_level)
        return;
    if (log_pid == 0)
        vs_log_refresh_pid();
    char line[1024];
    int n = snprintf(line, sizeof line, "vramshim[%d]: %s: ", log_pid,
                     level_names[level]);
    va_list ap;
    va_start(ap, fmt);
    int m = vsnprintf(line + n, sizeof line - (size_t)n - 1, fmt, ap);
    va_end(ap);
    if (m < 0)
        m = 0;
    size_t len = (size_t)n + (size_t)m;
    if (len > sizeof line - 2)
        len = sizeof line - 2;
    line[len++] = '\n';
    if (holding) {
        if (held_len + len <= sizeof held) {
            memcpy(held + held_len, line, len);
            held_len += len;
        }
        return;
    }
    ssize_t w = write(log_fd, line, len);
    (void)w; /* nowhere left to report a failed log write */
}

const char *vs_human_size(uint64_t bytes, char *buf, size_t cap)
{
    static const char units[] = "BKMGT";
    double v = (double)bytes;
    int u = 0;
    while (v >= 1024 && u < 4) {
        v /= 1024;
        u++;
    }
    snprintf(buf, cap, u ? "%.1f%c" : "%.0f%c", v, units[u]);
    return buf;
}

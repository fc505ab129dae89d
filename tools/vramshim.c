/*
 * vramshim: the command-line tool.
 *
 * `vramshim run` starts a program under the library: it checks every option
 * with the library's own parsers (so a value the tool accepts is a value
 * the library accepts), sets LD_PRELOAD and the VRAMSHIM_* variables, and
 * execs. The commands that talk to running processes (ls, stats, top,
 * evict, free, set, metrics, exporter) live in cmd_*.c and reach each process through
 * its control socket (client.c).
 *
 * Exit codes (interface.md): 0 success, 1 the target refused or failed,
 * 2 usage error, 3 no such process.
 */
#include "config.h"
#include "client.h"
#include "cmd.h"

#include <errno.h>
#include <getopt.h>
#include <libgen.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#ifndef VRAMSHIM_LIBDIR
#define VRAMSHIM_LIBDIR "/usr/local/lib"
#endif


static const char usage_text[] =
    "usage: vramshim COMMAND [OPTIONS]\n"
    "\n"
    "Commands:\n"
    "  run [--vram-limit S] [--reserve S] [--pin-limit S] [--offload M] [--owner N] -- CMD ARGS...\n"
    "                     run CMD under libvramshim\n"
    "  ls [--json]        list every process running under vramshim for this user\n"
    "                     (and its group's, in a socket directory shared by a group)\n"
    "  stats [--json] PID show one process: per device, per owner, counters\n"
    "  set PID KEY=VALUE...\n"
    "                     change vram_limit, reserve_vram, pin_limit, offload, idle_ms,\n"
    "                     priority, idle_release, relief_ms, owner_limit of a running process\n"
    "  evict PID [--owner N] [--bytes S] | free PID\n"
    "                     move idle buffers / everything to host memory now\n"
    "  metrics            every process in the Prometheus text format\n"
    "  exporter [--listen ADDR:PORT]\n"
    "                     serve those metrics over HTTP (/metrics, /healthz)\n"
    "  top [--once] [--interval S]\n"
    "                     live view of every process, by physical device (q quits)\n"
    "  devices [--json]   each physical device: total, free, the processes on it\n"
    "Exit codes: 0 done, 1 the target refused or failed, 2 usage error, 3 no such process.\n"
    "\n"
    "Sizes: 8G, 512M, 4096 (B/K/M/G/T, binary), or a percentage: 40%.\n"
    "Run 'vramshim COMMAND --help' for one command. See vramshim(7) for the variables.\n";

static const char run_usage[] =
    "usage: vramshim run [--vram-limit S] [--reserve S] [--pin-limit S] [--offload M] [--owner N] -- CMD ARGS...\n"
    "\n"
    "Runs CMD with libvramshim preloaded.\n"
    "  --vram-limit S  device memory the process may hold resident: 8G, 40%, or 0:8G,1:12G\n"
    "                  (VRAMSHIM_VRAM_LIMIT)\n"
    "  --reserve S     device memory kept free for everyone else (VRAMSHIM_RESERVE_VRAM)\n"
    "  --pin-limit S   cap on page-locked host memory: 16G or 50% of RAM (VRAMSHIM_PIN_LIMIT)\n"
    "  --offload M     off, pinned or auto (VRAMSHIM_OFFLOAD)\n"
    "  --owner N       owner name of allocations made outside any explicit owner (VRAMSHIM_OWNER)\n"
    "The library is $VRAMSHIM_LIBRARY if set, else the one next to this tool's build, else\n"
    VRAMSHIM_LIBDIR "/libvramshim.so.\n";

int cmd_usage_error(const char *usage, const char *fmt, const char *arg)
{
    fprintf(stderr, "vramshim: ");
    fprintf(stderr, fmt, arg);
    fprintf(stderr, "\n%s", usage);
    return EXIT_USAGE;
}

void cmd_print_json(const json_t *doc, size_t flags)
{
    char *s = json_dumps(doc, JSON_COMPACT | flags);
    printf("%s\n", s);
    free(s);
}

static bool file_exists(const char *path) { return access(path, R_OK) == 0; }

/* The library to preload: explicit, the build tree's, or the installed one. */
static const char *library_path(char *buf, size_t cap)
{
    const char *env = getenv("VRAMSHIM_LIBRARY");
    if (env && *env)
        return env;
    char self[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
    if (n > 0) {
        self[n] = '\0';
        snprintf(buf, cap, "%s/../.libs/libvramshim.so", dirname(self));
        if (file_exists(buf))
            return buf;
    }
    snprintf(buf, cap, "%s/libvramshim.so", VRAMSHIM_LIBDIR);
    return buf;
}

static int cmd_run(int argc, char **argv)
{
    static const struct option opts[] = {
        {"vram-limit", required_argument, NULL, 'v'},
        {"reserve", required_argument, NULL, 'r'},
        {"pin-limit", required_argument, NULL, 'p'},
        {"offload", required_argument, NULL, 'o'},
        {"owner", required_argument, NULL, 'n'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    struct { const char *var, *value; } set[8];
    int nset = 0;
    optind = 1;
    opterr = 0;
    int c;
    /* '+': stop at the first non-option, so CMD's own options stay CMD's */
    while ((c = getopt_long(argc, argv, "+h", opts, NULL)) != -1) {
        struct vs_size_spec spec, per[VS_MAX_DEVICES];
        enum vs_offload_mode mode;
        switch (c) {
        case 'h':
            fputs(run_usage, stdout);
            return 0;
        case 'v':
            if (vs_parse_device_sizes(optarg, &spec, per))
                return cmd_usage_error(run_usage, "--vram-limit: '%s' is not a size, a percentage or a device list", optarg);
            set[nset++] = (typeof(set[0])){"VRAMSHIM_VRAM_LIMIT", optarg};
            break;
        case 'r':
            if (vs_parse_size_or_percent(optarg, &spec))
                return cmd_usage_error(run_usage, "--reserve: '%s' is not a size or a percentage", optarg);
            set[nset++] = (typeof(set[0])){"VRAMSHIM_RESERVE_VRAM", optarg};
            break;
        case 'p':
            if (vs_parse_size_or_percent(optarg, &spec))
                return cmd_usage_error(run_usage, "--pin-limit: '%s' is not a size or a percentage", optarg);
            set[nset++] = (typeof(set[0])){"VRAMSHIM_PIN_LIMIT", optarg};
            break;
        case 'o':
            if (vs_parse_offload(optarg, &mode))
                return cmd_usage_error(run_usage, "--offload: '%s' is not off, pinned or auto", optarg);
            set[nset++] = (typeof(set[0])){"VRAMSHIM_OFFLOAD", optarg};
            break;
        case 'n':
            if (*optarg == '\0' || strlen(optarg) > VRAMSHIM_OWNER_NAME_MAX ||
                strpbrk(optarg, " \t\n\"\\"))
                return cmd_usage_error(run_usage, "--owner: '%s' must be 1 to 47 characters without spaces, quotes or backslashes", optarg);
            set[nset++] = (typeof(set[0])){"VRAMSHIM_OWNER", optarg};
            break;
        default:
            return cmd_usage_error(run_usage, "run: unknown or incomplete option '%s'",
                               argv[optind - 1]);
        }
    }
    if (optind >= argc)
        return cmd_usage_error(run_usage, "run: no command given%s", "");
    char libbuf[PATH_MAX + 32];
    const char *lib = library_path(libbuf, sizeof libbuf);
    if (!file_exists(lib)) {
        fprintf(stderr, "vramshim: the library %s is missing (set VRAMSHIM_LIBRARY)\n", lib);
        return EXIT_REFUSED;
    }
    const char *old = getenv("LD_PRELOAD");
    char preload[8192];
    /* a sanitizer's runtime must stay first in the list (it says so and
     * exits otherwise): the library goes right after it */
    size_t first = old ? strcspn(old, ": ") : 0;
    const char *base = old ? (const char *)memrchr(old, '/', first) : NULL;
    base = base ? base + 1 : old;
    if (old && (strncmp(base, "libasan", 7) == 0 || strncmp(base, "libtsan", 7) == 0 ||
                strncmp(base, "libclang_rt.", 12) == 0))
        snprintf(preload, sizeof preload, "%.*s:%s%s", (int)first, old, lib, old + first);
    else
        snprintf(preload, sizeof preload, "%s%s%s", lib, old && *old ? ":" : "", old ? old : "");
    setenv("LD_PRELOAD", preload, 1);
    for (int i = 0; i < nset; i++)
        setenv(set[i].var, set[i].value, 1);
    execvp(argv[optind], &argv[optind]);
    fprintf(stderr, "vramshim: cannot run %s: %s\n", argv[optind], strerror(errno));
    return errno == ENOENT ? 127 : 126;
}

#ifndef VRAMSHIM_EXPORTER
/* Built without libmicrohttpd: say so rather than "unknown command". */
static int cmd_exporter(int argc, char **argv)
{
    (void)argc, (void)argv;
    fprintf(stderr, "vramshim: this build has no exporter (libmicrohttpd was not found when it "
                    "was configured; apt-get install libmicrohttpd-dev and build again)\n");
    return EXIT_REFUSED;
}
#endif

int main(int argc, char **argv)
{
    if (argc < 2)
        return cmd_usage_error(usage_text, "no command given%s", "");
    const char *cmd = argv[1];
    if (strcmp(cmd, "--help") == 0 || strcmp(cmd, "-h") == 0 || strcmp(cmd, "help") == 0) {
        fputs(usage_text, stdout);
        return 0;
    }
    if (strcmp(cmd, "--version") == 0) {
        printf("vramshim %s\n", PACKAGE_VERSION);
        return 0;
    }
    if (strcmp(cmd, "run") == 0)
        return cmd_run(argc - 1, argv + 1);
    static const struct {
        const char *name;
        int (*fn)(int, char **);
    } cmds[] = {{"ls", cmd_ls}, {"stats", cmd_stats}, {"set", cmd_set},
                {"evict", cmd_evict}, {"free", cmd_free}, {"metrics", cmd_metrics},
                {"exporter", cmd_exporter}, {"top", cmd_top}, {"devices", cmd_devices}};
    for (size_t i = 0; i < sizeof cmds / sizeof cmds[0]; i++)
        if (strcmp(cmd, cmds[i].name) == 0)
            return cmds[i].fn(argc - 1, argv + 1);
    return cmd_usage_error(usage_text, "unknown command '%s'", cmd);
}

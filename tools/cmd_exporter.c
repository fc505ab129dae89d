/*
 * cmd_exporter.c: `vramshim exporter`, the node's processes over HTTP for
 * Prometheus: /metrics is the document of `vramshim metrics` (metrics.h),
 * /healthz says the exporter is up.
 *
 * libmicrohttpd serves; this file binds the socket itself (so a port in use
 * is one clear line and exit 1) and bounds the work:
 * - at most --max-connections open connections, served by a small pool of
 *   threads; more wait in the kernel's listen queue (128 deep, then
 *   refused) until one closes;
 * - every connection lives at most --deadline seconds from its accept,
 *   however slowly its client trickles bytes (a watchdog shuts it down);
 * - one collection at a time: scrapes that arrive while one runs wait for
 *   it and share its document, so each program's control socket sees at
 *   most one request from the exporter at a time whatever the scrape rate;
 * - a collection asks no further process after half the deadline, and
 *   waits for each answer a quarter of it at most (one second at most: a
 *   control thread answers in well under that), so a page is served
 *   within three quarters of the deadline even when a process hangs.
 * A process that is gone between listing and asking is left out quietly.
 */
#define _GNU_SOURCE 1
#include "client.h"
#include "cmd.h"
#include "metrics.h"

#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <microhttpd.h>
#include <netdb.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define DEFAULT_LISTEN "127.0.0.1:9402"
#define THREADS 4

static const char exporter_usage[] =
    "usage: vramshim exporter [--listen ADDR:PORT] [--max-connections N] [--deadline SECONDS]\n"
    "Serves every process under vramshim over HTTP for Prometheus: /metrics (the\n"
    "families of `vramshim metrics`) and /healthz. Processes are those with a socket in\n"
    "the socket directory (VRAMSHIM_SOCKET_DIR) or one of its subdirectories.\n"
    "  --listen ADDR:PORT     address to serve on (default " DEFAULT_LISTEN ", this machine\n"
    "                         only; 0.0.0.0:PORT lets anyone who reaches the node read\n"
    "                         every process's command line and owners); port 0 picks one\n"
    "  --max-connections N    open connections at most, 1 to 10000 (default 128)\n"
    "  --deadline SECONDS     longest life of one connection, 1 to 600 (default 10)\n"
    "Prints \"listening on ADDR:PORT\" once ready; SIGTERM or SIGINT stops it (exit 0).\n"
    "Exit 1 when the address cannot be served (a port already in use), 2 on bad usage.\n";

/* ---- one collection at a time ----------------------------------------- */
static pthread_mutex_t doc_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t doc_ready = PTHREAD_COND_INITIALIZER;
static bool collecting;
static unsigned long generation;
static char *doc;
static size_t doc_len;
static unsigned collect_budget_ms;

static void collect_now(void)
{
    json_t *all = metrics_collect(metrics_now_ms() + collect_budget_ms);
    char *text = NULL;
    size_t len = 0;
    FILE *out = open_memstream(&text, &len);
    if (out) {
        metrics_write(out, all);
        fclose(out);
    }
    json_decref(all);
    pthread_mutex_lock(&doc_lock);
    free(doc);
    doc = text;
    doc_len = text ? len : 0;
    generation++;
    collecting = false;
    pthread_cond_broadcast(&doc_ready);
    pthread_mutex_unlock(&doc_lock);
}

/* A response holding a document at least as new as the call: a fresh
 * collection, or the one that was running when the call came. */
static struct MHD_Response *metrics_response(void)
{
    pthread_mutex_lock(&doc_lock);
    if (collecting) {
        unsigned long seen = generation;
        while (collecting && generation == seen)
            pthread_cond_wait(&doc_ready, &doc_lock);
    } else {
        collecting = true;
        pthread_mutex_unlock(&doc_lock);
        collect_now();
        pthread_mutex_lock(&doc_lock);
    }
    struct MHD_Response *r =
        doc ? MHD_create_response_from_buffer(doc_len, doc, MHD_RESPMEM_MUST_COPY) : NULL;
    pthread_mutex_unlock(&doc_lock);
    if (r)
        MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE,
                                "text/plain; version=0.0.4; charset=utf-8");
    return r;
}

static enum MHD_Result answer_text(struct MHD_Connection *c, unsigned status, const char *text)
{
    struct MHD_Response *r = MHD_create_response_from_buffer(strlen(text), (void *)text,
                                                             MHD_RESPMEM_PERSISTENT);
    if (r == NULL)
        return MHD_NO;
    MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, "text/plain; charset=utf-8");
    if (status == MHD_HTTP_METHOD_NOT_ALLOWED)
        MHD_add_response_header(r, MHD_HTTP_HEADER_ALLOW, "GET, HEAD");
    enum MHD_Result rc = MHD_queue_response(c, status, r);
    MHD_destroy_response(r);
    return rc;
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *c, const char *url,
                                  const char *method, const char *version,
                                  const char *upload_data, size_t *upload_data_size,
                                  void **req_cls)
{
    (void)cls, (void)version, (void)upload_data;
    if (*req_cls == NULL) { /* headers only so far: answer once the body is in */
        *req_cls = c;
        return MHD_YES;
    }
    if (*upload_data_size != 0) { /* a body nobody asked for: drop it */
        *upload_data_size = 0;
        return MHD_YES;
    }
    bool get =
        strcmp(method, MHD_HTTP_METHOD_GET) == 0 || strcmp(method, MHD_HTTP_METHOD_HEAD) == 0;
    if (strcmp(url, "/metrics") != 0 && strcmp(url, "/healthz") != 0)
        return answer_text(c, MHD_HTTP_NOT_FOUND, "not found: try /metrics or /healthz\n");
    if (!get)
        return answer_text(c, MHD_HTTP_METHOD_NOT_ALLOWED, "only GET and HEAD\n");
    if (strcmp(url, "/healthz") == 0)
        return answer_text(c, MHD_HTTP_OK, "ok\n");
    struct MHD_Response *r = metrics_response();
    if (r == NULL)
        return answer_text(c, MHD_HTTP_INTERNAL_SERVER_ERROR, "out of memory\n");
    enum MHD_Result rc = MHD_queue_response(c, MHD_HTTP_OK, r);
    MHD_destroy_response(r);
    return rc;
}

/* ---- the per-connection deadline --------------------------------------
 * libmicrohttpd's own timeout restarts with every byte, so a client that
 * trickles its request could hold a connection for ever. Each connection
 * is noted when accepted; a watchdog shuts down the socket of one that
 * outlives the deadline, and the library then closes it. The library tells
 * us of the close before it closes the descriptor, so a noted descriptor is
 * never one reused by a later connection. */
struct tracked {
    int fd;
    uint64_t deadline_ms;
    struct tracked *next;
};
static pthread_mutex_t track_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t track_stop = PTHREAD_COND_INITIALIZER;
static struct tracked *tracked;
static bool stopping;
static unsigned deadline_s = 10;

static void on_connection(void *cls, struct MHD_Connection *c, void **socket_cls,
                          enum MHD_ConnectionNotificationCode what)
{
    (void)cls;
    if (what == MHD_CONNECTION_NOTIFY_STARTED) {
        const union MHD_ConnectionInfo *info =
            MHD_get_connection_info(c, MHD_CONNECTION_INFO_CONNECTION_FD);
        struct tracked *t = info ? malloc(sizeof *t) : NULL;
        *socket_cls = t;
        if (t == NULL)
            return;
        t->fd = info->connect_fd;
        t->deadline_ms = metrics_now_ms() + deadline_s * 1000ULL;
        pthread_mutex_lock(&track_lock);
        t->next = tracked;
        tracked = t;
        pthread_mutex_unlock(&track_lock);
    } else if (what == MHD_CONNECTION_NOTIFY_CLOSED && *socket_cls) {
        pthread_mutex_lock(&track_lock);
        for (struct tracked **p = &tracked; *p; p = &(*p)->next)
            if (*p == *socket_cls) {
                *p = (*p)->next;
                break;
            }
        pthread_mutex_unlock(&track_lock);
        free(*socket_cls);
        *socket_cls = NULL;
    }
}

static void *watchdog(void *arg)
{
    (void)arg;
    pthread_mutex_lock(&track_lock);
    while (!stopping) {
        uint64_t now = metrics_now_ms();
        for (struct tracked *t = tracked; t; t = t->next)
            if (t->fd >= 0 && now >= t->deadline_ms) {
                shutdown(t->fd, SHUT_RDWR);
                t->fd = -1; /* once */
            }
        struct timespec wake;
        clock_gettime(CLOCK_REALTIME, &wake);
        wake.tv_nsec += 250 * 1000000L; /* a quarter second past a deadline at most */
        if (wake.tv_nsec >= 1000000000L) {
            wake.tv_sec++;
            wake.tv_nsec -= 1000000000L;
        }
        pthread_cond_timedwait(&track_stop, &track_lock, &wake);
    }
    pthread_mutex_unlock(&track_lock);
    return NULL;
}

/* ---- the listening socket ---------------------------------------------- */
/* "HOST:PORT" or "[V6]:PORT" into host and port; false when malformed. */
static bool split_listen(const char *s, char *host, size_t hcap, char *port, size_t pcap)
{
    const char *colon = strrchr(s, ':');
    if (colon == NULL || colon == s || colon[1] == '\0' || strlen(colon + 1) >= pcap)
        return false;
    const char *h = s;
    size_t hlen = (size_t)(colon - s);
    if (*h == '[') {
        if (hlen < 3 || h[hlen - 1] != ']')
            return false;
        h++;
        hlen -= 2;
    }
    if (hlen >= hcap)
        return false;
    memcpy(host, h, hlen);
    host[hlen] = '\0';
    for (const char *p = colon + 1; *p; p++)
        if (*p < '0' || *p > '9')
            return false;
    long n = strtol(colon + 1, NULL, 10);
    if (n < 0 || n > 65535)
        return false;
    snprintf(port, pcap, "%s", colon + 1);
    return true;
}

static bool is_loopback(const struct sockaddr *sa)
{
    if (sa->sa_family == AF_INET)
        return (ntohl(((const struct sockaddr_in *)sa)->sin_addr.s_addr) >> 24) == 127;
    return sa->sa_family == AF_INET6 &&
           IN6_IS_ADDR_LOOPBACK(&((const struct sockaddr_in6 *)sa)->sin6_addr);
}

/* Bind and listen; prints why not and returns -1. */
static int open_listener(const char *listen_at, const char *host, const char *port)
{
    struct addrinfo hints = {.ai_socktype = SOCK_STREAM,
                             .ai_flags = AI_PASSIVE | AI_NUMERICSERV};
    struct addrinfo *ai = NULL;
    int rc = getaddrinfo(host, port, &hints, &ai);
    if (rc != 0) {
        fprintf(stderr, "vramshim exporter: cannot listen on %s: %s\n", listen_at,
                gai_strerror(rc));
        return -1;
    }
    int fd = socket(ai->ai_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    int one = 1;
    if (fd >= 0)
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (fd < 0 || bind(fd, ai->ai_addr, ai->ai_addrlen) != 0 || listen(fd, 128) != 0) {
        int e = errno;
        fprintf(stderr, "vramshim exporter: cannot listen on %s: %s%s\n", listen_at, strerror(e),
                e == EADDRINUSE ? " (another program serves that port; choose another with "
                                  "--listen)"
                                : "");
        if (fd >= 0)
            close(fd);
        freeaddrinfo(ai);
        return -1;
    }
    if (!is_loopback(ai->ai_addr))
        fprintf(stderr,
                "vramshim exporter: %s is reachable from other machines: anyone who can reach "
                "it reads every process's command line, owners and memory figures\n",
                listen_at);
    freeaddrinfo(ai);
    return fd;
}

static void print_bound(int fd)
{
    struct sockaddr_storage ss;
    socklen_t len = sizeof ss;
    char host[NI_MAXHOST] = "?", port[NI_MAXSERV] = "?";
    if (getsockname(fd, (struct sockaddr *)&ss, &len) == 0)
        getnameinfo((struct sockaddr *)&ss, len, host, sizeof host, port, sizeof port,
                    NI_NUMERICHOST | NI_NUMERICSERV);
    printf(ss.ss_family == AF_INET6 ? "listening on [%s]:%s\n" : "listening on %s:%s\n", host,
           port);
    fflush(stdout);
}

static bool parse_bounded(const char *s, uint32_t min, uint32_t max, unsigned *out)
{
    uint32_t v;
    if (vs_parse_uint32(s, min, max, &v) != 0)
        return false;
    *out = v;
    return true;
}

int cmd_exporter(int argc, char **argv)
{
    static const struct option opts[] = {{"listen", required_argument, NULL, 'l'},
                                         {"max-connections", required_argument, NULL, 'c'},
                                         {"deadline", required_argument, NULL, 'd'},
                                         {"help", no_argument, NULL, 'h'},
                                         {NULL, 0, NULL, 0}};
    const char *listen_at = DEFAULT_LISTEN;
    unsigned max_conn = 128;
    int o;
    opterr = 0;
    optind = 1;
    while ((o = getopt_long(argc, argv, "+h", opts, NULL)) != -1) {
        switch (o) {
        case 'l': listen_at = optarg; break;
        case 'c':
            if (!parse_bounded(optarg, 1, 10000, &max_conn))
                return cmd_usage_error(exporter_usage, "exporter: bad --max-connections '%s'",
                                       optarg);
            break;
        case 'd':
            if (!parse_bounded(optarg, 1, 600, &deadline_s))
                return cmd_usage_error(exporter_usage, "exporter: bad --deadline '%s'", optarg);
            break;
        case 'h': fputs(exporter_usage, stdout); return 0;
        default:
            return cmd_usage_error(exporter_usage, "exporter: unknown or incomplete option '%s'",
                                   argv[optind - 1]);
        }
    }
    if (optind < argc)
        return cmd_usage_error(exporter_usage, "exporter: unexpected argument '%s'", argv[optind]);
    char host[256], port[8];
    if (!split_listen(listen_at, host, sizeof host, port, sizeof port))
        return cmd_usage_error(exporter_usage,
                               "exporter: --listen takes ADDR:PORT, like 127.0.0.1:9402, not '%s'",
                               listen_at);
    collect_budget_ms = deadline_s * 500;
    client_deadline_ms = deadline_s * 250 < 1000 ? (int)deadline_s * 250 : 1000;
    client_quiet = true;

    int fd = open_listener(listen_at, host, port);
    if (fd < 0)
        return EXIT_REFUSED;
    /* The daemon's threads inherit this mask; only sigwait below takes them. */
    sigset_t stop;
    sigemptyset(&stop);
    sigaddset(&stop, SIGINT);
    sigaddset(&stop, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &stop, NULL);
    signal(SIGPIPE, SIG_IGN);

    pthread_t dog;
    if (pthread_create(&dog, NULL, watchdog, NULL) != 0) {
        fprintf(stderr, "vramshim exporter: cannot start a thread\n");
        return EXIT_REFUSED;
    }
    struct MHD_Daemon *d = MHD_start_daemon(
        MHD_USE_AUTO_INTERNAL_THREAD | MHD_USE_ERROR_LOG, 0, NULL, NULL, on_request, NULL,
        MHD_OPTION_LISTEN_SOCKET, fd, MHD_OPTION_THREAD_POOL_SIZE,
        max_conn < THREADS ? max_conn : (unsigned)THREADS,
        MHD_OPTION_CONNECTION_LIMIT, max_conn, MHD_OPTION_CONNECTION_TIMEOUT, deadline_s,
        MHD_OPTION_CONNECTION_MEMORY_LIMIT, (size_t)32768, MHD_OPTION_NOTIFY_CONNECTION,
        on_connection, NULL, MHD_OPTION_END);
    int status = 0;
    if (d == NULL) {
        fprintf(stderr, "vramshim exporter: the HTTP server did not start on %s\n", listen_at);
        close(fd);
        status = EXIT_REFUSED;
    } else {
        print_bound(fd);
        int sig;
        sigwait(&stop, &sig);
        MHD_stop_daemon(d); /* closes the listening socket too */
    }
    pthread_mutex_lock(&track_lock);
    stopping = true;
    pthread_cond_signal(&track_stop);
    pthread_mutex_unlock(&track_lock);
    pthread_join(dog, NULL);
    free(doc);
    return status;
}

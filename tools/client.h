/*
 * client.h: the tool's side of the control socket (see src/control.c):
 * where the sockets are, and one request, one answer.
 */
#ifndef VRAMSHIM_CLIENT_H
#define VRAMSHIM_CLIENT_H

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#define EXIT_REFUSED 1
#define EXIT_USAGE 2
#define EXIT_NO_PROCESS 3

/* The socket directory, as the library works it out. */
const char *client_dir(void);
/* Parse a PID argument: > 0, digits only. */
bool client_parse_pid(const char *s, pid_t *out);
/* Send one request line to pid's socket and parse the answer. Returns the
 * answer (caller decrefs), or NULL with *exit_code set (EXIT_NO_PROCESS when
 * pid has no live socket, EXIT_REFUSED otherwise) and a message printed. */
json_t *client_request(pid_t pid, const char *request, int *exit_code);
/* Every pid with a socket in the directory, ascending; returns the count
 * (at most cap). */
int client_list(pid_t *pids, int cap);
/* The same two in another socket directory (the exporter reads a node's
 * per-pod subdirectories). */
json_t *client_request_in(const char *dir, pid_t pid, const char *request, int *exit_code);
int client_list_in(const char *dir, pid_t *pids, int cap);
/* Set: a process that is gone or gives no answer prints nothing (the
 * exporter skips it). */
extern bool client_quiet;
/* How long a request waits for the answer to move (5000 ms; the exporter
 * asks for less, to answer within its deadline). */
extern int client_deadline_ms;
/* Every socket in the directory as (pid, pid namespace), sorted; a pid
 * can appear once per namespace. Returns the count (at most cap). */
int client_list_all(pid_t *pids, uint64_t *ns, int cap);
/* client_request to pid's socket in namespace ns (from client_list_all). */
json_t *client_request_ns(pid_t pid, uint64_t ns, const char *request, int *exit_code);
/* Whether a namespace from client_list_all is another than ours. */
bool client_pidns_foreign(uint64_t ns);
/* Escape, in every string and key of an answer, what a terminal would
 * obey (C0 and C1 controls, DEL); client_request has done it already. */
void client_make_printable(json_t *answer);
/* The answer's "ok"; prints its "error" when false. */
bool client_ok(json_t *answer, pid_t pid);

#endif

/*
 * cmd.h: the tool's commands, each main-like (argv[0] is the command's
 * name), returning the process exit code.
 */
#ifndef VRAMSHIM_CMD_H
#define VRAMSHIM_CMD_H

#include "core.h"

#include <jansson.h>

int cmd_usage_error(const char *usage, const char *fmt, const char *arg);
/* A JSON document on one line of stdout (flags: json_dumps's, JSON_COMPACT
 * added). */
void cmd_print_json(const json_t *doc, size_t flags);
int cmd_ls(int argc, char **argv);
int cmd_stats(int argc, char **argv);
int cmd_set(int argc, char **argv);
int cmd_evict(int argc, char **argv);
int cmd_free(int argc, char **argv);
int cmd_metrics(int argc, char **argv);
int cmd_exporter(int argc, char **argv);
int cmd_top(int argc, char **argv);
int cmd_devices(int argc, char **argv);
/* cmd_devices.c: every process's devices grouped by UUID (what `devices
 * --json` prints); the caller owns it. */
json_t *cmd_devices_collect(void);

#endif

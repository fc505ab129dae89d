/*
 * fixture.h: what the unit tests need from the layers above the core,
 * which they do not link: process state set up for the core alone, and a
 * log captured in memory.
 */
#ifndef FIXTURE_H
#define FIXTURE_H

#include "core.h"

/* Defaults, owner table ("unit" as the default owner), empty registry,
 * limits from vs_state.cfg, an empty budget and no driver to ask. */
void fixture_reset(void);
/* Start capturing log lines; fixture_log() returns everything since. */
void fixture_log_capture(void);
const char *fixture_log(void);
int fixture_log_lines(void);

#endif

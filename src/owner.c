/*
 * owner.c: who an allocation belongs to.
 *
 * Owners are interned once into a small table and named by index, so the
 * registry's counters are plain arrays and the hot path reads one
 * thread-local integer. A thread's owner is the top of its stack
 * (vramshim_owner_push/pop), else the process default: VRAMSHIM_OWNER, else
 * the program's name. Interning takes a lock, but only push does it, never an
 * allocation.
 */
#include "core.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>

static char owner_names[VS_MAX_OWNERS][VRAMSHIM_OWNER_NAME_MAX + 1];
static _Atomic int owner_count;
static pthread_mutex_t owner_lock = PTHREAD_MUTEX_INITIALIZER;

static __thread int owner_stack[VRAMSHIM_OWNER_STACK_MAX];
static __thread int owner_depth;

#define OVERFLOW_OWNER (VS_MAX_OWNERS - 1)

void vs_owner_init(const char *default_name)
{
    pthread_mutex_lock(&owner_lock);
    memset(owner_names, 0, sizeof owner_names);
    snprintf(owner_names[0], sizeof owner_names[0], "%s",
             default_name && *default_name ? default_name : "unknown");
    snprintf(owner_names[OVERFLOW_OWNER], sizeof owner_names[0], "(other)");
    owner_count = 1;
    pthread_mutex_unlock(&owner_lock);
}

int vs_owner_intern(const char *name)
{
    char key[VRAMSHIM_OWNER_NAME_MAX + 1];
    snprintf(key, sizeof key, "%s", name);
    pthread_mutex_lock(&owner_lock);
    int n = owner_count;
    int id = -1;
    for (int i = 0; i < n; i++) {
        if (strcmp(owner_names[i], key) == 0) {
            id = i;
            break;
        }
    }
    if (id < 0) {
        if (n < OVERFLOW_OWNER) {
            memcpy(owner_names[n], key, sizeof key);
            id = n;
            owner_count = n + 1;
        } else {
            id = OVERFLOW_OWNER;
            if (n == OVERFLOW_OWNER) {
                owner_count = VS_MAX_OWNERS;
                vs_warn("more than %d owners: the rest are counted as '(other)'",
                        OVERFLOW_OWNER);
            }
        }
    }
    pthread_mutex_unlock(&owner_lock);
    return id;
}

/* fork: see vs_registry_atfork_child. */
void vs_owner_atfork_prepare(void) { pthread_mutex_lock(&owner_lock); }
void vs_owner_atfork_parent(void) { pthread_mutex_unlock(&owner_lock); }
void vs_owner_atfork_child(void) { pthread_mutex_init(&owner_lock, NULL); }

int vs_owner_current(void)
{
    return owner_depth > 0 ? owner_stack[owner_depth - 1] : 0;
}

const char *vs_owner_name(int id)
{
    if (id < 0 || id >= VS_MAX_OWNERS)
        return "?";
    return owner_names[id];
}

int vs_owner_count(void) { return owner_count; }

void vs_owner_reset_thread(void) { owner_depth = 0; }

int vs_owner_push(const char *name)
{
    if (name == NULL || *name == '\0')
        return -EINVAL;
    if (owner_depth >= VRAMSHIM_OWNER_STACK_MAX)
        return -EOVERFLOW;
    owner_stack[owner_depth++] = vs_owner_intern(name);
    return 0;
}

int vs_owner_pop(void)
{
    if (owner_depth == 0)
        return -ENOENT;
    owner_depth--;
    return 0;
}

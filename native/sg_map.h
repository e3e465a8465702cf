/* The address -> name map: which allowed name an address was resolved from, so that a connect to it is
 * decided as a connect to that name (sockguard/guard.py's _resolved). Bounded (4-way sets, the oldest way
 * replaced; a ring of interned names), thread-safe (a spin lock that gives up rather than deadlock in a
 * signal handler) and fork-safe (the lock is taken around fork and reset in the child). */
#ifndef SG_MAP_H
#define SG_MAP_H

#include "sg_policy.h"

#define SG_MAP_NAMES 4 /* names kept per address, newest last, as guard._remember keeps 4 */

void sg_map_learn(const sg_addr *a, const char *name);
/* Copies up to SG_MAP_NAMES names into out; returns how many (0 if unknown or the lock is unavailable). */
int sg_map_names(const sg_addr *a, char out[SG_MAP_NAMES][SG_NAME_MAX]);
void sg_map_clear(void);
void sg_map_atfork(void); /* registers the fork handlers (once) */

#endif

/*
 * profile.c: per-op wall time of forwards and backwards (see ff_autograd.h).
 * autograd.c and backward.c call prof_begin/prof_end (profile.h) around
 * each op, so a user can see which ops a training step spends its time in
 * without an external profiler.
 */
#include <string.h>
#include <time.h>
#include "ff_autograd.h"
#include "profile.h"

static ff_profile_entry entries[FF_OP_COUNT];
bool ff_prof_on_ = false;

double ff_prof_clock_(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

void ff_prof_add_(ff_opcode op, int pass, double seconds)
{
    if ((unsigned)op < FF_OP_COUNT) {
        entries[op].calls[pass]++;
        entries[op].seconds[pass] += seconds;
    }
}

void ff_profile_set(bool on) { ff_prof_on_ = on; }
bool ff_profile_is_on(void) { return ff_prof_on_; }
void ff_profile_reset(void) { memset(entries, 0, sizeof entries); }
const ff_profile_entry *ff_profile_entries(void) { return entries; }

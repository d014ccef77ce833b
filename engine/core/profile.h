/*
 * profile.h: the timing hooks of the op profile (internal; the public
 * switch and counters are in ff_autograd.h).
 */
#ifndef FF_PROFILE_H
#define FF_PROFILE_H

#include <stdbool.h>
#include "ff_autograd.h"

extern bool ff_prof_on_;
double ff_prof_clock_(void);
void ff_prof_add_(ff_opcode op, int pass, double seconds);

/* t0 = prof_begin(); ...the op...; prof_end(op, pass, t0): one branch when off. */
static inline double prof_begin(void) { return ff_prof_on_ ? ff_prof_clock_() : 0; }
static inline void prof_end(ff_opcode op, int pass, double t0)
{
    if (ff_prof_on_)
        ff_prof_add_(op, pass, ff_prof_clock_() - t0);
}

#endif

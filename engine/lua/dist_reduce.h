/*
 * dist_reduce.h: the gradient reducer (dist_reduce.c), registered by
 * dist.c as core.dist.reducer.
 */
#ifndef LF_DIST_REDUCE_H
#define LF_DIST_REDUCE_H

#include <lua.h>

int lf_dist_reducer(lua_State *L);       /* reducer(params [, bucket_values [, overlap]]) */
void lf_dist_reducer_open(lua_State *L); /* its metatable */

#endif

/* interp.h: what main.c (arguments, protected main) and repl.c (the
 * read-eval-print loop) share inside the `firefly` executable. */
#ifndef FF_INTERP_H
#define FF_INTERP_H

#include <lua.h>

/* The prefix of messages about scripts, -e chunks and bad arguments. */
#define FF_PROGNAME "firefly"

/* Calls the function lying below `narg` arguments on the stack, in protected
 * mode, with a message handler that appends a traceback. Ctrl-C during the
 * call raises the error "interrupted!" inside it, so the process survives.
 * Leaves `nres` results (or the error message) in place of the function and
 * its arguments. Returns the lua_pcall status. */
int ff_interp_call(lua_State *L, int narg, int nres);

/* When `status` is not LUA_OK, prints the error message on top of the stack
 * to stderr as "prefix: message" (just "message" when prefix is NULL) and
 * pops it. Returns `status`. */
int ff_interp_report(lua_State *L, int status, const char *prefix);

/* Prints "Firefly <version> on Lua <version>" to stdout, once per process. */
void ff_interp_version(void);

/* Runs the read-eval-print loop on stdin until end of input (Ctrl-D).
 * Errors in the input are reported and never end the loop. The globals
 * `ff` and `help` are set by main.c before anything runs. */
void ff_repl_run(lua_State *L);

#endif

/* main.c: the `firefly` executable: arguments, module setup, protected main.
 *
 * The skeleton is Lua 5.4's stand-alone interpreter: everything runs inside
 * one protected C function, so even a memory error while building the `arg`
 * table is reported instead of crashing. The REPL lives in repl.c. */
#include <errno.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <unistd.h>

#include <lua.h>
#include <lauxlib.h>
#include <lualib.h>

#include "../engine/lua/lf.h"
#include "interp.h"

/* Where `make install` puts lib/firefly; used when the executable does not
 * sit next to a source tree's lib/. */
#ifndef FIREFLY_LUADIR
#define FIREFLY_LUADIR "/usr/local/share/lua/5.4"
#endif

#define LUA_INIT_NAME "LUA_INIT"
#define LUA_INIT_VERSIONED "LUA_INIT_" LUA_VERSION_MAJOR "_" LUA_VERSION_MINOR

static void print_usage(FILE *f)
{
    fputs("usage: " FF_PROGNAME " [options] [script [args...]]\n"
          "       " FF_PROGNAME " grow RECIPE.lua [--seed N] [--out DIR] [--resume] [--trust]\n"
          "                  [--max-seconds S] [--max-memory MB] [key=value ...]\n"
          "                  (a recipe runs sandboxed; its options are listed below)\n"
          "       " FF_PROGNAME " export CHECKPOINT --to torch|onnx DIR [--input-shape 1,28,28]\n"
          "Options:\n"
          "  -e stat   execute string 'stat'\n"
          "  -l mod    require module 'mod' into global 'mod'\n"
          "  -l g=mod  require module 'mod' into global 'g'\n"
          "  -i        enter the REPL after running 'script' and -e/-l\n"
          "  -v        show version information\n"
          "  -E        ignore the environment variables LUA_INIT, LUA_PATH, LUA_CPATH\n"
          "  --help    show this help\n"
          "  --        stop handling options\n"
          "  -         execute stdin and stop handling options\n"
          "With no script and no -e, " FF_PROGNAME " starts the REPL when stdin is a\n"
          "terminal and runs stdin as a chunk otherwise. Script arguments are in\n"
          "the global table 'arg' (arg[0] is the script) and in '...'.\n"
          "\n"
          "Scripts, -e and the REPL start with the globals 'ff' (require \"firefly\")\n"
          "and 'help' (help(ff.grow.propose) shows its entry in the reference,\n"
          "help() lists the modules). In the REPL expressions print their values;\n"
          "a line ending in ';' prints nothing; Tab completes names, fields and\n"
          "methods; Ctrl-C interrupts the running code (ff.train.fit and\n"
          "ff.grow.run stop after the current batch and return what they did;\n"
          "a second Ctrl-C interrupts at once), Ctrl-D leaves.\n"
          "\n"
          "Environment:\n"
          "  " LUA_INIT_VERSIONED ", " LUA_INIT_NAME
          "  Lua code (or @file) run before the arguments\n"
          "  LUA_PATH, LUA_CPATH     module search paths (';;' = the default)\n"
          "  FIREFLY_HISTORY         REPL history file (default ~/.firefly_history;\n"
          "                          empty: no history)\n"
          "  FIREFLY_SPEC            where help() reads the reference (spec/*.md)\n",
          f);
}

/* The subcommands' own help, asked of the Lua side that parses their
 * options, so that this list never lags behind them. Each module that
 * implements a subcommand exposes its usage text as `usage`; one that is
 * not there (or has none) is skipped. */
static void print_subcommands(lua_State *L)
{
    static const char *const modules[] = {"firefly.grow.command", "firefly.export"};
    for (size_t i = 0; i < sizeof modules / sizeof *modules; i++) {
        int top = lua_gettop(L);
        lua_getglobal(L, "require");
        lua_pushstring(L, modules[i]);
        if (lua_pcall(L, 1, 1, 0) == LUA_OK && lua_type(L, -1) == LUA_TTABLE &&
            lua_getfield(L, -1, "usage") == LUA_TSTRING)
            printf("\n%s\n", lua_tostring(L, -1));
        lua_settop(L, top);
    }
}

void ff_interp_version(void)
{
    /* At most once, so -v followed by the REPL's banner shows one line. */
    static int shown = 0;
    if (!shown) { /* LUA_RELEASE is "Lua 5.4.x" */
        printf("Firefly %s on %s\n", FF_VERSION, LUA_RELEASE);
        fflush(stdout);
        shown = 1;
    }
}

int ff_interp_report(lua_State *L, int status, const char *prefix)
{
    if (status != LUA_OK) {
        const char *msg = lua_tostring(L, -1);
        if (msg == NULL) /* the message handler was bypassed (e.g. out of memory) */
            msg = "(error object is not a string)";
        /* Results already printed should come before the error. */
        fflush(stdout);
        if (prefix != NULL)
            fprintf(stderr, "%s: ", prefix);
        fprintf(stderr, "%s\n", msg);
        fflush(stderr);
        lua_pop(L, 1);
    }
    return status;
}

/* -- Ctrl-C -------------------------------------------------------------- */

/* The state the SIGINT handler stops; set before each protected call. */
static lua_State *running_L = NULL;

/* Long loops (ff.train.fit, ff.grow.run) ask to be told of Ctrl-C instead
 * of being cut short, so that they stop between two batches, clear their
 * progress line and return what they did. `listeners` counts the loops
 * running (nested ones included); `stop_asked` is their flag. */
static volatile sig_atomic_t listeners = 0, stop_asked = 0;

static void on_sigint_running(int sig);

/* A hook cannot be avoided by Lua code, so raising the error from one
 * interrupts any loop; it fires at the next call, return or instruction.
 * Ctrl-C interrupts again afterwards (the chunk may catch the error and
 * go on), so the handler is put back. */
static void stop_hook(lua_State *L, lua_Debug *ar)
{
    struct sigaction sa;
    (void)ar;
    lua_sethook(L, NULL, 0, 0);
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_sigint_running;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    luaL_error(L, "interrupted!");
}

/* Only lua_sethook and plain flag writes are safe here (Lua documents
 * lua_sethook as signal-safe). A loop that listens gets the flag on the
 * first Ctrl-C; the next one interrupts whatever runs. A Ctrl-C before the
 * hook fires (say, stuck in a long C call) gets the default action, so the
 * user can always kill the process. */
static void on_sigint_running(int sig)
{
    int mask = LUA_MASKCALL | LUA_MASKRET | LUA_MASKCOUNT;
    if (listeners > 0 && !stop_asked) {
        stop_asked = 1;
        return;
    }
    signal(sig, SIG_DFL);
    lua_sethook(running_L, stop_hook, mask, 1);
}

/* firefly.interp.listen(): the calling loop wants Ctrl-C as a flag.
 * Returns how many loops listen now (1: the outermost). */
static int interp_listen(lua_State *L)
{
    lua_pushinteger(L, ++listeners);
    return 1;
}

/* firefly.interp.unlisten(): the loop is done; the flag is cleared when
 * the outermost one leaves, so an inner loop (a phase's training inside
 * grow.run) leaves it for the outer one to see. */
static int interp_unlisten(lua_State *L)
{
    (void)L;
    if (listeners > 0 && --listeners == 0)
        stop_asked = 0;
    return 0;
}

/* firefly.interp.stop_asked(): true once Ctrl-C came while listening. */
static int interp_stop_asked(lua_State *L)
{
    lua_pushboolean(L, stop_asked);
    return 1;
}

/* Error objects that are not strings still get a readable message. */
static int message_handler(lua_State *L)
{
    const char *msg = lua_tostring(L, 1);
    if (msg == NULL) {
        if (luaL_callmeta(L, 1, "__tostring") && lua_type(L, -1) == LUA_TSTRING)
            return 1;
        msg = lua_pushfstring(L, "(error object is a %s value)", luaL_typename(L, 1));
    }
    luaL_traceback(L, L, msg, 1);
    return 1;
}

int ff_interp_call(lua_State *L, int narg, int nres)
{
    int base = lua_gettop(L) - narg; /* the function's index */
    int status;
    struct sigaction sa, outside;

    lua_pushcfunction(L, message_handler);
    lua_insert(L, base);
    running_L = L;
    /* Without SA_RESTART, so Ctrl-C also breaks a blocking read (io.read).
     * The handler outside is restored after: the REPL's keeps Ctrl-C at the
     * prompt from killing the session. */
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_sigint_running;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, &outside);
    /* A loop left by an error nobody closed must not swallow Ctrl-C. */
    listeners = 0;
    stop_asked = 0;
    status = lua_pcall(L, narg, nres, base);
    sigaction(SIGINT, &outside, NULL);
    if (lua_gethook(L) == stop_hook) /* a Ctrl-C that came as the call ended */
        lua_sethook(L, NULL, 0, 0);
    lua_remove(L, base);
    return status;
}

/* -- Running chunks ------------------------------------------------------ */

/* Runs the chunk just loaded (when `status`, the load's, is LUA_OK) and
 * reports any error with the program's name. */
static int run_chunk(lua_State *L, int status)
{
    if (status == LUA_OK)
        status = ff_interp_call(L, 0, 0);
    return ff_interp_report(L, status, FF_PROGNAME);
}

/* name == NULL reads stdin. */
static int run_file(lua_State *L, const char *name)
{
    return run_chunk(L, luaL_loadfile(L, name));
}

static int run_string(lua_State *L, const char *s, const char *chunkname)
{
    return run_chunk(L, luaL_loadbuffer(L, s, strlen(s), chunkname));
}

/* -l mod or -l g=mod: g = require "mod". */
static int run_require(lua_State *L, const char *spec)
{
    const char *eq = strchr(spec, '=');
    const char *mod = eq ? eq + 1 : spec;
    size_t glen = eq ? (size_t)(eq - spec) : strlen(spec);
    int status;
    lua_getglobal(L, "require");
    lua_pushstring(L, mod);
    status = ff_interp_call(L, 1, 1);
    if (status == LUA_OK) { /* _G[g] = module */
        lua_pushglobaltable(L);
        lua_pushlstring(L, spec, glen);
        lua_pushvalue(L, -3);
        lua_settable(L, -3);
        lua_pop(L, 2);
    }
    return ff_interp_report(L, status, FF_PROGNAME);
}

/* The script's arguments become `...` of its main chunk, as in lua. */
static int run_script(lua_State *L, char **argv)
{
    const char *name = argv[0];
    int status, n;
    /* "-" is stdin, unless it came after "--" (then it is a file named "-"). */
    if (strcmp(name, "-") == 0 && strcmp(argv[-1], "--") != 0)
        name = NULL;
    /* `firefly grow RECIPE.lua ...` runs a growth recipe (unless a file
     * named "grow" is what the user means). */
    if (name && strcmp(name, "grow") == 0 && access(name, F_OK) != 0)
        status = luaL_loadstring(L, "return require('firefly.grow.command').main(...)");
    /* `firefly export CHECKPOINT --to FORMAT DIR` (lib/firefly/export). */
    else if (name && strcmp(name, "export") == 0 && access(name, F_OK) != 0)
        status = luaL_loadstring(L, "return require('firefly.export').main(...)");
    else
        status = luaL_loadfile(L, name);
    if (status == LUA_OK) {
        for (n = 0; argv[n + 1] != NULL; n++)
            lua_pushstring(L, argv[n + 1]);
        status = ff_interp_call(L, n, LUA_MULTRET);
    }
    return ff_interp_report(L, status, FF_PROGNAME);
}

/* LUA_INIT_5_4 (or else LUA_INIT) holds code, or @file to run. */
static int run_lua_init(lua_State *L)
{
    const char *name = "=" LUA_INIT_VERSIONED;
    const char *init = getenv(name + 1);
    if (init == NULL) {
        name = "=" LUA_INIT_NAME;
        init = getenv(name + 1);
    }
    if (init == NULL)
        return LUA_OK;
    if (init[0] == '@')
        return run_file(L, init + 1);
    return run_string(L, init, name);
}

/* -- Arguments ----------------------------------------------------------- */

enum {
    HAS_E = 1,     /* -e */
    HAS_I = 2,     /* -i */
    HAS_V = 4,     /* -v */
    NO_ENV = 8,    /* -E */
    HAS_HELP = 16, /* --help */
    BAD_ARGS = 32
};

/* First pass: validates the options and finds the script. Sets *script to
 * its index in argv (argc when there is none) and *bad to the offending
 * argument when returning BAD_ARGS. -e and -l run later, in order, once the
 * state is ready. */
static int scan_args(int argc, char **argv, int *script, int *bad)
{
    int flags = 0, i;
    for (i = 1; i < argc; i++) {
        const char *a = argv[i];
        *bad = i;
        if (a[0] != '-' || a[1] == '\0') /* a script, or "-" for stdin */
            break;
        if (strcmp(a, "--") == 0) {
            i++;
            break;
        }
        if (strcmp(a, "--help") == 0)
            flags |= HAS_HELP;
        else if (strcmp(a, "-i") == 0)
            flags |= HAS_I;
        else if (strcmp(a, "-v") == 0)
            flags |= HAS_V;
        else if (strcmp(a, "-E") == 0)
            flags |= NO_ENV;
        else if ((a[1] == 'e' || a[1] == 'l')) {
            /* The operand may be attached ("-eprint(1)") or the next word. */
            if (a[2] == '\0' && (++i >= argc || argv[i][0] == '-'))
                return BAD_ARGS;
            if (a[1] == 'e')
                flags |= HAS_E;
        } else
            return BAD_ARGS;
    }
    *script = i < argc ? i : argc;
    return flags;
}

/* Second pass: runs -e and -l in the order given. */
static int run_args(lua_State *L, char **argv, int script)
{
    int i;
    for (i = 1; i < script; i++) {
        const char *a = argv[i];
        const char *operand;
        int status;
        if (a[0] != '-' || (a[1] != 'e' && a[1] != 'l'))
            continue;
        operand = a[2] != '\0' ? a + 2 : argv[++i];
        if (a[1] == 'e')
            status = run_string(L, operand, "=(command line)");
        else
            status = run_require(L, operand);
        if (status != LUA_OK)
            return 0;
    }
    return 1;
}

/* arg[0] is the script, arg[1..] its arguments, the interpreter and its
 * options at negative indices. Without a script, arg[0] is the interpreter. */
static void make_arg_table(lua_State *L, int argc, char **argv, int script)
{
    int base = script < argc ? script : 0;
    int i;
    lua_createtable(L, argc - base, base + 1);
    for (i = 0; i < argc; i++) {
        lua_pushstring(L, argv[i]);
        lua_rawseti(L, -2, i - base);
    }
    lua_setglobal(L, "arg");
}

/* -- Lua memory limit (firefly grow --max-memory) ------------------------- */

/* The state's allocator counts the bytes Lua holds and, while a limit is
 * set, refuses a request that would pass it: Lua then raises "not enough
 * memory" (after an emergency collection), which the recipe runner turns
 * into a message. Shrinking and freeing never fail, as Lua requires. */
typedef struct {
    lua_Alloc f; /* the allocator luaL_newstate chose */
    void *ud;
    size_t used;  /* bytes Lua holds */
    size_t limit; /* 0: none */
    int hit;      /* a request was refused since the limit was set */
} mem_limit;

static mem_limit memlim;

static void *limited_alloc(void *ud, void *ptr, size_t osize, size_t nsize)
{
    mem_limit *m = ud;
    size_t old = ptr != NULL ? osize : 0; /* osize is a type tag when ptr is NULL */
    void *p;
    if (nsize > old && m->limit != 0 && m->used - (old < m->used ? old : m->used) + nsize > m->limit) {
        m->hit = 1;
        return NULL;
    }
    p = m->f(m->ud, ptr, osize, nsize);
    if (p != NULL || nsize == 0)
        m->used = m->used - (old < m->used ? old : m->used) + nsize;
    return p;
}

/* firefly.interp.memory_limit(bytes): sets the limit (0 lifts it) and
 * clears the hit flag; returns the previous limit. */
static int interp_memory_limit(lua_State *L)
{
    lua_Number n = luaL_checknumber(L, 1);
    size_t prev = memlim.limit;
    luaL_argcheck(L, n >= 0, 1, "must be a number of bytes >= 0");
    memlim.limit = (size_t)n;
    memlim.hit = 0;
    lua_pushnumber(L, (lua_Number)prev);
    return 1;
}

static int interp_memory_used(lua_State *L)
{
    lua_pushnumber(L, (lua_Number)memlim.used);
    return 1;
}

static int interp_memory_hit(lua_State *L)
{
    lua_pushboolean(L, memlim.hit);
    return 1;
}

/* -- Watching a recipe (firefly grow --max-seconds, --max-memory) -------- */

/* A count hook makes Lua 5.4 check every instruction (about 2x slower Lua
 * code), so the limits are looked at from a timer instead: SIGALRM sets a
 * one-shot hook on the main thread (lua_sethook is signal-safe), and the
 * hook calls the Lua check, which raises when the recipe must stop. */
static lua_State *watched_L = NULL;
static const char watch_key = 'w'; /* registry key of the Lua check */

static void watch_hook(lua_State *L, lua_Debug *ar)
{
    (void)ar;
    lua_sethook(L, NULL, 0, 0);
    lua_rawgetp(L, LUA_REGISTRYINDEX, &watch_key);
    if (lua_isfunction(L, -1))
        lua_call(L, 0, 0);
    else
        lua_pop(L, 1);
}

/* A hook already there (a Ctrl-C's stop) is left alone. */
static void on_sigalrm(int sig)
{
    (void)sig;
    if (watched_L != NULL && lua_gethook(watched_L) == NULL)
        lua_sethook(watched_L, watch_hook, LUA_MASKCOUNT, 1);
}

/* firefly.interp.watch(check, seconds): calls check() on the main thread
 * every `seconds` of wall time; watch() stops. */
static int interp_watch(lua_State *L)
{
    struct itimerval it;
    struct sigaction sa;
    memset(&it, 0, sizeof it);
    if (lua_isnoneornil(L, 1)) {
        setitimer(ITIMER_REAL, &it, NULL);
        if (watched_L != NULL && lua_gethook(watched_L) == watch_hook)
            lua_sethook(watched_L, NULL, 0, 0);
        watched_L = NULL;
        lua_pushnil(L);
        lua_rawsetp(L, LUA_REGISTRYINDEX, &watch_key);
        return 0;
    }
    luaL_checktype(L, 1, LUA_TFUNCTION);
    lua_Number s = luaL_checknumber(L, 2);
    luaL_argcheck(L, s >= 0.001 && s <= 3600, 2, "must be a number of seconds in [0.001, 3600]");
    lua_pushvalue(L, 1);
    lua_rawsetp(L, LUA_REGISTRYINDEX, &watch_key);
    lua_rawgeti(L, LUA_REGISTRYINDEX, LUA_RIDX_MAINTHREAD);
    watched_L = lua_tothread(L, -1);
    lua_pop(L, 1);
    /* SA_RESTART: a read or write in progress is resumed, not failed. */
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_sigalrm;
    sa.sa_flags = SA_RESTART;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGALRM, &sa, NULL);
    it.it_value.tv_sec = (time_t)s;
    it.it_value.tv_usec = (suseconds_t)((s - (lua_Number)(time_t)s) * 1e6);
    it.it_interval = it.it_value;
    setitimer(ITIMER_REAL, &it, NULL);
    return 0;
}

static int luaopen_firefly_interp(lua_State *L)
{
    static const luaL_Reg fns[] = {{"memory_limit", interp_memory_limit},
                                   {"memory_used", interp_memory_used},
                                   {"memory_hit", interp_memory_hit},
                                   {"watch", interp_watch},
                                   {"listen", interp_listen},
                                   {"unlisten", interp_unlisten},
                                   {"stop_asked", interp_stop_asked},
                                   {NULL, NULL}};
    luaL_newlib(L, fns);
    return 1;
}

/* Put the counting allocator under the state; what it holds already is
 * counted from the collector's figure. */
static void install_limited_alloc(lua_State *L)
{
    memlim.f = lua_getallocf(L, &memlim.ud);
    memlim.used = (size_t)lua_gc(L, LUA_GCCOUNT, 0) * 1024 + (size_t)lua_gc(L, LUA_GCCOUNTB, 0);
    lua_setallocf(L, limited_alloc, &memlim);
}

/* -- Module setup -------------------------------------------------------- */

/* Pushes the directory holding firefly/init.lua: <exe>/lib in a source
 * tree, <exe>/../share/lua/5.4 after `make install PREFIX=...`, else the
 * compile-time install location. */
static void push_lib_dir(lua_State *L)
{
    static const char *const candidates[] = {"%s/lib", "%s/../share/lua/5.4"};
    char exe[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    char *slash = NULL;
    if (n > 0) {
        exe[n] = '\0';
        slash = strrchr(exe, '/');
    }
    if (slash != NULL) {
        *slash = '\0';
        for (size_t i = 0; i < sizeof candidates / sizeof *candidates; i++) {
            const char *dir = lua_pushfstring(L, candidates[i], exe);
            const char *probe = lua_pushfstring(L, "%s/firefly/init.lua", dir);
            int found = access(probe, R_OK) == 0;
            lua_pop(L, 1);
            if (found)
                return;
            lua_pop(L, 1);
        }
    }
    lua_pushstring(L, FIREFLY_LUADIR);
}

/* os.execute without system()'s blindness to Ctrl-C: system() ignores
 * SIGINT in the caller while the child runs, so a Ctrl-C that stops gnuplot
 * drawing a run's plots would never reach the run (grow.run would go on,
 * or fail on the plot). Here the child runs as system() runs it, and the
 * caller's handler sees the signal too. Results as os.execute's. */
static int os_execute(lua_State *L)
{
    const char *cmd = luaL_optstring(L, 1, NULL);
    int status;
    pid_t pid;
    if (cmd == NULL) { /* is a shell there? */
        lua_pushboolean(L, access("/bin/sh", X_OK) == 0);
        return 1;
    }
    fflush(NULL); /* the child's output comes after ours */
    pid = fork();
    if (pid < 0)
        return luaL_fileresult(L, 0, NULL);
    if (pid == 0) {
        execl("/bin/sh", "sh", "-c", cmd, (char *)NULL);
        _exit(127);
    }
    while (waitpid(pid, &status, 0) < 0) {
        if (errno != EINTR)
            return luaL_fileresult(L, 0, NULL);
    }
    errno = 0; /* luaL_execresult reads a set errno as a failure to run */
    return luaL_execresult(L, status);
}

/* The engine is linked in, so "firefly.core" comes from package.preload and
 * never from a stray core.so; the pure-Lua part comes first on the path. */
static void setup_modules(lua_State *L)
{
    const char *dir;
    luaL_getsubtable(L, LUA_REGISTRYINDEX, LUA_PRELOAD_TABLE);
    lua_pushcfunction(L, luaopen_firefly_core);
    lua_setfield(L, -2, "firefly.core");
    lua_pushcfunction(L, luaopen_firefly_interp);
    lua_setfield(L, -2, "firefly.interp");
    lua_pop(L, 1);

    lua_getglobal(L, "os");
    lua_pushcfunction(L, os_execute);
    lua_setfield(L, -2, "execute");
    lua_pop(L, 1);

    lua_getglobal(L, "package");
    push_lib_dir(L);
    dir = lua_tostring(L, -1);
    lua_getfield(L, -2, "path");
    lua_pushfstring(L, "%s/?.lua;%s/?/init.lua;%s", dir, dir, lua_tostring(L, -1));
    lua_setfield(L, -4, "path");
    lua_pop(L, 3);
}

/* Scripts, -e chunks and the REPL speak the same language: `ff` and
 * `help` are globals in all of them (a spec example copied into a file
 * runs as it is). `local ff = require "firefly"` gives the same table.
 * They load on first use, through a metatable on _G that only answers
 * those two names and then gets out of the way (rawset), so a script that
 * never touches the library starts as fast as plain Lua. */
static int preload_globals(lua_State *L)
{
    static const char code[] =
        "local lazy = { ff = 'firefly', help = 'firefly.help' }\n"
        "setmetatable(_G, { __index = function(g, k)\n"
        "  local m = lazy[k]\n"
        "  if not m then return nil end\n"
        "  local v = require(m)\n"
        "  rawset(g, k, v)\n"
        "  return v\n"
        "end })\n";
    return run_chunk(L, luaL_loadbuffer(L, code, sizeof code - 1, "=(preload)"));
}

/* -- Protected main ------------------------------------------------------ */

/* Returns true on success; errors were already reported. */
static int protected_main(lua_State *L)
{
    int argc = (int)lua_tointeger(L, 1);
    char **argv = (char **)lua_touserdata(L, 2);
    int script, bad = 0;
    int flags = scan_args(argc, argv, &script, &bad);

    luaL_checkversion(L);
    if (flags & BAD_ARGS) {
        const char *a = argv[bad];
        if ((a[1] == 'e' || a[1] == 'l') && a[2] == '\0')
            fprintf(stderr, FF_PROGNAME ": '%s' needs an argument\n", a);
        else
            fprintf(stderr, FF_PROGNAME ": unrecognized option '%s'\n", a);
        print_usage(stderr);
        return 0;
    }
    if (flags & HAS_HELP) {
        print_usage(stdout);
        luaL_openlibs(L);
        setup_modules(L);
        print_subcommands(L);
        lua_pushboolean(L, 1);
        return 1;
    }
    if (flags & HAS_V)
        ff_interp_version();
    if (flags & NO_ENV) { /* read by the package library as it opens */
        lua_pushboolean(L, 1);
        lua_setfield(L, LUA_REGISTRYINDEX, "LUA_NOENV");
    }
    luaL_openlibs(L);
    setup_modules(L);
    make_arg_table(L, argc, argv, script);
    if (preload_globals(L) != LUA_OK)
        return 0;

    if (!(flags & NO_ENV) && run_lua_init(L) != LUA_OK)
        return 0;
    if (!run_args(L, argv, script))
        return 0;
    if (script < argc && run_script(L, argv + script) != LUA_OK)
        return 0;
    if (flags & HAS_I)
        ff_repl_run(L);
    else if (script == argc && !(flags & (HAS_E | HAS_V))) {
        /* Like lua: a terminal gets the REPL, a pipe or file is a chunk. */
        if (isatty(STDIN_FILENO))
            ff_repl_run(L);
        else if (run_file(L, NULL) != LUA_OK)
            return 0;
    }
    lua_pushboolean(L, 1);
    return 1;
}

int main(int argc, char **argv)
{
    lua_State *L = luaL_newstate();
    int status, ok;
    if (L == NULL) {
        fprintf(stderr, FF_PROGNAME ": cannot create state: not enough memory\n");
        return EXIT_FAILURE;
    }
    /* Lua's default incremental collector, not the generational mode lua.c
     * picks: tensors are small userdata owning large C buffers, and the
     * binding steps the collector by engine memory; young collections would
     * leave old tensors alive until a rare major one. */
    install_limited_alloc(L);
    lua_pushcfunction(L, protected_main);
    lua_pushinteger(L, argc);
    lua_pushlightuserdata(L, argv);
    status = lua_pcall(L, 2, 1, 0);
    ok = lua_toboolean(L, -1);
    ff_interp_report(L, status, FF_PROGNAME);
    lua_close(L);
    return (status == LUA_OK && ok) ? EXIT_SUCCESS : EXIT_FAILURE;
}

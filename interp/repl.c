/* repl.c: the read-eval-print loop of `firefly`.
 *
 * On a terminal, lines come from GNU readline (editing, history in
 * ~/.firefly_history, completion of Lua names); from a pipe they come from
 * stdin with no prompt, so a piped session prints only results and errors.
 * Each chunk is tried as `return <input>` first so that expressions print;
 * input that ends early (a "<eof>" syntax error) asks for more lines. */
#include <errno.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/select.h>
#include <unistd.h>

#include <readline/history.h>
#include <readline/readline.h>

#include <lua.h>
#include <lauxlib.h>

#include "interp.h"

#define PROMPT1 "> "
#define PROMPT2 ">> "
#define HISTORY_MAX 1000 /* lines kept in memory and in the file */

/* What reading a line can give besides Lua load statuses (all >= 0). */
enum { READ_LINE = -1, READ_EOF = -2, READ_INTERRUPTED = -3 };

struct input {
    int tty;
    char history[PATH_MAX]; /* "" when history is off */
};

/* -- The Lua side: printer and completer --------------------------------- */

/* Small enough to read, and in Lua because walking tables, sorting keys and
 * calling __tostring are one-liners there. Library functions are captured
 * on load so that a session that reassigns `string` or `table` still prints. */
static const char helpers_lua[] =
    "local type, tostring, next, rawget, select = type, tostring, next, rawget, select\n"
    "local ipairs, sort, concat, package = ipairs, table.sort, table.concat, package\n"
    "local fmt, match, gmatch, sub, find = string.format, string.match, string.gmatch,\n"
    "      string.sub, string.find\n"
    "local gsub = string.gsub\n"
    "local getmetatable = debug.getmetatable\n"
    "local MAXDEPTH, MAXITEMS, WIDTH = 3, 100, 72\n"
    "local keywords = {}\n"
    "for w in gmatch('and break do else elseif end false for function goto if in local '\n"
    "    .. 'nil not or repeat return then true until while', '%a+') do keywords[w] = true end\n"
    "local function isword(k) return type(k) == 'string' and match(k, '^[%a_][%w_]*$') end\n"
    "local function isname(k) return isword(k) and not keywords[k] end\n"
    "local function hastostring(v)\n"
    "  local mt = getmetatable(v)\n"
    "  return mt ~= nil and rawget(mt, '__tostring') ~= nil\n"
    "end\n"
    "-- keys: numbers, then strings, then the rest by their names\n"
    "local rank = {number = 1, string = 2}\n"
    "local function before(a, b)\n"
    "  local ra, rb = rank[type(a)] or 3, rank[type(b)] or 3\n"
    "  if ra ~= rb then return ra < rb end\n"
    "  if ra < 3 then return a < b end\n"
    "  return tostring(a) < tostring(b)\n"
    "end\n"
    "local function quote(s) -- %q, but newlines as \\n\n"
    "  return (gsub(fmt('%q', s), '\\\\\\n', '\\\\n'))\n"
    "end\n"
    "local show\n"
    "-- `path` holds the tables enclosing this one: meeting one again is a cycle\n"
    "local function showtable(t, depth, path, indent)\n"
    "  if path[t] then return '<cycle>' end\n"
    "  if next(t) == nil then return '{}' end\n"
    "  if depth > MAXDEPTH then return '{...}' end\n"
    "  local keys, items, flat, inner = {}, {}, true, indent .. '  '\n"
    "  for k in next, t do keys[#keys + 1] = k end\n"
    "  sort(keys, before)\n"
    "  path[t] = true\n"
    "  for i, k in ipairs(keys) do\n"
    "    if i > MAXITEMS then items[i] = fmt('... (%d more)', #keys - MAXITEMS) break end\n"
    "    local v = rawget(t, k)\n"
    "    local s = show(v, depth + 1, path, inner)\n"
    "    if type(v) == 'table' and sub(s, 1, 1) == '{' and s ~= '{}' then flat = false end\n"
    "    if k == i then items[i] = s\n"
    "    elseif isname(k) then items[i] = k .. ' = ' .. s\n"
    "    else items[i] = '[' .. (type(k) == 'string' and quote(k) or tostring(k)) .. '] = ' .. s end\n"
    "  end\n"
    "  path[t] = nil\n"
    "  local line = '{' .. concat(items, ', ') .. '}'\n"
    "  if flat and #line <= WIDTH and not find(line, '\\n') then return line end\n"
    "  return '{\\n' .. inner .. concat(items, ',\\n' .. inner) .. '\\n' .. indent .. '}'\n"
    "end\n"
    "function show(v, depth, path, indent)\n"
    "  local tv = type(v)\n"
    "  if tv == 'string' then return depth == 0 and v or quote(v) end\n"
    "  if tv == 'table' and not hastostring(v) then return showtable(v, depth, path, indent) end\n"
    "  local s = tostring(v)\n"
    "  if depth == 0 or not find(s, '\\n') then return s end\n"
    "  -- inside a table a tensor shows its footer ([Tensor 2x3]); other\n"
    "  -- many-line values are indented whole\n"
    "  local last = match(s, '\\n([^\\n]*)$')\n"
    "  if match(last, '^%[Tensor [^%]]*%]$') then return last end\n"
    "  return (gsub(s, '\\n', '\\n' .. indent))\n"
    "end\n"
    "-- results on one line separated by tabs, as lua does; when one of them\n"
    "-- takes several lines (a tensor, a network), each starts on a line of\n"
    "-- its own, or the second would begin after the first one's footer\n"
    "local function format(...)\n"
    "  local out, sep = {}, '\\t'\n"
    "  for i = 1, select('#', ...) do\n"
    "    out[i] = show((select(i, ...)), 0, {}, '')\n"
    "    if find(out[i], '\\n') then sep = '\\n' end\n"
    "  end\n"
    "  return concat(out, sep)\n"
    "end\n"
    "-- 'ff.ra' -> {'ff.rand', 'ff.randn', ...}: fields of the value named by\n"
    "-- the path and of its __index tables; after ':' only functions. A table\n"
    "-- whose fields load on first use lists them in its metatable's\n"
    "-- __submodules (ff.grow before it is loaded); a tensor's methods are\n"
    "-- those of ff.Tensor, as its __index is a function\n"
    "local function complete(word)\n"
    "  local path, sep, part = match(word, '^(.-)([.:]?)([%w_]*)$')\n"
    "  local v, out, seen = _G, {}, {}\n"
    "  if sep ~= '' then\n"
    "    for name in gmatch(path, '[^.:]+') do\n"
    "      v = v[name]\n"
    "      if v == nil then return out end\n"
    "    end\n"
    "  end\n"
    "  local function add(t)\n"
    "    for k, x in next, t do\n"
    "      if isword(k) and sub(k, 1, #part) == part and not seen[k]\n"
    "          and (sep ~= ':' or type(x) == 'function') then\n"
    "        seen[k] = true\n"
    "        out[#out + 1] = path .. sep .. k\n"
    "      end\n"
    "    end\n"
    "  end\n"
    "  local ffm = rawget(package.loaded, 'firefly')\n"
    "  if sep ~= '' and type(ffm) == 'table' and ffm.is_tensor(v) then v = ffm.Tensor end\n"
    "  for _ = 1, 5 do -- a bounded walk: __index chains may loop\n"
    "    if type(v) == 'table' then add(v) end\n"
    "    local mt = getmetatable(v)\n"
    "    local lazy = type(mt) == 'table' and rawget(mt, '__submodules')\n"
    "    if type(lazy) == 'table' then add(lazy) end\n"
    "    v = mt and rawget(mt, '__index')\n"
    "    if type(v) ~= 'table' then break end\n"
    "  end\n"
    "  if sep == '' then add(keywords) end\n"
    "  sort(out)\n"
    "  return out\n"
    "end\n"
    "-- inside help(\"...\"): the names under ff, without 'ff.'\n"
    "local function complete_help(word)\n"
    "  local out = complete('ff.' .. word)\n"
    "  for i, w in ipairs(out) do out[i] = sub(w, 4) end\n"
    "  return out\n"
    "end\n"
    "return format, function(word, inhelp)\n"
    "  if inhelp then return complete_help(word) end\n"
    "  return complete(word)\n"
    "end\n";

/* Registry keys (their addresses are unique). */
static const char format_key = 'f', complete_key = 'c', matches_key = 'm';

static int load_helpers(lua_State *L)
{
    int status = luaL_loadbuffer(L, helpers_lua, sizeof helpers_lua - 1, "=repl");
    if (status == LUA_OK)
        status = ff_interp_call(L, 0, 2);
    if (status != LUA_OK)
        return ff_interp_report(L, status, FF_PROGNAME);
    lua_rawsetp(L, LUA_REGISTRYINDEX, &complete_key);
    lua_rawsetp(L, LUA_REGISTRYINDEX, &format_key);
    return LUA_OK;
}

/* Prints the `n` values on top of the stack, popping them. */
static void print_results(lua_State *L, int n)
{
    int status;
    luaL_checkstack(L, LUA_MINSTACK, "too many results to print");
    lua_rawgetp(L, LUA_REGISTRYINDEX, &format_key);
    lua_insert(L, -(n + 1));
    status = ff_interp_call(L, n, 1); /* a huge table can be interrupted */
    if (status == LUA_OK) {
        size_t len;
        const char *s = lua_tolstring(L, -1, &len);
        fwrite(s, 1, len, stdout);
        fputc('\n', stdout);
        lua_pop(L, 1);
    } else {
        lua_pushfstring(L, "error printing the result: %s", lua_tostring(L, -1));
        lua_remove(L, -2);
        ff_interp_report(L, status, NULL);
    }
}

/* -- Reading lines ------------------------------------------------------- */

/* Set by Ctrl-C while waiting for input. */
static volatile sig_atomic_t prompt_interrupted = 0;

static void on_sigint_prompt(int sig)
{
    (void)sig;
    prompt_interrupted = 1;
}

/* For the whole session, so that Ctrl-C between two chunks cannot kill it
 * (ff_interp_call swaps in its own handler while code runs). No SA_RESTART:
 * Ctrl-C must wake up the read or the select. */
static void catch_sigint(struct sigaction *outside)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_sigint_prompt;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, outside);
}

/* From a pipe: the next line without its newline, malloc'ed. */
static int read_pipe_line(char **line)
{
    size_t cap = 0;
    ssize_t n;
    *line = NULL;
    n = getline(line, &cap, stdin);
    if (n < 0) {
        free(*line);
        *line = NULL;
        if (prompt_interrupted) { /* drop what was typed, keep reading */
            clearerr(stdin);
            return READ_INTERRUPTED;
        }
        return READ_EOF;
    }
    if (n > 0 && (*line)[n - 1] == '\n')
        (*line)[n - 1] = '\0';
    return READ_LINE;
}

/* readline's callback interface lets Ctrl-C at the prompt simply clear the
 * line: the blocking readline() would need a longjmp out of a signal
 * handler. The line handler stores its line here. */
static char *tty_line;
static int tty_finished;

static void on_rl_line(char *line)
{
    tty_line = line; /* NULL on Ctrl-D */
    tty_finished = 1;
    rl_callback_handler_remove();
}

static int read_tty_line(const char *prompt, char **line)
{
    int fd = fileno(rl_instream), r = READ_LINE;
    sigset_t block, saved;

    /* SIGINT stays blocked except inside pselect, so a Ctrl-C cannot slip in
     * between checking the flag and going to sleep. */
    sigemptyset(&block);
    sigaddset(&block, SIGINT);
    sigprocmask(SIG_BLOCK, &block, &saved);
    tty_line = NULL;
    tty_finished = 0;
    rl_callback_handler_install(prompt, on_rl_line);
    while (!tty_finished) {
        fd_set fds;
        FD_ZERO(&fds);
        FD_SET(fd, &fds);
        if (pselect(fd + 1, &fds, NULL, NULL, NULL, &saved) >= 0) {
            rl_callback_read_char();
        } else if (errno != EINTR) {
            rl_callback_handler_remove();
            break; /* the terminal went away: as Ctrl-D */
        } else if (!prompt_interrupted) {
            rl_check_signals(); /* a window resize: redisplay now */
        } else {
            prompt_interrupted = 0;
            rl_echo_signal_char(SIGINT);
            rl_free_line_state();
            rl_callback_sigcleanup();
            rl_callback_handler_remove();
            fputc('\n', rl_outstream);
            r = READ_INTERRUPTED;
            break;
        }
    }
    sigprocmask(SIG_SETMASK, &saved, NULL);
    *line = tty_line;
    if (r == READ_LINE && tty_line == NULL)
        r = READ_EOF;
    return r;
}

/* Pushes the next line of input; returns READ_LINE or why there is none.
 * Prompts follow lua: the globals _PROMPT and _PROMPT2 override them. */
static int push_line(lua_State *L, const struct input *in, int first)
{
    char *line;
    int r;
    prompt_interrupted = 0;
    if (in->tty) {
        const char *prompt;
        lua_getglobal(L, first ? "_PROMPT" : "_PROMPT2");
        prompt = lua_tostring(L, -1);
        r = read_tty_line(prompt ? prompt : first ? PROMPT1 : PROMPT2, &line);
        lua_pop(L, 1);
    } else {
        r = read_pipe_line(&line);
    }
    if (r == READ_LINE) {
        lua_pushstring(L, line);
        free(line);
    }
    return r;
}

/* -- Compiling input ----------------------------------------------------- */

/* A syntax error at the end of the input means "keep typing". */
static int is_incomplete(lua_State *L, int status)
{
    static const char mark[] = "<eof>";
    const size_t marklen = sizeof mark - 1;
    size_t len;
    const char *msg;
    if (status != LUA_ERRSYNTAX)
        return 0;
    msg = lua_tolstring(L, -1, &len);
    return len >= marklen && strcmp(msg + len - marklen, mark) == 0;
}

/* Compiles the source on top of the stack and pushes the function or the
 * error message above it. The expression form comes first so that `1+1`
 * prints; when both forms fail, the statement's message is the one shown.
 * Sets *more when either form only lacks an ending, so that `{1,` waits
 * for the rest of an expression as `for i = 1, 3 do` does for a statement. */
static int compile(lua_State *L, int *more)
{
    size_t len;
    const char *src;
    int status;

    lua_pushliteral(L, "return ");
    lua_pushvalue(L, -2);
    lua_concat(L, 2);
    src = lua_tolstring(L, -1, &len);
    status = luaL_loadbuffer(L, src, len, "=stdin");
    lua_remove(L, -2);
    *more = 0;
    if (status == LUA_OK)
        return status;
    *more = is_incomplete(L, status);
    lua_pop(L, 1);

    src = lua_tolstring(L, -1, &len);
    status = luaL_loadbuffer(L, src, len, "=stdin");
    if (status != LUA_OK)
        *more = *more || is_incomplete(L, status);
    else
        *more = 0;
    return status;
}

/* A chunk ending in ';' (trailing blanks aside) prints no results. */
static int is_silent(const char *src, size_t len)
{
    while (len > 0 && strchr(" \t\r\n", src[len - 1]) != NULL)
        len--;
    return len > 0 && src[len - 1] == ';';
}

static void remember(const struct input *in, const char *src)
{
    HIST_ENTRY *last;
    if (!in->tty || src[strspn(src, " \t")] == '\0')
        return;
    last = history_get(history_base + history_length - 1);
    if (last != NULL && strcmp(last->line, src) == 0)
        return; /* no runs of the same line */
    add_history(src);
    if (in->history[0] != '\0')
        append_history(1, in->history); /* now, so a crash loses nothing */
}

/* Reads lines until they compile or fail for a reason other than ending
 * early. Pushes the function or the error message and returns the load
 * status, or returns READ_EOF / READ_INTERRUPTED with nothing pushed. */
static int read_chunk(lua_State *L, const struct input *in, int *silent)
{
    int r = push_line(L, in, 1);
    int status, more;
    size_t len;
    const char *src;

    if (r != READ_LINE)
        return r;
    for (;;) { /* the source is on top */
        status = compile(L, &more);
        if (status == LUA_OK || !more)
            break;
        r = push_line(L, in, 0);
        if (r == READ_EOF) /* report what was missing */
            break;
        if (r == READ_INTERRUPTED) { /* drop the whole chunk */
            lua_pop(L, 2);
            return r;
        }
        lua_remove(L, -2); /* the error */
        lua_pushliteral(L, "\n");
        lua_insert(L, -2);
        lua_concat(L, 3); /* source .. "\n" .. line */
    }
    src = lua_tolstring(L, -2, &len);
    *silent = is_silent(src, len);
    remember(in, src);
    lua_remove(L, -2);
    return status;
}

/* -- History ------------------------------------------------------------- */

/* $FIREFLY_HISTORY, else ~/.firefly_history; empty turns history off. */
static void history_open(struct input *in)
{
    const char *env = getenv("FIREFLY_HISTORY");
    const char *home = getenv("HOME");
    int n = -1;
    in->history[0] = '\0';
    if (env != NULL)
        n = snprintf(in->history, sizeof in->history, "%s", env);
    else if (home != NULL && home[0] != '\0')
        n = snprintf(in->history, sizeof in->history, "%s/.firefly_history", home);
    if (n < 0 || (size_t)n >= sizeof in->history)
        in->history[0] = '\0';

    using_history();
    stifle_history(HISTORY_MAX);
    /* A multi-line entry (a function typed over several lines) stays one
     * entry: the file gets a "#<time>" line before each entry and reading
     * joins the lines between two of them, as bash's lithist does. */
    history_comment_char = '#'; /* else add_history() stamps no time */
    history_write_timestamps = 1;
    history_multiline_entries = 1;
    /* Errors are ignored: a session without history is still a session. A
     * missing file is created, because append_history() only appends. */
    if (in->history[0] != '\0' && read_history(in->history) == ENOENT)
        write_history(in->history);
}

static void history_close(const struct input *in)
{
    if (in->history[0] != '\0')
        history_truncate_file(in->history, HISTORY_MAX);
    clear_history();
}

/* -- Completion ---------------------------------------------------------- */

static lua_State *completion_L;

/* readline calls this with state 0 first, then for each next match. */
static char *next_match(const char *text, int state)
{
    static lua_Integer i;
    lua_State *L = completion_L;
    int top = lua_gettop(L);
    char *match = NULL;
    (void)text;
    if (state == 0)
        i = 0;
    if (lua_rawgetp(L, LUA_REGISTRYINDEX, &matches_key) == LUA_TTABLE &&
        lua_rawgeti(L, -1, ++i) == LUA_TSTRING)
        match = strdup(lua_tostring(L, -1)); /* readline frees it */
    lua_settop(L, top);
    return match;
}

static char **complete(const char *text, int start, int end)
{
    lua_State *L = completion_L;
    int top = lua_gettop(L);
    (void)end;
    /* Inside a string, readline's file name completion is more useful,
     * except in help("grow.pro"), which takes a dotted name. */
    int inhelp = start >= 6 && strchr("\"'", rl_line_buffer[start - 1]) != NULL &&
                 strncmp(rl_line_buffer + start - 6, "help(", 5) == 0;
    if (start > 0 && strchr("\"'", rl_line_buffer[start - 1]) != NULL && !inhelp)
        return NULL;
    rl_attempted_completion_over = 1;
    rl_completion_append_character = '\0'; /* `ff.randn` wants '(' next */
    lua_rawgetp(L, LUA_REGISTRYINDEX, &complete_key);
    lua_pushstring(L, text);
    lua_pushboolean(L, inhelp);
    /* Indexing may run __index metamethods: errors mean no matches. */
    if (lua_pcall(L, 2, 1, 0) != LUA_OK)
        lua_pushnil(L);
    lua_rawsetp(L, LUA_REGISTRYINDEX, &matches_key);
    lua_settop(L, top);
    return rl_completion_matches(text, next_match);
}

static void readline_setup(lua_State *L)
{
    completion_L = L;
    rl_instream = stdin; /* readline only sets them on first use */
    rl_outstream = stdout;
    rl_readline_name = "firefly"; /* for $if firefly in ~/.inputrc */
    rl_catch_signals = 0;         /* Ctrl-C is ours (read_tty_line) */
    rl_persistent_signal_handlers = 1; /* SIGWINCH while waiting too */
    rl_attempted_completion_function = complete;
    rl_basic_word_break_characters = " \t\n\"\\'`@$><=;|&{(+-*/%^~#,[])";
}

/* -- The loop ------------------------------------------------------------ */

void ff_repl_run(lua_State *L)
{
    struct input in;
    struct sigaction outside;
    int have_format;

    in.tty = isatty(STDIN_FILENO);
    in.history[0] = '\0';
    if (in.tty) {
        ff_interp_version();
        puts("'ff' is the firefly module; help() lists its parts, Tab completes.\n"
             "Ctrl-C interrupts, Ctrl-D leaves.");
        readline_setup(L);
        history_open(&in);
    }
    have_format = load_helpers(L) == LUA_OK;
    fflush(stdout);
    catch_sigint(&outside);

    for (;;) {
        int base = lua_gettop(L), silent = 0;
        int status = read_chunk(L, &in, &silent);
        if (status == READ_EOF)
            break;
        if (status == READ_INTERRUPTED)
            continue;
        if (status == LUA_OK)
            status = ff_interp_call(L, 0, LUA_MULTRET);
        if (status == LUA_OK) {
            int n = lua_gettop(L) - base;
            if (n > 0 && !silent && have_format)
                print_results(L, n);
        } else {
            ff_interp_report(L, status, NULL);
        }
        lua_settop(L, base);
        fflush(stdout);
    }

    sigaction(SIGINT, &outside, NULL);
    if (in.tty) {
        fputc('\n', stdout); /* leave the shell's prompt on a line of its own */
        history_close(&in);
    }
    lua_pushnil(L);
    lua_rawsetp(L, LUA_REGISTRYINDEX, &matches_key);
    fflush(stdout);
}

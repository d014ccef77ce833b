/* error.c: the per-thread error message behind ff_last_error(). */
#include <stdarg.h>
#include <stdio.h>
#include "ff_base.h"

static _Thread_local char err_msg[512];
static _Thread_local ff_status err_code;

ff_status ff_error(ff_status code, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err_msg, sizeof err_msg, fmt, ap);
    va_end(ap);
    err_code = code;
    return code;
}

const char *ff_last_error(void) { return err_msg; }
ff_status ff_last_status(void) { return err_code; }

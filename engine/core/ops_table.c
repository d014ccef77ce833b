/*
 * ops_table.c: the one table of differentiable ops, generated from
 * FF_OP_LIST (ff_autograd.h). An op listed without a forward or a backward
 * does not link; a test walks the table to gradient-check every entry.
 */
#include "ff_autograd.h"

#define FF_OP_ENTRY(ID, name, arity) [FF_OP_##ID] = {#name, arity, ff_fwd_##name, ff_bwd_##name},
const ff_opdef ff_ops[FF_OP_COUNT] = {FF_OP_LIST(FF_OP_ENTRY)};
#undef FF_OP_ENTRY

/* Pinned: an entry per opcode, and FF_OP_COUNT is the number of ops. */
#define FF_OP_ONE(ID, name, arity) +1
_Static_assert(sizeof ff_ops / sizeof ff_ops[0] == FF_OP_COUNT, "op table size");
_Static_assert(0 FF_OP_LIST(FF_OP_ONE) == FF_OP_COUNT, "op list and enum disagree");
#undef FF_OP_ONE

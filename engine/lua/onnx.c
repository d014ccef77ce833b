/*
 * onnx.c: ff.onnx_encode(model) -> the bytes of an ONNX ModelProto.
 *
 * lib/firefly/export/onnx.lua decides the graph (which operators, which
 * attributes); this file only turns that Lua table into the protobuf-c
 * structs generated from Debian's onnx.proto (build/gen/onnx.pb-c.h, made
 * by protoc-c at build time) and packs them. The wire format is
 * protobuf-c's, not ours.
 *
 * Every struct lives in a Lua userdata anchored in a table for the length
 * of the call, so a Lua error half-way (a bad field) frees everything with
 * the next collection: no malloc, no leak on longjmp. Strings point into
 * the model table's own strings and tensors into their storage; the model
 * table keeps both alive until the bytes are packed.
 *
 * model = { ir_version =, opset =, producer_name =, producer_version =,
 *   graph = { name =, nodes = { {op =, name =, inputs = {..}, outputs = {..},
 *               attrs = { {name =, i = | f = | ints = {..}} .. }} .. },
 *             initializers = { {name =, tensor = T} | {name =, floats = {..},
 *               dims = {..}} | {name =, int64s = {..}, dims = {..}} .. },
 *             inputs = { {name =, dims = {n | "symbol" ..}} .. },
 *             outputs = { {name =, dims = nil | {..}} .. } } }
 */
#include <string.h>
#include "lf.h"
#include "onnx.pb-c.h"

#define ANCHOR 2 /* stack index of the table of userdata blocks */

/* Zeroed memory that lives until the call returns. */
static void *block(lua_State *L, size_t n)
{
    void *p = lua_newuserdatauv(L, n > 0 ? n : 1, 0);
    memset(p, 0, n > 0 ? n : 1);
    lua_rawseti(L, ANCHOR, (lua_Integer)lua_rawlen(L, ANCHOR) + 1);
    return p;
}

/* Errors name the place in the model table, e.g. "graph.nodes[3].op". */
static int bad(lua_State *L, const char *where, const char *what, int idx)
{
    return luaL_error(L, "onnx_encode: %s %s, got %s", where, what, luaL_typename(L, idx));
}

/* t[key] as a string kept alive by t (no number-to-string conversion:
 * that would make a new string only the stack holds). */
static char *field_string(lua_State *L, int t, const char *key, const char *where, int required)
{
    lua_getfield(L, t, key);
    if (lua_isnil(L, -1) && !required) {
        lua_pop(L, 1);
        return NULL;
    }
    if (lua_type(L, -1) != LUA_TSTRING) {
        lua_pushfstring(L, "%s.%s", where, key);
        bad(L, lua_tostring(L, -1), "must be a string", -2);
    }
    char *s = (char *)lua_tostring(L, -1);
    lua_pop(L, 1);
    return s;
}

static lua_Integer field_int(lua_State *L, int t, const char *key, const char *where)
{
    lua_getfield(L, t, key);
    if (!lua_isinteger(L, -1)) {
        lua_pushfstring(L, "%s.%s", where, key);
        bad(L, lua_tostring(L, -1), "must be an integer", -2);
    }
    lua_Integer v = lua_tointeger(L, -1);
    lua_pop(L, 1);
    return v;
}

/* Pushes t[key] and returns its length; errors unless it is a table. */
static size_t push_list(lua_State *L, int t, const char *key, const char *where)
{
    lua_getfield(L, t, key);
    if (!lua_istable(L, -1)) {
        lua_pushfstring(L, "%s.%s", where, key);
        bad(L, lua_tostring(L, -1), "must be a list", -2);
    }
    return (size_t)lua_rawlen(L, -1);
}

/* The list on top of the stack as strings. */
static char **string_list(lua_State *L, size_t n, const char *where)
{
    char **out = block(L, n * sizeof *out);
    for (size_t i = 0; i < n; i++) {
        lua_rawgeti(L, -1, (lua_Integer)i + 1);
        if (lua_type(L, -1) != LUA_TSTRING) {
            lua_pushfstring(L, "%s[%d]", where, (int)i + 1);
            bad(L, lua_tostring(L, -1), "must be a string", -2);
        }
        out[i] = (char *)lua_tostring(L, -1);
        lua_pop(L, 1);
    }
    return out;
}

static int64_t *int_list(lua_State *L, size_t n, const char *where)
{
    int64_t *out = block(L, n * sizeof *out);
    for (size_t i = 0; i < n; i++) {
        lua_rawgeti(L, -1, (lua_Integer)i + 1);
        if (!lua_isinteger(L, -1)) {
            lua_pushfstring(L, "%s[%d]", where, (int)i + 1);
            bad(L, lua_tostring(L, -1), "must be an integer", -2);
        }
        out[i] = (int64_t)lua_tointeger(L, -1);
        lua_pop(L, 1);
    }
    return out;
}

/* The readers below take the table at index t, with `where` (its place,
 * for messages) on the stack above it; they leave the stack at t + 1. */

/* {name =, i = | f = | ints = } */
static Onnx__AttributeProto *attribute(lua_State *L, int t, const char *where)
{
    Onnx__AttributeProto *a = block(L, sizeof *a);
    onnx__attribute_proto__init(a);
    a->name = field_string(L, t, "name", where, 1);
    a->has_type = 1;
    if (lua_getfield(L, t, "i") != LUA_TNIL) {
        if (!lua_isinteger(L, -1))
            bad(L, where, "field i must be an integer", -1);
        a->type = ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__INT;
        a->has_i = 1;
        a->i = (int64_t)lua_tointeger(L, -1);
    } else if (lua_getfield(L, t, "f") != LUA_TNIL) {
        if (lua_type(L, -1) != LUA_TNUMBER)
            bad(L, where, "field f must be a number", -1);
        a->type = ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__FLOAT;
        a->has_f = 1;
        a->f = (float)lua_tonumber(L, -1);
    } else if (lua_getfield(L, t, "ints") != LUA_TNIL) {
        lua_pushfstring(L, "%s.ints", where);
        const char *w = lua_tostring(L, -1);
        if (!lua_istable(L, -2))
            bad(L, w, "must be a list", -2);
        lua_pushvalue(L, -2);
        a->type = ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__INTS;
        a->n_ints = (size_t)lua_rawlen(L, -1);
        a->ints = int_list(L, a->n_ints, w);
    } else {
        luaL_error(L, "onnx_encode: %s has none of i, f, ints", where);
    }
    lua_settop(L, t + 1);
    return a;
}

static Onnx__NodeProto *node(lua_State *L, int t, const char *where)
{
    Onnx__NodeProto *n = block(L, sizeof *n);
    onnx__node_proto__init(n);
    n->op_type = field_string(L, t, "op", where, 1);
    n->name = field_string(L, t, "name", where, 0);
    n->n_input = push_list(L, t, "inputs", where);
    n->input = string_list(L, n->n_input, "inputs");
    lua_pop(L, 1);
    n->n_output = push_list(L, t, "outputs", where);
    n->output = string_list(L, n->n_output, "outputs");
    lua_pop(L, 1);
    lua_getfield(L, t, "attrs");
    int al = lua_gettop(L);
    if (!lua_isnil(L, -1)) {
        if (!lua_istable(L, -1))
            bad(L, where, "attrs must be a list", -1);
        n->n_attribute = (size_t)lua_rawlen(L, -1);
        n->attribute = block(L, n->n_attribute * sizeof *n->attribute);
        for (size_t i = 0; i < n->n_attribute; i++) {
            lua_rawgeti(L, al, (lua_Integer)i + 1);
            if (!lua_istable(L, -1))
                bad(L, where, "attrs entries must be tables", -1);
            n->attribute[i] = attribute(L, al + 1, lua_pushfstring(L, "%s.attrs[%d]", where, (int)i + 1));
            lua_pop(L, 2);
        }
    }
    lua_settop(L, t + 1);
    return n;
}

static Onnx__TensorProto *initializer(lua_State *L, int t, const char *where)
{
    Onnx__TensorProto *p = block(L, sizeof *p);
    onnx__tensor_proto__init(p);
    p->name = field_string(L, t, "name", where, 1);
    p->has_data_type = 1;
    if (lua_getfield(L, t, "tensor") != LUA_TNIL) {
        ff_tensor *x = lf_checktensor(L, -1);
        if (!ff_tensor_is_contiguous(x))
            luaL_error(L, "onnx_encode: %s.tensor is not contiguous (call contiguous())", where);
        p->data_type = ONNX__TENSOR_PROTO__DATA_TYPE__FLOAT;
        p->n_dims = (size_t)x->ndim;
        p->dims = block(L, p->n_dims * sizeof *p->dims);
        for (int i = 0; i < x->ndim; i++)
            p->dims[i] = x->shape[i];
        /* Little-endian float32, which ONNX's raw_data is on this host. */
        p->has_raw_data = 1;
        p->raw_data.len = (size_t)ff_tensor_numel(x) * sizeof(float);
        p->raw_data.data = (uint8_t *)ff_tensor_data(x);
        lua_settop(L, t + 1);
        return p;
    }
    lua_pop(L, 1);
    int is_float = lua_getfield(L, t, "floats") != LUA_TNIL;
    if (!is_float) {
        lua_pop(L, 1);
        if (lua_getfield(L, t, "int64s") == LUA_TNIL)
            luaL_error(L, "onnx_encode: %s has none of tensor, floats, int64s", where);
    }
    if (!lua_istable(L, -1))
        bad(L, where, "values must be a list", -1);
    size_t n = (size_t)lua_rawlen(L, -1);
    if (is_float) {
        p->data_type = ONNX__TENSOR_PROTO__DATA_TYPE__FLOAT;
        p->n_float_data = n;
        p->float_data = block(L, n * sizeof *p->float_data);
        for (size_t i = 0; i < n; i++) {
            lua_rawgeti(L, -1, (lua_Integer)i + 1);
            if (lua_type(L, -1) != LUA_TNUMBER)
                bad(L, where, "floats entries must be numbers", -1);
            p->float_data[i] = (float)lua_tonumber(L, -1);
            lua_pop(L, 1);
        }
    } else {
        p->data_type = ONNX__TENSOR_PROTO__DATA_TYPE__INT64;
        p->n_int64_data = n;
        p->int64_data = int_list(L, n, "int64s");
    }
    lua_pop(L, 1);
    p->n_dims = push_list(L, t, "dims", where);
    p->dims = int_list(L, p->n_dims, "dims");
    int64_t count = 1;
    for (size_t i = 0; i < p->n_dims; i++)
        count *= p->dims[i];
    if (count != (int64_t)n)
        luaL_error(L, "onnx_encode: %s has %d values for dims holding %d", where, (int)n, (int)count);
    lua_settop(L, t + 1);
    return p;
}

/* {name =, dims = nil | {n | "symbol", ...}}: a float tensor value. */
static Onnx__ValueInfoProto *value_info(lua_State *L, int t, const char *where)
{
    Onnx__ValueInfoProto *v = block(L, sizeof *v);
    onnx__value_info_proto__init(v);
    v->name = field_string(L, t, "name", where, 1);
    Onnx__TypeProto *type = block(L, sizeof *type);
    onnx__type_proto__init(type);
    Onnx__TypeProto__Tensor *tt = block(L, sizeof *tt);
    onnx__type_proto__tensor__init(tt);
    tt->has_elem_type = 1;
    tt->elem_type = ONNX__TENSOR_PROTO__DATA_TYPE__FLOAT;
    type->value_case = ONNX__TYPE_PROTO__VALUE_TENSOR_TYPE;
    type->tensor_type = tt;
    v->type = type;
    if (lua_getfield(L, t, "dims") != LUA_TNIL) {
        int dl = lua_gettop(L);
        if (!lua_istable(L, -1))
            bad(L, where, "dims must be a list", -1);
        Onnx__TensorShapeProto *shape = block(L, sizeof *shape);
        onnx__tensor_shape_proto__init(shape);
        shape->n_dim = (size_t)lua_rawlen(L, -1);
        shape->dim = block(L, shape->n_dim * sizeof *shape->dim);
        for (size_t i = 0; i < shape->n_dim; i++) {
            Onnx__TensorShapeProto__Dimension *d = block(L, sizeof *d);
            onnx__tensor_shape_proto__dimension__init(d);
            lua_rawgeti(L, dl, (lua_Integer)i + 1);
            if (lua_isinteger(L, -1)) {
                d->value_case = ONNX__TENSOR_SHAPE_PROTO__DIMENSION__VALUE_DIM_VALUE;
                d->dim_value = (int64_t)lua_tointeger(L, -1);
            } else if (lua_type(L, -1) == LUA_TSTRING) {
                d->value_case = ONNX__TENSOR_SHAPE_PROTO__DIMENSION__VALUE_DIM_PARAM;
                d->dim_param = (char *)lua_tostring(L, -1);
            } else {
                bad(L, where, "dims entries must be integers or strings", -1);
            }
            lua_pop(L, 1);
            shape->dim[i] = d;
        }
        tt->shape = shape;
    }
    lua_settop(L, t + 1);
    return v;
}

/* Reads the list t[key] of tables with `read` into a new array. */
#define READ_LIST(L, t, key, type, read, out, n)                                    \
    do {                                                                            \
        (n) = push_list(L, t, key, "graph");                                        \
        int l_ = lua_gettop(L);                                                     \
        (out) = block(L, (n) * sizeof(type *));                                     \
        for (size_t i_ = 0; i_ < (n); i_++) {                                       \
            lua_rawgeti(L, l_, (lua_Integer)i_ + 1);                                \
            if (!lua_istable(L, -1))                                                \
                bad(L, "graph." key " entries", "must be tables", -1);              \
            (out)[i_] = read(L, l_ + 1, lua_pushfstring(L, "graph.%s[%d]", key, (int)i_ + 1)); \
            lua_pop(L, 2);                                                          \
        }                                                                           \
        lua_pop(L, 1);                                                              \
    } while (0)

static int onnx_encode(lua_State *L)
{
    luaL_checktype(L, 1, LUA_TTABLE);
    lua_settop(L, 1);
    lua_newtable(L); /* ANCHOR */

    Onnx__ModelProto *m = block(L, sizeof *m);
    onnx__model_proto__init(m);
    m->has_ir_version = 1;
    m->ir_version = (int64_t)field_int(L, 1, "ir_version", "model");
    m->producer_name = field_string(L, 1, "producer_name", "model", 0);
    m->producer_version = field_string(L, 1, "producer_version", "model", 0);
    Onnx__OperatorSetIdProto *opset = block(L, sizeof *opset);
    onnx__operator_set_id_proto__init(opset);
    opset->domain = ""; /* the default (ai.onnx) domain */
    opset->has_version = 1;
    opset->version = (int64_t)field_int(L, 1, "opset", "model");
    m->n_opset_import = 1;
    m->opset_import = block(L, sizeof *m->opset_import);
    m->opset_import[0] = opset;

    if (lua_getfield(L, 1, "graph") != LUA_TTABLE)
        bad(L, "model.graph", "must be a table", -1);
    int g = lua_gettop(L);
    Onnx__GraphProto *gp = block(L, sizeof *gp);
    onnx__graph_proto__init(gp);
    gp->name = field_string(L, g, "name", "graph", 1);
    READ_LIST(L, g, "nodes", Onnx__NodeProto, node, gp->node, gp->n_node);
    READ_LIST(L, g, "initializers", Onnx__TensorProto, initializer, gp->initializer,
              gp->n_initializer);
    READ_LIST(L, g, "inputs", Onnx__ValueInfoProto, value_info, gp->input, gp->n_input);
    READ_LIST(L, g, "outputs", Onnx__ValueInfoProto, value_info, gp->output, gp->n_output);
    m->graph = gp;

    size_t size = onnx__model_proto__get_packed_size(m);
    luaL_Buffer b;
    char *out = luaL_buffinitsize(L, &b, size);
    size_t written = onnx__model_proto__pack(m, (uint8_t *)out);
    if (written != size)
        return luaL_error(L, "onnx_encode: internal error: packed %d bytes, expected %d",
                          (int)written, (int)size);
    luaL_pushresultsize(&b, size);
    return 1;
}

static const luaL_Reg onnx_fns[] = {
    {"onnx_encode", onnx_encode},
    {NULL, NULL},
};

void lf_open_onnx(lua_State *L)
{
    luaL_setfuncs(L, onnx_fns, 0);
}

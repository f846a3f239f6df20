/* Graph construction: values, nodes, attribute validation against the op
 * table, and type inference at the moment a node is added. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ir/ir.h"

struct mera_graph {
    mera_arena arena;
    const char *name;
    mera_rounding rounding;
    mera_value *values;
    int n_values, cap_values;
    mera_node *nodes;
    int n_nodes, cap_nodes;
    int *outputs;
    int n_outputs;
    int *inputs; /* INPUT and PARAM value ids in declaration order */
    int n_inputs, cap_inputs;
};

mera_graph *mera_graph_new(const char *name)
{
    mera_graph *g = calloc(1, sizeof *g);
    if (!g)
        return NULL;
    mera_arena_init(&g->arena);
    g->name = mera_arena_strdup(&g->arena, name ? name : "main");
    if (!g->name) {
        free(g);
        return NULL;
    }
    g->rounding = MERA_ROUNDING_DEFAULT;
    return g;
}

mera_rounding mera_graph_rounding(const mera_graph *g)
{
    return g->rounding;
}

void mera_graph_set_rounding(mera_graph *g, mera_rounding r)
{
    if ((int)r < 0 || r >= MERA_ROUNDING_COUNT)
        MERA_BUG("mera_graph_set_rounding: rounding outside mera_rounding");
    g->rounding = r;
}

void mera_graph_free(mera_graph *g)
{
    if (!g)
        return;
    mera_arena_free(&g->arena);
    free(g->values);
    free(g->nodes);
    free(g->inputs);
    free(g);
}

const char *mera_graph_name(const mera_graph *g) { return g->name; }
mera_arena *mera_graph_arena(mera_graph *g) { return &g->arena; }
int mera_graph_num_values(const mera_graph *g) { return g->n_values; }
int mera_graph_num_nodes(const mera_graph *g) { return g->n_nodes; }
int mera_graph_num_outputs(const mera_graph *g) { return g->n_outputs; }
int mera_graph_num_inputs(const mera_graph *g) { return g->n_inputs; }

const mera_value *mera_graph_value(const mera_graph *g, int id)
{
    MERA_ASSERT(id >= 0 && id < g->n_values);
    return &g->values[id];
}

const mera_node *mera_graph_node(const mera_graph *g, int index)
{
    MERA_ASSERT(index >= 0 && index < g->n_nodes);
    return &g->nodes[index];
}

int mera_graph_output(const mera_graph *g, int i)
{
    MERA_ASSERT(i >= 0 && i < g->n_outputs);
    return g->outputs[i];
}

int mera_graph_input(const mera_graph *g, int i)
{
    MERA_ASSERT(i >= 0 && i < g->n_inputs);
    return g->inputs[i];
}

void mera_graph_last_uses(const mera_graph *g, int *last)
{
    for (int v = 0; v < g->n_values; v++)
        last[v] = -1;
    for (int n = 0; n < mera_graph_num_nodes(g); n++) {
        const mera_node *node = mera_graph_node(g, n);
        for (int i = 0; i < node->n_inputs; i++)
            if (node->inputs[i] >= 0)
                last[node->inputs[i]] = n;
    }
    for (int i = 0; i < g->n_outputs; i++)
        last[g->outputs[i]] = mera_graph_num_nodes(g);
}

int mera_graph_find_value(const mera_graph *g, const char *name)
{
    for (int i = 0; i < g->n_values; i++)
        if (strcmp(g->values[i].name, name) == 0)
            return i;
    return -1;
}

static int grow(void **p, int *cap, int need, size_t elem)
{
    if (need <= *cap)
        return 0;
    int nc = *cap ? *cap * 2 : 16;
    while (nc < need)
        nc *= 2;
    void *q = realloc(*p, (size_t)nc * elem);
    if (!q)
        return -1;
    *p = q;
    *cap = nc;
    return 0;
}

const char *mera_graph_unique_name(mera_graph *g, const char *base)
{
    if (mera_graph_find_value(g, base) < 0)
        return mera_arena_strdup(&g->arena, base);
    char buf[512];
    for (int i = 1;; i++) {
        snprintf(buf, sizeof buf, "%.480s_%d", base, i);
        if (mera_graph_find_value(g, buf) < 0)
            return mera_arena_strdup(&g->arena, buf);
    }
}

static mera_status check_name(const mera_graph *g, const char *name, mera_error *err)
{
    if (!name || !*name)
        return mera_fail(err, MERA_ERR_INVALID, "a name must not be empty");
    if (strlen(name) > 400)
        return mera_fail(err, MERA_ERR_INVALID, "name '%.40s...' is longer than 400 characters", name);
    for (const char *c = name; *c; c++)
        if ((unsigned char)*c < 0x20 || *c == '"' || *c == '\\')
            return mera_fail(err, MERA_ERR_INVALID,
                             "name '%s' contains a control character, quote or backslash", name);
    if (mera_graph_find_value(g, name) >= 0)
        return mera_fail(err, MERA_ERR_INVALID, "name '%s' is already used in graph '%s'", name, g->name);
    return MERA_OK;
}

/* Copy a type's per-axis arrays into the graph's arena. */
static mera_status own_type(mera_graph *g, mera_type *t, mera_error *err)
{
    if (t->q.kind != MERA_QUANT_PER_AXIS)
        return MERA_OK;
    t->q.scales = mera_arena_memdup(&g->arena, t->q.scales, (size_t)t->q.count * sizeof(double));
    t->q.zero_points = mera_arena_memdup(&g->arena, t->q.zero_points, (size_t)t->q.count * sizeof(int32_t));
    if (!t->q.scales || !t->q.zero_points)
        return mera_fail(err, MERA_ERR_NOMEM, "out of memory");
    return MERA_OK;
}

static int new_value(mera_graph *g, const char *name, mera_value_kind kind, const mera_type *t,
                     mera_error *err)
{
    static const char *const kind_names[] = {"input", "param", "const", "node output"};
    if (check_name(g, name, err))
        return -1;
    if (mera_type_validate(t, err)) {
        mera_error_prefix(err, "%s '%s': ", kind_names[kind], name);
        return -1;
    }
    if (grow((void **)&g->values, &g->cap_values, g->n_values + 1, sizeof *g->values)) {
        mera_fail(err, MERA_ERR_NOMEM, "out of memory");
        return -1;
    }
    mera_value *v = &g->values[g->n_values];
    memset(v, 0, sizeof *v);
    v->name = mera_arena_strdup(&g->arena, name);
    v->kind = kind;
    v->type = *t;
    v->producer = -1;
    if (!v->name || own_type(g, &v->type, err)) {
        mera_fail(err, MERA_ERR_NOMEM, "out of memory");
        return -1;
    }
    return g->n_values++;
}

static int add_declared(mera_graph *g, const char *name, mera_value_kind kind, const mera_type *t,
                        mera_error *err)
{
    if (grow((void **)&g->inputs, &g->cap_inputs, g->n_inputs + 1, sizeof *g->inputs)) {
        mera_fail(err, MERA_ERR_NOMEM, "out of memory");
        return -1;
    }
    int id = new_value(g, name, kind, t, err);
    if (id >= 0)
        g->inputs[g->n_inputs++] = id;
    return id;
}

int mera_graph_add_input(mera_graph *g, const char *name, const mera_type *t, mera_error *err)
{
    return add_declared(g, name, MERA_VALUE_INPUT, t, err);
}

int mera_graph_add_param(mera_graph *g, const char *name, const mera_type *t, mera_error *err)
{
    return add_declared(g, name, MERA_VALUE_PARAM, t, err);
}

int mera_graph_add_const(mera_graph *g, const char *name, const mera_type *t, const void *data,
                         int copy_data, mera_error *err)
{
    if (!data) {
        mera_fail(err, MERA_ERR_INVALID, "const '%s' has no data", name ? name : "");
        return -1;
    }
    int id = new_value(g, name, MERA_VALUE_CONST, t, err);
    if (id < 0)
        return -1;
    mera_value *v = &g->values[id];
    if (copy_data) {
        v->data = mera_arena_memdup(&g->arena, data, mera_type_nbytes(t));
        if (!v->data) {
            g->n_values--;
            mera_fail(err, MERA_ERR_NOMEM, "out of memory copying const '%s'", name);
            return -1;
        }
    } else {
        v->data = data;
    }
    return id;
}

int mera_graph_add_param_data(mera_graph *g, const char *name, const mera_type *t, const void *data,
                              mera_error *err)
{
    if (!data) {
        mera_fail(err, MERA_ERR_INVALID, "param '%s' has no data", name ? name : "");
        return -1;
    }
    void *copy = mera_arena_memdup(&g->arena, data, mera_type_nbytes(t));
    if (!copy) {
        mera_fail(err, MERA_ERR_NOMEM, "out of memory copying param '%s'", name ? name : "");
        return -1;
    }
    int id = add_declared(g, name, MERA_VALUE_PARAM, t, err);
    if (id >= 0)
        g->values[id].data = copy;
    return id;
}

int mera_graph_add_param_ref(mera_graph *g, const char *name, const mera_type *t, const void *data,
                             mera_error *err)
{
    if (!data) {
        mera_fail(err, MERA_ERR_INVALID, "param '%s' has no data", name ? name : "");
        return -1;
    }
    int id = add_declared(g, name, MERA_VALUE_PARAM, t, err);
    if (id >= 0)
        g->values[id].data = data;
    return id;
}

/* ---- attributes -------------------------------------------------------- */

const char *mera_attr_kind_name(mera_attr_kind k)
{
    switch (k) {
    case MERA_ATTR_INT: return "int";
    case MERA_ATTR_FLOAT: return "float";
    case MERA_ATTR_INTS: return "ints";
    case MERA_ATTR_FLOATS: return "floats";
    case MERA_ATTR_STRING: return "string";
    }
    return "?";
}

const mera_attr *mera_attr_find(const mera_attr *attrs, int n, const char *key)
{
    for (int i = 0; i < n; i++)
        if (strcmp(attrs[i].key, key) == 0)
            return &attrs[i];
    return NULL;
}

const mera_attr *mera_node_attr(const mera_node *n, const char *key)
{
    return mera_attr_find(n->attrs, n->n_attrs, key);
}

int64_t mera_attr_int(const mera_node *n, const char *key)
{
    const mera_attr *a = mera_node_attr(n, key);
    MERA_ASSERT(a && a->kind == MERA_ATTR_INT);
    return a->i;
}

double mera_attr_float(const mera_node *n, const char *key)
{
    const mera_attr *a = mera_node_attr(n, key);
    MERA_ASSERT(a && a->kind == MERA_ATTR_FLOAT);
    return a->f;
}

const char *mera_attr_string(const mera_node *n, const char *key)
{
    const mera_attr *a = mera_node_attr(n, key);
    return a ? a->s : NULL;
}

static int choice_ok(const char *choices, const char *s)
{
    size_t n = strlen(s);
    for (const char *c = choices; *c;) {
        const char *bar = strchr(c, '|');
        size_t len = bar ? (size_t)(bar - c) : strlen(c);
        if (len == n && strncmp(c, s, n) == 0)
            return 1;
        if (!bar)
            break;
        c = bar + 1;
    }
    return 0;
}

/* Parse an attribute default written in the op table ("[1,1]", "0", "NCHW"). */
static mera_status parse_default(mera_arena *ar, const mera_attr_spec *sp, mera_attr *a)
{
    a->key = sp->key;
    a->kind = sp->kind;
    const char *s = sp->deflt;
    char *end;
    switch (sp->kind) {
    case MERA_ATTR_INT:
        a->i = strtoll(s, &end, 10);
        break;
    case MERA_ATTR_FLOAT:
        a->f = strtod(s, &end);
        break;
    case MERA_ATTR_STRING:
        a->s = s;
        break;
    case MERA_ATTR_INTS:
    case MERA_ATTR_FLOATS: {
        int64_t iv[16];
        double fv[16];
        int n = 0;
        MERA_ASSERT(*s == '[');
        s++;
        while (*s && *s != ']') {
            MERA_ASSERT(n < 16);
            if (sp->kind == MERA_ATTR_INTS)
                iv[n++] = strtoll(s, &end, 10);
            else
                fv[n++] = strtod(s, &end);
            MERA_ASSERT(end != s);
            s = *end == ',' ? end + 1 : end;
        }
        a->count = n;
        if (sp->kind == MERA_ATTR_INTS)
            a->ints = mera_arena_memdup(ar, iv, (size_t)n * sizeof *iv);
        else
            a->floats = mera_arena_memdup(ar, fv, (size_t)n * sizeof *fv);
        if (n && !a->ints && !a->floats)
            return MERA_ERR_NOMEM;
        break;
    }
    }
    return MERA_OK;
}

static int cmp_attr(const void *a, const void *b)
{
    return strcmp(((const mera_attr *)a)->key, ((const mera_attr *)b)->key);
}

static void list_attr_keys(const mera_attr_spec *specs, char *buf, size_t n)
{
    size_t at = 0;
    buf[0] = 0;
    for (const mera_attr_spec *sp = specs; sp->key; sp++) {
        int w = snprintf(buf + at, n - at, "%s%s", at ? ", " : "", sp->key);
        if (w < 0 || (size_t)w >= n - at)
            break;
        at += (size_t)w;
    }
    if (!at)
        snprintf(buf, n, "(none)");
}

/* Check the given attributes against the op's specs; produce the full,
 * sorted, arena-owned list with defaults filled in. */
static mera_status resolve_attrs(mera_graph *g, const mera_op_info *info, const mera_attr *given,
                                 int n_given, mera_attr **out, int *n_out, mera_error *err)
{
    int n_specs = 0;
    while (info->attrs[n_specs].key)
        n_specs++;
    mera_attr *res = mera_arena_alloc(&g->arena, (size_t)(n_specs + 1) * sizeof *res);
    if (!res)
        return mera_fail(err, MERA_ERR_NOMEM, "out of memory");
    char keys[512];
    for (int i = 0; i < n_given; i++) {
        const mera_attr *a = &given[i];
        const mera_attr_spec *sp = NULL;
        for (int k = 0; k < n_specs; k++)
            if (strcmp(info->attrs[k].key, a->key) == 0)
                sp = &info->attrs[k];
        if (!sp) {
            list_attr_keys(info->attrs, keys, sizeof keys);
            return mera_fail(err, MERA_ERR_ATTR, "unknown attribute '%s'; %s takes: %s", a->key, info->name, keys);
        }
        for (int j = 0; j < i; j++)
            if (strcmp(given[j].key, a->key) == 0)
                return mera_fail(err, MERA_ERR_ATTR, "attribute '%s' is given twice", a->key);
        mera_attr v = *a;
        v.key = sp->key;
        if (sp->kind == MERA_ATTR_FLOAT && a->kind == MERA_ATTR_INT) {
            v.kind = MERA_ATTR_FLOAT;
            v.f = (double)a->i;
        } else if (sp->kind == MERA_ATTR_FLOATS && a->kind == MERA_ATTR_INTS) {
            double *f = mera_arena_alloc(&g->arena, (size_t)(a->count + 1) * sizeof *f);
            if (!f)
                return mera_fail(err, MERA_ERR_NOMEM, "out of memory");
            for (int k = 0; k < a->count; k++)
                f[k] = (double)a->ints[k];
            v.kind = MERA_ATTR_FLOATS;
            v.floats = f;
            v.ints = NULL;
        } else if (sp->kind != a->kind) {
            return mera_fail(err, MERA_ERR_ATTR, "attribute '%s' must be %s, got %s", a->key,
                             mera_attr_kind_name(sp->kind), mera_attr_kind_name(a->kind));
        }
        if ((sp->kind == MERA_ATTR_INTS || sp->kind == MERA_ATTR_FLOATS) && sp->count && v.count != sp->count)
            return mera_fail(err, MERA_ERR_ATTR, "attribute '%s' must have %d values, got %d", a->key,
                             sp->count, v.count);
        if (v.count < 0 || v.count > 64)
            return mera_fail(err, MERA_ERR_ATTR, "attribute '%s' has %d values; at most 64 are allowed",
                             a->key, v.count);
        if (sp->kind == MERA_ATTR_STRING) {
            if (!v.s)
                return mera_fail(err, MERA_ERR_ATTR, "attribute '%s' has no string", a->key);
            if (sp->choices && !choice_ok(sp->choices, v.s))
                return mera_fail(err, MERA_ERR_ATTR, "attribute '%s' is '%s'; it must be one of %s", a->key,
                                 v.s, sp->choices);
            v.s = mera_arena_strdup(&g->arena, v.s);
        } else if (sp->kind == MERA_ATTR_INTS) {
            v.ints = mera_arena_memdup(&g->arena, v.ints, (size_t)v.count * sizeof *v.ints);
        } else if (sp->kind == MERA_ATTR_FLOATS && v.floats == a->floats) {
            v.floats = mera_arena_memdup(&g->arena, v.floats, (size_t)v.count * sizeof *v.floats);
        }
        if ((sp->kind == MERA_ATTR_STRING && !v.s) || (sp->kind == MERA_ATTR_INTS && !v.ints) ||
            (sp->kind == MERA_ATTR_FLOATS && !v.floats))
            return mera_fail(err, MERA_ERR_NOMEM, "out of memory");
        if (sp->kind == MERA_ATTR_FLOAT && v.f != v.f)
            return mera_fail(err, MERA_ERR_ATTR, "attribute '%s' is NaN", a->key);
        res[(*n_out)++] = v;
    }
    for (int k = 0; k < n_specs; k++) {
        const mera_attr_spec *sp = &info->attrs[k];
        if (mera_attr_find(res, *n_out, sp->key))
            continue;
        if (sp->required) {
            list_attr_keys(info->attrs, keys, sizeof keys);
            return mera_fail(err, MERA_ERR_ATTR, "missing required attribute '%s' (%s)", sp->key,
                             mera_attr_kind_name(sp->kind));
        }
        if (sp->deflt) {
            if (parse_default(&g->arena, sp, &res[*n_out]))
                return mera_fail(err, MERA_ERR_NOMEM, "out of memory");
            (*n_out)++;
        }
    }
    qsort(res, (size_t)*n_out, sizeof *res, cmp_attr);
    *out = res;
    return MERA_OK;
}

/* ---- nodes ------------------------------------------------------------- */

int mera_graph_add_node(mera_graph *g, int op, const char *name, const int *inputs, int n_inputs,
                        const mera_attr *attrs, int n_attrs, const char *source, int *out_ids,
                        int max_out, mera_error *err)
{
    if (op < 0 || op >= MERA_OP_COUNT) {
        mera_fail(err, MERA_ERR_UNKNOWN_OP, "unknown op code %d", op);
        return -1;
    }
    const mera_op_info *info = &mera_op_table[op];
    if (check_name(g, name, err)) {
        mera_error_prefix(err, "%s node: ", info->name);
        return -1;
    }
    mera_status st = MERA_OK;
    mera_infer_ctx ctx;
    memset(&ctx, 0, sizeof ctx);
    ctx.graph = g;
    ctx.node_name = name;
    ctx.op = op;
    ctx.arena = &g->arena;
    ctx.err = err;
    ctx.n_outputs = 1;
    if (n_inputs < info->min_inputs || n_inputs > info->max_inputs) {
        if (info->min_inputs == info->max_inputs)
            st = mera_fail(err, MERA_ERR_INVALID, "takes %d inputs, got %d", info->min_inputs, n_inputs);
        else
            st = mera_fail(err, MERA_ERR_INVALID, "takes %d to %d inputs, got %d", info->min_inputs,
                           info->max_inputs, n_inputs);
        goto fail;
    }
    ctx.n_inputs = n_inputs;
    for (int i = 0; i < n_inputs; i++) {
        int id = inputs[i];
        if (id == -1 && i >= info->min_inputs)
            continue;
        if (id < 0 || id >= g->n_values) {
            st = mera_fail(err, MERA_ERR_INVALID, "input %d refers to value %d, which is not in the graph", i, id);
            goto fail;
        }
        ctx.in[i] = &g->values[id].type;
        ctx.in_names[i] = g->values[id].name;
    }
    mera_attr *resolved = NULL;
    int n_resolved = 0;
    if ((st = resolve_attrs(g, info, attrs, n_attrs, &resolved, &n_resolved, err)))
        goto fail;
    ctx.attrs = resolved;
    ctx.n_attrs = n_resolved;
    if ((st = info->infer(&ctx)))
        goto fail;
    if (ctx.n_outputs > max_out)
        MERA_BUG("caller's output array is too small");
    for (int i = 0; i < ctx.n_outputs; i++)
        if ((st = mera_type_validate(&ctx.out[i], err))) {
            mera_error_prefix(err, "output %d: ", i);
            goto fail;
        }

    if (grow((void **)&g->nodes, &g->cap_nodes, g->n_nodes + 1, sizeof *g->nodes)) {
        st = mera_fail(err, MERA_ERR_NOMEM, "out of memory");
        goto fail;
    }
    int *in_copy = mera_arena_memdup(&g->arena, inputs, (size_t)(n_inputs ? n_inputs : 1) * sizeof(int));
    int *out_copy = mera_arena_alloc(&g->arena, (size_t)ctx.n_outputs * sizeof(int));
    const char *src = source ? mera_arena_strdup(&g->arena, source) : NULL;
    if (!in_copy || !out_copy || (source && !src)) {
        st = mera_fail(err, MERA_ERR_NOMEM, "out of memory");
        goto fail;
    }
    int first_value = g->n_values;
    for (int i = 0; i < ctx.n_outputs; i++) {
        char oname[512];
        if (i == 0)
            snprintf(oname, sizeof oname, "%s", name);
        else
            snprintf(oname, sizeof oname, "%s:%d", name, i);
        int id = new_value(g, oname, MERA_VALUE_NODE, &ctx.out[i], err);
        if (id < 0) {
            g->n_values = first_value;
            st = err ? err->code : MERA_ERR_INVALID;
            goto fail;
        }
        g->values[id].producer = g->n_nodes;
        g->values[id].output_index = i;
        out_copy[i] = id;
        out_ids[i] = id;
    }
    mera_node *node = &g->nodes[g->n_nodes];
    node->op = op;
    node->name = g->values[out_copy[0]].name;
    node->n_inputs = n_inputs;
    node->inputs = in_copy;
    node->n_outputs = ctx.n_outputs;
    node->outputs = out_copy;
    node->n_attrs = n_resolved;
    node->attrs = resolved;
    node->source = src;
    return g->n_nodes++;

fail:
    MERA_ASSERT(st != MERA_OK);
    if (source && *source)
        mera_error_prefix(err, "node '%s' (%s) at %s: ", name, info->name, source);
    else
        mera_error_prefix(err, "node '%s' (%s): ", name, info->name);
    return -1;
}

mera_status mera_graph_set_outputs(mera_graph *g, const int *ids, int n, mera_error *err)
{
    if (n < 1)
        return mera_fail(err, MERA_ERR_INVALID, "graph '%s' needs at least one output", g->name);
    for (int i = 0; i < n; i++)
        if (ids[i] < 0 || ids[i] >= g->n_values)
            return mera_fail(err, MERA_ERR_INVALID, "output %d refers to value %d, which is not in graph '%s'",
                             i, ids[i], g->name);
    int *o = mera_arena_memdup(&g->arena, ids, (size_t)n * sizeof *ids);
    if (!o)
        return mera_fail(err, MERA_ERR_NOMEM, "out of memory");
    g->outputs = o;
    g->n_outputs = n;
    return MERA_OK;
}

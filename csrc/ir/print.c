/* The text form of a graph: one line per declaration and per node, stable
 * across runs so that two dumps can be diffed.
 *
 *   graph "tiny" {
 *     input %x: f32[1,3,8,8] NCHW
 *     param %w: f32[4,3,3,3]
 *     %conv = conv2d(%x, %w, _) {activation="relu", ...} : f32[1,4,8,8] NCHW
 *     output %conv
 *   }
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ir/ir.h"

typedef struct {
    char *buf;
    size_t len, cap;
    int oom;
} sbuf;

static void sb_printf(sbuf *b, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 2, 3)))
#endif
    ;

static void sb_printf(sbuf *b, const char *fmt, ...)
{
    if (b->oom)
        return;
    for (;;) {
        va_list ap;
        va_start(ap, fmt);
        size_t room = b->cap - b->len;
        int n = vsnprintf(b->buf ? b->buf + b->len : NULL, room, fmt, ap);
        va_end(ap);
        if (n < 0) {
            b->oom = 1;
            return;
        }
        if ((size_t)n < room) {
            b->len += (size_t)n;
            return;
        }
        size_t nc = b->cap ? b->cap * 2 : 4096;
        while (nc - b->len <= (size_t)n)
            nc *= 2;
        char *q = realloc(b->buf, nc);
        if (!q) {
            b->oom = 1;
            return;
        }
        b->buf = q;
        b->cap = nc;
    }
}

/* The shortest %g form that reads back to the same double. */
static void fmt_double(char *out, size_t n, double v)
{
    for (int prec = 6; prec <= 17; prec++) {
        snprintf(out, n, "%.*g", prec, v);
        if (strtod(out, NULL) == v)
            return;
    }
}

static int plain_name(const char *s)
{
    for (; *s; s++) {
        char c = *s;
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' ||
              c == '.' || c == ':' || c == '-' || c == '/'))
            return 0;
    }
    return 1;
}

static void print_name(sbuf *b, const char *name)
{
    if (plain_name(name))
        sb_printf(b, "%%%s", name);
    else
        sb_printf(b, "%%\"%s\"", name);
}

static void print_type(sbuf *b, const mera_type *t)
{
    char tb[512];
    mera_type_format(t, tb, sizeof tb);
    sb_printf(b, "%s", tb);
}

static void print_attr(sbuf *b, const mera_attr *a)
{
    char num[40];
    sb_printf(b, "%s=", a->key);
    switch (a->kind) {
    case MERA_ATTR_INT:
        sb_printf(b, "%lld", (long long)a->i);
        break;
    case MERA_ATTR_FLOAT:
        fmt_double(num, sizeof num, a->f);
        sb_printf(b, "%s", num);
        break;
    case MERA_ATTR_STRING:
        sb_printf(b, "\"%s\"", a->s);
        break;
    case MERA_ATTR_INTS:
        sb_printf(b, "[");
        for (int i = 0; i < a->count; i++)
            sb_printf(b, "%s%lld", i ? "," : "", (long long)a->ints[i]);
        sb_printf(b, "]");
        break;
    case MERA_ATTR_FLOATS:
        sb_printf(b, "[");
        for (int i = 0; i < a->count; i++) {
            fmt_double(num, sizeof num, a->floats[i]);
            sb_printf(b, "%s%s", i ? "," : "", num);
        }
        sb_printf(b, "]");
        break;
    }
}

static uint64_t fnv1a64(const void *p, size_t n)
{
    const unsigned char *c = p;
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < n; i++) {
        h ^= c[i];
        h *= 1099511628211ull;
    }
    return h;
}

static void print_node(sbuf *b, const mera_graph *g, const mera_node *n)
{
    sb_printf(b, "  ");
    for (int i = 0; i < n->n_outputs; i++) {
        if (i)
            sb_printf(b, ", ");
        print_name(b, mera_graph_value(g, n->outputs[i])->name);
    }
    sb_printf(b, " = %s(", mera_op_table[n->op].name);
    for (int i = 0; i < n->n_inputs; i++) {
        if (i)
            sb_printf(b, ", ");
        if (n->inputs[i] < 0)
            sb_printf(b, "_");
        else
            print_name(b, mera_graph_value(g, n->inputs[i])->name);
    }
    sb_printf(b, ")");
    if (n->n_attrs) {
        sb_printf(b, " {");
        for (int i = 0; i < n->n_attrs; i++) {
            if (i)
                sb_printf(b, ", ");
            print_attr(b, &n->attrs[i]);
        }
        sb_printf(b, "}");
    }
    sb_printf(b, " : ");
    for (int i = 0; i < n->n_outputs; i++) {
        if (i)
            sb_printf(b, ", ");
        print_type(b, &mera_graph_value(g, n->outputs[i])->type);
    }
    if (n->source)
        sb_printf(b, "  # %s", n->source);
    sb_printf(b, "\n");
}

char *mera_graph_to_text(const mera_graph *g)
{
    sbuf b = {0};
    sb_printf(&b, "graph \"%s\" {\n", mera_graph_name(g));
    sb_printf(&b, "  numerics {rounding=\"%s\"}\n", mera_rounding_name(mera_graph_rounding(g)));
    for (int id = 0; id < mera_graph_num_values(g); id++) {
        const mera_value *v = mera_graph_value(g, id);
        switch (v->kind) {
        case MERA_VALUE_INPUT:
        case MERA_VALUE_PARAM:
            sb_printf(&b, "  %s ", v->kind == MERA_VALUE_INPUT ? "input" : "param");
            print_name(&b, v->name);
            sb_printf(&b, ": ");
            print_type(&b, &v->type);
            sb_printf(&b, "\n");
            break;
        case MERA_VALUE_CONST: {
            size_t nbytes = mera_type_nbytes(&v->type);
            sb_printf(&b, "  const ");
            print_name(&b, v->name);
            sb_printf(&b, ": ");
            print_type(&b, &v->type);
            if (v->type.dtype == MERA_DTYPE_FLOAT32 && mera_type_numel(&v->type) <= 8) {
                char num[40];
                sb_printf(&b, " = [");
                for (int64_t i = 0; i < mera_type_numel(&v->type); i++) {
                    fmt_double(num, sizeof num, ((const float *)v->data)[i]);
                    sb_printf(&b, "%s%s", i ? "," : "", num);
                }
                sb_printf(&b, "]\n");
            } else {
                sb_printf(&b, " = <%zu bytes, fnv=%016llx>\n", nbytes,
                          (unsigned long long)fnv1a64(v->data, nbytes));
            }
            break;
        }
        case MERA_VALUE_NODE:
            if (v->output_index == 0)
                print_node(&b, g, mera_graph_node(g, v->producer));
            break;
        }
    }
    for (int i = 0; i < mera_graph_num_outputs(g); i++) {
        sb_printf(&b, "  output ");
        print_name(&b, mera_graph_value(g, mera_graph_output(g, i))->name);
        sb_printf(&b, "\n");
    }
    sb_printf(&b, "}\n");
    if (b.oom) {
        free(b.buf);
        return NULL;
    }
    return b.buf;
}

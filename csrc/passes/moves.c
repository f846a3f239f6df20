/* moves: a chain of transposes and reshapes collapsed to the fewest moves,
 * with the same bytes (every backend).
 *
 * A transpose or reshape only moves elements, so a chain of them (each
 * link's output read by the next link alone) is one permutation of its
 * input's elements. That permutation is found as a transpose of atoms:
 * the input's dimensions, split where a reshape cuts one (a reshape that
 * cuts a dimension at a size that does not divide it leaves the chain as
 * it is), and a transpose permutes whole atoms. Atoms that are neighbours
 * in both the input and the output are merged again, dimensions of
 * extent 1 dropped. The chain becomes
 *     [reshape to the atoms] -> transpose of the atoms -> [reshape]
 * (a reshape where the shapes differ; no transpose where the atoms keep
 * their order; one transpose alone where both ends' dimensions are the
 * atoms; the atoms unmerged where that saves a reshape), and is replaced
 * when that is fewer nodes, or as many with fewer transposes.
 *
 * ShuffleNetV2's channel shuffle imported in NHWC is the chain
 *     transpose(NHWC -> NCHW) -> reshape [N,g,C/g,H,W]
 *       -> transpose [0,2,1,3,4] -> reshape [N,C,H,W]
 * of atoms (H*W, g, C/g) in and (C/g, g, H*W) out: a reshape, one
 * transpose and a reshape, one move of the data instead of two (the
 * reshapes copy on the interpreters and are DMA boxes on the DNA).
 *
 * Left as they are: chains with a per-axis quantized input (the axis
 * would have to follow), chains whose end is a graph output (its name is
 * the interface), and replacements whose last node would give the end
 * another layout tag than the chain's (a later op may read it). */
#include <stdlib.h>
#include <string.h>

#include "passes/passes.h"

#define MAX_ATOMS 64

typedef struct {
    int n;                      /* atoms made so far (ids 0..n-1) */
    int64_t size[MAX_ATOMS];    /* by id */
    int inorder[MAX_ATOMS];     /* ids in the input's element order */
    int n_in;
    /* the current tensor: dims as runs of atoms in seq */
    int rank;
    int seq[MAX_ATOMS];         /* atom ids in the current element order */
    int dim_start[MERA_MAX_RANK + 1]; /* dim k is seq[dim_start[k] .. dim_start[k+1]) */
} chain_view;

static int is_move(const mera_node *node)
{
    return node->op == MERA_OP_TRANSPOSE || node->op == MERA_OP_RESHAPE;
}

static void view_init(chain_view *v, const mera_type *t)
{
    memset(v, 0, sizeof *v);
    v->rank = t->rank;
    for (int k = 0; k < t->rank; k++) {
        v->dim_start[k] = v->n;
        if (t->shape[k] != 1) {
            v->size[v->n] = t->shape[k];
            v->inorder[v->n_in++] = v->n;
            v->seq[v->n] = v->n;
            v->n++;
        }
    }
    v->dim_start[t->rank] = v->n;
}

static int view_transpose(chain_view *v, const int64_t *axes)
{
    int seq[MAX_ATOMS], start[MERA_MAX_RANK + 1], at = 0;
    for (int k = 0; k < v->rank; k++) {
        int64_t a = axes[k] < 0 ? axes[k] + v->rank : axes[k];
        start[k] = at;
        for (int i = v->dim_start[a]; i < v->dim_start[a + 1]; i++)
            seq[at++] = v->seq[i];
    }
    start[v->rank] = at;
    memcpy(v->seq, seq, sizeof seq);
    memcpy(v->dim_start, start, sizeof start);
    return 1;
}

/* Splits atom id (size s) into an outer atom of size f (keeping id) and an
 * inner one of s / f right after it, in the input order and in seq. */
static int view_split(chain_view *v, int id, int64_t f)
{
    if (v->n >= MAX_ATOMS)
        return 0;
    int nid = v->n++;
    v->size[nid] = v->size[id] / f;
    v->size[id] = f;
    for (int i = 0; i < v->n_in; i++)
        if (v->inorder[i] == id) {
            memmove(&v->inorder[i + 2], &v->inorder[i + 1], (size_t)(v->n_in - i - 1) * sizeof(int));
            v->inorder[i + 1] = nid;
            v->n_in++;
            break;
        }
    int len = v->dim_start[v->rank], at = -1;
    for (int i = 0; i < len; i++)
        if (v->seq[i] == id) {
            memmove(&v->seq[i + 2], &v->seq[i + 1], (size_t)(len - i - 1) * sizeof(int));
            v->seq[i + 1] = nid;
            at = i;
            break;
        }
    if (at < 0)
        return 0;
    for (int k = 0; k <= v->rank; k++) /* dims after the split atom start one later */
        if (v->dim_start[k] > at)
            v->dim_start[k]++;
    return 1;
}

/* The current tensor reshaped to t's shape: 0 where a new dimension would
 * cut an atom at a size that does not divide it. */
static int view_reshape(chain_view *v, const mera_type *t)
{
    if (t->rank > MERA_MAX_RANK)
        return 0;
    int at = 0;
    int start[MERA_MAX_RANK + 1];
    for (int k = 0; k < t->rank; k++) {
        start[k] = at;
        int64_t d = t->shape[k], prod = 1;
        while (prod < d) {
            if (at >= v->dim_start[v->rank])
                return 0;
            int id = v->seq[at];
            int64_t s = v->size[id];
            if (prod * s > d) {
                if (d % prod || s % (d / prod) || !view_split(v, id, d / prod))
                    return 0;
                s = v->size[id];
            }
            prod *= s;
            at++;
        }
        if (prod != d)
            return 0;
        /* dim_start of the old dims was only read by view_split: rebuild below */
    }
    start[t->rank] = at;
    if (at != v->dim_start[v->rank])
        return 0;
    v->rank = t->rank;
    memcpy(v->dim_start, start, sizeof(int) * (size_t)(t->rank + 1));
    return 1;
}

/* The collapsed form of a chain. */
typedef struct {
    int k;                       /* atoms after merging */
    int64_t in_shape[MAX_ATOMS]; /* atom sizes in the input's order */
    int perm[MAX_ATOMS];         /* output position i holds input atom perm[i] */
} collapsed;

static void collapse(const chain_view *v, int merge, collapsed *c)
{
    /* position of each atom in the input order and in the output order */
    int pos_in[MAX_ATOMS], out[MAX_ATOMS], n = v->dim_start[v->rank];
    for (int i = 0; i < v->n_in; i++)
        pos_in[v->inorder[i]] = i;
    for (int i = 0; i < n; i++)
        out[i] = pos_in[v->seq[i]];
    /* merge: output neighbours i, i+1 that are input neighbours too */
    int keep[MAX_ATOMS], nk = 0; /* output positions starting a merged atom */
    int64_t size_of_in[MAX_ATOMS];
    for (int i = 0; i < v->n_in; i++)
        size_of_in[i] = v->size[v->inorder[i]];
    int first_of_in[MAX_ATOMS]; /* input position -> starts a merged atom */
    for (int i = 0; i < v->n_in; i++)
        first_of_in[i] = 1;
    for (int i = 0; i < n; i++) {
        if (merge && i > 0 && out[i] == out[i - 1] + 1)
            first_of_in[out[i]] = 0;
        else
            keep[nk++] = i;
    }
    /* the merged atoms in input order: runs from each starting position */
    int merged_of_in[MAX_ATOMS], k = 0;
    int64_t msize[MAX_ATOMS];
    for (int i = 0; i < v->n_in; i++) {
        if (first_of_in[i])
            msize[k++] = 1;
        merged_of_in[i] = k - 1;
        msize[k - 1] *= size_of_in[i];
    }
    c->k = k;
    for (int i = 0; i < k; i++)
        c->in_shape[i] = msize[i];
    for (int i = 0; i < nk; i++)
        c->perm[i] = merged_of_in[out[keep[i]]];
}

static int same_shape(const int64_t *a, int na, const int64_t *b, int nb)
{
    if (na != nb)
        return 0;
    for (int i = 0; i < na; i++)
        if (a[i] != b[i])
            return 0;
    return 1;
}

/* t's dimensions other than extent 1 */
static int non_one(const mera_type *t, int64_t *d)
{
    int n = 0;
    for (int i = 0; i < t->rank; i++)
        if (t->shape[i] != 1)
            d[n++] = t->shape[i];
    return n;
}

/* The moves replacing a chain from type x to type y. */
typedef struct {
    int reshape_in; /* reshape x to the atoms first */
    int transpose;  /* 0: the atoms keep their order */
    int reshape_out;
    int rank_t;     /* the transpose's rank */
    int64_t axes[MAX_ATOMS];
    int64_t shape_in[MAX_ATOMS];
} plan;

static int plan_moves(const collapsed *c, const mera_type *x, const mera_type *y, plan *p)
{
    memset(p, 0, sizeof *p);
    int identity = 1;
    for (int i = 0; i < c->k; i++)
        identity &= c->perm[i] == i;
    if (identity) { /* a reshape, or nothing */
        p->reshape_out = !same_shape(x->shape, x->rank, y->shape, y->rank);
        return 1;
    }
    if (c->k > MERA_MAX_RANK)
        return 0;
    p->transpose = 1;
    int64_t xd[MERA_MAX_RANK], yd[MERA_MAX_RANK], outk[MAX_ATOMS];
    int nx = non_one(x, xd), ny = non_one(y, yd);
    for (int i = 0; i < c->k; i++)
        outk[i] = c->in_shape[c->perm[i]];
    int in_direct = same_shape(xd, nx, c->in_shape, c->k);
    int out_direct = same_shape(yd, ny, outk, c->k);
    if (in_direct) {
        /* transpose x itself: its atoms where y has them, its 1s where y has its 1s (same rank), else last */
        p->rank_t = x->rank;
        int dim_of_atom[MAX_ATOMS], ones[MERA_MAX_RANK], n1 = 0, a = 0;
        for (int i = 0; i < x->rank; i++) {
            if (x->shape[i] != 1)
                dim_of_atom[a++] = i;
            else
                ones[n1++] = i;
        }
        if (out_direct && y->rank == x->rank) {
            int ai = 0, oi = 0;
            for (int i = 0; i < y->rank; i++)
                p->axes[i] = y->shape[i] != 1 ? dim_of_atom[c->perm[ai++]] : ones[oi++];
        } else {
            for (int i = 0; i < c->k; i++)
                p->axes[i] = dim_of_atom[c->perm[i]];
            for (int i = 0; i < n1; i++)
                p->axes[c->k + i] = ones[i];
        }
        int64_t ts[MERA_MAX_RANK];
        for (int i = 0; i < x->rank; i++)
            ts[i] = x->shape[p->axes[i]];
        p->reshape_out = !same_shape(ts, x->rank, y->shape, y->rank);
        return 1;
    }
    p->reshape_in = 1;
    p->rank_t = c->k;
    for (int i = 0; i < c->k; i++) {
        p->shape_in[i] = c->in_shape[i];
        p->axes[i] = c->perm[i];
    }
    p->reshape_out = !same_shape(outk, c->k, y->shape, y->rank);
    return 1;
}

/* The layout tag the plan's last node gives (infer_transpose's rule). */
static mera_layout plan_layout(const plan *p, const mera_type *x)
{
    if (p->reshape_out)
        return MERA_LAYOUT_ANY;
    if (!p->transpose)
        return x->layout;
    if (p->reshape_in || p->rank_t != 4 || p->axes[0] != 0)
        return MERA_LAYOUT_ANY;
    const int64_t *a = p->axes;
    if (x->layout == MERA_LAYOUT_NCHW && a[1] == 2 && a[2] == 3 && a[3] == 1)
        return MERA_LAYOUT_NHWC;
    if (x->layout == MERA_LAYOUT_NHWC && a[1] == 3 && a[2] == 1 && a[3] == 2)
        return MERA_LAYOUT_NCHW;
    return MERA_LAYOUT_ANY;
}

mera_graph *mera_pass_collapse_moves(const mera_graph *g, mera_error *err)
{
    int nv = mera_graph_num_values(g), nn = mera_graph_num_nodes(g);
    int *uses = calloc((size_t)(nv > 0 ? nv : 1), sizeof *uses);
    int *producer = malloc((size_t)(nv > 0 ? nv : 1) * sizeof *producer);
    int *next = malloc((size_t)(nn > 0 ? nn : 1) * sizeof *next); /* the chain's next link, -1 */
    char *is_out = calloc((size_t)(nv > 0 ? nv : 1), 1);
    char *done = calloc((size_t)(nn > 0 ? nn : 1), 1);
    if (!uses || !producer || !next || !is_out || !done) {
        free(uses), free(producer), free(next), free(is_out), free(done);
        mera_fail(err, MERA_ERR_NOMEM, "out of memory");
        return NULL;
    }
    for (int v = 0; v < nv; v++)
        producer[v] = -1;
    for (int n = 0; n < nn; n++) {
        const mera_node *node = mera_graph_node(g, n);
        next[n] = -1;
        for (int i = 0; i < node->n_inputs; i++)
            if (node->inputs[i] >= 0)
                uses[node->inputs[i]]++;
        for (int o = 0; o < node->n_outputs; o++)
            producer[node->outputs[o]] = n;
    }
    for (int i = 0; i < mera_graph_num_outputs(g); i++)
        is_out[mera_graph_output(g, i)] = 1;
    /* links: a move whose output only the next move reads */
    for (int n = 0; n < nn; n++) {
        const mera_node *node = mera_graph_node(g, n);
        if (!is_move(node))
            continue;
        int p = producer[node->inputs[0]];
        if (p >= 0 && is_move(mera_graph_node(g, p)) && uses[node->inputs[0]] == 1 && !is_out[node->inputs[0]])
            next[p] = n;
    }
    int *prev_link = calloc((size_t)(nn > 0 ? nn : 1), sizeof(int));
    mera_rewriter rw;
    if (!prev_link || mera_rewriter_init(&rw, g, err) || mera_rewriter_declare_params(&rw)) {
        if (!prev_link)
            mera_fail(err, MERA_ERR_NOMEM, "out of memory");
        free(uses), free(producer), free(next), free(is_out), free(done), free(prev_link);
        return NULL;
    }
    for (int n = 0; n < nn; n++)
        if (next[n] >= 0)
            prev_link[next[n]] = 1;
    for (int n = 0; n < nn; n++) {
        if (done[n])
            continue;
        const mera_node *node = mera_graph_node(g, n);
        if (is_move(node) && !prev_link[n] && next[n] >= 0) {
            /* a chain head: walk the chain */
            const mera_type *x = &mera_graph_value(g, node->inputs[0])->type;
            chain_view v;
            view_init(&v, x);
            int ok = x->q.kind != MERA_QUANT_PER_AXIS && x->rank <= MERA_MAX_RANK, len = 0, n_t = 0, end = -1;
            for (int m = n; m >= 0 && ok; m = next[m]) {
                const mera_node *lk = mera_graph_node(g, m);
                if (lk->op == MERA_OP_TRANSPOSE) {
                    const mera_attr *ax = mera_node_attr(lk, "axes");
                    ok = ax && view_transpose(&v, ax->ints);
                    n_t++;
                } else {
                    ok = view_reshape(&v, &mera_graph_value(g, lk->outputs[0])->type);
                }
                len++;
                end = m;
            }
            const mera_node *en = end >= 0 ? mera_graph_node(g, end) : NULL;
            const mera_type *y = en ? &mera_graph_value(g, en->outputs[0])->type : NULL;
            collapsed c;
            plan p, q;
            if (ok && !is_out[en->outputs[0]]) {
                /* the merged atoms, or the unmerged ones where those are x's or y's own dimensions */
                collapse(&v, 1, &c);
                ok = plan_moves(&c, x, y, &p);
                collapse(&v, 0, &c);
                if (plan_moves(&c, x, y, &q) &&
                    (!ok || q.reshape_in + q.transpose + q.reshape_out < p.reshape_in + p.transpose + p.reshape_out)) {
                    p = q;
                    ok = 1;
                }
            } else {
                ok = 0;
            }
            int count = ok ? p.reshape_in + p.transpose + p.reshape_out : 0;
            if (ok && (count < len || (count == len && p.transpose < n_t)) && plan_layout(&p, x) == y->layout) {
                int cur = mera_rewriter_value(&rw, node->inputs[0]);
                const char *base = en->name;
                if (cur >= 0 && p.reshape_in) {
                    mera_attr a = {.key = "shape", .kind = MERA_ATTR_INTS, .count = p.rank_t, .ints = p.shape_in};
                    cur = mera_rewriter_add(&rw, MERA_OP_RESHAPE, base, &cur, 1, &a, 1, en->source);
                }
                if (cur >= 0 && p.transpose) {
                    mera_attr a = {.key = "axes", .kind = MERA_ATTR_INTS, .count = p.rank_t, .ints = p.axes};
                    cur = mera_rewriter_add(&rw, MERA_OP_TRANSPOSE, base, &cur, 1, &a, 1, en->source);
                }
                if (cur >= 0 && p.reshape_out) {
                    mera_attr a = {.key = "shape", .kind = MERA_ATTR_INTS, .count = y->rank, .ints = y->shape};
                    cur = mera_rewriter_add(&rw, MERA_OP_RESHAPE, base, &cur, 1, &a, 1, en->source);
                }
                if (cur < 0)
                    goto fail;
                rw.map[en->outputs[0]] = cur;
                for (int m = n; m >= 0; m = next[m])
                    done[m] = 1;
                continue;
            }
        }
        if (mera_rewriter_copy_node(&rw, n) < 0)
            goto fail;
    }
    free(uses), free(producer), free(next), free(is_out), free(done), free(prev_link);
    return mera_rewriter_finish(&rw);
fail:
    free(uses), free(producer), free(next), free(is_out), free(done), free(prev_link);
    mera_rewriter_abort(&rw);
    return NULL;
}

/* The mera IR: typed tensors, a graph of nodes, and the one op table.
 *
 * A graph holds values (graph inputs, parameters, embedded constants and node
 * outputs) and nodes in topological order. Every node is checked against the
 * op table when it is added: attributes are typed and validated, input dtypes
 * and shapes are verified and the output types are inferred. A graph that
 * exists is therefore always well-typed.
 *
 * Quantization lives on tensor types: an int8/uint8 tensor carries per-tensor
 * or per-axis (scale, zero point). An op whose first input is quantized is the
 * quantized version of the op; see docs/numerics.md for the arithmetic.
 */
#ifndef MERA_IR_IR_H
#define MERA_IR_IR_H

#include <stddef.h>
#include <stdint.h>

#include "util/arena.h"
#include "util/status.h"

/* ---- dtypes ------------------------------------------------------------ */

typedef enum {
    MERA_DTYPE_FLOAT32, /* f32 */
    MERA_DTYPE_INT8,    /* i8  */
    MERA_DTYPE_UINT8,   /* u8  */
    MERA_DTYPE_INT32,   /* i32 */
    MERA_DTYPE_BFLOAT16,/* bf16: reserved, no kernels yet */
    MERA_DTYPE_INT64,   /* i64: indices (topk) */
    MERA_DTYPE_COUNT
} mera_dtype;

const char *mera_dtype_name(mera_dtype t);      /* "float32", ... */
const char *mera_dtype_short(mera_dtype t);     /* "f32", ... */
size_t mera_dtype_size(mera_dtype t);
/* Accepts "float32"/"f32", "int8"/"i8", ...; returns 0 on success. */
int mera_dtype_parse(const char *s, mera_dtype *out);
int mera_dtype_is_quantized_int(mera_dtype t); /* int8 or uint8 */

/* ---- layouts ----------------------------------------------------------- */

/* A tag saying what the axes of a tensor mean. ANY for tensors whose layout
 * does not matter (vectors, matrices, flattened features). */
#define MERA_LAYOUTS(X) \
    X(ANY, "any")       \
    X(NCHW, "NCHW")     \
    X(NHWC, "NHWC")     \
    X(OIHW, "OIHW")     \
    X(OHWI, "OHWI")     \
    X(HWIO, "HWIO")

typedef enum {
#define X(e, s) MERA_LAYOUT_##e,
    MERA_LAYOUTS(X)
#undef X
    MERA_LAYOUT_COUNT
} mera_layout;

const char *mera_layout_name(mera_layout l);
int mera_layout_parse(const char *s, mera_layout *out);

/* ---- quantization parameters ------------------------------------------ */

typedef enum {
    MERA_QUANT_NONE,
    MERA_QUANT_PER_TENSOR,
    MERA_QUANT_PER_AXIS,
} mera_quant_kind;

typedef struct {
    mera_quant_kind kind;
    int axis;              /* PER_AXIS only */
    int64_t count;         /* 1 for PER_TENSOR, shape[axis] for PER_AXIS */
    /* Scales are kept in double as PyTorch stores them; kernels convert to
     * float exactly where the reference implementation does. */
    double scale;          /* PER_TENSOR */
    int32_t zero_point;    /* PER_TENSOR */
    const double *scales;       /* PER_AXIS, count entries, graph-owned */
    const int32_t *zero_points; /* PER_AXIS, count entries, graph-owned */
} mera_qparams;

static inline double mera_q_scale(const mera_qparams *q, int64_t i)
{
    return q->kind == MERA_QUANT_PER_AXIS ? q->scales[i] : q->scale;
}
static inline int32_t mera_q_zero_point(const mera_qparams *q, int64_t i)
{
    return q->kind == MERA_QUANT_PER_AXIS ? q->zero_points[i] : q->zero_point;
}

/* ---- the numerics contract's rounding ---------------------------------- */

/* How float values become integers of a quantized tensor: a property of the
 * whole graph (docs/numerics.md, "Rounding"), chosen by the frontend (the
 * PyTorch frontends probe the installed PyTorch), carried in the binary and
 * text forms, deploy.json and every CONV and VEC instruction, and honoured
 * by every kernel. Both modes round half to even; they differ in where the
 * zero point z is added, which decides exact ties x/s = k + 1/2 when z is
 * odd:
 *   ZP_AFTER_ROUNDING   q = rne(f32(x * (1/s))) + z  fbgemm after its
 *                       legacy path was removed (PyTorch >= 2.14), and the
 *                       ONNX QuantizeLinear formula: the default (0)
 *   ZP_BEFORE_ROUNDING  q = rne(fma(x, 1/s, z))  fbgemm's LEGACY Quantize
 *                       (PyTorch <= 2.13); scalar paths rne(f32(x/s) + z)
 * A new mode (e.g. a fixed-point requantization) is a new entry here; every
 * switch over it has no default, so -Wswitch shows each kernel to extend,
 * and fast kernels are picked only for modes they list (kernels/dispatch.c). */
#define MERA_ROUNDINGS(X)                               \
    X(ZP_AFTER_ROUNDING, "zero_point_after_rounding")   \
    X(ZP_BEFORE_ROUNDING, "zero_point_before_rounding")

typedef enum {
#define X(e, s) MERA_ROUNDING_##e,
    MERA_ROUNDINGS(X)
#undef X
    MERA_ROUNDING_COUNT
} mera_rounding;

/* Graphs from the NumPy builder and ONNX, and new graphs in C. */
#define MERA_ROUNDING_DEFAULT MERA_ROUNDING_ZP_AFTER_ROUNDING

const char *mera_rounding_name(mera_rounding r); /* NULL for a value outside the enum */
int mera_rounding_parse(const char *s, mera_rounding *out); /* 0 on success */

/* ---- tensor types ------------------------------------------------------ */

#define MERA_MAX_RANK 6

typedef struct {
    mera_dtype dtype;
    int rank;
    int64_t shape[MERA_MAX_RANK];
    mera_layout layout;
    mera_qparams q;
} mera_type;

int64_t mera_type_numel(const mera_type *t);
size_t mera_type_nbytes(const mera_type *t);
/* 1 if dtype, shape, layout and quantization parameters are all equal. */
int mera_type_equal(const mera_type *a, const mera_type *b);
/* Checks shape sanity and that qparams fit the dtype and shape. The message
 * says what is wrong; the caller prefixes where. */
mera_status mera_type_validate(const mera_type *t, mera_error *err);
/* "u8[1,224,224,3] NHWC q(0.0186, 114)"; returns the written length. */
int mera_type_format(const mera_type *t, char *buf, size_t n);
int mera_shape_format(const int64_t *shape, int rank, char *buf, size_t n);

/* ---- attributes -------------------------------------------------------- */

typedef enum {
    MERA_ATTR_INT,
    MERA_ATTR_FLOAT,
    MERA_ATTR_INTS,
    MERA_ATTR_FLOATS,
    MERA_ATTR_STRING,
} mera_attr_kind;

const char *mera_attr_kind_name(mera_attr_kind k);

typedef struct {
    const char *key;
    mera_attr_kind kind;
    int64_t i;
    double f;
    int count;             /* INTS / FLOATS */
    const int64_t *ints;
    const double *floats;
    const char *s;
} mera_attr;

/* How the op table describes an attribute. */
typedef struct {
    const char *key;
    mera_attr_kind kind;
    int required;
    int count;             /* INTS/FLOATS: exact length, or 0 for any */
    const char *choices;   /* STRING: "|"-separated allowed values, or NULL */
    const char *deflt;     /* default, as text (for the docs and printer), or NULL */
    const char *doc;
} mera_attr_spec;

/* ---- graph ------------------------------------------------------------- */

typedef enum {
    MERA_VALUE_INPUT,  /* a run-time input of the graph */
    MERA_VALUE_PARAM,  /* a named weight; data comes with the params dict */
    MERA_VALUE_CONST,  /* a constant embedded in the graph */
    MERA_VALUE_NODE,   /* the output of a node */
} mera_value_kind;

typedef struct {
    const char *name;
    mera_value_kind kind;
    mera_type type;
    int producer;      /* node index for NODE values, else -1 */
    int output_index;
    const void *data;  /* CONST (and bound PARAM) data, C-contiguous, may be borrowed */
} mera_value;

typedef struct {
    int op;                 /* mera_op */
    const char *name;
    int n_inputs;
    const int *inputs;      /* value ids; -1 for an omitted optional input */
    int n_outputs;
    const int *outputs;
    int n_attrs;
    const mera_attr *attrs; /* sorted by key, every spec'd attribute present */
    const char *source;     /* frontend source location, or NULL */
} mera_node;

typedef struct mera_graph mera_graph;

mera_graph *mera_graph_new(const char *name);
void mera_graph_free(mera_graph *g);
const char *mera_graph_name(const mera_graph *g);
/* The graph's rounding (MERA_ROUNDING_DEFAULT for a new graph). A pass or
 * the quantizer that makes a graph from another copies it. */
mera_rounding mera_graph_rounding(const mera_graph *g);
void mera_graph_set_rounding(mera_graph *g, mera_rounding r);
mera_arena *mera_graph_arena(mera_graph *g);

int mera_graph_num_values(const mera_graph *g);
const mera_value *mera_graph_value(const mera_graph *g, int id);
int mera_graph_num_nodes(const mera_graph *g);
const mera_node *mera_graph_node(const mera_graph *g, int index);
int mera_graph_num_outputs(const mera_graph *g);
int mera_graph_output(const mera_graph *g, int i);
/* value id by name, or -1 */
int mera_graph_find_value(const mera_graph *g, const char *name);
/* ids of the graph's inputs / params, in declaration order */
int mera_graph_num_inputs(const mera_graph *g);
int mera_graph_input(const mera_graph *g, int i);
/* For liveness: last[v] (an array of num_values) = the index of the last
 * node reading value v, num_nodes for the graph's outputs, -1 where no node
 * reads v. */
void mera_graph_last_uses(const mera_graph *g, int *last);

/* Add a graph input, parameter or constant. Names must be unique. For CONST,
 * data must stay valid as long as the graph (the caller owns it) unless
 * copy_data is set, in which case the graph copies it into its arena. The
 * type's per-axis arrays are always copied. Returns the value id or -1. */
int mera_graph_add_input(mera_graph *g, const char *name, const mera_type *t, mera_error *err);
int mera_graph_add_param(mera_graph *g, const char *name, const mera_type *t, mera_error *err);
int mera_graph_add_const(mera_graph *g, const char *name, const mera_type *t,
                         const void *data, int copy_data, mera_error *err);
/* A parameter that carries its data (copied into the graph's arena): what
 * the quantizer makes for the weights it writes. The data still reaches a
 * compiled graph through the params dict, as every param's does. */
int mera_graph_add_param_data(mera_graph *g, const char *name, const mera_type *t, const void *data,
                              mera_error *err);
/* A parameter bound to data the caller keeps alive as long as the graph
 * (borrowed, not copied): what the passes make (passes/passes.h). */
int mera_graph_add_param_ref(mera_graph *g, const char *name, const mera_type *t, const void *data,
                             mera_error *err);

/* Add a node. inputs are value ids (-1 for an omitted optional input).
 * Attributes are validated against the op table; missing optional ones get
 * their defaults. The node name must be unique among values and nodes; it
 * names the node's first output (further outputs are "<name>:1", ...).
 * On success returns the node index and fills out_ids (capacity max_out). */
int mera_graph_add_node(mera_graph *g, int op, const char *name, const int *inputs,
                        int n_inputs, const mera_attr *attrs, int n_attrs,
                        const char *source, int *out_ids, int max_out, mera_error *err);

mera_status mera_graph_set_outputs(mera_graph *g, const int *ids, int n, mera_error *err);

/* A name not yet used in g, "<base>", "<base>_1", ... (arena-owned). */
const char *mera_graph_unique_name(mera_graph *g, const char *base);

/* ---- the op table ------------------------------------------------------ */

typedef enum {
#define MERA_OP(e, name, min_in, max_in, dna, flags, doc) MERA_OP_##e,
#include "ir/ops.def"
#undef MERA_OP
    MERA_OP_COUNT
} mera_op;

/* How the DNA runs an op (the scheduler's layer kind; docs/isa.md). A
 * switch over it has a case for every class and no default, so a new
 * class is a -Wswitch error until every switch handles it. */
typedef enum {
    MERA_DNA_HOST = 0,   /* not in the DNA's op set: the host runs it */
    MERA_DNA_HOST_FLOAT, /* float32 on one side (quantize, dequantize): the host runs it */
    MERA_DNA_CONV,       /* CONV instructions on the MAC array (weights in WGT) */
    MERA_DNA_VEC,        /* VEC instructions on the vector unit */
    MERA_DNA_COPY,       /* LOAD/STORE only: a byte copy (the data's order is unchanged) */
} mera_dna_class;

/* op property bits */
enum {
    MERA_OPF_ELEMWISE = 1 << 0,     /* unary or broadcasting binary elementwise */
    MERA_OPF_QOUT = 1 << 1,         /* quantized form takes out_scale/out_zero_point */
    MERA_OPF_SPATIAL = 1 << 2,      /* has a data layout attribute (NCHW/NHWC) */
    MERA_OPF_ACTIVATION = 1 << 3,   /* has the fused `activation` attribute (none|relu) */
    MERA_OPF_WEIGHTS = 1 << 4,      /* input 1 is a weight (quantized per output channel), input 2 a float bias */
    MERA_OPF_FLOAT_IN = 1 << 5,     /* input 0 is always float32: a float kernel only */
    MERA_OPF_QUANT_IN = 1 << 6,     /* input 0 is always quantized: a quantized kernel only */
    MERA_OPF_CUT_ROWS = 1 << 7,     /* a DNA layer may be cut into row bands (kernels/split.c says where) */
    MERA_OPF_CUT_CHANNELS = 1 << 8, /* a DNA layer may be cut into channel blocks (kernels/split.c) */
    MERA_OPF_WINDOW = 1 << 9,       /* vector work is the output times the `kernel` window (sim/timing.c) */
};

#define MERA_MAX_NODE_INPUTS 64
#define MERA_MAX_NODE_OUTPUTS 4

typedef struct mera_infer_ctx mera_infer_ctx;
typedef mera_status (*mera_infer_fn)(mera_infer_ctx *ctx);

typedef struct {
    const char *name;
    int min_inputs, max_inputs;
    mera_dna_class dna;
    unsigned flags;
    const char *const *input_names;  /* min..max names, for messages and docs */
    const mera_attr_spec *attrs;     /* terminated by {NULL} */
    mera_infer_fn infer;             /* verifier and type inference */
    const char *doc;
} mera_op_info;

extern const mera_op_info mera_op_table[MERA_OP_COUNT];

/* op id by name, or -1 */
int mera_op_lookup(const char *name);

/* Name of a DNA layer class ("host", "host_float", "conv", "vec", "copy"). */
const char *mera_dna_class_name(mera_dna_class c);

/* Checks the property bits of every op against its inputs and attribute
 * specs (ACTIVATION <=> an `activation` attribute, SPATIAL <=> `layout`,
 * WEIGHTS <=> input 1 named "weight", WINDOW => a 2-entry `kernel`,
 * QOUT => `out_scale`). MERA_ERR_INVALID naming the op and the fact on a
 * mismatch: a bug in the op table, run by the C unit tests. */
mera_status mera_op_table_check(mera_error *err);

/* The inference context handed to an op's infer function. */
struct mera_infer_ctx {
    const mera_graph *graph;
    const char *node_name;
    int op;
    int n_inputs;
    const mera_type *in[MERA_MAX_NODE_INPUTS]; /* NULL for omitted optional inputs */
    const char *in_names[MERA_MAX_NODE_INPUTS];
    int n_attrs;
    const mera_attr *attrs;
    mera_type out[MERA_MAX_NODE_OUTPUTS];
    int n_outputs;
    mera_arena *arena;            /* for per-axis arrays of output types */
    mera_error *err;
};

/* The output parameters PyTorch gives quantized::add_scalar / mul_scalar
 * (op MERA_OP_ADD_SCALAR or MERA_OP_MUL_SCALAR) of a quantized x, and
 * add_scalar's c_q = nearbyint(value / scale); 0 when there are none. */
int mera_scalar_op_qparams(mera_op op, double value, const mera_type *x, double *scale, int32_t *zp, int64_t *c_q);

const mera_attr *mera_attr_find(const mera_attr *attrs, int n, const char *key);
int64_t mera_attr_int(const mera_node *n, const char *key);
double mera_attr_float(const mera_node *n, const char *key);
const char *mera_attr_string(const mera_node *n, const char *key);
const mera_attr *mera_node_attr(const mera_node *n, const char *key);

/* ---- text and binary forms -------------------------------------------- */

/* The stable text form: one line per value declaration and node. Returns a
 * malloc'd string the caller frees, or NULL when out of memory. */
char *mera_graph_to_text(const mera_graph *g);

#define MERA_IR_MAGIC "MERAIR\r\n"
/* Version 2 added the graph's rounding; version 1 files are read with
 * ZP_BEFORE_ROUNDING, the only contract there was when they were written. */
#define MERA_IR_FORMAT_VERSION 2u

/* Serialize to a malloc'd buffer. Constant data is included; parameter data
 * is not (it travels in the params dict). */
mera_status mera_graph_serialize(const mera_graph *g, uint8_t **out, size_t *out_len,
                                 mera_error *err);
/* Rebuild a graph; every node is re-verified. Corrupt or truncated input is
 * a MERA_ERR_FORMAT naming the field and offset. */
mera_graph *mera_graph_deserialize(const uint8_t *buf, size_t len, mera_error *err);

#endif

/* The post-training quantizer: a float graph and calibration data in, a
 * graph in the int8 numerics contract (docs/numerics.md) out, which every
 * target runs.
 *
 *   1. prepare   batch norms, which the frontends lower to a per-channel mul
 *                and add, are folded into the weights and bias of the conv
 *                or dense before them (also a lone per-channel mul or bias
 *                add after one) by the fold_bn pass (passes/fold_bn.c); the
 *                result is the float graph the quantizer calibrates and the
 *                quality report compares with.
 *   2. calibrate the prepared graph runs on the float Interpreter; one
 *                observer (quant/observer.h) per float activation sees every
 *                value of every calibration batch.
 *   3. quantize  a new graph: graph inputs are quantized to uint8 at entry
 *                and outputs dequantized at exit; conv/dense weights become
 *                int8 symmetric per output channel (or per tensor), bias
 *                stays float; every activation is uint8 affine with the
 *                parameters of its observer, set as the out_scale /
 *                out_zero_point of the node that makes it (the contract's
 *                requantization stage); a relu after conv, dense or add is
 *                fused into it and a clip after one lends it its range.
 *                Ops that keep their input's parameters (max pool, relu,
 *                clip, reshape, transpose, slice, pad ...) take them as is.
 *                Constants used as activations (x * c, x + c) become uint8
 *                constants with their exact min/max range.
 *
 * Depthwise convs are quantized with depthwise_saturate="no": mera's own
 * graphs need not reproduce fbgemm's int16 saturation. */
#ifndef MERA_QUANT_QUANT_H
#define MERA_QUANT_QUANT_H

#include "ir/ir.h"
#include "quant/observer.h"

typedef struct {
    mera_observer_config activations; /* observer of every activation */
    int weight_per_channel;           /* 1: a scale per output channel; 0: per tensor */
    int fold_batch_norm;              /* 1: fold per-channel mul/add into conv/dense */
    int fuse_relu;                    /* 1: conv/dense/add + relu -> one node */
    int percentile_too;               /* 1: every activation also gets a PERCENTILE observer (the
                                       * bins and percentile of `activations`), for
                                       * MERA_QUANT_RANGES_PERCENTILE (mera.Quantizer's "auto") */
} mera_quant_config;

/* HISTOGRAM observers on [0, 255], per-channel weights, folding and fusion on. */
mera_quant_config mera_quant_config_default(void);

typedef struct mera_quantizer mera_quantizer;

/* g must be a float graph (no quantize/dequantize/requantize nodes, no
 * quantized values); param_data[i] is the data of its i-th declared value
 * (mera_graph_input order, NULL for INPUT values), as for the interpreter.
 * g and the data may be freed once this returns: the quantizer keeps its
 * own prepared copy. */
mera_quantizer *mera_quantizer_new(const mera_graph *g, const void *const *param_data,
                                   const mera_quant_config *cfg, mera_error *err);
void mera_quantizer_free(mera_quantizer *q);

/* The prepared float graph (batch norms folded). Its PARAM values carry
 * their data (mera_value.data). */
const mera_graph *mera_quantizer_float_graph(const mera_quantizer *q);

/* Run one calibration batch: inputs[i] is the data of the i-th INPUT value
 * of the prepared graph (the original graph's, in order). */
mera_status mera_quantizer_calibrate(mera_quantizer *q, const void *const *inputs, mera_error *err);
/* Batches calibrated so far. */
int64_t mera_quantizer_num_batches(const mera_quantizer *q);
/* The observer of value id v of the prepared graph, or NULL for values that
 * are not float activations. */
const mera_observer *mera_quantizer_observer(const mera_quantizer *q, int v);

/* The quantized graph. Its PARAM values (weights, biases) carry their data.
 * If float_of is not NULL it receives a malloc'd array (the caller frees)
 * with one entry per value of the new graph: the id of the prepared-graph
 * value it stands for, or -1. Needs at least one calibration batch. */
mera_graph *mera_quantizer_quantize(const mera_quantizer *q, int **float_of, mera_error *err);

/* Where the activation ranges come from: the observer's choice (as
 * mera_quantizer_quantize), or the plain [min, max] every observer also
 * tracks (MinMaxObserver's range, widened to contain 0), or the range of
 * the second, PERCENTILE observer (cfg.percentile_too; an error without
 * it). mera.Quantizer's "auto" observer quantizes the three ways and keeps
 * the graph whose outputs are closer to float on the calibration data. */
/* The PERCENTILE observer of value v (cfg.percentile_too), or NULL. */
const mera_observer *mera_quantizer_percentile_observer(const mera_quantizer *q, int v);
typedef enum { MERA_QUANT_RANGES_OBSERVER, MERA_QUANT_RANGES_MINMAX, MERA_QUANT_RANGES_PERCENTILE } mera_quant_ranges;
mera_graph *mera_quantizer_quantize_ranges(const mera_quantizer *q, mera_quant_ranges ranges, int **float_of,
                                           mera_error *err);

#endif

/* Calibration observers: the statistics of one float tensor seen over many
 * calibration batches, and the quantization range they choose.
 *
 *   MINMAX      the running min and max (PyTorch MinMaxObserver).
 *   PERCENTILE  the [100-p, p] percentiles of all values seen (numpy's
 *               "linear" method), read off an exact histogram; within half
 *               a bin (of `bins` over [min, max]) of numpy.percentile.
 *   HISTOGRAM   PyTorch's HistogramObserver, same algorithm and float32
 *               arithmetic: a running histogram over [min, max] (re-binned
 *               with upsampling when the range grows) and its non-linear
 *               search for the range that minimises the L2 quantization
 *               error. Same qparams as torch for quint8 [0, 255].
 *   ENTROPY     the range whose quantized distribution has the smallest
 *               KL divergence from the histogram (TensorRT's entropy
 *               calibration as NVIDIA's pytorch-quantization does it): on
 *               |x| with (qmax-qmin+1)/2 levels for data of both signs, on
 *               the one side with qmax-qmin+1 levels for one-sided data
 *               (relu); exact zeros left out.
 *   MSE         a grid search over shrinkings of [min, max] (both ends
 *               together, then each end alone) for the smallest expected
 *               squared error (rounding plus clipping) computed on the
 *               histogram with the real qparams of each candidate.
 *
 * PERCENTILE, ENTROPY and MSE share an exact histogram: integer counts in
 * 4 * bins bins of a power-of-two width, whose pairs merge exactly when the
 * range grows, so the result does not depend on how the data was batched.
 *
 * Every observer returns the clipping range [lo, hi] it chose; the affine
 * parameters follow from mera_qparams_from_range (PyTorch's formula). A
 * range always contains 0, so that 0.0 (padding, relu) is exact. */
#ifndef MERA_QUANT_OBSERVER_H
#define MERA_QUANT_OBSERVER_H

#include <stdint.h>

#include "util/status.h"

typedef enum {
    MERA_OBSERVER_MINMAX,
    MERA_OBSERVER_PERCENTILE,
    MERA_OBSERVER_HISTOGRAM,
    MERA_OBSERVER_ENTROPY,
    MERA_OBSERVER_MSE,
    MERA_OBSERVER_COUNT
} mera_observer_kind;

/* "minmax", "percentile", "histogram", "entropy", "mse" */
const char *mera_observer_kind_name(mera_observer_kind k);
/* 0 on success, -1 for an unknown name */
int mera_observer_kind_parse(const char *s, mera_observer_kind *out);

typedef struct {
    mera_observer_kind kind;
    int bins;          /* histogram-based kinds; 2048 as PyTorch; in [16, 2^20] */
    double percentile; /* PERCENTILE: in (50, 100]; 99.99 is a common choice */
    int qmin, qmax;    /* the integer range the range is chosen for: 0, 255 (at most 2^16 levels) */
} mera_observer_config;

/* The defaults: HISTOGRAM, 2048 bins, percentile 99.99, [0, 255]. */
mera_observer_config mera_observer_config_default(void);
/* Checks every field; the message names the field. */
mera_status mera_observer_config_validate(const mera_observer_config *c, mera_error *err);

typedef struct mera_observer mera_observer;

mera_observer *mera_observer_new(const mera_observer_config *c, mera_error *err);
void mera_observer_free(mera_observer *o);

/* Add n values. A NaN or infinity is a MERA_ERR_INVALID ("non-finite value
 * at index i") and leaves the observer as it was. */
mera_status mera_observer_update(mera_observer *o, const float *x, int64_t n, mera_error *err);

/* Values seen so far, and their min and max (0, 0 when none). */
int64_t mera_observer_count(const mera_observer *o);
void mera_observer_minmax(const mera_observer *o, float *min, float *max);

/* The chosen clipping range, lo <= 0 <= hi. An observer that saw nothing is
 * a MERA_ERR_INVALID ("no values observed"). */
mera_status mera_observer_range(const mera_observer *o, float *lo, float *hi, mera_error *err);

/* The affine parameters for [lo, hi] on [qmin, qmax] by PyTorch's formula
 * (UniformQuantizationObserverBase._calculate_qparams, per_tensor_affine):
 * the range is widened to contain 0, scale = (hi - lo) / (qmax - qmin) in
 * float32, at least min_scale, zero_point = qmin - round(lo / scale)
 * (float32 division, ties to even as torch.round), clamped to [qmin, qmax].
 * An empty range (lo == hi == 0) gets MERA_TORCH_MIN_SCALE whatever
 * min_scale says. */
void mera_qparams_from_range(float lo, float hi, int qmin, int qmax, float min_scale, double *scale,
                             int32_t *zero_point);

/* torch.finfo(torch.float32).eps: PyTorch's observers never go below it,
 * so a tensor whose range is under 255 eps (3e-5) keeps few levels. */
#define MERA_TORCH_MIN_SCALE 1.1920928955078125e-07f
/* What mera.Quantizer goes down to instead, as onnxruntime's quantize_static
 * does (it floors only at float32's smallest normal): tiny activations
 * (a detector's near-zero probability map on an empty image, a randomly
 * initialised network's vanishing logits) keep their 256 levels. The
 * products of two scales in a requantization multiplier stay normal
 * float32 numbers. */
#define MERA_QUANT_MIN_SCALE 1e-18f

#endif

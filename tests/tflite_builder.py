"""Write TFLite models in TFLite's own schema, without a converter.

No converter that runs here writes TFLite files from PyTorch without a
multi-GB download or a newer torch, so the tests write the flatbuffers
themselves with the schema's generated object API
(``ai_edge_litert.schema_py_generated``, serialized by the ``flatbuffers``
builder). A :class:`Net` records a float network op by op; ``float_model``
writes it as is, and ``int8_model`` writes it as TFLite's post-training
full-integer quantizer would: activations calibrated per tensor (asymmetric
int8 over the observed min/max, 0 included), weights symmetric int8 per
output channel, int32 biases in units of ``s_x * s_w[c]``, the fixed output
parameters of LOGISTIC and SOFTMAX (1/256, -128), pools, reshapes and pads
keeping their input's parameters, and QUANTIZE / DEQUANTIZE at a float
interface. Calibration runs the float model on the TFLite interpreter with
every intermediate tensor kept.
"""

from __future__ import annotations

from typing import Dict, List, Sequence, Tuple

import flatbuffers
import numpy as np
from ai_edge_litert import schema_py_generated as S
from ai_edge_litert.interpreter import Interpreter, OpResolverType

OP = S.BuiltinOperator
ACT = S.ActivationFunctionType
_NP = {S.TensorType.FLOAT32: np.float32, S.TensorType.FLOAT16: np.float16, S.TensorType.INT8: np.int8,
       S.TensorType.INT32: np.int32, S.TensorType.UINT8: np.uint8, S.TensorType.INT64: np.int64}
_TT = {np.dtype(v): k for k, v in _NP.items()}

# ops whose int8 output has the input's parameters (TFLite's "same scale" restriction)
_SAME_AS_INPUT = {OP.MAX_POOL_2D, OP.AVERAGE_POOL_2D, OP.RESHAPE, OP.PAD, OP.CONCATENATION, OP.TRANSPOSE,
                  OP.RESIZE_NEAREST_NEIGHBOR, OP.RESIZE_BILINEAR}
_FIXED_OUTPUT = {OP.LOGISTIC: (1.0 / 256, -128), OP.SOFTMAX: (1.0 / 256, -128)}


def run_tflite(model: bytes, inputs: Sequence[np.ndarray], resolver: str = "AUTO",
               keep_all: bool = False) -> Tuple[List[np.ndarray], Interpreter]:
    """Run ``model`` on the TFLite interpreter (one thread); its outputs and the interpreter."""
    it = Interpreter(model_content=bytes(model), num_threads=1,
                     experimental_op_resolver_type=getattr(OpResolverType, resolver),
                     experimental_preserve_all_tensors=keep_all)
    it.allocate_tensors()
    for d, x in zip(it.get_input_details(), inputs):
        it.set_tensor(d["index"], x)
    it.invoke()
    return [it.get_tensor(d["index"]) for d in it.get_output_details()], it


class _Tensor:
    def __init__(self, shape, name, data=None, dtype=np.float32, kind="act"):
        self.shape, self.name, self.data, self.dtype, self.kind = list(shape), name, data, np.dtype(dtype), kind


class _Op:
    def __init__(self, code, inputs, outputs, opt_type, opt):
        self.code, self.inputs, self.outputs, self.opt_type, self.opt = code, inputs, outputs, opt_type, opt


class Net:
    """A float TFLite network recorded op by op (NHWC, TFLite's weight layouts).

    Weight initializers are seeded; ``shape`` of every activation is computed
    here so the ops can be chained.
    """

    def __init__(self, seed: int = 0):
        self.rng = np.random.default_rng(seed)
        self.tensors: List[_Tensor] = []
        self.ops: List[_Op] = []
        self.inputs: List[int] = []

    # -- tensors
    def _t(self, shape, name, data=None, dtype=np.float32, kind="act") -> int:
        self.tensors.append(_Tensor(shape, name, data, dtype, kind))
        return len(self.tensors) - 1

    def shape(self, t: int) -> List[int]:
        return self.tensors[t].shape

    def input(self, shape, name="input") -> int:
        t = self._t(shape, name)
        self.inputs.append(t)
        return t

    def const(self, data, name, kind="const") -> int:
        data = np.asarray(data)
        return self._t(data.shape, name, data, data.dtype, kind)

    def custom(self, custom_code: str, inputs, out_shape, options: bytes = b"") -> int:
        """A custom operator (``custom_code``, raw custom options), as MediaPipe's models carry them."""
        out = self._t(out_shape, f"{custom_code.lower()}_{len(self.ops)}")
        self.ops.append(_Op(("CUSTOM", custom_code, bytes(options)), list(inputs), [out], S.BuiltinOptions.NONE,
                            None))
        return out

    def op(self, code, inputs, out_shape, opt_type=S.BuiltinOptions.NONE, opt=None, name=None,
           out_dtype=np.float32) -> int:
        out = self._t(out_shape, name or f"{_opname(code).lower()}_{len(self.ops)}",
                      dtype=out_dtype)
        self.ops.append(_Op(code, list(inputs), [out], opt_type, opt))
        return out

    # -- layers
    @staticmethod
    def _out_hw(h, w, kh, kw, stride, padding, dilation=1):
        if padding == S.Padding.SAME:
            return -(-h // stride), -(-w // stride)
        ekh, ekw = (kh - 1) * dilation + 1, (kw - 1) * dilation + 1
        return (h - ekh) // stride + 1, (w - ekw) // stride + 1

    def conv(self, x, cout, k=3, stride=1, padding=S.Padding.SAME, act=ACT.RELU6, bias=True, dilation=1):
        n, h, w, cin = self.shape(x)
        wt = (self.rng.standard_normal((cout, k, k, cin)) * np.sqrt(2.0 / (k * k * cin))).astype(np.float32)
        b = (self.rng.standard_normal(cout) * 0.1).astype(np.float32) if bias else None
        o = S.Conv2DOptionsT()
        o.padding, o.strideH, o.strideW, o.fusedActivationFunction = padding, stride, stride, act
        o.dilationHFactor = o.dilationWFactor = dilation
        oh, ow = self._out_hw(h, w, k, k, stride, padding, dilation)
        ins = [x, self.const(wt, f"conv{len(self.ops)}/weights", "weight")]
        ins.append(self.const(b, f"conv{len(self.ops)}/bias", "bias") if bias else -1)
        return self.op(OP.CONV_2D, ins, [n, oh, ow, cout], S.BuiltinOptions.Conv2DOptions, o)

    def dwconv(self, x, k=3, stride=1, padding=S.Padding.SAME, act=ACT.RELU6, multiplier=1):
        n, h, w, c = self.shape(x)
        wt = (self.rng.standard_normal((1, k, k, c * multiplier)) * np.sqrt(2.0 / (k * k))).astype(np.float32)
        b = (self.rng.standard_normal(c * multiplier) * 0.1).astype(np.float32)
        o = S.DepthwiseConv2DOptionsT()
        o.padding, o.strideH, o.strideW, o.fusedActivationFunction = padding, stride, stride, act
        o.depthMultiplier, o.dilationHFactor, o.dilationWFactor = multiplier, 1, 1
        oh, ow = self._out_hw(h, w, k, k, stride, padding)
        ins = [x, self.const(wt, f"dw{len(self.ops)}/weights", "dweight"),
               self.const(b, f"dw{len(self.ops)}/bias", "bias")]
        return self.op(OP.DEPTHWISE_CONV_2D, ins, [n, oh, ow, c * multiplier],
                       S.BuiltinOptions.DepthwiseConv2DOptions, o)

    def fc(self, x, units, act=ACT.NONE, keep_num_dims=False):
        shp = self.shape(x)
        k = shp[-1]
        wt = (self.rng.standard_normal((units, k)) * np.sqrt(1.0 / k)).astype(np.float32)
        b = (self.rng.standard_normal(units) * 0.1).astype(np.float32)
        o = S.FullyConnectedOptionsT()
        o.fusedActivationFunction, o.keepNumDims = act, keep_num_dims
        out = shp[:-1] + [units] if keep_num_dims else [int(np.prod(shp)) // k, units]
        ins = [x, self.const(wt, f"fc{len(self.ops)}/weights", "weight"),
               self.const(b, f"fc{len(self.ops)}/bias", "bias")]
        return self.op(OP.FULLY_CONNECTED, ins, out, S.BuiltinOptions.FullyConnectedOptions, o)

    def _binary(self, code, a, b, act, opt_cls, opt_type):
        o = opt_cls()
        o.fusedActivationFunction = act
        shape = list(np.broadcast_shapes(tuple(self.shape(a)), tuple(self.shape(b))))
        return self.op(code, [a, b], shape, opt_type, o)

    def add(self, a, b, act=ACT.NONE):
        return self._binary(OP.ADD, a, b, act, S.AddOptionsT, S.BuiltinOptions.AddOptions)

    def mul(self, a, b, act=ACT.NONE):
        return self._binary(OP.MUL, a, b, act, S.MulOptionsT, S.BuiltinOptions.MulOptions)

    def pool(self, code, x, k=2, stride=2, padding=S.Padding.VALID, act=ACT.NONE):
        n, h, w, c = self.shape(x)
        o = S.Pool2DOptionsT()
        o.padding, o.strideH, o.strideW, o.filterHeight, o.filterWidth = padding, stride, stride, k, k
        o.fusedActivationFunction = act
        oh, ow = self._out_hw(h, w, k, k, stride, padding)
        return self.op(code, [x], [n, oh, ow, c], S.BuiltinOptions.Pool2DOptions, o)

    def mean(self, x, axes=(1, 2), keep_dims=True):
        shp = self.shape(x)
        o = S.ReducerOptionsT()
        o.keepDims = keep_dims
        out = [1 if i in axes else d for i, d in enumerate(shp)] if keep_dims else \
            [d for i, d in enumerate(shp) if i not in axes]
        return self.op(OP.MEAN, [x, self.const(np.array(axes, np.int32), f"mean{len(self.ops)}/axes", "shape")],
                       out, S.BuiltinOptions.ReducerOptions, o)

    def reshape(self, x, shape):
        o = S.ReshapeOptionsT()
        o.newShape = list(shape)
        out = list(np.empty(self.shape(x)).reshape(shape).shape)
        return self.op(OP.RESHAPE, [x, self.const(np.array(shape, np.int32), f"reshape{len(self.ops)}/shape", "shape")],
                       out, S.BuiltinOptions.ReshapeOptions, o)

    def softmax(self, x, beta=1.0):
        o = S.SoftmaxOptionsT()
        o.beta = beta
        return self.op(OP.SOFTMAX, [x], self.shape(x), S.BuiltinOptions.SoftmaxOptions, o)

    def unary(self, code, x):
        return self.op(code, [x], self.shape(x))

    def pad(self, x, pads):
        pads = np.asarray(pads, np.int32)
        out = [d + int(p[0]) + int(p[1]) for d, p in zip(self.shape(x), pads)]
        return self.op(OP.PAD, [x, self.const(pads, f"pad{len(self.ops)}/paddings", "shape")], out)

    def concat(self, xs, axis=3, act=ACT.NONE):
        o = S.ConcatenationOptionsT()
        o.axis, o.fusedActivationFunction = axis, act
        shape = list(self.shape(xs[0]))
        shape[axis] = sum(self.shape(x)[axis] for x in xs)
        return self.op(OP.CONCATENATION, xs, shape, S.BuiltinOptions.ConcatenationOptions, o)

    def resize(self, code, x, size, align_corners=False, half_pixel_centers=False):
        if code == OP.RESIZE_BILINEAR:
            o, t = S.ResizeBilinearOptionsT(), S.BuiltinOptions.ResizeBilinearOptions
        else:
            o, t = S.ResizeNearestNeighborOptionsT(), S.BuiltinOptions.ResizeNearestNeighborOptions
        o.alignCorners, o.halfPixelCenters = align_corners, half_pixel_centers
        n, _, _, c = self.shape(x)
        return self.op(code, [x, self.const(np.array(size, np.int32), f"resize{len(self.ops)}/size", "shape")],
                       [n, size[0], size[1], c], t, o)

    def squeeze(self, x, dims):
        o = S.SqueezeOptionsT()
        o.squeezeDims = list(dims)
        out = [d for i, d in enumerate(self.shape(x)) if i not in dims]
        return self.op(OP.SQUEEZE, [x], out, S.BuiltinOptions.SqueezeOptions, o)

    def leaky_relu(self, x, alpha):
        o = S.LeakyReluOptionsT()
        o.alpha = alpha
        return self.op(OP.LEAKY_RELU, [x], self.shape(x), S.BuiltinOptions.LeakyReluOptions, o)

    def sub(self, a, b, act=ACT.NONE):
        return self._binary(OP.SUB, a, b, act, S.SubOptionsT, S.BuiltinOptions.SubOptions)

    def transpose(self, x, perm):
        out = [self.shape(x)[p] for p in perm]
        return self.op(OP.TRANSPOSE, [x, self.const(np.array(perm, np.int32), f"transpose{len(self.ops)}/perm",
                                                    "shape")], out)

    # -- writing
    def float_model(self, outputs: Sequence[int], fp16_weights: bool = False) -> bytes:
        """The float model; ``fp16_weights`` stores weights and biases as float16 behind DEQUANTIZE ops, as
        TFLite's float16 quantization does."""
        return _write(self, list(outputs), {}, fp16_weights=fp16_weights)

    def calibrate(self, outputs: Sequence[int], samples: Sequence[Sequence[np.ndarray]]
                  ) -> Dict[int, Tuple[float, float]]:
        """min/max of every activation over ``samples``, from the float model on the TFLite interpreter."""
        model = self.float_model(outputs)
        ranges: Dict[int, Tuple[float, float]] = {}
        for feeds in samples:
            _, it = run_tflite(model, feeds, resolver="BUILTIN_WITHOUT_DEFAULT_DELEGATES", keep_all=True)
            for i, t in enumerate(self.tensors):
                if t.kind == "act":
                    v = it.get_tensor(i)
                    lo, hi = ranges.get(i, (0.0, 0.0))
                    ranges[i] = (min(lo, float(v.min())), max(hi, float(v.max())))
        return ranges

    def int8_model(self, outputs: Sequence[int], samples: Sequence[Sequence[np.ndarray]], float_io: bool = False,
                   uint8: bool = False, fp16_weights: bool = False) -> bytes:
        """The full-integer model, calibrated on ``samples`` (int8 interface unless ``float_io``).

        ``uint8=True`` writes the older uint8 scheme instead (TFLite 1.x's quantized models): uint8 activations with
        the same scales and zero points moved by 128, uint8 weights per tensor with a zero point.
        """
        ranges = self.calibrate(outputs, samples)
        q: Dict[int, Tuple[float, int]] = {}
        for i in sorted(ranges):
            q[i] = _act_params(*ranges[i])
        producer = {op.outputs[0]: op for op in self.ops}
        for op in self.ops:                      # in order: an op sees its inputs' final parameters
            out = op.outputs[0]
            if op.code in _FIXED_OUTPUT:
                q[out] = _FIXED_OUTPUT[op.code]
            elif op.code in _SAME_AS_INPUT and op.code != OP.CONCATENATION:
                q[out] = q[op.inputs[0]]
            elif op.code == OP.CONCATENATION:   # the converter gives all inputs of a concat the output's parameters
                for x in op.inputs:
                    if x not in producer or producer[x].code not in _FIXED_OUTPUT:
                        q[x] = q[out]
        return _write(self, list(outputs), q, float_io=float_io, uint8=uint8)


def _opname(code: int) -> str:
    for k, v in vars(S.BuiltinOperator).items():
        if v == code and not k.startswith("_"):
            return k
    return str(code)


def _act_params(lo: float, hi: float) -> Tuple[float, int]:
    lo, hi = min(lo, 0.0), max(hi, 0.0)
    if hi == lo:
        hi = lo + 1e-3
    scale = (hi - lo) / 255.0
    zp = int(np.clip(np.round(-128 - lo / scale), -128, 127))
    return float(np.float32(scale)), zp


def _qparams(scale, zp, axis=0) -> "S.QuantizationParametersT":
    p = S.QuantizationParametersT()
    p.scale = [float(s) for s in np.atleast_1d(np.asarray(scale, np.float32))]
    p.zeroPoint = [int(z) for z in np.atleast_1d(zp)]
    p.quantizedDimension = axis
    return p


def _write(net: Net, outputs: List[int], q: Dict[int, Tuple[float, int]], float_io: bool = False,
           uint8: bool = False, fp16_weights: bool = False) -> bytes:
    m = S.ModelT()
    m.version, m.description = 3, "mera tests/tflite_builder.py"
    m.buffers = [S.BufferT()]
    sg = S.SubGraphT()
    sg.tensors, sg.operators, sg.name = [], [], "main"
    codes: Dict[int, int] = {}
    quant = bool(q)
    adt, shift = (np.uint8, 128) if uint8 else (np.int8, 0)
    index: Dict[int, int] = {}

    def add_tensor(shape, name, dtype, data=None, qp=None) -> int:
        t = S.TensorT()
        t.shape, t.name, t.type = list(shape), name, _TT[np.dtype(dtype)]
        if data is not None:
            b = S.BufferT()
            b.data = np.frombuffer(np.ascontiguousarray(data, dtype).tobytes(), np.uint8)
            m.buffers.append(b)
            t.buffer = len(m.buffers) - 1
        else:
            t.buffer = 0
        t.quantization = qp
        sg.tensors.append(t)
        return len(sg.tensors) - 1

    def add_op(code, ins, outs, opt_type=S.BuiltinOptions.NONE, opt=None):
        key = code[:2] if isinstance(code, tuple) else code      # ("CUSTOM", name, options) for custom ops
        codes.setdefault(key, len(codes))
        o = S.OperatorT()
        o.opcodeIndex, o.inputs, o.outputs = codes[key], list(ins), list(outs)
        o.builtinOptionsType, o.builtinOptions = opt_type, opt
        if isinstance(code, tuple):
            o.customOptions = np.frombuffer(code[2], np.uint8) if code[2] else None
        sg.operators.append(o)

    # weights need the consumer's input scale: find it per weight tensor
    users: Dict[int, _Op] = {}
    for op in net.ops:
        for x in op.inputs:
            users.setdefault(x, op)

    def tensor_index(i: int) -> int:
        if i < 0:
            return -1
        if i in index:
            return index[i]
        t = net.tensors[i]
        if fp16_weights and t.kind in ("weight", "dweight", "bias"):
            half = add_tensor(t.shape, t.name + "/fp16", np.float16, t.data.astype(np.float16))
            index[i] = add_tensor(t.shape, t.name, np.float32)
            add_op(OP.DEQUANTIZE, [half], [index[i]])
        elif not quant or t.kind in ("shape",) or t.data is not None and t.data.dtype != np.float32:
            index[i] = add_tensor(t.shape, t.name, t.dtype, t.data)
        elif t.kind == "act":
            s, z = q[i]
            index[i] = add_tensor(t.shape, t.name, adt, None, _qparams(s, z + shift))
        elif t.kind in ("weight", "dweight") and uint8:
            lo, hi = min(float(t.data.min()), 0.0), max(float(t.data.max()), 0.0)
            scale = np.float32((hi - lo) / 255.0)
            zp = int(np.clip(np.round(-lo / scale), 0, 255))
            w8 = np.clip(np.round(t.data / scale) + zp, 0, 255).astype(np.uint8)
            index[i] = add_tensor(t.shape, t.name, np.uint8, w8, _qparams(scale, zp))
        elif t.kind in ("weight", "dweight"):
            axis = 0 if t.kind == "weight" else 3
            maxabs = np.abs(t.data).max(axis=tuple(a for a in range(t.data.ndim) if a != axis))
            scale = np.maximum(maxabs, 1e-8).astype(np.float32) / np.float32(127.0)
            shape = [1] * t.data.ndim
            shape[axis] = -1
            w8 = np.clip(np.round(t.data / scale.reshape(shape)), -127, 127).astype(np.int8)
            index[i] = add_tensor(t.shape, t.name, np.int8, w8, _qparams(scale, np.zeros(len(scale), np.int64), axis))
        elif t.kind == "bias":
            op = users[i]
            s_x = q[op.inputs[0]][0]
            w = net.tensors[op.inputs[1]]
            wq = sg.tensors[tensor_index(op.inputs[1])].quantization.scale
            s = np.float32(s_x) * np.asarray(wq, np.float32)
            b32 = np.round(t.data.astype(np.float64) / s.astype(np.float64)).astype(np.int32)
            index[i] = add_tensor(t.shape, t.name, np.int32, b32, _qparams(s, np.zeros(len(s), np.int64)))
            del w
        else:  # a float constant operand of add/mul: per-tensor int8
            lo, hi = float(t.data.min()), float(t.data.max())
            s, z = _act_params(lo, hi)
            data = (np.clip(np.round(t.data / s) + z, -128, 127) + shift).astype(adt)
            index[i] = add_tensor(t.shape, t.name, adt, data, _qparams(s, z + shift))
        return index[i]

    ins = []
    for i in net.inputs:
        if quant and float_io:
            f = add_tensor(net.tensors[i].shape, net.tensors[i].name, np.float32)
            add_op(OP.QUANTIZE, [f], [tensor_index(i)])
            ins.append(f)
        else:
            ins.append(tensor_index(i))
    for op in net.ops:
        add_op(op.code, [tensor_index(x) for x in op.inputs], [tensor_index(y) for y in op.outputs],
               op.opt_type, op.opt)
    outs = []
    for i in outputs:
        if quant and float_io:
            f = add_tensor(net.tensors[i].shape, net.tensors[i].name + "/float", np.float32)
            add_op(OP.DEQUANTIZE, [tensor_index(i)], [f])
            outs.append(f)
        else:
            outs.append(tensor_index(i))
    sg.inputs, sg.outputs = ins, outs
    m.subgraphs = [sg]
    m.operatorCodes = []
    for code, _ in sorted(codes.items(), key=lambda kv: kv[1]):
        oc = S.OperatorCodeT()
        if isinstance(code, tuple):
            oc.builtinCode, oc.deprecatedBuiltinCode, oc.customCode, oc.version = OP.CUSTOM, OP.CUSTOM, code[1], 1
        else:
            oc.builtinCode, oc.deprecatedBuiltinCode, oc.version = code, min(code, 127), 1
        m.operatorCodes.append(oc)
    b = flatbuffers.Builder(1024)
    b.Finish(m.Pack(b), file_identifier=b"TFL3")
    return bytes(b.Output())


# -- the model families MERA's tutorials deploy from TFLite, scaled down for tests ----------------------------------
# Each returns (net, output). Layer structure follows the published networks (and the ops their TFLite conversions
# contain); widths and depths are cut so a test runs in seconds.

def _stride2_valid(net: Net, x: int, k: int) -> int:
    """Keras' ZeroPadding2D(correct_pad) + VALID stride-2 depthwise conv, as converted MobileNetV2 files hold it."""
    _, h, w, _ = net.shape(x)
    x = net.pad(x, [[0, 0], [k // 2 - (1 - h % 2), k // 2], [k // 2 - (1 - w % 2), k // 2], [0, 0]])
    return net.dwconv(x, k=k, stride=2, padding=S.Padding.VALID)


def mobilenet_v1(seed: int = 0, size: int = 64, classes: int = 10) -> Tuple[Net, int]:
    net = Net(seed)
    x = net.input([1, size, size, 3])
    y = net.conv(x, 8, stride=2)
    for c, s in [(16, 1), (32, 2), (32, 1), (64, 2), (64, 1), (128, 2), (128, 1), (256, 2), (256, 1)]:
        y = net.dwconv(y, stride=s)
        y = net.conv(y, c, k=1)
    y = net.pool(OP.AVERAGE_POOL_2D, y, k=net.shape(y)[1], stride=1)
    y = net.conv(y, classes, k=1, act=ACT.NONE)
    y = net.reshape(y, [1, classes])
    return net, net.softmax(y)


def _inverted_residual(net: Net, x: int, expand: int, cout: int, stride: int, k: int = 3, pad_op: bool = True) -> int:
    cin = net.shape(x)[3]
    y = net.conv(x, cin * expand, k=1) if expand != 1 else x
    y = _stride2_valid(net, y, k) if stride == 2 and pad_op else net.dwconv(y, k=k, stride=stride)
    y = net.conv(y, cout, k=1, act=ACT.NONE)
    return net.add(x, y) if stride == 1 and cin == cout else y


# (expansion, output channels, repeats, first stride): the published MobileNetV2 1.0 and the test's cut-down one
MOBILENET_V2_FULL = [(1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2),
                     (6, 320, 1, 1)]
_MOBILENET_V2_SMALL = [(1, 8, 1, 1), (6, 16, 2, 2), (6, 16, 2, 2), (6, 24, 2, 2), (6, 32, 2, 1), (6, 56, 1, 2)]


def mobilenet_v2(seed: int = 0, size: int = 64, classes: int = 10, full: bool = False) -> Tuple[Net, int]:
    """MobileNetV2; ``full=True`` gives the published 1.0 network (use size=224, classes=1000)."""
    net = Net(seed)
    x = net.input([1, size, size, 3])
    y = net.conv(x, 32 if full else 16, stride=2)
    for t, c, n, s in MOBILENET_V2_FULL if full else _MOBILENET_V2_SMALL:
        for i in range(n):
            y = _inverted_residual(net, y, t, c, s if i == 0 else 1)
    y = net.conv(y, 1280 if full else 128, k=1)
    y = net.mean(y, keep_dims=False)
    return net, net.softmax(net.fc(y, classes))


def _hard_swish(net: Net, x: int) -> int:
    return net.unary(OP.HARD_SWISH, x)


def _squeeze_excite(net: Net, x: int, ratio: int = 4) -> int:
    """Keras MobileNetV3's SE block: mean, 1x1 relu, 1x1, hard sigmoid as relu6(x + 3) * (1/6), multiply."""
    c = net.shape(x)[3]
    s = net.mean(x)
    s = net.conv(s, max(8, c // ratio), k=1, act=ACT.RELU)
    s = net.conv(s, c, k=1, act=ACT.NONE)
    s = net.add(s, net.const(np.full((1, 1, 1, 1), 3.0, np.float32), f"se{len(net.ops)}/three", "operand"),
                act=ACT.RELU6)
    s = net.mul(s, net.const(np.full((1, 1, 1, 1), 1.0 / 6.0, np.float32), f"se{len(net.ops)}/sixth", "operand"))
    return net.mul(x, s)


def mobilenet_v3_small(seed: int = 0, size: int = 64, classes: int = 10) -> Tuple[Net, int]:
    net = Net(seed)
    x = net.input([1, size, size, 3])
    y = _hard_swish(net, net.conv(x, 16, stride=2, act=ACT.NONE))
    # (kernel, expanded, out, squeeze-excite, hard-swish, stride)
    for k, e, c, se, hs, s in [(3, 16, 16, True, False, 2), (3, 48, 24, False, False, 2), (3, 64, 24, False, False, 1),
                               (5, 96, 40, True, True, 2), (5, 96, 40, True, True, 1), (5, 128, 48, True, True, 1)]:
        cin = net.shape(y)[3]
        z = net.conv(y, e, k=1, act=ACT.NONE if hs else ACT.RELU)
        z = _hard_swish(net, z) if hs else z
        z = net.dwconv(z, k=k, stride=s, act=ACT.NONE if hs else ACT.RELU)
        z = _hard_swish(net, z) if hs else z
        z = _squeeze_excite(net, z) if se else z
        z = net.conv(z, c, k=1, act=ACT.NONE)
        y = net.add(y, z) if s == 1 and cin == c else z
    y = _hard_swish(net, net.conv(y, 96, k=1, act=ACT.NONE))
    y = net.mean(y)
    y = _hard_swish(net, net.conv(y, 128, k=1, act=ACT.NONE))
    y = net.conv(y, classes, k=1, act=ACT.NONE)
    return net, net.softmax(net.reshape(y, [1, classes]))


# (expansion, kernel, output channels, repeats, first stride): EfficientNet-Lite0 and the test's cut-down one
EFFICIENTNET_LITE0_FULL = [(1, 3, 16, 1, 1), (6, 3, 24, 2, 2), (6, 5, 40, 2, 2), (6, 3, 80, 3, 2), (6, 5, 112, 3, 1),
                           (6, 5, 192, 4, 2), (6, 3, 320, 1, 1)]
_EFFICIENTNET_LITE0_SMALL = [(1, 3, 8, 1, 1), (6, 3, 16, 2, 2), (6, 5, 24, 2, 2), (6, 3, 40, 2, 2), (6, 5, 56, 1, 1),
                             (6, 5, 96, 2, 2)]


def efficientnet_lite(seed: int = 0, size: int = 64, classes: int = 10, full: bool = False) -> Tuple[Net, int]:
    """EfficientNet-Lite0's shape: MBConv blocks with ReLU6, no squeeze-excite, 3x3 and 5x5 depthwise convs;
    ``full=True`` gives the published Lite0 (use size=224, classes=1000)."""
    net = Net(seed)
    x = net.input([1, size, size, 3])
    y = net.conv(x, 32 if full else 16, stride=2)
    for e, k, c, n, s in EFFICIENTNET_LITE0_FULL if full else _EFFICIENTNET_LITE0_SMALL:
        for i in range(n):
            y = _inverted_residual(net, y, e, c, s if i == 0 else 1, k=k, pad_op=False)
    head = 1280 if full else 160
    y = net.conv(y, head, k=1)
    y = net.pool(OP.AVERAGE_POOL_2D, y, k=net.shape(y)[1], stride=1)
    y = net.reshape(y, [1, head])
    return net, net.softmax(net.fc(y, classes))


MODELS = {"mobilenet_v1": mobilenet_v1, "mobilenet_v2": mobilenet_v2, "mobilenet_v3_small": mobilenet_v3_small,
          "efficientnet_lite0": efficientnet_lite}

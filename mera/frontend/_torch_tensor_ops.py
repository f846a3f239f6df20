"""More float PyTorch tensor ops, each mapped onto existing IR ops (issue 13).

Imported at the end of _torch_ops.py, which it extends: the converters register
in the same table and follow its conventions (arguments in schema order, a
:class:`Tensor` or a torch constant per tensor argument, layout-aware axes).
Reductions, indexing and reshaping work on the NCHW view of channels-last data
(``ctx.to_nchw``) unless the op keeps elementwise layout.
"""

from __future__ import annotations

import math
from typing import List, Sequence

import numpy as np
import torch

from ..errors import UnsupportedError
from ._torch_ops import _FLOAT_ONLY, Context, Tensor, Unavailable, _binary, _permute, _slices, _unary, converts


def _nchw(ctx: Context, x, what: str) -> Tensor:
    return ctx.to_nchw(ctx.tensor(x, what))


def _dims(dims, rank: int) -> List[int]:
    if dims is None or (isinstance(dims, (list, tuple)) and len(dims) == 0):
        return list(range(rank))
    dims = [dims] if isinstance(dims, int) else list(dims)
    return sorted(int(d) + rank if int(d) < 0 else int(d) for d in dims)


def _const(ctx: Context, arr) -> Tensor:
    return Tensor(ctx.b.const(np.ascontiguousarray(arr), name=ctx.b._fresh("const")), False)


def _reshape(ctx: Context, t: Tensor, shape: Sequence[int]) -> Tensor:
    t = ctx.to_nchw(t)
    if list(t.value.shape) == list(shape):
        return t
    return Tensor(ctx.emit("reshape", t.value, shape=[int(s) for s in shape]), False)


# -- elementwise math --------------------------------------------------------------

@converts("aten::rsqrt", "aten::rsqrt_")
def _rsqrt(ctx, x):
    return _binary(ctx, "div", 1.0, _unary(ctx, "sqrt", x))


@converts("aten::reciprocal", "aten::reciprocal_")
def _reciprocal(ctx, x):
    return _binary(ctx, "div", 1.0, x)


@converts("aten::square", "aten::square_")
def _square(ctx, x):
    return _binary(ctx, "mul", x, x)


@converts("aten::log2")
def _log2(ctx, x):
    return _binary(ctx, "mul", _unary(ctx, "log", x), 1.0 / math.log(2.0))


@converts("aten::log10")
def _log10(ctx, x):
    return _binary(ctx, "mul", _unary(ctx, "log", x), 1.0 / math.log(10.0))


@converts("aten::log1p")
def _log1p(ctx, x):
    return _unary(ctx, "log", _binary(ctx, "add", x, 1.0))


@converts("aten::expm1")
def _expm1(ctx, x):
    return _binary(ctx, "add", _unary(ctx, "exp", x), -1.0)


@converts("aten::floor")
def _floor(ctx, x):
    return _unary(ctx, "floor", x)


@converts("aten::ceil")
def _ceil(ctx, x):
    return _unary(ctx, "ceil", x)


@converts("aten::round")
def _round(ctx, x, decimals=0):
    if decimals:
        raise UnsupportedError(f"aten::round with decimals={decimals}{ctx.where()}")
    return _unary(ctx, "round", x)


def _clamp_bound(ctx: Context, x, bound, op: str):
    if bound is None:
        return ctx.tensor(x, op)
    if isinstance(bound, (int, float)):
        return _unary(ctx, "clip", x, **({"a_min": float(bound), "a_max": math.inf} if op == "maximum"
                                         else {"a_min": -math.inf, "a_max": float(bound)}))
    return _binary(ctx, op, x, bound)


@converts("aten::clamp_min", "aten::clamp_min_")
def _clamp_min(ctx, x, lo):
    return _clamp_bound(ctx, x, lo, "maximum")


@converts("aten::clamp_max", "aten::clamp_max_")
def _clamp_max(ctx, x, hi):
    return _clamp_bound(ctx, x, hi, "minimum")


@converts("aten::clamp", "aten::clamp_", "aten::clip", "aten::clip_")
def _clamp(ctx, x, lo=None, hi=None):
    """Scalar bounds: the IR's clip; tensor bounds: maximum, then minimum (torch.clamp's order)."""
    if not isinstance(lo, (Tensor, torch.Tensor)) and not isinstance(hi, (Tensor, torch.Tensor)):
        return _unary(ctx, "clip", x, a_min=-math.inf if lo is None else float(lo),
                      a_max=math.inf if hi is None else float(hi))
    return _clamp_bound(ctx, _clamp_bound(ctx, x, lo, "maximum"), hi, "minimum")


@converts("aten::remainder")
def _remainder(ctx, a, b):
    """Python's modulo (the sign of b): a - floor(a / b) * b."""
    if not isinstance(a, (Tensor, torch.Tensor)) and not isinstance(b, (Tensor, torch.Tensor)):
        return a % b
    q = _unary(ctx, "floor", _binary(ctx, "div", a, b))
    return _binary(ctx, "sub", a, _binary(ctx, "mul", q, b))


# -- activations -------------------------------------------------------------------

@converts("aten::elu", "aten::elu_")
def _elu(ctx, x, alpha=1.0, scale=1.0, input_scale=1.0):
    """ATen: x > 0 ? scale * x : alpha * scale * (exp(input_scale * x) - 1), as
    elu(input_scale * x, alpha * input_scale) * (scale / input_scale)."""
    s, i = float(scale), float(input_scale)
    y = _unary(ctx, "elu", x if i == 1.0 else _binary(ctx, "mul", x, i), alpha=float(alpha) * i)
    return y if s / i == 1.0 else _binary(ctx, "mul", y, s / i)


@converts("aten::selu", "aten::selu_")
def _selu(ctx, x):
    return _elu(ctx, x, 1.6732632423543772848170429916717, 1.0507009873554804934193349852946)


@converts("aten::celu", "aten::celu_")
def _celu(ctx, x, alpha=1.0):
    """x > 0 ? x : alpha * (exp(x / alpha) - 1)."""
    a = float(alpha)
    return _elu(ctx, x, a, 1.0, 1.0 / a)  # ATen: elu(x, alpha, scale 1, input_scale 1 / alpha)


@converts("aten::softsign")
def _softsign(ctx, x):
    return _binary(ctx, "div", x, _binary(ctx, "add", _unary(ctx, "abs", x), 1.0))


@converts("aten::tanhshrink")
def _tanhshrink(ctx, x):
    return _binary(ctx, "sub", x, _unary(ctx, "tanh", x))


@converts("aten::log_sigmoid")
def _log_sigmoid(ctx, x):
    """-softplus(-x) as min(x, 0) - log(1 + exp(-|x|)) (no overflow)."""
    t = ctx.tensor(x, "log_sigmoid")
    e = _unary(ctx, "exp", _binary(ctx, "mul", _unary(ctx, "abs", t), -1.0))
    return _binary(ctx, "sub", _unary(ctx, "clip", t, a_min=-math.inf, a_max=0.0),
                   _unary(ctx, "log", _binary(ctx, "add", e, 1.0)))


@converts("aten::hardshrink")
def _hardshrink(ctx, x, lambd=0.5):
    """x where |x| > lambd, else 0: x times the comparison cast to float."""
    t = ctx.tensor(x, "hardshrink")
    mask = ctx.emit("compare", _unary(ctx, "abs", t).value, _const(ctx, np.array([lambd], np.float32)).value,
                    kind="greater")
    return _binary(ctx, "mul", t, Tensor(ctx.emit("cast", mask, to="float32"), t.nhwc))


@converts("aten::glu")
def _glu(ctx, x, dim=-1):
    t = ctx.tensor(x, "glu")
    n = t.shape[dim]
    a, b = _slices(ctx, t, dim, [n // 2, n // 2])
    return _binary(ctx, "mul", a, _unary(ctx, "sigmoid", b))


# -- reductions --------------------------------------------------------------------

def _reduce(ctx: Context, x, kind: str, dims, keepdim, what: str) -> Tensor:
    t = _nchw(ctx, x, what)
    rank = len(t.value.shape)
    axes = _dims(dims, rank)
    return Tensor(ctx.emit("reduce", t.value, kind=kind, axes=axes, keepdims=int(bool(keepdim))), False)


@converts("aten::sum")
def _sum(ctx, x, dims=None, keepdim=False, dtype=None):
    return _reduce(ctx, x, "sum", dims, keepdim, "sum")


@converts("aten::prod")
def _prod(ctx, x, dim=None, keepdim=False, dtype=None):
    return _reduce(ctx, x, "prod", dim, keepdim, "prod")


@converts("aten::amax")
def _amax(ctx, x, dims=(), keepdim=False):
    return _reduce(ctx, x, "max", dims, keepdim, "amax")


@converts("aten::amin")
def _amin(ctx, x, dims=(), keepdim=False):
    return _reduce(ctx, x, "min", dims, keepdim, "amin")


@converts("aten::logsumexp")
def _logsumexp(ctx, x, dims, keepdim=False):
    return _reduce(ctx, x, "log_sum_exp", dims, keepdim, "logsumexp")


def _max_min(kind: str, arg: str, pair: str):
    def conv(ctx, a, b=None, keepdim=False):
        if b is None:  # over every element: a 0-d tensor
            return _reduce(ctx, a, kind, None, False, f"aten::{kind}")
        if isinstance(b, (Tensor, torch.Tensor)):
            return _binary(ctx, pair, a, b)
        t = _nchw(ctx, a, f"aten::{kind}")
        v = _reduce(ctx, t, kind, [int(b)], keepdim, f"aten::{kind}")
        i = Tensor(ctx.emit(arg, t.value, axis=_dims([int(b)], len(t.value.shape))[0], keepdims=int(bool(keepdim)),
                            select_last_index=0), False)
        return [v, i]
    return conv


converts("aten::max")(_max_min("max", "argmax", "maximum"))
converts("aten::min")(_max_min("min", "argmin", "minimum"))


def _var(ctx: Context, x, dims, correction, keepdim, what: str) -> Tensor:
    t = _nchw(ctx, x, what)
    rank = len(t.value.shape)
    axes = _dims(dims, rank)
    n = int(np.prod([t.value.shape[a] for a in axes]))
    mean = Tensor(ctx.emit("mean", t.value, axes=axes, keepdims=1), False)
    d = _binary(ctx, "sub", t, mean)
    ss = _reduce(ctx, _binary(ctx, "mul", d, d), "sum", axes, keepdim, what)
    return _binary(ctx, "div", ss, float(max(n - correction, 0)))


def _correction(unbiased_or_correction, correction) -> float:
    if correction is not None:
        return float(correction)
    if isinstance(unbiased_or_correction, bool):
        return 1.0 if unbiased_or_correction else 0.0
    return 1.0


def _var_args(dims=None, unbiased=None, keepdim=False, correction=None):
    """var(x, unbiased), var.dim(x, dims, unbiased, keepdim) or var.correction(x, dims, correction, keepdim)
    (TorchScript's positional order; torch.export names correction and keepdim)."""
    if isinstance(dims, bool):
        return None, (1.0 if dims else 0.0), False
    if not isinstance(unbiased, bool):  # the .correction overload: the third argument is the correction
        return dims, 1.0 if unbiased is None else float(unbiased), bool(keepdim)
    return dims, _correction(unbiased, correction), bool(keepdim)


@converts("aten::var")
def _var_conv(ctx, x, *args, **kw):
    dims, corr, keepdim = _var_args(*args, **kw)
    return _var(ctx, x, dims, corr, keepdim, "var")


@converts("aten::std")
def _std(ctx, x, *args, **kw):
    dims, corr, keepdim = _var_args(*args, **kw)
    return _unary(ctx, "sqrt", _var(ctx, x, dims, corr, keepdim, "std"))


def _pnorm(ctx: Context, x, p, dims, keepdim, what: str) -> Tensor:
    p = 2.0 if p is None else float(p)
    if p == 2.0:
        return _reduce(ctx, x, "l2", dims, keepdim, what)
    if p == 1.0:
        return _reduce(ctx, x, "l1", dims, keepdim, what)
    if p == math.inf:
        return _reduce(ctx, _unary(ctx, "abs", x), "max", dims, keepdim, what)
    s = _reduce(ctx, _binary(ctx, "pow", _unary(ctx, "abs", x), p), "sum", dims, keepdim, what)
    return _binary(ctx, "pow", s, 1.0 / p)


@converts("aten::norm")
def _norm(ctx, x, p=2.0, dims=None, keepdim=False, dtype=None):
    return _pnorm(ctx, x, p, dims, keepdim, "norm")


@converts("aten::linalg_vector_norm")
def _vector_norm(ctx, x, p=2.0, dims=None, keepdim=False, dtype=None):
    return _pnorm(ctx, x, p, dims, keepdim, "linalg_vector_norm")


@converts("aten::frobenius_norm")
def _frobenius(ctx, x, dims=None, keepdim=False):
    return _reduce(ctx, x, "l2", dims, keepdim, "frobenius_norm")


@converts("aten::log_softmax", "aten::_log_softmax")
def _log_softmax(ctx, x, dim, dtype_or_half=None):
    t = ctx.tensor(x, "log_softmax")
    m = _reduce(ctx, t, "max", [dim], True, "log_softmax")
    d = _binary(ctx, "sub", ctx.to_nchw(t), m)
    return _binary(ctx, "sub", d, _reduce(ctx, d, "log_sum_exp", [dim], True, "log_softmax"))


@converts("aten::topk")
def _topk(ctx, x, k, dim=-1, largest=True, sorted=True):
    t = _nchw(ctx, x, "topk")
    axis = _dims([dim], len(t.value.shape))[0]
    attrs = dict(k=int(k), axis=axis, largest=int(bool(largest)))
    return [Tensor(ctx.emit("topk", t.value, output=o, **attrs), False) for o in ("values", "indices")]


@converts("aten::sort")
def _sort(ctx, x, dim=-1, descending=False, stable=None):
    """sort as a topk of every element; equal values keep their order (the lower index first), as a stable sort."""
    if isinstance(dim, bool) or dim is None:  # sort.stable(x, stable, dim, descending)
        dim, descending = descending if isinstance(descending, int) and not isinstance(descending, bool) else -1, \
            bool(stable)
    t = _nchw(ctx, x, "sort")
    n = t.value.shape[_dims([dim], len(t.value.shape))[0]]
    return _topk(ctx, t, n, dim, bool(descending), True)


# -- matrix products ---------------------------------------------------------------

@converts("aten::mm")
def _mm(ctx, a, b):
    return Tensor(ctx.emit("matmul", _nchw(ctx, a, "mm").value, _nchw(ctx, b, "mm").value), False)


def _scaled(ctx: Context, x, s) -> Tensor:
    return ctx.tensor(x, "baddbmm") if float(s) == 1.0 else _binary(ctx, "mul", x, float(s))


@converts("aten::baddbmm", "aten::addbmm_")
def _baddbmm(ctx, inp, a, b, beta=1, alpha=1):
    p = Tensor(ctx.emit("matmul", _nchw(ctx, a, "baddbmm").value, _nchw(ctx, b, "baddbmm").value), False)
    if float(beta) == 0.0:
        return _scaled(ctx, p, alpha)
    return _binary(ctx, "add", _scaled(ctx, _nchw(ctx, inp, "baddbmm"), beta), _scaled(ctx, p, alpha))


@converts("aten::einsum")
def _einsum(ctx, eq, operands, path=None):
    """Two-operand einsum whose right side is a permutation of batch axes then the matmul's ij,jk -> ik:
    transposes around one matmul (what attention writes: 'bhqd,bhkd->bhqk', 'bij,bjk->bik')."""
    eq = eq.replace(" ", "")
    if "->" not in eq or "..." in eq or len(operands) != 2:
        raise UnsupportedError(f"einsum {eq!r}: mera takes two operands and an explicit output{ctx.where()}")
    lhs, out = eq.split("->")
    sa, sb = lhs.split(",")
    ta, tb = _nchw(ctx, operands[0], "einsum"), _nchw(ctx, operands[1], "einsum")
    contracted = [c for c in sa if c in sb and c not in out]
    batch = [c for c in out if c in sa and c in sb]
    free_a = [c for c in sa if c not in sb]
    free_b = [c for c in sb if c not in sa]
    if len(contracted) != 1 or len(free_a) > 1 or len(free_b) > 1 or sorted(out) != sorted(batch + free_a + free_b) \
            or len(set(sa)) != len(sa) or len(set(sb)) != len(sb):
        raise UnsupportedError(f"einsum {eq!r}: mera takes one contracted index and at most one free index per "
                               f"operand{ctx.where()}")
    k = contracted[0]

    def arrange(t: Tensor, spec: str, order: List[str]) -> Tensor:
        perm = [spec.index(c) for c in order]
        return t if perm == list(range(len(perm))) else Tensor(ctx.emit("transpose", t.value, axes=perm), False)

    a = arrange(ta, sa, batch + free_a + [k])
    b = arrange(tb, sb, batch + [k] + free_b)
    if not free_a:
        a = Tensor(ctx.emit("reshape", a.value, shape=list(a.value.shape[:-1]) + [1, a.value.shape[-1]]), False)
    if not free_b:
        b = Tensor(ctx.emit("reshape", b.value, shape=list(b.value.shape) + [1]), False)
    y = Tensor(ctx.emit("matmul", a.value, b.value), False)
    got = batch + free_a + free_b
    shape = list(y.value.shape[:len(batch)]) + [y.value.shape[-2]] * bool(free_a) + [y.value.shape[-1]] * bool(free_b)
    y = _reshape(ctx, y, shape)
    return arrange(y, "".join(got), list(out))


# -- shape and data movement -------------------------------------------------------

@converts("aten::movedim", "aten::moveaxis")
def _movedim(ctx, x, src, dst):
    t = ctx.tensor(x, "movedim")
    rank = len(t.shape)
    src = _norm_list(src, rank)
    dst = _norm_list(dst, rank)
    order = [d for d in range(rank) if d not in src]
    perm = [0] * rank
    for s, d in zip(src, dst):
        perm[d] = s
    it = iter(order)
    for i in range(rank):
        if i not in dst:
            perm[i] = next(it)
    return _permute(ctx, t, perm)


def _norm_list(v, rank: int) -> List[int]:
    v = [v] if isinstance(v, int) else list(v)
    return [int(d) + rank if int(d) < 0 else int(d) for d in v]


@converts("aten::swapaxes", "aten::swapdims")
def _swapaxes(ctx, x, d0, d1):
    t = ctx.tensor(x, "swapaxes")
    perm = list(range(len(t.shape)))
    a, b = _norm_list([d0, d1], len(perm))
    perm[a], perm[b] = perm[b], perm[a]
    return _permute(ctx, t, perm)


def _tile(ctx: Context, t: Tensor, reps: Sequence[int]) -> Tensor:
    for axis, r in enumerate(reps):
        if r > 1:
            if r > 64:
                raise UnsupportedError(f"repeat/expand by {r} along an axis (mera concatenates at most 64 copies)"
                                       f"{ctx.where()}")
            t = Tensor(ctx.emit("concat", *([t.value] * r), axis=axis), False)
    return t


@converts("aten::repeat")
def _repeat(ctx, x, reps):
    t = _nchw(ctx, x, "repeat")
    reps = [int(r) for r in reps]
    shape = [1] * (len(reps) - len(t.value.shape)) + list(t.value.shape)
    return _tile(ctx, _reshape(ctx, t, shape), reps)


@converts("aten::expand")
def _expand(ctx, x, size, implicit=False):
    t = _nchw(ctx, x, "expand")
    size = [int(s) for s in size]
    shape = [1] * (len(size) - len(t.value.shape)) + list(t.value.shape)
    size = [shape[i] if s == -1 else s for i, s in enumerate(size)]
    if any(a != 1 and a != s for a, s in zip(shape, size)):
        raise UnsupportedError(f"expand of shape {shape} to {size}{ctx.where()}")
    return _tile(ctx, _reshape(ctx, t, shape), [s if a == 1 else 1 for a, s in zip(shape, size)])


@converts("aten::expand_as")
def _expand_as(ctx, x, other):
    return _expand(ctx, x, list(ctx.tensor(other, "expand_as").shape))


@converts("aten::roll")
def _roll(ctx, x, shifts, dims=()):
    t = _nchw(ctx, x, "roll")
    shifts = [shifts] if isinstance(shifts, int) else list(shifts)
    dims = [dims] if isinstance(dims, int) else list(dims)
    if not dims:
        flat = _reshape(ctx, t, [int(np.prod(t.value.shape))])
        return _reshape(ctx, _roll(ctx, flat, shifts, [0]), t.value.shape)
    for s, d in zip(shifts, dims):
        n = t.value.shape[d]
        s = int(s) % n
        if s:
            a, b = _slices(ctx, t, d, [n - s, s])
            t = Tensor(ctx.emit("concat", b.value, a.value, axis=_norm_list(d, len(t.value.shape))[0]), False)
    return t


def _index_const(ctx: Context, idx: np.ndarray) -> Tensor:
    return _const(ctx, np.ascontiguousarray(idx.astype(np.int64)))


@converts("aten::flip")
def _flip(ctx, x, dims):
    t = _nchw(ctx, x, "flip")
    for d in _norm_list(dims, len(t.value.shape)):
        n = t.value.shape[d]
        t = Tensor(ctx.emit("gather", t.value, _index_const(ctx, np.arange(n - 1, -1, -1)).value, axis=d), False)
    return t


@converts("aten::unbind")
def _unbind(ctx, x, dim=0):
    t = _nchw(ctx, x, "unbind")
    d = _norm_list(dim, len(t.value.shape))[0]
    shape = [s for i, s in enumerate(t.value.shape) if i != d]
    return [_reshape(ctx, p, shape) for p in _slices(ctx, t, d, [1] * t.value.shape[d])]


@converts("aten::unsafe_split")
def _unsafe_split(ctx, x, split, dim=0):
    from ._torch_ops import _split
    return _split(ctx, x, split, dim)


@converts("aten::unsafe_chunk")
def _unsafe_chunk(ctx, x, chunks, dim=0):
    from ._torch_ops import _chunk
    return _chunk(ctx, x, chunks, dim)


@converts("aten::stack")
def _stack(ctx, xs, dim=0):
    ts = [_nchw(ctx, x, "stack") for x in xs]
    rank = len(ts[0].value.shape) + 1
    d = _norm_list(dim, rank)[0]
    parts = [_reshape(ctx, t, list(t.value.shape[:d]) + [1] + list(t.value.shape[d:])).value for t in ts]
    return Tensor(ctx.emit("concat", *parts, axis=d), False)


@converts("aten::narrow")
def _narrow(ctx, x, dim, start, length):
    t = ctx.tensor(x, "narrow")
    n = t.shape[dim]
    start = int(start) + n if int(start) < 0 else int(start)
    return Tensor(ctx.emit("slice", t.value, axis=ctx.axis(t, dim), begin=start, end=start + int(length)), t.nhwc,
                  t.torch_cl)


@converts("aten::select")
def _select(ctx, x, dim, index):
    t = _nchw(ctx, x, "select")
    rank = len(t.value.shape)
    d = _norm_list(dim, rank)[0]
    n = t.value.shape[d]
    i = int(index) + n if int(index) < 0 else int(index)
    s = Tensor(ctx.emit("slice", t.value, axis=d, begin=i, end=i + 1), False)
    return _reshape(ctx, s, [v for j, v in enumerate(t.value.shape) if j != d])


def _gather(ctx: Context, t: Tensor, axis: int, index) -> Tensor:
    if isinstance(index, torch.Tensor):
        idx = _index_const(ctx, index.detach().numpy())
    else:
        idx = ctx.tensor(index, "index")
        if idx.value.dtype != "int64":
            idx = Tensor(ctx.emit("cast", idx.value, to="int64"), False)
    return Tensor(ctx.emit("gather", t.value, idx.value, axis=axis), False)


@converts("aten::index_select")
def _index_select(ctx, x, dim, index):
    t = _nchw(ctx, x, "index_select")
    return _gather(ctx, t, _norm_list(dim, len(t.value.shape))[0], index)


@converts("aten::index", "aten::index.Tensor")
def _index(ctx, x, indices):
    """x[idx] / x[:, idx]: one integer index tensor (constant or run-time) on one axis, the others whole."""
    t = _nchw(ctx, x, "index")
    given = [(i, v) for i, v in enumerate(indices) if v is not None]
    if len(given) != 1:
        raise UnsupportedError(f"aten::index with {len(given)} index tensors (mera takes one){ctx.where()}")
    axis, idx = given[0]
    if isinstance(idx, torch.Tensor) and idx.dtype == torch.bool:
        raise UnsupportedError(f"aten::index by a boolean mask (a data-dependent shape){ctx.where()}")
    return _gather(ctx, t, axis, idx)


@converts("aten::masked_fill", "aten::masked_fill_")
def _masked_fill(ctx, x, mask, value):
    """x with value where the mask (constant or run-time) is true: the IR's where."""
    value = float(value.item() if isinstance(value, torch.Tensor) else value)
    t = _nchw(ctx, x, "masked_fill")
    return _where(ctx, mask, torch.tensor(value, dtype=torch.float32), t)


# -- constants of a given shape ------------------------------------------------------

def _torch_dtype(dtype):
    if dtype is None:
        return torch.float32
    if isinstance(dtype, torch.dtype):
        return dtype
    return {6: torch.float32, 7: torch.float64, 4: torch.int64, 3: torch.int32, 11: torch.bool}.get(int(dtype),
                                                                                                     torch.float32)


def _like(ctx: Context, x, fill: float, dtype) -> torch.Tensor:
    shape = list(ctx.tensor(x, "like").shape)
    return torch.full(shape, float(fill), dtype=_torch_dtype(dtype))


@converts("aten::zeros_like")
def _zeros_like(ctx, x, dtype=None, *rest):
    return _like(ctx, x, 0.0, dtype)


@converts("aten::ones_like")
def _ones_like(ctx, x, dtype=None, *rest):
    return _like(ctx, x, 1.0, dtype)


@converts("aten::full_like")
def _full_like(ctx, x, fill, dtype=None, *rest):
    return _like(ctx, x, fill, dtype)


def _static(ctx: Context, size, what: str) -> List[int]:
    if not all(isinstance(s, int) for s in size):
        raise UnsupportedError(f"{what} of a run-time size{ctx.where()}")
    return [int(s) for s in size]


@converts("aten::new_zeros")
def _new_zeros(ctx, x, size, dtype=None, *rest):
    return torch.zeros(_static(ctx, size, "new_zeros"), dtype=_torch_dtype(dtype))


@converts("aten::new_ones")
def _new_ones(ctx, x, size, dtype=None, *rest):
    return torch.ones(_static(ctx, size, "new_ones"), dtype=_torch_dtype(dtype))


@converts("aten::new_full")
def _new_full(ctx, x, size, fill, dtype=None, *rest):
    return torch.full(_static(ctx, size, "new_full"), float(fill), dtype=_torch_dtype(dtype))


@converts("aten::type_as")
def _type_as(ctx, x, other):
    t, o = ctx.tensor(x, "type_as"), ctx.tensor(other, "type_as")
    if t.value.dtype == o.value.dtype:
        return t
    return Tensor(ctx.emit("cast", t.value, to=o.value.dtype), t.nhwc, t.torch_cl)


# -- layout ops on float data ------------------------------------------------------

@converts("aten::channel_shuffle", "aten::native_channel_shuffle")
def _channel_shuffle(ctx, x, groups):
    t = _nchw(ctx, x, "channel_shuffle")
    n, c, h, w = t.value.shape
    g = int(groups)
    y = _reshape(ctx, t, [n, g, c // g, h * w])
    y = Tensor(ctx.emit("transpose", y.value, axes=[0, 2, 1, 3]), False)
    return _reshape(ctx, y, [n, c, h, w])


def _norm_groups(ctx: Context, t: Tensor, groups: int, eps: float, what: str) -> Tensor:
    """(x - mean) / sqrt(var + eps) over each of `groups` groups of channels and all spatial positions."""
    t = ctx.to_nchw(t)
    shape = list(t.value.shape)
    if shape[1] % groups:
        raise UnsupportedError(f"{what} of {shape[1]} channels in {groups} groups{ctx.where()}")
    y = _reshape(ctx, t, [shape[0], groups, -1])
    mean = Tensor(ctx.emit("mean", y.value, axes=[2], keepdims=1), False)
    d = _binary(ctx, "sub", y, mean)
    var = Tensor(ctx.emit("mean", _binary(ctx, "mul", d, d).value, axes=[2], keepdims=1), False)
    y = _binary(ctx, "div", d, _unary(ctx, "sqrt", _binary(ctx, "add", var, float(eps))))
    return _reshape(ctx, y, shape)


def _affine(ctx: Context, y: Tensor, weight, bias) -> Tensor:
    c = y.value.shape[1]
    bshape = [c] + [1] * (len(y.value.shape) - 2)
    for p, op in ((weight, "mul"), (bias, "add")):
        if p is not None:
            pv = p.detach().float().numpy().reshape(bshape) if isinstance(p, torch.Tensor) else None
            y = _binary(ctx, op, y, _const(ctx, pv) if pv is not None else
                        _reshape(ctx, ctx.tensor(p, "norm"), bshape))
    return y


@converts("aten::group_norm")
def _group_norm(ctx, x, groups, weight=None, bias=None, eps=1e-5, cudnn=True):
    return _affine(ctx, _norm_groups(ctx, ctx.tensor(x, "group_norm"), int(groups), float(eps), "group_norm"),
                   weight, bias)


@converts("aten::instance_norm")
def _instance_norm(ctx, x, weight, bias, mean, var, use_input_stats, momentum, eps, cudnn=True):
    if not use_input_stats:
        raise UnsupportedError(f"instance_norm with running statistics (track_running_stats) {ctx.where()}")
    t = ctx.tensor(x, "instance_norm")
    return _affine(ctx, _norm_groups(ctx, t, t.shape[1], float(eps), "instance_norm"), weight, bias)


@converts("aten::cosine_similarity")
def _cosine_similarity(ctx, a, b, dim=1, eps=1e-8):
    """sum(a*b) / sqrt(clamp_min(sum(a*a) * sum(b*b), eps^2)), ATen's formula."""
    ta, tb = _nchw(ctx, a, "cosine_similarity"), _nchw(ctx, b, "cosine_similarity")
    ab = _reduce(ctx, _binary(ctx, "mul", ta, tb), "sum", [dim], False, "cosine_similarity")
    aa = _reduce(ctx, _binary(ctx, "mul", ta, ta), "sum", [dim], False, "cosine_similarity")
    bb = _reduce(ctx, _binary(ctx, "mul", tb, tb), "sum", [dim], False, "cosine_similarity")
    den = _unary(ctx, "sqrt", _unary(ctx, "clip", _binary(ctx, "mul", aa, bb), a_min=float(eps) ** 2,
                                     a_max=math.inf))
    return _binary(ctx, "div", ab, den)


# -- unit axes, embedding, attention -------------------------------------------------

@converts("aten::unsqueeze", "aten::unsqueeze_")
def _unsqueeze(ctx, x, dim):
    t = _nchw(ctx, x, "unsqueeze")
    shape = list(t.value.shape)
    d = _norm_list(dim, len(shape) + 1)[0]
    return _reshape(ctx, t, shape[:d] + [1] + shape[d:])


@converts("aten::squeeze", "aten::squeeze_")
def _squeeze(ctx, x, dims=None):
    t = _nchw(ctx, x, "squeeze")
    shape = list(t.value.shape)
    dims = set(range(len(shape)) if dims is None else _norm_list(dims, len(shape)))
    out = [s for i, s in enumerate(shape) if not (i in dims and s == 1)]
    if not out:
        raise UnsupportedError(f"squeeze to a 0-d tensor (mera tensors have at least one axis){ctx.where()}")
    return _reshape(ctx, t, out)


@converts("aten::unflatten")
def _unflatten(ctx, x, dim, sizes):
    t = _nchw(ctx, x, "unflatten")
    shape = list(t.value.shape)
    d = _norm_list(dim, len(shape))[0]
    sizes = [int(s) for s in sizes]
    if -1 in sizes:
        known = int(np.prod([s for s in sizes if s != -1]))
        sizes[sizes.index(-1)] = shape[d] // known
    return _reshape(ctx, t, shape[:d] + sizes + shape[d + 1:])


@converts("aten::embedding")
def _embedding(ctx, weight, indices, padding_idx=-1, scale_grad=False, sparse=False):
    """Rows of the table: gather on axis 0 (a float index is not possible in PyTorch; int32 is cast)."""
    return _gather(ctx, ctx.tensor(weight, "embedding"), 0, indices)


def _attention(ctx: Context, q: Tensor, k: Tensor, v: Tensor, mask, causal: bool, scale, what: str) -> Tensor:
    """softmax(q @ k^T * scale + mask) @ v, mask as ATen's: a bool one keeps its true entries (the others
    get -inf), a float one is added; is_causal keeps the lower triangle."""
    e, lq, lk = q.value.shape[-1], q.value.shape[-2], k.value.shape[-2]
    s = 1.0 / math.sqrt(e) if scale is None else float(scale)
    rank = len(k.value.shape)
    kt = Tensor(ctx.emit("transpose", k.value, axes=list(range(rank - 2)) + [rank - 1, rank - 2]), False)
    a = _binary(ctx, "mul", Tensor(ctx.emit("matmul", q.value, kt.value), False), s)
    if causal:
        mask = torch.ones(lq, lk, dtype=torch.bool).tril()
    if mask is not None:
        if isinstance(mask, torch.Tensor) and mask.dtype == torch.bool:
            mask = torch.zeros(mask.shape).masked_fill(~mask, float("-inf"))
        elif not isinstance(mask, torch.Tensor) and mask.value.dtype != "float32":
            raise UnsupportedError(f"{what} with a run-time {mask.value.dtype} mask (mera takes a constant one or "
                                   f"a float one){ctx.where()}")
        a = _binary(ctx, "add", a, ctx.tensor(mask, what) if not isinstance(mask, torch.Tensor)
                    else _const(ctx, mask.detach().float().numpy()))
    p = Tensor(ctx.emit("softmax", a.value, axis=-1 + len(a.value.shape)), False)
    return Tensor(ctx.emit("matmul", p.value, v.value), False)


@converts("aten::scaled_dot_product_attention")
def _sdpa(ctx, q, k, v, mask=None, dropout_p=0.0, is_causal=False, scale=None, enable_gqa=False):
    if float(dropout_p) != 0.0:
        raise UnsupportedError(f"scaled_dot_product_attention with dropout_p={dropout_p} (PyTorch drops out even in "
                               f"eval mode){ctx.where()}")
    if enable_gqa:
        raise UnsupportedError(f"scaled_dot_product_attention with enable_gqa{ctx.where()}")
    ts = [_nchw(ctx, a, "scaled_dot_product_attention") for a in (q, k, v)]
    return _attention(ctx, *ts, mask, bool(is_causal), scale, "scaled_dot_product_attention")


def _linear3(ctx: Context, x: Tensor, w: torch.Tensor, b) -> Tensor:
    """x @ w^T + b with constant w, b on a [N, L, E] tensor."""
    y = Tensor(ctx.emit("matmul", x.value, _const(ctx, w.detach().float().t().contiguous().numpy()).value), False)
    return y if b is None else _binary(ctx, "add", y, _const(ctx, b.detach().float().numpy()))


@converts("aten::_native_multi_head_attention")
def _native_mha(ctx, query, key, value, embed_dim, num_heads, qkv_w, qkv_b, proj_w, proj_b, mask=None,
                need_weights=True, average_attn_weights=True, mask_type=None):
    """nn.MultiheadAttention's inference fast path (batch_first [N, L, E]): the projections, per-head
    scaled dot-product attention, the output projection. Attention weights are not computed."""
    if need_weights:
        raise UnsupportedError(f"MultiheadAttention with need_weights=True (mera returns the output only: pass "
                               f"need_weights=False){ctx.where()}")
    if not all(isinstance(p, torch.Tensor) for p in (qkv_w, proj_w)):
        raise UnsupportedError(f"_native_multi_head_attention with computed weights{ctx.where()}")
    e, h = int(embed_dim), int(num_heads)
    d = e // h
    outs = []
    for i, x in enumerate((query, key, value)):
        t = _nchw(ctx, x, "_native_multi_head_attention")
        n, length = t.value.shape[0], t.value.shape[1]
        y = _linear3(ctx, t, qkv_w[i * e:(i + 1) * e], None if qkv_b is None else qkv_b[i * e:(i + 1) * e])
        y = _reshape(ctx, y, [n, length, h, d])
        outs.append(Tensor(ctx.emit("transpose", y.value, axes=[0, 2, 1, 3]), False))
    if mask is not None and not isinstance(mask, torch.Tensor):
        raise UnsupportedError(f"_native_multi_head_attention with a run-time mask{ctx.where()}")
    if mask is not None and mask.dtype == torch.bool:
        mask = ~mask  # the module's masks mark the positions to leave out
    o = _attention(ctx, *outs, mask, False, None, "_native_multi_head_attention")
    n, length = o.value.shape[0], o.value.shape[2]
    o = _reshape(ctx, Tensor(ctx.emit("transpose", o.value, axes=[0, 2, 1, 3]), False), [n, length, e])
    return [_linear3(ctx, o, proj_w, proj_b), None]


@converts("aten::view_as", "aten::reshape_as")
def _view_as(ctx, x, other):
    return _reshape(ctx, ctx.tensor(x, "view_as"), list(ctx.tensor(other, "view_as").shape))


# -- comparisons: the IR's compare, a uint8 0/1 tensor where PyTorch's is bool ----------------------

def _compare(kind: str):
    def conv(ctx, a, b):
        if not isinstance(a, (Tensor, torch.Tensor)) and not isinstance(b, (Tensor, torch.Tensor)):
            raise UnsupportedError(f"comparison of two numbers{ctx.where()}")
        from ._torch_ops import _align, _promoted, _scalar_beside
        a, b = _scalar_beside(ctx, a, b), _scalar_beside(ctx, b, a)
        a, b = _promoted(a, b), _promoted(b, a)
        ta, tb = _align(ctx, ctx.tensor(a, kind), ctx.tensor(b, kind))
        nhwc = ta.nhwc or tb.nhwc
        if kind == "not_equal":
            eq = ctx.emit("compare", ta.value, tb.value, kind="equal")
            one_minus = _binary(ctx, "sub", 1.0, Tensor(ctx.emit("cast", eq, to="float32"), nhwc))
            return Tensor(ctx.emit("cast", one_minus.value, to="uint8"), nhwc)
        return Tensor(ctx.emit("compare", ta.value, tb.value, kind=kind), nhwc)
    return conv


for _names, _kind in ((("aten::gt", "aten::greater"), "greater"), (("aten::lt", "aten::less"), "less"),
                      (("aten::ge", "aten::greater_equal"), "greater_or_equal"),
                      (("aten::le", "aten::less_equal"), "less_or_equal"), (("aten::eq",), "equal"),
                      (("aten::ne", "aten::not_equal"), "not_equal")):
    converts(*_names)(_compare(_kind))


@converts("aten::sign", "aten::sign_")
def _sign(ctx, x):
    return _unary(ctx, "sign", x)


@converts("aten::exp2")
def _exp2(ctx, x):
    return _binary(ctx, "pow", 2.0, x)


# -- float recurrent layers: the IR's lstm / gru (ONNX's forms), one per layer --------------------------

# PyTorch's gate blocks -> ONNX's: LSTM i,f,g,o -> i,o,f,c; GRU r,z,n -> z,r,h
_GATES = {"lstm": [0, 3, 1, 2], "gru": [1, 0, 2]}


def _gates(w: torch.Tensor, kind: str) -> np.ndarray:
    blocks = np.split(w.detach().float().numpy(), len(_GATES[kind]), axis=0)
    return np.concatenate([blocks[i] for i in _GATES[kind]], axis=0)


def _rnn(ctx: Context, kind: str, x, hx: List, params, has_biases, num_layers, dropout, train, bidirectional,
         batch_first):
    what = f"aten::{kind}"
    if train:
        raise UnsupportedError(f"{what} in training mode{ctx.where()}; call model.eval() first")
    if not all(isinstance(p, torch.Tensor) for p in params):
        raise UnsupportedError(f"{what} with computed weights{ctx.where()}")
    t = _nchw(ctx, x, what)
    if len(t.value.shape) != 3:
        raise UnsupportedError(f"{what} of a rank-{len(t.value.shape)} input (mera takes a batched [N, L, C] or "
                               f"[L, N, C] one){ctx.where()}")
    if batch_first:
        t = Tensor(ctx.emit("transpose", t.value, axes=[1, 0, 2]), False)
    seq, batch = t.value.shape[0], t.value.shape[1]
    dirs = 2 if bidirectional else 1
    per = 4 if has_biases else 2
    hidden = params[1].shape[1]
    if any(isinstance(h, torch.Tensor) and h.numel() == 0 for h in hx) or len(params) != per * dirs * num_layers:
        raise UnsupportedError(f"{what} with projections (proj_size) or an unexpected weight list{ctx.where()}")
    states = [ctx.to_nchw(ctx.tensor(h, what)) for h in hx]
    h_n, c_n = [], []
    for layer in range(num_layers):
        ws = [params[(layer * dirs + d) * per:(layer * dirs + d + 1) * per] for d in range(dirs)]
        w = np.stack([_gates(p[0], kind) for p in ws])
        r = np.stack([_gates(p[1], kind) for p in ws])
        b = np.stack([np.concatenate([_gates(p[2], kind), _gates(p[3], kind)]) if has_biases else
                      np.zeros(2 * w.shape[1], np.float32) for p in ws])
        init = [Tensor(ctx.emit("slice", s.value, axis=0, begin=layer * dirs, end=(layer + 1) * dirs), False).value
                for s in states]
        direction = "bidirectional" if bidirectional else "forward"
        ins = [t.value, _const(ctx, w).value, _const(ctx, r).value, _const(ctx, b).value] + init
        attrs = {"linear_before_reset": 1} if kind == "gru" else {}
        y = ctx.emit(kind, *ins, hidden_size=hidden, direction=direction, **attrs)  # [seq, dirs, batch, H]
        for d in range(dirs):
            last = seq - 1 if d == 0 else 0
            v = ctx.emit("slice", y, axis=0, begin=last, end=last + 1)
            h_n.append(ctx.emit("reshape", ctx.emit("slice", v, axis=1, begin=d, end=d + 1) if dirs > 1 else v,
                                shape=[1, batch, hidden]))
        t = _reshape(ctx, Tensor(ctx.emit("transpose", y, axes=[0, 2, 1, 3]), False), [seq, batch, dirs * hidden])
    out = Tensor(ctx.emit("transpose", t.value, axes=[1, 0, 2]), False) if batch_first else t
    hn = Tensor(h_n[0] if len(h_n) == 1 else ctx.emit("concat", *h_n, axis=0), False)
    # the IR's lstm gives Y only: the last cell state is not computed (a use of it fails naming the op)
    return [out, hn] if kind == "gru" else [out, hn, Unavailable(
        f"the last cell state c_n of {what}{ctx.where()} (mera's lstm gives the outputs and h_n only)")]


@converts("aten::lstm")
def _lstm(ctx, x, hx, params, has_biases, num_layers, dropout, train, bidirectional, batch_first):
    return _rnn(ctx, "lstm", x, hx, params, has_biases, num_layers, dropout, train, bidirectional, batch_first)


@converts("aten::gru")
def _gru(ctx, x, hx, params, has_biases, num_layers, dropout, train, bidirectional, batch_first):
    return _rnn(ctx, "gru", x, [hx], params, has_biases, num_layers, dropout, train, bidirectional, batch_first)


# -- division with rounding on tensors (sizes and other numbers stay Python arithmetic) --------------

def _rounded_div(ctx: Context, a, b, mode: str) -> Tensor:
    q = _binary(ctx, "div", a, b)
    if mode == "floor":
        return _unary(ctx, "floor", q)
    # trunc: toward zero, floor(|q|) with q's sign
    return _binary(ctx, "mul", _unary(ctx, "floor", _unary(ctx, "abs", q)), _sign(ctx, q))


@converts("aten::floor_divide", "aten::floordiv")
def _floor_divide(ctx, a, b):
    if not isinstance(a, (Tensor, torch.Tensor)) and not isinstance(b, (Tensor, torch.Tensor)):
        return a // b  # x.shape[2] // 2: a constant
    return _rounded_div(ctx, a, b, "floor")


@converts("aten::div", "aten::div_")
def _div(ctx, a, b, rounding_mode=None):
    from ._torch_ops import _div as _plain_div
    if rounding_mode is None or not (isinstance(a, (Tensor, torch.Tensor)) or isinstance(b, (Tensor, torch.Tensor))):
        return _plain_div(ctx, a, b, rounding_mode)
    if rounding_mode not in ("floor", "trunc"):
        raise UnsupportedError(f"div with rounding_mode={rounding_mode!r}{ctx.where()}")
    return _rounded_div(ctx, a, b, rounding_mode)


@converts("aten::rsub")
def _rsub(ctx, a, b, alpha=1):
    """b - alpha * a (what 1 - x traces to)."""
    if not isinstance(a, (Tensor, torch.Tensor)) and not isinstance(b, (Tensor, torch.Tensor)):
        return b - alpha * a
    return _binary(ctx, "sub", b, a if float(alpha) == 1.0 else _binary(ctx, "mul", a, float(alpha)))


@converts("aten::erfc")
def _erfc(ctx, x):
    return _binary(ctx, "sub", 1.0, _unary(ctx, "erf", x))


@converts("aten::numel")
def _numel(ctx, x):
    return int(np.prod(ctx.tensor(x, "numel").shape))


@converts("aten::dim")
def _dim(ctx, x):
    return len(ctx.tensor(x, "dim").shape)


# -- logical ops on 0/1 masks (the compare results): float arithmetic, cast back to uint8 -------------

def _as_float01(ctx: Context, x, what: str) -> Tensor:
    if isinstance(x, torch.Tensor):
        return _const(ctx, (x.detach().numpy() != 0).astype(np.float32))
    t = ctx.tensor(x, what)
    if t.value.dtype == "float32":  # logical ops of float tensors: nonzero is true
        m = ctx.emit("compare", _unary(ctx, "abs", t).value, _const(ctx, np.zeros(1, np.float32)).value,
                     kind="greater")
        return Tensor(ctx.emit("cast", m, to="float32"), t.nhwc)
    return Tensor(ctx.emit("cast", t.value, to="float32"), t.nhwc)


def _logical(kind: str):
    def conv(ctx, a, b=None):
        what = f"logical_{kind}"
        fa = _as_float01(ctx, a, what)
        if kind == "not":
            y = _binary(ctx, "sub", 1.0, fa)
        else:
            fb = _as_float01(ctx, b, what)
            y = {"and": lambda: _binary(ctx, "mul", fa, fb), "or": lambda: _binary(ctx, "maximum", fa, fb),
                 "xor": lambda: _unary(ctx, "abs", _binary(ctx, "sub", fa, fb))}[kind]()
        return Tensor(ctx.emit("cast", y.value, to="uint8"), y.nhwc)
    return conv


def _bitwise(kind: str):
    """&, |, ^, ~ of masks (PyTorch bool tensors, mera's uint8 0/1 compare results): the logical op. Of other
    integer tensors they are bit operations mera does not have."""
    logical = _logical(kind)

    def conv(ctx, a, b=None):
        for v in (a, b):
            if isinstance(v, torch.Tensor) and v.dtype != torch.bool or \
                    isinstance(v, Tensor) and v.value.dtype != "uint8":
                dt = v.dtype if isinstance(v, torch.Tensor) else v.value.dtype
                raise UnsupportedError(f"bitwise {kind} of a {dt} tensor (mera takes boolean masks){ctx.where()}")
        if not isinstance(a, (Tensor, torch.Tensor)) and not isinstance(b, (Tensor, torch.Tensor)):
            raise UnsupportedError(f"bitwise {kind} of numbers{ctx.where()}")
        return logical(ctx, a, b)
    return conv


converts("aten::logical_and")(_logical("and"))
converts("aten::logical_or")(_logical("or"))
converts("aten::logical_xor")(_logical("xor"))
converts("aten::logical_not")(_logical("not"))
converts("aten::__and__", "aten::bitwise_and")(_bitwise("and"))
converts("aten::__or__", "aten::bitwise_or")(_bitwise("or"))
converts("aten::__xor__", "aten::bitwise_xor")(_bitwise("xor"))
converts("aten::bitwise_not")(_bitwise("not"))


# -- the host ops of issue 13's op coverage: trig, where, cumsum, gather -------------------------------

def _unary_op(op: str):
    def conv(ctx, x):
        return _unary(ctx, op, x)
    return conv


for _op in ("sin", "cos", "tan", "asin", "acos", "atan", "sinh", "cosh", "asinh", "acosh", "atanh"):
    _FLOAT_ONLY.add(_op)
    converts(f"aten::{_op}", f"aten::{_op}_", f"aten::arc{_op[1:]}" if _op.startswith("a") else f"aten::{_op}")(
        _unary_op(_op))


@converts("aten::atan2", "aten::atan2_", "aten::arctan2")
def _atan2(ctx, a, b):
    return _binary(ctx, "atan2", a, b)


def _where(ctx: Context, cond, x, y) -> Tensor:
    """torch.where(cond, x, y) on the NCHW view: a constant condition becomes a uint8 constant; a number or
    constant beside a run-time operand takes its dtype (float32 unless both are integer)."""
    ops = [v for v in (x, y) if isinstance(v, Tensor)]
    dt = ops[0].value.dtype if ops else "float32"
    vals = []
    for v in (x, y):
        if isinstance(v, Tensor):
            v = ctx.to_nchw(v)
            if v.quantized:
                raise UnsupportedError(f"where of a quantized tensor (dequantize it first){ctx.where()}")
            if v.value.dtype != dt:
                v = Tensor(ctx.emit("cast", v.value, to=dt), False)
            vals.append(v.value)
        else:
            arr = v.detach().numpy() if isinstance(v, torch.Tensor) else np.asarray(v)
            vals.append(_const(ctx, arr.astype(dt).reshape(arr.shape or (1,))).value)
    if isinstance(cond, Tensor):
        c = ctx.to_nchw(cond).value
        if c.dtype == "float32" or c.qparams is not None:
            raise UnsupportedError(f"where with a {c.dtype} condition (a boolean tensor expected){ctx.where()}")
    else:
        arr = cond.detach().numpy() if isinstance(cond, torch.Tensor) else np.asarray(cond)
        c = _const(ctx, arr.astype(np.uint8).reshape(arr.shape or (1,))).value
    return Tensor(ctx.emit("where", c, vals[0], vals[1]), False)


@converts("aten::where", "aten::where.self", "aten::where.ScalarOther", "aten::where.ScalarSelf",
          "aten::where.Scalar")
def _where_conv(ctx, cond, x=None, y=None):
    if x is None or y is None:
        raise UnsupportedError(f"torch.where(cond) with one argument (nonzero's data-dependent shape){ctx.where()}")
    return _where(ctx, cond, x, y)


@converts("aten::cumsum", "aten::cumsum_")
def _cumsum(ctx, x, dim, dtype=None):
    t = _nchw(ctx, x, "cumsum")
    if t.quantized:
        raise UnsupportedError(f"cumsum of a quantized tensor (dequantize it first){ctx.where()}")
    if dtype is not None and _torch_dtype(dtype) != torch.float32 and t.value.dtype == "float32":
        raise UnsupportedError(f"cumsum to {_torch_dtype(dtype)} of a float32 tensor{ctx.where()}")
    return Tensor(ctx.emit("cumsum", t.value, axis=_norm_list(dim, len(t.value.shape))[0]), False)


@converts("aten::gather")
def _gather_elements(ctx, x, dim, index, sparse_grad=False):
    """torch.gather: out[i][j] = x[index[i][j]][j] along dim (ONNX GatherElements)."""
    t = _nchw(ctx, x, "gather")
    axis = _norm_list(dim, len(t.value.shape))[0]
    if isinstance(index, torch.Tensor):
        idx = _const(ctx, index.detach().numpy().astype(np.int64)).value
    else:
        idx = ctx.to_nchw(ctx.tensor(index, "index")).value
        if idx.dtype != "int64":
            idx = ctx.emit("cast", idx, to="int64")
    return Tensor(ctx.emit("gather_elements", t.value, idx, axis=axis), False)

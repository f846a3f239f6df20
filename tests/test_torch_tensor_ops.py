"""Float PyTorch tensor ops (mera/frontend/_torch_tensor_ops.py): each traced (a sample also exported) and run
on the Interpreter against torch's output, in both layouts; constant folding at import; dict outputs; the
rank-1 constant beside channels-last data."""

import warnings

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import mera

X = (2, 4, 3, 5)  # N, C, H, W: every axis a different size, so a wrong axis cannot broadcast silently


class Fn(nn.Module):
    def __init__(self, fn, **params):
        super().__init__()
        self.fn = fn
        for k, v in params.items():
            setattr(self, k, nn.Parameter(v, requires_grad=False) if v.is_floating_point() else v)

    def forward(self, *xs):
        return self.fn(self, *xs)


def _inputs(shapes, kind, seed):
    g = torch.Generator().manual_seed(seed)
    xs = [torch.randn(*s, generator=g) for s in shapes]
    if kind == "pos":
        xs = [x.abs() + 0.5 for x in xs]
    return xs


def _check(model, shapes, layout, export=False, kind="any", seed=0):
    xs = _inputs(shapes, kind, seed)
    with torch.no_grad():
        ref = model(*xs)
        if export:
            src = torch.export.export(model, tuple(xs))
        else:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                src = torch.jit.trace(model, tuple(xs), strict=False)
    nh = layout == "NHWC"

    def lay(s):
        return (s[0], s[2], s[3], s[1]) if nh and len(s) == 4 else tuple(s)

    mod, params = mera.frontend.from_pytorch(src, [(f"input{i}", lay(s)) for i, s in enumerate(shapes)],
                                             layout=layout)
    ins = [np.ascontiguousarray(x.numpy().transpose(0, 2, 3, 1)) if nh and x.dim() == 4 else x.numpy()
           for x in xs]
    outs = mera.compile(mod, params, target="Interpreter")(*ins)
    refs = list(ref.values()) if isinstance(ref, dict) else list(ref) if isinstance(ref, (tuple, list)) else [ref]
    assert len(outs) == len(refs)
    for o, r in zip(outs, refs):
        r = r.numpy()
        if nh and r.ndim == 4:
            r = r.transpose(0, 2, 3, 1)
        assert o.shape == r.shape
        if r.dtype.kind in "iub":
            np.testing.assert_array_equal(o, r)
        else:
            np.testing.assert_allclose(o, r, rtol=1e-5, atol=1e-6)


# name: (function of (module, *inputs), input shapes, input kind)
CASES = {
    "rsqrt": (lambda m, x: torch.rsqrt(x), [X], "pos"),
    "reciprocal_neg_square": (lambda m, x: x.reciprocal() - x.square() + (-x), [X], "pos"),
    "log2_log1p_expm1": (lambda m, x: torch.log2(x) + torch.log1p(x) * torch.expm1(x), [X], "pos"),
    "exp_log_pow": (lambda m, x: torch.exp(x).log() + x ** 3 + torch.pow(x, 2.5), [X], "pos"),
    "clamp_tensor_bounds": (lambda m, x, y: torch.clamp(x, min=y - 1, max=y) + x.clamp_min(0.2).clamp_max(0.7),
                            [X, X], "any"),
    "clamp_rank1_bounds": (lambda m, x: torch.clamp(x, min=m.lo, max=m.lo + 1), [X], "any", {"lo": torch.randn(5)}),
    "minimum_maximum": (lambda m, x, y: torch.minimum(x, y) * torch.maximum(x, y), [X, X], "any"),
    "sum_mean_keepdim": (lambda m, x: x.sum(dim=(2, 3), keepdim=True) + x.mean(1, keepdim=True), [X], "any"),
    "full_reductions": (lambda m, x: (x / x.max(), x - x.min(), x.sum(), x.mean() + x.prod() * 0 + x.std(),
                                      x.amax(dim=(0, 1, 2, 3)), x.argmax(), x.argmin(keepdim=True)), [X], "any"),
    "sum_mean_drop": (lambda m, x: x.sum(dim=1) * x.mean(dim=(1,)), [X], "any"),
    "amax_amin_prod": (lambda m, x: (x.amax(dim=1), x.amin(dim=(2, 3), keepdim=True), x.prod(3)),
                       [X], "any"),
    "max_min_dim": (lambda m, x: (x.max(dim=1)[0], x.max(dim=1)[1], x.min(dim=-1, keepdim=True).values), [X], "any"),
    "std_var": (lambda m, x: (x.std(dim=(2, 3)), x.var(1, keepdim=True, unbiased=False), x.var(dim=3, correction=0)),
                [X], "any"),
    "norm": (lambda m, x: (x.norm(dim=1), torch.linalg.vector_norm(x, ord=1, dim=(2, 3)),
                           torch.linalg.vector_norm(x, ord=float("inf"), dim=2, keepdim=True)), [X], "any"),
    "normalize": (lambda m, x: F.normalize(x, dim=1), [X], "any"),
    "cosine_similarity": (lambda m, x, y: F.cosine_similarity(x, y, dim=1), [X, X], "any"),
    "argmax_argmin": (lambda m, x: (x.argmax(1), x.argmin(dim=-1, keepdim=True)), [X], "any"),
    "topk_sort": (lambda m, x: (*x.topk(2, dim=1), *torch.sort(x, dim=-1, descending=True)), [X], "any"),
    "softmax_log_softmax_logsumexp": (lambda m, x: (F.softmax(x, 1), F.log_softmax(x, dim=-1),
                                                    torch.logsumexp(x, dim=1)), [X], "any"),
    "matmuls": (lambda m, a, b, c: (torch.bmm(a, b), torch.baddbmm(c, a, b, beta=0.5, alpha=2.0),
                                    torch.mm(a[0], b[0]), torch.addmm(c[0], a[0], b[0])),
                [(2, 3, 4), (2, 4, 5), (2, 3, 5)], "any"),
    "einsum": (lambda m, q, k: (torch.einsum("bhqd,bhkd->bhqk", q, k), torch.einsum("bhqk,bhkd->bhqd", q, k),
                                torch.einsum("bhqd,bhkd->bhkq", q, k)),
               [(1, 2, 4, 4), (1, 2, 4, 4)], "any"),
    "permutes": (lambda m, x: (x.permute(0, 2, 3, 1), x.transpose(1, 3), torch.movedim(x, 1, -1),
                               torch.swapaxes(x, 2, 3), x.flatten(1).t()), [X], "any"),
    "repeat_expand": (lambda m, x, y: (x.repeat(1, 2, 1, 1), y.expand(2, 4, 3, 5), y.expand_as(x) + x),
                      [X, (2, 4, 1, 5)], "any"),
    "roll_flip": (lambda m, x: (torch.roll(x, 2, dims=3), torch.roll(x, (1, -1), (1, 2)), torch.flip(x, [1, 3]),
                                torch.roll(x, 3)), [X], "any"),
    "split_family": (lambda m, x: (*x.chunk(2, 1), *x.split([1, 3], dim=1), *x.unbind(2), *torch.split(x, 2, 3)),
                     [X], "any"),
    "stack_narrow_select": (lambda m, x, y: (torch.stack([x, y], 1), x.narrow(3, 1, 3), x.select(1, -1),
                                             x[:, 2], torch.stack([x, y], dim=-1)), [X, X], "any"),
    "index_constant": (lambda m, x: (x.index_select(1, m.idx), x[:, m.idx], x[m.idx[1:2]]), [X], "any",
                       {"idx": torch.tensor([3, 0, 2])}),
    "index_runtime": (lambda m, x, i: x[:, (i * 1.2).clamp(max=3.0).long()[0]]
                      + x.index_select(1, i.clamp(max=3.0).long()[0]),
                      [X, (1, 3)], "pos"),
    "masked_fill": (lambda m, x: x.masked_fill(m.mask, -1.5) + x.masked_fill(m.mask, float("-inf")).softmax(-1),
                    [X], "any", {"mask": torch.rand(3, 5) > 0.5}),
    "like_constants": (lambda m, x: (x + torch.ones_like(x) * 2 - torch.zeros_like(x) + torch.full_like(x, 0.5),
                                     x.new_zeros((2, 4)) + x.new_ones(2, 4) + x.sum((2, 3))), [X], "any"),
    "folded_arange_linspace": (lambda m, x: x * (torch.arange(x.shape[3]) * 2).float()
                               + torch.linspace(0, 1, 5) + x.type_as(x).contiguous().clone().detach(), [X], "any"),
    "floor_divide_sizes": (lambda m, x: x[:, :, :, : x.shape[3] // 2] * (x.shape[1] // 3), [X], "any"),
    "floor_remainder_round": (lambda m, x: (torch.remainder(x, 0.7), torch.floor_divide(x, 0.7),
                                            torch.div(x, 0.3, rounding_mode="trunc"), x.div(x + 3, rounding_mode="floor"),
                                            torch.floor(x) + torch.ceil(x) + torch.round(x)), [X], "any"),
    "pixel_channel_shuffle": (lambda m, x: (F.pixel_shuffle(x, 2), F.pixel_unshuffle(x[:, :, :2, :4], 2),
                                            F.channel_shuffle(x, 2)), [X], "any"),
    "activations_a": (lambda m, x: (F.hardtanh(x, -0.5, 0.5), F.silu(x), F.mish(x), F.softplus(x),
                                    F.softsign(x), F.tanhshrink(x), F.hardshrink(x, 0.3)), [X], "any"),
    "activations_b": (lambda m, x: (F.celu(x, 0.7), F.celu(x), F.selu(x), F.glu(x, 1), F.logsigmoid(x * 30),
                                    F.elu(x, 0.4), F.gelu(x), F.gelu(x, approximate="tanh")), [X], "any"),
    "norms": (lambda m, x: (F.group_norm(x, 2, m.w, m.b), F.instance_norm(x), F.layer_norm(x, [3, 5]),
                            F.group_norm(x, 4)), [X], "any", {"w": torch.randn(4), "b": torch.randn(4)}),
    "sdpa_unflatten": (lambda m, x: F.scaled_dot_product_attention(*[x.unflatten(-1, (2, 4)).transpose(1, 2)] * 3,
                                                                  is_causal=True).unsqueeze(0).squeeze(0), [(2, 5, 8)],
                       "any"),
    "compare_sign_exp2": (lambda m, x, y: ((x > 0).float(), (x <= y).float() + (x != x.round()).float(),
                                         (x == 0.5).float() * (y >= x).float() + (x < 0.2).float(), torch.sign(x),
                                         torch.exp2(x), x.view_as(y).reshape_as(x)), [X, X], "any"),
    "rsub_erfc_logical": (lambda m, x, y: (1 - x, torch.rsub(x, y, alpha=2.0), torch.erfc(x),
                                         ((x > 0) & (y < 0.5)).float() + ((x > 1) | (y > 1)).float(),
                                         ((x > 0) ^ (y > 0)).float() - (~(x > 0)).float() + torch.logical_not(x).float(),
                                         x * (x.numel() // x.dim())), [X, X], "any"),
    "dropout_identity": (lambda m, x: F.dropout(x, 0.3, training=False) + x.to(torch.float32), [X], "any"),
    "rank1_param_broadcast": (lambda m, x: x * m.w + m.w2 - m.b3, [X], "any",
                              {"w": torch.randn(5), "w2": torch.randn(3, 5), "b3": torch.randn(4, 1, 1)}),
    "trig_hyperbolic": (lambda m, x: (torch.sin(x) + torch.cos(x) * torch.tan(x * 0.5), torch.atan(x) - torch.sinh(x),
                                      torch.cosh(x) + torch.asinh(x), torch.asin(x * 0.3) + torch.acos(x * 0.3),
                                      torch.atanh(x * 0.3) + torch.acosh(x.abs() + 1.5), torch.atan2(x, x.flip(3))),
                        [X], "any"),
    "where_runtime_and_constant": (lambda m, x, y: (torch.where(x > y, x, y * 2), torch.where(x > 0, x, 0.0),
                                                    torch.where(m.mask, y, x), x.masked_fill(y < 0, -1e4)),
                                   [X, X], "any", {"mask": torch.randn(3, 5) > 0}),
    "cumsum": (lambda m, x: (x.cumsum(1), torch.cumsum(x, dim=-1), x.cumsum(2).flip(2)), [X], "any"),
    "gather_elements": (lambda m, x, y: (torch.gather(x, 1, m.idx), torch.gather(x, 3, torch.topk(y, 5, dim=3).indices),
                                         x.gather(-2, m.idx2)), [X, X], "any",
                        {"idx": torch.randint(0, 4, (2, 3, 3, 5)), "idx2": torch.randint(0, 3, (2, 4, 2, 5))}),
}


@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
@pytest.mark.parametrize("name", sorted(CASES))
def test_op_traced(name, layout):
    fn, shapes, kind, *params = CASES[name]
    _check(Fn(fn, **(params[0] if params else {})).eval(), shapes, layout, kind=kind)


EXPORTED = ["rsqrt", "sum_mean_keepdim", "std_var", "topk_sort", "softmax_log_softmax_logsumexp", "roll_flip",
            "stack_narrow_select", "activations_a", "norms", "rank1_param_broadcast", "einsum", "repeat_expand",
            "folded_arange_linspace", "like_constants", "index_constant", "masked_fill", "sdpa_unflatten",
            "compare_sign_exp2", "rsub_erfc_logical", "full_reductions", "trig_hyperbolic",
            "where_runtime_and_constant", "cumsum", "gather_elements"]


@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
@pytest.mark.parametrize("name", EXPORTED)
def test_op_exported(name, layout):
    fn, shapes, kind, *params = CASES[name]
    _check(Fn(fn, **(params[0] if params else {})).eval(), shapes, layout, export=True, kind=kind)


class RankOneAfterConv(nn.Module):
    """A [C] parameter times conv output: PyTorch broadcasts it along W (the last axis), not C."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 5, 1)
        self.w = nn.Parameter(torch.randn(5))  # W == C: a wrong axis gives wrong numbers, not a shape error

    def forward(self, x):
        return self.conv(x) * self.w + torch.arange(5.0)


class Attention(nn.Module):
    """nn.MultiheadAttention (traced: its fast path, aten::_native_multi_head_attention; exported:
    scaled_dot_product_attention), SDPA with a causal and a constant bool mask, unsqueeze/squeeze/unflatten."""

    def __init__(self):
        super().__init__()
        self.mha = nn.MultiheadAttention(8, 2, batch_first=True)
        self.register_buffer("mask", torch.rand(5, 5) > 0.3, persistent=False)
        self.mask.fill_diagonal_(True)

    def forward(self, x):
        y = self.mha(x, x, x, need_weights=False)[0]
        q = x.unflatten(-1, (2, 4)).transpose(1, 2)
        a = F.scaled_dot_product_attention(q, q * 0.5, q + 1, is_causal=True)
        b = F.scaled_dot_product_attention(q, q, q, attn_mask=self.mask, scale=0.3)
        return y, a, b, x.unsqueeze(1).squeeze(1).unsqueeze(-1).squeeze()


class Embedding(nn.Module):
    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(10, 4)

    def forward(self, x):
        return self.emb((x.abs() * 3).clamp(max=9.0).long())


@pytest.mark.parametrize("model,shape,export", [(Attention, (2, 5, 8), False), (Embedding, (2, 3), False),
                                                (Embedding, (2, 3), True)])
def test_attention_and_embedding(model, shape, export):
    torch.manual_seed(0)
    _check(model().eval(), [shape], "NCHW", export=export)


class Recurrent(nn.Module):
    def __init__(self, **kw):
        super().__init__()
        self.lstm, self.gru = nn.LSTM(4, 6, **kw), nn.GRU(4, 3, **kw)

    def forward(self, x):
        y, (h, _) = self.lstm(x)
        z, hg = self.gru(x)
        return y, h, z, hg


@pytest.mark.parametrize("export", [False, True])
@pytest.mark.parametrize("kw", [dict(batch_first=True), dict(num_layers=2, bidirectional=True),
                                dict(bias=False, bidirectional=True, batch_first=True)], ids=["bf", "2bi", "nobias"])
def test_lstm_gru(kw, export):
    torch.manual_seed(0)
    _check(Recurrent(**kw).eval(), [(2, 3, 4)], "NCHW", export=export)


class CellState(nn.Module):
    def __init__(self):
        super().__init__()
        self.lstm = nn.LSTM(4, 6)

    def forward(self, x):
        return self.lstm(x)[1][1] * 2


def test_lstm_cell_state_use_is_named():
    with pytest.raises(mera.UnsupportedError, match=r"c_n of aten::lstm at test_torch_tensor_ops.py:\d+"):
        with torch.no_grad():
            mera.frontend.from_pytorch(torch.jit.trace(CellState().eval(), torch.randn(3, 2, 4)),
                                       [("input0", (3, 2, 4))])


@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
def test_rank1_constant_broadcasts_along_w_in_both_layouts(layout):
    _check(RankOneAfterConv().eval(), [(1, 3, 4, 5)], layout)


class SegOcrHead(nn.Module):
    """Ops of segmentation and OCR heads together: group/instance norm after a conv, resizes, a CRNN-style
    [T, N, C] log_softmax, F.normalize, a clamp by a computed 0-d bound."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.gn, self.inorm = nn.GroupNorm(2, 4), nn.InstanceNorm2d(4, affine=True)

    def forward(self, x):
        y = self.inorm(self.gn(self.conv(x)))
        y = F.interpolate(y, size=(8, 10), mode="nearest") + F.interpolate(y, scale_factor=2, mode="bilinear")
        return y, y.flatten(2).permute(2, 0, 1).log_softmax(2), F.normalize(y, dim=1), torch.clamp(y, min=y.mean())


@pytest.mark.parametrize("export", [False, True])
@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
def test_segmentation_ocr_head(layout, export):
    torch.manual_seed(0)
    _check(SegOcrHead().eval(), [(1, 3, 4, 5)], layout, export=export)


class Dicts(nn.Module):
    def forward(self, x):
        return {"boxes": x[:, :2] * 2, "scores": x.sigmoid().amax(1), "logits": x}


def test_dict_outputs_flatten_in_insertion_order():
    x = torch.randn(1, 4, 3, 5)
    with torch.no_grad():
        traced = torch.jit.trace(Dicts(), x, strict=False)
    mod, params = mera.frontend.from_pytorch(traced, [("input0", x.shape)])
    outs = mera.compile(mod, params, target="Interpreter")(x.numpy())
    ref = Dicts()(x)
    assert [o.shape for o in outs] == [tuple(v.shape) for v in ref.values()]
    np.testing.assert_allclose(outs[1], ref["scores"].numpy(), rtol=1e-6)


class Downstream(nn.Module):
    def forward(self, x):
        g = F.affine_grid(torch.eye(2, 3).unsqueeze(0), [1, 3, 4, 4], align_corners=False)
        y = F.grid_sample(x, g, align_corners=False)
        z = torch.fft.fft(y).real
        return torch.fft.fft(z * 2).real + 1


@pytest.mark.parametrize("export", [False, True])
def test_unsupported_ops_downstream_of_each_other_are_all_listed(export):
    x = torch.randn(1, 3, 4, 4)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        src = torch.export.export(Downstream(), (x,)) if export else torch.jit.trace(Downstream(), x)
    with pytest.raises(mera.UnsupportedError) as e:
        mera.frontend.from_pytorch(src, [("input0", (1, 3, 4, 4))])
    msg = str(e.value)
    assert "aten::grid_sampler (1 use)" in msg
    assert "aten::fft_fft (2 uses)" in msg
    assert "aten::real (2 uses)" in msg
    assert msg.count("test_torch_tensor_ops.py:") >= 3  # each with the user's line


def test_bad_arguments_name_the_op():
    with pytest.raises(mera.UnsupportedError, match="aten::index.*2 index tensors"):
        _import(Fn(lambda m, x: x[:, m.i, m.i], i=torch.tensor([0, 1])).eval())
    with pytest.raises(mera.UnsupportedError, match="aten::__and__: bitwise and of a int64 tensor"):
        _import(Fn(lambda m, x: x * (x.long() & m.i).float(), i=torch.tensor([1, 2, 3, 4, 5])).eval())


def _import(model):
    x = torch.randn(*X)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(model, x)
    return mera.frontend.from_pytorch(traced, [("input0", X)])

"""Building blocks, deterministic initialisation and warning hygiene shared by the model zoo.

Everything here is private to :mod:`mera.models`; the public surface is re-exported from
``mera/models/__init__.py``.
"""

from __future__ import annotations

import contextlib
import warnings
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn

import torch.ao.quantization as tq

__all__ = [
    "INPUT_SHAPES", "input_shape", "make_divisible", "Conv2dNormActivation", "replace_relu", "fuse",
    "quiet_torch_deprecations", "smooth_noise", "build", "count_parameters",
]

# Input shape (N, C, H, W) each zoo model is built, calibrated and traced for.  Inception-v3 is the only
# family whose stem (three unpadded 3x3 convs and two unpadded pools) is designed around 299x299.
INPUT_SHAPES: Dict[str, Tuple[int, int, int, int]] = {
    "resnet18": (1, 3, 224, 224),
    "resnet50": (1, 3, 224, 224),
    "resnext50_32x4d": (1, 3, 224, 224),
    "mobilenet_v2": (1, 3, 224, 224),
    "mobilenet_v3_large": (1, 3, 224, 224),
    "shufflenet_v2_x1_0": (1, 3, 224, 224),
    "googlenet": (1, 3, 224, 224),
    "inception_v3": (1, 3, 299, 299),
    # segmentation (mera.models.TASK_MODELS): small inputs keep the tests quick; any H, W works
    "lraspp_mobilenet_v3_large": (1, 3, 128, 128),
    "deeplabv3_mobilenet_v3_large": (1, 3, 128, 128),
    "unet": (1, 3, 128, 128),
}


def input_shape(name: str) -> Tuple[int, int, int, int]:
    """Return the NCHW input shape (batch 1) a zoo model expects.

    Parameters
    ----------
    name : str
        Model name, a key of :data:`mera.models.MODELS` or :data:`mera.models.TASK_MODELS`.

    Returns
    -------
    tuple of int
        ``(1, 3, 224, 224)`` for the classifiers, ``(1, 3, 299, 299)`` for ``"inception_v3"``; the
        task models' own shapes (``(1, 3, 128, 128)`` for the segmenters).

    Raises
    ------
    KeyError
        If `name` is not a zoo model.
    """
    try:
        return INPUT_SHAPES[name]
    except KeyError:
        raise KeyError(f"unknown model {name!r}; known models: {', '.join(INPUT_SHAPES)}") from None


def make_divisible(value: float, divisor: int = 8, min_value: Optional[int] = None) -> int:
    """Round a channel count to the nearest multiple of `divisor`, never dropping more than 10 %.

    This is the channel-rounding rule of the MobileNet reference implementations; the channel counts of
    MobileNetV2/V3 (and so their parameter counts) depend on it.
    """
    if min_value is None:
        min_value = divisor
    rounded = max(min_value, int(value + divisor / 2) // divisor * divisor)
    if rounded < 0.9 * value:  # rounding down by more than 10 % would starve the layer
        rounded += divisor
    return rounded


class Conv2dNormActivation(nn.Sequential):
    """``Conv2d`` -> norm -> activation as an ``nn.Sequential`` with children ``"0"``, ``"1"``, ``"2"``.

    Mirrors ``torchvision.ops.misc.Conv2dNormActivation``: the numbered children are what the MobileNet
    ``fuse_model`` methods address, and the conv has a bias only when there is no norm layer to absorb it.

    Parameters
    ----------
    in_channels, out_channels : int
        Channel counts of the convolution.
    kernel_size, stride, groups, dilation : int
        Convolution geometry; padding is ``(kernel_size - 1) // 2 * dilation`` ("same" for odd kernels).
    norm_layer : callable or None
        Norm constructor taking the channel count; ``None`` for no norm (and a biased conv).
    activation_layer : callable or None
        Activation constructor; called with ``inplace=inplace``. ``None`` for no activation.
    inplace : bool
        Passed to the activation constructor, as torchvision does.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 3,
        stride: int = 1,
        groups: int = 1,
        norm_layer: Optional[Callable[..., nn.Module]] = nn.BatchNorm2d,
        activation_layer: Optional[Callable[..., nn.Module]] = nn.ReLU,
        dilation: int = 1,
        inplace: bool = True,
    ) -> None:
        padding = (kernel_size - 1) // 2 * dilation
        layers: List[nn.Module] = [
            nn.Conv2d(in_channels, out_channels, kernel_size, stride, padding, dilation=dilation, groups=groups,
                      bias=norm_layer is None)
        ]
        if norm_layer is not None:
            layers.append(norm_layer(out_channels))
        if activation_layer is not None:
            layers.append(activation_layer(inplace=inplace))
        super().__init__(*layers)
        self.out_channels = out_channels


def replace_relu(module: nn.Module) -> None:
    """Replace every ``nn.ReLU`` / ``nn.ReLU6`` (exact type) below `module` by ``nn.ReLU(inplace=False)``.

    This is what torchvision's quantizable factories do before quantizing: eager-mode fusion only knows
    Conv+BN+ReLU (not ReLU6), and an in-place ReLU would clobber a tensor an observer still has to see.
    Exact-type matching leaves subclasses and fused modules alone.
    """
    for name, child in list(module.named_children()):
        replace_relu(child)
        if type(child) is nn.ReLU or type(child) is nn.ReLU6:
            module._modules[name] = nn.ReLU(inplace=False)


def fuse(module: nn.Module, modules_to_fuse: Union[List[str], List[List[str]]], is_qat: bool = False) -> None:
    """Fuse submodules of `module` in place (Conv+BN, Conv+BN+ReLU, Conv+ReLU, ...).

    Parameters
    ----------
    module : nn.Module
        The parent whose children (by name) are fused.
    modules_to_fuse : list of str or list of list of str
        One group of child names, or several groups.
    is_qat : bool
        ``True`` keeps BatchNorm as a trainable part of the fused module (for quantization-aware training);
        ``False`` folds BN into the conv weights, which is what post-training quantization wants.
    """
    method = tq.fuse_modules_qat if is_qat else tq.fuse_modules
    with quiet_torch_deprecations():
        method(module, modules_to_fuse, inplace=True)


def imagenet_transform_input(x: Tensor) -> Tensor:
    """GoogLeNet's and Inception-v3's ``transform_input``: ImageNet-normalised input to the (x - 0.5) / 0.5
    normalisation their original weights were trained with."""
    x_ch0 = torch.unsqueeze(x[:, 0], 1) * (0.229 / 0.5) + (0.485 - 0.5) / 0.5
    x_ch1 = torch.unsqueeze(x[:, 1], 1) * (0.224 / 0.5) + (0.456 - 0.5) / 0.5
    x_ch2 = torch.unsqueeze(x[:, 2], 1) * (0.225 / 0.5) + (0.406 - 0.5) / 0.5
    return torch.cat((x_ch0, x_ch1, x_ch2), 1)


class QuantizableBasicConv2d(nn.Module):
    """Bias-free conv, BN (eps 1e-3), ReLU (GoogLeNet and Inception-v3); fusable into one ``ConvReLU2d``."""

    def __init__(self, in_channels: int, out_channels: int, **kwargs: Any) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, bias=False, **kwargs)
        self.bn = nn.BatchNorm2d(out_channels, eps=0.001)
        self.relu = nn.ReLU()

    def forward(self, x: Tensor) -> Tensor:
        return self.relu(self.bn(self.conv(x)))

    def fuse_model(self, is_qat: bool = False) -> None:
        fuse(self, ["conv", "bn", "relu"], is_qat)


@contextlib.contextmanager
def quiet_torch_deprecations() -> Iterator[None]:
    """Silence the known, expected deprecation chatter of eager quantization and ``torch.jit.trace``.

    torch 2.13 announces the deprecation of ``torch.ao.quantization``, of quantized-tensor creation, of
    ``reduce_range`` (once per observer, i.e. hundreds of lines per model) and of ``torch.jit.trace``.  Only
    those exact messages are filtered, and only for the duration of the ``with`` block, so any other
    warning (and these ones, raised by the user's own code) still gets through.
    """
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"torch\.ao\.quantization is deprecated",
                                category=DeprecationWarning)
        warnings.filterwarnings("ignore", message=r"Please use quant_min and quant_max to specify the range",
                                category=UserWarning)
        warnings.filterwarnings("ignore", message=r"torch\.quantize_per_tensor, torch\.quantize_per_channel and "
                                r"other quantized tensor creation functions", category=UserWarning)
        warnings.filterwarnings("ignore", message=r"`torch\.jit\.trace(_method)?` is deprecated",
                                category=DeprecationWarning)
        yield


def smooth_noise(shape: Sequence[int], generator: torch.Generator, dtype: torch.dtype = torch.float32) -> Tensor:
    """Seeded random images with image-like spatial correlation, standardised per sample.

    White noise is a poor stand-in for images: after a few strided convs its statistics collapse.  A
    coarse random field (1/8 resolution, bilinearly upsampled) plus some fine-grained noise gives both low
    and high spatial frequencies, and per-sample standardisation gives the mean 0 / std 1 range of
    ImageNet-normalised inputs.

    Parameters
    ----------
    shape : sequence of int
        ``(N, C, H, W)``.
    generator : torch.Generator
        Source of randomness; the result is a pure function of its state.
    dtype : torch.dtype
        Output dtype; the noise is generated in float64 either way so float32 results are reproducible.
    """
    n, c, h, w = shape
    coarse = torch.randn(n, c, h // 8 + 1, w // 8 + 1, generator=generator, dtype=torch.float64)
    x = F.interpolate(coarse, size=(h, w), mode="bilinear", align_corners=False)
    x = x + 0.5 * torch.randn(n, c, h, w, generator=generator, dtype=torch.float64)
    x = (x - x.mean(dim=(1, 2, 3), keepdim=True)) / x.std(dim=(1, 2, 3), keepdim=True)
    return x.to(dtype)


ConvInit = Callable[[nn.Conv2d], None]


def kaiming_fan_out(conv: nn.Conv2d) -> None:
    """torchvision's conv init for ResNet and MobileNet: He-normal, fan-out mode, ReLU gain."""
    nn.init.kaiming_normal_(conv.weight, mode="fan_out", nonlinearity="relu")


def _randomise_affine_and_biases(model: nn.Module) -> None:
    """Give BN affine parameters, linear layers and conv biases non-trivial random values.

    torchvision leaves BN at weight 1 / bias 0 and biases at 0; with those a folded Conv+BN is just the
    conv, and the per-channel requantization and the bias quantization would hardly be exercised.

    BN biases are drawn around +1 (with BN weights in [0.5, 1.5]), so a following ReLU passes ~80 % of
    its input instead of half.  A random BN+ReLU network with mean-subtracting BN and zero-mean BN bias
    is chaotic: the data-derived running mean removes the ReLU's DC part and renormalisation then
    amplifies any perturbation ~1.5x per layer relative to the signal, so int8 rounding noise swamps
    the input-dependent part of the output of a 50-layer net (measured: quantized-vs-float correlation
    of the input-dependent logits ~0.35 for ResNet-50/MobileNetV2/ShuffleNetV2).  With the bias around
    +1 the gain is ~1.1 per layer and that correlation is ~0.9 or better for every zoo model.
    """
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.weight.uniform_(0.5, 1.5)
                m.bias.normal_(1.0, 0.25)
                # Fallback statistics, kept only by BN layers the statistics pass never reaches (the
                # auxiliary heads, which only run in training mode).
                m.running_mean.normal_(0.0, 0.1)
                m.running_var.uniform_(0.5, 1.5)
            elif isinstance(m, nn.Linear):
                m.weight.normal_(0.0, m.in_features ** -0.5)
                m.bias.normal_(0.0, 0.01)
            elif isinstance(m, nn.Conv2d) and m.bias is not None:
                m.bias.normal_(0.0, 0.05)


def _set_statistics(model: nn.Module, images: Tensor) -> None:
    """Data-dependent part of the initialisation: BN running statistics and linear-layer centring.

    *BN*: each reached BN layer's running mean / variance are set to those of its input on `images`.
    With random weights and made-up statistics, activations drift by a constant factor per layer (e.g.
    fan-out He init shrinks depthwise-conv outputs ~sqrt(channels)-fold) and residual sums double their
    variance per block, so deep nets end up all-zero or astronomically large.  With the statistics a
    trained network would have accumulated on such inputs, every BN output stays at roughly
    ``weight * N(0, 1) + bias`` per channel, through any depth.  The variance is floored at 10 % of the
    layer's median so a channel that happens to be near-constant on `images` cannot be blown up on
    other inputs.

    *Linear*: each reached linear layer's bias is set so its output is centred on `images`, and its
    weight scaled so the output has unit std.  Global average pooling of random features concentrates:
    the pooled features are ~95 % input-independent mean, so uncentred logits are nearly the same
    vector for every input and a float-vs-quantized cosine similarity would say little.  Centred, the
    logits are dominated by their input-dependent part, like a trained classifier's.

    The pass runs in float64, so the float32 results do not depend on the thread count or on which
    float32 kernels the CPU picks (a float64 difference would have to straddle a float32 rounding
    boundary to show).
    Every layer stays in eval mode: forward pre-hooks set the statistics just before the layer uses
    them, so each later layer sees the already-normalised output of the earlier ones.
    """

    def bn_hook(bn: nn.BatchNorm2d, args: Tuple[Tensor, ...]) -> None:
        x = args[0]
        var = x.var(dim=(0, 2, 3), unbiased=True)
        bn.running_mean.copy_(x.mean(dim=(0, 2, 3)))
        bn.running_var.copy_(var.clamp_min(0.1 * var.median()))

    def linear_hook(fc: nn.Linear, args: Tuple[Tensor, ...]) -> None:
        x = args[0]
        mu = x.mean(dim=0)
        std = ((x - mu) @ fc.weight.T).std()
        if std > 0:  # identical inputs (a batch of one): leave the layer alone
            fc.weight.div_(std)
        fc.bias.sub_(fc.weight @ mu)

    handles = [m.register_forward_pre_hook(bn_hook) for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    handles += [m.register_forward_pre_hook(linear_hook) for m in model.modules() if isinstance(m, nn.Linear)]
    try:
        model.double().eval()
        with torch.no_grad():
            model(images.double())
    finally:
        for h in handles:
            h.remove()
        model.float()


def build(
    name: str,
    constructor: Callable[[], nn.Module],
    seed: int,
    quantize: bool,
    conv_init: Optional[ConvInit] = kaiming_fan_out,
    pretrained: bool = False,
) -> nn.Module:
    """Construct, initialise and (optionally) quantize a zoo model deterministically.

    Steps, all seeded by `seed` inside a forked RNG so the caller's global RNG state is untouched:

    1. ``constructor()`` builds the quantizable model (PyTorch default init).
    2. ``replace_relu``, as torchvision's quantizable factories do.
    3. ``conv_init`` (the family's torchvision init) on every ``nn.Conv2d``; ``None`` keeps the default.
    4. Random BN affine / linear / bias values (:func:`_randomise_affine_and_biases`).
    5. BN running statistics and linear-layer centring from a float64 pass over seeded image-like noise
       (:func:`_set_statistics`).
    6. If `quantize`, post-training static quantization on seeded calibration inputs
       (:func:`mera.models.ptq.quantize_ptq`).

    Returns
    -------
    nn.Module
        The model in eval mode.
    """
    if pretrained:
        # torchvision's signature, so MERA's documented scripts run unchanged; there is no model hub
        # here, so say plainly what the user gets instead.
        warnings.warn(f"mera.models.{name}: pretrained ImageNet weights are not available (no model hub); "
                      f"using seeded random weights (seed={seed})", UserWarning, stacklevel=3)
    shape = input_shape(name)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = constructor()
        replace_relu(model)
        if conv_init is not None:
            for m in model.modules():
                if isinstance(m, nn.Conv2d):
                    conv_init(m)
        _randomise_affine_and_biases(model)
    # Separate generator (and a seed offset) so the statistics batch differs from the default
    # calibration batches of ptq.calibration_data(name, seed=seed).
    gen = torch.Generator().manual_seed(seed + 0x5EED)
    _set_statistics(model, smooth_noise((2,) + tuple(shape[1:]), gen, dtype=torch.float64))
    model.eval()
    if quantize:
        from .ptq import calibration_data, quantize_ptq  # deferred: ptq imports this module

        quantize_ptq(model, calibration_data(name, n=2, seed=seed))
    return model


def count_parameters(model: nn.Module) -> int:
    """Number of elements in all parameters of a float model (quantized models keep weights in packed
    buffers and report none)."""
    return sum(p.numel() for p in model.parameters())

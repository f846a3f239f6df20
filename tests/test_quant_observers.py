"""Calibration observers (csrc/quant/observer.c through mera._core.Observer).

MINMAX and HISTOGRAM must give PyTorch's qparams exactly (MinMaxObserver,
HistogramObserver(bins=2048) for quint8 per-tensor affine); PERCENTILE must
agree with numpy.percentile to within half a bin; ENTROPY and MSE are checked
by the properties they exist for: clipping outliers, keeping the range of data
without them, and a measured quantization error no worse than min/max.
"""

import warnings

import numpy as np
import pytest
import torch
from torch.ao.quantization import HistogramObserver, MinMaxObserver

from mera import errors
from mera._core import Observer

KINDS = ["minmax", "percentile", "histogram", "entropy", "mse"]


def distribution(name: str, rng: np.random.Generator, n: int) -> np.ndarray:
    if name == "gaussian":
        return rng.normal(0.2, 1.3, n)
    if name == "relu":
        return np.maximum(rng.normal(0.1, 1.0, n), 0.0)
    if name == "heavy":
        return rng.standard_t(2, n)
    if name == "outliers":
        x = rng.normal(0, 1, n)
        x[rng.integers(0, n, 3)] = rng.normal(0, 60, 3)
        return x
    if name == "constant":
        return np.full(n, -0.75)
    if name == "tiny":
        return 3e-6 + 1e-6 * rng.normal(0, 1, n)
    if name == "negative":
        return -np.abs(rng.normal(0, 2, n))
    if name == "steps":  # many exact ties, on bin edges
        return rng.integers(-6, 20, n) * 0.25
    raise ValueError(name)


DISTRIBUTIONS = ["gaussian", "relu", "heavy", "outliers", "constant", "tiny", "negative", "steps"]


def f32(x) -> np.ndarray:
    return np.asarray(x, dtype=np.float32)


def torch_histogram_qparams(batches):
    obs = HistogramObserver(bins=2048, dtype=torch.quint8, qscheme=torch.per_tensor_affine)
    for x in batches:
        obs(torch.from_numpy(x))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        scale, zp = obs.calculate_qparams()
    return float(scale), int(zp)


def mera_qparams(kind, batches, **kw):
    obs = Observer(kind=kind, **kw)
    for x in batches:
        obs.update(x)
    return obs.qparams()


def fake_quant_mse(x, scale, zp, qmin=0, qmax=255) -> float:
    x = x.astype(np.float64)
    q = np.clip(np.round(x / scale) + zp, qmin, qmax)
    return float(np.mean((x - (q - zp) * scale) ** 2))


# ---- MINMAX and the qparams formula --------------------------------------------


@pytest.mark.parametrize("seed", range(4))
def test_minmax_matches_torch(seed):
    rng = np.random.default_rng(seed)
    batches = [f32(distribution(DISTRIBUTIONS[(seed + i) % 8], rng, int(rng.integers(1, 5000))) * rng.uniform(0.1, 9))
               for i in range(5)]
    ref = MinMaxObserver(dtype=torch.quint8, qscheme=torch.per_tensor_affine)
    obs = Observer(kind="minmax")
    for x in batches:
        ref(torch.from_numpy(x))
        obs.update(x)
    scale, zp = ref.calculate_qparams()
    assert obs.qparams() == (float(scale), int(zp))
    allx = np.concatenate(batches)
    assert obs.minmax() == (float(allx.min()), float(allx.max()))
    assert obs.count == allx.size
    lo, hi = obs.range()
    assert (lo, hi) == (min(float(allx.min()), 0.0), max(float(allx.max()), 0.0))


@pytest.mark.parametrize("dtype,qmin,qmax", [(torch.quint8, 0, 255), (torch.qint8, -128, 127), (torch.quint8, 0, 15)])
def test_qparams_from_range_matches_torch(dtype, qmin, qmax):
    rng = np.random.default_rng(qmax)
    ref = MinMaxObserver(dtype=dtype, qscheme=torch.per_tensor_affine, quant_min=qmin, quant_max=qmax)
    pairs = []
    for _ in range(1500):
        a, b = np.sort(rng.normal(0, 1, 2) * 10.0 ** rng.uniform(-9, 6, 2))
        pairs.append((a, b))
    # edges: zero-width, one-sided, below eps * levels, a zero point on a rounding tie
    pairs += [(0.0, 0.0), (2.0, 2.0), (-3.0, -3.0), (1e-9, 2e-9), (-1e-8, 1e-8), (0.0, 1.0), (-1.0, 0.0),
              (-0.5, 254.5), (-1.5, 1.5), (-1e30, 1e30), (-7.0, 1e-6)]
    for a, b in pairs:
        lo, hi = np.float32(a), np.float32(b)
        scale, zp = ref._calculate_qparams(torch.tensor(lo), torch.tensor(hi))
        obs = Observer(kind="minmax", qmin=qmin, qmax=qmax)
        obs.update(f32([lo, hi]))
        assert obs.qparams() == (float(scale), int(zp)), (lo, hi)


# ---- HISTOGRAM: PyTorch's HistogramObserver -------------------------------------


@pytest.mark.parametrize("name", DISTRIBUTIONS)
def test_histogram_matches_torch_single_batch(name):
    rng = np.random.default_rng(len(name))
    for n in (1, 7, 3000, 40000):
        x = f32(distribution(name, rng, n))
        assert mera_qparams("histogram", [x]) == torch_histogram_qparams([x]), (name, n)


@pytest.mark.parametrize("seed", range(6))
def test_histogram_matches_torch_multi_batch(seed):
    """Batches whose ranges grow (re-binning the float32 histogram), shrink
    and repeat, with a one-value batch first for half of the seeds."""
    rng = np.random.default_rng(100 + seed)
    batches = [f32(np.full(5, 0.5))] if seed % 2 else []
    for i in range(int(rng.integers(4, 12))):
        name = DISTRIBUTIONS[int(rng.integers(0, len(DISTRIBUTIONS)))]
        x = distribution(name, rng, int(rng.integers(10, 20000))) * float(np.exp(rng.normal(0, 1)))
        batches.append(f32(x))
        if rng.uniform() < 0.3:
            batches.append(batches[-1][: len(batches[-1]) // 2])  # a repeat inside the range
    obs = Observer(kind="histogram")
    for x in batches:
        obs.update(x)
    assert obs.qparams() == torch_histogram_qparams(batches)


def test_histogram_edge_cases_match_torch():
    rng = np.random.default_rng(5)
    cases = [
        [f32([1.5])],
        [f32(np.zeros(64))],
        [f32(np.zeros(64)), f32(rng.normal(size=500))],
        [f32(np.full(50, 2.0)), f32(np.full(30, 2.0)), f32(rng.normal(2, 1, 500))],
        [f32(rng.normal(size=2000) * 1e9)],
        [f32(rng.normal(size=2000) * 1e-9)],
        [f32(1000 + rng.normal(size=3000) * 1e-3)],
        [f32(rng.normal(size=1000) * 10), f32(rng.normal(size=1000)), f32(rng.normal(size=1000) * 0.1)],
    ]
    for batches in cases:
        assert mera_qparams("histogram", batches) == torch_histogram_qparams(batches)


# ---- PERCENTILE -----------------------------------------------------------------


@pytest.mark.parametrize("seed", range(8))
def test_percentile_matches_numpy(seed):
    rng = np.random.default_rng(200 + seed)
    p = [99.99, 99.9, 99.0, 90.0][seed % 4]
    bins = [2048, 16, 256, 4096][seed // 2 % 4]
    batches = [f32(distribution(DISTRIBUTIONS[int(rng.integers(0, 8))], rng, int(rng.integers(1, 30000)))
                   * float(np.exp(rng.normal()))) for _ in range(int(rng.integers(1, 6)))]
    obs = Observer(kind="percentile", percentile=p, bins=bins)
    for x in batches:
        obs.update(x)
    allx = np.concatenate(batches).astype(np.float64)
    lo_ref = min(np.percentile(allx, 100 - p), 0.0)
    hi_ref = max(np.percentile(allx, p), 0.0)
    lo, hi = obs.range()
    bin_width = (allx.max() - allx.min()) / bins
    assert abs(lo - lo_ref) <= 0.5 * bin_width + 1e-6 * abs(lo_ref)
    assert abs(hi - hi_ref) <= 0.5 * bin_width + 1e-6 * abs(hi_ref)


def test_percentile_100_is_minmax():
    x = f32(np.random.default_rng(1).normal(size=5000))
    obs = Observer(kind="percentile", percentile=100.0)
    obs.update(x)
    assert obs.range() == (float(x.min()), float(x.max()))


# ---- the exact grid: batching does not matter ----------------------------------


@pytest.mark.parametrize("kind", ["percentile", "entropy", "mse"])
def test_grid_kinds_do_not_depend_on_batching(kind):
    """The grid histogram merges bins exactly when the range grows, so any
    split of the data into batches gives the same histogram and range."""
    rng = np.random.default_rng(9)
    x = f32(np.concatenate([rng.normal(0, 1, 30000), rng.standard_t(3, 2000) * 3, np.zeros(5000)]))
    rng.shuffle(x)
    whole = Observer(kind=kind)
    whole.update(x)
    order = np.argsort(np.abs(x))  # small values first: the range grows batch after batch
    for xs in (x[order], x):
        split = Observer(kind=kind)
        for part in np.array_split(xs, 13):
            split.update(part)
        assert split.range() == whole.range()


# ---- ENTROPY and MSE: properties -----------------------------------------------


@pytest.fixture(scope="module")
def gaussian_with_outliers():
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.normal(size=1_000_000), [-28.0, 27.0, -25.0, 30.0]])
    rng.shuffle(x)
    return f32(x)


@pytest.mark.parametrize("kind", ["entropy", "mse"])
def test_outliers_are_clipped(kind, gaussian_with_outliers):
    x = gaussian_with_outliers
    mm = Observer(kind="minmax")
    mm.update(x)
    obs = Observer(kind=kind)
    obs.update(x)
    lo, hi = obs.range()
    mm_lo, mm_hi = mm.range()
    assert hi - lo < 0.7 * (mm_hi - mm_lo)
    assert lo < -3.0 and hi > 3.0  # the body of the distribution stays
    assert fake_quant_mse(x, *obs.qparams()) < 0.8 * fake_quant_mse(x, *mm.qparams())


@pytest.mark.parametrize("kind", ["entropy", "mse"])
def test_uniform_keeps_the_range(kind):
    x = f32(np.random.default_rng(3).uniform(-1.0, 3.0, 200_000))
    obs = Observer(kind=kind)
    obs.update(x)
    lo, hi = obs.range()
    assert lo <= 0.98 * x.min() and hi >= 0.98 * x.max()


@pytest.mark.parametrize("kind", ["entropy", "mse"])
def test_relu_is_one_sided(kind):
    """Half the values are exact zeros: the range starts at 0 and the zero
    spike does not pull the threshold into the body."""
    x = f32(np.maximum(np.random.default_rng(4).normal(size=400_000), 0.0))
    obs = Observer(kind=kind)
    obs.update(x)
    lo, hi = obs.range()
    assert lo == 0.0
    assert 3.0 < hi <= x.max()
    mm = Observer(kind="minmax")
    mm.update(x)
    assert fake_quant_mse(x, *obs.qparams()) < fake_quant_mse(x, *mm.qparams())


def test_entropy_gaussian_threshold():
    """KL calibration of a wide Gaussian clips a little of the tails, not the body."""
    x = f32(np.random.default_rng(6).normal(size=1_000_000))
    obs = Observer(kind="entropy")
    obs.update(x)
    lo, hi = obs.range()
    assert lo == -hi  # searched on |x|
    assert 3.5 < hi < x.max()


@pytest.mark.parametrize("data", ["outliers", "skewed", "laplace"])
def test_mse_is_near_the_measured_optimum(data, gaussian_with_outliers):
    """The histogram's error model leads to a range whose measured error is
    within 3% of the best of many ranges measured on the data itself."""
    rng = np.random.default_rng(8)
    if data == "outliers":
        x = gaussian_with_outliers[:300_000]
    elif data == "skewed":
        x = f32(np.concatenate([rng.normal(size=300_000), rng.uniform(0, 60, 30)]))
    else:
        x = f32(rng.laplace(size=300_000))
    obs = Observer(kind="mse")
    obs.update(x)
    got = fake_quant_mse(x, *obs.qparams())
    lo0, hi0 = min(float(x.min()), 0.0), max(float(x.max()), 0.0)
    best = np.inf
    for f in np.linspace(0.02, 1.0, 50):
        for lo, hi in ((lo0 * f, hi0 * f), (lo0, hi0 * f), (lo0 * f, hi0)):
            ref = Observer(kind="minmax")
            ref.update(f32([lo, hi]))
            best = min(best, fake_quant_mse(x, *ref.qparams()))
    assert got <= 1.03 * best


# ---- degenerate data and errors ------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("value", [0.0, 3.5, -2.0, 1e-30])
def test_constant_data_gives_a_valid_range(kind, value):
    obs = Observer(kind=kind)
    obs.update(f32(np.full(100, value)))
    obs.update(f32([]))  # an empty update is fine
    lo, hi = obs.range()
    assert lo <= 0.0 <= hi and lo <= value <= hi
    scale, zp = obs.qparams()
    assert scale >= np.finfo(np.float32).eps and 0 <= zp <= 255


@pytest.mark.parametrize("kind", KINDS)
def test_non_finite_values_are_rejected_and_change_nothing(kind):
    obs = Observer(kind=kind)
    rng = np.random.default_rng(2)
    obs.update(f32(rng.normal(size=1000)))
    before = (obs.count, obs.minmax(), obs.range())
    for bad, where in ((np.nan, 17), (np.inf, 0), (-np.inf, 999)):
        x = f32(rng.normal(size=1000) * 100)  # would widen the range
        x[where] = bad
        with pytest.raises(errors.MeraError, match=f"non-finite value .* at index {where}") as e:
            obs.update(x)
        assert isinstance(e.value, ValueError)
        assert (obs.count, obs.minmax(), obs.range()) == before


def test_update_takes_any_shape_and_layout():
    x = f32(np.random.default_rng(3).normal(size=(6, 50, 7)))
    a, b = Observer(kind="histogram"), Observer(kind="histogram")
    a.update(np.ascontiguousarray(x.transpose(2, 0, 1)))
    b.update(x.transpose(2, 0, 1))  # not C-contiguous: copied
    assert a.count == b.count == x.size
    assert a.qparams() == b.qparams()
    c = Observer(kind="minmax")
    c.update(torch.from_numpy(x))  # anything with __array__
    assert c.minmax() == (float(x.min()), float(x.max()))
    d = Observer(kind="histogram")
    d.update(x.transpose(2, 0, 1).astype(">f4"))  # big-endian float32: byte-swapped copy
    assert d.qparams() == a.qparams()


@pytest.mark.parametrize("bad", [np.zeros(4, np.float64), np.zeros(4, np.int32), [1.0, 2.0], np.zeros(3, np.float16)])
def test_wrong_dtype(bad):
    obs = Observer()
    with pytest.raises(errors.DtypeError, match="float32.*got " + str(np.asarray(bad).dtype)):
        obs.update(bad)
    assert obs.count == 0


@pytest.mark.parametrize("kwargs,field", [
    ({"kind": "kl"}, "kind"),
    ({"bins": 15}, "bins"),
    ({"bins": 0}, "bins"),
    ({"percentile": 50.0}, "percentile"),
    ({"percentile": 100.5}, "percentile"),
    ({"percentile": float("nan")}, "percentile"),
    ({"qmin": 5, "qmax": 5}, "qmin"),
])
def test_bad_config(kwargs, field):
    with pytest.raises(errors.ConfigError, match=field):
        Observer(**kwargs)


@pytest.mark.parametrize("kind", KINDS)
def test_range_before_any_update(kind):
    obs = Observer(kind=kind)
    assert obs.count == 0 and obs.minmax() == (0.0, 0.0) and obs.kind == kind
    with pytest.raises(errors.MeraError, match="no values observed"):
        obs.range()
    with pytest.raises(ValueError, match="no values observed"):
        obs.qparams()

"""Charts of a Simulator run (matplotlib, the ``plot`` extra).

::

    rep = runner.layer_report()
    fig = mera.plots.profile_figure(rep, runner.platform)   # latency, MAC utilization, roofline
    fig.savefig("layers.png")

Every function takes a :class:`mera.profiling.LayerReport` and draws on a
new matplotlib ``Figure`` (no pyplot state, so it works headless and in
notebooks alike) or on the ``ax`` given.

- :func:`latency_chart`: one bar per layer, its time in µs, coloured by
  what bounds it (compute, memory, host);
- :func:`utilization_chart`: each DNA layer's MAC utilization, and the
  model's as a line;
- :func:`roofline`: each DNA layer at (arithmetic intensity, achieved
  GOPS) under the platform's roof: peak compute (2 x MACs x clock) and
  DRAM bandwidth (``dram_gbps``).
"""

from __future__ import annotations

import base64
import io
import math
from typing import Any, Dict, List, Mapping, Tuple

from .errors import MeraIOError, UnsupportedError

#: Bar colours by what bounds a layer.
COLORS = {"compute": "#2b6cb0", "memory": "#dd6b20", "host": "#718096"}

#: Roofline points labelled with their layer's name (the layers that take the most time).
ROOFLINE_LABELS = 8

#: Layers drawn at most in the per-layer charts (the slowest ones when a model has more).
MAX_BARS = 60


def _matplotlib() -> Any:
    try:
        from matplotlib.figure import Figure
    except ImportError:
        raise UnsupportedError("plots need matplotlib: pip install 'mera[plot]'") from None
    return Figure


def _bound(d: Mapping[str, Any]) -> str:
    if not d["on_dna"]:
        return "host"
    return "memory" if d["memory_bound"] else "compute"


def _timed_layers(report: List[Mapping[str, Any]], limit: int = MAX_BARS) -> Tuple[List[Mapping[str, Any]], int]:
    """Layers that take time, in graph order; at most ``limit`` (the slowest). Returns (layers, left out)."""
    timed = [(i, d) for i, d in enumerate(report) if d["us"] > 0]
    if len(timed) > limit:
        keep = {i for i, _ in sorted(timed, key=lambda t: -t[1]["us"])[:limit]}
        kept = [d for i, d in timed if i in keep]
        return kept, len(timed) - limit
    return [d for _, d in timed], 0


def _label(name: str, width: int = 28) -> str:
    return name if len(name) <= width else "..." + name[-(width - 3):]


def _new_axes(ax: Any, height: float) -> Any:
    if ax is not None:
        return ax
    fig = _matplotlib()(figsize=(8.5, height), layout="constrained")
    return fig.add_subplot()


def latency_chart(report: Any, ax: Any = None) -> Any:
    """Horizontal bars: each layer's time (µs), coloured compute / memory / host bound. Returns the axes."""
    layers, left = _timed_layers(report)
    ax = _new_axes(ax, max(3.0, 0.22 * len(layers) + 1.2))
    y = list(range(len(layers)))
    ax.barh(y, [d["us"] for d in layers], color=[COLORS[_bound(d)] for d in layers])
    ax.set_yticks(y, [_label(d["node"]) for d in layers], fontsize=7)
    ax.invert_yaxis()
    ax.set_xlabel("time (µs)")
    title = "Per-layer latency"
    if left:
        title += f" (the {len(layers)} slowest layers; {left} more not shown)"
    ax.set_title(title)
    from matplotlib.patches import Patch
    ax.legend(handles=[Patch(color=c, label=f"{k} bound" if k != "host" else "on the host")
                       for k, c in COLORS.items()], loc="lower right", fontsize=8)
    ax.grid(axis="x", alpha=0.3)
    return ax


def utilization_chart(report: Any, ax: Any = None) -> Any:
    """Bars: the MAC utilization (%) of each DNA layer that does MACs; a line at the model's. Returns the axes."""
    layers = [d for d in _timed_layers(report)[0] if d["on_dna"] and d["macs"]]
    ax = _new_axes(ax, max(3.0, 0.22 * len(layers) + 1.2))
    y = list(range(len(layers)))
    ax.barh(y, [100 * d["mac_utilization"] for d in layers], color=[COLORS[_bound(d)] for d in layers])
    ax.set_yticks(y, [_label(d["node"]) for d in layers], fontsize=7)
    ax.invert_yaxis()
    ax.set_xlim(0, 100)
    ax.set_xlabel("MAC utilization (%)")
    overall = 100 * getattr(report, "mac_utilization", 0.0)
    ax.axvline(overall, color="black", linestyle="--", linewidth=1, label=f"whole model {overall:.1f}%")
    ax.legend(loc="lower right", fontsize=8)
    ax.set_title("MAC utilization per layer")
    ax.grid(axis="x", alpha=0.3)
    return ax


def roofline_points(report: Any) -> List[Dict[str, Any]]:
    """Per DNA layer with MACs and DRAM traffic: ``node``, ``intensity`` (ops per DRAM byte, an
    op being half a MAC), ``gops`` achieved over the layer's time, ``us`` and ``bound``."""
    out = []
    for d in report:
        nbytes = int(d["load_bytes"]) + int(d["store_bytes"])
        if d["on_dna"] and d["macs"] and nbytes and d["us"] > 0:
            ops = 2.0 * int(d["macs"])
            out.append({"node": d["node"], "intensity": ops / nbytes, "gops": ops / (d["us"] * 1e3),
                        "bound": _bound(d), "us": d["us"]})
    return out


def roof(platform: Mapping[str, Any]) -> Tuple[float, float]:
    """(peak GOPS, DRAM GB/s) of a platform: 2 x MACs x clock, and ``dram_gbps``."""
    peak = 2.0 * int(platform["mac_count"]) * float(platform["clock_mhz"]) / 1e3
    return peak, float(platform["dram_gbps"])


def roofline(report: Any, platform: Mapping[str, Any], ax: Any = None) -> Any:
    """Each DNA layer at (ops per DRAM byte, achieved GOPS), log-log, under the platform's roof. Returns the axes."""
    ax = _new_axes(ax, 5.0)
    peak, bw = roof(platform)
    pts = roofline_points(report)
    ridge = peak / bw
    lo = min([p["intensity"] for p in pts] + [ridge / 10]) / 2
    hi = max([p["intensity"] for p in pts] + [ridge * 10]) * 2
    xs = [lo, ridge, hi]
    ax.plot(xs, [min(peak, bw * x) for x in xs], color="black", linewidth=1.5,
            label=f"roof: {peak:.0f} GOPS peak, {bw:g} GB/s DRAM")
    for bound in ("compute", "memory"):
        sel = [p for p in pts if p["bound"] == bound]
        if sel:
            ax.scatter([p["intensity"] for p in sel], [p["gops"] for p in sel], s=18, color=COLORS[bound],
                       label=f"{bound}-bound layers", zorder=3)
    placed: List[Tuple[float, float]] = []
    for p in sorted(pts, key=lambda p: -p["us"])[:ROOFLINE_LABELS]:
        at = (math.log10(p["intensity"]), math.log10(p["gops"]))
        if any(abs(at[0] - q[0]) < 0.08 and abs(at[1] - q[1]) < 0.04 for q in placed):
            continue  # a label is there already (e.g. repeated layers of one shape)
        placed.append(at)
        ax.annotate(_label(p["node"], 22), (p["intensity"], p["gops"]), textcoords="offset points", xytext=(4, 3),
                    fontsize=6, color="#2d3748")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("arithmetic intensity (ops per DRAM byte)")
    ax.set_ylabel("achieved GOPS")
    ax.set_title(f"Roofline on {platform.get('name', 'the platform')}")
    ax.legend(loc="lower right", fontsize=8)
    ax.grid(which="both", alpha=0.3)
    return ax


def profile_figure(report: Any, platform: Mapping[str, Any]) -> Any:
    """One figure: latency and MAC utilization per layer side by side, the roofline below."""
    n = len(_timed_layers(report)[0])
    Figure = _matplotlib()
    fig = Figure(figsize=(14, max(4.0, 0.2 * n + 1.5) + 5.5), layout="constrained")
    grid = fig.add_gridspec(2, 2, height_ratios=[max(4.0, 0.2 * n + 1.5), 5.5])
    latency_chart(report, fig.add_subplot(grid[0, 0]))
    utilization_chart(report, fig.add_subplot(grid[0, 1]))
    roofline(report, platform, fig.add_subplot(grid[1, :]))
    t = getattr(report, "total", {})
    fig.suptitle(f"{t.get('total_us', 0.0):.1f} µs in all (device {t.get('device_us', 0.0):.1f} µs, host "
                 f"{t.get('host_us', 0.0):.1f} µs) on {platform.get('name', '?')}", fontsize=11)
    return fig


def save(fig: Any, path: str) -> None:
    """Write ``fig`` to ``path``; the format follows the extension (.png, .svg, .pdf)."""
    try:
        fig.savefig(path, dpi=110)
    except OSError as e:
        raise MeraIOError(f"cannot write the plot '{path}': {e.strerror or e}") from None
    except ValueError as e:  # an unknown extension
        raise MeraIOError(f"cannot write the plot '{path}': {e}") from None


def png_base64(fig: Any) -> str:
    """``fig`` as a base64 PNG, for a data: URI."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90)
    return base64.b64encode(buf.getvalue()).decode("ascii")


__all__ = ["latency_chart", "utilization_chart", "roofline", "roofline_points", "roof", "profile_figure", "save",
           "png_base64"]

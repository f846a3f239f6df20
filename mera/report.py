"""HTML for notebooks and a self-contained profile report.

``LayerReport``, ``PartitionReport``, ``QualityReport``, the runners and ``DeployModule`` show
as HTML tables in Jupyter (their ``_repr_html_`` call the functions here).
:func:`profile_html` is the page ``mera profile --html`` writes: one file,
no external URL (styles inline, charts as base64 PNG), holding

1. the summary: model, target, platform, total / device / host time,
   device cycles, MAC utilization, DNA and host node counts;
2. the platform's figures (clock, MAC array, buffers, bandwidths);
3. the charts of :mod:`mera.plots` (per-layer latency, MAC utilization,
   roofline) when matplotlib is installed, else a line saying so;
4. the per-layer table (cycles, µs, MAC and vector cycles, utilization,
   bytes moved, bound);
5. the partition: every node, where it runs, its tiles and why.
"""

from __future__ import annotations

import html
import os
import time
from typing import Any, Iterable, List, Mapping, Optional, Sequence

STYLE = """
body{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:2em;color:#1a202c}
table.mera{border-collapse:collapse;font-size:13px;margin:0.5em 0 1.5em}
table.mera th,table.mera td{border:1px solid #cbd5e0;padding:2px 8px;text-align:left}
table.mera td.n{text-align:right;font-variant-numeric:tabular-nums}
table.mera tr.host td{color:#4a5568;background:#f7fafc}
table.mera th{background:#edf2f7}
img.chart{max-width:100%}
"""


def _e(x: Any) -> str:
    return html.escape(str(x), quote=True)


def table(headers: Optional[Sequence[str]], rows: Iterable[Sequence[Any]], numeric: Sequence[bool] = (),
          row_class: Optional[Sequence[str]] = None) -> str:
    """An HTML table (``headers`` None: a key/value table without a header row); ``numeric[j]``
    right-aligns column j; ``row_class[i]`` classes row i."""
    out = ['<table class="mera">']
    if headers:
        out += ["<thead><tr>"] + [f"<th>{_e(h)}</th>" for h in headers] + ["</tr></thead>"]
    out.append("<tbody>")
    for i, r in enumerate(rows):
        cls = f' class="{_e(row_class[i])}"' if row_class and row_class[i] else ""
        cells = (f'<td class="n">{_e(c)}</td>' if j < len(numeric) and numeric[j] else f"<td>{_e(c)}</td>"
                 for j, c in enumerate(r))
        out.append(f"<tr{cls}>" + "".join(cells) + "</tr>")
    out.append("</tbody></table>")
    return "".join(out)


def layer_table(report: Any) -> str:
    rows, classes = [], []
    for d in report:
        if d["on_dna"]:
            rows.append((d["node"], d["op"], "DNA", d["cycles"], f"{d['us']:.2f}", d["mac_cycles"], d["vec_cycles"],
                         f"{100 * d['mac_utilization']:.1f}" if d["macs"] else "-", d["load_bytes"],
                         d["store_bytes"], "memory" if d["memory_bound"] else "compute"))
            classes.append("")
        else:
            rows.append((d["node"], d["op"], "host", "-", f"{d['us']:.2f}", "-", "-", "-", "-", "-", "host"))
            classes.append("host")
    return table(["node", "op", "where", "cycles", "µs", "MAC cycles", "vector cycles", "MAC util %", "load B",
                  "store B", "bound"], rows, [False, False, False] + [True] * 7 + [False], classes)


def partition_table(report: Any) -> str:
    rows = [(e["node"], e["op"], "DNA" if e["on_dna"] else "host", e["tiles"] if e["on_dna"] else "-", e["reason"])
            for e in report]
    return table(["node", "op", "where", "tiles", "reason"], rows, [False, False, False, True, False],
                 ["" if e["on_dna"] else "host" for e in report])


def layer_report_html(report: Any) -> str:
    """LayerReport._repr_html_: the summary line and the per-layer table."""
    return f"<div><p><b>LayerReport</b>: {_e(report.summary())}</p>{layer_table(report)}</div>"


def partition_report_html(report: Any) -> str:
    """PartitionReport._repr_html_: the summary line and the node table."""
    return f"<div><p><b>PartitionReport</b>: {_e(report.summary())}</p>{partition_table(report)}</div>"


def quality_report_html(q: Any) -> str:
    """QualityReport._repr_html_: PSNR, grade and score per output and per layer."""
    def rows(items: Sequence[Any]) -> List[Sequence[Any]]:
        return [(t.name, t.op, f"{t.psnr:.2f}", t.grade, f"{t.score:.5f}", f"{t.max_abs_error:.4g}",
                 "-" if t.top1_agreement is None else f"{t.top1_agreement:.3f}") for t in items]
    headers = ["tensor", "op", "PSNR dB", "grade", "score", "max abs error", "top-1 agreement"]
    numeric = [False, False, True, False, True, True, True]
    return (f"<div><p><b>QualityReport</b> over {_e(q.samples)} sample(s) (PSNR dB: &lt;20 poor, 20-25 "
            f"acceptable, 25-30 good, &gt;30 very good)</p><p>Outputs</p>{table(headers, rows(q.outputs), numeric)}"
            f"<p>Layers</p>{table(headers, rows(q.layers), numeric)}</div>")


def _tensors(ts: Sequence[Mapping[str, Any]]) -> str:
    return ", ".join(f"{t['name']} {tuple(t['shape'])} {t['dtype']}" for t in ts)


def runner_html(runner: Any) -> str:
    """A runner's _repr_html_: model, target, inputs, outputs; for the Simulator the timing and partition."""
    rows: List[Sequence[Any]] = [("model", runner._mod.name), ("target", runner.target.value),
                                 ("inputs", _tensors(runner._mod.inputs)), ("outputs", _tensors(runner._mod.outputs))]
    if hasattr(runner, "layer_report"):
        p = runner.platform
        rows.append(("platform", f"{p['name']} ({p['mac_count']} MACs at {p['clock_mhz']:g} MHz)"))
        rows.append(("latency", runner.layer_report().summary()))
        rows.append(("partition", runner.partition_report().summary()))
    return f"<div><b>mera runner</b>{table(None, rows)}</div>"


def deploy_module_html(module: Any) -> str:
    """DeployModule._repr_html_: directory, target, platform, inputs, outputs, sizes."""
    m = module.get_runtime_metrics()[0]
    rows = [("directory", module.deploy_dir), ("target", m["target"]), ("platform", m["platform"] or "-"),
            ("inputs", _tensors(module.inputs)), ("outputs", _tensors(module.outputs)),
            ("weights", f"{m['weights_bytes']} bytes"), ("activation arena", f"{m['arena_bytes']} bytes")]
    if m["device_cycles"]:
        rows.append(("device estimate", f"{m['device_us']:.3f} µs ({m['device_cycles']} cycles)"))
    return f"<div><b>mera deploy module</b>{table(None, rows)}</div>"


def platform_table(platform: Mapping[str, Any]) -> str:
    from .config import ARCH_PARAMS
    rows: List[Sequence[Any]] = [("name", platform.get("name", "?"), ""), ("MACs", platform.get("mac_count", "?"), "")]
    if "tops" in platform:
        rows.append(("TOPS", f"{platform['tops']:g}", "at the clock below"))
    for key, _kind, unit, doc in ARCH_PARAMS:
        if key in platform:
            rows.append((key, f"{platform[key]:g} {unit}".strip(), doc))
    return table(["figure", "value", "what"], rows)


def _charts(report: Any, platform: Mapping[str, Any]) -> str:
    try:
        from . import plots
        fig = plots.profile_figure(report, platform)
    except Exception as e:  # matplotlib missing (UnsupportedError) or unable to draw: the tables still stand
        return f"<p>No charts: {_e(e)}</p>"
    return (f'<img class="chart" alt="per-layer latency, MAC utilization and roofline" '
            f'src="data:image/png;base64,{plots.png_base64(fig)}">')


def profile_html(layers: Any, partition: Any, platform: Mapping[str, Any], *, title: str = "mera profile",
                 model: str = "", target: str = "Simulator", notes: Sequence[str] = ()) -> str:
    """The self-contained HTML page of a profile (see the module docstring for what it holds)."""
    t = layers.total
    summary = [("model", model), ("target", target), ("platform", platform.get("name", "?")),
               ("total", f"{t.get('total_us', 0.0):.3f} µs"),
               ("device", f"{t.get('device_us', 0.0):.3f} µs, {int(t.get('device_cycles', 0))} cycles at "
                          f"{t.get('clock_mhz', 0.0):g} MHz"),
               ("host", f"{t.get('host_us', 0.0):.3f} µs (host nodes, PCIe transfers, the call)"),
               ("MAC utilization", f"{100 * layers.mac_utilization:.1f}% of the device time"),
               ("partition", partition.summary())]
    notes_html = "".join(f"<p>{_e(n)}</p>" for n in notes)
    return ("<!DOCTYPE html>\n"
            f'<html lang="en"><head><meta charset="utf-8"><title>{_e(title)}</title>'
            f"<style>{STYLE}</style></head><body>"
            f"<h1>{_e(title)}</h1>{notes_html}"
            f"<h2>Summary</h2>{table(None, summary)}"
            f"<h2>Platform</h2>{platform_table(platform)}"
            f"<h2>Charts</h2>{_charts(layers, platform)}"
            f"<h2>Layers</h2>{layer_table(layers)}"
            f"<h2>Partition</h2>{partition_table(partition)}"
            f"<p><small>mera profile, {_e(time.strftime('%Y-%m-%d %H:%M:%S'))}</small></p>"
            "</body></html>\n")


def write_profile_html(path: str, runner: Any, *, title: str = "mera profile", notes: Sequence[str] = ()) -> None:
    """Write the profile page of a Simulator runner to ``path`` atomically."""
    from ._fileio import atomic_write_bytes
    page = profile_html(runner.layer_report(), runner.partition_report(), runner.platform, title=title,
                        model=runner._mod.name, target=runner.target.value, notes=notes)
    atomic_write_bytes(path, page.encode("utf-8"))
    umask = os.umask(0)
    os.umask(umask)
    try:
        os.chmod(path, 0o666 & ~umask)  # as a file made as usual (the temporary file was 0600)
    except OSError:
        pass


__all__ = ["profile_html", "write_profile_html", "layer_report_html", "partition_report_html", "runner_html",
           "quality_report_html",
           "deploy_module_html", "table"]

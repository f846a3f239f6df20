"""The HTML report (mera.report), the charts (mera.plots) and _repr_html_."""

import base64
import html.parser

import numpy as np
import pytest

import mera
from mera import plots, report
from test_progress import quantized_model

VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track", "wbr"}


class PageChecker(html.parser.HTMLParser):
    """Checks nesting; collects every URL-bearing attribute and every tag."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.stack, self.tags, self.urls, self.errors = [], [], [], []
        self.doctype = None

    def handle_decl(self, decl):
        self.doctype = decl

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        self.urls += [(tag, k, v) for k, v in attrs if k in ("src", "href", "action", "data", "poster", "srcset")]
        if any(k == "style" and "url(" in (v or "") for k, v in attrs):
            self.errors.append(f"url() in a style attribute of <{tag}>")
        if tag not in VOID:
            self.stack.append(tag)

    def handle_endtag(self, tag):
        if not self.stack or self.stack[-1] != tag:
            self.errors.append(f"</{tag}> closes <{self.stack[-1] if self.stack else None}>")
        else:
            self.stack.pop()

    def handle_data(self, data):
        if self.stack and self.stack[-1] == "style" and ("url(" in data or "@import" in data):
            self.errors.append("the stylesheet loads something")


def check_page(page):
    p = PageChecker()
    p.feed(page)
    p.close()
    assert p.doctype and p.doctype.lower() == "doctype html"
    assert not p.errors and not p.stack, (p.errors, p.stack)
    assert p.tags[:4] == ["html", "head", "meta", "title"]
    for tag, attr, value in p.urls:  # self-contained: embedded data only
        assert tag == "img" and attr == "src" and value.startswith("data:image/png;base64,"), (tag, attr, value[:60])
    return p


@pytest.fixture(scope="module")
def runner():
    mod, params = quantized_model()
    with mera.build_config(target="Simulator", arch=100, sim_log=False):
        return mera.compile(mod, params)


def test_profile_page_is_valid_self_contained_and_holds_everything(runner, tmp_path):
    path = tmp_path / "report.html"
    report.write_profile_html(str(path), runner, title="profile <of> prog", notes=["a note & more"])
    page = path.read_text(encoding="utf-8")
    p = check_page(page)
    imgs = [v for t, k, v in p.urls if t == "img"]
    assert len(imgs) == 1
    png = base64.b64decode(imgs[0].split(",", 1)[1], validate=True)
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10000
    assert "profile &lt;of&gt; prog" in page and "a note &amp; more" in page
    for h in ("Summary", "Platform", "Charts", "Layers", "Partition"):
        assert f"<h2>{h}</h2>" in page
    lay, part = runner.layer_report(), runner.partition_report()
    assert all(f"<td>{d['node']}</td>" in page for d in lay)
    assert part.summary() in page and "DNAF100L0003" in page and "dram_gbps" in page
    assert f"{lay.total['total_us']:.3f} µs" in page
    assert p.tags.count("table") == 4  # summary, platform, layers, partition


def test_page_without_matplotlib_still_has_the_tables(runner, monkeypatch):
    def no_mpl():
        raise mera.UnsupportedError("plots need matplotlib: pip install 'mera[plot]'")
    monkeypatch.setattr(plots, "_matplotlib", no_mpl)
    page = report.profile_html(runner.layer_report(), runner.partition_report(), runner.platform)
    p = check_page(page)
    assert not p.urls and "No charts: plots need matplotlib" in page and p.tags.count("table") == 4


def test_repr_html(runner, tmp_path):
    for obj, head in ((runner.layer_report(), "LayerReport"), (runner.partition_report(), "PartitionReport"),
                      (runner, "mera runner")):
        fragment = obj._repr_html_()
        p = PageChecker()
        p.feed(fragment)
        assert not p.errors and not p.stack and head in fragment and "<table" in fragment
    assert "c1" in runner.layer_report()._repr_html_() and "Simulator" in runner._repr_html_()
    mod, params = quantized_model()
    with mera.build_config(target="IP", arch=100):
        mera.build(mod, params, output_dir=str(tmp_path / "d"), layout="NHWC")
    rt = mera.load_runtime_module(str(tmp_path / "d"))
    frag = rt._repr_html_()
    assert "mera deploy module" in frag and "IP" in frag and "DNAF100L0003" in frag and "cycles" in frag
    with mera.build_config(target="InterpreterHw"):
        assert "InterpreterHw" in mera.compile(mod, params)._repr_html_()


def test_quality_report_html():
    rng = np.random.default_rng(3)
    b = mera.ir.Builder("q")
    x = b.input("x", (1, 6, 6, 3), layout="NHWC")
    y = b.conv2d(x, b.param("w", rng.normal(0, 0.3, (4, 3, 3, 3)).astype(np.float32)), layout="NHWC", name="conv")
    q = mera.Quantizer((b.finish(y), b.params), layout="NHWC", config={"observer": "minmax"})
    data = [rng.normal(0, 1, (1, 6, 6, 3)).astype(np.float32) for _ in range(2)]
    rep = q.calibrate(data, progress=False).measure_quantization_quality(data)
    frag = rep._repr_html_()
    p = PageChecker()
    p.feed(frag)
    assert not p.errors and not p.stack and p.tags.count("table") == 2
    assert "<td>conv</td>" in frag and f"{rep.layers[-1].psnr:.2f}" in frag and rep.outputs[0].grade in frag


def test_roofline_points_and_roof(runner):
    lay = runner.layer_report()
    peak, bw = plots.roof(runner.platform)
    assert peak == pytest.approx(2 * 4096 * 300 / 1e3) and bw == 11.5  # DNA-F100: 2458 GOPS, 11.5 GB/s
    pts = {p["node"]: p for p in plots.roofline_points(lay)}
    c1 = next(d for d in lay if d["node"] == "c1")
    ops = 2 * c1["macs"]
    assert pts["c1"]["intensity"] == pytest.approx(ops / (c1["load_bytes"] + c1["store_bytes"]))
    assert pts["c1"]["gops"] == pytest.approx(ops / (c1["us"] * 1e3))
    assert all(p["gops"] <= peak * 1.0001 for p in pts.values())  # nothing above the compute roof
    assert "pool" not in pts  # no MACs: not on a roofline


def test_charts(runner, tmp_path):
    lay = runner.layer_report()
    fig = plots.profile_figure(lay, runner.platform)
    titles = [ax.get_title() for ax in fig.axes]
    assert titles == ["Per-layer latency", "MAC utilization per layer", "Roofline on DNAF100L0003"]
    bars = fig.axes[0].patches
    timed = [d for d in lay if d["us"] > 0]
    assert [b.get_width() for b in bars[:len(timed)]] == pytest.approx([d["us"] for d in timed])
    for ext, magic in ((".png", b"\x89PNG"), (".svg", b"<?xml"), (".pdf", b"%PDF")):
        path = tmp_path / f"layers{ext}"
        plots.save(fig, str(path))
        assert path.read_bytes()[:len(magic)] == magic
    with pytest.raises(mera.MeraIOError, match="cannot write the plot"):
        plots.save(fig, str(tmp_path / "layers.nosuchformat"))


def test_many_layers_chart_keeps_the_slowest():
    rows = [{"node": f"n{i}", "op": "conv2d", "on_dna": True, "us": float(i + 1), "memory_bound": False,
             "macs": 1, "mac_utilization": 0.5, "load_bytes": 1, "store_bytes": 1} for i in range(100)]
    kept, left = plots._timed_layers(rows, limit=10)
    assert left == 90 and [d["node"] for d in kept] == [f"n{i}" for i in range(90, 100)]
    ax = plots.latency_chart(rows)
    assert "60 slowest layers; 40 more not shown" in ax.get_title()
    assert np.isclose(min(b.get_width() for b in ax.patches), 41.0)

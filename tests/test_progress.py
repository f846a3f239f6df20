"""mera._progress: when progress shows, how (tqdm or plain lines), and the
Slow scheduler's per-layer count from C."""

import io

import numpy as np
import pytest

import mera
from mera import _core, _progress, ir


def quantized_model():
    rng = np.random.default_rng(3)
    b = ir.Builder("prog")
    x = b.input("x", (1, 12, 12, 8), layout="NHWC")
    y = b.conv2d(x, b.param("c1.w", rng.normal(0, 0.3, (16, 8, 3, 3)).astype(np.float32)), padding=[1, 1, 1, 1],
                 layout="NHWC", name="c1", activation="relu")
    y = b.conv2d(y, b.param("c2.w", rng.normal(0, 0.3, (16, 16, 3, 3)).astype(np.float32)), padding=[1, 1, 1, 1],
                 layout="NHWC", name="c2")
    y = b.max_pool2d(y, kernel=[2, 2], strides=[2, 2], layout="NHWC", name="pool")
    q = mera.Quantizer((b.finish(y), b.params), layout="NHWC", config={"observer": "minmax"})
    q.calibrate([rng.normal(0, 1, (1, 12, 12, 8)).astype(np.float32) for _ in range(2)], progress=False)
    return q.quantize()


@pytest.fixture
def plain(monkeypatch):
    """Plain lines (as without tqdm), shown at once."""
    monkeypatch.setattr(_progress, "_tqdm", lambda: None)
    monkeypatch.setattr(_progress, "DELAY_S", 0.0)


def test_plain_lines_count_and_end(plain):
    s = io.StringIO()  # a pipe or log file: lines, at most one per 5 s, and the last
    with _progress.Progress("calibrating", 3, "batches", stream=s) as p:
        for _ in range(3):
            p.update()
    lines = s.getvalue().splitlines()
    assert len(lines) == 2
    assert lines[0].startswith("mera: calibrating 1/3 batches (") and "s left" in lines[0]
    assert lines[1].startswith("mera: calibrating 3/3 batches (")
    t = Terminal()  # a terminal without tqdm: one line rewritten with \r, a newline at the end
    with _progress.Progress("calibrating", 2, "batches", stream=t) as p:
        p.update(2)
    assert t.getvalue().startswith("mera: calibrating 2/2 batches (") and t.getvalue().endswith(")\r\n")


def test_nothing_before_the_delay_and_nothing_when_silenced(monkeypatch):
    monkeypatch.setattr(_progress, "_tqdm", lambda: None)
    s = io.StringIO()
    with _progress.Progress("quick", 2, stream=s) as p:  # DELAY_S (2 s) has not passed
        p.update(2)
    assert s.getvalue() == ""
    monkeypatch.setattr(_progress, "DELAY_S", 0.0)
    with mera.build_config(target="Simulator", progress=False):
        assert not _progress.enabled()
        with _progress.Progress("silenced", 2, stream=s) as p:
            p.update(2)
        with _progress.stage("silenced stage", stream=s):
            pass
    assert s.getvalue() == ""
    assert _progress.enabled(True) and not _progress.enabled(False)
    _progress.set_default(False)
    try:
        assert not _progress.enabled()
        with mera.build_config(target="Simulator", progress=True):
            assert _progress.enabled()
        with mera.build_config(target="Simulator", scheduler_config={"progress_bars": True}):
            assert _progress.enabled()  # MERA 1.x's key
    finally:
        _progress.set_default(True)


class Terminal(io.StringIO):
    def isatty(self):
        return True


def test_tqdm_bar_on_a_terminal_when_installed():
    import tqdm  # noqa: F401  (the test extra installs it)
    s = Terminal()
    with _progress.Progress("calibrating", 4, "batches", show=True, stream=s) as p:
        p.update(4)
    assert "mera: calibrating" in s.getvalue() and "4/4" in s.getvalue()


def test_stage_announces_and_times_a_long_step(plain):
    s = io.StringIO()
    with _progress.stage("compiling the runtime", show=True, stream=s):
        pass
    lines = s.getvalue().splitlines()
    assert lines[0] == "mera: compiling the runtime ..."
    assert lines[1].startswith("mera: compiling the runtime done in ")
    s = io.StringIO()
    with pytest.raises(ValueError):
        with _progress.stage("failing step", show=True, stream=s):
            raise ValueError("x")
    assert "mera: failing step failed in " in s.getvalue()


def test_slow_scheduler_reports_each_layer_from_c():
    mod, params = quantized_model()
    calls = []
    from mera.runner import _params_list
    _core.Compiled(mod._graph, "Simulator", _params_list(mod, params), platform="DNAF100L0003",
                   sched={"mode": "Slow", "compiler_workers": 2}, progress=lambda d, t: calls.append((d, t)))
    total = calls[0][1]
    assert total >= 3 and calls == [(i, total) for i in range(1, total + 1)]
    calls.clear()
    _core.Compiled(mod._graph, "Simulator", _params_list(mod, params), platform="DNAF100L0003",
                   sched={"mode": "Fast"}, progress=lambda d, t: calls.append((d, t)))
    assert calls == []  # Fast searches nothing
    with pytest.raises(mera.ConfigError, match="progress must be callable"):
        _core.Compiled(mod._graph, "Simulator", _params_list(mod, params), platform="DNAF100L0003", progress=3)


def test_slow_build_config_shows_the_layer_count(plain, capsys):
    mod, params = quantized_model()
    with mera.build_config(target="Simulator", arch=100, sim_log=False, scheduler_config={"mode": "Slow"}):
        runner = mera.compile(mod, params)
    err = capsys.readouterr().err
    assert "mera: scheduling 'prog' (Slow search) 1/" in err
    last = err.strip().splitlines()[-1].split()
    done, total = last[5].split("/")
    assert last[:5] == ["mera:", "scheduling", "'prog'", "(Slow", "search)"] and done == total and last[6] == "layers"
    x = np.random.default_rng(0).normal(0, 1, (1, 12, 12, 8)).astype(np.float32)
    with mera.build_config(target="InterpreterHw"):
        ref = mera.compile(mod, params)(x)[0]
    assert np.array_equal(runner(x)[0], ref)  # progress does not change the program

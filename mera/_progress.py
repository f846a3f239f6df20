"""Progress on long work: calibration, Slow scheduling, build steps.

One place decides whether progress shows and how:

- ``enabled(explicit)``: an explicit ``progress=`` argument wins, then the
  active ``build_config(progress=...)``, then the process default
  (:func:`set_default`, which the ``mera`` command's ``--quiet`` turns off).
- :class:`Progress` counts work with a known total: a tqdm bar on a
  terminal when tqdm is installed (the ``progress`` extra), plain lines on
  stderr otherwise (one every 5 s into a file or pipe). Both appear only
  once the work has run for ``DELAY_S`` seconds (2), so quick work prints
  nothing.
- :func:`stage` wraps one step without a count (compiling the runtime,
  scheduling): a line when it has run for ``DELAY_S`` seconds, and its
  time when it ends.
"""

from __future__ import annotations

import sys
import threading
import time
from typing import Any, Optional, TextIO

#: Seconds a piece of work runs before its progress shows.
DELAY_S = 2.0

_default = True


def set_default(on: bool) -> None:
    """The process-wide default when neither an argument nor build_config says (``mera --quiet``: False)."""
    global _default
    _default = bool(on)


def get_default() -> bool:
    return _default


def enabled(explicit: Optional[bool] = None) -> bool:
    """Whether progress shows: ``explicit`` if given, else build_config's ``progress``, else the default."""
    if explicit is not None:
        return bool(explicit)
    from .config import current_build_config
    cfg = current_build_config()
    if cfg is not None:
        if "progress" in cfg.options:
            return bool(cfg.options["progress"])
        if "progress_bars" in cfg.options.get("scheduler_config", {}):  # MERA 1.x's name
            return bool(cfg.options["scheduler_config"]["progress_bars"])
    return _default


def _tqdm() -> Any:
    try:
        from tqdm import tqdm
    except ImportError:
        return None
    return tqdm


class Progress:
    """Count ``total`` units of work named ``what``; use as a context manager.

    ``show``: True shows at once, False never, None after ``DELAY_S`` seconds
    (when :func:`enabled` allows). ``update(n)`` may be called from any thread.
    """

    def __init__(self, what: str, total: int, unit: str = "", show: Optional[bool] = None,
                 stream: Optional[TextIO] = None):
        self.what = what
        self.total = int(total)
        self.unit = unit
        self.done = 0
        self._stream = stream or sys.stderr
        self._on = show is not False and enabled(show)
        self._delay = 0.0 if show else DELAY_S
        self._start = self._last = time.monotonic()
        self._lock = threading.Lock()
        self._bar = None
        self._shown = False
        tqdm = _tqdm() if self._on and self._isatty() else None  # a log file gets plain lines
        if tqdm is not None:
            self._bar = tqdm(total=self.total, desc=f"mera: {what}", unit=f" {unit}" if unit else "it",
                             delay=self._delay, file=self._stream, leave=True, dynamic_ncols=True)

    def update(self, n: int = 1) -> None:
        with self._lock:
            self.done += n
            if not self._on:
                return
            if self._bar is not None:
                self._bar.update(n)
                return
            now = time.monotonic()
            if now - self._start < self._delay:
                return
            if self._shown and now - self._last < (0.5 if self._isatty() else 5.0) and self.done < self.total:
                return
            self._last = now
            self._line(now)

    def _line(self, now: float) -> None:
        elapsed = now - self._start
        left = ""
        if 0 < self.done < self.total:
            left = f", {elapsed * (self.total - self.done) / self.done:.1f} s left"
        unit = f" {self.unit}" if self.unit else ""
        end = "\r" if self._isatty() else "\n"
        self._stream.write(f"mera: {self.what} {self.done}/{self.total}{unit} ({elapsed:.1f} s{left}){end}")
        self._stream.flush()
        self._shown = True

    def _isatty(self) -> bool:
        try:
            return self._stream.isatty()
        except (AttributeError, ValueError):
            return False

    def close(self) -> None:
        with self._lock:
            if self._bar is not None:
                self._bar.close()
                self._bar = None
            elif self._shown and self._isatty():
                self._stream.write("\n")
                self._stream.flush()

    def __enter__(self) -> "Progress":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


class stage:
    """``with stage("scheduling ResNet-50 (Slow)"):`` a line on stderr once the step has run
    ``DELAY_S`` seconds (``show=True``: at once), and its time when it ends."""

    def __init__(self, what: str, show: Optional[bool] = None, stream: Optional[TextIO] = None):
        self.what = what
        self._stream = stream or sys.stderr
        self._on = show is not False and enabled(show)
        self._delay = 0.0 if show else DELAY_S
        self._shown = False
        self._lock = threading.Lock()
        self._timer: Optional[threading.Timer] = None

    def _announce(self) -> None:
        with self._lock:
            if self._timer is None:  # already ended
                return
            self._stream.write(f"mera: {self.what} ...\n")
            self._stream.flush()
            self._shown = True

    def __enter__(self) -> "stage":
        self._start = time.monotonic()
        if self._on and self._delay == 0:
            self._stream.write(f"mera: {self.what} ...\n")
            self._stream.flush()
            self._shown = True
        elif self._on:
            self._timer = threading.Timer(self._delay, self._announce)
            self._timer.daemon = True
            self._timer.start()
        return self

    def __exit__(self, exc_type: Any, *exc: Any) -> None:
        with self._lock:
            timer, self._timer = self._timer, None
        if timer is not None:
            timer.cancel()
        if self._shown:
            how = "done" if exc_type is None else "failed"
            self._stream.write(f"mera: {self.what} {how} in {time.monotonic() - self._start:.1f} s\n")
            self._stream.flush()


class Counter:
    """A ``callback(done, total)`` for work whose total is known only once it starts (the Slow
    scheduler's layers, reported from C): a :class:`Progress` made at the first call."""

    def __init__(self, what: str, unit: str = "", show: Optional[bool] = None):
        self.what, self.unit, self.show = what, unit, show
        self.progress: Optional[Progress] = None

    def __call__(self, done: int, total: int) -> None:
        if self.progress is None:
            self.progress = Progress(self.what, total, self.unit, show=self.show)
        self.progress.update(done - self.progress.done)

    def close(self) -> None:
        if self.progress is not None:
            self.progress.close()

    def __enter__(self) -> "Counter":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


__all__ = ["Counter", "Progress", "stage", "enabled", "set_default", "DELAY_S"]

"""The ``mera`` command (also ``python -m mera``).

::

    mera compile MODEL -o DIR --target T [--arch A] [--layout L] [--input-shape 1,3,224,224 ...] [--calibrate calib.npy]
    mera run DIR [--input input0.bin ...] [--reference ref_result_0.bin ...] [-n N]
    mera profile DIR|MODEL [--plot layers.png] [--trace trace.json] [--html report.html]
    mera info DIR
    mera platforms

Bad input (a :class:`mera.MeraError`, a file that cannot be read, a missing
optional package) ends the command with one line on stderr, ``mera
<command>: error: <message>``, and exit status 1 (2 for bad arguments).
docs/cli.md describes each command.
"""

from __future__ import annotations

import argparse
import sys
from typing import Optional, Sequence

from .. import _progress
from ..errors import MeraError

EXIT_ERROR = 1
EXIT_USAGE = 2


class _Parser(argparse.ArgumentParser):
    """argparse, with its errors on one line (the usage stays in --help)."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _one_line(msg: str) -> str:
    lines = [ln.strip() for ln in str(msg).splitlines() if ln.strip()]
    return " | ".join(lines) if lines else "failed"


def build_parser() -> argparse.ArgumentParser:
    from . import compile as c_compile, info as c_info, profile as c_profile, run as c_run
    from .. import __version__
    parser = _Parser(prog="mera", description="mera: compile, run and profile models for the DNA accelerators.")
    parser.add_argument("--version", action="version", version=f"mera {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("-q", "--quiet", action="store_true", help="no progress lines (and for compile, no build log)")
    for module in (c_compile, c_run, c_profile, c_info):
        module.add_parsers(sub, common)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run the ``mera`` command with ``argv`` (default ``sys.argv[1:]``); returns the exit status."""
    parser = build_parser()
    try:
        args = parser.parse_args(list(argv) if argv is not None else None)
    except SystemExit as e:
        return int(e.code or 0) if not isinstance(e.code, str) else EXIT_USAGE
    prog = f"mera {args.command}"
    quiet = getattr(args, "quiet", False)
    was = _progress.get_default()
    _progress.set_default(not quiet)
    try:
        return int(args.func(args) or 0)
    except (MeraError, OSError) as e:
        sys.stderr.write(f"{prog}: error: {_one_line(e)}\n")
    except ImportError as e:
        name = getattr(e, "name", None) or str(e)
        sys.stderr.write(f"{prog}: error: this needs the optional package '{name}' "
                         f"(pip install 'mera[torch]', 'mera[onnx]' or 'mera[plot]'): {_one_line(e)}\n")
    except KeyboardInterrupt:
        sys.stderr.write(f"{prog}: interrupted\n")
        return 130
    finally:
        _progress.set_default(was)
    return EXIT_ERROR


__all__ = ["main", "build_parser"]

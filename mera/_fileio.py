"""Writing files so that a crash never leaves one half-written."""

from __future__ import annotations

import os
import tempfile
from typing import Union

from .errors import MeraIOError


def atomic_write_bytes(path: Union[str, os.PathLike], data: bytes) -> None:
    """Write ``data`` to a temporary file beside ``path``, then rename it over ``path``."""
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    try:
        fd, tmp = tempfile.mkstemp(prefix="." + os.path.basename(path) + ".", suffix=".tmp", dir=directory)
    except (OSError, ValueError) as e:  # ValueError: a NUL in the path
        raise MeraIOError(f"cannot write {path!r}: {getattr(e, 'strerror', None) or e}") from None
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        if isinstance(e, OSError):
            raise MeraIOError(f"cannot write '{path}': {e.strerror}") from e
        raise

"""The exceptions mera raises.

Every error that bad input can cause is a :class:`MeraError`. The subclasses
also derive from the built-in exception a Python user would expect
(``ValueError``, ``TypeError``, ``OSError``), so ``except ValueError`` keeps
working. Messages name what went wrong and where: the node and op, the input
or parameter, the file and field.
"""

from __future__ import annotations


class MeraError(Exception):
    """Base class of every error raised by mera for bad input."""


class GraphError(MeraError, ValueError):
    """A graph is malformed: bad names, references, input counts."""


class ShapeError(GraphError):
    """Shapes or layouts do not agree."""


class DtypeError(GraphError, TypeError):
    """Dtypes or quantization parameters do not agree."""


class AttrError(GraphError):
    """An attribute is unknown, missing or of the wrong type."""


class UnknownOpError(GraphError):
    """An op name is not in the op table."""


class FormatError(MeraError, ValueError):
    """A serialized graph or deploy file is corrupt, truncated or of another version."""


class UnsupportedError(MeraError):
    """Valid input that this version of mera cannot handle (yet)."""


class ConfigError(MeraError, ValueError):
    """A build configuration is invalid: unknown keys, bad values, missing target."""


class RuntimeInputError(MeraError, ValueError):
    """Inputs passed to a compiled model at run time do not match it."""


class MeraIOError(MeraError, OSError):
    """A file could not be read or written."""


class MeraMemoryError(MeraError, MemoryError):
    """Memory ran out while loading or running a model (e.g. a deploy directory)."""


__all__ = [
    "MeraError",
    "GraphError",
    "ShapeError",
    "DtypeError",
    "AttrError",
    "UnknownOpError",
    "FormatError",
    "UnsupportedError",
    "ConfigError",
    "RuntimeInputError",
    "MeraIOError",
    "MeraMemoryError",
]

"""Read a deploy directory without running it: what ``mera info`` shows and
``mera profile DIR`` re-times.

``describe(path)`` gathers deploy.json, the size and SHA-256 of every file,
the machine deploy.so was built for and whether the C runtime accepts the
directory here. ``model(path)`` reads the graph, the parameters and the DNA
program back out of deploy.params (the format is docs/deploy.md's), so the
Simulator can schedule the same graph again and report per layer.
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
from typing import Any, Dict, List, Optional, Tuple

import numpy as np

from . import _core
from .errors import FormatError, MeraError, MeraIOError
from .ir import Module

PARAMS_MAGIC = b"MERAPRM\n"
SECTION_GRAPH, SECTION_PARAMS, SECTION_PROGRAM = 1, 2, 3

#: ELF e_machine values of the host archs mera.build targets.
ELF_MACHINES = {62: "x86_64", 183: "aarch64"}

_DTYPES = {"float32": np.float32, "int8": np.int8, "uint8": np.uint8, "int32": np.int32, "int64": np.int64}


def _read(path: str) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as e:
        raise MeraIOError(f"cannot read '{path}': {e.strerror}") from None


def read_json(deploy_dir: str) -> Dict[str, Any]:
    """deploy.json of ``deploy_dir``, parsed; a missing directory or file is a MeraIOError."""
    if not os.path.isdir(deploy_dir):
        raise MeraIOError(f"'{deploy_dir}' is not a directory (a deploy directory holds deploy.so, deploy.params "
                          "and deploy.json)")
    path = os.path.join(deploy_dir, "deploy.json")
    try:
        info = json.loads(_read(path).decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as e:
        raise FormatError(f"'{path}' is not valid JSON: {e}") from None
    if not isinstance(info, dict) or info.get("format") != "mera-deploy":
        raise FormatError(f"'{path}': field 'format' is not \"mera-deploy\": not a mera deploy directory")
    return info


def elf_machine(data: bytes) -> Optional[str]:
    """The machine a 64-bit little-endian ELF file was built for ('x86_64', 'aarch64', 'EM 40'), or None."""
    if len(data) < 20 or data[:4] != b"\x7fELF" or data[5] != 1:
        return None
    em = struct.unpack_from("<H", data, 18)[0]
    return ELF_MACHINES.get(em, f"EM {em}")


def describe(deploy_dir: str, check: bool = True) -> Dict[str, Any]:
    """What ``deploy_dir`` holds: ``json`` (deploy.json), ``files`` (name -> bytes, sha256),
    ``machine`` (deploy.so's ELF machine), ``extra_files`` (input/reference files beside them)
    and, with ``check``, ``loads`` (True, or the runtime's message refusing the directory)."""
    info = read_json(deploy_dir)
    files = {}
    for name in ("deploy.so", "deploy.params", "deploy.json"):
        path = os.path.join(deploy_dir, name)
        if not os.path.isfile(path):
            files[name] = None
            continue
        data = _read(path)
        files[name] = {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}
        if name == "deploy.so":
            machine = elf_machine(data)
    out: Dict[str, Any] = {"dir": os.path.abspath(deploy_dir), "json": info, "files": files,
                           "machine": machine if files["deploy.so"] else None}
    out["extra_files"] = sorted(n for n in os.listdir(deploy_dir)
                                if n.endswith(".bin") and (n.startswith("input") or n.startswith("ref_result")))
    if check:
        from .deploy_runtime import load_runtime_module
        try:
            load_runtime_module(deploy_dir)
            out["loads"] = True
        except MeraError as e:
            out["loads"] = str(e)
    return out


def _sections(data: bytes, path: str) -> Dict[int, bytes]:
    if len(data) < 24 or data[:8] != PARAMS_MAGIC:
        raise FormatError(f"'{path}' is not a mera deploy.params file (no MERAPRM magic)")
    version, count = struct.unpack_from("<II", data, 8)
    if version != _core.DEPLOY_FORMAT_VERSION:
        raise FormatError(f"'{path}': format version {version}; this mera reads version "
                          f"{_core.DEPLOY_FORMAT_VERSION}")
    if not 1 <= count <= 16 or 16 + 20 * count > len(data):
        raise FormatError(f"'{path}': bad section count {count}")
    out = {}
    for i in range(count):
        kind, off, length = struct.unpack_from("<IQQ", data, 16 + 20 * i)
        if off + length > len(data) - 8:
            raise FormatError(f"'{path}': section {i} (kind {kind}) runs past the end of the file")
        out[kind] = data[off:off + length]
    return out


def _params(section: bytes, mod: Module, path: str) -> Dict[str, np.ndarray]:
    """The PARAMS section: an index of (name, offset, length), then the data."""
    types = {}
    for vid in mod._graph.inputs():
        v = mod._graph.value(vid)
        if v["kind"] == "param":
            types[v["name"]] = v
    try:
        (n,) = struct.unpack_from("<I", section, 0)
        pos, params = 4, {}
        for _ in range(n):
            (k,) = struct.unpack_from("<I", section, pos)
            name = section[pos + 4:pos + 4 + k].decode("utf-8")
            off, length = struct.unpack_from("<QQ", section, pos + 4 + k)
            pos += 4 + k + 16
            v = types.get(name)
            if v is None or off + length > len(section):
                raise FormatError(f"'{path}': PARAMS entry '{name}' is not a param of the graph or out of bounds")
            arr = np.frombuffer(section, dtype=_DTYPES[v["dtype"]], count=length // np.dtype(_DTYPES[v["dtype"]])
                                .itemsize, offset=off)
            params[name] = arr.reshape(v["shape"])
    except (struct.error, UnicodeDecodeError, KeyError, ValueError) as e:
        raise FormatError(f"'{path}': the PARAMS section is corrupt ({e})") from None
    return params


def model(deploy_dir: str) -> Tuple[Module, Dict[str, np.ndarray], Optional[bytes], List[str]]:
    """The compiled graph, its parameters, the DNA program (None for the interpreters) of
    ``deploy_dir``'s deploy.params, and the names of the parameters it does not store.

    Format 2 stores each weight once: a parameter only DNA layers read lives in the program's
    constant image, not in the PARAMS section. Those come back as zeros of their shape and
    dtype, which schedule and time exactly like the real weights."""
    path = os.path.join(deploy_dir, "deploy.params")
    sections = _sections(_read(path), path)
    if SECTION_GRAPH not in sections:
        raise FormatError(f"'{path}' has no GRAPH section")
    mod = Module.deserialize(sections[SECTION_GRAPH])
    params = _params(sections.get(SECTION_PARAMS, b"\0\0\0\0"), mod, path)
    missing = []
    for vid in mod._graph.inputs():
        v = mod._graph.value(vid)
        if v["kind"] == "param" and v["name"] not in params:
            params[v["name"]] = np.zeros(v["shape"], _DTYPES[v["dtype"]])
            missing.append(v["name"])
    return mod, params, sections.get(SECTION_PROGRAM), missing


#: bytes of a serialized DNA program after its constant image: dram_bytes (8), the three buffer
#: sizes (12), the checksum (8) (isa/program.c, dna_program_serialize)
_PROGRAM_TAIL = 28


def same_schedule(a: bytes, b: bytes, image_bytes: int) -> bool:
    """Whether two serialized DNA programs differ at most in their constant images (and so in
    their checksums): the same instructions, segments, addresses and buffer sizes."""
    n = len(a)
    if n != len(b) or n < _PROGRAM_TAIL + image_bytes:
        return False
    head = n - _PROGRAM_TAIL - image_bytes
    return a[:head] == b[:head] and a[n - _PROGRAM_TAIL:n - 8] == b[n - _PROGRAM_TAIL:n - 8]


__all__ = ["describe", "model", "read_json", "elf_machine", "same_schedule"]

"""The static archive of the C runtime (``libmera_rt.a``): how it is compiled, and the copy
prebuilt at install time.

``setup.py`` (``build_ext``, so also ``pip install -e .`` and ``setup.py build_ext --inplace``)
compiles the runtime group of :mod:`mera._sources` for the machine it installs on into
``mera/_runtime/<host_arch>/libmera_rt.a``, with a ``manifest.json`` saying what it was built
from. ``mera.build`` links deploy.so against that archive when its manifest matches the C sources
mera.build would compile (the same hash of every runtime source, the same flags); otherwise (an
edited source tree, another host_arch such as ``arm``) it compiles the archive once into its
cache (mera/build.py).

Loaded by path from ``setup.py`` (mera is not built yet), so it imports nothing from mera but
``_sources``, which it loads by path in that case too.
"""

import concurrent.futures
import hashlib
import importlib.util
import json
import os
import platform
import subprocess
from typing import Callable, Dict, List, Optional

if __package__:
    from . import _sources
else:  # loaded by path from setup.py
    _spec = importlib.util.spec_from_file_location(
        "_mera_sources", os.path.join(os.path.dirname(os.path.abspath(__file__)), "_sources.py"))
    _sources = importlib.util.module_from_spec(_spec)
    _spec.loader.exec_module(_sources)

#: Compiler flags of every runtime object (the extension's, setup.py, plus PIC and hidden visibility).
# MERA_SERIAL_THREADS: deploy.so is dlopen'ed and dlclose'd by the loaders, and a library that is
# unloaded must leave no worker thread or fork handler behind, so its runtime runs each kernel's
# work on the calling thread (csrc/util/threadpool.c). mera._core keeps the worker pool.
RUNTIME_CFLAGS = ("-O2", "-fPIC", "-fvisibility=hidden", "-std=c11", "-ffp-contract=off", "-fno-strict-aliasing",
                  "-D_POSIX_C_SOURCE=200809L", "-DMERA_SERIAL_THREADS")

ARCHIVE_NAME = "libmera_rt.a"
MANIFEST_NAME = "manifest.json"
#: Where the prebuilt archive lives inside the package: mera/_runtime/<host_arch>/.
PACKAGED_DIR = "_runtime"

#: GNU machine names -> host_arch
MACHINES = {"x86_64": "x86", "amd64": "x86", "aarch64": "arm", "arm64": "arm"}


class ArchiveBuildError(Exception):
    """A compile or archive step failed; the message holds the command and its output."""


def native_host_arch() -> Optional[str]:
    """The host_arch of this machine (``"x86"``, ``"arm"``), or None for another CPU."""
    return MACHINES.get(platform.machine().lower())


def sources_hash(root: str) -> str:
    """Hash of every file the runtime compiles from (the runtime group's C files, headers, .def
    tables) under ``root``, a csrc/ folder."""
    h = hashlib.sha256()
    for rel in _sources.files(root, ["runtime"], _sources.BUILD_INPUTS):
        with open(os.path.join(root, rel), "rb") as fh:
            data = fh.read()
        h.update(rel.encode() + b"\0" + hashlib.sha256(data).digest())
    return h.hexdigest()


def manifest(host_arch: str, root: str, cc_version: str) -> Dict[str, object]:
    """What a prebuilt archive records; :func:`packaged_archive` compares all but ``cc``."""
    return {"host_arch": host_arch, "sources": sources_hash(root), "flags": list(RUNTIME_CFLAGS), "layout": 1,
            "cc": cc_version}


def run_tool(cmd: List[str], what: str) -> None:
    """Run a compiler or archiver; ArchiveBuildError naming ``what`` with its output on failure."""
    try:
        r = subprocess.run(cmd, capture_output=True, text=True)
    except OSError as e:
        raise ArchiveBuildError(f"{what}: cannot run {cmd[0]}: {e.strerror}") from None
    if r.returncode != 0:
        out = (r.stderr or r.stdout).strip()
        raise ArchiveBuildError(f"{what} failed (exit {r.returncode}): {' '.join(cmd)}\n{out[-4000:]}")


def compile_archive(cc: str, ar: str, root: str, work: str, dest: str, jobs: int = 0,
                    on_file: Optional[Callable[[], None]] = None) -> int:
    """Compile the runtime group under ``root`` with ``cc`` (objects in the folder ``work``),
    archive them with ``ar`` and move the archive to ``dest`` atomically (``work`` and ``dest``
    on one filesystem). ``on_file`` is called after each file compiles (progress). Returns the
    number of C files. Raises :class:`ArchiveBuildError`."""
    sources = _sources.files(root, ["runtime"])

    def compile_one(rel: str) -> str:
        obj = os.path.join(work, rel.replace(os.sep, "__")[:-2] + ".o")
        run_tool([cc, *RUNTIME_CFLAGS, "-I", root, "-c", os.path.join(root, rel), "-o", obj],
             f"compiling the deploy runtime ({rel})")
        return obj

    workers = jobs if jobs > 0 else max(1, os.cpu_count() or 1)
    objs = []
    with concurrent.futures.ThreadPoolExecutor(max_workers=workers) as ex:
        for obj in ex.map(compile_one, sources):
            objs.append(obj)
            if on_file is not None:
                on_file()
    tmp_archive = os.path.join(work, ARCHIVE_NAME)
    run_tool([ar, "rcs", tmp_archive, *objs], "archiving the deploy runtime")
    os.replace(tmp_archive, dest)
    return len(sources)


def packaged_dir(package_dir: str, host_arch: str) -> str:
    """The folder of the prebuilt archive for ``host_arch`` in the package at ``package_dir``."""
    return os.path.join(package_dir, PACKAGED_DIR, host_arch)


def read_manifest(folder: str) -> Optional[Dict[str, object]]:
    """The manifest of the prebuilt archive in ``folder``, or None when there is none (or it is
    unreadable, or the archive is missing)."""
    try:
        with open(os.path.join(folder, MANIFEST_NAME)) as f:
            m = json.load(f)
    except (OSError, ValueError):
        return None
    if not isinstance(m, dict) or not os.path.isfile(os.path.join(folder, ARCHIVE_NAME)):
        return None
    return m


def packaged_archive(host_arch: str, root: str, package_dir: Optional[str] = None) -> Optional[str]:
    """The prebuilt archive for ``host_arch`` when it was built from the sources under ``root``
    with :data:`RUNTIME_CFLAGS`, else None."""
    folder = packaged_dir(package_dir or os.path.dirname(os.path.abspath(__file__)), host_arch)
    m = read_manifest(folder)
    if m is None:
        return None
    want = manifest(host_arch, root, "")
    if any(m.get(k) != want[k] for k in ("host_arch", "sources", "flags", "layout")):
        return None
    return os.path.join(folder, ARCHIVE_NAME)

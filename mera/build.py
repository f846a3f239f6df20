"""``mera.build``: compile a module into a deploy directory.

As in the 2021 MERA docs::

    with mera.build_config(target="IP", arch=100):
        json_str, params_bytes, lib_path = mera.build(mod, params, output_dir="resnet50_deploy",
                                                      host_arch="x86", layout="NHWC")

writes three files into ``output_dir``:

``deploy.so``
    a self-contained shared library (libc, libm and pthreads only) holding
    the C runtime of this repository; its only exports are the
    ``mera_deploy_*`` functions of ``csrc/runtime/mera_deploy.h``. The id of
    this build's ``deploy.params`` is compiled in, so it refuses data files
    from another build.
``deploy.params``
    the graph, the parameter data and (Simulator, IP) the DNA program.
``deploy.json``
    what humans and the loader read: target, platform, inputs, outputs, sizes,
    checksums, versions.

A build is a transaction (:mod:`mera._deploy_dir`): the files are written
into a staging directory beside ``output_dir`` and swapped in with one atomic
rename after everything that can fail (scheduling, compiling, linking). An
interrupted or failed build leaves the previous complete directory; a loader
sees either it or the new one, never a mix, and no file is rewritten in place
(a loaded module may have deploy.params mapped). Nothing else in
``output_dir`` (``input0.bin``, ``ref_result_0.bin``, ...) is touched, and
the next build deletes what an interrupted one left behind. Run the
directory with ``apps/inference`` or :func:`mera.load_runtime_module`.

The C runtime is a static archive: a build compiles only the small
generated entry file and links. Installing mera builds the archive for the
installing machine (mera/_runtime_archive.py), so the first build only
links. For another host arch, or C sources edited since the install, it is
compiled once and cached per host arch, compiler (path and version), flags
and the hash of every C source, in ``$MERA_CACHE_DIR`` (default
``$XDG_CACHE_HOME/mera`` or ``~/.cache/mera``). ``host_arch="arm"``
cross-compiles for aarch64 Linux with ``aarch64-linux-gnu-gcc``
(Debian/Ubuntu package ``gcc-aarch64-linux-gnu``).
"""

from __future__ import annotations

import hashlib
import json
import os
import platform as _platform
import re
import shutil
import subprocess
import tempfile
import time
from typing import Any, Dict, List, Mapping, Optional, Tuple

from . import _core, _progress, _runtime_archive, _sources
from ._deploy_dir import DeployTransaction, DirLock
from .config import require_build_config, simulator_options
from .errors import ConfigError, MeraError, MeraIOError
from .ir import Module
from .runner import compile_core

#: Compiler flags of every runtime object (mera/_runtime_archive.py).
RUNTIME_CFLAGS = _runtime_archive.RUNTIME_CFLAGS

#: What deploy.so exports (a linker version script); everything else is local.
EXPORTS_MAP = "{\n  global: mera_deploy_*;\n  local: *;\n};\n"

#: The functions of the deploy ABI (mera_deploy.h); the link pulls each in.
ABI_FUNCTIONS = ("mera_deploy_abi_version", "mera_deploy_create", "mera_deploy_destroy", "mera_deploy_num_inputs",
                 "mera_deploy_num_outputs", "mera_deploy_input_info", "mera_deploy_output_info",
                 "mera_deploy_set_input", "mera_deploy_run", "mera_deploy_get_output", "mera_deploy_get_metrics")

#: host_arch -> (GNU machine names of a native host, cross-compiler triplet, Debian package of the cross compiler)
HOST_ARCHS = {
    "x86": (("x86_64", "amd64"), "x86_64-linux-gnu", "gcc-x86-64-linux-gnu"),
    "arm": (("aarch64", "arm64"), "aarch64-linux-gnu", "gcc-aarch64-linux-gnu"),
}

_HOST_ARCH_ALIASES = {"x86": "x86", "x86_64": "x86", "amd64": "x86", "arm": "arm", "aarch64": "arm", "arm64": "arm"}

#: aux_config keys MERA's build accepted.
AUX_CONFIG_KEYS = ("weight_layout", "prequantize_input", "with_clip_pattern", "with_fc_pattern", "insert_downsample")


def _log(msg: str) -> None:
    print(msg, flush=True)


# ---- where things are --------------------------------------------------------------------------

def cache_dir() -> str:
    """Where built runtime archives are cached: ``$MERA_CACHE_DIR``, else ``$XDG_CACHE_HOME/mera``, else ``~/.cache/mera``."""
    d = os.environ.get("MERA_CACHE_DIR")
    if d:
        return os.path.abspath(d)
    xdg = os.environ.get("XDG_CACHE_HOME")
    return os.path.join(os.path.abspath(xdg) if xdg else os.path.join(os.path.expanduser("~"), ".cache"), "mera")


def csrc_dir() -> str:
    """The C sources of the runtime: the repository's ``csrc/`` next to the package (a source
    tree or an editable install), else the copy a regular install ships as ``mera/_csrc``."""
    here = os.path.dirname(os.path.abspath(__file__))
    candidates = [os.environ.get("MERA_CSRC_DIR", ""), os.path.join(os.path.dirname(here), "csrc"),
                  os.path.join(here, "_csrc")]
    for c in candidates:
        if c and os.path.isfile(os.path.join(c, "runtime", "mera_deploy.h")):
            return os.path.abspath(c)
    raise MeraIOError("mera.build needs the C sources of the runtime, which are not installed: looked in "
                      + ", ".join(repr(c) for c in candidates if c) + " (reinstall mera, or set MERA_CSRC_DIR)")


def runtime_sources(root: Optional[str] = None) -> List[str]:
    """The runtime's C files (the ``runtime`` group of :mod:`mera._sources`), relative to ``root``, sorted."""
    return _sources.files(root or csrc_dir(), ["runtime"])


def _sources_hash(root: str) -> str:
    """Hash of every file the runtime compiles from (the runtime group's C files, headers, .def tables)."""
    return _runtime_archive.sources_hash(root)


# ---- the toolchain -----------------------------------------------------------------------------

class Toolchain:
    """A C compiler and archiver producing code for one host_arch."""

    def __init__(self, host_arch: str, cc: str, ar: str):
        self.host_arch = host_arch
        self.cc = cc
        self.ar = ar
        try:
            r = subprocess.run([cc, "--version"], capture_output=True, text=True, timeout=60)
            self.version = r.stdout.strip()
        except OSError as e:
            raise ConfigError(f"cannot run the C compiler '{cc}': {e.strerror}") from None

    def __repr__(self) -> str:
        first = self.version.splitlines()[0] if self.version else "?"
        return f"{self.cc} ({first})"


def _which(name: str) -> Optional[str]:
    p = shutil.which(name)
    return os.path.realpath(p) if p else None


def toolchain(host_arch: str) -> Toolchain:
    """The compiler for ``host_arch``: native ``$CC`` / ``cc`` / ``gcc`` when this machine is of that
    arch, else the cross compiler ``<triplet>-gcc``. A missing one is a :class:`mera.ConfigError`
    naming the Debian package to install."""
    machines, triplet, package = HOST_ARCHS[host_arch]
    native = _platform.machine().lower() in machines
    if native:
        cc = None
        if os.environ.get("CC"):
            cc = _which(os.environ["CC"].split()[0])
        cc = cc or _which("cc") or _which("gcc") or _which(f"{triplet}-gcc")
        if not cc:
            raise ConfigError("mera.build needs a C compiler to link deploy.so and found none (cc, gcc); "
                              "on Debian/Ubuntu: apt-get install gcc")
        ar = _which("ar") or _which(f"{triplet}-ar") or _which("gcc-ar")
        if not ar:
            raise ConfigError("mera.build needs the archiver 'ar'; on Debian/Ubuntu: apt-get install binutils")
        return Toolchain(host_arch, cc, ar)
    cc = _which(f"{triplet}-gcc")
    if not cc:
        raise ConfigError(f"host_arch={host_arch!r} cross-compiles deploy.so with {triplet}-gcc, which is not "
                          f"installed; on Debian/Ubuntu: apt-get install {package}")
    ar = _which(f"{triplet}-ar") or _which(f"{triplet}-gcc-ar")
    if not ar:
        raise ConfigError(f"host_arch={host_arch!r} needs {triplet}-ar; on Debian/Ubuntu: "
                          f"apt-get install binutils-{triplet}")
    return Toolchain(host_arch, cc, ar)


def _run(cmd: List[str], what: str) -> None:
    try:
        _runtime_archive.run_tool(cmd, what)
    except _runtime_archive.ArchiveBuildError as e:
        raise MeraError(str(e)) from None


# ---- the runtime archive: prebuilt at install, or compiled once and cached ----------------------

def packaged_runtime_archive(tc: Toolchain) -> Optional[str]:
    """The runtime archive the install built (mera/_runtime/<host_arch>/) when it matches the C
    sources this build compiles from and ``tc`` targets this machine, else None."""
    if tc.host_arch != _runtime_archive.native_host_arch():
        return None
    return _runtime_archive.packaged_archive(tc.host_arch, csrc_dir())


def runtime_archive(tc: Toolchain, log: bool = True) -> Tuple[str, bool]:
    """The static archive of the C runtime for ``tc``: ``(path, was_cached)``. Built with the
    sources compiled in parallel, written atomically into the cache on a miss."""
    root = csrc_dir()
    key_src = json.dumps({"host_arch": tc.host_arch, "cc": tc.cc, "cc_version": tc.version, "ar": tc.ar,
                          "flags": RUNTIME_CFLAGS, "sources": _sources_hash(root), "layout": 1}, sort_keys=True)
    key = hashlib.sha256(key_src.encode()).hexdigest()[:24]
    runtimes = os.path.join(cache_dir(), "runtime")
    dest_dir = os.path.join(runtimes, f"{tc.host_arch}-{key}")
    dest = os.path.join(dest_dir, "libmera_rt.a")
    if os.path.isfile(dest):
        with DirLock(runtimes, blocking=False) as lock:  # free: nobody is building, clean up
            if lock.held:
                _remove_partial_archives(runtimes)
        return dest, True
    try:
        os.makedirs(runtimes, exist_ok=True)
    except OSError as e:
        raise MeraIOError(f"cannot create the cache directory '{runtimes}': {e.strerror} "
                          "(set MERA_CACHE_DIR to a writable folder)") from None
    with DirLock(runtimes):  # one build of the archive at a time; the others then find it cached
        if os.path.isfile(dest):
            return dest, True
        _remove_partial_archives(runtimes)
        try:
            os.makedirs(dest_dir, exist_ok=True)
        except OSError as e:
            raise MeraIOError(f"cannot create the cache directory '{dest_dir}': {e.strerror} "
                              "(set MERA_CACHE_DIR to a writable folder)") from None
        _build_archive(tc, root, dest_dir, dest, log)
    return dest, False


def _remove_partial_archives(runtimes: str) -> None:
    """Delete what interrupted archive builds left in the cache (call with its lock held): work
    folders ``.build-*`` and archive folders without an archive."""
    for d in os.scandir(runtimes):
        if not d.is_dir(follow_symlinks=False):
            continue
        for w in os.scandir(d.path):
            if w.name.startswith(".build-") and w.is_dir(follow_symlinks=False):
                shutil.rmtree(w.path, ignore_errors=True)
        if not os.path.isfile(os.path.join(d.path, "libmera_rt.a")):
            shutil.rmtree(d.path, ignore_errors=True)


def _build_archive(tc: Toolchain, root: str, dest_dir: str, dest: str, log: bool) -> None:
    n = len(runtime_sources(root))
    if log:
        _log(f"mera.build: compiling the C runtime for {tc.host_arch} once ({n} files, {tc!r}); cached in {dest_dir}")
    with tempfile.TemporaryDirectory(prefix=".build-", dir=dest_dir) as work, \
            _progress.Progress(f"compiling the C runtime for {tc.host_arch}", n, "files") as bar:
        try:
            _runtime_archive.compile_archive(tc.cc, tc.ar, root, work, dest,  # same filesystem: atomic
                                             on_file=bar.update)
        except _runtime_archive.ArchiveBuildError as e:
            raise MeraError(str(e)) from None


# ---- deploy.so ---------------------------------------------------------------------------------

ENTRY_TEMPLATE = """\
/* Generated by mera.build: the entry point of deploy.so. It binds the C
 * runtime to one build: the deploy.json it wrote (embedded below; the
 * loader refuses a deploy.json that differs from it in any field), whose
 * params_file names the deploy.params (model id {model_id}). */
#include "runtime/runtime.h"

static const char build_json[{json_len} + 1] = {{
{json_bytes}
}};

__attribute__((visibility("default"))) mera_deploy *mera_deploy_create(const char *deploy_dir, int *status,
                                                                        char *err, size_t err_len)
{{
    return mera_rt_create_for_build(deploy_dir, "{model_id}", build_json, {json_len}, status, err, err_len);
}}
"""


def entry_source(model_id: str, deploy_json: str) -> str:
    """The C source of deploy.so's entry file for a build with ``model_id`` and ``deploy_json``."""
    if not re.fullmatch(r"[0-9a-f]{16}", model_id):
        raise MeraError(f"bad model id {model_id!r} from prepare_deploy")
    data = deploy_json.encode() + b"\0"
    rows = (", ".join(str(b) for b in data[i:i + 24]) for i in range(0, len(data), 24))
    return ENTRY_TEMPLATE.format(model_id=model_id, json_len=len(data) - 1, json_bytes=",\n".join(rows))


def link_deploy_so(tc: Toolchain, archive: str, model_id: str, out_path: str, deploy_json: str,
                   work_dir: Optional[str] = None) -> None:
    """Compile the entry file for ``model_id`` and ``deploy_json`` and link it with ``archive`` into
    ``out_path`` (one compiler run, the build's only C compile; intermediate files in a temporary
    folder in ``work_dir``, default the system temp folder)."""
    root = csrc_dir()
    with tempfile.TemporaryDirectory(prefix="mera-link-", dir=work_dir) as work:
        src = os.path.join(work, "deploy_entry.c")
        vs = os.path.join(work, "exports.map")
        with open(src, "w") as f:
            f.write(entry_source(model_id, deploy_json))
        with open(vs, "w") as f:
            f.write(EXPORTS_MAP)
        undefined = [f"-Wl,--undefined={s}" for s in ABI_FUNCTIONS if s != "mera_deploy_create"]
        _run([tc.cc, *RUNTIME_CFLAGS, "-I", root, "-shared", "-static-libgcc", "-o", out_path, src, *undefined,
              archive, f"-Wl,--version-script={vs}", "-Wl,-z,defs", "-Wl,-z,noexecstack", "-lm", "-lpthread"],
             "compiling deploy_entry.c and linking deploy.so")


# ---- mera.build --------------------------------------------------------------------------------

def _check_layout(mod: Module, layout: str) -> None:
    if not isinstance(layout, str) or layout not in ("NCHW", "NHWC"):
        raise ConfigError(f"build: layout must be 'NCHW' or 'NHWC', got {layout!r}")
    for i in mod.inputs:
        lay = i.get("layout")
        if len(i["shape"]) == 4 and lay in ("NCHW", "NHWC") and lay != layout:
            raise ConfigError(f"build: layout={layout!r} but input '{i['name']}' of the module is {lay} "
                              f"(shape {tuple(i['shape'])}); the layout is fixed when the model is imported: pass "
                              f"layout={lay!r}, or import with from_pytorch(..., layout={layout!r})")


def _check_aux_config(aux_config: Optional[Mapping[str, Any]]) -> None:
    if aux_config is None:
        return
    if not isinstance(aux_config, Mapping):
        raise ConfigError(f"build: aux_config must be a dict, got {type(aux_config).__name__}")
    unknown = sorted(set(aux_config) - set(AUX_CONFIG_KEYS))
    if unknown:
        raise ConfigError(f"build: unknown aux_config key(s) {', '.join(map(repr, unknown))}; "
                          f"valid keys: {', '.join(AUX_CONFIG_KEYS)}")


def _mib(n: int) -> str:
    return f"{n / 1048576:.1f} MiB"


def build(mod: Module, params: Optional[Mapping[str, Any]] = None, host_arch: str = "x86",
          output_dir: Optional[str] = None, layout: str = "NCHW",
          aux_config: Optional[Mapping[str, Any]] = None) -> Tuple[str, bytes, str]:
    """Build ``mod`` for the target of the active ``build_config`` into a deploy directory.

    Parameters
    ----------
    mod, params
        What a frontend returns.
    host_arch : {"x86", "arm"}
        The CPU deploy.so runs on: x86-64 Linux, or aarch64 Linux
        (cross-compiled with ``aarch64-linux-gnu-gcc``).
    output_dir : str, optional
        Created if missing. ``None`` (MERA wrote to a default folder): a new
        temporary directory ``mera_deploy_*`` under the system temp folder,
        printed in the log and returned as the directory of ``lib_path``.
    layout : {"NCHW", "NHWC"}
        As MERA's. The module carries the layout it was imported with; a
        different value is a :class:`mera.ConfigError`.
    aux_config : dict, optional
        MERA's keys (``weight_layout``, ...) are accepted; unknown keys are errors.

    Returns
    -------
    (json_str, params_bytes, lib_path)
        deploy.json's text, deploy.params' bytes and deploy.so's path, as MERA's
        ``(json, params, lib)``; ``mera.load_runtime_module(output_dir)`` runs them.
    """
    t_start = time.perf_counter()
    if not isinstance(mod, Module):
        raise ConfigError(f"build: expected a mera.ir.Module, got {type(mod).__name__}")
    cfg = require_build_config("build")
    if not isinstance(host_arch, str) or host_arch.lower() not in _HOST_ARCH_ALIASES:
        raise ConfigError(f"build: host_arch must be 'x86' or 'arm', got {host_arch!r}")
    host_arch = _HOST_ARCH_ALIASES[host_arch.lower()]
    _check_layout(mod, layout)
    _check_aux_config(aux_config)
    target = cfg.target
    tc = toolchain(host_arch)  # fail early, before the long part, on a missing compiler
    if output_dir is not None:
        if not isinstance(output_dir, (str, os.PathLike)):
            raise ConfigError(f"build: output_dir must be a path, got {type(output_dir).__name__}")
        output_dir = os.fspath(output_dir)
        try:
            os.makedirs(output_dir, exist_ok=True)
        except (OSError, ValueError) as e:  # ValueError: a NUL in the path
            raise MeraIOError(f"cannot create output_dir {output_dir!r}: {getattr(e, 'strerror', None) or e}") \
                from None
        if not os.access(output_dir, os.W_OK):
            raise MeraIOError(f"output_dir '{output_dir}' is not writable")

    runs_program = _core.backend_info(target.value)["runs_program"]
    if runs_program:
        so = simulator_options(cfg)
        where = f"{target.value} on {so['platform']}" + (f" (overrides: {so['overrides']})" if so["overrides"] else "")
    else:
        where = target.value
    _log(f"mera.build: '{mod.name}' for {where}, host {host_arch} -> "
         f"{output_dir if output_dir is not None else '(a new temporary directory)'}")

    t0 = time.perf_counter()
    dump_default = os.path.join(output_dir if output_dir is not None else ".", "dump_ir")
    compiled = compile_core(mod, params, target, cfg, default_dump_dir=dump_default, load=False)
    params_bytes, json_str, model_id = compiled.deploy_files(host_arch)
    del compiled
    t_prepare = time.perf_counter() - t0
    try:
        info = json.loads(json_str)
    except ValueError:
        info = {}
    if runs_program:
        _log_schedule(info, t_prepare)

    t0 = time.perf_counter()
    archive = packaged_runtime_archive(tc)
    if archive:
        how = "prebuilt at install"
    else:
        archive, cached = runtime_archive(tc)
        how = "cached" if cached else f"compiled in {time.perf_counter() - t0:.1f} s"
    # The transaction: link and write into a staging directory, then swap it in whole.
    with DeployTransaction(output_dir, log=_log) as tx:
        t0 = time.perf_counter()
        link_deploy_so(tc, archive, model_id, tx.path("deploy.so"), json_str, tx.staging)
        _log(f"mera.build: deploy.so linked in {time.perf_counter() - t0:.2f} s (runtime archive {how}: {archive})")
        so_size = os.path.getsize(tx.path("deploy.so"))
        tx.write("deploy.params", params_bytes)
        tx.write("deploy.json", json_str.encode())
        final_dir = tx.commit()
    lib_path = os.path.abspath(os.path.join(output_dir if output_dir is not None else final_dir, "deploy.so"))
    _log(f"mera.build: wrote deploy.so ({_mib(so_size)}), deploy.params ({_mib(len(params_bytes))}), "
         f"deploy.json; model id {model_id}; {time.perf_counter() - t_start:.1f} s in all")
    return json_str, params_bytes, lib_path


def _log_schedule(info: Dict[str, Any], seconds: float) -> None:
    """MERA's build-log lines of a scheduled target (Simulator, IP)."""
    _log(f"mera.build: scheduled in {seconds:.1f} s")
    latency = info.get("latency_us")
    if isinstance(latency, (int, float)):
        _log(f"Simulator total latency: {float(latency):.3f} us")


__all__ = ["build", "cache_dir", "csrc_dir", "packaged_runtime_archive", "runtime_archive", "toolchain",
           "RUNTIME_CFLAGS"]

"""``mera.load_runtime_module``: run a deploy directory from Python.

The directory's ``deploy.so`` is loaded with :mod:`ctypes` and driven
through its C ABI (``csrc/runtime/mera_deploy.h``), exactly as the C
inference app (``apps/inference``) drives it::

    rt = mera.load_runtime_module("resnet50_deploy")
    out = rt.set_input(0, x).run().get_output(0)
    rt.get_runtime_metrics()   # IP: [{"elapsed_latency": <device us>, ...}]

Loading a deploy.so runs its code, as with any shared library: load only
directories you trust (docs/deploy.md, "Trust boundary"). deploy.json and
deploy.params are data, which the runtime validates (a corrupt or
mismatched file is a :class:`mera.FormatError`). Before deploy.so is
loaded, this loader checks that it is a regular file of at most
``DEPLOY_SO_MAX_BYTES`` with sane ELF headers; it loads a private copy
(removed at once; the module keeps only its mapping) and unloads it with
``close()`` or when the module is garbage-collected.
"""

from __future__ import annotations

import ctypes
import json
import os
import platform
import shutil
import stat
import struct
import tempfile
import threading
from typing import Any, Dict, List, Mapping, Optional, Tuple, Union

import numpy as np

from . import _core, _valid_rows
from .errors import FormatError, MeraError, MeraIOError, MeraMemoryError, RuntimeInputError, UnsupportedError
from .runner import _as_array

MAX_RANK = 6
ERR_LEN = 1024
#: The largest deploy.so the loader accepts (a real one is a few MiB).
DEPLOY_SO_MAX_BYTES = 256 << 20

_DTYPES = {0: np.dtype(np.float32), 1: np.dtype(np.int8), 2: np.dtype(np.uint8), 3: np.dtype(np.int32),
           4: np.dtype(np.int64)}


class _TensorInfo(ctypes.Structure):
    _fields_ = [("name", ctypes.c_char_p), ("dtype", ctypes.c_int), ("rank", ctypes.c_int),
                ("shape", ctypes.c_int64 * MAX_RANK), ("nbytes", ctypes.c_size_t)]


class _Metrics(ctypes.Structure):
    _fields_ = [("target", ctypes.c_char_p), ("platform", ctypes.c_char_p), ("device", ctypes.c_char_p),
                ("last_run_us", ctypes.c_double), ("device_us", ctypes.c_double),
                ("device_cycles", ctypes.c_int64), ("weights_bytes", ctypes.c_size_t),
                ("arena_bytes", ctypes.c_size_t), ("host_us", ctypes.c_double), ("clock_mhz", ctypes.c_double)]


# mera_deploy_status -> exception class
_ERRORS = {1: RuntimeInputError, 2: FormatError, 3: MeraIOError, 4: MeraMemoryError, 5: RuntimeInputError,
           6: UnsupportedError}


def _raise(status: int, err: Any, what: str) -> None:
    msg = err.value.decode("utf-8", "replace") if err is not None and err.value else f"{what} failed"
    raise _ERRORS.get(status, MeraError)(msg)


def _bind(lib: ctypes.CDLL) -> None:
    P, I, S, E = ctypes.c_void_p, ctypes.c_int, ctypes.c_size_t, ctypes.c_char_p
    sigs = {
        "mera_deploy_abi_version": (I, []),
        "mera_deploy_create": (P, [E, ctypes.POINTER(I), ctypes.c_char_p, S]),
        "mera_deploy_destroy": (None, [P]),
        "mera_deploy_num_inputs": (I, [P]),
        "mera_deploy_num_outputs": (I, [P]),
        "mera_deploy_input_info": (I, [P, I, ctypes.POINTER(_TensorInfo), ctypes.c_char_p, S]),
        "mera_deploy_output_info": (I, [P, I, ctypes.POINTER(_TensorInfo), ctypes.c_char_p, S]),
        "mera_deploy_set_input": (I, [P, I, P, S, ctypes.c_char_p, S]),
        "mera_deploy_run": (I, [P, ctypes.c_char_p, S]),
        "mera_deploy_get_output": (I, [P, I, P, S, ctypes.c_char_p, S]),
        "mera_deploy_get_metrics": (I, [P, ctypes.POINTER(_Metrics)]),
    }
    for name, (res, args) in sigs.items():
        try:
            f = getattr(lib, name)
        except AttributeError:
            raise FormatError(f"deploy.so does not export {name}: not a mera deploy library") from None
        f.restype = res
        f.argtypes = args


#: ELF e_machine -> (name, mera.build's host_arch) of the machines deploy.so is built for.
ELF_MACHINES = {62: ("x86-64", "x86"), 183: ("aarch64", "arm")}


def _this_elf_machine() -> Optional[int]:
    m = platform.machine().lower()
    return 62 if m in ("x86_64", "amd64") else 183 if m in ("aarch64", "arm64") else None


def _check_machine(path: str, e_machine: int) -> None:
    """dlopen says "cannot open shared object file: No such file or directory" for a library of another
    machine: say which machine it was built for instead."""
    here = _this_elf_machine()
    if here is None or e_machine == here:
        return
    built, arch = ELF_MACHINES.get(e_machine, (f"ELF machine type {e_machine}", None))
    how = f" (mera.build host_arch={arch!r})" if arch else ""
    raise UnsupportedError(f"'{path}' was built for {built}{how}, but this machine is {ELF_MACHINES[here][0]}: "
                           f"run it on a {built} machine, or rebuild the directory with "
                           f"host_arch={ELF_MACHINES[here][1]!r}")


def _check_elf(path: str, fd: int, size: int) -> None:
    """dlopen maps a library without checking that the file holds what its headers describe, and
    a truncated one crashes the loader (SIGBUS): check the ELF headers against the size first,
    reading only the headers."""
    try:
        head = os.pread(fd, 64, 0)
    except OSError as e:
        raise MeraIOError(f"cannot read '{path}': {e.strerror}") from None
    if size < 64 or len(head) < 64 or head[:4] != b"\x7fELF":
        raise FormatError(f"'{path}' is not a shared library (no ELF header): a corrupt deploy directory")
    if head[4] != 2 or head[5] != 1:
        raise FormatError(f"'{path}' is not a 64-bit little-endian ELF library")
    etype, = struct.unpack_from("<H", head, 16)
    if etype != 3:  # ET_DYN
        raise FormatError(f"'{path}' is not a shared library (ELF type {etype})")
    _check_machine(path, struct.unpack_from("<H", head, 18)[0])
    phoff, shoff = struct.unpack_from("<QQ", head, 32)
    phentsize, phnum, shentsize, shnum = struct.unpack_from("<HHHH", head, 54)
    if phentsize != 56 or phnum == 0 or phoff + phnum * 56 > size or (shnum and shoff + shnum * shentsize > size):
        raise FormatError(f"'{path}' is truncated or corrupt: its ELF headers describe more than its {size} bytes")
    try:
        table = os.pread(fd, phnum * 56, phoff)
    except OSError as e:
        raise MeraIOError(f"cannot read '{path}': {e.strerror}") from None
    for i in range(phnum):
        offset, = struct.unpack_from("<Q", table, i * 56 + 8)
        filesz, = struct.unpack_from("<Q", table, i * 56 + 32)
        if offset + filesz > size:
            raise FormatError(f"'{path}' is truncated: segment {i} ends at byte {offset + filesz} of {size}")


def _libdl() -> ctypes.CDLL:
    """dlopen/dlerror/dlclose (libc since glibc 2.34, libdl before)."""
    for name in ("libc.so.6", "libdl.so.2"):
        try:
            lib = ctypes.CDLL(name)
            lib.dlopen.restype, lib.dlopen.argtypes = ctypes.c_void_p, [ctypes.c_char_p, ctypes.c_int]
            lib.dlerror.restype, lib.dlerror.argtypes = ctypes.c_char_p, []
            lib.dlclose.restype, lib.dlclose.argtypes = ctypes.c_int, [ctypes.c_void_p]
            return lib
        except (OSError, AttributeError):
            continue
    raise UnsupportedError("mera.load_runtime_module needs dlopen (glibc's libc.so.6 or libdl.so.2)")


_DL: Optional[ctypes.CDLL] = None


def _open_regular(path: str, what: str, max_bytes: int) -> int:
    """A read-only descriptor of path, refused unless it is a regular file of at most max_bytes;
    O_NONBLOCK so that a FIFO in its place cannot block the open."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_NOCTTY", 0))
    except OSError as e:
        raise MeraIOError(f"{what}: cannot open '{path}': {e.strerror}") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            kind = ("a directory" if stat.S_ISDIR(st.st_mode) else "a FIFO" if stat.S_ISFIFO(st.st_mode)
                    else "a device" if stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode) else "not a file")
            raise MeraIOError(f"{what}: '{path}' is not a regular file ({kind})")
        if st.st_size > max_bytes:
            raise FormatError(f"{what}: '{path}' has {st.st_size} bytes, more than the limit of {max_bytes}")
        return fd
    except BaseException:
        os.close(fd)
        raise


def _copy_fd(src: int, dst: int, size: int) -> None:
    """Copy size bytes in the kernel (no Python buffer holds the library)."""
    done = 0
    while done < size:
        try:
            n = os.sendfile(dst, src, done, size - done)
        except OSError as e:
            raise MeraIOError(f"cannot copy deploy.so: {e.strerror}") from None
        if n == 0:
            raise FormatError(f"deploy.so shrank while it was copied ({done} of {size} bytes)")
        done += n


def _load_library(path: str) -> Tuple[ctypes.CDLL, int]:
    """dlopen a private copy of ``path``; returns the library and its dlopen handle (for dlclose).

    The copy has a fresh name and inode, so the dynamic loader never hands back another,
    already loaded deploy.so (it matches by path and by inode), and a deploy.so changed in place
    after loading cannot change the code that runs. The copy is unlinked once loaded; its
    mapping goes with dlclose."""
    global _DL
    if _DL is None:
        _DL = _libdl()
    src = _open_regular(path, "deploy.so", DEPLOY_SO_MAX_BYTES)
    tmp = None
    try:
        size = os.fstat(src).st_size
        try:
            fd, tmp = tempfile.mkstemp(prefix="mera-deploy-", suffix=".so")
        except OSError as e:
            raise MeraIOError(f"cannot make a private copy of '{path}' in {tempfile.gettempdir()}: "
                              f"{e.strerror or e}") from None
        try:
            _copy_fd(src, fd, size)
            _check_elf(path, fd, os.fstat(fd).st_size)
        finally:
            os.close(fd)
        h = _DL.dlopen(os.fsencode(tmp), getattr(os, "RTLD_LOCAL", 0) | getattr(os, "RTLD_NOW", 2))
        if not h:
            msg = _DL.dlerror()
            text = msg.decode("utf-8", "replace") if msg else "unknown error"
            raise FormatError(f"cannot load '{path}': {text}")
        try:
            return ctypes.CDLL(tmp, handle=h), h
        except BaseException:
            _DL.dlclose(h)
            raise
    finally:
        os.close(src)
        if tmp is not None:
            try:
                os.unlink(tmp)
            except OSError:
                pass


class _Tensor:
    def __init__(self, info: _TensorInfo):
        self.name = info.name.decode("utf-8", "replace") if info.name else ""
        if info.dtype not in _DTYPES:
            raise FormatError(f"tensor '{self.name}': unknown dtype code {info.dtype}")
        if not 0 <= info.rank <= MAX_RANK:
            raise FormatError(f"tensor '{self.name}': bad rank {info.rank}")
        self.dtype = _DTYPES[info.dtype]
        self.shape = tuple(int(info.shape[i]) for i in range(info.rank))
        self.nbytes = int(info.nbytes)

    def describe(self) -> str:
        s = ", ".join(map(str, self.shape)) + ("," if len(self.shape) == 1 else "")
        return f"({s}) {self.dtype}"

    def as_dict(self) -> Dict[str, Any]:
        return {"name": self.name, "shape": self.shape, "dtype": str(self.dtype)}


class DeployModule:
    """A loaded deploy directory: MERA's runtime module API.

    ``set_input`` (chainable), ``run`` (chainable), ``get_output(i)``,
    ``get_outputs()``, ``get_num_inputs()``, ``get_num_outputs()``,
    ``get_runtime_metrics()``, ``close()`` (also ``with ... as rt``).

    Threads: ``rt(x)`` is one call from setting the inputs to reading the
    outputs, on an execution context of its own (the module's handle, or
    up to ``max_contexts - 1`` extra handles over the same directory), so
    threads sharing one module each get the outputs of their own inputs and
    run in parallel. The chained form ``set_input(..).run().get_outputs()``
    is three calls on the module's own handle (each under its lock):
    another thread may run in between, so use ``rt(x)`` from threads.
    """

    def __init__(self, deploy_dir: str):
        self._h = None
        self.deploy_dir = os.path.abspath(_path(deploy_dir, "deploy_dir"))
        lib_path = os.path.join(self.deploy_dir, "deploy.so")
        if not os.path.lexists(lib_path):
            raise MeraIOError(f"'{lib_path}' does not exist: not a deploy directory (mera.build writes deploy.so, "
                              "deploy.params and deploy.json)")
        self._lib, self._dl_handle = _load_library(lib_path)
        try:
            _bind(self._lib)
            abi = self._lib.mera_deploy_abi_version()
            if abi != _core.DEPLOY_ABI_VERSION:
                raise FormatError(f"'{lib_path}' implements deploy ABI version {abi}; this mera speaks version "
                                  f"{_core.DEPLOY_ABI_VERSION}: rebuild the directory with this mera's mera.build")
            err = ctypes.create_string_buffer(ERR_LEN)
            status = ctypes.c_int(-1)
            h = self._lib.mera_deploy_create(os.fsencode(self.deploy_dir), ctypes.byref(status), err, ERR_LEN)
            if not h:
                _raise(status.value, err, "loading the deploy directory")
        except BaseException:
            self._unload()
            raise
        self._h = ctypes.c_void_p(h)
        self._lock = threading.RLock()
        self._inputs = [self._info(self._lib.mera_deploy_input_info, i)
                        for i in range(self._lib.mera_deploy_num_inputs(self._h))]
        self._outputs = [self._info(self._lib.mera_deploy_output_info, i)
                         for i in range(self._lib.mera_deploy_num_outputs(self._h))]
        self._plan = self._valid_rows_plan()
        self._visible = _valid_rows.visible(self._plan)
        self._set = [False] * len(self._inputs)
        self._ran = False
        self._pool = threading.Condition()
        self._free: List[ctypes.c_void_p] = []
        self._busy = 0
        self._n_extra = 0
        self._waitable = True
        #: The most inferences rt(x) runs at once (the module's handle and extra ones).
        self.max_contexts = max(1, os.cpu_count() or 1)

    def _valid_rows_plan(self) -> "_valid_rows.Plan":
        """Which outputs are cut to a count output's valid rows (deploy.json's ``valid_rows``; mera/_valid_rows.py)."""
        path = os.path.join(self.deploy_dir, "deploy.json")
        try:
            with open(path, "rb") as f:
                outs = json.loads(f.read().decode("utf-8"))["outputs"]
            plan = _valid_rows.plan_from_json(outs)
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise FormatError(f"'{path}': cannot read its outputs' valid_rows ({type(e).__name__}: {e})") from None
        n = len(self._outputs)
        if len(plan) != n or any(p is not None and not (0 <= p[1] < n and self._outputs[p[1]].dtype == np.int64
                                                        and -len(self._outputs[k].shape) <= p[0]
                                                        < len(self._outputs[k].shape))
                                 for k, p in enumerate(plan)):
            raise FormatError(f"'{path}': outputs[].valid_rows does not fit the outputs")
        return plan

    def _unload(self) -> None:
        h = getattr(self, "_dl_handle", None)
        self._lib = None
        self._dl_handle = None
        if h and _DL is not None:
            _DL.dlclose(h)

    def close(self) -> None:
        """Free the loaded model and unload its deploy.so (mapping and all). Idempotent; the
        module cannot run afterwards."""
        lock = getattr(self, "_lock", None)
        if lock is not None:
            lock.acquire()
        try:
            h = getattr(self, "_h", None)
            self._h = None
            pool = getattr(self, "_pool", None)
            if pool is not None:
                with pool:
                    pool.notify_all()
                    while self._busy:
                        pool.wait()
                    for extra in self._free:
                        self._lib.mera_deploy_destroy(extra)
                    self._free = []
            if h is not None and h.value and self._lib is not None:
                self._lib.mera_deploy_destroy(h)
            self._unload()
        finally:
            if lock is not None:
                lock.release()

    def __enter__(self) -> "DeployModule":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def _live(self) -> None:
        if self._h is None:
            raise RuntimeInputError(f"the module of '{self.deploy_dir}' was closed")

    def _info(self, fn: Any, i: int) -> _Tensor:
        info = _TensorInfo()
        err = ctypes.create_string_buffer(ERR_LEN)
        st = fn(self._h, i, ctypes.byref(info), err, ERR_LEN)
        if st:
            _raise(st, err, "reading tensor info")
        return _Tensor(info)

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # interpreter shutdown: nothing left to report to
            pass

    # ---- descriptions -----------------------------------------------------------------------

    @property
    def input_names(self) -> List[str]:
        return [t.name for t in self._inputs]

    @property
    def inputs(self) -> List[Dict[str, Any]]:
        """Name, shape and dtype of every input, in order."""
        return [t.as_dict() for t in self._inputs]

    @property
    def outputs(self) -> List[Dict[str, Any]]:
        """Name, shape and dtype of every output, in order (the count outputs that others are cut by left out;
        a cut output's shape is its largest)."""
        return [self._outputs[k].as_dict() for k in self._visible]

    def get_num_inputs(self) -> int:
        return len(self._inputs)

    def get_num_outputs(self) -> int:
        return len(self._visible)

    # ---- running ------------------------------------------------------------------------------

    def _index(self, key: Union[int, str]) -> int:
        if isinstance(key, str):
            names = self.input_names
            if key not in names:
                raise RuntimeInputError(f"unknown input name '{key}'; inputs are: {', '.join(names)}")
            return names.index(key)
        if isinstance(key, (int, np.integer)) and not isinstance(key, bool):
            n = len(self._inputs)
            if not 0 <= int(key) < n:
                raise RuntimeInputError(f"input index {key} is out of range: the model has {n} input(s)")
            return int(key)
        raise RuntimeInputError(f"input key must be an index or a name, got {type(key).__name__}")

    def _checked(self, i: int, data: Any) -> np.ndarray:
        """Input i as a C-contiguous native array of its declared dtype and shape."""
        t = self._inputs[i]
        a = _as_array(data, t.name)
        if a.dtype != t.dtype or a.shape != t.shape:
            s = ", ".join(map(str, a.shape)) + ("," if a.ndim == 1 else "")
            raise RuntimeInputError(f"input '{t.name}': expected {t.describe()}, got ({s}) {a.dtype}")
        a = np.ascontiguousarray(a)
        if not a.dtype.isnative:
            raise RuntimeInputError(f"input '{t.name}': the array is not in native byte order")
        return a

    def _set_on(self, h: ctypes.c_void_p, i: int, a: np.ndarray) -> None:
        err = ctypes.create_string_buffer(ERR_LEN)
        st = self._lib.mera_deploy_set_input(h, i, a.ctypes.data, a.nbytes, err, ERR_LEN)
        if st:
            _raise(st, err, f"set_input '{self._inputs[i].name}'")

    def _set_one(self, i: int, data: Any) -> None:
        self._set_on(self._h, i, self._checked(i, data))
        self._set[i] = True

    def _run_on(self, h: ctypes.c_void_p, arrays: List[np.ndarray]) -> List[np.ndarray]:
        """Set every input, run and read every output on handle h (the caller owns h)."""
        for i, a in enumerate(arrays):
            self._set_on(h, i, a)
        err = ctypes.create_string_buffer(ERR_LEN)
        st = self._lib.mera_deploy_run(h, err, ERR_LEN)
        if st:
            _raise(st, err, "run")
        outs = []
        for i, t in enumerate(self._outputs):
            out = np.empty(t.shape, t.dtype)
            st = self._lib.mera_deploy_get_output(h, i, out.ctypes.data, out.nbytes, err, ERR_LEN)
            if st:
                _raise(st, err, f"get_output {i}")
            outs.append(out)
        return _valid_rows.trim(self._plan, outs)

    # ---- execution contexts for rt(x) from many threads -----------------------------------------

    def _take_context(self) -> Optional[ctypes.c_void_p]:
        """A free extra handle over the same directory, a new one while there are fewer than
        ``max_contexts - 1``, or None when none can be had (the caller then waits for the
        module's own handle)."""
        with self._pool:
            while True:
                self._live()
                if self._free:
                    self._busy += 1
                    return self._free.pop()
                if self._n_extra < self.max_contexts - 1:
                    self._n_extra += 1
                    self._busy += 1
                    break
                if not self._waitable:
                    return None
                self._pool.wait()
        err = ctypes.create_string_buffer(ERR_LEN)
        status = ctypes.c_int(-1)
        h = self._lib.mera_deploy_create(os.fsencode(self.deploy_dir), ctypes.byref(status), err, ERR_LEN)
        if not h:  # e.g. the directory was rebuilt or removed since: use the module's own handle
            with self._pool:
                self._n_extra -= 1
                self._busy -= 1
                self._waitable = False
                self._pool.notify_all()
            return None
        return ctypes.c_void_p(h)

    def _give_back(self, h: ctypes.c_void_p) -> None:
        with self._pool:
            self._free.append(h)
            self._busy -= 1
            self._pool.notify_all()

    def set_input(self, key: Any = None, value: Any = None, **named: Any) -> "DeployModule":
        """Set inputs; returns self for chaining. Forms: ``set_input(i_or_name, array)`` (MERA's
        graph runtime), ``set_input(array)`` for a one-input model, ``set_input([a, b])``,
        ``set_input({"input0": a})`` and ``set_input(input0=a)``."""
        with self._lock:
            self._live()
            if key is None:
                if value is not None or not named:
                    raise RuntimeInputError("set_input: pass an array, an index or name and an array, a list, a "
                                            "dict, or name=array keywords")
            elif value is not None:
                self._set_one(self._index(key), value)
            elif isinstance(key, Mapping):
                for k, v in key.items():
                    self._set_one(self._index(k), v)
            elif isinstance(key, (list, tuple)):
                if len(key) != len(self._inputs):
                    raise RuntimeInputError(f"the model takes {len(self._inputs)} input(s) "
                                            f"({', '.join(self.input_names)}), got {len(key)}")
                for i, v in enumerate(key):
                    self._set_one(i, v)
            else:
                if len(self._inputs) != 1:
                    raise RuntimeInputError(f"the model takes {len(self._inputs)} inputs "
                                            f"({', '.join(self.input_names)}); pass an index or name, a list or a dict")
                self._set_one(0, key)
            for k, v in named.items():
                self._set_one(self._index(k), v)
        return self

    def run(self, *inputs: Any) -> "DeployModule":
        """Run one inference on the inputs set last (or on ``inputs``, one array per input)."""
        with self._lock:
            self._live()
            if inputs:
                self.set_input(list(inputs))
            missing = [t.name for t, s in zip(self._inputs, self._set) if not s]
            if missing:
                raise RuntimeInputError(f"run() before set_input(): input(s) {', '.join(missing)} not set")
            err = ctypes.create_string_buffer(ERR_LEN)
            st = self._lib.mera_deploy_run(self._h, err, ERR_LEN)
            if st:
                _raise(st, err, "run")
            self._ran = True
        return self

    def get_output(self, i: int) -> np.ndarray:
        """Output ``i`` of the last run, as a new array (cut to its valid rows: mera/_valid_rows.py)."""
        n = len(self._visible)
        if isinstance(i, bool) or not isinstance(i, (int, np.integer)) or not -n <= int(i) < n:
            raise RuntimeInputError(f"output index {i!r} is out of range: the model has {n} output(s)")
        k = self._visible[int(i) % n]
        return _valid_rows.trim_one(self._plan, k, self._raw_output(k), self._raw_output)

    def _raw_output(self, i: int) -> np.ndarray:
        """Output ``i`` of the deploy runtime at its full size."""
        with self._lock:
            self._live()
            if not self._ran:
                raise RuntimeInputError("get_output() before run()")
            t = self._outputs[i]
            out = np.empty(t.shape, t.dtype)
            err = ctypes.create_string_buffer(ERR_LEN)
            st = self._lib.mera_deploy_get_output(self._h, i, out.ctypes.data, out.nbytes, err, ERR_LEN)
            if st:
                _raise(st, err, f"get_output {i}")
        return out

    def get_outputs(self) -> List[np.ndarray]:
        with self._lock:
            return [self.get_output(i) for i in range(len(self._visible))]

    def __call__(self, *inputs: Any) -> List[np.ndarray]:
        """Run on ``inputs`` (one array per input) and return the outputs. One call from setting
        the inputs to reading the outputs: safe from many threads, each caller gets the outputs
        of its own inputs, and concurrent callers run in parallel on up to ``max_contexts``
        execution contexts (extra handles over the same directory, made when first needed;
        they share deploy.params' pages)."""
        if not inputs:
            with self._lock:
                return self.run().get_outputs()
        if len(inputs) != len(self._inputs):
            raise RuntimeInputError(f"the model takes {len(self._inputs)} input(s) "
                                    f"({', '.join(self.input_names)}), got {len(inputs)}")
        arrays = [self._checked(i, v) for i, v in enumerate(inputs)]
        if self._lock.acquire(blocking=False):
            try:
                return self._call_own(arrays)
            finally:
                self._lock.release()
        h = self._take_context()
        if h is None:
            with self._lock:
                return self._call_own(arrays)
        try:
            return self._run_on(h, arrays)
        finally:
            self._give_back(h)

    def _call_own(self, arrays: List[np.ndarray]) -> List[np.ndarray]:
        self._live()
        outs = self._run_on(self._h, arrays)
        self._set = [True] * len(self._inputs)
        self._ran = True
        return outs

    def metrics(self) -> Dict[str, Any]:
        """The C runtime's metrics (mera_deploy_metrics) as a dict."""
        m = _Metrics()
        with self._lock:
            self._live()
            st = self._lib.mera_deploy_get_metrics(self._h, ctypes.byref(m))
        if st:
            raise MeraError(f"mera_deploy_get_metrics failed with status {st}")
        dec = (lambda b: b.decode("utf-8", "replace") if b else "")
        return {"target": dec(m.target), "platform": dec(m.platform), "device": dec(m.device),
                "last_run_us": m.last_run_us, "device_us": m.device_us, "device_cycles": int(m.device_cycles),
                "weights_bytes": int(m.weights_bytes), "arena_bytes": int(m.arena_bytes), "host_us": m.host_us,
                "clock_mhz": m.clock_mhz}

    @property
    def target(self) -> str:
        return self.metrics()["target"]

    def get_runtime_metrics(self) -> List[Dict[str, Any]]:
        """MERA's metrics list, one dict: under MERA's key for the target (Simulator ``sim_time_us``,
        IP ``elapsed_latency``) the modelled end-to-end latency of one inference in us, ``total_us``
        (the same), ``device_us`` (the device alone: ``device_cycles`` at ``clock_mhz``), ``host_us``
        (the timing model's host time: host nodes, PCIe, the call); and ``host_run_us`` (this host's
        wall time of the last run), ``weights_bytes``, ``arena_bytes``, ``target``, ``platform``,
        ``device``. The modelled figures are those of the Simulator's runner (mera.compile)."""
        m = self.metrics()
        d: Dict[str, Any] = {}
        key = _core.backend_info(m["target"])["mera_time_key"]  # sim_time_us, elapsed_latency, or none
        if key:
            d[key] = m["device_us"] + m["host_us"]
            d.update({"total_us": m["device_us"] + m["host_us"], "device_us": m["device_us"],
                      "device_cycles": m["device_cycles"], "clock_mhz": m["clock_mhz"], "host_us": m["host_us"]})
        else:
            d.update({"device_us": m["device_us"], "device_cycles": m["device_cycles"]})
        d.update({"host_run_us": m["last_run_us"], "weights_bytes": m["weights_bytes"],
                  "arena_bytes": m["arena_bytes"], "target": m["target"], "platform": m["platform"],
                  "device": m["device"]})
        return [d]

    def __repr__(self) -> str:
        return f"<mera.DeployModule '{self.deploy_dir}'>"

    def _repr_html_(self) -> str:
        from .report import deploy_module_html
        return deploy_module_html(self)


def _same_file_content(path: str, data: bytes) -> bool:
    try:
        fd = _open_regular(path, "deploy file", len(data))
    except MeraError:
        return False
    try:
        if os.fstat(fd).st_size != len(data):
            return False
        with os.fdopen(fd, "rb", closefd=False) as f:
            return f.read() == data
    except OSError:
        return False
    finally:
        os.close(fd)


def _path(p: Any, what: str) -> str:
    try:
        s = os.fsdecode(os.fspath(p))
    except TypeError:
        raise RuntimeInputError(f"{what} must be a path (str or os.PathLike), got {type(p).__name__}") from None
    if "\0" in s:
        raise RuntimeInputError(f"{what} {s!r} contains a NUL character")
    return s


def load_runtime_module(deploy_dir: Any, params: Optional[Union[bytes, bytearray]] = None,
                        lib_path: Optional[str] = None) -> DeployModule:
    """Load a deploy directory written by :func:`mera.build`.

    ``load_runtime_module(deploy_dir)``; or MERA's ``load_runtime_module(json, params, lib_path)``
    with what ``mera.build`` returned (the triple's files are used in place when they are the
    ones in ``lib_path``'s directory, else copied into a temporary directory).
    """
    if params is None and lib_path is None:
        if isinstance(deploy_dir, tuple) and len(deploy_dir) == 3:
            return load_runtime_module(*deploy_dir)
        return DeployModule(_path(deploy_dir, "deploy_dir"))
    if params is None or lib_path is None or not isinstance(deploy_dir, str) or \
            not isinstance(params, (bytes, bytearray, memoryview)):
        raise RuntimeInputError("load_runtime_module takes a deploy directory, or (json_str, params_bytes, lib_path)")
    lib_path = _path(lib_path, "lib_path")
    json_bytes = deploy_dir.encode("utf-8", "surrogateescape")
    params = bytes(params)
    d = os.path.dirname(os.path.abspath(lib_path))
    if (_same_file_content(os.path.join(d, "deploy.json"), json_bytes)
            and _same_file_content(os.path.join(d, "deploy.params"), params)):
        return DeployModule(d)
    try:
        with tempfile.TemporaryDirectory(prefix="mera-rt-") as tmp:
            src = _open_regular(lib_path, "deploy.so", DEPLOY_SO_MAX_BYTES)
            try:
                fd = os.open(os.path.join(tmp, "deploy.so"), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o700)
                try:
                    _copy_fd(src, fd, os.fstat(src).st_size)
                finally:
                    os.close(fd)
            finally:
                os.close(src)
            with open(os.path.join(tmp, "deploy.json"), "wb") as f:
                f.write(json_bytes)
            with open(os.path.join(tmp, "deploy.params"), "wb") as f:
                f.write(params)
            return DeployModule(tmp)  # the runtime has read the data files when create returns
    except MeraError:
        raise
    except OSError as e:
        raise MeraIOError(f"cannot stage the deploy files in a temporary directory: {e.strerror or e}") from None


__all__ = ["load_runtime_module", "DeployModule"]

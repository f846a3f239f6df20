"""MERA 1.x / 2.x's deployment API: a project directory, model loaders, deployments, runners.

The scripts of MERA's 1.x tutorials run with their import lines changed (only
torchvision's, to ``mera.models``)::

    with mera.TVMDeployer("deployment_resnet50", overwrite=True) as deployer:
        model = mera.ModelLoader(deployer).from_pytorch("resnet50.pt", {"input0": ((1, 224, 224, 3), "float32")})
        deploy = deployer.deploy(model, mera_platform=Platform.DNAF200L0003, target=Target.Simulator)
    outputs = deploy.get_runner().set_input(x).run().get_outputs()

Everything is built on the entry points of the 2021 flow: a deploy is
``mera.build`` under ``mera.build_config`` into ``build/<Target>/result``,
and a runner is :func:`mera.load_runtime_module` of that folder. The project
is laid out as MERA's (``project.mdp``, ``model/``, ``build/<Target>/``,
``data/``, ``logs/``); docs/api.md lists what maps to what and what cannot
apply here (power metrics, device selection).
"""

from __future__ import annotations

import contextlib
import enum
import fcntl
import io
import json
import os
import platform as _platform
import shutil
import sys
import time
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from ._fileio import atomic_write_bytes
from .build import build
from . import config as _config
from .config import Target, resolve_arch
from .deploy_runtime import DeployModule, load_runtime_module
from .errors import ConfigError, FormatError, MeraIOError, UnsupportedError
from .ir import Module

#: The project file MERA writes at the root of a deployment project.
PROJECT_FILE = "project.mdp"
PROJECT_VERSION = 1
#: The files of a built target, in ``build/<Target>/result``.
DEPLOY_FILES = ("deploy.so", "deploy.json", "deploy.params")
#: MERA 1.x's default platform of ``deploy``.
DEFAULT_PLATFORM = "DNAF200L0003"


class Layout(str, enum.Enum):
    """The data layout of a model's 4-D inputs (MERA's ``mera.Layout``)."""

    NCHW = "NCHW"
    NHWC = "NHWC"

    def __str__(self) -> str:
        return self.value


class DeviceTarget(enum.Enum):
    """MERA's runtime devices (``mera.DeviceTarget``). Here every one of them is served by the
    IP target's HAL device (the built-in software emulation of the IP, or ``MERA_IP_DEVICE``):
    the choice is recorded, not acted on."""

    SAKURA_1 = ("Sakura-1", 1)
    XILINX_U50 = ("AMD Xilinx U50", 2)
    INTEL_IA420 = ("Intel IA420", 3)
    SAKURA_2 = ("Sakura-2", 5)

    def __init__(self, display: str, code: int):
        self.display = display
        self.code = code

    def __str__(self) -> str:
        return self.display


def _device_target(value: Any) -> DeviceTarget:
    if isinstance(value, DeviceTarget):
        return value
    for d in DeviceTarget:
        if (isinstance(value, int) and not isinstance(value, bool) and value == d.code) or value == d.name:
            return d
    raise ConfigError(f"get_runner: device_target must be a mera.DeviceTarget "
                      f"({', '.join(f'{d.name}={d.code}' for d in DeviceTarget)}), got {value!r}")


def _target(value: Any) -> Target:
    if isinstance(value, Target):
        return value
    name = value.value if isinstance(value, enum.Enum) else value
    try:
        return Target(name)
    except ValueError:
        raise ConfigError(f"deploy: unknown target {value!r}; this mera builds for {', '.join(t.value for t in Target)} "
                          "(MERA's VerilatorSimulator and BF16 targets are not available)") from None


def _layout(value: Any) -> str:
    v = value.value if isinstance(value, enum.Enum) else value
    if v not in ("NCHW", "NHWC"):
        raise ConfigError(f"layout must be Layout.NCHW or Layout.NHWC, got {value!r}")
    return v


def _host_arch(value: Optional[str]) -> str:
    """MERA's default: the machine this runs on."""
    if value is not None:
        return value
    machine = _platform.machine().lower()
    if machine in ("x86_64", "amd64", "i386", "i686"):
        return "x86"
    if machine in ("aarch64", "arm64"):
        return "arm"
    raise ConfigError(f"deploy: host_arch not given and this machine ({machine!r}) is neither x86 nor arm; "
                      "pass host_arch='x86' or 'arm'")


def _json_text(data: Any) -> bytes:
    # JSON is a subset of YAML: MERA's YAML readers (yaml.safe_load) read these files too.
    return (json.dumps(data, indent=4, sort_keys=True) + "\n").encode()


# ---- the project directory ------------------------------------------------------------------

def _lock_dir(root: str) -> int:
    """An exclusive flock on the directory (MERA's project lock); the fd holds it."""
    fd = os.open(root, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise MeraIOError(f"the MERA project '{root}' is in use by another deployer") from None
    return fd


def _probe_lock(root: str) -> None:
    os.close(_lock_dir(root))


class _Tee(io.TextIOBase):
    """What mera.build prints goes to the console and to the project's log (logs/mera.log)."""

    def __init__(self, console: Any, log: Any):
        self.console, self.log = console, log

    def write(self, s: str) -> int:
        self.console.write(s)
        self.log.write(s)
        return len(s)

    def flush(self) -> None:
        self.console.flush()
        self.log.flush()


class _Project:
    """A MERA deployment project: ``project.mdp`` lists its artifacts by section (a target name,
    ``model``, ``data``, ``metrics``), paths relative to the root."""

    def __init__(self, root: str, overwrite: bool):
        root = os.path.abspath(os.fspath(root))
        if os.path.exists(root) and not os.path.isdir(root):
            raise MeraIOError(f"project path '{root}' exists and is not a directory")
        if overwrite and os.path.isfile(os.path.join(root, PROJECT_FILE)):
            _probe_lock(root)  # never remove a project another deployer holds
            shutil.rmtree(root)  # only ever a MERA project (it has project.mdp), as MERA did
        try:
            os.makedirs(os.path.join(root, "logs"), exist_ok=True)
        except OSError as e:
            raise MeraIOError(f"cannot create the project directory '{root}': {e.strerror}") from None
        self.root = root
        self.artifacts = _read_project(root) if os.path.isfile(os.path.join(root, PROJECT_FILE)) else {}
        self._lock_fd: Optional[int] = None

    def lock(self) -> None:
        self._lock_fd = _lock_dir(self.root)

    def unlock(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    def path(self, *parts: str) -> str:
        return os.path.join(self.root, *parts)

    def add(self, section: str, path: str) -> None:
        rel = os.path.relpath(path, self.root)
        files = self.artifacts.setdefault(section, [])
        if rel not in files:
            files.append(rel)
        self.save()

    def write(self, section: str, rel_path: str, data: bytes) -> str:
        path = self.path(rel_path)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        atomic_write_bytes(path, data)
        self.add(section, path)
        return path

    def save(self) -> None:
        atomic_write_bytes(self.path(PROJECT_FILE), _json_text({"prj_version": PROJECT_VERSION,
                                                                "artifact_list": self.artifacts}))

    def get(self, section: str, name: str) -> str:
        hits = [p for p in self.artifacts.get(section, []) if os.path.basename(p) == name]
        if not hits:
            raise MeraIOError(f"{self.path(PROJECT_FILE)}: no artifact '{name}' in section '{section}'")
        return self.path(hits[-1])


def _read_project(root: str) -> Dict[str, List[str]]:
    path = os.path.join(root, PROJECT_FILE)
    try:
        with open(path, "rb") as f:
            data = json.loads(f.read().decode("utf-8"))
    except OSError as e:
        raise MeraIOError(f"cannot read '{path}': {e.strerror}") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise FormatError(f"'{path}' is not a project file written by this mera ({e})") from None
    arts = data.get("artifact_list") if isinstance(data, dict) else None
    if (not isinstance(arts, dict) or not all(isinstance(k, str) and isinstance(v, list)
                                              and all(isinstance(p, str) for p in v) for k, v in arts.items())):
        raise FormatError(f"'{path}': field 'artifact_list' must map section names to lists of paths")
    return {k: [p for p in v if os.path.exists(os.path.join(root, p))] for k, v in arts.items()}


# ---- models ---------------------------------------------------------------------------------

class MeraModel:
    """A model imported by :class:`ModelLoader`, ready for :meth:`TVMDeployer.deploy`."""

    def __init__(self, model_name: str, mod: Module, params: Mapping[str, Any], layout: str,
                 aux_config: Optional[Dict[str, Any]] = None):
        self.model_name = model_name
        self.mod = mod
        self.params = params
        self.layout = layout
        self.aux_config = dict(aux_config or {})
        self.input_desc = {i["name"]: (tuple(i["shape"]), i["dtype"]) for i in mod.inputs}

    def get_input_shape(self, input_name: Optional[str] = None) -> Tuple[int, ...]:
        """The shape of ``input_name`` (the only input when not given)."""
        if input_name is None:
            if len(self.input_desc) != 1:
                raise ConfigError(f"model '{self.model_name}' has {len(self.input_desc)} inputs "
                                  f"({', '.join(self.input_desc)}): name one with input_name")
            return next(iter(self.input_desc.values()))[0]
        if input_name not in self.input_desc:
            raise ConfigError(f"model '{self.model_name}' has no input '{input_name}'; "
                              f"inputs: {', '.join(self.input_desc)}")
        return self.input_desc[input_name][0]

    def __repr__(self) -> str:
        return f"<mera.MeraModel '{self.model_name}' inputs={self.input_desc}>"


def _input_desc_list(input_desc: Any, where: str) -> List[Tuple[str, Any]]:
    """MERA's ``{"input0": ((1, 224, 224, 3), "float32")}`` (or a list of such pairs) for the frontend."""
    items = list(input_desc.items()) if isinstance(input_desc, Mapping) else (
        list(input_desc) if isinstance(input_desc, (list, tuple)) else None)
    if not items:
        raise ConfigError(f"{where}: input_desc must be a dict {{name: (shape, dtype)}}, got {input_desc!r}")
    out = []
    for item in items:
        try:
            name, desc = item
            shape, dtype = (desc, "float32") if all(isinstance(d, (int, np.integer)) for d in desc) else desc
            shape = tuple(int(d) for d in shape)
            dtype = str(np.dtype(dtype))
        except (TypeError, ValueError):
            raise ConfigError(f"{where}: input_desc entry {item!r} must be name: (shape, dtype)") from None
        out.append((str(name), (shape, dtype)))
    return out


class ModelLoader:
    """Import models for a deployer (MERA's ``mera.ModelLoader(deployer)``).

    With a deployer, the model file is copied into the project's ``model/``
    folder with ``input_desc.json`` beside it, as MERA did.
    """

    def __init__(self, deployer: Optional["TVMDeployer"] = None):
        if deployer is not None and not isinstance(deployer, TVMDeployer):
            raise ConfigError(f"ModelLoader takes a mera.Deployer (or None), got {type(deployer).__name__}")
        self._prj = deployer._prj if deployer is not None else None

    def _name(self, model_path: Any, model_name: Optional[str], where: str) -> Optional[str]:
        if isinstance(model_path, (str, os.PathLike)):
            if not os.path.isfile(model_path):
                raise MeraIOError(f"{where}: model file '{os.fspath(model_path)}' does not exist or is not a file")
            return model_name or os.path.splitext(os.path.basename(os.fspath(model_path)))[0]
        return model_name

    def _record(self, model: MeraModel, model_path: Any) -> MeraModel:
        if self._prj is not None:
            if isinstance(model_path, (str, os.PathLike)):
                dst = self._prj.path("model", os.path.basename(os.fspath(model_path)))
                os.makedirs(os.path.dirname(dst), exist_ok=True)
                if os.path.abspath(os.fspath(model_path)) != dst:
                    shutil.copyfile(model_path, dst)
                self._prj.add("model", dst)
            desc = {n: {"input_shape": list(s), "input_type": t} for n, (s, t) in model.input_desc.items()}
            self._prj.write("model", os.path.join("model", "input_desc.json"), _json_text(desc))
        return model

    @staticmethod
    def _no_prequantize(use_prequantize_input: bool, where: str) -> None:
        if use_prequantize_input:
            raise UnsupportedError(f"{where}: use_prequantize_input=True (inputs given already quantized) is not "
                                   "implemented; models take float32 inputs and quantize them on the accelerator")

    def from_pytorch(self, model_path: Any, input_desc: Any, model_name: Optional[str] = None,
                     layout: Any = Layout.NHWC, use_prequantize_input: bool = False) -> MeraModel:
        """A quantized TorchScript model (the path of a ``torch.jit.save`` file, or the module itself);
        ``input_desc``: ``{"input0": ((1, 224, 224, 3), "float32")}``, shapes in ``layout``."""
        from .frontend import from_pytorch
        where = "ModelLoader.from_pytorch"
        self._no_prequantize(use_prequantize_input, where)
        name = self._name(model_path, model_name, where) or type(model_path).__name__
        lay = _layout(layout)
        mod, params = from_pytorch(model_path, _input_desc_list(input_desc, where), layout=lay)
        return self._record(MeraModel(name, mod, params, lay), model_path)

    def from_onnx(self, model_path: Any, model_name: Optional[str] = None, layout: Any = Layout.NHWC,
                  batch_num: int = 1, shape_mapping: Optional[Mapping[str, int]] = None) -> MeraModel:
        """An ONNX model (float, QDQ or QLinear). A symbolic batch dimension becomes ``batch_num``;
        ``shape_mapping`` (MERA 2.x) gives other symbolic dimensions by name."""
        from .frontend import from_onnx
        where = "ModelLoader.from_onnx"
        if isinstance(batch_num, bool) or not isinstance(batch_num, int) or batch_num < 1:
            raise ConfigError(f"{where}: batch_num must be an int >= 1, got {batch_num!r}")
        name = self._name(model_path, model_name, where) or "onnx_model"
        lay = _layout(layout)
        mod, params = from_onnx(model_path, _onnx_shapes(model_path, batch_num, dict(shape_mapping or {}), lay),
                                layout=lay)
        return self._record(MeraModel(name, mod, params, lay), model_path)

    def from_tflite(self, model_path: Any, model_name: Optional[str] = None,
                    use_prequantize_input: bool = False) -> MeraModel:
        """A TFLite model, through :func:`mera.frontend.from_tflite` (NHWC, the model's own input shapes)."""
        from . import frontend
        where = "ModelLoader.from_tflite"
        self._no_prequantize(use_prequantize_input, where)
        name = self._name(model_path, model_name, where) or "tflite_model"
        if not hasattr(frontend, "from_tflite"):
            raise UnsupportedError(f"{where}: this mera has no TFLite frontend (mera.frontend.from_tflite)")
        mod, params = frontend.from_tflite(model_path, None)
        return self._record(MeraModel(name, mod, params, "NHWC", {"weight_layout": "HWIO"}), model_path)

    def from_quantized_mera(self, model_path: Any, *args: Any, **kwargs: Any) -> MeraModel:
        raise UnsupportedError("ModelLoader.from_quantized_mera: '.mera' files are MERA's pickled TVM modules, which "
                               "this mera cannot read; quantize with mera.Quantizer and pass its (mod, params) to "
                               "mera.build")

    def from_executorch(self, model_path: Any, *args: Any, **kwargs: Any) -> MeraModel:
        raise UnsupportedError("ModelLoader.from_executorch: ExecuTorch (.pte) programs are not supported; export "
                               "the model to ONNX or TorchScript")

    def fuse_models(self, models: Sequence[MeraModel], share_input: bool = False) -> MeraModel:
        raise UnsupportedError("ModelLoader.fuse_models: fusing models was a closed MERA feature and is not "
                               "implemented; deploy each model on its own")


def _onnx_shapes(model_path: Any, batch_num: int, shape_mapping: Dict[str, int], layout: str
                 ) -> Optional[List[Tuple[str, Tuple[int, ...]]]]:
    """input_shapes for mera.frontend.from_onnx when an input has symbolic dimensions (None otherwise):
    the first one becomes batch_num, named ones come from shape_mapping; 4-D shapes given in layout."""
    try:
        import onnx
    except ImportError:
        return None  # from_onnx says what is missing
    try:
        model = onnx.load(os.fspath(model_path), load_external_data=False) \
            if isinstance(model_path, (str, os.PathLike)) else model_path
        graph_inputs = list(model.graph.input)
    except Exception:
        return None  # from_onnx reports the bad file with its own error
    inits = {i.name for i in model.graph.initializer}
    shapes, dynamic = [], False
    for vi in graph_inputs:
        if vi.name in inits:
            continue
        dims = []
        for k, d in enumerate(vi.type.tensor_type.shape.dim):
            if d.HasField("dim_value") and d.dim_value > 0:
                dims.append(int(d.dim_value))
                continue
            dynamic = True
            if d.dim_param in shape_mapping:
                dims.append(int(shape_mapping[d.dim_param]))
            elif k == 0:
                dims.append(batch_num)
            else:
                return None  # from_onnx names the input and the dimension it needs
        if len(dims) == 4 and layout == "NHWC":
            dims = [dims[0], dims[2], dims[3], dims[1]]
        shapes.append((vi.name, tuple(dims)))
    return shapes if dynamic else None


# ---- deployments and runners ----------------------------------------------------------------

class MeraModelRunner:
    """MERA's runner: ``set_input(...).run().get_outputs()`` over a loaded deploy directory
    (:class:`mera.DeployModule`)."""

    def __init__(self, module: DeployModule, device_target: DeviceTarget):
        self.module = module
        self.device_target = device_target

    def set_input(self, data: Any) -> "MeraModelRunner":
        """One array, a list in input order, or a dict by input name."""
        self.module.set_input(data)
        return self

    def set_named_input(self, name: str, data: Any) -> "MeraModelRunner":
        self.module.set_input(name, data)
        return self

    def run(self) -> "MeraModelRunner":
        self.module.run()
        return self

    def get_num_outputs(self) -> int:
        return self.module.get_num_outputs()

    def get_output(self, output_idx: int = 0) -> np.ndarray:
        return self.module.get_output(output_idx)

    def get_outputs(self) -> List[np.ndarray]:
        return self.module.get_outputs()

    def get_output_dict(self) -> Dict[str, np.ndarray]:
        """The outputs by name."""
        return {o["name"]: a for o, a in zip(self.module.outputs, self.module.get_outputs())}

    get_outputs_dict = get_output_dict  # MERA 2.x's name

    def get_runtime_metrics(self) -> List[Dict[str, Any]]:
        """As :meth:`mera.DeployModule.get_runtime_metrics`."""
        return self.module.get_runtime_metrics()

    def get_power_metrics(self) -> Any:
        raise UnsupportedError("get_power_metrics: power is measured by a physical board's sensors; this mera's IP "
                               "device (the software emulation of the IP) has none")

    def __repr__(self) -> str:
        return f"<mera.MeraModelRunner '{self.module.deploy_dir}' device_target={self.device_target.name}>"


class MeraDeployment:
    """A built target: the folder holding deploy.so, deploy.json and deploy.params."""

    def __init__(self, result_dir: str, target: Optional[Target] = None):
        self.result_dir = os.path.abspath(result_dir)
        for f in DEPLOY_FILES:
            if not os.path.isfile(os.path.join(self.result_dir, f)):
                raise MeraIOError(f"'{os.path.join(self.result_dir, f)}' does not exist: not a deployment "
                                  "(a deployment holds deploy.so, deploy.json and deploy.params)")
        self.lib_path = os.path.join(self.result_dir, "deploy.so")
        self.params_path = os.path.join(self.result_dir, "deploy.params")
        self.lib_json_path = os.path.join(self.result_dir, "deploy.json")
        self.target = target

    def get_runner(self, device_target: Any = DeviceTarget.SAKURA_1, tvm_debug_mode: bool = False,
                   tvm_debug_dump_path: Optional[str] = None, device_ids: Optional[Sequence[int]] = None,
                   dynamic_output_list: Optional[Sequence[Any]] = None) -> MeraModelRunner:
        """Load the deployment and return its runner. ``device_target`` is recorded (every device
        is the IP target's HAL device here); the other arguments are MERA's and must keep
        their defaults, except ``device_ids=[0]``."""
        dt = _device_target(device_target)
        if tvm_debug_mode or tvm_debug_dump_path is not None:
            raise UnsupportedError("get_runner: tvm_debug_mode (TVM's per-node debugger) does not exist here; the "
                                   "Simulator's runner (mera.compile) has layer_report() and write_trace()")
        if device_ids is not None and list(device_ids) != [0]:
            raise UnsupportedError(f"get_runner: device_ids={list(device_ids)!r}: this mera drives one device "
                                   "(device 0)")
        if dynamic_output_list:
            raise UnsupportedError("get_runner: dynamic_output_list is not supported: every output has a fixed shape")
        return MeraModelRunner(load_runtime_module(self.result_dir), dt)

    def __repr__(self) -> str:
        t = f" {self.target.value}" if self.target is not None else ""
        return f"<mera.MeraDeployment{t} '{self.result_dir}'>"


class TVMDeployer:
    """A MERA deployment project in ``output_dir`` (MERA 1.x's ``mera.TVMDeployer``; 2.x's
    ``mera.Deployer``). ``overwrite=True`` removes an existing project there first. As a
    context manager it holds a lock on the directory, as MERA's did."""

    def __init__(self, output_dir: Any, overwrite: bool = False):
        self._prj = _Project(output_dir, overwrite)
        self._prj.save()

    @property
    def output_dir(self) -> str:
        return self._prj.root

    def __enter__(self) -> "TVMDeployer":
        self._prj.lock()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._prj.unlock()

    def deploy(self, model: MeraModel, mera_platform: Any = DEFAULT_PLATFORM, build_config: Optional[Mapping] = None,
               target: Any = Target.Simulator, host_arch: Optional[str] = None, **kwargs: Any) -> MeraDeployment:
        """Build ``model`` for ``target`` on ``mera_platform`` into ``build/<Target>/result``: ``mera.build``
        under ``mera.build_config(target=target, arch=mera_platform, **build_config)``. ``host_arch``
        defaults to this machine's. Returns the deployment; ``get_runner()`` runs it."""
        where = "deploy"
        if not isinstance(model, MeraModel):
            raise ConfigError(f"{where}: model must come from mera.ModelLoader, got {type(model).__name__}")
        for key, value in kwargs.items():  # MERA 2.x's MCU keys
            if key in ("mcu_config", "vela_config") and not value:
                continue
            raise UnsupportedError(f"{where}: {key}={value!r} is not supported (no MCU targets in this mera)")
        t = _target(target)
        if not isinstance(build_config or {}, Mapping):
            raise ConfigError(f"{where}: build_config must be a dict, got {build_config!r}")
        cfg = dict(build_config or {})
        arch = cfg.pop("arch", None)
        if isinstance(arch, Mapping):  # an arch dict overrides figures of mera_platform
            arch = {"platform": mera_platform, **arch}
        else:
            arch = mera_platform
        resolve_arch(arch)  # a bad platform fails here, before anything is written
        arch_name = arch.value if isinstance(arch, enum.Enum) else arch
        harch = _host_arch(host_arch)
        tdir = os.path.join("build", t.value)
        self._prj.write(t.value, os.path.join(tdir, "build_config.yaml"), _json_text(cfg))
        self._prj.write(t.value, os.path.join(tdir, "mera_cfg.json"),
                        _json_text({**cfg, "arch": arch_name if not isinstance(arch, Mapping)
                                    else {k: (v.value if isinstance(v, enum.Enum) else v) for k, v in arch.items()}}))
        result = self._prj.path(tdir, "result")
        os.makedirs(result, exist_ok=True)
        start = time.time()
        log_path = self._prj.path("logs", "mera.log")
        try:
            log = open(log_path, "a", encoding="utf-8")
        except OSError as e:
            raise MeraIOError(f"cannot write the project log '{log_path}': {e.strerror}") from None
        with log, contextlib.redirect_stdout(_Tee(sys.stdout, log)), \
                _config.build_config(target=t, arch=arch, **cfg):
            print(f"deploy: '{model.model_name}' for {t.value} on {arch_name if not isinstance(arch, Mapping) else arch}"
                  f", {time.strftime('%Y-%m-%d %H:%M:%S')}")
            build(model.mod, model.params, host_arch=harch, output_dir=result, layout=model.layout,
                  aux_config=model.aux_config or None)
        seconds = time.time() - start
        for f in DEPLOY_FILES:
            self._prj.add(t.value, os.path.join(result, f))
        self._prj.write("metrics", os.path.join(tdir, "result", "compile_metrics.json"),
                        _json_text({"compile_time": seconds, "compile_date": time.strftime("%d/%m/%Y")}))
        return MeraDeployment(result, t)

    def save_data_file(self, filename: str, data: Any) -> str:
        """Write ``data``'s raw bytes (as the C app reads ``ref_result_0.bin``) to ``data/<filename>``."""
        if os.path.basename(filename) != filename or filename in ("", ".", ".."):
            raise ConfigError(f"save_data_file: filename must be a plain file name, got {filename!r}")
        return self._prj.write("data", os.path.join("data", filename), np.ascontiguousarray(data).tobytes())

    def load_data_file(self, filename: str, dtype: Any = np.float32) -> np.ndarray:
        """A file written by :meth:`save_data_file`, as a flat array of ``dtype`` (raw bytes keep no shape)."""
        path = self._prj.get("data", filename)
        try:
            return np.fromfile(path, dtype=dtype)
        except (OSError, ValueError) as e:
            raise MeraIOError(f"load_data_file: cannot read '{path}' as {np.dtype(dtype)}: {e}") from None

    def __repr__(self) -> str:
        return f"<mera.Deployer '{self._prj.root}'>"


def load_mera_deployment(path: Any, target: Any = None) -> MeraDeployment:
    """A deployment from a project directory (``project.mdp``; ``target`` picks one when several
    are built) or from a folder holding deploy.so, deploy.json and deploy.params."""
    root = os.path.abspath(os.fspath(path))
    if not os.path.isdir(root):
        raise MeraIOError(f"load_mera_deployment: '{root}' is not a directory")
    if not os.path.isfile(os.path.join(root, PROJECT_FILE)):
        return MeraDeployment(root)
    arts = _read_project(root)
    built = [t for t in Target if all(any(os.path.basename(p) == f for p in arts.get(t.value, []))
                                      for f in DEPLOY_FILES)]
    if not built:
        raise MeraIOError(f"load_mera_deployment: the project '{root}' has no built target")
    if target is None:
        if len(built) > 1:
            raise ConfigError(f"load_mera_deployment: the project '{root}' has several built targets "
                              f"({', '.join(t.value for t in built)}): pass target=")
        t = built[0]
    else:
        t = _target(target)
        if t not in built:
            raise ConfigError(f"load_mera_deployment: target {t.value} is not built in '{root}'; built: "
                              f"{', '.join(x.value for x in built)}")
    return MeraDeployment(os.path.join(root, "build", t.value, "result"), t)


#: MERA 2.x's name of the deployer.
Deployer = TVMDeployer
#: MERA 1.x's names of the deployment and runner classes.
MeraTvmDeployment = MeraTvmPrjDeployment = MeraDeployment
MeraTvmModelRunner = MeraModelRunner

__all__ = ["Deployer", "TVMDeployer", "ModelLoader", "MeraModel", "MeraDeployment", "MeraTvmDeployment",
           "MeraTvmPrjDeployment", "MeraModelRunner", "MeraTvmModelRunner", "load_mera_deployment", "Layout",
           "DeviceTarget"]

"""Build configuration: targets, platforms, and the ``build_config`` context.

``with mera.build_config(target="IP", arch=100): ...`` makes a configuration
active for the code inside the block, as MERA's did. The active configuration
is kept in a :mod:`contextvars` variable, so it is private to each thread (and
asyncio task) and nested blocks restore the outer configuration on exit.

Unlike MERA, an unknown key is an error that lists the valid keys (MERA
silently dropped it, so a typo such as ``compiler_worker=4`` did nothing).
"""

from __future__ import annotations

import contextvars
import copy
import enum
import os
import threading
from typing import Any, Dict, List, Mapping, Optional, Union

from . import _core
from .errors import ConfigError


class Target(str, enum.Enum):
    """Where a built model runs (MERA's ``mera.Target``)."""

    #: The accelerator IP, through the device HAL (a software-emulated device by default).
    IP = "IP"
    #: Float32 reference, node by node; quantized nodes are emulated in float.
    Interpreter = "Interpreter"
    #: Int8 node by node with the accelerator's arithmetic (bit-exact with PyTorch fbgemm).
    InterpreterHw = "InterpreterHw"
    #: Runs the compiled DNA program with a timing model.
    Simulator = "Simulator"

    def __str__(self) -> str:
        return self.value


_PLATFORMS: List[Dict[str, Any]] = _core.platforms()

#: The DNA platforms by name (MERA's ``mera.Platform``), with aliases such as SAKURA_1.
Platform = enum.Enum(  # type: ignore[misc]
    "Platform",
    [(p["name"], p["name"]) for p in _PLATFORMS] + [(p["alias"], p["name"]) for p in _PLATFORMS if p["alias"]],
    type=str,
)
Platform.__doc__ = "The DNA platforms (MERA's mera.Platform); values are platform names."

#: MERA's default platform when build_config is given no arch.
DEFAULT_ARCH = "DNAF200L0002"

#: Keys of an ``arch`` dict besides ``platform``: the hardware parameters of the
#: C platform table, as (name, "int" | "float", unit, doc).
ARCH_PARAMS = [tuple(p) for p in _core.arch_params()]
ARCH_OVERRIDES = tuple(p[0] for p in ARCH_PARAMS)


def platforms() -> List[Dict[str, Any]]:
    """The platform table: name, alias, arch number, kind, TOPS, MAC count, note, and the hardware
    parameters of :data:`ARCH_PARAMS` (clock, MAC array shape, buffers, bandwidths)."""
    return copy.deepcopy(_PLATFORMS)


def _platform_names() -> str:
    names = []
    for p in _PLATFORMS:
        extra = [str(p["arch"])] if p["arch"] else []
        if p["alias"]:
            extra.append(p["alias"])
        names.append(p["name"] + (f" ({', '.join(extra)})" if extra else ""))
    return ", ".join(names)


def _find_platform(key: Any) -> Optional[Dict[str, Any]]:
    if isinstance(key, Platform):
        key = key.value
    if isinstance(key, bool):
        return None
    for p in _PLATFORMS:
        if key in (p["name"], p["alias"]) or (p["arch"] and (key == p["arch"] or key == str(p["arch"]))):
            return p
    return None


def resolve_arch(arch: Any) -> Dict[str, Any]:
    """Turn an ``arch`` value into a platform description.

    ``arch`` is 100, 200, a platform name (``"DNAF100L0003"``), an alias
    (``"SAKURA_1"``), a :class:`Platform`, or a dict
    ``{"platform": <one of those>, "clock_mhz": ..., "mac_count": ...}``
    overriding figures of a base platform.
    """
    if isinstance(arch, Mapping):
        unknown = sorted(set(arch) - {"platform", *ARCH_OVERRIDES})
        if unknown:
            raise ConfigError(f"arch: unknown key(s) {', '.join(map(repr, unknown))}; "
                              f"valid keys: platform, {', '.join(ARCH_OVERRIDES)}")
        if "platform" not in arch:
            raise ConfigError("arch: a dict arch needs 'platform' naming the base platform "
                              f"(one of: {_platform_names()})")
        base = resolve_arch(arch["platform"])
        for key, kind, unit, _doc in ARCH_PARAMS:
            if key in arch:
                v = arch[key]
                ok = isinstance(v, int) if kind == "int" else isinstance(v, (int, float))
                if isinstance(v, bool) or not ok or not v > 0:
                    what = "a positive int" if kind == "int" else "a positive number"
                    raise ConfigError(f"arch: '{key}' ({unit}) must be {what}, got {v!r}")
                base[key] = int(v) if kind == "int" else float(v)
        base["mac_count"] = base["mac_ic"] * base["mac_oc"] * base["mac_px"]
        base["tops"] = 2.0 * base["mac_count"] * base["clock_mhz"] * 1e6 / 1e12
        base["overridden"] = sorted(k for k in ARCH_OVERRIDES if k in arch)
        return base
    p = _find_platform(arch)
    if p is None:
        raise ConfigError(f"arch: unknown platform {arch!r}; valid: {_platform_names()}")
    d = dict(p)
    d["overridden"] = []
    return d


# -- the keys build_config accepts -------------------------------------------

def _positive_int(key: str, v: Any) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or v < 1:
        raise ConfigError(f"build_config: '{key}' must be a positive int, got {v!r}")
    return v


def _nonneg_int(key: str, v: Any) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or v < 0:
        raise ConfigError(f"build_config: '{key}' must be an int >= 0, got {v!r}")
    return v


def _positive_number(key: str, v: Any) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not v > 0:
        raise ConfigError(f"build_config: '{key}' must be a positive number, got {v!r}")
    return float(v)


def _flag(key: str, v: Any) -> bool:
    # MERA took the strings "true"/"false"; accept those and real booleans.
    if isinstance(v, bool):
        return v
    if isinstance(v, str) and v.lower() in ("true", "false"):
        return v.lower() == "true"
    raise ConfigError(f"build_config: '{key}' must be True/False or \"true\"/\"false\", got {v!r}")


def _string(key: str, v: Any) -> str:
    if not isinstance(v, str):
        raise ConfigError(f"build_config: '{key}' must be a string, got {v!r}")
    return v


def _mode(key: str, v: Any) -> str:
    if v not in ("Fast", "Slow"):
        raise ConfigError(f"build_config: scheduler_config '{key}' must be \"Fast\" or \"Slow\", got {v!r}")
    return v


def _dump_ir(key: str, v: Any) -> Any:
    """dump_ir: a flag (MERA's "true"/"false" too) or the folder to write the dumps to."""
    if isinstance(v, (str, os.PathLike)) and str(v).strip().lower() not in ("true", "false", "1", "0", "yes", "no",
                                                                            "on", "off"):
        return os.fspath(v)
    return _flag(key, v)


def _dump_ir_stages(key: str, v: Any) -> str:
    """dump_ir_stages: "all", or stage names (a list or a comma-separated string) of the compile driver."""
    names = v.split(",") if isinstance(v, str) else list(v) if isinstance(v, (list, tuple)) else None
    if names is None or not all(isinstance(n, str) for n in names):
        raise ConfigError(f"build_config: '{key}' must be a list of stage names or a comma-separated string, got {v!r}")
    names = [n.strip() for n in names if n.strip()]
    stages = _core.stage_names()
    bad = [n for n in names if n != "all" and n not in stages]
    if bad:
        raise ConfigError(f"build_config: '{key}': unknown stage(s) {', '.join(map(repr, bad))}; "
                          f"stages: {', '.join(stages)}, all")
    return ",".join(names) or "all"


#: scheduler_config keys (MERA 1.x names) and their checks.
SCHEDULER_KEYS = {
    "mode": _mode,
    "pre_scheduling_iterations": _positive_int,
    "main_scheduling_iterations": _positive_int,
    "batch_interleave": _nonneg_int,
    "shared_data_mode": _flag,
    "shared_weight_mode": _flag,
    "wide_input_mode": _flag,
    "wide_kernel_mode": _flag,
    "progress_bars": _flag,
    "consider_allocation": _flag,
    "partitions": _positive_int,
}


def _scheduler_config(key: str, v: Any) -> Dict[str, Any]:
    if not isinstance(v, Mapping):
        raise ConfigError(f"build_config: 'scheduler_config' must be a dict, got {v!r}")
    unknown = sorted(set(v) - set(SCHEDULER_KEYS))
    if unknown:
        raise ConfigError(f"build_config: unknown scheduler_config key(s) {', '.join(map(repr, unknown))}; "
                          f"valid keys: {', '.join(SCHEDULER_KEYS)}")
    return {k: SCHEDULER_KEYS[k](k, x) for k, x in v.items()}


#: Top-level build_config keys (MERA's names, besides target and arch) and their checks.
CONFIG_KEYS = {
    "max_tile_height": _positive_int,
    "max_tile_width": _positive_int,
    "max_acc_tile_height": _positive_int,
    "max_acc_tile_width": _positive_int,
    "use_small_acc_mem": _flag,
    "compiler_workers": _positive_int,
    "sim_freq_mhz": _positive_number,
    "dump_ir": _dump_ir,
    "dump_ir_stages": _dump_ir_stages,
    "manual_sg_merge_map": _string,
    "cutting_type": _string,
    "batch_cutting_factor": _positive_int,
    "scheduler_config": _scheduler_config,
    "sim_log": _flag,
    "progress": _flag,
    "num_threads": _positive_int,
}

#: Defaults for keys a build reads when they are not given (MERA 1.x BuildConfig values).
CONFIG_DEFAULTS = {
    "max_tile_height": 64,
    "max_tile_width": 64,
    "compiler_workers": 7,
    "scheduler_config": {"mode": "Fast"},
    "sim_log": True,
}


def dump_options(cfg: Optional["BuildConfig"], default_dir: str) -> Dict[str, Any]:
    """The compile driver's dump_ir arguments: ``dump_dir`` (None: no dumps; the folder is
    created) and ``dump_stages``. ``dump_ir=True`` writes into ``default_dir``."""
    options = cfg.options if cfg is not None else {}
    d = options.get("dump_ir", False)
    if d is False:
        return {"dump_dir": None, "dump_stages": None}
    folder = default_dir if d is True else d
    try:
        os.makedirs(folder, exist_ok=True)
    except OSError as e:
        raise ConfigError(f"build_config: dump_ir folder {folder!r} cannot be created: {e}") from None
    return {"dump_dir": folder, "dump_stages": options.get("dump_ir_stages", "all")}


def simulator_options(cfg: Optional["BuildConfig"]) -> Dict[str, Any]:
    """What the Simulator target needs from a configuration (``None``: the defaults).

    Returns ``platform`` (the base platform's name), ``overrides`` (the
    hardware parameters of :data:`ARCH_OVERRIDES` that differ from the
    base: the ``arch`` dict's keys, and ``clock_mhz`` from ``sim_freq_mhz``),
    ``sched`` (the scheduler's options: ``mode``, ``max_tile_height``,
    ``max_tile_width``, ``compiler_workers``) and ``log`` (print the
    latency line after each run).
    """
    arch = cfg.arch if cfg is not None else resolve_arch(DEFAULT_ARCH)
    options = cfg.options if cfg is not None else copy.deepcopy(CONFIG_DEFAULTS)
    overrides = {k: arch[k] for k in arch.get("overridden", [])}
    if options.get("sim_freq_mhz") is not None:
        overrides["clock_mhz"] = float(options["sim_freq_mhz"])
    sched = {
        "mode": options.get("scheduler_config", {}).get("mode", "Fast"),
        "max_tile_height": options.get("max_tile_height", CONFIG_DEFAULTS["max_tile_height"]),
        "max_tile_width": options.get("max_tile_width", CONFIG_DEFAULTS["max_tile_width"]),
        "compiler_workers": options.get("compiler_workers", CONFIG_DEFAULTS["compiler_workers"]),
    }
    return {"platform": arch["name"], "overrides": overrides, "sched": sched,
            "log": bool(options.get("sim_log", True))}


def _target(value: Any) -> Target:
    if value is None:
        raise ConfigError("target is not provided")
    try:
        return Target(value.value if isinstance(value, Target) else value)
    except ValueError:
        raise ConfigError(f"unknown target {value!r}; valid targets: {', '.join(t.value for t in Target)}") from None


class BuildConfig:
    """A validated build configuration; activate it with ``with``.

    Use :func:`build_config` to make one. Attributes: ``target`` (a
    :class:`Target`), ``arch`` (the resolved platform dict) and ``options``
    (the other keys, validated, defaults filled in).
    """

    def __init__(self, target: Any = None, **config: Any):
        self.target = _target(target)
        unknown = sorted(set(config) - set(CONFIG_KEYS) - {"arch"})
        if unknown:
            raise ConfigError(f"build_config: unknown key(s) {', '.join(map(repr, unknown))}; valid keys: "
                              f"target, arch, {', '.join(CONFIG_KEYS)}")
        self.arch = resolve_arch(config.get("arch", DEFAULT_ARCH))
        options = copy.deepcopy(CONFIG_DEFAULTS)
        for key, value in config.items():
            if key == "arch":
                continue
            checked = CONFIG_KEYS[key](key, value)
            if key == "scheduler_config":
                options[key].update(checked)
            else:
                options[key] = checked
        self.options = options
        # One object may be entered by several threads at once: keep each
        # thread's tokens apart.
        self._local = threading.local()

    def __enter__(self) -> "BuildConfig":
        tokens = self._local.__dict__.setdefault("tokens", [])
        tokens.append(_current.set(self))
        return self

    def __exit__(self, *exc: Any) -> None:
        _current.reset(self._local.tokens.pop())

    def __getitem__(self, key: str) -> Any:
        if key == "target":
            return self.target
        if key == "arch":
            return self.arch
        return self.options[key]

    def __repr__(self) -> str:
        return f"BuildConfig(target={self.target.value!r}, arch={self.arch['name']!r}, options={self.options!r})"


_current: contextvars.ContextVar[Optional[BuildConfig]] = contextvars.ContextVar("mera_build_config", default=None)


def build_config(target: Union[str, Target, None] = None, **config: Any) -> BuildConfig:
    """Make a build configuration, to be used as ``with mera.build_config(...):``.

    Parameters
    ----------
    target : str or Target
        ``"IP"``, ``"Simulator"``, ``"InterpreterHw"`` or ``"Interpreter"``.
        Required: without it, ``ValueError("target is not provided")`` is
        raised, as MERA did.
    **config
        ``arch`` (100, 200, a platform name or alias, a :class:`Platform`, or
        a dict overriding figures of a base platform) and MERA's compiler
        keys; see ``docs/api.md`` for each key and what it does. Unknown keys
        raise :class:`mera.ConfigError` listing the valid keys.

    Returns
    -------
    BuildConfig
        A context manager; nested blocks restore the outer configuration.
    """
    return BuildConfig(target, **config)


def current_build_config() -> Optional[BuildConfig]:
    """The configuration active in this thread / task, or ``None``."""
    return _current.get()


def require_build_config(what: str) -> BuildConfig:
    cfg = _current.get()
    if cfg is None:
        raise ConfigError(f"{what} needs a target: call it inside `with mera.build_config(target=...):`")
    return cfg


__all__ = ["Target", "Platform", "BuildConfig", "build_config", "current_build_config", "platforms",
           "resolve_arch", "simulator_options"]

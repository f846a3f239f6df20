"""``mera profile DIR|MODEL``: the Simulator's per-layer table, charts, trace and HTML report."""

from __future__ import annotations

import argparse
import os
from typing import Any, List, Tuple

from . import _model
from ..errors import ConfigError, UnsupportedError


def add_parsers(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("profile", parents=[common], help="per-layer timing, charts, trace and HTML report",
                       description="Time a model on the Simulator's timing model: a deploy directory built for "
                                   "Simulator or IP (its graph and platform, scheduled again, and checked against "
                                   "the DNA program it holds), or a model file (compiled for the Simulator with "
                                   "the options below). Prints the partition and the per-layer table.")
    p.add_argument("source", metavar="DIR|MODEL", help="a deploy directory, or a model file as for mera compile")
    p.add_argument("--plot", metavar="FILE", help="write the charts (latency, MAC utilization, roofline): .png, .svg "
                                                  "or .pdf (needs matplotlib: pip install 'mera[plot]')")
    p.add_argument("--trace", metavar="FILE", help="write a Chrome/Perfetto trace (JSON) of one inference")
    p.add_argument("--html", metavar="FILE", help="write a self-contained HTML report")
    g = p.add_argument_group("for a MODEL file")
    _model.add_model_arguments(g, target_required=False)
    p.set_defaults(func=run)


def _arch_of(info: dict) -> dict:
    from ..config import ARCH_OVERRIDES
    pp = info.get("platform_params") or {}
    return {"platform": info["platform"], **{k: pp[k] for k in ARCH_OVERRIDES if k in pp}}


def _from_deploy_dir(path: str) -> Tuple[Any, List[str]]:
    """A SimulatorRunner for the graph and platform of a deploy directory, and notes for the report."""
    import mera
    from .. import _core, deploy_dir
    info = deploy_dir.read_json(path)
    target = info.get("target")
    try:
        runs_program = _core.backend_info(str(target))["runs_program"]
    except Exception:
        runs_program = False
    if not runs_program or not info.get("platform"):
        raise UnsupportedError(f"'{path}' was built for {target}, which runs no DNA program: nothing to time; "
                               "profile the model file instead (mera profile MODEL --arch A ...)")
    mod, params, program, missing = deploy_dir.model(path)
    sched = info.get("scheduler") or {}
    kw = {"scheduler_config": {"mode": sched.get("mode", "Fast")}, "sim_log": False}
    for key in ("max_tile_height", "max_tile_width", "compiler_workers"):
        if isinstance(sched.get(key), int) and sched[key] > 0:
            kw[key] = sched[key]
    with mera.build_config(target="Simulator", arch=_arch_of(info), **kw):
        runner = mera.compile(mod, params)
    mine = runner.program_bytes()
    if missing:  # the weights DNA layers read are in the program's constant image only
        same = program is not None and deploy_dir.same_schedule(mine, program, runner.program_info()["params_bytes"])
    else:
        same = program is not None and mine == program
    notes = [f"Deploy directory {os.path.abspath(path)} (target {target}, platform {info['platform']})."]
    if same and missing:
        notes.append("The program scheduled here is byte-identical to the one in deploy.params outside its "
                     f"constant image: the {len(missing)} weights only DNA layers read are stored once, in that "
                     "image, and are re-scheduled here as zeros, which changes no timing.")
    elif same:
        notes.append("The program scheduled here is byte-identical to the one in deploy.params.")
    else:
        notes.append("Note: the program scheduled here differs from the one in deploy.params (built by another "
                     "mera version or options); the figures are this version's.")
    return runner, notes


def _from_model(args: argparse.Namespace) -> Tuple[Any, List[str]]:
    import mera
    if args.target != "Simulator":
        raise ConfigError(f"mera profile times models on the Simulator; --target {args.target} has no timing model "
                          "here (profile a deploy directory of the IP target for the IP)")
    mod, params = _model.load(args)
    with mera.build_config(target="Simulator", sim_log=False, **_model.config_kwargs(args)):
        runner = mera.compile(mod, params)
    return runner, [f"Model file {os.path.abspath(args.model)}."]


def run(args: argparse.Namespace) -> int:
    if os.path.isdir(args.source):
        runner, notes = _from_deploy_dir(args.source)
    else:
        args.model = args.source
        runner, notes = _from_model(args)
    for n in notes:
        print(n)
    print(runner.partition_report().summary())
    print(runner.layer_report())
    if args.trace:
        runner.write_trace(args.trace)
        print(f"wrote the trace {args.trace} (open it in ui.perfetto.dev or chrome://tracing)")
    if args.plot:
        from .. import plots
        plots.save(plots.profile_figure(runner.layer_report(), runner.platform), args.plot)
        print(f"wrote the charts {args.plot}")
    if args.html:
        from ..report import write_profile_html
        write_profile_html(args.html, runner, title=f"mera profile: {runner._mod.name}", notes=notes)
        print(f"wrote the report {args.html}")
    return 0

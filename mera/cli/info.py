"""``mera info DIR`` (what a deploy directory holds) and ``mera platforms`` (the platform table)."""

from __future__ import annotations

import argparse
import json
from typing import Any, Dict, List

from ..profiling import _table


def add_parsers(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("info", parents=[common], help="what a deploy directory holds",
                       description="Target, platform, inputs, outputs, sizes, format version and checksums of "
                                   "a deploy directory, the machine its deploy.so was built for, and whether "
                                   "this machine's runtime accepts it.")
    p.add_argument("deploy_dir", metavar="DIR")
    p.add_argument("--json", action="store_true", help="print it as JSON")
    p.set_defaults(func=run_info)
    p = sub.add_parser("platforms", parents=[common], help="the DNA platforms and their hardware figures",
                       description="The platform table (csrc/arch/platform.c; docs/hardware.md explains each "
                                   "figure): what --arch accepts.")
    p.add_argument("--json", action="store_true", help="print it as JSON")
    p.set_defaults(func=run_platforms)


def _tensor(t: Dict[str, Any]) -> str:
    q = f", scale {t['scale']:g}, zero point {t['zero_point']}" if t.get("scale") is not None else ""
    layout = f" {t['layout']}" if t.get("layout") not in (None, "any") else ""
    return f"{t['name']}: {t['dtype']} {tuple(t['shape'])}{layout}{q}"


def info_lines(d: Dict[str, Any]) -> List[str]:
    j = d["json"]
    lines = [f"deploy directory {d['dir']}",
             f"  format        {j.get('format')} version {j.get('version')}, deploy ABI {j.get('abi_version')}",
             f"  target        {j.get('target')}",
             f"  host arch     {j.get('host_arch')} (deploy.so: {d['machine'] or 'missing or not ELF'})"]
    if j.get("platform"):
        pp = j.get("platform_params") or {}
        lines.append(f"  platform      {j['platform']} ({pp.get('clock_mhz', '?')} MHz, "
                     f"{pp.get('mac_ic', 0) * pp.get('mac_oc', 0) * pp.get('mac_px', 0)} MACs, "
                     f"DRAM {pp.get('dram_gbps', '?')} GB/s)")
        sched = j.get("scheduler") or {}
        lines.append(f"  scheduler     {sched.get('mode')} (max tile {sched.get('max_tile_height')} x "
                     f"{sched.get('max_tile_width')}, {sched.get('compiler_workers')} worker(s))")
    if isinstance(j.get("latency_us"), (int, float)):
        lines.append(f"  latency       {j['latency_us']:.3f} us (the timing model's estimate)")
    for t in j.get("inputs", []):
        lines.append(f"  input         {_tensor(t)}")
    for t in j.get("outputs", []):
        lines.append(f"  output        {_tensor(t)}")
    lines.append(f"  weights       {j.get('weights_bytes', 0)} bytes; activation arena {j.get('arena_bytes', 0)} bytes")
    pf = j.get("params_file") or {}
    lines.append(f"  model id      {pf.get('fnv1a64')} (FNV-1a 64 of deploy.params, compiled into deploy.so)")
    for name, f in d["files"].items():
        lines.append(f"  {name:<13} " + (f"{f['bytes']} bytes, sha256 {f['sha256']}" if f else "MISSING"))
    if d["extra_files"]:
        lines.append(f"  beside them   {', '.join(d['extra_files'])}")
    loads = d.get("loads")
    if loads is True:
        lines.append("  check         the runtime accepts it here (sizes, checksums, graph and program verified)")
    elif loads is not None:
        lines.append(f"  check         the runtime refuses it here: {loads}")
    return lines


def run_info(args: argparse.Namespace) -> int:
    from .. import deploy_dir
    d = deploy_dir.describe(args.deploy_dir)
    print(json.dumps(d, indent=2) if args.json else "\n".join(info_lines(d)))
    return 0 if d.get("loads") is True else 1


def platform_table(platforms: List[Dict[str, Any]]) -> str:
    rows = [(p["name"], p["alias"] or "", p["arch"] or "", p["kind"], f"{p['tops']:g}", p["mac_count"],
             f"{p['clock_mhz']:g}", f"{p['mac_ic']}x{p['mac_oc']}x{p['mac_px']}", p["act_buffer_kib"],
             p["weight_buffer_kib"], f"{p['dram_gbps']:g}", f"{p['pcie_gbps']:g}") for p in platforms]
    return _table(["platform", "alias", "arch", "kind", "TOPS", "MACs", "MHz", "array", "act KiB", "wgt KiB",
                   "DRAM GB/s", "PCIe GB/s"], rows, "llrlrrrlrrrr")


def run_platforms(args: argparse.Namespace) -> int:
    import mera
    ps = mera.platforms()
    print(json.dumps(ps, indent=2) if args.json else platform_table(ps))
    return 0

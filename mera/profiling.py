"""Reports of the Simulator target: partition, per-layer timing, overall figures.

Both reports are lists of dicts (one per graph node, in graph order) whose
``str()`` is a readable table::

    runner = mera.compile(mod, params, target="Simulator")
    print(runner.partition_report())   # node, op, where, tiles, reason
    print(runner.layer_report())       # cycles, MAC utilization, bytes, bound
"""

from __future__ import annotations

from typing import Any, Dict, List, Mapping, Optional, Sequence


def _table(headers: Sequence[str], rows: Sequence[Sequence[Any]], align: Optional[str] = None,
           max_width: Optional[Mapping[int, int]] = None) -> str:
    """A plain-text table; align is one 'l'/'r' per column (default: left)."""
    align = align or "l" * len(headers)
    max_width = dict(max_width or {})
    cells = [[str(h) for h in headers]] + [[str(c) for c in r] for r in rows]
    for j, w in max_width.items():
        for r in cells[1:]:
            if len(r[j]) > w:
                r[j] = r[j][: w - 3] + "..."
    widths = [max(len(r[j]) for r in cells) for j in range(len(headers))]

    def fmt(r: Sequence[str]) -> str:
        parts = [c.rjust(w) if a == "r" else c.ljust(w) for c, w, a in zip(r, widths, align)]
        return "  ".join(parts).rstrip()

    lines = [fmt(cells[0]), "  ".join("-" * w for w in widths)]
    lines += [fmt(r) for r in cells[1:]]
    return "\n".join(lines)


class PartitionReport(list):
    """Where every graph node runs: a list of ``{node, index, op, on_dna, tiles, reason}``.

    ``str(report)`` is a table with one row per node: node, op, where (DNA
    or host), tiles (DNA compute instructions) and reason (why a node runs
    on the host, or the tiling chosen for a DNA layer).
    """

    @property
    def on_dna(self) -> List[Dict[str, Any]]:
        return [e for e in self if e["on_dna"]]

    @property
    def on_host(self) -> List[Dict[str, Any]]:
        return [e for e in self if not e["on_dna"]]

    def summary(self) -> str:
        tiles = sum(e["tiles"] for e in self.on_dna)
        return (f"{len(self)} nodes: {len(self.on_dna)} on the DNA ({tiles} tiles), "
                f"{len(self.on_host)} on the host")

    def __str__(self) -> str:
        rows = [(e["node"], e["op"], "DNA" if e["on_dna"] else "host", e["tiles"] if e["on_dna"] else "-",
                 e["reason"]) for e in self]
        return _table(["node", "op", "where", "tiles", "reason"], rows, "lllrl", {0: 40}) + "\n" + self.summary()

    def __repr__(self) -> str:
        return f"<PartitionReport {self.summary()}>"

    def _repr_html_(self) -> str:
        from .report import partition_report_html
        return partition_report_html(self)


class LayerReport(list):
    """Per graph node timing of one inference on the Simulator.

    Each entry is the simulator's per-layer dict (``node``, ``op``,
    ``on_dna``, ``macs``, ``mac_cycles``, ``vec_cycles``, ``load_bytes``,
    ``store_bytes``, ``load_cycles``, ``store_cycles``, ``start_cycle``,
    ``end_cycle``, ``mac_utilization``, ``memory_bound``, ``host_us``) plus
    ``cycles`` (end - start) and ``us`` (cycles at the clock, or the host
    time of a host node). ``total`` holds the run's totals.
    """

    def __init__(self, layers: Sequence[Mapping[str, Any]], total: Mapping[str, Any], mac_count: int):
        clock = float(total.get("clock_mhz") or 0.0)
        rows = []
        for lay in layers:
            d = dict(lay)
            d["cycles"] = max(0, int(d["end_cycle"]) - int(d["start_cycle"])) if d["on_dna"] else 0
            d["us"] = (d["cycles"] / clock if clock else 0.0) if d["on_dna"] else float(d["host_us"])
            rows.append(d)
        super().__init__(rows)
        self.total = dict(total)
        self.total.pop("layers", None)
        self.mac_count = int(mac_count)

    @property
    def mac_utilization(self) -> float:
        """Useful MACs over the MAC array's capacity for the device time (0 when nothing ran on the DNA)."""
        macs = sum(int(d["macs"]) for d in self if d["on_dna"])
        cap = int(self.total.get("device_cycles", 0)) * self.mac_count
        return macs / cap if cap else 0.0

    def summary(self) -> str:
        t = self.total
        return (f"total {t.get('total_us', 0.0):.3f} us (device {t.get('device_us', 0.0):.3f} us, "
                f"{int(t.get('device_cycles', 0))} cycles; host {t.get('host_us', 0.0):.3f} us); "
                f"MAC utilization {100 * self.mac_utilization:.1f}%")

    def __str__(self) -> str:
        rows = []
        for d in self:
            if d["on_dna"]:
                bound = "memory" if d["memory_bound"] else "compute"
                rows.append((d["node"], d["op"], "DNA", d["cycles"], f"{d['us']:.2f}", d["mac_cycles"],
                             d["vec_cycles"], f"{100 * d['mac_utilization']:.1f}" if d["macs"] else "-",
                             d["load_bytes"], d["store_bytes"], bound))
            else:
                rows.append((d["node"], d["op"], "host", "-", f"{d['us']:.2f}", "-", "-", "-", "-", "-", "host"))
        table = _table(["node", "op", "where", "cycles", "us", "mac cyc", "vec cyc", "MAC util %", "load B",
                        "store B", "bound"], rows, "lllrrrrrrrl", {0: 40})
        return table + "\n" + self.summary()

    def __repr__(self) -> str:
        return f"<LayerReport {len(self)} layers; {self.summary()}>"

    def _repr_html_(self) -> str:
        from .report import layer_report_html
        return layer_report_html(self)


__all__ = ["PartitionReport", "LayerReport"]

"""The C core's layers: the one list of which C sources go where.

Every top-level folder of ``csrc/`` belongs to exactly one group
(``tests/test_c_core.py`` checks it, so a new folder cannot be forgotten):

``runtime``
    what ``deploy.so`` and ``apps/inference`` may contain: the IR, the
    kernels, the ISA, the DNA machine, the backends and the deploy runtime.
    ``mera.build`` compiles its cached runtime archive from this group only,
    so a runtime file that calls into the compiler fails to link.
``compiler``
    the passes, the quantizer, the scheduler, codegen and the compile driver.
``bindings``
    the CPython module ``mera._core``.

Read by ``setup.py`` (every group into ``mera._core``; loaded by path, so it
must import nothing from mera), ``mera.build`` (the runtime group) and the C
tests (runtime and compiler). A regular install ships it inside the package
beside ``mera/_csrc``.
"""

import os
from typing import Dict, Iterable, List, Tuple

GROUPS: Dict[str, Tuple[str, ...]] = {
    "runtime": ("util", "ir", "arch", "kernels", "isa", "sim", "backends", "runtime"),
    "compiler": ("passes", "quant", "sched", "codegen", "driver"),
    "bindings": ("python",),
}

#: What a C build reads: sources, headers, X-macro tables (.def, .inc). The runtime archive's
#: cache key hashes these files of the runtime group, and a regular install ships them.
BUILD_INPUTS: Tuple[str, ...] = (".c", ".h", ".def", ".inc")


def group_of(folder: str) -> str:
    """The group of a top-level folder of csrc/ (KeyError if it is in none)."""
    for g, folders in GROUPS.items():
        if folder in folders:
            return g
    raise KeyError(f"csrc/{folder} is in no group of mera/_sources.py")


def files(root: str, groups: Iterable[str], suffixes: Tuple[str, ...] = (".c",)) -> List[str]:
    """Files under ``root`` (a csrc/ folder) in the folders of ``groups`` ending in one of
    ``suffixes``, relative to ``root``, sorted."""
    out = []
    for g in groups:
        for folder in GROUPS[g]:
            for d, _, names in os.walk(os.path.join(root, folder)):
                rel = os.path.relpath(d, root)
                out.extend(os.path.normpath(os.path.join(rel, n)) for n in names if n.endswith(suffixes))
    return sorted(out)

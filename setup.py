"""Builds the C extension mera._core from every C file under csrc/ (the groups of mera/_sources.py).

The C core needs nothing beyond libc, libm and pthreads; NumPy's headers are
a build requirement of the Python bindings only.

A regular (non-editable) install also ships the C sources of the runtime
(the runtime group of mera/_sources.py) inside the package as mera/_csrc:
mera.build compiles deploy.so's entry file against them. An editable
install uses the repository's csrc/ in place.

build_ext (every install, editable ones too) also compiles the runtime
group into the static archive mera/_runtime/<host_arch>/libmera_rt.a for
this machine (mera/_runtime_archive.py), so the first mera.build only
links. Without a C compiler or ar it says so and skips it: mera.build
then compiles the archive on first use.
"""

import importlib.util
import json
import os
import subprocess
import sys

import numpy
from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext as _build_ext
from setuptools.command.build_py import build_py as _build_py

HERE = os.path.dirname(os.path.abspath(__file__))


def _load_sources_module():
    """mera/_sources.py, the one list of C sources, loaded by path (mera is not built yet)."""
    spec = importlib.util.spec_from_file_location("_mera_sources", os.path.join(HERE, "mera", "_sources.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _load_by_path(name, rel):
    spec = importlib.util.spec_from_file_location(name, os.path.join(HERE, rel))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


SOURCES = _load_sources_module()
sources = [os.path.join("csrc", f) for f in SOURCES.files(os.path.join(HERE, "csrc"), SOURCES.GROUPS)]

# -ffp-contract=off: the numerics contract forbids fusing a*b+c into an FMA
# unless the reference kernel does it; results must be the same on every CPU.
extra_compile_args = ["-std=c11", "-Wall", "-Wextra", "-O2", "-ffp-contract=off", "-fno-strict-aliasing"]
if sys.platform == "darwin":
    extra_compile_args.append("-D_DARWIN_C_SOURCE")



def runtime_sources():
    """csrc files mera.build compiles deploy.so from (relative to csrc/): the runtime group's C, headers, tables."""
    return SOURCES.files(os.path.join(HERE, "csrc"), ["runtime"], SOURCES.BUILD_INPUTS)


class build_py(_build_py):
    """The usual build_py, plus the runtime group of csrc/ (mera/_sources.py) copied to mera/_csrc."""

    def run(self):
        super().run()
        if getattr(self, "editable_mode", False):
            return  # mera.build reads the repository's csrc/
        dest = os.path.join(self.build_lib, "mera", "_csrc")
        for rel in runtime_sources():
            target = os.path.join(dest, rel)
            self.mkpath(os.path.dirname(target))
            self.copy_file(os.path.join(HERE, "csrc", rel), target)


class build_ext(_build_ext):
    """The usual build_ext, plus the C runtime's static archive for this machine, next to
    mera._core: mera/_runtime/<host_arch>/ (mera/_runtime_archive.py). Skipped when it is up to
    date (its manifest matches the sources and flags)."""

    def run(self):
        super().run()
        self.build_runtime_archive()

    def build_runtime_archive(self):
        import shutil
        import tempfile

        ra = _load_by_path("_mera_runtime_archive", os.path.join("mera", "_runtime_archive.py"))
        host_arch = ra.native_host_arch()
        cc = shutil.which(os.environ.get("CC", "").split()[0]) if os.environ.get("CC") else None
        cc = cc or shutil.which("cc") or shutil.which("gcc")
        ar = shutil.which("ar")
        if not host_arch or not cc or not ar:
            print("mera: not prebuilding the C runtime archive (no C compiler, ar, or an unknown CPU); "
                  "mera.build compiles it on first use", file=sys.stderr)
            return
        package_dir = os.path.dirname(self.get_ext_fullpath("mera._core"))
        root = os.path.join(HERE, "csrc")
        folder = ra.packaged_dir(package_dir, host_arch)
        if ra.packaged_archive(host_arch, root, package_dir):
            return
        cc = os.path.realpath(cc)
        version = subprocess.run([cc, "--version"], capture_output=True, text=True).stdout.strip()
        os.makedirs(folder, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix=".build-", dir=folder) as work:
            n = ra.compile_archive(cc, ar, root, work, os.path.join(folder, ra.ARCHIVE_NAME),
                                   jobs=self.parallel if isinstance(self.parallel, int) else 0)
            tmp = os.path.join(work, ra.MANIFEST_NAME)
            with open(tmp, "w") as f:
                json.dump(ra.manifest(host_arch, root, version), f, indent=1)
            os.replace(tmp, os.path.join(folder, ra.MANIFEST_NAME))
        print(f"mera: prebuilt the C runtime archive for {host_arch} ({n} files) in {folder}", file=sys.stderr)


setup(
    cmdclass={"build_py": build_py, "build_ext": build_ext},
    ext_modules=[
        Extension(
            "mera._core",
            sources=sources,
            include_dirs=[os.path.join(HERE, "csrc"), numpy.get_include()],
            define_macros=[("_POSIX_C_SOURCE", "200809L")],
            extra_compile_args=extra_compile_args,
            libraries=["m", "pthread"],
        )
    ],
)

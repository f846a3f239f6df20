"""``mera compile MODEL -o DIR --target T ...``: a model file to a deploy directory (mera.build)."""

from __future__ import annotations

import argparse
import contextlib
import io

from . import _model


def add_parsers(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("compile", parents=[common], help="compile a model file into a deploy directory",
                       description="Import MODEL (ONNX, TorchScript .pt, exported .pt2 or .tflite), quantize it "
                                   "with --calibrate if it is a float model, and build a deploy directory "
                                   "(deploy.so, deploy.params, deploy.json) with mera.build.")
    p.add_argument("model", metavar="MODEL", help="the model file")
    p.add_argument("-o", "--output-dir", required=True, metavar="DIR", help="the deploy directory to write")
    _model.add_model_arguments(p, target_required=True)
    p.add_argument("--host-arch", default="x86", choices=["x86", "arm"],
                   help="the CPU deploy.so runs on (arm: aarch64 Linux, cross-compiled)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import mera
    mod, params = _model.load(args)
    with mera.build_config(target=args.target, **_model.config_kwargs(args)):
        with contextlib.redirect_stdout(io.StringIO()) if args.quiet else contextlib.nullcontext():
            mera.build(mod, params, host_arch=args.host_arch, output_dir=args.output_dir, layout=args.layout)
    if not args.quiet:
        print(f"mera: wrote {args.output_dir} (run it: mera run {args.output_dir}; describe it: mera info "
              f"{args.output_dir})")
    return 0

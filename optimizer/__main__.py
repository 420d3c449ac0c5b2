"""`python -m optimizer run RECIPE [--out DIR]`: train, optimize, evaluate and bundle."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from edge_app.bundle import BundleError

from .errors import OptimizerError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m optimizer")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run a recipe: train, optimize, evaluate, bundle")
    run.add_argument("recipe", type=Path, help="recipe YAML, e.g. recipes/dcgan-digits-quick.yaml")
    run.add_argument("--out", type=Path,
                     help="baseline bundle directory (default bundles/<name>); sweep points go "
                          "beside it as <name>-<point>")
    run.add_argument("--runs-dir", type=Path, default=Path("runs"),
                     help="checkpoints, feature extractors and results tables (default runs/)")
    run.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    run.add_argument("--profile", metavar="NAME",
                     help="apply the recipe's `profiles: {NAME: ...}` overlay, e.g. ci (a run "
                          "sized for CI, recorded in the bundles and tables); default: "
                          "$EDGEGEN_PROFILE where the recipe has it, '' for none")
    run.add_argument("--set", action="append", default=[], dest="overrides",
                     metavar="KEY=VALUE",
                     help="change one recipe value after the profile (repeatable; VALUE is "
                          "YAML), e.g. --set train.epochs=1 --set model.checkpoint=DIR; "
                          "recorded in the bundles and tables")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")

    from . import distributed
    from .recipe import load_recipe
    from .run import run_recipe  # imports torch, which configures its own loggers

    # torchao (the litert pass's converter needs it; transformers imports it once installed)
    # reports its missing CUDA kernels and torch's pytree deprecations at import: not ours.
    for noisy in ("onnx_ir", "onnxscript", "torch.onnx", "onnxruntime", "root", "torchao",
                  "torch.utils._pytree"):
        logging.getLogger(noisy).setLevel(logging.ERROR)
    try:
        recipe = load_recipe(args.recipe, args.profile, tuple(args.overrides))
        if (recipe.profile or recipe.overrides) and distributed.is_main():
            print(f"recipe {args.recipe}: " + "; ".join(
                ([f"profile {recipe.profile!r} applied"] if recipe.profile else [])
                + ([f"set {', '.join(recipe.overrides)}"] if recipe.overrides else [])))
        result = run_recipe(recipe, args.recipe, args.out, args.runs_dir,
                            progress=not args.no_progress)
    except (OptimizerError, BundleError) as exc:
        print(f"optimizer: error: {exc}", file=sys.stderr)
        return 2
    finally:
        distributed.shutdown()
    if not distributed.is_main():
        return 0  # rank 0 reports (under torchrun)
    for bundle in result.bundles:
        m = bundle.manifest
        quality = ", ".join(f"{k} {v:.4g}" for k, v in m.metrics["quality"].items())
        print(f"bundle {bundle.path}: {m.family} {m.precision}, {m.metrics['params']:,} params, "
              f"{m.metrics['file_size_bytes']:,} bytes, {quality}")
    print(f"results: {result.tables_dir}/results.md (.csv, .json)")
    if result.failed:
        print("quality gate failed, no bundle for:\n  " + "\n  ".join(result.failed),
              file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

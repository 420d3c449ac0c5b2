"""`python -m optimizer run RECIPE [--out DIR]`: build a bundle from a recipe."""

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
    run = sub.add_parser("run", help="train, export and bundle a model from a recipe")
    run.add_argument("recipe", type=Path, help="recipe YAML, e.g. recipes/dcgan-digits-quick.yaml")
    run.add_argument("--out", type=Path, help="bundle directory (default bundles/<name>)")
    run.add_argument("--runs-dir", type=Path, default=Path("runs"),
                     help="where checkpoints go (default runs/)")
    run.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")

    from .build import build  # imports torch, which configures its own loggers
    from .recipe import load_recipe

    for noisy in ("onnx_ir", "onnxscript", "torch.onnx"):  # exporter internals, not our progress
        logging.getLogger(noisy).setLevel(logging.ERROR)

    try:
        recipe = load_recipe(args.recipe)
        out = args.out or Path("bundles") / recipe.name
        bundle = build(recipe, args.recipe, out, args.runs_dir, progress=not args.no_progress)
    except (OptimizerError, BundleError) as exc:
        print(f"optimizer: error: {exc}", file=sys.stderr)
        return 2
    m = bundle.manifest
    print(f"bundle {bundle.path}: {m.family} {m.precision}, {m.metrics['params']:,} params, "
          f"{m.metrics['file_size_bytes']:,} bytes, export max |diff| "
          f"{m.techniques[-1].params['max_abs_diff']:.2e}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

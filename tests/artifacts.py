"""Recipes run once per test session through the real CLI (`python -m optimizer run`) and shared
by every test, in any tier, that needs their bundles or tables.

A run is keyed by the sha256 of the effective recipe: its parsed content with the selected
profile applied (EDGEGEN_PROFILE, `ci` in the tests), so two tests naming the same recipe train
it once, and a variant (another profile, an edited copy) is an entry of its own. Each run has
its own directory laid out as the tests expect: `bundles/<recipe name>` (points beside it),
`runs/` (checkpoints, tables) and `mlruns/` (MLflow, in the working directory). A failed run is
kept too: a test may expect the failure (the quality gate's exit 1). An image recipe may start
from the session's FID extractor (`extractors=`, the fid_extractors fixture): the optimizer's own
cache, so the extractor is trained once per session rather than once per recipe.

    def test_x(recipe_runs):
        run = recipe_runs.run(REPO / "recipes" / "gpt2-pydoc-quick.yaml")
        assert run.returncode == 0, run.stderr[-3000:]
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class RecipeRun:
    recipe: Path
    name: str  # the recipe's name: its baseline bundle is bundles/<name>
    key: str  # sha256 of the effective recipe
    dir: Path  # the run's working directory
    returncode: int
    stdout: str
    stderr: str
    seconds: float

    @property
    def bundles(self) -> Path:
        return self.dir / "bundles"

    @property
    def tables(self) -> Path:
        return self.dir / "runs" / self.name

    def results(self) -> dict:
        return json.loads((self.tables / "results.json").read_text())


class RecipeRuns:
    """The session's recipe runs (the `recipe_runs` fixture), by recipe hash."""

    def __init__(self, root: Path):
        self.root = root
        self.done: dict[str, RecipeRun] = {}

    @staticmethod
    def key(recipe: Path) -> tuple[str, str]:
        """(sha256 of the effective recipe, its name)."""
        from optimizer.recipe import load_recipe

        parsed = load_recipe(recipe)
        text = json.dumps(dataclasses.asdict(parsed), sort_keys=True, default=str)
        return hashlib.sha256(text.encode()).hexdigest(), parsed.name

    def run(self, recipe: Path, extractors: Path | None = None,
            timeout: float = 1800) -> RecipeRun:
        key, name = self.key(recipe)
        if key not in self.done:
            workdir = self.root / f"{name}-{key[:12]}"
            workdir.mkdir(parents=True)
            if extractors is not None:
                seed_extractors(workdir / "runs", extractors)
            started = time.monotonic()
            result = subprocess.run(
                [sys.executable, "-m", "optimizer", "run", str(recipe), "--out",
                 str(workdir / "bundles" / name), "--runs-dir", str(workdir / "runs"),
                 "--no-progress"],
                cwd=workdir, capture_output=True, text=True, timeout=timeout)
            self.done[key] = RecipeRun(Path(recipe), name, key, workdir, result.returncode,
                                       result.stdout, result.stderr,
                                       time.monotonic() - started)
        return self.done[key]


def seed_extractors(runs: Path, extractors: Path) -> Path:
    """Copy a cache of FID feature extractors (a runs/extractors/ directory: files keyed by
    dataset hash, image shape and seed) into the runs directory `runs`; returns `runs`."""
    shutil.copytree(extractors, runs / "extractors", dirs_exist_ok=True)
    return runs

"""`make reproduce TABLE=<name>`: one of the study's tables, end to end and resumable.

The tables and the recipes that fill them are data (recipes/study/tables.yaml). For a table this runs,
in order, each step in a fresh process:

1. every recipe of the table (`python -m optimizer run`): trained, optimized, evaluated over its
   seeds, its tables written to `<runs>/<recipe name>/results.{md,csv,json}` (size, memory and
   quality: the paper's Tables 2, 4 and 6) and its bundles to `<bundles>/`;
2. the bundles measured on the devices: `local` (this machine, `python -m edge_app bench`), or a
   class / `all` of an inventory (`python -m fleet deploy` with exactly these bundles, then
   `python -m fleet bench`), into the table's own results tree `<out>/bench/`;
3. `python -m fleet report` over that tree (latency, throughput, memory, power and energy per
   device, paired comparisons), and `<out>/README.md` linking every table.

Resumable: `<out>/state.json` records each finished step with a key of its inputs (the recipe
file's sha256, profile and --set values; the bundles' file hashes and the workload). A step
whose key is unchanged is not run again, so a run stopped anywhere (a missing dataset, a device
down, Ctrl-C) continues where it stopped; a changed recipe reruns its step and what follows.
The device benchmark resumes by itself too: finished repeats are never measured again.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, TextIO

import yaml

from .errors import FleetError
from .paths import REPO

RECIPES = REPO / "recipes"
STUDY = RECIPES / "study" / "tables.yaml"
GATE_FAILED = 1  # `optimizer run`'s exit status when some point failed its quality gate


class ReproduceError(FleetError):
    """The table cannot be reproduced as asked; the message says what to do."""


@dataclass(frozen=True)
class Table:
    name: str
    title: str
    recipes: tuple[str, ...]  # recipe file stems under recipes/


def load_tables(path: Path = STUDY) -> dict[str, Table]:
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    tables = {}
    for name, entry in (data or {}).get("tables", {}).items():
        recipes = tuple(entry.get("recipes") or ())
        missing = [r for r in recipes if not (RECIPES / f"{r}.yaml").is_file()]
        if not recipes or missing:
            raise ReproduceError(f"{path}: table {name!r} names no recipe" if not recipes else
                                 f"{path}: table {name!r} names missing recipe(s) "
                                 f"{', '.join(missing)}")
        tables[name] = Table(name, str(entry.get("title") or name), recipes)
    return tables


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _key(*parts: Any) -> str:
    return _sha256(json.dumps(parts, sort_keys=True, default=str).encode())


class State:
    """`<out>/state.json`: {step: {key, ...facts}}, written after every finished step."""

    def __init__(self, path: Path):
        self.path = path
        try:
            self.steps: dict[str, dict] = json.loads(path.read_text())["steps"]
        except FileNotFoundError:
            self.steps = {}
        except (json.JSONDecodeError, KeyError, TypeError):
            raise ReproduceError(f"{path} is not a reproduce state file; remove it to start "
                                 f"the table over") from None

    def done(self, step: str, key: str) -> dict | None:
        entry = self.steps.get(step)
        return entry if entry and entry.get("key") == key else None

    def record(self, step: str, key: str, **facts: Any) -> None:
        self.steps[step] = {"key": key, **facts,
                            "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"steps": self.steps}, indent=2) + "\n")
        os.replace(tmp, self.path)


def recipe_bundles(recipe, bundles_dir: Path) -> list[Path]:
    """The bundle directories a recipe writes, baseline first (those that exist)."""
    names = [recipe.name, *(f"{recipe.name}-{p.name}" for p in recipe.points)]
    return [bundles_dir / n for n in names if (bundles_dir / n / "manifest.json").is_file()]


def _manifest_hash(bundle: Path) -> str:
    """The bundle's identity: its files' hashes as its manifest records them (not the whole
    manifest, which `make bench` extends with measured figures)."""
    try:
        files = json.loads((bundle / "manifest.json").read_text())["files"]
    except (OSError, ValueError, KeyError, TypeError):
        return ""  # unreadable: never matches, so the step runs again
    return _key(files)


@dataclass
class Reproduction:
    table: Table
    out: Path
    bundles_dir: Path
    runs_dir: Path
    device: str = "local"
    inventory: Path | None = None
    profile: str | None = None
    overrides: tuple[str, ...] = ()
    bench_args: tuple[str, ...] = ()
    log: Callable[[str], None] = print
    python: str = sys.executable

    def _run(self, step: str, argv: list[str]) -> int:
        self.log(f"[{step}] python {' '.join(argv)}")
        try:
            return subprocess.run([self.python, *argv], check=False).returncode
        except KeyboardInterrupt:
            raise ReproduceError(f"interrupted during {step}; `make reproduce` again resumes "
                                 f"here") from None

    def optimize(self, state: State) -> list[Path]:
        from optimizer.errors import RecipeError
        from optimizer.recipe import load_recipe

        bundles: list[Path] = []
        for stem in self.table.recipes:
            path = RECIPES / f"{stem}.yaml"
            try:
                recipe = load_recipe(path, self.profile if self.profile is not None else None,
                                     self.overrides)
            except RecipeError as exc:
                raise ReproduceError(f"{stem}: {exc}") from None
            step = f"optimize {stem}"
            key = _key(_sha256(path.read_bytes()), recipe.profile, recipe.overrides,
                       str(self.bundles_dir.resolve()), str(self.runs_dir.resolve()))
            made = recipe_bundles(recipe, self.bundles_dir)
            entry = state.done(step, key)
            if entry and [b.name for b in made] == entry["bundles"] and \
                    [_manifest_hash(b) for b in made] == entry["manifests"]:
                self.log(f"[{step}] done earlier ({entry['finished']}): "
                         f"{self.runs_dir / recipe.name / 'results.md'}")
                bundles += made
                continue
            argv = ["-m", "optimizer", "run", str(path), "--runs-dir", str(self.runs_dir),
                    "--out", str(self.bundles_dir / recipe.name), "--no-progress",
                    *(["--profile", self.profile] if self.profile is not None else []),
                    *(a for item in self.overrides for a in ("--set", item))]
            rc = self._run(step, argv)
            if rc not in (0, GATE_FAILED):
                raise ReproduceError(f"{step} failed (exit {rc}; its error is above); fix it "
                                     f"and run `make reproduce TABLE={self.table.name}` again: "
                                     f"finished steps are kept")
            made = recipe_bundles(recipe, self.bundles_dir)
            state.record(step, key, rc=rc, bundles=[b.name for b in made],
                         manifests=[_manifest_hash(b) for b in made],
                         tables=str(self.runs_dir / recipe.name / "results.md"),
                         gate="pass" if rc == 0 else "some points failed their quality gate "
                                                     "(no bundle for them; see the table)")
            bundles += made
        return bundles

    def bench(self, state: State, bundles: list[Path]) -> None:
        if not bundles:
            raise ReproduceError(f"table {self.table.name}: no bundle to measure (every point "
                                 f"failed its gate?)")
        results = self.out / "bench"
        step = f"bench {self.device}"
        key = _key([(b.name, _manifest_hash(b)) for b in bundles], self.device,
                   str(self.inventory or ""), self.bench_args)
        entry = state.done(step, key)
        if entry:
            self.log(f"[{step}] done earlier ({entry['finished']}): {results}")
            return
        if self.device == "local":
            argv = ["-m", "edge_app", "bench", *(a for b in bundles for a in ("--bundle", str(b))),
                    "--device", "local", "--out", str(results), *self.bench_args]
            if self._run(step, argv) != 0:
                raise ReproduceError(f"{step} failed (its error is above); run again to resume: "
                                     f"finished repeats are kept")
        else:  # run() refused a fleet device without an inventory before any step
            names = [b.name for b in bundles]
            fleet = ["--inventory", str(self.inventory), "--bundles", str(self.bundles_dir)]
            if self.device != "all":  # deploy exactly this table's bundles to the class
                deploy = ["-m", "fleet", "deploy", "--device", self.device, *fleet,
                          "-e", "edgegen_bundles=" + json.dumps(names)]
                if self._run(f"deploy {self.device}", deploy) != 0:
                    raise ReproduceError(f"deploy {self.device} failed (see above); run again "
                                         f"to resume")
            measure = ["-m", "fleet", "bench", "--device", self.device, *fleet,
                       "--results", str(results), *(a for n in names for a in ("--bundle", n)),
                       *self.bench_args]
            if self._run(step, measure) != 0:
                raise ReproduceError(f"{step} failed (see above); run again to resume: "
                                     f"finished repeats are kept")
        state.record(step, key, results=str(results))

    def report(self, state: State) -> Path:
        from .report import build_report

        out = self.out / "report"
        summary = build_report(self.out / "bench", out, self.bundles_dir)
        state.record("report", _key(time.time()), report=str(out / "report.md"),
                     devices=summary["devices"], bundles=summary["bundles"])
        return out

    def readme(self, state: State, report: Path) -> Path:
        lines = [f"# {self.table.title}", "",
                 f"Reproduced by `make reproduce TABLE={self.table.name}` "
                 f"(device {self.device}"
                 + (f", profile {self.profile!r}" if self.profile else "")
                 + (f", set {', '.join(self.overrides)}" if self.overrides else "") + ").", "",
                 "| step | finished | result |", "|---|---|---|"]
        for step, entry in state.steps.items():
            result = entry.get("tables") or entry.get("results") or entry.get("report") or ""
            if entry.get("rc") == GATE_FAILED:
                result += f" ({entry['gate']})"
            lines.append(f"| {step} | {entry['finished']} | {result} |")
        lines += ["", "- Size, memory and quality over seeds (paper Tables 2, 4, 6): each "
                  "recipe's `results.md` above.",
                  f"- Devices (latency, throughput, memory, power, energy): "
                  f"{report / 'report.md'} and {report / 'report.html'}.", ""]
        path = self.out / "README.md"
        path.write_text("\n".join(lines))
        return path

    def run(self) -> Path:
        state = State(self.out / "state.json")
        if self.device != "local" and self.inventory is None:
            raise ReproduceError(f"DEVICE={self.device} measures the devices of an inventory: "
                                 f"pass INVENTORY=FILE (or DEVICE=local)")
        bundles = self.optimize(state)
        self.bench(state, bundles)
        return self.readme(state, self.report(state))


def reproduce(table: str, out_root: Path, *, bundles_dir: Path, runs_dir: Path,
              device: str = "local", inventory: Path | None = None, profile: str | None = None,
              overrides: tuple[str, ...] = (), bench_args: tuple[str, ...] = (),
              out: TextIO = sys.stdout) -> Path:
    tables = load_tables()
    if table not in tables:
        raise ReproduceError(f"no table {table!r}; the study's tables: "
                             + ", ".join(f"{t.name} ({', '.join(t.recipes)})"
                                         for t in tables.values()))

    def log(text: str) -> None:
        out.write(text + "\n")
        out.flush()

    job = Reproduction(tables[table], out_root / table, bundles_dir, runs_dir, device, inventory,
                       profile, tuple(overrides), tuple(bench_args), log)
    readme = job.run()
    log(f"table {table}: {readme}")
    return readme

"""Recipe profiles: `profiles: {ci: {...}}` overlays, chosen by --profile or EDGEGEN_PROFILE,
deep-merged over the recipe and recorded wherever its figures go."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from edge_app.bundle import load_bundle
from optimizer.errors import RecipeError
from optimizer.recipe import load_recipe

from ..artifacts import seed_extractors
from ..conftest import REPO, TINY_RECIPE

RECIPE = """name: p
family: dcgan
seeds: [0, 1, 2]
model: {latent_dim: 16, ngf: 8}
train: {epochs: 4, batch_size: 64}
points:
  - {name: int8, passes: [{pass: quantize, mode: static-int8}]}
profiles:
  ci:
    model: {ngf: 4}
    train: {epochs: 1}
    points: [{name: fp16, passes: [{pass: quantize, mode: fp16}]}]
  one-seed: {seeds: [0]}
"""


@pytest.fixture
def recipe(tmp_path):
    path = tmp_path / "p.yaml"
    path.write_text(RECIPE)
    return path


def test_a_profile_is_deep_merged_over_the_recipe(recipe, monkeypatch):
    monkeypatch.delenv("EDGEGEN_PROFILE", raising=False)
    plain, ci = load_recipe(recipe), load_recipe(recipe, "ci")
    assert (plain.profile, plain.train.epochs, plain.model["ngf"]) == ("", 4, 8)
    assert ci.profile == "ci"
    # mappings merge key by key: what the overlay does not name stays
    assert (ci.train.epochs, ci.train.batch_size) == (1, 64)
    assert ci.model == {"latent_dim": 16, "ngf": 4} and ci.seeds == (0, 1, 2)
    # lists are replaced whole
    assert [p.name for p in ci.points] == ["fp16"]


def test_the_environment_picks_a_profile_where_the_recipe_has_it(recipe, monkeypatch):
    monkeypatch.setenv("EDGEGEN_PROFILE", "one-seed")
    assert load_recipe(recipe).seeds == (0,)
    assert load_recipe(recipe, "").seeds == (0, 1, 2)  # '' on the command line: none
    assert load_recipe(TINY_RECIPE).profile == ""  # a recipe without it runs as written
    with pytest.raises(RecipeError, match=r"no profile 'nightly' \(its profiles: "
                                          r"\['ci', 'one-seed'\]\)"):
        load_recipe(recipe, "nightly")  # named explicitly: it must exist


@pytest.mark.parametrize("text, message", [
    ("name: x\nfamily: dcgan\nprofile: ci\n", "'profile' is chosen when running"),
    ("name: x\nfamily: dcgan\nprofiles: [ci]\n", "'profiles' must map names to overlays"),
    ("name: x\nfamily: dcgan\nprofiles: {ci: 3}\n", "'profiles' must map names to overlays"),
    ("name: x\nfamily: dcgan\nprofiles: {ci: {train: {epoch: 1}}}\n",
     r"unknown key\(s\) \['epoch'\] in 'train'"),
])
def test_bad_profiles_are_refused_with_the_key(tmp_path, text, message):
    path = tmp_path / "r.yaml"
    path.write_text(text)
    with pytest.raises(RecipeError, match=message):
        load_recipe(path, "ci")


def test_every_shipped_profile_parses():
    import yaml

    from optimizer.families import get_family
    from optimizer.run import check_points

    seen = 0
    for path in sorted((REPO / "recipes").glob("*.yaml")):
        for name in yaml.safe_load(path.read_text()).get("profiles", {}):
            recipe = load_recipe(path, name)
            assert recipe.profile == name
            check_points(recipe, get_family(recipe.family))  # every pass chain still plans
            seen += 1
    assert seen >= 2  # the quick image sweep and Beta-VAE recipes have a `ci` profile


def test_the_cli_records_the_profile_in_bundles_and_tables(tmp_path, fid_extractors):
    seed_extractors(tmp_path / "runs", fid_extractors)  # the session's, not trained again
    recipe = tmp_path / "tiny.yaml"
    recipe.write_text(TINY_RECIPE.read_text() + "profiles:\n  ci: {evaluate: {fid_samples: 64}}\n")
    result = subprocess.run(
        [sys.executable, "-m", "optimizer", "run", str(recipe), "--profile", "ci",
         "--out", str(tmp_path / "b"), "--runs-dir", str(tmp_path / "runs"), "--no-progress"],
        cwd=tmp_path, capture_output=True, text=True, timeout=600,
        env={**os.environ, "EDGEGEN_PROFILE": ""})  # the flag alone chooses it
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"recipe {recipe}: profile 'ci' applied" in result.stdout
    provenance = load_bundle(tmp_path / "b").manifest.provenance
    assert provenance["recipe"]["profile"] == "ci" and len(provenance["recipe"]["sha256"]) == 64
    method = json.loads((tmp_path / "runs" / "tiny-dcgan" / "results.json").read_text())["method"]
    assert method["profile"] == "ci" and method["fid_samples"] == 64
    assert "profile: ci" in (tmp_path / "runs" / "tiny-dcgan" / "results.md").read_text()

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
    assert seen >= 6  # `ci` (the quick image sweep, Beta-VAE) and `run` (what `make run` builds)


@pytest.mark.parametrize("sets, check", [
    (("train.epochs=1", "seeds=[0]"), lambda r: r.train.epochs == 1 and r.seeds == (0,)),
    (("model.ngf=4",), lambda r: r.model["ngf"] == 4 and r.train.epochs == 1),  # after ci
    (("name=other-name",), lambda r: r.name == "other-name"),
])
def test_set_changes_one_value_after_the_profile_and_is_recorded(recipe, sets, check):
    loaded = load_recipe(recipe, "ci", sets)
    assert check(loaded) and loaded.overrides == sets and loaded.profile == "ci"


@pytest.mark.parametrize("item, message", [
    ("train.epochs", "expected KEY=VALUE"), ("=3", "expected KEY=VALUE"),
    ("train.epochs.x=1", "train.epochs is not a mapping"),
    ("train.epochs=[", "the value is not valid YAML (expected the node content"),
    ("train.bogus=1", "unknown key(s) ['bogus'] in 'train'"),
    ("train.epochs=many", "train.epochs"),
])
def test_bad_sets_are_refused_in_one_line(recipe, item, message):
    with pytest.raises(RecipeError) as info:
        load_recipe(recipe, None, (item,))
    assert message in str(info.value) and "\n" not in str(info.value)


def test_the_cli_records_the_profile_in_bundles_and_tables(tmp_path, fid_extractors):
    seed_extractors(tmp_path / "runs", fid_extractors)  # the session's, not trained again
    recipe = tmp_path / "tiny.yaml"
    recipe.write_text(TINY_RECIPE.read_text() + "profiles:\n  ci: {evaluate: {fid_samples: 64}}\n")
    result = subprocess.run(
        [sys.executable, "-m", "optimizer", "run", str(recipe), "--profile", "ci",
         "--set", "train.batch_size=32", "--out", str(tmp_path / "b"),
         "--runs-dir", str(tmp_path / "runs"), "--no-progress"],
        cwd=tmp_path, capture_output=True, text=True, timeout=600,
        env={**os.environ, "EDGEGEN_PROFILE": ""})  # the flag alone chooses it
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"recipe {recipe}: profile 'ci' applied; set train.batch_size=32" in result.stdout
    manifest = load_bundle(tmp_path / "b").manifest
    provenance = manifest.provenance
    assert provenance["recipe"]["profile"] == "ci" and len(provenance["recipe"]["sha256"]) == 64
    assert provenance["recipe"]["overrides"] == ["train.batch_size=32"]
    assert next(t for t in manifest.techniques if t.name == "train").params["batch_size"] == 32
    method = json.loads((tmp_path / "runs" / "tiny-dcgan" / "results.json").read_text())["method"]
    assert method["profile"] == "ci" and method["fid_samples"] == 64
    assert method["overrides"] == ["train.batch_size=32"]
    assert "profile: ci" in (tmp_path / "runs" / "tiny-dcgan" / "results.md").read_text()

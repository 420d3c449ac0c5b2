"""The optimizer's DCGAN path: model shapes, recipes, export validation, no bundle on drift."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
import torch

from edge_app.bundle import load_bundle
from optimizer.errors import AtolError, ExportError, RecipeError, ShapeError
from optimizer.families.dcgan import FAMILY as DCGAN
from optimizer.families.image import CHECKS, GENERATOR, _Probe
from optimizer.export import run_checks
from optimizer.models.dcgan import DCGANConfig, Discriminator, Generator, count_parameters
from optimizer.recipe import load_recipe
from optimizer.run import run_recipe

load_checkpoint = DCGAN.load_checkpoint

from ..artifacts import seed_extractors
from ..conftest import REPO, TINY_RECIPE

ONNX_ATOL = 1e-4  # the tolerance the export spec promises on Tanh outputs in [-1, 1]


@pytest.mark.parametrize("size, stages", [(32, 4), (64, 5)])
def test_dcgan_shapes_and_parameter_count(size, stages):
    cfg = DCGANConfig(latent_dim=100, image_size=size, channels=3, ngf=64, ndf=64)
    gen, disc = Generator(cfg), Discriminator(cfg)
    assert gen(torch.zeros(2, 100)).shape == (2, 3, size, size)
    assert disc(torch.zeros(2, 3, size, size)).shape == (2,)
    convs = [m for m in gen.modules() if isinstance(m, torch.nn.ConvTranspose2d)]
    assert len(convs) == stages
    if size == 64:  # Radford et al.'s 64x64 generator (ngf 64, nz 100): 3,576,704 parameters
        assert count_parameters(gen) == 3_576_704


def test_onnx_matches_pytorch_within_tolerance(dcgan_bundle, tmp_path):
    gen = load_checkpoint(dcgan_bundle.parent / "runs" / "tiny-dcgan" / "seed0" / "baseline.pt")
    session = ort.InferenceSession(str(dcgan_bundle / "model.onnx"),
                                   providers=["CPUExecutionProvider"])
    z = torch.randn(16, 16, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        expected = gen(z).numpy()
    (actual,) = session.run(["image"], {"z": z.numpy()})
    assert actual.shape == (16, 1, 32, 32)
    np.testing.assert_allclose(actual, expected, rtol=0, atol=ONNX_ATOL)
    recorded = load_bundle(dcgan_bundle).manifest.techniques[-1].params
    assert recorded["atol"] == ONNX_ATOL and 0 <= recorded["max_abs_diff"] <= ONNX_ATOL


def test_export_over_tolerance_raises(dcgan_bundle):
    gen = load_checkpoint(dcgan_bundle.parent / "runs" / "tiny-dcgan" / "seed0" / "baseline.pt")
    with torch.no_grad():  # the graph on disk no longer matches the PyTorch model
        gen.main[0].weight.mul_(1.5)
    probe = _Probe(gen, dcgan_bundle / "model.onnx", 16, GENERATOR.atol, (1, 4), seed=0)
    with pytest.raises(AtolError, match=r"model.onnx: outputs_within_atol: exceeds atol 0.0001: "
                                        r"batch 1: max .*; batch 4: max") as err:
        run_checks(GENERATOR.checks, CHECKS, probe, "model.onnx")
    assert [name for name, _ in err.value.failures] == ["outputs_within_atol"]


def test_every_failed_check_is_named_in_one_error(dcgan_bundle):
    """Validation collects every failure before it raises: two kinds make a plain ExportError."""
    gen = load_checkpoint(dcgan_bundle.parent / "runs" / "tiny-dcgan" / "seed0" / "baseline.pt")
    probe = _Probe(gen, dcgan_bundle / "model.onnx", 16, 1e-12, (1,), seed=0)

    def wrong_shape(p):
        from optimizer.errors import CheckFailed
        raise CheckFailed(ShapeError, "batch 1: (1, 3, 8, 8) != (1, 1, 32, 32)")

    checks = {**CHECKS, "shape": wrong_shape}
    with pytest.raises(ExportError) as err:
        run_checks(("outputs_within_atol", "shape"), checks, probe, "g.onnx")
    assert type(err.value) is ExportError
    assert [n for n, _ in err.value.failures] == ["outputs_within_atol", "shape"]
    assert "outputs_within_atol: exceeds atol 1e-12" in str(err.value) and "shape: batch 1" in \
        str(err.value)


def test_build_over_tolerance_writes_no_bundle(tmp_path, fid_extractors):
    # ORT and PyTorch differ at float32 rounding level (~1e-7): a 1e-12 tolerance must fail.
    strict = tmp_path / "strict.yaml"
    strict.write_text(TINY_RECIPE.read_text().replace("atol: 1.0e-4", "atol: 1.0e-12"))
    seed_extractors(tmp_path / "runs", fid_extractors)  # the session's, not trained again
    with pytest.raises(AtolError, match=r"exceeds atol 1e-12"):
        run_recipe(load_recipe(strict), strict, tmp_path / "b", tmp_path / "runs", progress=False)
    assert not (tmp_path / "b").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["runs", "strict.yaml"]


def test_default_recipe_parses():
    recipe = load_recipe(REPO / "recipes" / "dcgan-digits-quick.yaml")
    assert recipe.model_config.image_size == 32 and recipe.train.lr == 2e-4 and recipe.train.beta1 == 0.5


@pytest.mark.parametrize("text, message", [
    ("name: x\nfamily: dcgan\ntrian: {}\n", r"unknown key\(s\) \['trian'\] in 'top level'"),
    ("name: x\nfamily: dcgan\ntrain: {epochs: ten}\n", "'train.epochs' must be int"),
    ("name: x\nfamily: dcgan\ntrain: {epochs: true}\n", "'train.epochs' must be int"),
    ("name: x\nfamily: dcgan\nmodel: {image_size: 48}\n", "image_size must be 32 or 64"),
    ("name: x\nfamily: vit\n", "family 'vit' is not supported"),
    ("family: dcgan\n", "missing 1 required positional argument: 'name'"),
    ("- a\n", "'top level' must be a mapping"),
    ("name: [unclosed\n", "is not valid YAML"),
])
def test_bad_recipes_are_refused_with_the_key(tmp_path, text, message):
    path = tmp_path / "r.yaml"
    path.write_text(text)
    with pytest.raises(RecipeError, match=message):
        load_recipe(path)


def test_cli_reports_errors_in_one_line(tmp_path):
    import subprocess
    import sys

    result = subprocess.run([sys.executable, "-m", "optimizer", "run", str(tmp_path / "nope.yaml")],
                            capture_output=True, text=True, cwd=REPO, timeout=120)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"optimizer: error: cannot read recipe {tmp_path / 'nope.yaml'}: No such file or directory"]


def test_every_shipped_recipe_parses_and_names_registered_passes():
    from optimizer.families import get_family
    from optimizer.run import check_points

    for path in sorted((REPO / "recipes").glob("*.yaml")):
        recipe = load_recipe(path)
        check_points(recipe, get_family(recipe.family))


def test_missing_dataset_path_is_one_clear_line(tmp_path):
    import subprocess
    import sys

    result = subprocess.run([sys.executable, "-m", "optimizer", "run",
                             str(REPO / "recipes" / "dcgan-cifar10-paper.yaml")],
                            capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("optimizer: error: cifar10 root data/cifar-10-batches-py is not a "
                           "directory; expected")


def test_mlflow_file_store_named_by_environment_works(tmp_path, monkeypatch):
    from optimizer.tracking import Tracker

    monkeypatch.delenv("MLFLOW_ALLOW_FILE_STORE", raising=False)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", (tmp_path / "store").as_uri())
    tracker = Tracker("exp", {"a": {"b": 1}}, enabled=True)
    tracker.log_metrics("baseline", 0, {"fid": 2.5, "nested": {"x": 1}, "note": "text"})
    tracker.finish(None, failed=False)
    assert list((tmp_path / "store").glob("*/*/metrics/baseline.fid"))
    assert list((tmp_path / "store").glob("*/*/params/a.b"))


def test_mlflow_unusable_store_is_one_line(tmp_path, monkeypatch):
    from optimizer.errors import OptimizerError
    from optimizer.tracking import Tracker

    monkeypatch.setenv("MLFLOW_TRACKING_URI", "bogus-scheme://nowhere")
    with pytest.raises(OptimizerError, match=r"MLflow tracking at bogus-scheme://nowhere failed: "
                                             r".*\(set mlflow: false"):
        Tracker("exp", {}, enabled=True)


def test_cross_corpus_perplexity_is_for_text_recipes_only():
    recipe = load_recipe(REPO / "recipes" / "gpt2-openwebtext-paper.yaml", "")
    assert (recipe.data.dataset, recipe.evaluate.corpus.dataset) == ("openwebtext", "wikitext2")
    with pytest.raises(RecipeError, match=r"^recipe: 'evaluate.corpus' \(perplexity on another "
                                          r"corpus\) applies to the text families, not 'dcgan'$"):
        load_recipe(REPO / "recipes" / "dcgan-celeba-paper.yaml", "",
                    ("evaluate.corpus={dataset: pydoc}",))

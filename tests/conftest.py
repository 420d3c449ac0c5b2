"""Shared fixtures: one tiny real DCGAN bundle per session, fresh apps per test."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from edge_app.bundle import load_bundle

from . import background
from .artifacts import RecipeRuns
from .tiers import TierClock

REPO = Path(__file__).resolve().parent.parent
TINY_RECIPE = REPO / "tests" / "data" / "tiny-dcgan.yaml"

# Recipes run at the size of their `ci` profile (optimizer/recipe.py: fewer steps where a test
# checks mechanics, every seed where it checks statistics); EDGEGEN_PROFILE= (empty) runs them
# as written. Set before any test imports the optimizer or starts it in a subprocess.
PROFILE = os.environ.setdefault("EDGEGEN_PROFILE", "ci")


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    """Print a failure when it happens, with the tail of what the test printed, not only in the
    summary at the end: a CI job stopped at its time limit still shows why its tests failed."""
    if not report.failed:
        return
    terminal = _config and _config.pluginmanager.get_plugin("terminalreporter")
    if not terminal:
        return
    terminal.write_line("")
    terminal.write_sep("!", f"FAILED {report.nodeid} ({report.when}, {report.duration:.0f} s)")
    for title, text in report.sections:
        if "stdout" in title or "stderr" in title:
            terminal.write_line(f"--- {title} (tail)\n{text[-3000:]}")
    terminal.write_line(report.longreprtext[-6000:])
    terminal.write_sep("!", "")


_config: pytest.Config | None = None


def pytest_configure(config: pytest.Config) -> None:
    global _config
    _config = config
    config.pluginmanager.register(TierClock(), "edgegen-tier-clock")


def pytest_report_header() -> str:
    return (f"recipes: profile {PROFILE!r} (EDGEGEN_PROFILE; empty: as written)" if PROFILE
            else "recipes: as written (EDGEGEN_PROFILE is empty)")


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Start the Docker image builds the selected e2e tests need, beside the other tiers."""
    groups = sorted({group for item in items for mark in item.iter_markers("docker_images")
                     for group in mark.args})
    if groups and not config.option.collectonly:
        from .e2e.conftest import IMAGES_JOB, docker_missing

        if docker_missing() is None:
            background.start(IMAGES_JOB, background.python_module("tests.e2e.prebuild", *groups))


def pytest_sessionfinish() -> None:
    background.stop_all()


def pytest_terminal_summary(terminalreporter) -> None:
    lines = background.summary_lines()
    if lines:
        terminalreporter.write_sep("-", "work run beside the tests (tests/background.py)")
        for line in lines:
            terminalreporter.write_line(line)


@pytest.fixture(scope="session")
def recipe_runs(tmp_path_factory) -> RecipeRuns:
    """Recipes run once per session through the CLI, by recipe hash (tests/artifacts.py)."""
    return RecipeRuns(tmp_path_factory.mktemp("recipe-runs"))


@pytest.fixture(scope="session")
def dcgan_bundle(tmp_path_factory) -> Path:
    """A real bundle: DCGAN trained for one epoch on scikit-learn digits, exported, validated."""
    from optimizer.recipe import load_recipe
    from optimizer.run import run_recipe

    root = tmp_path_factory.mktemp("bundles")
    result = run_recipe(load_recipe(TINY_RECIPE), TINY_RECIPE, root / "tiny-dcgan", root / "runs",
                        progress=False)
    (bundle,) = result.bundles
    return bundle.path


@pytest.fixture(scope="session")
def fid_extractors(dcgan_bundle) -> Path:
    """The optimizer's FID extractor cache (runs/extractors/) as the session's tiny-dcgan run
    left it: the rotation CNN of the bundled digits, trained once. Image recipe runs start from
    a copy (artifacts.seed_extractors) instead of training their own."""
    return dcgan_bundle.parent / "runs" / "extractors"


@pytest.fixture
def bundle_copy(dcgan_bundle, tmp_path) -> Path:
    """A private copy of the session bundle that a test may modify."""
    return Path(shutil.copytree(dcgan_bundle, tmp_path / "bundle"))


@pytest.fixture
def app(dcgan_bundle):
    from edge_app import create_app

    return create_app({"bundles": [str(dcgan_bundle)], "max_images_per_request": 8})


@pytest.fixture
def client(app):
    return app.test_client()


@pytest.fixture
def manifest(dcgan_bundle):
    return load_bundle(dcgan_bundle).manifest


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


TINY_TEXT_RECIPE = REPO / "tests" / "data" / "tiny-gpt2.yaml"


def _session_run(tmp_path_factory, recipe: Path):
    """A recipe run once for the session, through the real driver: (result, its runs dir)."""
    from optimizer.recipe import load_recipe
    from optimizer.run import run_recipe

    root = tmp_path_factory.mktemp(recipe.stem)
    result = run_recipe(load_recipe(recipe), recipe, root / "bundles" / recipe.stem,
                        root / "runs", progress=False)
    assert not result.failed, result.failed
    return result, root / "runs" / recipe.stem


@pytest.fixture(scope="module")
def quick(request, recipe_runs):
    """The test module's RECIPE through the CLI, once per session (tests/artifacts.py; at its
    `ci` profile if it has one): (its directory, results.json, stdout)."""
    run = recipe_runs.run(request.module.RECIPE)
    assert run.returncode == 0, run.stderr[-3000:]
    return run.dir, run.results(), run.stdout


@pytest.fixture(scope="session")
def gpt2_run(tmp_path_factory):
    """Real text bundles (FP32 and INT8) of a 2-layer GPT-2 trained on pydoc text, and the run's
    directory (checkpoint, tokenizer, tables)."""
    return _session_run(tmp_path_factory, TINY_TEXT_RECIPE)


@pytest.fixture(scope="session")
def gpt2_bundle(gpt2_run) -> Path:
    return gpt2_run[0].bundles[0].path


TINY_LLAMA_RECIPE = REPO / "tests" / "data" / "tiny-llama.yaml"


@pytest.fixture(scope="session")
def llama_run(tmp_path_factory):
    """Real Llama-family bundles (FP32, INT8, INT4) of a 2-layer grouped-query decoder trained
    on pydoc text with a ChatML tokenizer, and the run's directory."""
    return _session_run(tmp_path_factory, TINY_LLAMA_RECIPE)


@pytest.fixture(scope="session")
def llama_bundle(llama_run) -> Path:
    return llama_run[0].bundles[0].path


CHROMIUM, DRIVER = shutil.which("chromium"), shutil.which("chromedriver")


@pytest.fixture(scope="module")
def browser():
    """Headless Chromium (Debian's chromium + chromium-driver, through Selenium), with the
    browser console log and the performance log (DevTools network events: every request the
    page makes) kept; skipped, with the reason, where it is not installed."""
    if not (CHROMIUM and DRIVER):
        pytest.skip("headless Chromium is not installed (apt-get install chromium "
                    "chromium-driver; .ci/run does)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--no-first-run", "--disable-extensions", "--disable-background-networking",
                "--window-size=1200,1000"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL", "performance": "ALL"})
    driver = webdriver.Chrome(service=Service(DRIVER), options=options)
    yield driver
    driver.quit()


ANDROID = REPO / "android"


def run_script(*args, env: dict | None = None, timeout: float = 600):
    """A repo script (android/*.sh) from the repo root, output captured."""
    return subprocess.run([str(a) for a in args], cwd=REPO, env={**os.environ, **(env or {})},
                          capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="session")
def ort_web_dir() -> Path:
    """onnxruntime-web's files for the companion page: android/fetch-web-deps.sh fetches the
    pinned npm package once (integrity-checked) into build/web-deps/onnxruntime-web."""
    from edge_app.companion import DEFAULT_ORT_DIR

    if not (DEFAULT_ORT_DIR / "VERSION").is_file() and not shutil.which("npm"):
        pytest.skip("npm is not installed, so onnxruntime-web cannot be fetched (apt-get install "
                    "nodejs npm; .ci/run does)")
    run = run_script(ANDROID / "fetch-web-deps.sh")
    assert run.returncode == 0, run.stdout + run.stderr
    return DEFAULT_ORT_DIR


@pytest.fixture(scope="session")
def android_sdk() -> None:
    """Debian's Android build tools (android/sdk.sh installs what is missing); skipped, with
    the reason, only where they cannot be installed (not root, or no package mirror)."""
    run = run_script(ANDROID / "sdk.sh")
    if run.returncode == 3:
        pytest.skip(f"the Android SDK tools cannot be installed here: {run.stderr.strip()}")
    assert run.returncode == 0, run.stdout + run.stderr


@pytest.fixture(scope="session")
def companion_apk(android_sdk, ort_web_dir, dcgan_bundle, gpt2_bundle, llama_bundle,
                  tmp_path_factory) -> Path:
    """The companion APK with three tiny bundles (images, text, and a Llama that can chat),
    built by android/build.sh in a temporary directory (build/android, with a developer's APK
    and debug key, is left alone)."""
    out = tmp_path_factory.mktemp("apk")
    run = run_script(ANDROID / "build.sh", dcgan_bundle, gpt2_bundle, llama_bundle,
                     env={"PYTHON": sys.executable, "APK_OUT": str(out)})
    assert run.returncode == 0, run.stdout + run.stderr
    return out / "edgegen-companion.apk"


"""The companion APK, built by android/build.sh from Debian's Android tools with the two tiny
bundles, passes the checks a phone's installer makes: aapt reads its manifest, apksigner
verifies its signature, zipalign finds it aligned. android/deploy.sh with no adb prints the
APK's path and the exact install command."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import zipfile

import pytest

from edge_app import __version__

from ..conftest import ANDROID, run_script

pytestmark = pytest.mark.integration


def tool(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(args, capture_output=True, text=True, timeout=120)


def test_apk_is_readable_signed_and_aligned(companion_apk):
    badging = tool("aapt", "dump", "badging", str(companion_apk))
    assert badging.returncode == 0, badging.stderr
    out = badging.stdout
    assert f"package: name='net.edgegen.companion' versionCode='1' versionName='{__version__}'" in out
    assert "sdkVersion:'24'" in out and "targetSdkVersion:'34'" in out
    assert "launchable-activity: name='net.edgegen.companion.MainActivity'" in out
    assert "uses-permission: name='android.permission.INTERNET'" in out
    assert "application-debuggable" in out  # a debug build: chrome://inspect reaches the page

    verify = tool("apksigner", "verify", "-v", str(companion_apk))
    assert verify.returncode == 0, verify.stdout + verify.stderr
    assert verify.stdout.startswith("Verifies")
    assert "Verified using v2 scheme (APK Signature Scheme v2): true" in verify.stdout

    aligned = tool("zipalign", "-c", "-p", "4", str(companion_apk))
    assert aligned.returncode == 0, aligned.stdout + aligned.stderr


def test_apk_holds_the_page_onnxruntime_web_and_the_bundles(companion_apk, ort_web_dir):
    with zipfile.ZipFile(companion_apk) as apk:
        info = {i.filename: i for i in apk.infolist()}
        index = json.loads(apk.read("assets/bundles/index.json"))
        dex = apk.read("classes.dex")
        assert apk.read("assets/companion/ort-wasm-simd-threaded.wasm") == \
            (ort_web_dir / "ort-wasm-simd-threaded.wasm").read_bytes()
    assert {"classes.dex", "AndroidManifest.xml", "resources.arsc",
            "assets/companion/index.html", "assets/companion/engine.js",
            "assets/companion/bench.js",
            "assets/companion/ort.wasm.min.mjs", "assets/companion/chat.js",
            "assets/companion/huggingface-jinja.mjs", "assets/bundles/tiny-dcgan/model.onnx",
            "assets/bundles/tiny-gpt2/tokenizer.json"} <= set(info)
    assert b"Lnet/edgegen/companion/BenchBridge;" in dex  # the bench mode's bridge
    assert [b["name"] for b in index["bundles"]] == ["tiny-dcgan", "tiny-gpt2", "tiny-llama"]
    assert [b["chat"] for b in index["bundles"]] == [False, False, True]
    # wasm and models are stored (streamed by AssetManager without inflating).
    for name in ("assets/companion/ort-wasm-simd-threaded.wasm",
                 "assets/bundles/tiny-gpt2/model.onnx", "resources.arsc"):
        assert info[name].compress_type == zipfile.ZIP_STORED, name


def test_deploy_without_a_phone_prints_the_apk_and_the_install_command(android_sdk, ort_web_dir,
                                                                       dcgan_bundle, tmp_path):
    run = run_script(ANDROID / "deploy.sh", dcgan_bundle, env={
        "PYTHON": sys.executable, "ADB": "/nonexistent/adb", "APK_OUT": str(tmp_path)})
    assert run.returncode == 0, run.stdout + run.stderr
    apk = tmp_path.resolve() / "edgegen-companion.apk"
    assert apk.is_file()
    assert f"APK: {apk}" in run.stdout
    assert f"  adb install -r {apk}" in run.stdout
    assert re.search(r"adb shell am start -n net\.edgegen\.companion/\.MainActivity$", run.stdout,
                     re.MULTILINE)


def test_a_tampered_bundle_is_not_packed(android_sdk, ort_web_dir, bundle_copy, tmp_path):
    manifest = json.loads((bundle_copy / "manifest.json").read_text())
    (bundle_copy / "model.onnx").write_bytes(b"not the model")
    run = run_script(ANDROID / "build.sh", bundle_copy,
                     env={"PYTHON": sys.executable, "APK_OUT": str(tmp_path)})
    assert run.returncode != 0 and not (tmp_path / "edgegen-companion.apk").exists()
    assert "model.onnx" in run.stderr and str(manifest["files"]["model.onnx"]["size"]) in run.stderr


def test_make_deploy_pixel_builds_the_apk_and_says_how_to_install(android_sdk, ort_web_dir,
                                                                   dcgan_bundle, tmp_path):
    inventory = tmp_path / "phones.yml"
    inventory.write_text("all:\n  children:\n    pixel:\n      hosts:\n        pixel6-lab:\n"
                         "          edgegen_bundles: [tiny-dcgan]\n"
                         "          edgegen_phone_serial: 1A2B3C4D5E6F\n")
    bundles = tmp_path / "bundles"
    shutil.copytree(dcgan_bundle, bundles / "tiny-dcgan")
    result = subprocess.run(
        [sys.executable, "-m", "fleet", "deploy", "--device", "pixel", "--inventory",
         str(inventory), "--bundles", str(bundles)], cwd=ANDROID.parent, capture_output=True,
        text=True, timeout=600, env={**os.environ, "ADB": str(tmp_path / "no-adb"),
                                     "APK_OUT": str(tmp_path / "apk")})
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    apk = tmp_path / "apk" / "edgegen-companion.apk"
    assert apk.is_file() and "== pixel6-lab ==" in result.stdout
    assert f"adb install -r {apk}" in result.stdout and "1 of 1 phone(s) done" in result.stdout

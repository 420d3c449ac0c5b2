"""The companion's server side: the page and its files at /companion/, the loaded bundles' files
at /bundles/ (only files a manifest lists: no path reaches outside a bundle), JSON 4xx errors,
auth on bundle files, and the constants the page shares with the server and scripts."""

from __future__ import annotations

import gzip
import json
import re

import pytest

from edge_app import create_app
from edge_app.companion import JINJA_FILES, ORT_FILES, WEB_DEPS, bundle_index
from edge_app.metrics import LATENCY_BUCKETS

from ..conftest import ANDROID, REPO

PAGE_JS = REPO / "edge_app" / "static" / "companion"
KEY = "sk-companion-0123456789abcdef"


@pytest.fixture
def ort_dir(tmp_path):
    """A directory laid out as android/fetch-web-deps.sh leaves it (small stand-in files: these
    tests check routing, the browser tests run the real onnxruntime-web)."""
    for name in WEB_DEPS:
        (tmp_path / name).write_bytes(b"\0asm" if name.endswith(".wasm") else b"export {};\n")
    return tmp_path


@pytest.fixture
def companion(dcgan_bundle, ort_dir):
    return create_app({"bundles": [str(dcgan_bundle)], "power_sensor": "none",
                       "companion_ort_dir": str(ort_dir)}).test_client()


def get(client, path: str, **kwargs):
    """GET, read whole (a streamed file response left unread keeps its file open)."""
    return client.get(path, buffered=True, **kwargs)


def error(response, status: int) -> str:
    assert response.status_code == status and response.is_json, response.data[:200]
    body = response.get_json()["error"]
    assert set(body) >= {"message", "type", "code"}
    return body["message"]


def test_page_and_its_files(companion):
    assert get(companion, "/companion").status_code == 308
    page = get(companion, "/companion/")
    assert page.status_code == 200 and page.mimetype == "text/html"
    assert "'wasm-unsafe-eval'" in page.headers["Content-Security-Policy"]
    html = page.get_data(as_text=True)
    assert '<script type="module" src="companion.js">' in html
    assert not re.findall(r'(?:src|href)\s*=\s*["\'](?:https?:)?//', html)
    for name in ("companion.js", "engine.js", "tokenizer.js", "chat.js", "bench.js",
                 "ort.wasm.min.mjs", "huggingface-jinja.mjs"):
        r = get(companion, f"/companion/{name}")
        assert r.status_code == 200 and r.mimetype == "text/javascript", name
    wasm = get(companion, "/companion/ort-wasm-simd-threaded.wasm")
    assert wasm.status_code == 200 and wasm.mimetype == "application/wasm"


@pytest.mark.parametrize("path", ["/companion/app.py", "/companion/..%2Fapp.py",
                                  "/companion/../app.py", "/companion/%2e%2e",
                                  "/companion/ort.min.mjs", "/companion/index.html%00"])
def test_page_files_outside_the_page_are_404(companion, path):
    error(get(companion, path), 404)
    assert "no companion file 'app.py'" in error(get(companion, "/companion/app.py"), 404)


def test_missing_onnxruntime_web_says_how_to_get_it(dcgan_bundle, tmp_path):
    client = create_app({"bundles": [str(dcgan_bundle)], "power_sensor": "none",
                         "companion_ort_dir": str(tmp_path / "none")}).test_client()
    message = error(get(client, "/companion/ort-wasm-simd-threaded.wasm"), 404)
    assert "android/fetch-web-deps.sh" in message and "companion_ort_dir" in message
    message = error(get(client, "/companion/huggingface-jinja.mjs"), 404)
    assert message.startswith("@huggingface/jinja file") and "fetch-web-deps.sh" in message


def test_gzipped_onnxruntime_web_of_device_images(dcgan_bundle, ort_dir, tmp_path):
    packed = tmp_path / "packed"
    packed.mkdir()
    for name in WEB_DEPS:
        (packed / (name + ".gz")).write_bytes(gzip.compress((ort_dir / name).read_bytes()))
    client = create_app({"bundles": [str(dcgan_bundle)], "power_sensor": "none",
                         "companion_ort_dir": str(packed)}).test_client()
    name = "ort-wasm-simd-threaded.wasm"
    raw = (ort_dir / name).read_bytes()
    r = client.get(f"/companion/{name}", headers={"Accept-Encoding": "gzip, br"})
    assert r.status_code == 200 and r.headers["Content-Encoding"] == "gzip"
    assert r.headers["Content-Type"] == "application/wasm" and gzip.decompress(r.data) == raw
    plain = client.get(f"/companion/{name}", headers={"Accept-Encoding": "identity"})
    assert "Content-Encoding" not in plain.headers and plain.data == raw


def test_bundle_index_and_files(companion, dcgan_bundle, manifest):
    index = get(companion, "/bundles/index.json").get_json()
    assert index == {"bundles": [{"name": "tiny-dcgan", "task": "image-generation",
                                  "family": "dcgan", "precision": manifest.precision,
                                  "chat": False, "files": ["manifest.json", "model.onnx"]}]}
    served = get(companion, "/bundles/tiny-dcgan/manifest.json")
    assert served.mimetype == "application/json"
    assert served.get_json() == json.loads((dcgan_bundle / "manifest.json").read_text())
    model = get(companion, "/bundles/tiny-dcgan/model.onnx")
    assert model.mimetype == "application/octet-stream"
    assert model.data == (dcgan_bundle / "model.onnx").read_bytes()


@pytest.mark.parametrize("path", [
    "/bundles/tiny-dcgan/tokenizer.json",  # not in this bundle's manifest
    "/bundles/tiny-dcgan/..%2Fmanifest.json",
    "/bundles/tiny-dcgan/%2e%2e",
    "/bundles/tiny-dcgan/model.onnx%00",
    "/bundles/tiny-dcgan/.%2Fmodel.onnx",
    "/bundles/..%2F..%2Fetc/passwd",
    "/bundles/tiny-dcgan/../../../etc/passwd",
])
def test_bundle_paths_outside_the_manifest_are_404(companion, path):
    error(get(companion, path), 404)


def test_unknown_bundle_is_404_naming_the_loaded_ones(companion):
    r = get(companion, "/bundles/nope/manifest.json")
    assert "tiny-dcgan" in error(r, 404) and r.get_json()["error"]["code"] == "model_not_found"


def test_bundle_files_need_the_key_the_page_does_not(dcgan_bundle, ort_dir):
    client = create_app({"bundles": [str(dcgan_bundle)], "power_sensor": "none", "api_keys": [KEY],
                         "companion_ort_dir": str(ort_dir)}).test_client()
    assert get(client, "/companion/").status_code == 200
    assert get(client, "/companion/engine.js").status_code == 200
    error(get(client, "/bundles/index.json"), 401)
    error(get(client, "/bundles/tiny-dcgan/model.onnx"), 401)
    auth = {"Authorization": f"Bearer {KEY}"}
    assert get(client, "/bundles/tiny-dcgan/model.onnx", headers=auth).status_code == 200


def test_stage_assets_lays_out_the_apk_like_the_server(dcgan_bundle, ort_dir, tmp_path):
    import sys

    sys.path.insert(0, str(ANDROID))
    try:
        from stage_assets import stage
    finally:
        sys.path.remove(str(ANDROID))
    from edge_app.bundle import load_bundle

    out = tmp_path / "assets"
    stage(out, ort_dir, [dcgan_bundle])
    assert json.loads((out / "bundles" / "index.json").read_text()) == \
        bundle_index([load_bundle(dcgan_bundle)])
    assert {p.name for p in (out / "companion").iterdir()} == \
        {p.name for p in PAGE_JS.iterdir()} | set(WEB_DEPS)
    assert (out / "bundles" / "tiny-dcgan" / "model.onnx").read_bytes() == \
        (dcgan_bundle / "model.onnx").read_bytes()


def test_shared_constants_agree():
    # The page's histogram buckets are the server's, so fleet quantiles mix phones and servers.
    js = (PAGE_JS / "metrics.js").read_text()
    buckets = re.search(r"LATENCY_BUCKETS = \[([^\]]*)\]", js).group(1)
    assert tuple(float(v) for v in buckets.split(",")) == LATENCY_BUCKETS
    # The fetch script keeps exactly the files the server serves and the APK packs.
    script = (ANDROID / "fetch-web-deps.sh").read_text()
    assert tuple(re.search(r"^ORT_FILES=\(([^)]*)\)", script, re.MULTILINE).group(1).split()) \
        == ORT_FILES
    assert (re.search(r"^JINJA_FILE=(\S+)", script, re.MULTILINE).group(1),) == JINJA_FILES

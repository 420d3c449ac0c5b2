"""The companion page in headless Chromium, running the tiny real bundles with onnxruntime-web
(wasm, one thread), against Python ONNX Runtime on the same bundles:

- images: the page draws the same latent for the same seed (bit for bit), the graph's float
  output agrees within IMAGE_ATOL, and the 8-bit pixels within one level (a float that lands
  within IMAGE_ATOL of a rounding boundary may round the other way);
- text: the page tokenizes the prompt as `tokenizers` does, and greedy decoding with the KV
  cache gives exactly the tokens (and text) of Python ONNX Runtime and of the server's API;
- figures: latency and tokens/s are shown, and pushed to a real Pushgateway under the fleet's
  group for phones, in the server's metric names;
- nothing is requested from anywhere but 127.0.0.1 (DevTools network events).
It runs once more from the APK's own asset tree, served as the APK's asset server lays it out.
"""

from __future__ import annotations

import base64
import io
import json
import threading
import zipfile
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np
import onnxruntime as ort
import pytest
import requests

from edge_app.bundle import load_bundle
from edge_app.latent import normal_latents
from edge_app.png import to_uint8
from edge_app.textgen import Decoder

from ..conftest import REPO
from ..integration.serverproc import ServerProcess

pytestmark = [pytest.mark.browser, pytest.mark.integration]
IMAGE_ATOL = 1e-4  # float output, page (onnxruntime-web wasm) vs Python ONNX Runtime (CPU)
SCREENSHOT = REPO / "build" / "companion-screenshot.png"
PROMPT = "The for statement"


@pytest.fixture(scope="module")
def server(gpt2_bundle, dcgan_bundle, ort_web_dir):
    proc = ServerProcess(gpt2_bundle, dcgan_bundle,
                         env={"EDGEGEN_COMPANION_ORT_DIR": str(ort_web_dir)})
    proc.wait_ready()
    yield proc
    code, output = proc.stop()
    assert code == 0 and "Traceback" not in output, output[-3000:]


# --------------------------------------------------------------------------- page driving


def set_field(browser, field: str, value: str) -> None:
    from selenium.webdriver.common.by import By

    element = browser.find_element(By.ID, field)
    element.clear()
    element.send_keys(value)


def run_and_wait(browser, button: str) -> dict:
    """Click a run button; wait for the run to finish; the page's raw result of that run."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    before = int(browser.execute_script("return document.body.dataset.runs || '0'"))
    browser.find_element(By.ID, button).click()
    WebDriverWait(browser, 120).until(
        lambda d: int(d.execute_script("return document.body.dataset.runs || '0'")) > before)
    kind = "image" if button == "generate" else "text"
    return browser.execute_script(f"""
        const r = window.companion.last.{kind};
        if (!r) return null;
        const out = {{...r}};
        for (const k of ["latent", "images", "pixels"]) if (r[k]) out[k] = Array.from(r[k]);
        return out;""")


def open_page(browser, url: str) -> None:
    from selenium.webdriver.support.ui import WebDriverWait

    browser.get(url)
    WebDriverWait(browser, 60).until(lambda d: d.execute_script("return document.body.dataset.ready"))
    browser.get_log("performance")  # keep only what this page load and its runs request


def request_urls(browser) -> list[str]:
    """Every URL the page requested since the last call (DevTools Network events)."""
    urls = []
    for entry in browser.get_log("performance"):
        message = json.loads(entry["message"])["message"]
        if message["method"] == "Network.requestWillBeSent":
            urls.append(message["params"]["request"]["url"])
    return urls


def assert_local(urls: list[str]) -> None:
    remote = [u for u in urls if urlsplit(u).scheme not in ("data", "blob")
              and urlsplit(u).hostname != "127.0.0.1"]
    assert not remote, remote


def assert_no_console_errors(browser) -> None:
    errors = [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]
    assert not errors, errors


def pushed_samples(pushgateway: str, device: str) -> dict:
    """The Pushgateway's samples of one phone's group: (name, other labels) -> value."""
    from prometheus_client.parser import text_string_to_metric_families

    out = {}
    text = requests.get(pushgateway + "/metrics", timeout=10).text
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.labels.get("job") == "edgegen-phone" and s.labels.get("device") == device:
                rest = {k: v for k, v in s.labels.items() if k not in ("job", "device", "instance")}
                out[s.name, tuple(sorted(rest.items()))] = s.value
    return out


# --------------------------------------------------------------------------- references


def python_images(bundle: Path, seed: int, n: int) -> tuple[np.ndarray, np.ndarray]:
    b = load_bundle(bundle)
    gen = b.manifest.generation
    session = ort.InferenceSession(str(b.model_path), providers=["CPUExecutionProvider"])
    z = normal_latents(seed, n, gen.latent.dim)
    (images,) = session.run([gen.image_output], {gen.latent_input: z})
    return z, images


def python_greedy(bundle: Path, prompt: str, max_tokens: int) -> tuple[list[int], list[int], str]:
    from tokenizers import Tokenizer

    b = load_bundle(bundle)
    tok = Tokenizer.from_file(str(bundle / b.manifest.generation.tokenizer_file))
    ids = tok.encode(prompt).ids
    decoder = Decoder.open(b.model_path, b.manifest.generation)
    tokens = decoder.generate(ids, max_tokens).tokens
    return ids, tokens, tok.decode(tokens)


def check_images(page: dict, bundle: Path) -> dict:
    z, images = python_images(bundle, page["seed"], page["n"])
    assert page["shape"] == list(images.shape)
    assert np.array_equal(np.asarray(page["latent"], np.float32), z.ravel())  # bit for bit
    diff = np.abs(np.asarray(page["images"], np.float32) - images.ravel())
    assert diff.max() <= IMAGE_ATOL, diff.max()
    value_range = load_bundle(bundle).manifest.generation.image.value_range
    pixels = to_uint8(images, value_range).ravel().astype(int)
    levels = np.abs(np.asarray(page["pixels"]) - pixels)
    assert levels.max() <= 1
    return {"float_max_abs_diff": float(diff.max()), "pixels_differing": int((levels > 0).sum()),
            "pixels": int(levels.size)}


# --------------------------------------------------------------------------- tests


def test_page_matches_python_onnxruntime_and_stays_local(browser, server, dcgan_bundle,
                                                         gpt2_bundle, pushgateway, capsys):
    from selenium.webdriver.common.by import By

    # /companion redirects to /companion/, so the page's relative URLs resolve.
    redirect = requests.get(server.base + "/companion", allow_redirects=False, timeout=10)
    assert redirect.status_code == 308 and redirect.headers["Location"].endswith("/companion/")
    open_page(browser, f"{server.base}/companion?pushgateway={pushgateway}&device=test-phone")
    assert browser.title == "EdgeGen companion"
    assert "onnxruntime-web 1.30.0, wasm backend, 1 thread" in \
        browser.find_element(By.ID, "runtime").text

    # Images: 3 from seed 42.
    set_field(browser, "image-seed", "42")
    set_field(browser, "n", "3")
    page = run_and_wait(browser, "generate")
    assert page is not None, browser.find_element(By.ID, "image-figures").text
    image_stats = check_images(page, dcgan_bundle)
    assert len(browser.find_elements(By.CSS_SELECTOR, "#images canvas")) == 3
    assert "latency" in browser.find_element(By.ID, "image-figures").text
    api = requests.post(server.base + "/v1/images/generations",
                        json={"model": "tiny-dcgan", "n": 3, "seed": 42}, timeout=30).json()
    from PIL import Image

    served = np.stack([np.asarray(Image.open(io.BytesIO(base64.b64decode(d["b64_json"]))))
                       for d in api["data"]])
    assert np.abs(served.ravel().astype(int) - np.asarray(page["pixels"])).max() <= 1

    # Text: greedy, 40 tokens.
    set_field(browser, "prompt", PROMPT)
    set_field(browser, "temperature", "0")
    set_field(browser, "max-tokens", "40")
    page = run_and_wait(browser, "complete")
    assert page is not None, browser.find_element(By.ID, "text-figures").text
    ids, tokens, text = python_greedy(gpt2_bundle, PROMPT, 40)
    assert page["promptIds"] == ids
    assert page["tokens"] == tokens and page["text"] == text
    api = requests.post(server.base + "/v1/completions", timeout=30, json={
        "model": "tiny-gpt2", "prompt": PROMPT, "max_tokens": 40, "temperature": 0}).json()
    assert api["choices"][0]["text"] == page["text"]
    figures = browser.find_element(By.ID, "text-figures").text
    assert "tokens/s" in figures and "first token" in figures and "latency" in figures
    assert browser.find_element(By.ID, "completion").text == (PROMPT + text).strip()
    SCREENSHOT.parent.mkdir(exist_ok=True)
    size = browser.get_window_size()
    browser.set_window_size(900, 1400)  # the whole page, both runs and their figures
    browser.save_screenshot(str(SCREENSHOT))
    browser.set_window_size(size["width"], size["height"])

    # Sampled, seeded: the same seed gives the same tokens again on the page.
    set_field(browser, "temperature", "0.9")
    set_field(browser, "top-k", "40")
    set_field(browser, "top-p", "0.9")
    set_field(browser, "text-seed", "7")
    first = run_and_wait(browser, "complete")
    again = run_and_wait(browser, "complete")
    assert first["tokens"] == again["tokens"] and first["tokens"] != tokens
    assert all(0 < t < 512 for t in first["tokens"])

    # Figures pushed to the Pushgateway, in the fleet's group for this phone.
    pushed = pushed_samples(pushgateway, "test-phone")
    generated = len(tokens) + 2 * len(first["tokens"])
    assert pushed["edgegen_generated_images_total", (("model", "tiny-dcgan"),)] == 3
    assert pushed["edgegen_generated_tokens_total", (("model", "tiny-gpt2"),)] == generated
    assert pushed["edgegen_requests_total", (("endpoint", "/v1/completions"), ("model", "tiny-gpt2"),
                                              ("status", "200"))] == 3
    assert pushed["edgegen_request_duration_seconds_count",
                  (("endpoint", "/v1/images/generations"), ("model", "tiny-dcgan"))] == 1
    assert pushed["edgegen_time_to_first_token_seconds_count", (("model", "tiny-gpt2"),)] == 3
    assert "metrics pushed" in browser.find_element(By.ID, "push-status").text

    # Every request went to 127.0.0.1: the page, onnxruntime-web, the bundles, the push.
    urls = request_urls(browser)
    assert_local(urls)
    paths = {urlsplit(u).path for u in urls}
    assert {"/companion/ort-wasm-simd-threaded.wasm", "/bundles/tiny-gpt2/model.onnx",
            "/bundles/tiny-dcgan/model.onnx", "/metrics/job/edgegen-phone/device/test-phone"} <= paths
    assert_no_console_errors(browser)
    with capsys.disabled():
        print(f"\ncompanion vs Python ORT: images {image_stats}; greedy tokens "
              f"{len(tokens)}/{len(tokens)} equal; screenshot {SCREENSHOT}")


def test_bad_settings_are_shown_not_run(browser, server):
    from selenium.webdriver.common.by import By

    open_page(browser, server.base + "/companion/")
    set_field(browser, "image-seed", "-1")
    assert run_and_wait(browser, "generate") is None
    assert "image-seed must be an integer" in browser.find_element(By.ID, "image-figures").text
    assert_local(request_urls(browser))


class _ApkAssets(BaseHTTPRequestHandler):
    """The APK's asset tree over HTTP on 127.0.0.1, as android/src/.../AssetServer.java serves
    it to the WebView: GET /assets/<path> from the APK's assets/, typed by extension."""

    apk: zipfile.ZipFile
    TYPES = {".html": "text/html", ".js": "text/javascript", ".mjs": "text/javascript",
             ".json": "application/json", ".wasm": "application/wasm"}

    def do_GET(self):  # noqa: N802 (http.server's name)
        path = urlsplit(self.path).path
        try:
            data = self.apk.read(path.lstrip("/")) if path.startswith("/assets/") else None
        except KeyError:
            data = None
        if data is None or ".." in path:
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Type", self.TYPES.get(Path(path).suffix, "application/octet-stream"))
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


@contextmanager
def apk_assets(apk_path: Path):
    """The APK's asset tree served on a loopback port: yields the page's URL."""
    apk = zipfile.ZipFile(apk_path)
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), type("Handler", (_ApkAssets,), {"apk": apk}))
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{httpd.server_port}/assets/companion/index.html"
    finally:
        httpd.shutdown()
        httpd.server_close()
        apk.close()


def test_the_apks_own_assets_run_the_same_bundles(browser, companion_apk, dcgan_bundle,
                                                  gpt2_bundle):
    from selenium.webdriver.common.by import By

    with apk_assets(companion_apk) as url:
        open_page(browser, url)
        assert "3 bundle(s): tiny-dcgan, tiny-gpt2, tiny-llama" in \
            browser.find_element(By.ID, "status").text
        set_field(browser, "n", "2")
        check_images(run_and_wait(browser, "generate"), dcgan_bundle)
        set_field(browser, "prompt", PROMPT)
        set_field(browser, "temperature", "0")
        set_field(browser, "max-tokens", "24")
        page = run_and_wait(browser, "complete")
        assert page["tokens"] == python_greedy(gpt2_bundle, PROMPT, 24)[1]
        assert "no fleet address set" in browser.find_element(By.ID, "push-status").text
        assert_local(request_urls(browser))
        assert_no_console_errors(browser)

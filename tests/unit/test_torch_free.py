"""edge_app imports and serves with torch (and transformers, optimizer, fleet) unimportable."""

from __future__ import annotations

import json
import subprocess
import sys

from ..conftest import REPO

BLOCKER = """
import importlib.abc, sys
BLOCKED = ("torch", "transformers", "optimizer", "fleet", "torchvision")
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ImportError(f"{name} is blocked: edge_app must not import it")
sys.meta_path.insert(0, Block())
"""

PROBE = BLOCKER + """
import base64, json
try:
    import torch
    raise SystemExit("the blocker did not work")
except ImportError:
    pass
from edge_app import create_app
import edge_app.power  # sensors and sampler run on the device too
client = create_app({"bundles": [sys.argv[1]]}).test_client()
response = client.post("/v1/images/generations", json={"n": 2, "seed": 3})
body = response.get_json()
print(json.dumps({
    "status": response.status_code,
    "images": len(body["data"]),
    "png": base64.b64decode(body["data"][0]["b64_json"])[:8].hex(),
    "loaded": sorted(m for m in sys.modules if m.split(".")[0] in BLOCKED),
}))
"""


def test_edge_app_serves_without_torch(dcgan_bundle):
    result = subprocess.run([sys.executable, "-c", PROBE, str(dcgan_bundle)], cwd=REPO,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report == {"status": 200, "images": 2, "png": "89504e470d0a1a0a", "loaded": []}

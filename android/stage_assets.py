"""Lay out the APK's assets/ as the edge server lays out its URLs (edge_app/companion.py):

    assets/companion/   the page (edge_app/static/companion), onnxruntime-web's files and Jinja's
    assets/bundles/     index.json and each bundle, checked (schema, sha256) as the server does

Usage: python android/stage_assets.py OUT_DIR ORT_DIR [BUNDLE_DIR ...]
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

from edge_app.bundle import MANIFEST, BundleError, load_bundle
from edge_app.companion import PAGE_DIR, WEB_DEPS, bundle_index


def stage(out: Path, ort_dir: Path, bundle_dirs: list[Path]) -> dict:
    missing = [n for n in WEB_DEPS if not (ort_dir / n).is_file()]
    if missing:
        raise SystemExit(f"stage_assets: web dependencies {missing} are not in {ort_dir}: "
                         f"run android/fetch-web-deps.sh")
    bundles = [load_bundle(d) for d in bundle_dirs]  # refuses what the server would refuse
    names = [b.manifest.name for b in bundles]
    if len(set(names)) != len(names):
        raise SystemExit(f"stage_assets: two bundles share a name: {names}")
    shutil.rmtree(out, ignore_errors=True)
    page = out / "companion"
    page.mkdir(parents=True)
    for f in PAGE_DIR.iterdir():
        if f.is_file():
            (page / f.name).write_bytes(f.read_bytes())
    for name in WEB_DEPS:
        shutil.copyfile(ort_dir / name, page / name)
    for b in bundles:
        dest = out / "bundles" / b.manifest.name
        dest.mkdir(parents=True)
        for name in (MANIFEST, *b.manifest.files):
            shutil.copyfile(b.path / name, dest / name)
    index = bundle_index(bundles)
    (out / "bundles").mkdir(exist_ok=True)
    (out / "bundles" / "index.json").write_text(json.dumps(index, indent=2) + "\n")
    return index


def main(argv: list[str]) -> int:
    if len(argv) < 2:
        print(__doc__, file=sys.stderr)
        return 2
    try:
        index = stage(Path(argv[0]), Path(argv[1]), [Path(a) for a in argv[2:]])
    except BundleError as exc:
        print(f"stage_assets: {exc}", file=sys.stderr)
        return 1
    names = [b["name"] for b in index["bundles"]]
    print(f"stage_assets: page + onnxruntime-web + {len(names)} bundle(s) {names} -> {argv[0]}")
    if not names:
        print("stage_assets: WARNING no bundles: the app will list none (build one with "
              "`make bundles`, then `make apk APK_BUNDLES=bundles/<name>`)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

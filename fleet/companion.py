"""`make deploy DEVICE=<class>` for a class whose group vars say `edgegen_deploy: companion-apk`
(the `pixel` class): phones run the bundles in the companion APK (android/), not in a
container. For each phone of the class's inventory group, android/deploy.sh builds the APK
with the class's bundles and installs it with `adb install -r` when that phone is attached
(`edgegen_phone_serial` = its adb serial), else prints the APK's path and the exact commands.
`edgegen_pushgateway_url` (class or host var) makes the app push its figures, as `device`
= the inventory name."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from typing import TextIO

from .deploy import _check_bundles
from .inventory import rollout_hosts
from .paths import REPO


def ort_web_runtime() -> str:
    """"onnxruntime-web <version>": the runtime the companion pages load, as pinned by
    android/fetch-web-deps.sh (the APK and the server's /companion/ page both take it there)."""
    script = (REPO / "android" / "fetch-web-deps.sh").read_text()
    version = re.search(r"^ORT_WEB_VERSION=(\S+)$", script, re.M)
    return f"onnxruntime-web {version.group(1)}" if version else ""


def deploy_companion(device_class: str, inventory: Path, *, limit: str = "",
                     bundles_dir: Path = REPO / "bundles", out: TextIO = sys.stdout) -> int:
    hosts = rollout_hosts(inventory, device_class, limit)
    failed = []
    for host, settings in hosts.items():
        names = list(settings.get("edgegen_bundles") or [])
        _check_bundles(device_class, {host: settings}, bundles_dir,
                       lambda text: out.write(text + "\n"), ort_web_runtime(), litert="",
                       litert_fix="the companion runs ONNX graphs (onnxruntime-web)")
        env = {**os.environ, "PHONE_NAME": host}
        for var, key in (("ANDROID_SERIAL", "edgegen_phone_serial"),
                         ("PUSHGATEWAY", "edgegen_pushgateway_url")):
            env.pop(var, None)
            if settings.get(key):
                env[var] = str(settings[key])
        out.write(f"== {host} ==\n")
        out.flush()
        run = subprocess.run(["bash", str(REPO / "android" / "deploy.sh"),
                              *(str(bundles_dir / n) for n in names)], env=env, cwd=REPO,
                             stdout=out if out is sys.stdout else subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True)
        if run.stdout:
            out.write(run.stdout)
        if run.returncode != 0:
            failed.append(host)
    out.write(f"\n{len(hosts) - len(failed)} of {len(hosts)} phone(s) done"
              + (f"; failed: {', '.join(failed)}\n" if failed else "\n"))
    return 1 if failed else 0

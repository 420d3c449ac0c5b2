"""`python -m edge_app serve`: validate config and bundles, then run gunicorn.

Bundles are checked in the gunicorn master before any worker starts, so a tampered or
malformed bundle stops the process with one line and a non-zero exit. The Flask app (with its
ONNX Runtime sessions) is built in each worker, after the fork: ORT's thread pools do not
survive a fork.

Process model: one worker holds one copy of each model; `threads` gthread threads serve
requests concurrently against it (ORT's `run` is thread-safe). More workers multiply memory.
"""

from __future__ import annotations

import argparse
import logging
import sys

from gunicorn.app.base import BaseApplication

from .bundle import BundleError, load_bundle
from .config import Config, ConfigError, load_config
from .power import SensorError, detect

log = logging.getLogger("edgegen")


class _Gunicorn(BaseApplication):
    def __init__(self, config: Config):
        self.edgegen = config
        super().__init__()

    def load_config(self):
        cfg = self.edgegen
        settings = {
            "bind": f"{cfg.host}:{cfg.port}", "workers": cfg.workers, "threads": cfg.threads,
            "worker_class": "gthread", "timeout": cfg.timeout_s, "graceful_timeout": 30,
            "loglevel": cfg.log_level, "preload_app": False,
            "post_worker_init": _announce,
            # gunicorn >= 25 opens a control socket at one fixed path per user; several servers
            # on a host (a test fleet, a blue/green swap) would fight over it. We manage
            # processes with signals and the container runtime instead.
            "control_socket_disable": True,
        }
        for key, value in settings.items():
            self.cfg.set(key, value)

    def load(self):
        from .app import create_app

        return create_app(self.edgegen)


def _announce(worker) -> None:
    """Once the first worker has loaded the models, print where to reach them."""
    if worker.age != 1:
        return
    config: Config = worker.app.edgegen
    base = f"http://{config.host}:{config.port}"
    names = sorted(worker.wsgi.extensions["edgegen.models"].models)
    print(f"\nEdgeGen is serving {', '.join(names)} at {base}\n"
          f"  models   {base}/v1/models\n  health   {base}/health   ready {base}/ready\n"
          f"  metrics  {base}/metrics\n"
          f"Try:\n  curl -s {base}/v1/images/generations -H 'Content-Type: application/json' \\\n"
          f"    -d '{{\"model\": \"{names[0]}\", \"n\": 1, \"seed\": 42}}' \\\n"
          f"    | python3 -c 'import sys,json,base64; "
          f"open(\"out.png\",\"wb\").write(base64.b64decode(json.load(sys.stdin)[\"data\"][0][\"b64_json\"]))'"
          f"\n  (writes out.png)\n", flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m edge_app serve",
                                     description="Serve EdgeGen bundles over HTTP.")
    parser.add_argument("--bundle", action="append", dest="bundles", metavar="DIR",
                        help="bundle directory to serve (repeatable); else EDGEGEN_BUNDLES")
    parser.add_argument("--config", help="YAML config file (else EDGEGEN_CONFIG)")
    parser.add_argument("--host", help="address to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=int, help="port to bind (default 8080)")
    args = parser.parse_args(argv)
    overrides = {k: v for k, v in {"bundles": args.bundles, "host": args.host,
                                   "port": args.port}.items() if v is not None}
    try:
        config = load_config(overrides, path=args.config)
        if not config.bundles:
            raise BundleError("no bundles configured: pass --bundle DIR or set EDGEGEN_BUNDLES")
        for path in config.bundles:
            load_bundle(path)  # schema and sha256 of every file, before any worker starts
        detect(config.power_root, config.power_sensor)  # a named sensor must exist
    except (ConfigError, BundleError, SensorError) as exc:
        print(f"edgegen: error: {exc}", file=sys.stderr)
        return 2
    _Gunicorn(config).run()  # exits the process itself on fatal errors (e.g. port in use)
    return 0

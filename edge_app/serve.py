"""`python -m edge_app serve`: validate config and bundles, then run gunicorn.

Bundles are checked in the gunicorn master before any worker starts, so a tampered or
malformed bundle stops the process with one line and a non-zero exit. The Flask app (with its
ONNX Runtime sessions) is built in each worker, after the fork: ORT's thread pools do not
survive a fork. The master never loads ONNX Runtime or numpy at all (see _native_checks), so
it forks its workers from a single thread.

Process model: one worker holds one copy of each model; gthread threads serve requests
concurrently against it (ORT's `run` is thread-safe) and admission (edge_app.admission) bounds
how many generate at once. More workers multiply memory.

Loading: a worker answers as soon as it is forked and loads its models in a background thread
(several models, or one large one, take from seconds to minutes; meanwhile connections used to
wait unanswered in the listen backlog, and gunicorn's worker timeout counted the load). Until
they are in, /health is 200, /ready and the routes that need a model 503 "loading"
(edge_app/health.py); each worker loads on its own, so /ready is 200 from those that have
finished. A bundle only a worker can refuse (its graph, its warm-up) stops the server as
before: the worker leaves with WORKER_BOOT_ERROR from the loading thread, gunicorn's master
halts, and we print the one line and exit 2. The first worker prints where to reach the server
once its models are in.

Signals: SIGTERM (and SIGINT) stop gracefully: the listening socket closes and requests in
flight, streams included, finish within `graceful_timeout_s`; then the exit status is 0.
SIGHUP reloads the bundles in every worker (validated and warmed before the swap; on failure
the old ones keep serving) instead of gunicorn's restart of the workers, which would drop the
models and, with a broken bundle, take the server down. /admin/reload reaches every worker the
same way (edge_app/admin.py), through the run state the master keeps (edge_app/runstate.py).
A reload while a worker is still loading is refused there (a 409, or a refused hang-up in the
log and the run state); a worker whose set changed meanwhile reloads once it is loaded.

Connections: each worker's event loop reads requests and writes responses itself
(edge_app/front.py), so slow clients hold no request thread.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
import traceback
from typing import Callable

from gunicorn.app.base import BaseApplication
from gunicorn.arbiter import Arbiter
from gunicorn.errors import HaltServer

from .bundle import BundleError, load_bundle
from .config import Config, ConfigError, load_config
from .front import FrontWorker
from .runstate import RunState
from .power import SensorError, detect
from .state import of


class _Arbiter(Arbiter):
    halting = False

    def halt(self, reason=None, exit_status=0):
        self.halting = True
        super().halt(reason, exit_status)

    def reap_workers(self):
        """gunicorn's reaping, except that while the server stops for a worker that could not
        boot, a sibling that failed the same way (the same bundles: each worker loads them in the
        background and may fail before the stop's SIGTERM reaches it) is reaped too, instead of
        raising a second HaltServer out of halt() (a traceback and exit 1 instead of our line
        and exit 2). gunicorn drops a worker from WORKERS before it raises: reap on."""
        while True:
            try:
                return super().reap_workers()
            except HaltServer:
                if not self.halting:
                    raise

    def handle_hup(self):
        """Forward SIGHUP to the workers: each reloads its models in place (the bundle set of
        an /admin/reload that asked for it, else the configured one)."""
        state = self.app.run_state.on_hangup(list(self.WORKERS))
        self.log.info("Hang up: reloading the bundles in %d worker(s) (%s)", len(self.WORKERS),
                      "the set /admin/reload chose" if state["by"] == "admin" else "configured")
        for pid in list(self.WORKERS):
            self.kill_worker(pid, signal.SIGHUP)


class _Gunicorn(BaseApplication):
    def __init__(self, config: Config, loader: Callable[[], Config], run_state: RunState):
        self.edgegen, self.edgegen_loader, self.run_state = config, loader, run_state
        super().__init__()

    def run(self):
        try:
            _Arbiter(self).run()
        except RuntimeError as exc:
            print(f"edgegen: error: {exc}", file=sys.stderr)
            sys.exit(1)
        except SystemExit:
            # (A worker's exit passes here too, up from the fork in gunicorn's spawn_worker.)
            message = self.run_state.boot_error() if self.run_state.in_owner else None
            if message:  # a worker could not load its bundles: one line, as for the master's
                print(f"edgegen: error: {message}", file=sys.stderr)
                sys.exit(2)
            raise

    def load_config(self):
        cfg = self.edgegen
        settings = {
            "bind": f"{cfg.host}:{cfg.port}", "workers": cfg.workers,
            "threads": cfg.gunicorn_threads, "worker_class": FrontWorker, "timeout": cfg.timeout_s,
            "graceful_timeout": cfg.graceful_timeout_s, "loglevel": cfg.log_level,
            "preload_app": False, "post_worker_init": _worker_ready, "worker_exit": _worker_exit,
            # gunicorn >= 25 opens a control socket at one fixed path per user; several servers
            # on a host (a test fleet, a blue/green swap) would fight over it. We manage
            # processes with signals and the container runtime instead.
            "control_socket_disable": True,
        }
        for key, value in settings.items():
            self.cfg.set(key, value)

    def load(self):
        from .app import create_app

        # Our log lines (model loads, provider fallbacks, reloads) go where gunicorn's go, in
        # its format, at the configured level.
        ours = logging.getLogger("edge_app")
        ours.handlers = list(logging.getLogger("gunicorn.error").handlers)
        ours.setLevel(self.edgegen.log_level.upper())
        ours.propagate = False

        try:
            return create_app(self.edgegen, self.edgegen_loader, self.run_state, load=False)
        except (ConfigError, SensorError) as exc:
            # What the master could not check without ONNX Runtime: the master prints it and
            # exits 2, no traceback (a bundle's graph and warm-up: _load).
            self.run_state.set_boot_error(str(exc))
            sys.exit(Arbiter.WORKER_BOOT_ERROR)


def _worker_ready(worker) -> None:
    """In each worker's main thread, before it serves: take SIGHUP for reloads (only the main
    thread may), then load the models in the background."""
    from .admin import install_sighup

    install_sighup(worker.wsgi)
    worker.edgegen_load = threading.Thread(target=_load, args=(worker,), name="edgegen-load",
                                           daemon=True)
    worker.edgegen_load.start()


def _worker_exit(_arbiter, worker) -> None:
    """A worker stopped (SIGTERM) while its models load leaves at once: the interpreter's exit
    would tear ONNX Runtime down under the loading thread ("terminate called without an active
    exception", SIGABRT)."""
    load = getattr(worker, "edgegen_load", None)
    if load is not None and load.is_alive():
        _leave(0)


def _load(worker) -> None:
    """The worker's models, loaded while it answers. A bundle that fails (its graph against
    the manifest, the warm-up run) stops the server: the master prints the message in one line
    and exits 2 (_Gunicorn.run). The worker leaves from this thread with os._exit (sys.exit
    would end the thread only), as a boot error, so the master halts instead of respawning it."""
    from .app import load_models

    app, run_state = worker.wsgi, worker.app.run_state
    try:
        loaded = load_models(app)
    except (BundleError, ConfigError, SensorError) as exc:
        run_state.set_boot_error(str(exc))
        _leave(Arbiter.WORKER_BOOT_ERROR)
    except Exception:
        worker.log.exception("loading the models failed")
        _leave(Arbiter.WORKER_BOOT_ERROR)
    if run_state.read()["epoch"] != loaded:
        # A reload came while loading and was refused here: do it now, as a hang-up does
        # (from the epoch loaded, whatever the refusal noted).
        worker.log.info("the bundle set changed while the models loaded: reloading")
        of(app).epoch = loaded
        os.kill(os.getpid(), signal.SIGHUP)
    if worker.age == 1 and worker.alive:
        _print_hint(worker)


def _leave(status: int) -> None:
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)


def _print_hint(worker) -> None:
    """Where to reach the server, and a request to try for each model."""
    config: Config = worker.app.edgegen
    base = f"http://{config.host}:{config.port}"
    models = of(worker.wsgi).models.models
    # Double quotes: the shell expands $EDGEGEN_KEY (single quotes sent the name itself: 401).
    auth = ' -H "Authorization: Bearer $EDGEGEN_KEY"' if config.api_keys or config.api_key_file \
        else ""
    lines = [f"\nEdgeGen is serving {', '.join(sorted(models))} at {base}",
             f"  playground {base}/   API {base}/openapi.json   models {base}/v1/models",
             f"  health {base}/health   ready {base}/ready   metrics {base}/metrics", "Try:"]
    for name, model in sorted(models.items()):
        if model.bundle.manifest.task == "text-generation":
            lines += [f"  curl -s {base}/v1/completions{auth} -H 'Content-Type: application/json' "
                      f"-d '{{\"model\": \"{name}\", \"prompt\": \"The\", \"max_tokens\": 32}}'"]
            if model.spec.chat_template:
                lines += [f"  curl -s {base}/v1/chat/completions{auth} -H 'Content-Type: "
                          f"application/json' -d '{{\"model\": \"{name}\", \"messages\": "
                          f"[{{\"role\": \"user\", \"content\": \"Hello!\"}}], "
                          f"\"max_tokens\": 32}}'"]
        else:
            lines += [f"  curl -s {base}/v1/images/generations{auth} -H 'Content-Type: "
                      f"application/json' -d '{{\"model\": \"{name}\", \"n\": 1, "
                      f"\"seed\": 42}}' \\",
                      "    | python3 -c 'import sys,json,base64; open(\"out.png\",\"wb\").write("
                      "base64.b64decode(json.load(sys.stdin)[\"data\"][0][\"b64_json\"]))'"
                      "   # writes out.png"]
    print("\n".join(lines) + "\n", flush=True)


def _native_checks(config: Config) -> None:
    """The checks that load native libraries, run in a forked child so that the master never
    imports ONNX Runtime, numpy or NVML: they start threads when loaded (ORT's own, OpenBLAS's
    pool), and a fork copies the locks those threads hold, held, into the worker, which can then
    wait on one forever before it serves (seen on arm64 under qemu-user, whose own locks are
    among them). Workers load them after their fork. Raises ConfigError with the child's
    message."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read)
        try:
            from .runtime import provider_chain

            detect(config.power_root, config.power_sensor)  # a named sensor must exist
            provider_chain(config.execution_providers)  # names ONNX Runtime knows
        except (ConfigError, SensorError) as exc:
            os.write(write, str(exc).encode())
        except BaseException:
            traceback.print_exc()
            os._exit(1)
        os._exit(0)
    os.close(write)
    with os.fdopen(read, "rb") as pipe:
        message = pipe.read().decode()
    status = os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])
    if message or status:
        raise ConfigError(message or f"the power sensor and execution provider checks failed "
                                     f"(exit status {status})")


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
    def loader() -> Config:  # reloads re-read the file and the environment
        return load_config(overrides, path=args.config)

    try:
        config = loader()
        if not config.bundles:
            raise BundleError("no bundles configured: pass --bundle DIR or set EDGEGEN_BUNDLES")
        for path in config.bundles:
            load_bundle(path)  # schema and sha256 of every file, before any worker starts
        _native_checks(config)  # the power sensor and the execution providers
        config.all_admin_keys()  # key files that cannot be read, an admin key that is an API key
    except (ConfigError, BundleError, SensorError) as exc:
        print(f"edgegen: error: {exc}", file=sys.stderr)
        return 2
    run_state = RunState.create()
    try:
        _Gunicorn(config, loader, run_state).run()  # exits itself on fatal errors (port in use)
    finally:
        run_state.remove()
    return 0

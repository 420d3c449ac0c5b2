"""What the gunicorn master and its workers share about reloads: a private directory, made by
`python -m edge_app serve` at start and removed at exit, holding

    state.json         the bundle set every worker serves: {"epoch", "bundles" (null: the
                       configured ones), "by" ("start", "admin" or "signal"), "delivered",
                       "workers" (the pids the master signalled)}
    worker-<pid>.json  each worker's answer to an epoch: {"epoch", "ok", "error", "models"}
    reload.lock        held (flock) by the /admin/reload running, in whichever worker
    boot-error         why a worker could not start (the master prints it in one line)

Bundles loaded over /admin/reload are written here, so a worker that gunicorn respawns (after
a crash or a timeout) serves them too instead of silently reverting to the configured set; a
restart of the server, or SIGHUP, or /admin/reload without a list, returns to the configured
set. Plain files and rename(): no native library, so the master may use it (see serve.py).
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator


class RunState:
    def __init__(self, root: Path):
        self.root = Path(root)
        self.owner = os.getpid()  # the master; a forked worker leaving must not remove it

    @classmethod
    def create(cls) -> "RunState":
        state = cls(Path(tempfile.mkdtemp(prefix="edgegen-run-")))
        state.write({"epoch": 0, "bundles": None, "by": "start", "delivered": True})
        return state

    @property
    def in_owner(self) -> bool:
        return os.getpid() == self.owner

    def remove(self) -> None:
        if self.in_owner:
            shutil.rmtree(self.root, ignore_errors=True)

    def _write_json(self, name: str, data: dict[str, Any]) -> None:
        tmp = self.root / f".{name}.{os.getpid()}.tmp"
        tmp.write_text(json.dumps(data), encoding="utf-8")
        tmp.replace(self.root / name)  # atomic: readers see the old file or the new one

    def read(self) -> dict[str, Any]:
        return json.loads((self.root / "state.json").read_text(encoding="utf-8"))

    def write(self, state: dict[str, Any]) -> None:
        self._write_json("state.json", state)

    def on_hangup(self, workers: list[int]) -> dict[str, Any]:
        """In the master, on SIGHUP: an /admin/reload's bundle list is delivered as it stands;
        any other hang-up (an operator's) is a new epoch of the configured bundles."""
        state = self.read()
        if state.get("by") == "admin" and not state.get("delivered"):
            state["delivered"] = True
        else:
            state = {"epoch": state["epoch"] + 1, "bundles": None, "by": "signal",
                     "delivered": True}
        state["workers"] = sorted(workers)
        self.write(state)
        return state

    def ack(self, epoch: int, ok: bool, error: str | None, models: list[str]) -> None:
        self._write_json(f"worker-{os.getpid()}.json",
                         {"epoch": epoch, "ok": ok, "error": error, "models": models})

    def acks(self, pids: list[int]) -> dict[int, dict[str, Any]]:
        out = {}
        for pid in pids:
            try:
                out[pid] = json.loads((self.root / f"worker-{pid}.json").read_text("utf-8"))
            except (OSError, ValueError):
                pass
        return out

    @contextmanager
    def lock(self) -> Iterator[None]:
        """Hold the reload lock; RuntimeError when another worker holds it."""
        with open(self.root / "reload.lock", "a") as f:
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise RuntimeError("a reload is already in progress") from None
            try:
                yield
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)

    def set_boot_error(self, message: str) -> None:
        self._write_json("boot-error", {"message": message})

    def boot_error(self) -> str | None:
        try:
            return json.loads((self.root / "boot-error").read_text("utf-8"))["message"]
        except (OSError, ValueError, KeyError):
            return None

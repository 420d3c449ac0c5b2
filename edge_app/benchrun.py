"""Run control of `python -m edge_app bench` (the measurements: edge_app.benchmark).

One benchmark at a time per results directory (`<out>/bench.lock`, held while it runs).
`--background` starts it detached, logging to `<out>/bench.log`, or leaves the one already
running alone; `--status` prints one JSON line about the latest run (running, done, failed, or
died without finishing) with its last progress line. `make bench DEVICE=<class>` drives devices
this way through `docker exec`, so a controller that loses its connection, or is stopped,
leaves the benchmark running and the next `make bench` waits for it.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

# The run files of a results directory.
LOCK, STATE, LOG = "bench.lock", "bench.state.json", "bench.log"


def now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def _read_state(out: Path) -> dict:
    try:
        return json.loads((out / STATE).read_text())
    except (OSError, ValueError):
        return {}


def _write_state(out: Path, state: dict) -> None:
    tmp = out / f".{STATE}.{os.getpid()}"
    tmp.write_text(json.dumps(state) + "\n")
    tmp.replace(out / STATE)


def _locked(out: Path) -> bool:
    """Whether a benchmark holds <out>/bench.lock now (an flock: released when its process
    ends, however it ends)."""
    try:
        fd = os.open(out / LOCK, os.O_RDONLY)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        return False
    except BlockingIOError:
        return True
    finally:
        os.close(fd)


@contextlib.contextmanager
def exclusive(out: Path, argv: list[str]):
    """Hold <out>/bench.lock for one run and record it in <out>/bench.state.json; the caller
    sets state["rc"] (left null if the process is killed: the run "died")."""
    out.mkdir(parents=True, exist_ok=True)
    fd = os.open(out / LOCK, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        other = _read_state(out)
        raise RuntimeError(f"another benchmark is running on {out} (pid {other.get('pid', '?')}"
                           f", started {other.get('started_at', '?')}); `--status` follows it")
    state = {"pid": os.getpid(), "started_at": now(), "argv": argv, "rc": None,
             "finished_at": None}
    try:
        _write_state(out, state)
        yield state
    finally:
        if state["rc"] is not None:
            _write_state(out, {**state, "finished_at": now()})
        os.close(fd)


def status(out: Path) -> dict:
    """The latest run on <out>: state none | running | done | failed | died, its pid, times,
    exit status, last progress line (of a background run's log) and, once done, its files."""
    state = _read_state(out)
    if _locked(out):
        kind = "running"
    elif not state:
        kind = "none"
    elif state.get("rc") is None:
        kind = "died"  # killed (out of memory, power loss, container restart) before the end
    else:
        kind = "done" if state["rc"] == 0 else "failed"
    progress = ""
    try:
        with open(out / LOG, "rb") as f:
            f.seek(max(0, f.seek(0, os.SEEK_END) - 4096))
            lines = [ln for ln in f.read().decode(errors="replace").splitlines() if ln.strip()]
        progress = lines[-1] if lines else ""
    except OSError:
        pass
    if kind == "died":
        progress = ("the benchmark process ended without finishing (killed? out of memory?); "
                    "run it again to resume. Last line: " + progress)
    return {"state": kind, "pid": state.get("pid"), "started_at": state.get("started_at"),
            "finished_at": state.get("finished_at"), "rc": state.get("rc"),
            "progress": progress, "log": str(out / LOG), "argv": state.get("argv"),
            # The result files of a finished run, relative to <out>.
            "files": state.get("files", [])}


def start_background(out: Path, argv: list[str], wait_s: float = 30.0) -> dict:
    """Start `python -m edge_app bench ARGV` detached (own session, output appended to
    <out>/bench.log) unless a benchmark already runs on <out>; its status, with "started"."""
    if _locked(out):
        return {**status(out), "started": False}
    out.mkdir(parents=True, exist_ok=True)
    (out / STATE).unlink(missing_ok=True)
    with open(out / LOG, "ab") as log:
        log.write(f"--- {now()} python -m edge_app bench {shlex.join(argv)}\n".encode())
        log.flush()
        proc = subprocess.Popen([sys.executable, "-m", "edge_app", "bench", *argv],
                                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline and proc.poll() is None \
            and _read_state(out).get("pid") != proc.pid:
        time.sleep(0.05)
    return {**status(out), "started": True}

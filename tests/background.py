"""Slow, independent work run beside the tests: started as soon as the session knows it needs it
(after collection), waited for by the fixtures that use its result.

Docker image builds mostly wait on the network, on disk and on qemu's single-threaded
emulation, while much of the suite keeps one core busy: run beside the unit and integration
tiers, the e2e tier (ordered last, tests/tiers.py) finds its images built. A job is one command,
its output kept in build/test-logs/<name>.log; where no job was started (the tier run alone with
EDGEGEN_TEST_BACKGROUND=0, say) wait() runs it in the foreground, so there is one code path.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
LOGS = REPO / "build" / "test-logs"
ENABLED_ENV = "EDGEGEN_TEST_BACKGROUND"  # "0": no background jobs (each runs when waited for)


@dataclass
class Job:
    name: str
    argv: list[str]
    log: Path
    proc: subprocess.Popen | None = None
    started: float = 0.0
    ended: float = 0.0
    waited: float = 0.0  # seconds the tests spent waiting for it
    rc: int | None = None

    def start(self, beside: bool = False) -> None:
        """Run the command; `beside` the tests, at the lowest CPU priority (_yield_cpu)."""
        self.log.parent.mkdir(parents=True, exist_ok=True)
        self.started = time.time()
        with open(self.log, "wb") as out:
            # Its own session: Ctrl-C on pytest reaches it through stop(), not twice.
            self.proc = subprocess.Popen(self.argv, cwd=REPO, stdout=out, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL, start_new_session=True,
                                         preexec_fn=_yield_cpu if beside else None,
                                         env={**os.environ, "PYTHONUNBUFFERED": "1"})

    def wait(self, timeout: float, check: bool = True) -> None:
        """Block until the job is done (start it first when nothing did); AssertionError with
        the log's tail when it overruns `timeout`, or (`check`) exits non-zero."""
        if self.proc is None:
            self.start()
        before = time.time()
        try:
            self.rc = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.stop()
            raise AssertionError(f"background job {self.name} ran past {timeout:.0f} s:\n"
                                 f"{self.tail()}") from None
        finally:
            self.waited += time.time() - before
        self.ended = self.ended or time.time()
        assert self.rc == 0 or not check, \
            f"background job {self.name} failed (exit {self.rc}):\n{self.tail()}"

    def poll(self) -> None:
        if self.proc is not None and self.rc is None and self.proc.poll() is not None:
            self.rc, self.ended = self.proc.returncode, time.time()

    def stop(self) -> None:
        """End the job and what it started (its own process group)."""
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
            try:  # what the leader started and left behind
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.poll()

    def tail(self, chars: int = 6000) -> str:
        try:
            return self.log.read_text(errors="replace")[-chars:]
        except OSError:
            return "(no log)"


JOBS: dict[str, Job] = {}


def _yield_cpu() -> None:
    """In the job's child, after setsid: nice 19, for it and the session's scheduling group.
    With autogroup scheduling (Linux's default) a new session is a group of its own that gets
    as much CPU as the whole pytest session: a single-threaded qemu build took a core from
    training that runs on both. At nice 19 it takes the time the tests leave idle. Not for the
    Docker engine's build steps: their processes are the engine's children, not the job's."""
    os.nice(19)
    try:
        Path("/proc/self/autogroup").write_text("19")
    except OSError:  # no autogroup scheduling: the process's own nice value is the one that acts
        pass


def job(name: str, argv: list[str]) -> Job:
    """The session's job of that name (one per name), not started."""
    if name not in JOBS:
        JOBS[name] = Job(name, [str(a) for a in argv], LOGS / f"{name}.log")
    return JOBS[name]


def start(name: str, argv: list[str]) -> Job:
    """Start the job now, unless EDGEGEN_TEST_BACKGROUND=0 or it already runs."""
    j = job(name, argv)
    if os.environ.get(ENABLED_ENV, "1") != "0" and j.proc is None:
        j.start(beside=True)
    return j


def summary_lines() -> list[str]:
    lines = []
    for j in JOBS.values():
        j.poll()
        if j.proc is None:
            continue
        state = (f"{j.ended - j.started:.0f} s, exit {j.rc}" if j.rc is not None and j.rc >= 0
                 else "unfinished at the end of the session: stopped")
        log = j.log.relative_to(REPO) if j.log.is_relative_to(REPO) else j.log
        lines.append(f"{j.name}: {state}; the tests waited {j.waited:.0f} s for it (log: {log})")
    return lines


def stop_all() -> None:
    for j in JOBS.values():
        j.stop()


def python_module(module: str, *args: str) -> list[str]:
    return [sys.executable, "-m", module, *args]

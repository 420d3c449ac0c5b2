"""Start real processes (the server, `make run`) on 127.0.0.1, read their output, stop them."""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from bench.serving import wait_ready

from ..conftest import REPO, free_port


class Proc:
    """A child in its own process group whose combined output is collected by a thread.

    (A reader thread, not select() + readline(): readline buffers several lines at once, so a
    select on the pipe can wait forever while the awaited line already sits in the buffer.)
    """

    def __init__(self, args: list[str], cwd: Path = REPO, env: dict | None = None):
        self.proc = subprocess.Popen(args, cwd=cwd, env={**os.environ, **(env or {})},
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                     start_new_session=True)
        self.lines: queue.Queue[str | None] = queue.Queue()
        self.output = ""
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self) -> None:
        with self.proc.stdout:
            for line in self.proc.stdout:
                self.lines.put(line)
        self.lines.put(None)

    def wait_for(self, text: str, timeout: float) -> bool:
        """Collect output until `text` appears; False on timeout or exit."""
        deadline = time.monotonic() + timeout
        while text not in self.output:
            try:
                line = self.lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                return False
            if line is None:
                return False
            self.output += line
        return True

    def _drain(self, timeout: float = 5) -> None:
        """Collect the rest of the output once the process has exited."""
        while True:
            try:
                line = self.lines.get(timeout=timeout)
            except queue.Empty:
                return
            if line is None:
                return
            self.output += line

    def stop(self, timeout: float = 30) -> tuple[int, str]:
        """SIGTERM the whole process group; return (exit code, all output)."""
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        self._drain()
        return self.proc.returncode, self.output


class ServerProcess(Proc):
    """`python -m edge_app serve` on a free loopback port."""

    def __init__(self, *bundles: Path, config: Path | None = None, env: dict | None = None):
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        args = [sys.executable, "-m", "edge_app", "serve", "--port", str(self.port)]
        for bundle in bundles:
            args += ["--bundle", str(bundle)]
        if config is not None:
            args += ["--config", str(config)]
        super().__init__(args, env={"EDGEGEN_POWER_BASELINE_S": "0", **(env or {})})

    def signal(self, signum: int) -> None:
        """Signal the gunicorn master (the process group leader)."""
        os.kill(self.proc.pid, signum)

    def wait_ready(self, timeout: float = 120) -> None:
        state = wait_ready(self.base, self.proc, timeout)
        if state == "exited":
            raise RuntimeError(f"server exited {self.proc.returncode}:\n{self.stop()[1]}")
        if state == "timeout":
            raise TimeoutError(f"server not ready within {timeout} s:\n{self.stop()[1]}")

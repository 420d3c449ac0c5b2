"""Every adb command the fleet sends a phone, in one place (`make bench DEVICE=pixel` through
fleet/phonebench.py; `make deploy DEVICE=pixel` installs with android/deploy.sh).

The companion APK is debuggable (android/build.sh --debug-mode), so `run-as` reads and clears
the app's own storage, where its bench bridge writes the results (files/bench/...): no
storage permission, no shared storage. None of this has run against a phone here (no adb
device on the build machine): tests drive fleet/phonebench.py with a stand-in of this class.
"""

from __future__ import annotations

import os
import subprocess

PACKAGE = "net.edgegen.companion"  # android/AndroidManifest.xml
ACTIVITY = f"{PACKAGE}/.MainActivity"
MAX_EXTRA = 3000  # characters of an intent extra: adb shell passes one command line


class AdbError(Exception):
    """An adb command failed; the message has its output."""


class Adb:
    """One phone (its adb serial), through the adb binary ($ADB or adb on PATH)."""

    def __init__(self, serial: str, binary: str = ""):
        self.serial = serial
        self.binary = binary or os.environ.get("ADB", "adb")

    def _run(self, *args: str, timeout: float = 120, check: bool = True
             ) -> subprocess.CompletedProcess:
        cmd = [self.binary, "-s", self.serial, *args]
        try:
            run = subprocess.run(cmd, capture_output=True, timeout=timeout)
        except FileNotFoundError:
            raise AdbError(f"adb is not installed ({self.binary}): apt-get install adb") from None
        except subprocess.TimeoutExpired:
            raise AdbError(f"{' '.join(cmd[:5])}...: no answer in {timeout:g} s") from None
        if check and run.returncode != 0:
            raise AdbError(f"{' '.join(cmd[:6])}: exit {run.returncode}: "
                           f"{(run.stderr or run.stdout).decode(errors='replace').strip()[-500:]}")
        return run

    def state(self) -> str:
        """'device' when attached and authorized; else adb's word for it (unauthorized,
        offline) or the error."""
        run = self._run("get-state", timeout=15, check=False)
        out = (run.stdout or run.stderr).decode(errors="replace").strip()
        return out if run.returncode == 0 else out or "not attached"

    def installed(self) -> bool:
        out = self._run("shell", "pm", "path", PACKAGE, check=False).stdout.decode()
        return out.strip().startswith("package:")

    def start(self, extras: dict[str, str]) -> None:
        """Start the companion afresh (-S: its old process is stopped first) with string
        extras, which MainActivity passes to the page as its query string."""
        args = ["shell", "am", "start", "-S", "-n", ACTIVITY]
        for key, value in extras.items():
            if len(value) > MAX_EXTRA or not value.replace("-", "").replace("_", "") \
                    .replace("=", "").isalnum():
                raise AdbError(f"intent extra {key}: {len(value)} characters, base64url only and "
                               f"at most {MAX_EXTRA} (one adb shell command line)")
            args += ["--es", key, value]
        out = self._run(*args).stdout.decode(errors="replace")
        if "Error" in out:  # am prints errors and still exits 0 on older Android
            raise AdbError(f"am start {ACTIVITY}: {out.strip()}")

    def stop(self) -> None:
        self._run("shell", "am", "force-stop", PACKAGE, check=False)

    def read(self, path: str) -> bytes | None:
        """A file of the app's storage (relative to its data directory); None if absent."""
        # `shell`, not exec-out: adb's shell protocol (Android 7+) returns the exit status.
        run = self._run("shell", "run-as", PACKAGE, "cat", path, check=False)
        return run.stdout if run.returncode == 0 else None

    def remove(self, path: str) -> None:
        self._run("shell", "run-as", PACKAGE, "rm", "-rf", path)

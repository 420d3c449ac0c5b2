"""Run one of the kit's playbooks through ansible-runner's Python API, shared by
`make deploy` (deploy.yml) and `make bench` (bench.yml): a live per-host display of the events,
per-host results from the stats, and the run's artifacts kept under build/<what>/<class>/.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from .paths import ANSIBLE_DIR

KEEP_RUNS = 10  # ansible-runner artifact directories kept per class
# Facts a role sets to report its outcome per host (the summary tables read them).
RESULT_FACTS = ("edge_node_result", "edge_bench_result", "monitoring_result")
PROGRESS_EVERY_S = 60.0  # an unchanged progress line is repeated this often while waiting


# Host results that count as a failure of the run.
FAILED = ("failed", "unreachable", "not run")


@dataclass
class HostReport:
    host: str
    status: str = "ok"  # ok | changed | failed | unreachable | not run
    changed: int = 0
    message: str = ""
    fault: str = ""  # what went wrong, in a few words (fault()), for a host that did not finish
    result: dict[str, Any] = field(default_factory=dict)  # the role's result fact


class Display:
    """One line per task result and host as events arrive (ansible-runner event_handler); in
    `compact` mode (a large rollout), only the results that changed, waited or failed.
    A task polled with `until` whose output is JSON with a "progress" key (the device-side
    benchmark's --status) shows that line when it changes, not every poll."""

    SHOWN = {"runner_on_ok": "ok", "runner_on_failed": "failed", "runner_on_unreachable":
             "unreachable", "runner_retry": "waiting", "runner_item_on_failed": "failed"}

    def __init__(self, out: TextIO, compact: bool = False):
        self.out = out
        self.compact = compact  # many hosts: leave out the unchanged "ok" lines
        self.results: dict[str, dict[str, Any]] = {}
        self.failures: dict[str, str] = {}
        self.reached: set[str] = set()  # hosts that answered a task of this run
        self.lost: set[str] = set()  # hosts a task could not reach (its loop items too)
        self.started = time.monotonic()
        self._progress: dict[str, tuple[str, float]] = {}
        self.play = ""
        self.plays: dict[str, set[str]] = {}  # play name -> the hosts it ran a task on

    def __call__(self, event: dict[str, Any]) -> bool:
        kind, data = event.get("event", ""), event.get("event_data") or {}
        if kind == "playbook_on_play_start":
            self.play = data.get("play", "")
            self._line(f"PLAY {self.play}")
        elif kind in self.SHOWN:
            host, res = data.get("host", "?"), data.get("res") or {}
            self.plays.setdefault(self.play, set()).add(host)
            status = self.SHOWN[kind]
            if kind == "runner_on_ok" and res.get("changed"):
                status = "changed"
            if kind == "runner_on_failed" and data.get("ignore_errors"):
                status = "failed (ignored)"
            note = ""
            if kind == "runner_retry":
                note = f" ({res.get('attempts', '?')}/{res.get('retries', '?')})"
                progress = _progress(res)
                if progress is not None:
                    last, when = self._progress.get(host, ("", 0.0))
                    now = time.monotonic()
                    if progress == last and now - when < PROGRESS_EVERY_S:
                        return True
                    self._progress[host] = (progress, now)
                    note += f": {progress}"
            elif status == "failed" or kind == "runner_on_unreachable":
                message = _message(res)
                note = f": {message}"
                if not data.get("ignore_errors"):
                    self.failures[host] = message
                    if kind == "runner_on_unreachable" or _unreachable(res):
                        self.lost.add(host)
            if status in ("ok", "changed"):
                self.reached.add(host)
            facts = res.get("ansible_facts") or {}
            for name in RESULT_FACTS:
                if name in facts:
                    self.results[host] = facts[name]
            if self.compact and status == "ok":
                return True
            self._line(f"  {host:<18} {status:<9} {data.get('task', '')}{note}")
        return True  # keep the event in the artifacts

    def _line(self, text: str) -> None:
        self.out.write(f"[{time.monotonic() - self.started:6.1f}s] {text}\n")
        self.out.flush()


def _progress(res: dict[str, Any]) -> str | None:
    """What a polled task is waiting for: the "progress" of a command's JSON output (the
    device-side benchmark), or the message of a server's 503 (/ready while the models load,
    e.g. "Loading models: 0 of 2 loaded; building TensorRT engines for ...")."""
    answer = res.get("json")
    if isinstance(answer, dict) and isinstance(answer.get("error"), dict):
        message = answer["error"].get("message")
        return str(message) if message else None
    try:
        data = json.loads(res.get("stdout") or "")
    except ValueError:
        return None
    return str(data["progress"]) if isinstance(data, dict) and "progress" in data else None


def _items(res: dict[str, Any]) -> list[dict[str, Any]]:
    return [r for r in res.get("results") or [] if isinstance(r, dict)]


# What Ansible's SSH connection says when it cannot reach a host. An action plugin that moves
# files (copy) reports it as a plain failure, without the `unreachable` flag.
UNREACHABLE = ("Failed to connect to the host via ssh", "Data could not be sent to remote host",
               "Connection timed out during banner exchange")


def _unreachable(res: dict[str, Any]) -> bool:
    """A failed task result that is really a lost connection (a loop item's, too)."""
    return any(r.get("unreachable") or any(text in str(r.get("msg", "")) for text in UNREACHABLE)
               for r in [res, *_items(res)])


def _message(res: dict[str, Any]) -> str:
    # a loop: the first failed item's message says more than "One or more items failed"
    item = next((r.get("msg") for r in _items(res) if r.get("failed") and r.get("msg")), "")
    msg = item or res.get("msg") or res.get("stderr") or res.get("reason") or ""
    return " ".join(str(msg).split())[:400]


# What a failure's message says went wrong, in the words of the table (first match wins).
FAULTS = (("No space left on device", "disk full"), ("[Errno 28]", "disk full"),
          ("which is serving again", "unhealthy, rolled back"),
          ("failed its health check", "unhealthy"),
          ("sudo asks", "sudo needs a password"))


def fault(status: str, message: str, reached: bool) -> str:
    """A host's fault in a few words: "unreachable" (no task of the run reached it), "connection
    lost" (it answered, then stopped), "disk full", "unhealthy, rolled back", ...; "" for a host
    that finished."""
    if status == "unreachable":
        return "connection lost" if reached else "unreachable"
    if status == "failed":
        return next((name for text, name in FAULTS if text in message), "failed")
    return "not run" if status == "not run" else ""


def reports(stats: dict[str, dict[str, int]], display: Display, hosts: list[str],
            stopped: str = "the rollout stopped before this host (max_fail_percentage)",
            play: str = "") -> list[HostReport]:
    """Each host's outcome from the run's stats: `hosts`, then any other host the run reached
    (the monitoring host). `play`: the play (name prefix) that does the work; one of `hosts`
    that did not fail and ran none of its tasks was not run (a halted rollout), though an
    earlier play (the preflight) reached it."""
    ran = set().union(*(h for name, h in display.plays.items() if name.startswith(play))) \
        if play else None
    out = []
    seen = set()
    for key in ("ok", "changed", "failures", "dark", "skipped", "rescued", "processed"):
        seen.update((stats.get(key) or {}).keys())
    for host in hosts + sorted(seen - set(hosts)):
        r = HostReport(host, changed=(stats.get("changed") or {}).get(host, 0),
                       result=display.results.get(host, {}))
        # a copy that lost the connection reports a failure (no `unreachable` flag): unreachable
        if host in (stats.get("dark") or {}) or (
                host in (stats.get("failures") or {}) and host in display.lost):
            r.status, r.message = "unreachable", display.failures.get(host, "")
        elif host in (stats.get("failures") or {}):
            r.status, r.message = "failed", display.failures.get(host, "")
        elif host not in seen or (ran is not None and host in hosts and host not in ran):
            r.status, r.message = "not run", stopped
        elif r.changed:
            r.status = "changed"
        r.fault = fault(r.status, r.message, host in display.reached)
        out.append(r)
    return out


def table(header: tuple[str, ...], rows: list[tuple[str, ...]],
          reports_: list[HostReport]) -> str:
    """Aligned columns, then one note line per host that has a message."""
    lines = [header, *rows]
    widths = [max(len(row[i]) for row in lines) for i in range(len(header))]
    text = "\n".join("  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in lines)
    notes = [f"  {r.host}: {r.message}" for r in reports_ if r.message]
    return text + ("\n\n" + "\n".join(notes) if notes else "")


def cmdline(*, check: bool = False, vault_password_file: str = "") -> list[str]:
    """ansible-playbook options shared by the commands: --check, --vault-password-file."""
    out = ["--check"] if check else []
    if vault_password_file:
        out += ["--vault-password-file", str(Path(vault_password_file).resolve())]
    return out


def run(playbook: str, inventory: Path, private_dir: Path, extravars: dict[str, Any],
        display: Display, *, limit: str | None = None, cmdline: list[str] | None = None,
        forks: int | None = None):
    """ansible-runner on ansible/<playbook>; returns its Runner (status, rc, stats, config)."""
    import ansible_runner  # the deploy extra; imported here so `fleet status` needs none of it

    private_dir.mkdir(parents=True, exist_ok=True)
    # ansible-runner keeps what it is given (cmdline, extravars, envvars) in env/ and reads those
    # files back on a later run that does not pass them: a deploy after `--check` would stay a
    # dry run. Each run passes everything it wants, so it starts from an empty env/.
    shutil.rmtree(private_dir / "env", ignore_errors=True)
    # ansible-playbook lives beside this interpreter (the venv), which may not be on PATH.
    path = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
    return ansible_runner.run(
        private_data_dir=str(private_dir), project_dir=str(ANSIBLE_DIR), playbook=playbook,
        inventory=str(Path(inventory).resolve()), extravars=extravars, limit=limit,
        cmdline=" ".join(cmdline or []) or None, event_handler=display, quiet=True,
        **({"forks": forks} if forks else {}),
        rotate_artifacts=KEEP_RUNS, ident=time.strftime("%Y%m%dT%H%M%S"),
        envvars={"PATH": path, "ANSIBLE_CONFIG": str(ANSIBLE_DIR / "ansible.cfg"),
                 "ANSIBLE_FORCE_COLOR": "0"})


def conclude(runner, rows: list[HostReport], summary: dict[str, Any], ok: str, log,
             noun: str = "host") -> int:
    """Write summary.json beside the run's artifacts, print the outcome (`ok` when every host
    succeeded) and return the exit status: 1 when a host failed or the run did not succeed."""
    path = Path(runner.config.artifact_dir) / "summary.json"
    path.write_text(json.dumps(summary, indent=2, default=str) + "\n")
    failed = [r.host for r in rows if r.status in FAILED]
    if failed:
        log(f"{len(failed)} of {len(rows)} {noun}(s) failed: {', '.join(failed)}")
    elif runner.status != "successful":
        log(f"ansible-runner ended {runner.status} (rc {runner.rc}); "
            f"see {runner.config.artifact_dir}")
    else:
        log(ok)
    log(f"summary: {path}")
    return 1 if failed or runner.status != "successful" else 0

"""Durations per tier at the end of every run, so a CI log says where its time went.

A test's tier is its directory under tests/ (unit, integration, e2e, browser, and any tier added
later, e.g. tests/adversarial/): nothing here lists them. Tests marked `e2e` run last, so the
Docker images they need are built in the background while the other tiers run
(tests/background.py). Just before them run the modules marked `trains` (recipes, `make run`,
torchrun): they keep both cores busy for minutes, so beside a qemu build they ran at half speed
(the Llama recipe took 884 s in CI, 437 s alone); the lighter tests before them leave the builds
the idle time they need. A session- or module-scoped fixture's setup counts toward the test that
first needs it; the slow ones are listed on their own as well.

The CPU seconds of a tier are those of this process and of the child processes it waited for
while the tier ran (servers, CLIs, training subprocesses), not Docker's builds and containers
(dockerd runs them): CPU / wall is how many of the host's cores the tier kept busy, which says
what running slow work beside it can gain.
"""

from __future__ import annotations

import resource
import time
from collections import defaultdict
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent
SHARED_FIXTURE_MIN_S = 5.0  # shared fixtures slower than this are listed in the summary


def tier_of(path: Path, root: Path = TESTS) -> str:
    """The directory under `root` that holds the test ("tests" for a file directly in it)."""
    try:
        parts = Path(path).resolve().relative_to(root).parts
    except ValueError:
        return "other"
    return parts[0] if len(parts) > 1 else "tests"


class TierClock:
    """Per tier: tests, outcomes, summed setup/call/teardown seconds and wall-clock span."""

    def __init__(self, root: Path = TESTS) -> None:
        self.root = root
        self.tier: dict[str, str] = {}  # nodeid -> tier
        self.seconds: dict[str, float] = defaultdict(float)
        self.outcomes: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
        self.span: dict[str, list[float]] = {}
        self.fixtures: list[tuple[str, str, float]] = []  # (tier, fixture, seconds)
        self.cpu: dict[str, float] = defaultdict(float)
        self.current = ""  # the test running now
        self.started, self._cpu_mark = time.time(), _cpu_seconds()

    @pytest.hookimpl(trylast=True)
    def pytest_collection_modifyitems(self, items: list[pytest.Item]) -> None:
        items.sort(key=lambda item: (item.get_closest_marker("e2e") is not None,
                                     item.get_closest_marker("trains") is not None))  # stable
        self.tier = {item.nodeid: tier_of(item.path, self.root) for item in items}

    def pytest_runtest_logstart(self, nodeid: str) -> None:
        self.current = nodeid

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        tier = self.tier.get(report.nodeid, "other")
        self.seconds[tier] += report.duration
        cpu = _cpu_seconds()
        self.cpu[tier] += cpu - self._cpu_mark
        self._cpu_mark = cpu
        first, last = self.span.get(tier, (report.start, report.stop))
        self.span[tier] = [min(first, report.start), max(last, report.stop)]
        if report.when == "call" or (report.when == "setup" and report.skipped):
            outcome = "xfailed" if hasattr(report, "wasxfail") and report.skipped else report.outcome
            self.outcomes[tier][outcome] += 1
        elif report.failed:  # in setup or teardown: an error, as pytest counts it
            self.outcomes[tier]["error"] += 1

    @pytest.hookimpl(hookwrapper=True)
    def pytest_fixture_setup(self, fixturedef, request):
        started = time.perf_counter()
        yield
        took = time.perf_counter() - started
        if fixturedef.scope in ("session", "package", "module") and took >= SHARED_FIXTURE_MIN_S:
            self.fixtures.append((self.tier.get(self.current, "?"), fixturedef.argname, took))

    def pytest_terminal_summary(self, terminalreporter) -> None:
        if not self.seconds:
            return
        w = terminalreporter
        w.write_sep("=", "duration per tier")
        kinds = ("passed", "failed", "error", "skipped", "xfailed")
        w.write_line(f"{'tier':<14}{'tests':>6}" + "".join(f"{k:>9}" for k in kinds)
                     + f"{'test s':>10}{'wall s':>10}{'cpu s':>10}")
        for tier in sorted(self.span, key=lambda t: self.span[t][0]):
            counts = self.outcomes[tier]
            first, last = self.span[tier]
            w.write_line(f"{tier:<14}{sum(counts.values()):>6}"
                         + "".join(f"{counts.get(k, 0):>9}" for k in kinds)
                         + f"{self.seconds[tier]:>10.1f}{last - first:>10.1f}"
                         + f"{self.cpu[tier]:>10.1f}")
        w.write_line(f"{'all':<14}{'':>6}{'':>45}{sum(self.seconds.values()):>10.1f}"
                     f"{time.time() - self.started:>10.1f}{_cpu_seconds():>10.1f}")
        w.write_line("test s: setup + call + teardown of the tier's tests; wall s: from its first "
                     "test's start to its last one's end (the whole session for `all`); cpu s: "
                     "user + system of pytest and the processes it waited for (not Docker's)")
        if self.fixtures:
            w.write_line("shared fixtures (their setup counts toward the tier that first needs "
                         "them): " + ", ".join(f"{name} {took:.0f} s ({tier})"
                                               for tier, name, took in self.fixtures))


def _cpu_seconds() -> float:
    """User + system CPU seconds of this process and its waited-for children so far."""
    own, children = (resource.getrusage(w) for w in (resource.RUSAGE_SELF,
                                                      resource.RUSAGE_CHILDREN))
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime

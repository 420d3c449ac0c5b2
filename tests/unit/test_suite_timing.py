"""The suite's own timing machinery: durations per tier (tests/tiers.py) and work run beside
the tests (tests/background.py), each run for real on a small inner session or command."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time

import pytest

from .. import background
from ..conftest import REPO


def test_every_tier_gets_its_durations_and_recipe_training_then_e2e_run_last(tmp_path):
    tests = tmp_path / "tests"
    files = {
        "conftest.py": f"""
            import sys
            from pathlib import Path
            sys.path.insert(0, {str(REPO)!r})
            from tests.tiers import TierClock

            def pytest_configure(config):
                config.addinivalue_line("markers", "e2e: docker")
                config.addinivalue_line("markers", "trains: every core")
                config.pluginmanager.register(TierClock(Path(__file__).parent), "tiers")
            """,
        "e2e/test_deploy.py": """
            import pytest
            pytestmark = pytest.mark.e2e
            def test_deploy(): assert False
            """,
        "unit/test_a.py": """
            import time, pytest
            def test_slow(): time.sleep(0.3)
            def test_skipped(): pytest.skip("no engine")
            @pytest.fixture
            def broken(): raise RuntimeError("setup")
            def test_error(broken): pass
            """,
        "adversarial/test_attack.py": "def test_attack(): pass\n",
        "adversarial/test_recipe.py": """
            import pytest
            pytestmark = pytest.mark.trains
            def test_trained(): pass
            def test_other(): pass
            """,
        "test_top.py": "def test_top(): pass\n",
    }
    for name, text in files.items():
        (tests / name).parent.mkdir(parents=True, exist_ok=True)
        (tests / name).write_text(textwrap.dedent(text))
    run = subprocess.run([sys.executable, "-m", "pytest", "-v", "-p", "no:cacheprovider",
                          "-p", "no:randomly", str(tests)], cwd=tmp_path, capture_output=True,
                         text=True, timeout=120)
    out = run.stdout
    assert run.returncode == 1, out
    order = [line.split("::")[0].removeprefix("tests/") for line in out.splitlines()
             if "::" in line and line.startswith("tests/")]
    # the Docker tier last; before it, the module marked `trains`; the others in pytest's order
    assert order[-3:] == ["adversarial/test_recipe.py"] * 2 + ["e2e/test_deploy.py"], order
    assert order[0] == "adversarial/test_attack.py", order
    table = out[out.index("duration per tier"):]
    rows = {line.split()[0]: line.split()[1:] for line in table.splitlines()[2:]
            if line and line.split()[0] in ("unit", "e2e", "adversarial", "tests", "all")}
    # tests, passed, failed, error, skipped, xfailed, test s, wall s, cpu s
    assert rows["unit"][:6] == ["3", "1", "0", "1", "1", "0"], table
    assert rows["e2e"][:6] == ["1", "0", "1", "0", "0", "0"], table
    assert rows["adversarial"][:2] == ["3", "3"] and rows["tests"][:2] == ["1", "1"], table
    assert float(rows["unit"][6]) >= 0.3 and float(rows["all"][0]) >= 0.3
    assert "cpu s: user + system of pytest" in table


def test_a_background_job_runs_beside_and_is_waited_for(tmp_path, monkeypatch):
    monkeypatch.setattr(background, "JOBS", {})
    monkeypatch.setattr(background, "LOGS", tmp_path)
    marker = tmp_path / "done"
    job = background.start("ok", [sys.executable, "-c",
                                   f"import time; time.sleep(0.5); open({str(marker)!r}, 'w'); "
                                   f"print('built')"])
    assert job.proc is not None and not marker.exists()  # started, not waited for
    job.wait(timeout=60)
    assert marker.exists() and job.rc == 0 and "built" in job.tail()
    (line,) = background.summary_lines()
    assert line.startswith("ok: ") and ", exit 0; the tests waited " in line

    failing = background.start("bad", [sys.executable, "-c", "import sys; print('no mirror'); "
                                                             "sys.exit(3)"])
    with pytest.raises(AssertionError, match=r"background job bad failed \(exit 3\):\nno mirror"):
        failing.wait(timeout=60)


def test_without_background_work_a_job_runs_when_first_waited_for(tmp_path, monkeypatch):
    monkeypatch.setattr(background, "JOBS", {})
    monkeypatch.setattr(background, "LOGS", tmp_path)
    monkeypatch.setenv(background.ENABLED_ENV, "0")
    job = background.start("later", [sys.executable, "-c", "print('now')"])
    assert job.proc is None  # not started beside the tests
    job.wait(timeout=60)
    assert job.rc == 0 and "now" in job.tail()


def test_a_job_still_running_at_the_end_is_stopped_with_what_it_started(tmp_path, monkeypatch):
    monkeypatch.setattr(background, "JOBS", {})
    monkeypatch.setattr(background, "LOGS", tmp_path)
    job = background.start("long", ["bash", "-c", "sleep 300 & wait"])
    background.stop_all()
    assert job.rc is not None and job.rc < 0
    (line,) = background.summary_lines()
    assert "unfinished at the end of the session: stopped" in line
    deadline = time.monotonic() + 10  # its sleep ends with it (one process group), once reaped
    while (left := _group(job.proc.pid)) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not left, left


def _group(pgid: int) -> list[str]:
    """Live (not zombie) processes of the process group."""
    ps = subprocess.run(["ps", "-o", "pid=,stat=", "-g", str(pgid)], capture_output=True, text=True)
    return [line for line in ps.stdout.splitlines() if line.split()[1:2] != ["Z"]]

"""The playbook and roles pass ansible-lint (production profile, no skip list), yamllint and
ansible-playbook's syntax check against the example inventory."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from ..conftest import REPO

pytestmark = pytest.mark.integration
ANSIBLE = REPO / "ansible"
BIN = Path(sys.executable).parent


def _run(*cmd: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
           "NO_COLOR": "1", "ANSIBLE_CONFIG": str(ANSIBLE / "ansible.cfg")}
    return subprocess.run(cmd, cwd=ANSIBLE, capture_output=True, text=True, timeout=300, env=env)


def test_lint_config_has_no_skip_list():
    config = yaml.safe_load((ANSIBLE / ".ansible-lint").read_text())
    assert config["profile"] == "production"
    assert not {"skip_list", "warn_list", "exclude_paths"} & set(config)


def test_ansible_lint_passes_the_production_profile():
    result = _run(str(BIN / "ansible-lint"))
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    assert "Profile 'production' was required, and it passed" in result.stderr + result.stdout


def test_yamllint_is_clean_on_every_yaml_file_with_one_config():
    """One config (.yamllint at the root; ansible/.yamllint links to it for ansible-lint) for
    every YAML file git tracks: playbooks, recipes, monitoring, compose, test data."""
    assert (ANSIBLE / ".yamllint").resolve() == REPO / ".yamllint"
    listed = subprocess.run([str(BIN / "yamllint"), "--list-files", "."], cwd=REPO,
                            capture_output=True, text=True, timeout=120, check=True)
    tracked = subprocess.run(["git", "ls-files", "*.yml", "*.yaml"], cwd=REPO,
                             capture_output=True, text=True, timeout=60, check=True)
    assert {Path(p).as_posix().removeprefix("./") for p in listed.stdout.split()} >= set(
        tracked.stdout.split())
    result = subprocess.run([str(BIN / "yamllint"), "--strict", "."], cwd=REPO,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout


@pytest.mark.parametrize("device_class", ["pi", "jetson", "local"])
def test_playbook_syntax(device_class):
    result = _run(str(BIN / "ansible-playbook"), "--syntax-check", "-i", "inventory/example.yml",
                  "-e", f"edgegen_class={device_class}", "deploy.yml")
    assert result.returncode == 0, result.stdout + result.stderr


def test_bench_playbook_syntax():
    result = _run(str(BIN / "ansible-playbook"), "--syntax-check", "-i", "inventory/example.yml",
                  "-e", "edgegen_bench_hosts=pi,jetson", "bench.yml")
    assert result.returncode == 0, result.stdout + result.stderr

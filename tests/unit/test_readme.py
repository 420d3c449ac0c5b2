"""The guide cannot rot: every command in README.md and docs/*.md names a real make target, make
variable and CLI option, and every link and image between these pages resolves.

Fast tier: `make -n` (a dry run) and `--help` only; no network, no server, nothing built.
Commands are taken from ```bash / ```sh / ```console blocks: lines that start (after an optional
`$ `) with `make `, `python -m `, `python3 -m ` or `.venv/bin/python -m `.
"""

from __future__ import annotations

import functools
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
README = REPO / "README.md"
MAKEFILE = REPO / "Makefile"
PAGES = [README, *sorted((REPO / "docs").glob("*.md"))]
# 16 images of dcgan-digits as `make run` builds it (POST /v1/images/generations, n 16, seed 42).
SAMPLE_GRID = "docs/images/digits-grid.png"

SHELL_FENCES = {"bash", "sh", "console", "shell"}
COMMAND = re.compile(r"^(make|python3? -m|\.venv/bin/python -m) ")
OPERATORS = {"&&", "||", "|", ";"}


def _rel(path: Path) -> str:
    return str(path.relative_to(REPO))


def _fenced_blocks(text: str):
    """(language, first line number, lines) of every fenced block."""
    lang, start, body = None, 0, []
    for number, line in enumerate(text.splitlines(), 1):
        stripped = line.strip()
        if lang is None and stripped.startswith("```"):
            lang, start, body = stripped[3:].strip().lower(), number + 1, []
        elif lang is not None and stripped == "```":
            yield lang, start, body
            lang = None
        elif lang is not None:
            body.append(line)


def _commands(page: Path) -> list[tuple[str, list[str]]]:
    """("page:line", argv) of every command in the page's shell blocks, continuations joined
    and cut at the first shell operator."""
    found = []
    for lang, start, body in _fenced_blocks(page.read_text(encoding="utf-8")):
        if lang not in SHELL_FENCES:
            continue
        number, pending, first = start, "", start
        for line in body:
            if not pending:
                first = number
            number += 1
            if line.rstrip().endswith("\\"):
                pending += line.rstrip()[:-1] + " "
                continue
            line, pending = (pending + line).strip(), ""
            line = line[2:] if line.startswith("$ ") else line
            if not COMMAND.match(line):
                continue
            argv = shlex.split(line, comments=True)
            cut = next((i for i, token in enumerate(argv) if token in OPERATORS), len(argv))
            found.append((f"{_rel(page)}:{first}", argv[:cut]))
    return found


ALL_COMMANDS = [c for page in PAGES for c in _commands(page)]
MAKE_COMMANDS = [(where, argv) for where, argv in ALL_COMMANDS if argv[0] == "make"]
PYTHON_COMMANDS = [(where, argv) for where, argv in ALL_COMMANDS if argv[0] != "make"]


def _ids(commands):
    return [f"{where} {shlex.join(argv)}" for where, argv in commands]


def test_the_guide_has_its_commands():
    """The extraction finds what the README shows: its two commands and more besides."""
    readme = {shlex.join(argv) for where, argv in ALL_COMMANDS if where.startswith("README.md")}
    assert {"make run", "make test"} <= readme, sorted(readme)
    assert len([c for c in readme if c.startswith("make ")]) >= 15, sorted(readme)
    assert any(" -m " in c for c in readme), sorted(readme)


# -- make -------------------------------------------------------------------------------------

# `make -n` prints recipes without running them, but still evaluates every $(shell ...) the
# Makefile expands and runs recipe lines marked `+`. Each $(shell) here is read-only; a new one
# runs on every dry run below: check it is harmless, then add its start here.
READ_ONLY_SHELL = ("sed -n ", "printf ", "docker compose version ", "uname -m ",
                   "grep -m1 -E '^(flags|Features)' /proc/cpuinfo ")


def test_dry_runs_are_harmless():
    text = MAKEFILE.read_text()
    shells = re.findall(r"\$\(shell\s+([^\n]*)", text)
    assert shells, "the Makefile has no $(shell ...): drop this guard's allow-list"
    for command in shells:
        assert command.startswith(READ_ONLY_SHELL), command
    assert not re.search(r"^\t[@-]*\+", text, re.M), "a `+` recipe line runs even under make -n"


def _makefile_uses(variable: str) -> bool:
    text = MAKEFILE.read_text()
    return bool(re.search(rf"\$[({{]{re.escape(variable)}[)}}]|\b(ifdef|ifndef|origin)\s+"
                          rf"{re.escape(variable)}\b|^{re.escape(variable)}\s*[?:]?=", text, re.M))


@pytest.mark.parametrize("where,argv", MAKE_COMMANDS, ids=_ids(MAKE_COMMANDS))
def test_make_command_exists(where, argv):
    """The target exists and dry-runs with the guide's variables; each variable is one the
    Makefile reads; a recipe the guide names is in recipes/."""
    if shutil.which("make") is None:
        pytest.skip("make is not installed")
    targets = [a for a in argv[1:] if "=" not in a]
    assignments = dict(a.split("=", 1) for a in argv[1:] if "=" in a)
    assert targets, f"{where}: `make` alone prints the help; name a target"
    env = {k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL")}
    env["MAKEFLAGS"] = ""
    done = subprocess.run(["make", "-n", "--no-print-directory", *argv[1:]], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=60)
    output = done.stdout + done.stderr
    assert "No rule to make target" not in output, f"{where}:\n{output}"
    assert done.returncode == 0, f"{where}: make -n exited {done.returncode}:\n{output}"
    for variable, value in assignments.items():
        assert _makefile_uses(variable), f"{where}: the Makefile never reads {variable}"
        if value.startswith("recipes/"):
            assert (REPO / value).is_file(), f"{where}: no {value}"


# -- python -m --------------------------------------------------------------------------------

@functools.lru_cache(maxsize=None)
def _help(module: str, subcommand: str) -> str:
    done = subprocess.run([sys.executable, "-m", module, subcommand, "--help"], cwd=REPO,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, f"python -m {module} {subcommand} --help:\n{done.stderr}"
    return done.stdout


@pytest.mark.parametrize("where,argv", PYTHON_COMMANDS, ids=_ids(PYTHON_COMMANDS))
def test_python_command_parses(where, argv):
    """The CLI has the subcommand and every option the guide passes; a recipe it names exists,
    with the profile the guide asks for."""
    module, subcommand, *rest = argv[argv.index("-m") + 1:]
    text = _help(module, subcommand)
    assert f"python -m {module} {subcommand}" in text, text  # the subcommand's own help
    options = [a.split("=", 1)[0] for a in rest if a.startswith("--")]
    for option in options:
        assert re.search(rf"(^|[\s\[,]){re.escape(option)}\b", text), \
            f"{where}: python -m {module} {subcommand} has no {option}:\n{text}"
    recipes = [a for a in rest if a.startswith("recipes/")]
    for recipe in recipes:
        assert (REPO / recipe).is_file(), f"{where}: no {recipe}"
    if "--profile" in rest and recipes:
        profile = rest[rest.index("--profile") + 1]
        profiles = yaml.safe_load((REPO / recipes[0]).read_text()).get("profiles") or {}
        assert profile in profiles, f"{where}: {recipes[0]} has no profile {profile!r}"


# -- links and images -------------------------------------------------------------------------

LINK = re.compile(r"(!?)\[[^\]]*\]\(([^)\s]+)\)")


def _links(page: Path):
    """(is_image, target) of every inline link outside code blocks and code spans."""
    text = re.sub(r"^\s*```.*?^\s*```", "", page.read_text(encoding="utf-8"), flags=re.M | re.S)
    text = re.sub(r"`[^`\n]*`", "", text)
    return [(bang == "!", target) for bang, target in LINK.findall(text)]


def _slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower().replace("`", ""))
    return text.replace(" ", "-")


def _anchors(page: Path) -> set[str]:
    text = re.sub(r"^\s*```.*?^\s*```", "", page.read_text(encoding="utf-8"), flags=re.M | re.S)
    seen: dict[str, int] = {}
    anchors = set()
    for heading in re.findall(r"^#{1,6}\s+(.+?)\s*#*$", text, re.M):
        slug = _slug(heading)
        anchors.add(slug if slug not in seen else f"{slug}-{seen[slug]}")
        seen[slug] = seen.get(slug, 0) + 1
    return anchors


@pytest.mark.parametrize("page", PAGES, ids=_rel)
def test_links_resolve(page):
    """Every relative link inside the repository names a file that exists, and an anchor that
    is a heading of it. (Links that leave the repository, like ../shared/, are not checked.)"""
    links = [target for image, target in _links(page) if not image]
    if page == README:
        assert any(t.startswith("docs/") for t in links), "the README links to no docs/ page"
    for target in links:
        if re.match(r"^[a-z]+:", target):
            continue  # http:, https:, mailto:
        path, _, anchor = target.partition("#")
        file = (page.parent / path).resolve() if path else page
        if REPO not in file.parents and file != REPO:
            continue
        assert file.exists(), f"{_rel(page)}: {target}: no {path}"
        if anchor and file.suffix == ".md":
            assert anchor in _anchors(file), \
                f"{_rel(page)}: {target}: no heading #{anchor} in {_rel(file)}"


def test_every_docs_page_is_linked_from_the_readme():
    linked = {target.partition("#")[0] for image, target in _links(README) if not image}
    for page in PAGES[1:]:
        assert _rel(page) in linked, f"README.md links nowhere to {_rel(page)}"


@pytest.mark.parametrize("page", PAGES, ids=_rel)
def test_images_exist(page):
    """Every relative image exists."""
    for image, target in _links(page):
        if not image or re.match(r"^[a-z]+:", target):
            continue
        path = (page.parent / target).resolve()
        assert path.is_file(), f"{_rel(page)}: no {target}"


def test_the_readme_shows_a_sample_grid():
    assert any(t == SAMPLE_GRID for image, t in _links(README) if image), "README shows no grid"
    assert (REPO / SAMPLE_GRID).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# -- shape ------------------------------------------------------------------------------------

def test_readme_is_a_guide():
    """At most 250 lines, each within 100 characters (a pasted transcript, in a ```text block,
    may run longer); the detail lives in docs/."""
    text = README.read_text(encoding="utf-8")
    lines = text.splitlines()
    assert len(lines) <= 250, f"README.md has {len(lines)} lines; move detail to docs/"
    transcript = {n for lang, start, body in _fenced_blocks(text) if lang == "text"
                  for n in range(start, start + len(body))}
    long = [n for n, line in enumerate(lines, 1) if len(line) > 100 and n not in transcript]
    assert not long, f"README.md lines over 100 characters: {long}"

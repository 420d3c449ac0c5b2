"""Where fleet finds its Ansible project and the source checkout it may run from.

The playbooks, roles, class settings (group_vars) and example inventory ship inside the
package as `fleet/_ansible`: in a checkout a symlink to `ansible/`, in a built wheel a copy
(pyproject's package-data), so `pip install edgegen[deploy]` finds them anywhere."""

from __future__ import annotations

from pathlib import Path

PACKAGE = Path(__file__).resolve().parent
_SOURCE = PACKAGE.parent
IN_CHECKOUT = (_SOURCE / "pyproject.toml").is_file()
# In a checkout, ansible/ itself (what the symlink points at; a checkout made without symlinks,
# git's core.symlinks=false, has it too); installed, the copy inside the package.
ANSIBLE_DIR = _SOURCE / "ansible" if IN_CHECKOUT else PACKAGE / "_ansible"
# The source checkout: images/, android/, pyproject.toml, and build/ for what fleet writes.
# Installed from a wheel there is none: build outputs go under the working directory, and the
# commands that build from sources (images, the companion APK) need a checkout.
REPO = _SOURCE if IN_CHECKOUT else Path.cwd()

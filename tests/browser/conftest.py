"""Fixtures the companion page's browser tests share."""

from __future__ import annotations

import shutil
import threading

import pytest
import requests

from ..conftest import free_port
from ..integration.serverproc import Proc

PUSHGATEWAY = shutil.which("prometheus-pushgateway") or shutil.which("pushgateway")


@pytest.fixture(scope="module")
def pushgateway():
    """A real Pushgateway on a free loopback port (the fleet's, for phones): its base URL."""
    if not PUSHGATEWAY:
        pytest.skip("the Pushgateway is not installed (apt-get install prometheus-pushgateway; "
                    ".ci/run does)")
    port = free_port()
    # In memory only: Debian's default persists to /var/lib/prometheus (and other tests' would
    # then see this phone).
    proc = Proc([PUSHGATEWAY, f"--web.listen-address=127.0.0.1:{port}", "--persistence.file=",
                 "--log.level=warn"])
    base = f"http://127.0.0.1:{port}"
    for _ in range(100):
        try:
            if requests.get(base + "/-/ready", timeout=1).ok:
                break
        except requests.ConnectionError:
            threading.Event().wait(0.1)
    yield base
    proc.stop()

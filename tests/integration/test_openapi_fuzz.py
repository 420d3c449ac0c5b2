"""Property-based fuzzing from the server's own OpenAPI document (schemathesis) against the
real gunicorn server holding two text models (one with a chat template) and an image model
behind an API key.

Checks: no 5xx except documented 503s, every status code, content type, header and body as
documented (server-sent events included), schema-violating requests refused, methods not
allowed answered 405, auth not ignored. Not checked: `positive_data_acceptance`, since a
schema-valid request can still be refused for reasons a schema cannot express: a prompt whose
token count plus max_tokens exceeds the context, or a reload naming a directory that is not
a bundle. Bodies no schema makes schemathesis send (a lone UTF-16 surrogate, JSON nested
100,000 deep) go to every POST route of the same document beside this run, in
tests/adversarial/test_bad_input.py.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from ..conftest import REPO
from .serverproc import ServerProcess

pytestmark = pytest.mark.integration
KEY = "sk-fuzz-0123456789abcdef0123"
CHECKS = ("not_a_server_error,status_code_conformance,content_type_conformance,"
          "response_headers_conformance,response_schema_conformance,negative_data_rejection,"
          "unsupported_method,ignored_auth,missing_required_header")


def test_fuzzing_the_openapi_document_finds_no_server_error(gpt2_bundle, llama_bundle,
                                                           dcgan_bundle, tmp_path):
    server = ServerProcess(gpt2_bundle, llama_bundle, dcgan_bundle,
                           env={"EDGEGEN_API_KEYS": KEY})
    server.wait_ready()
    cli = Path(sys.executable).with_name("schemathesis")
    try:
        run = subprocess.run(
            [str(cli), "--config-file", str(REPO / "tests/data/schemathesis.toml"), "run",
             server.base + "/openapi.json", "--header", f"Authorization: Bearer {KEY}",
             "--checks", CHECKS, "--max-examples", os.environ.get("EDGEGEN_FUZZ_EXAMPLES", "100"),
             "--workers", "2", "--generation-database", "none", "--request-timeout", "60"],
            cwd=tmp_path, capture_output=True, text=True, timeout=900)
    finally:
        code, output = server.stop()
    report = run.stdout[-6000:] + run.stderr[-2000:]
    assert run.returncode == 0, report
    assert "Tested: 13" in run.stdout, report  # every operation of the document was exercised
    assert "Traceback" not in output and "unhandled error" not in output, output[-4000:]
    assert code == 0

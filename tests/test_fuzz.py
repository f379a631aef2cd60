"""Schemathesis against the server's own /openapi.json (bounded run).

Targets: no 5xx for any generated input, and every response matching the
schema the server publishes (status codes, content types, bodies).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import API_KEY

pytestmark = pytest.mark.engine

CHECKS = ("not_a_server_error,response_schema_conformance,status_code_conformance,"
          "content_type_conformance")
# vLLM's Responses schema is large: its coverage phase alone generates ~13,000 cases
# (~5 min here), so /v1/responses gets the example and fuzzing phases in a second run.
# (That coverage phase found vLLM 0.32's message parser asserting on a file part inside
# a function_call_output: now a 400, see server/api/request_layer.py _check_tool_outputs.)
RESPONSES = r"^/v1/responses"
# The app is vLLM's own, so its /openapi.json lists every route `vllm serve` mounts. One of
# them is not ours to fuzz: vLLM 0.32's structured decision API (/v1/systemone) answers 501
# "not supported" for any model without that head, on `vllm serve` as here; s1 adds nothing
# to it.
NOT_OURS = r"|^/v1/systemone$"


def _st(api_server, tmp_path: Path, *args: str) -> None:
    st = shutil.which("st", path=str(Path(sys.executable).parent))
    assert st, "schemathesis is part of the dev extra"
    cmd = [st, "run", api_server.base_url + "/openapi.json", "--checks", CHECKS,
           "--max-examples", "25", "--request-timeout", "120", "--workers", "1",
           "--seed", "1", "-H", f"Authorization: Bearer {API_KEY}", *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-2000:]


def test_schemathesis_finds_nothing(api_server, tmp_path: Path):
    _st(api_server, tmp_path, "--exclude-path-regex", RESPONSES + NOT_OURS)


def test_schemathesis_finds_nothing_in_responses(api_server, tmp_path: Path):
    _st(api_server, tmp_path, "--include-path-regex", RESPONSES,
        "--phases", "examples,fuzzing,stateful")


@pytest.mark.parametrize("part", [
    {"type": "input_file", "file_data": None, "file_id": None, "file_url": None,
     "filename": None, "detail": None},
    {"type": "input_text", "text": "42"},
])
def test_a_tool_output_as_content_parts_is_a_400(api_server, part):
    import httpx

    r = httpx.post(api_server.base_url + "/v1/responses", timeout=60,
                   headers={"Authorization": f"Bearer {API_KEY}"},
                   json={"input": [{"type": "function_call_output", "call_id": "c1",
                                    "output": [part]}]})
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert error["param"] == "input" and "as a string" in error["message"]

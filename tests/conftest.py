"""Shared test setup: project-local caches, tiny local checkpoints, engine helpers.

Everything the tests load is built here from nothing (no model hub). Engine
fixtures are session-scoped: a vLLM engine on CPU takes ~15 s to start.

The suite runs serially (no pytest-xdist): tests sharing a server read its absolute
gauges (requests running, waiting, in flight) once their own requests are done.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CACHE = ROOT / ".cache"
for var, sub in (("VLLM_CACHE_ROOT", "vllm"), ("TORCHINDUCTOR_CACHE_DIR", "inductor"),
                 ("TMPDIR", "tmp")):
    os.environ.setdefault(var, str(CACHE / sub))
    Path(os.environ[var]).mkdir(parents=True, exist_ok=True)
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")

import pytest  # noqa: E402

# Fixtures that start a real server or engine: a test that uses one is an engine test
# (``make test-fast`` leaves them out), whether or not its module says so.
ENGINE_FIXTURES = frozenset({"api_server", "demo_server", "vllm_server", "qwen3_server",
                            "plugin_server"})


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if ENGINE_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.engine)


def pytest_runtest_setup(item: pytest.Item) -> None:
    """One torch thread in the test process, from the first test that finds torch imported.
    On a shared 2-core box OpenMP's second thread waits for a core other processes hold:
    the demo trainer's 40 steps took 43 s with 2 threads and 1.6 s with 1 (load 17), with
    the same losses. Servers and engines are other processes and keep their own threads."""
    torch = sys.modules.get("torch")
    if torch is not None and torch.get_num_threads() != 1:
        torch.set_num_threads(1)


@pytest.fixture(scope="session", autouse=True)
def _clean_s1_environment() -> Iterator[None]:
    """No ``S1_*`` variable of the developer's shell (a sourced ``.env``) reaches a
    ``Settings()`` built in-process. Session-wide, so a fixture or test may still set one
    (monkeypatch) for itself; the launcher strips them for server subprocesses."""
    with pytest.MonkeyPatch.context() as mp:
        for name in [n for n in os.environ if n.startswith("S1_")]:
            mp.delenv(name)
        yield


@pytest.fixture
def clean_cli_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """For the command-line tests (test_cli_*): no S1_* or VLLM_API_KEY from the caller's
    environment, and a scratch working directory for the files a command line names."""
    for name in list(os.environ):
        if name.startswith("S1_") or name == "VLLM_API_KEY":
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)


@pytest.fixture(scope="session")
def tiny_s1() -> Path:
    """Random tiny Qwen2 whose template does NOT open thinking (like the s1 models)."""
    from training.tiny import build_tiny_checkpoint

    return build_tiny_checkpoint(CACHE / "tiny-s1", "s1")


@pytest.fixture(scope="session")
def tiny_think() -> Path:
    """Random tiny Qwen2 whose template opens a <think> block in the prompt."""
    from training.tiny import build_tiny_checkpoint

    return build_tiny_checkpoint(CACHE / "tiny-think", "think")


@pytest.fixture(scope="session")
def tiny_s1_open() -> Path:
    """Random tiny Qwen2 whose template opens the s1 thinking block (like the demo model)."""
    from training.tiny import build_tiny_checkpoint

    return build_tiny_checkpoint(CACHE / "tiny-s1-open", "s1-open")


API_KEY = "test-key"
API_MODEL = "tiny"
API_EFFORTS = {"none": 0, "low": 3, "medium": 6, "high": 12}
CORS_ORIGIN = "http://allowed.test"
# Tool calling as vLLM does it: hermes, with a template that renders tools (the tiny
# template's own rendering otherwise; tests/test_vllm_parity.py gives vLLM the same flags).
TOOL_FLAGS = ("--enable-auto-tool-choice", "--tool-call-parser", "hermes",
              "--chat-template", str(ROOT / "tests" / "data" / "tiny_s1_open_tools.jinja"))


@pytest.fixture(scope="session")
def no_whitespace(tiny_s1_open) -> dict[str, int]:
    """logit_bias that bans the tiny model's whitespace tokens: greedy, it would otherwise
    fill a JSON grammar's whitespace freedom (a tool call's arguments) to max_tokens."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(tiny_s1_open))
    return {str(i): -100 for i in range(len(tok))
            if tok.decode([i]) and not tok.decode([i]).strip()}


# The engine-call hook modules' fixtures (test_engine_hook, test_budget_fanout,
# test_budget_metrics; tests/hooked_engine.py), one definition for the three.
@pytest.fixture(scope="module")
def model(tiny_s1_open):
    from tests.hooked_engine import tiny_model_info

    return tiny_model_info(tiny_s1_open)


@pytest.fixture(scope="module")
def vocab(model):
    from tests.hooked_engine import vocab_of

    return vocab_of(model)


@pytest.fixture
def settings(monkeypatch):
    from tests.hooked_engine import default_settings

    return default_settings(monkeypatch)


@pytest.fixture(scope="session")
def api_server(tiny_s1_open):
    """One real server for the API tests: tiny s1 model, an API key, a 64 KiB body limit,
    hermes tool calling, small reasoning-effort budgets, one CORS origin."""
    from tests.server_proc import ServerProcess

    proc = ServerProcess(tiny_s1_open, "--api-keys", API_KEY, "--served-model-name", API_MODEL,
                         "--max-body-bytes", "65536", "--cors-origins", CORS_ORIGIN,
                         *TOOL_FLAGS,
                         "--reasoning-effort-budgets", ",".join(f"{k}={v}" for k, v in
                                                                 API_EFFORTS.items()))
    try:
        yield proc.wait_ready()
    finally:
        assert proc.stop() == 0, "SIGTERM must exit 0"


DEMO_KEY = "demo-key"


@pytest.fixture(scope="session")
def demo_server():
    """One real server on the embedded demo model (the default model), with an API key and
    the playground on: the budget-details and browser tests share it."""
    from server.settings import DEMO_MODEL
    from tests.server_proc import ServerProcess

    proc = ServerProcess(DEMO_MODEL, "--api-keys", DEMO_KEY)
    try:
        yield proc.wait_ready()
    finally:
        assert proc.stop() == 0, "SIGTERM must exit 0"


@pytest.fixture(scope="session")
def vllm_router() -> Path:
    """The Python of a venv holding the router version the Dockerfile's router target pins
    (its own venv, under .cache/tools like checkov's): test_k8s_scaleout reads its argument
    parser, test_router_live runs it. Installed from PyPI on first use (docs/development.md)."""
    import re

    from tests.deploy_helpers import tool_venv

    version = re.search(r"ARG VLLM_ROUTER_VERSION=(\S+)",
                        (ROOT / "Dockerfile").read_text()).group(1)
    return tool_venv(f"vllm-router-{version}", f"vllm-router=={version}", "bin/python")

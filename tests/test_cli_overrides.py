"""What s1-serve's command line adds to ``vllm serve``'s, and how it meets vLLM's: an
``S1_<DEST>`` variable sets the vLLM argument ``--<dest>`` would (a flag on the line wins,
a bad value exits naming the variable), ``VLLM_API_KEY`` is honoured as vLLM's server
does, the old ``--api-keys``/``--cors-origins`` spellings mean their vLLM equivalents,
and another vLLM release than the tested one is refused unless allowed. The published
command lines themselves are test_cli_corpus."""

from __future__ import annotations

import shlex
from typing import Any

import pytest

from tests.vllm_serve import field_diffs, s1_expected, vllm_serve_args

pytestmark = pytest.mark.usefixtures("clean_cli_env")


# -------------------------------------------------------- S1_<DEST> variables
BASE = "deepseek-ai/DeepSeek-V3.2-Exp -tp 8"  # recipes: DeepSeek/DeepSeek-V3_2-Exp.md


@pytest.mark.parametrize(("env", "flags"), [
    ({"S1_MAX_NUM_BATCHED_TOKENS": "4096"}, "--max-num-batched-tokens 4096"),
    ({"S1_KV_CACHE_DTYPE": "fp8"}, "--kv-cache-dtype fp8"),
    ({"S1_ENABLE_PREFIX_CACHING": "true"}, "--enable-prefix-caching"),
    ({"S1_ENABLE_PREFIX_CACHING": "0"}, "--no-enable-prefix-caching"),
    ({"S1_TRUST_REMOTE_CODE": "1"}, "--trust-remote-code"),
    ({"S1_SERVED_MODEL_NAME": "a,b"}, "--served-model-name a b"),
    ({"S1_MAX_MODEL_LEN": "32768"}, "--max-model-len 32768"),
    ({"S1_HOST": "0.0.0.0"}, "--host 0.0.0.0"),
    ({"S1_UVICORN_LOG_LEVEL": "warning", "S1_ROOT_PATH": "/llm"},
     "--uvicorn-log-level warning --root-path /llm"),
], ids=lambda v: ",".join(v) if isinstance(v, dict) else None)
def test_s1_env_sets_vllm_argument(env: dict[str, str], flags: str,
                                   monkeypatch: pytest.MonkeyPatch) -> None:
    from server.api.cli import parse

    for name, value in env.items():
        monkeypatch.setenv(name, value)
    args, _ = parse(shlex.split(BASE))
    for name in env:  # the reference parse runs without them
        monkeypatch.delenv(name)
    expected = s1_expected(vllm_serve_args(shlex.split(f"{BASE} {flags}")), None)
    assert not field_diffs(vars(args), expected), field_diffs(vars(args), expected)


@pytest.mark.parametrize(("env", "flags", "dest", "value"), [
    ({"S1_MAX_NUM_BATCHED_TOKENS": "4096"}, "--max-num-batched-tokens 8192",
     "max_num_batched_tokens", 8192),
    ({"S1_ENABLE_PREFIX_CACHING": "true"}, "--no-enable-prefix-caching",
     "enable_prefix_caching", False),
    ({"S1_SERVED_MODEL_NAME": "a,b"}, "--served-model-name c", "served_model_name", ["c"]),
    ({"S1_HOST": "0.0.0.0"}, "--host 10.0.0.1", "host", "10.0.0.1"),
])
def test_flag_wins_over_s1_env(env: dict[str, str], flags: str, dest: str, value: Any,
                               monkeypatch: pytest.MonkeyPatch) -> None:
    from server.api.cli import parse

    for name, val in env.items():
        monkeypatch.setenv(name, val)
    args, _ = parse(shlex.split(f"{BASE} {flags}"))
    assert getattr(args, dest) == value


@pytest.mark.parametrize(("name", "value"), [
    ("S1_MAX_MODEL_LEN", "abc"),
    ("S1_MAX_NUM_SEQS", "many"),
    ("S1_ENABLE_PREFIX_CACHING", "maybe"),
    ("S1_KV_CACHE_DTYPE", "fp9"),  # `--kv-cache-dtype fp9` is an error in vLLM's parser
])
def test_bad_s1_env_exits_naming_the_variable(name: str, value: str,
                                              monkeypatch: pytest.MonkeyPatch,
                                              capsys: pytest.CaptureFixture) -> None:
    from server.api.cli import parse

    monkeypatch.setenv(name, value)
    with pytest.raises(SystemExit) as exc:
        parse(shlex.split(BASE))
    message = f"{exc.value.code} {capsys.readouterr().err}"
    assert exc.value.code != 0 and name in message, (
        f"{name}={value!r} must stop s1-serve with a message naming {name}; got {message!r}")


# ------------------------------------------------------------ keys and origins
def test_vllm_api_key_is_honoured(monkeypatch: pytest.MonkeyPatch) -> None:
    from server.api.cli import parse

    monkeypatch.setenv("VLLM_API_KEY", "from-env")
    args, settings = parse(shlex.split(BASE))
    assert args.api_key == ["from-env"] and settings.api_keys == ["from-env"]
    assert settings.all_api_keys() == ["from-env"]


def test_api_key_flag_wins_over_vllm_api_key(monkeypatch: pytest.MonkeyPatch) -> None:
    """As vLLM's server: ``args.api_key or [VLLM_API_KEY]``."""
    from server.api.cli import parse

    monkeypatch.setenv("VLLM_API_KEY", "from-env")
    args, settings = parse(shlex.split(f"{BASE} --api-key k1 k2"))
    assert args.api_key == ["k1", "k2"] and settings.api_keys == ["k1", "k2"]


def test_old_api_keys_spelling() -> None:
    from server.api.cli import parse

    args, settings = parse(shlex.split(f"{BASE} --api-keys a,b"))
    expected = s1_expected(vllm_serve_args(shlex.split(f"{BASE} --api-key a b")), None)
    assert not field_diffs(vars(args), expected), field_diffs(vars(args), expected)
    assert settings.api_keys == ["a", "b"]


def test_old_cors_origins_spelling() -> None:
    """``--cors-origins a,b`` = ``--allowed-origins '["a","b"]'`` (server/api/cli.py's docstring):
    only those origins, not vLLM's default ``*`` as well."""
    from server.api.cli import parse

    args, settings = parse(shlex.split(f"{BASE} --cors-origins https://a.example,"
                                       "https://b.example"))
    reference = vllm_serve_args(shlex.split(
        f"{BASE} --allowed-origins " + shlex.quote('["https://a.example","https://b.example"]')))
    expected = s1_expected(reference, None)
    assert not field_diffs(vars(args), expected), field_diffs(vars(args), expected)
    assert settings.cors_origins == ["https://a.example", "https://b.example"]


# ------------------------------------------------------------- version check
def test_check_vllm_version() -> None:
    from server.api.cli import TESTED_VLLM, check_vllm_version

    check_vllm_version(False)  # the installed one is the tested one
    check_vllm_version(False, TESTED_VLLM + "+cu128")  # a local build of the same release
    with pytest.raises(SystemExit) as exc:
        check_vllm_version(False, "0.33.0")
    assert "0.33.0" in str(exc.value) and TESTED_VLLM in str(exc.value)
    assert "--allow-untested-vllm" in str(exc.value)
    check_vllm_version(True, "0.33.0")  # allowed: a warning, no exit


def test_parse_refuses_untested_vllm(monkeypatch: pytest.MonkeyPatch) -> None:
    import vllm

    from server.api.cli import parse

    monkeypatch.setattr(vllm, "__version__", "0.31.1")
    with pytest.raises(SystemExit, match="0.31.1"):
        parse(shlex.split(BASE))
    args, settings = parse(shlex.split(f"{BASE} --allow-untested-vllm"))
    assert settings.allow_untested_vllm and not hasattr(args, "allow_untested_vllm")


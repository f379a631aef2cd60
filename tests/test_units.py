"""Pure unit tests: settings, format detection, the text splitter, SSE framing."""

from __future__ import annotations

import pytest

from server.api.cli import load_settings
from server.budget.formats import detect_format, get_format
from server.budget.machine import BudgetError
from server.settings import Settings


def test_settings_env_and_flags(monkeypatch):
    monkeypatch.setenv("S1_API_KEYS", "a, b")
    monkeypatch.setenv("S1_DEFAULT_THINKING_MAX", "64")
    s = load_settings(["--port", "9001", "--enforce-eager", "--cors-origins", "*"])
    assert s.api_keys == ["a", "b"] and s.default_thinking_max == 64
    assert s.port == 9001 and s.enforce_eager is True and s.cors_origins == ["*"]


def test_settings_errors_say_what_to_fix():
    with pytest.raises(SystemExit, match="--port"):
        load_settings(["--port", "99999"])
    with pytest.raises(SystemExit, match="thinking_min"):
        load_settings(["--default-thinking-min", "9", "--default-thinking-max", "3"])


def test_settings_model_name():
    assert Settings().model_name == "s1-demo"
    assert Settings(model="org/some-model").model_name == "org/some-model"
    assert Settings(served_model_name="x").model_name == "x"


def test_detect_formats(tiny_s1, tiny_think, tiny_s1_open):
    from transformers import AutoTokenizer

    assert detect_format(AutoTokenizer.from_pretrained(tiny_s1_open)).name == "s1"
    assert detect_format(AutoTokenizer.from_pretrained(tiny_think)).name == "deepseek-r1"
    # The s1 models ship Qwen2.5's plain template: only the name tells.
    plain = AutoTokenizer.from_pretrained(tiny_s1)
    plain.chat_template = plain.chat_template.replace("<|im_start|>think", "")
    assert detect_format(plain, "some/dir/qwen-base") is None
    assert detect_format(plain, "simplescaling/s1.1-32B").name == "s1"


def test_get_format_overrides_and_errors():
    assert get_format("s1", answer_prefix="").answer_prefix == ""
    assert get_format("custom", start="<t>", end="</t>").end == "</t>"
    with pytest.raises(BudgetError, match="choose one of"):
        get_format("nope")
    with pytest.raises(BudgetError, match="end delimiter"):
        get_format("custom")


def test_sse_event_is_always_one_line():
    """vLLM's JSON carries U+2028 and the like raw; each event must stay one line."""
    import json

    from server.api.sse import one_line

    data = one_line(json.dumps({"content": "a\u2028b\u2029c\x85d\ne\rf"}, ensure_ascii=False))
    assert len(data.splitlines()) == 1  # as httpx and str.splitlines split
    assert json.loads(data)["content"] == "a\u2028b\u2029c\x85d\ne\rf"


def test_optional_bool_settings_are_flags():
    """``bool | None`` settings (None = vLLM decides) take --flag / --no-flag like bools."""
    from server.api.cli import load_settings

    assert load_settings([]).enable_chunked_prefill is None
    assert load_settings(["--enable-chunked-prefill"]).enable_chunked_prefill is True
    assert load_settings(["--no-enable-chunked-prefill"]).enable_chunked_prefill is False


@pytest.mark.parametrize("config", [None, '{"eos_token_id": [7, 9]}', "{not json"],
                         ids=["missing", "valid", "broken"])
def test_generation_config_end_ids_and_the_broken_file_warning(tiny_s1, tmp_path, caplog,
                                                               config):
    """The end-of-turn ids the minimum holds back include generation_config.json's; a broken
    file (transformers raises OSError for it, as for a missing one) is warned about."""
    import shutil

    from transformers import AutoTokenizer

    from server.engine.loader import stop_ids_for

    for path in tiny_s1.iterdir():
        if path.name not in ("generation_config.json", "model.safetensors"):
            shutil.copy(path, tmp_path / path.name)
    if config is not None:
        (tmp_path / "generation_config.json").write_text(config)
    tok = AutoTokenizer.from_pretrained(tmp_path)
    with caplog.at_level("WARNING", logger="server.engine.loader"):
        ids = stop_ids_for(tok, str(tmp_path))
    base = {tok.convert_tokens_to_ids(t) for t in ("<|endoftext|>", "<|im_end|>")}
    assert ids == (base | {7, 9} if config and config.startswith('{"') else base)
    warned = [r.getMessage() for r in caplog.records]
    assert (config == "{not json") == any("generation_config.json" in m for m in warned), warned


class _FakeFront:
    """What :func:`server.api.watchdog.watch_engine` reads of the front (server/api/front.py):
    ``engine_dead()``, ``load_error`` and ``request_exit``."""

    def __init__(self, dead_after: int, load_error: str | None = None,
                 exits: list[int] | None = None) -> None:
        self.polls = 0
        self.dead_after = dead_after
        self.load_error = load_error
        self.request_exit = exits.append if exits is not None else None

    def engine_dead(self) -> bool:
        self.polls += 1
        return self.polls > self.dead_after


@pytest.mark.parametrize("exit_on_death", [True, False])
def test_watchdog_exits_with_3_once_the_engine_is_dead(monkeypatch, caplog, exit_on_death):
    import asyncio

    from server.api import watchdog

    monkeypatch.setattr(watchdog, "POLL_S", 0)
    exits: list[int] = []
    app = _FakeFront(dead_after=3, exits=exits)
    with caplog.at_level("ERROR", logger="server.api.watchdog"):
        asyncio.run(watchdog.watch_engine(app, exit_on_death))
    assert app.polls == 4  # it watched until the engine was dead, then stopped
    assert exits == ([3] if exit_on_death else [])
    assert "engine-core process is gone" in caplog.text
    assert ("staying up" in caplog.text) is not exit_on_death


def test_watchdog_names_a_failed_load_and_stays_up_without_a_server(monkeypatch, caplog):
    import asyncio

    from server.api import watchdog

    monkeypatch.setattr(watchdog, "POLL_S", 0)
    with caplog.at_level("ERROR", logger="server.api.watchdog"):
        asyncio.run(watchdog.watch_engine(_FakeFront(0, load_error="no such model"), True))
    assert "failed to start (no such model)" in caplog.text and "no server to stop" in caplog.text


def test_hard_exit_exits_the_process_with_the_code(monkeypatch):
    """The guard behind a graceful stop that hangs: os._exit with the watchdog's code."""
    import os

    import server.__main__ as main

    codes: list[int] = []
    monkeypatch.setattr(os, "_exit", codes.append)
    main._hard_exit(3, 5.0)
    assert codes == [3]

"""datasets_build's configuration and storage without a model server: the pipeline YAML
loaded and refused with the key named (before any work, also for an unreachable
endpoint), the response cache, tables that keep the funnel, the export layouts (s1K,
s1K-1.1), and the shipped test pool regenerated and compared with its generator.

Each stage's rules are test_datasets_build_filters; the selection, test_datasets_build_selection;
the end-to-end run against the real server, test_datasets_build_pipeline.py.
"""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest

from datasets_build import cli
from datasets_build.config import ConfigError, load_config
from datasets_build.export import to_layout
from datasets_build.tables import StageStats, Table, read_table, with_stage, write_table
from s1_common.cache import ResponseCache, request_key
from tests.helpers import S1K_COLUMNS
from tests.pool import EXPECTED, build_pool

POOL = Path(__file__).parent / "data" / "pool"
CONFIG = POOL / "pipeline.yaml"


def write_config(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "p.yaml"
    path.write_text(text)
    return path


MINIMAL = """
endpoints:
  m: {base_url: "http://127.0.0.1:1", model: x}
traces:
  teachers: [{name: t, endpoint: m}]
"""


def test_pool_config_loads() -> None:
    cfg = load_config(CONFIG)
    assert [t.name for t in cfg.traces.teachers] == ["gemini", "deepseek"]
    assert cfg.difficulty.tokenizer.endswith("tiny-s1-open")
    assert cfg.collect.sources[0].path == POOL / "numina_like.jsonl"
    assert [e.name for e in cfg.endpoints_for(["traces", "difficulty"])] == ["tiny"]


def test_example_config_loads() -> None:
    cfg = load_config(Path(__file__).parents[1] / "datasets_build" / "configs" / "example.yaml")
    assert [m.name for m in cfg.difficulty.base_models] == ["qwen7b", "qwen32b"]
    assert cfg.select.size == 1000 and len(cfg.select.preselect) == 3
    base = cfg.difficulty.base_models[0].gen
    # s1's base-model settings (data/bulk_inference.py): the question alone, 0.05, 32768
    assert (base.prompt, base.temperature, base.max_tokens) == ("{question}", 0.05, 32768)
    assert cfg.difficulty.ungraded == "drop" and cfg.domains.drop_unknown


@pytest.mark.parametrize(("text", "message"), [
    (MINIMAL + "colect: {}\n", "unknown key(s) colect"),
    (MINIMAL.replace("endpoint: m", "endpoint: nope"), "unknown endpoint 'nope'"),
    (MINIMAL.replace("endpoint: m}", "endpoint: m, prompt: hi}"), "must contain {question}"),
    (MINIMAL.replace("name: t", "name: Bad-Name"), "lowercase letters"),
    (MINIMAL + "export: {layout: s1k-2}\n", "export.layout"),
    (MINIMAL + "select: {size: many}\n", "select.size: expected int"),
    (MINIMAL + "workdir: ${NO_SUCH_VAR_S1}\n", "NO_SUCH_VAR_S1"),
])
def test_bad_config_is_reported_with_its_key(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        load_config(write_config(tmp_path, text))


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_unreachable_endpoint_stops_before_any_work(tmp_path: Path, capsys,
                                                    monkeypatch) -> None:
    monkeypatch.setenv("S1_BASE_URL", f"http://127.0.0.1:{_closed_port()}")
    rc = cli.main(["run", "-c", str(CONFIG), "--workdir", str(tmp_path / "w"), "--no-progress"])
    err = capsys.readouterr().err
    assert rc == 3
    assert "endpoint 'tiny'" in err and "cannot reach" in err
    assert not (tmp_path / "w" / "01_collect.parquet").exists()


def test_bad_config_exit_code(tmp_path: Path, capsys) -> None:
    path = write_config(tmp_path, MINIMAL + "quality: {checks: [ascii]}\n")
    assert cli.main(["check", "-c", str(path)]) == 2
    assert "quality.checks: unknown ['ascii']" in capsys.readouterr().err


def test_cache_roundtrip(tmp_path: Path) -> None:
    key = request_key("m", {"messages": [{"role": "user", "content": "q"}], "seed": 1})
    assert key == request_key("m", {"seed": 1, "messages": [{"content": "q", "role": "user"}]})
    with ResponseCache(tmp_path / "c.sqlite") as cache:
        assert cache.get(key) is None
        cache.put(key, "e", {"x": 1}, response={"choices": []})
        cache.put("k2", "e", {"x": 2}, error="HTTP 400: too long")
    with ResponseCache(tmp_path / "c.sqlite") as cache:
        assert cache.get(key) == ({"choices": []}, None)
        assert cache.get("k2") == (None, "HTTP 400: too long")
        assert cache.count() == 2


def test_table_roundtrip_keeps_the_funnel(tmp_path: Path) -> None:
    stats = StageStats("collect", rows_in=3, rows_out=2)
    stats.dropped["duplicate"] = 1
    table = Table([{"id": "a", "xs": ["1"]}, {"id": "b", "xs": []}],
                  with_stage({"teachers": ["t"]}, stats))
    for name in ("t.parquet", "t_dir"):
        back = read_table(write_table(table, tmp_path / name))
        assert back.rows == table.rows and back.teachers == ["t"]
        assert back.funnel[0]["dropped"] == {"duplicate": 1}


def test_export_layouts() -> None:
    row = {"id": "a", "question": "q", "solution": "s", "answer": "1", "cot_type": "math",
           "source_type": "x", "metadata": "{}", "gemini_thinking": "g", "gemini_attempt": "ga",
           "deepseek_thinking": "d", "deepseek_attempt": "da", "gemini_grade": "No",
           "gemini_grade_reason": "r", "deepseek_grade": "Yes", "deepseek_grade_reason": "r2"}
    s1k = to_layout(row, "s1k", ["gemini", "deepseek"], [])
    assert tuple(s1k) == S1K_COLUMNS and s1k["thinking_trajectories"] == ["g"]
    s11 = to_layout(row, "s1k-1.1", ["gemini", "deepseek"], [])
    assert list(s11) == ["question", "solution", "cot_type", "source_type", "metadata",
                         "gemini_thinking_trajectory", "gemini_attempt",
                         "deepseek_thinking_trajectory", "deepseek_attempt", "gemini_grade",
                         "gemini_grade_reason", "deepseek_grade", "deepseek_grade_reason"]
    assert json.loads(s11["metadata"])["id"] == "a"


def test_shipped_pool_matches_its_generator() -> None:
    built = build_pool(0)
    for name in ("numina_like.jsonl", "base_attempts.jsonl", "eval/aime_like.jsonl"):
        lines = (POOL / name).read_text().splitlines()
        assert [json.loads(line) for line in lines] == built[name], name
    import pyarrow.parquet as pq

    assert pq.read_table(POOL / "proofs.parquet").to_pylist() == built["proofs.parquet"]
    assert sum(len(v) for k, v in built.items()
               if not k.startswith("eval/") and k != "base_attempts.jsonl") == EXPECTED["loaded"]

"""The per-choice ``budget`` object through the real server (demo model, greedy).

Unit tests (tests/test_interventions.py) check the object against the token ids; here
the same object must arrive on chat and completions, streamed (in the
final chunk of each choice) and not, and agree with the text and usage it comes with.
"""

from __future__ import annotations

import httpx
import pytest

from tests.helpers import DEMO_HEADERS as HEADERS
from tests.helpers import DEMO_Q as Q
from tests.helpers import demo_chat as chat

pytestmark = pytest.mark.engine

# The README's example (README.md, "budget" object): greedy, so exact.
README_BUDGET = {"thinking_min": 16, "thinking_max": None, "thinking_waits": None,
                 "thinking_continuation": "Wait",
                 "thinking_tokens": 69, "answer_tokens": 10, "continuation_count": 1,
                 "continuations": [{"token": 15, "char": 15, "output_index": 15}],
                 "hit_max": False, "cut": None, "natural_end": True, "end": "natural",
                 "deadline": None, "early_stop": None, "probes": None}


def test_forced_continuation_is_reported_where_it_is(demo_server):
    r = chat(demo_server, thinking_min=16)
    b, msg = r["choices"][0]["budget"], r["choices"][0]["message"]
    assert b == README_BUDGET
    assert b["thinking_tokens"] == r["usage"]["completion_tokens_details"]["reasoning_tokens"]
    for m in b["continuations"]:
        assert msg["reasoning"][m["char"]:].startswith("Wait")
    assert 0 < b["answer_tokens"] < r["usage"]["completion_tokens"] - b["thinking_tokens"]
    streamed = chat(demo_server, stream=True, thinking_min=16)["choices"][0]
    assert streamed["budget"] == b and streamed["message"]["reasoning"] == msg["reasoning"]


def test_cut_is_reported(demo_server):
    r = chat(demo_server, thinking_max=6)
    b, msg = r["choices"][0]["budget"], r["choices"][0]["message"]
    assert b["hit_max"] and b["end"] == "cut" and b["thinking_tokens"] == 6
    assert b["cut"]["token"] == 6 and b["cut"]["char"] == len(msg["reasoning"])
    assert msg["content"].startswith("Final Answer:")
    assert chat(demo_server, stream=True, thinking_max=6)["choices"][0]["budget"] == b


def test_completions_carry_it_too(demo_server):
    prompt = ("<|im_start|>user\n" + Q + "<|im_end|>\n<|im_start|>assistant\n"
              "<|im_start|>think\n")
    r = httpx.post(demo_server.base_url + "/v1/completions", headers=HEADERS, timeout=120,
                   json={"prompt": prompt, "temperature": 0, "thinking_max": 4})
    b = r.json()["choices"][0]["budget"]
    assert b["hit_max"] and b["thinking_tokens"] == 4 and b["thinking_max"] == 4

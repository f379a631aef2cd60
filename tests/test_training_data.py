"""SFT data: reading the s1K layouts, s1 formatting through the chat template, exact masks.

The mask test walks the tokens one by one: every token of the system and user turns and of
the assistant header has label -100, and from the first token of the assistant content
(`<|im_start|>` of `<|im_start|>think`) to the end every label equals its input id.
"""

from __future__ import annotations

import json

import pytest
from transformers import AutoTokenizer

from training.data import IGNORE
from training.formatting import (
    SFTDataset,
    TemplateError,
    encode,
    encode_all,
    generation_prompt,
    open_thinking_template,
    s1_answer,
    s1_content,
)
from training.sources import Triple, choose_columns, load_triples
from training.tiny import QWEN_SYSTEM, build_tiny_checkpoint

TRIPLE = Triple("How many r in raspberry?", "r 1\na 1\ns 1\np 1\nb 1\ne 1\nr 2\nr 3\ny 3",
                "3")


@pytest.fixture(scope="module", params=["s1", "s1-open"])
def tiny_dir(request, tmp_path_factory):
    return build_tiny_checkpoint(tmp_path_factory.mktemp(request.param), request.param)


@pytest.fixture
def tokenizer(tiny_dir):
    return AutoTokenizer.from_pretrained(tiny_dir)


@pytest.mark.parametrize("system", [None, "Be brief."])
def test_label_mask_boundaries_token_by_token(tokenizer, system):
    ex = encode(tokenizer, TRIPLE, system)
    ids, labels = ex.input_ids.tolist(), ex.labels().tolist()
    sys_text = system if system is not None else QWEN_SYSTEM
    prompt = (f"<|im_start|>system\n{sys_text}<|im_end|>\n"
              f"<|im_start|>user\n{TRIPLE.question}<|im_end|>\n<|im_start|>assistant\n")
    content = ("<|im_start|>think\n" + TRIPLE.thinking + "\n<|im_start|>answer\nAnswer: 3")
    # the two parts, exactly as the template renders them
    assert tokenizer.decode(ids[: ex.prompt_len]) == prompt
    assert tokenizer.decode(ids[ex.prompt_len:]) == content + "<|im_end|>\n"
    # token by token: masked up to the boundary, identical after it
    for i, (tok, lab) in enumerate(zip(ids, labels, strict=True)):
        assert lab == (IGNORE if i < ex.prompt_len else tok), i
    first = tokenizer.convert_ids_to_tokens(ids[ex.prompt_len])
    assert first == "<|im_start|>"
    assert tokenizer.decode(ids[ex.prompt_len: ex.prompt_len + 3]).startswith("<|im_start|>th")
    assert tokenizer.decode(ids[ex.prompt_len - 1]).endswith("\n")  # "assistant\n" is masked
    assert tokenizer.convert_ids_to_tokens(ids[-2]) == "<|im_end|>"
    # the split tokenization equals tokenizing the whole rendered conversation
    whole = tokenizer.apply_chat_template(
        [*([{"role": "system", "content": system}] if system else []),
         {"role": "user", "content": TRIPLE.question},
         {"role": "assistant", "content": content}], tokenize=False)
    assert whole == prompt + content + "<|im_end|>\n"
    assert tokenizer.encode(whole, add_special_tokens=False) == ids


def test_training_prompt_matches_what_the_server_sends(tokenizer):
    """After the open-thinking template, the served prompt is a prefix of the training text."""
    ex = encode(tokenizer, TRIPLE)
    opened = generation_prompt(tokenizer).endswith("<|im_start|>think\n")
    tokenizer.chat_template = open_thinking_template(tokenizer)
    served = tokenizer.apply_chat_template([{"role": "user", "content": TRIPLE.question}],
                                           tokenize=False, add_generation_prompt=True)
    assert served.endswith("<|im_start|>assistant\n<|im_start|>think" + ("\n" if opened else ""))
    assert tokenizer.decode(ex.input_ids.tolist()).startswith(served)


def test_answer_prefix_is_not_doubled():
    assert s1_content("t", "42").endswith("<|im_start|>answer\nAnswer: 42")
    assert s1_content("t", "Answer: 42").endswith("<|im_start|>answer\nAnswer: 42")
    assert s1_content("t", "The answer is 42").endswith("Answer: The answer is 42")


def test_answer_prefix_is_added_only_when_answer_appears_nowhere():
    """s1 checks the whole attempt for "Answer:", not only its start (issue 15, item 7)."""
    attempt = "We add 2 and 2.\nAnswer: 4"
    assert s1_content("t", attempt) == "<|im_start|>think\nt\n<|im_start|>answer\n" + attempt
    assert s1_answer("  so the Final Answer: 7") == "  so the Final Answer: 7"
    assert s1_answer("answer: 7") == "Answer: answer: 7"  # case-sensitive, as in s1
    assert s1_answer("Answer 7") == "Answer: Answer 7"  # needs the colon


def test_overlong_examples_are_reported_then_dropped_or_cut(tokenizer):
    short = Triple("q?", "a b", "1")
    long = Triple("q?", " ".join(["word"] * 200), "1")
    lengths = [len(encode(tokenizer, t)) for t in (short, long)]
    block = lengths[0] + 5
    kept, rep = encode_all(tokenizer, [short, long, long], block, "drop")
    assert (rep.total, rep.overlong, rep.kept, len(kept)) == (3, 2, 1, 1)
    assert rep.overlong_share == pytest.approx(2 / 3)
    assert "2 (66.7%) longer than block_size" in rep.summary() and "dropped" in rep.summary()
    kept, rep = encode_all(tokenizer, [short, long], block, "truncate")
    assert rep.overlong == 1 and rep.kept == 2 and max(len(e) for e in kept) == block
    assert "truncated" in rep.summary()
    cut = kept[1]
    assert cut.prompt_len == encode(tokenizer, long).prompt_len  # the mask survives the cut
    kept, rep = encode_all(tokenizer, [long], 4, "truncate")  # the prompt alone is too long
    assert rep.unusable == 1 and not kept
    item = SFTDataset(encode_all(tokenizer, [short], 10_000)[0])[0]
    assert len(item["input_ids"]) == len(item["labels"])


def test_open_thinking_template(tokenizer, tmp_path):
    from server.budget.formats import detect_format

    opened = generation_prompt(tokenizer).endswith("<|im_start|>think\n")
    template = open_thinking_template(tokenizer)
    tokenizer.chat_template = template
    # as the s1 harness's prompt: the start delimiter, no newline (the model writes it); a
    # template that opens the block already is kept as it is
    assert generation_prompt(tokenizer).endswith(
        "<|im_start|>assistant\n<|im_start|>think" + ("\n" if opened else ""))
    assert open_thinking_template(tokenizer) == template  # idempotent
    assert detect_format(tokenizer).name == "s1"
    tokenizer.chat_template = None
    with pytest.raises(TemplateError):
        open_thinking_template(tokenizer)


# ------------------------------------------------------------------ sources
S1K_ROW = {"question": "Q1", "solution": "3", "cot_type": "math", "source_type": "x",
           "metadata": "{}", "cot": None, "thinking_trajectories": ["step one", "step two "],
           "attempt": "3"}
S11_ROW = {"question": "Q2", "solution": "4", "gemini_thinking_trajectory": "gem think",
           "gemini_attempt": "gem 4", "deepseek_thinking_trajectory": "ds think",
           "deepseek_attempt": "ds 4", "gemini_grade": "Yes", "deepseek_grade": "Yes"}


def test_s1k_layout_from_jsonl(tmp_path):
    path = tmp_path / "s1k.jsonl"
    path.write_text(json.dumps(S1K_ROW) + "\n" + json.dumps({**S1K_ROW, "attempt": ""}) + "\n")
    loaded = load_triples(path)
    assert loaded.triples == [Triple("Q1", "step one\nstep two", "3")]
    assert (loaded.thinking_column, loaded.attempt_column) == ("thinking_trajectories", "attempt")
    assert (loaded.rows, loaded.skipped) == (2, 1)


def test_s1k_11_layout_picks_the_requested_trace(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = tmp_path / "s1k11.parquet"
    pq.write_table(pa.Table.from_pylist([S11_ROW]), path)
    assert load_triples(path).triples == [Triple("Q2", "ds think", "ds 4")]  # auto: deepseek
    assert load_triples(path, trace="gemini").triples == [Triple("Q2", "gem think", "gem 4")]
    explicit = load_triples(path, thinking_column="gemini_thinking_trajectory",
                            attempt_column="deepseek_attempt")
    assert explicit.triples == [Triple("Q2", "gem think", "ds 4")]
    with pytest.raises(ValueError, match="thinking_trajectories"):
        load_triples(path, trace="s1k")


def test_datasets_directory_and_build_output(tmp_path):
    from datasets import Dataset, DatasetDict

    from training.demo_data import build_splits, write_jsonl

    DatasetDict({"train": Dataset.from_list([S11_ROW])}).save_to_disk(str(tmp_path / "dsdict"))
    assert load_triples(tmp_path / "dsdict", trace="gemini").triples[0].thinking == "gem think"
    Dataset.from_list([S1K_ROW]).save_to_disk(str(tmp_path / "ds"))
    assert load_triples(tmp_path / "ds").triples[0].question == "Q1"
    train, evaluation = build_splits(5, 2, 0)  # datasets_build output: train.jsonl + eval.jsonl
    write_jsonl(train, tmp_path / "built" / "train.jsonl")
    write_jsonl(evaluation, tmp_path / "built" / "eval.jsonl")
    loaded = load_triples(tmp_path / "built")
    assert [t.question for t in loaded.triples] == [r.question for r in train]
    assert load_triples(tmp_path / "built", split="eval").rows == 2


def test_datasets_build_export_output(tmp_path):
    """s1-data's export directory: train.parquet beside report.json, teachers by name."""
    from datasets_build.export import to_layout
    from datasets_build.tables import Table, write_table

    row = {"question": "Q3", "solution": "5", "cot_type": "math", "source_type": "s",
           "metadata": "{}", "qwen_thinking": "qwen think", "qwen_attempt": "5",
           "r1_thinking": "r1 think", "r1_attempt": "five"}
    for layout, teachers in (("s1k", ["qwen"]), ("s1k-1.1", ["qwen", "r1"])):
        out = tmp_path / layout
        write_table(Table([to_layout(row, layout, teachers, [])], {}), out / "train.parquet")
        (out / "report.json").write_text("{}")
        if layout == "s1k":
            assert load_triples(out).triples == [Triple("Q3", "qwen think", "5")]
        else:
            with pytest.raises(ValueError, match="--trace"):
                load_triples(out)  # two unknown teachers: ambiguous
            assert load_triples(out, trace="r1").triples == [Triple("Q3", "r1 think", "five")]


def test_missing_data_and_columns_are_explained(tmp_path):
    with pytest.raises(FileNotFoundError):
        load_triples(tmp_path / "nope.jsonl")
    with pytest.raises(ValueError, match="cannot pick a trace"):
        choose_columns(["question", "text"])
    with pytest.raises(ValueError, match="claude_thinking_trajectory"):
        choose_columns(["question", "text"], trace="claude")
    (tmp_path / "a.jsonl").write_text("")
    (tmp_path / "b.jsonl").write_text("")
    with pytest.raises(FileNotFoundError, match="train"):
        load_triples(tmp_path)

"""datasets_build's stage rules without a model server, i.e. which questions survive and
with what labels: collection (every drop reason counted on the pool, cross-source near
duplicates, 8-gram decontamination), quality (formatting checks, the s1 marker, split
thinking, missing answers, Asymptote figures outside AIME), grading (machine grading,
the judge's prompt and verdict, ungraded questions kept out of the difficulty stage) and
domains (MSC codes).
"""

from __future__ import annotations

import json
from pathlib import Path

from datasets_build.checks import ascii_art, broken_numbering, missing_image
from datasets_build.collect import run_collect
from datasets_build.config import load_config
from datasets_build.decontam import Decontaminator
from datasets_build.domains import msc_codes, parse_code
from datasets_build.judging import clean_math, free_text, machine_grade, parse_verdict
from datasets_build.schema import question_id
from datasets_build.tables import Table
from datasets_build.thinking import split_thinking
from tests.pool import EXPECTED

POOL = Path(__file__).parent / "data" / "pool"
CONFIG = POOL / "pipeline.yaml"


def test_collect_on_the_pool_counts_every_reason(tmp_path: Path) -> None:
    cfg = load_config(CONFIG)
    table, stats, removed = run_collect(cfg.collect)
    assert stats.rows_in == EXPECTED["loaded"]
    expect = dict(EXPECTED["collect"])
    assert stats.rows_out == len(table.rows) == expect.pop("out")
    assert dict(stats.dropped) == expect
    assert len(removed) == sum(expect.values())
    assert len({r["id"] for r in table.rows}) == len(table.rows)
    contaminated = [r for r in removed if r["reason"].startswith("contaminated")]
    assert all("shares" in r["detail"] for r in contaminated)
    first = table.rows[0]
    assert first["answer"] and first["source_type"].startswith("numina_like/")
    assert json.loads(first["metadata"])["msc"]


def test_cross_source_near_duplicates_are_dropped(tmp_path: Path) -> None:
    """The same problem through two sources with a changed preamble: exact dedup keeps both,
    8-gram dedup drops the second source's copy; a same-source variant stays."""
    from datasets_build.config import Collect, Source

    stem = "Find the number of ordered pairs of positive integers (a, b) with a + b = 30."
    a = [{"problem": stem, "answer": "29"},
         {"problem": "Find the number of ordered pairs of positive integers (a, b) with "
                     "a + b = 40.", "answer": "39"}]
    b = [{"problem": "Problem 3 (2019). " + stem.replace("30", "30 ."), "answer": "29"},
         {"problem": "What is the sum of the first ten primes?", "answer": "129"}]
    for name, rows in (("a.jsonl", a), ("b.jsonl", b)):
        (tmp_path / name).write_text("".join(json.dumps(r) + "\n" for r in rows))
    sources = [Source(path=tmp_path / n, source_type=n[0]) for n in ("a.jsonl", "b.jsonl")]
    table, stats, removed = run_collect(Collect(sources=sources, dedup="ngram"))
    assert [r["answer"] for r in table.rows] == ["29", "39", "129"]
    assert dict(stats.dropped) == {"near_duplicate": 1}
    assert "with a row" in removed[0]["detail"]
    table, stats, _ = run_collect(Collect(sources=sources, dedup="exact"))
    assert len(table.rows) == 4 and not stats.dropped


def test_decontamination_uses_8_grams() -> None:
    d = Decontaminator(8)
    d.add("ev", ["Find the number of ordered pairs of positive integers whose sum is 10.",
                 "What is 2 + 2?"])
    assert d.match("Find the NUMBER of ordered pairs, of positive integers, with product 6.")
    assert d.match("Find the number of ordered triples of positive integers.") is None
    assert d.match("what is 2+2") is not None  # shorter than n: compared whole
    assert d.match("What is 2 + 2 + 2?") is None


def test_formatting_checks() -> None:
    assert ascii_art("Count:\n+--+--+\n|  |  |\n+--+--+")
    assert ascii_art("A table:\n| a | b |\n|---|---|\n| one | two |") is None
    assert missing_image("As shown in the figure, ABCD is a square.")
    assert missing_image("See the image: ![x](a.png)")
    assert missing_image("[asy] draw((0,0)--(1,1)); [/asy] As shown in the figure...") is None
    assert missing_image("Find the area of the square with side 3.") is None
    assert broken_numbering("Parts:\n1. first\n2. second\n4. fourth")
    assert broken_numbering("Which? (A) 1 (B) 2 (D) 3")
    assert broken_numbering("Which? (A) 1 (B) 2 (C) 3 (D) 4") is None
    assert broken_numbering("(i) x (ii) y (iii) z") is None
    assert broken_numbering("Let f(x) = (2) + g(3), and (1) holds by (2).") is None


def test_s1_marker_check() -> None:
    from datasets_build.checks import s1_markers

    assert "Image" in s1_markers("Find x. ![Image] Then y.")
    assert "p12." in s1_markers("p12. Find all primes p.")
    assert s1_markers("Part **2a** asks for the sum.")
    assert s1_markers("Find p. Then p2 + 1 is prime.") is None  # "p2 " has no dot
    assert s1_markers("The **largest** value of x is?") is None  # no digit in the bold
    assert s1_markers("Let p0. be the start") is None  # s1 checks p1 ... p999


def test_split_thinking() -> None:
    assert split_thinking("42", " because ") == ("because", "42")
    assert split_thinking("<think>hmm</think>The answer is 3", None) == ("hmm", "The answer is 3")
    assert split_thinking("hmm\n</think>\n3", None) == ("hmm", "3")
    text = "<|im_start|>think\nsteps\n<|im_start|>answer\nAnswer: 5"
    assert split_thinking(text, "") == ("steps", "Answer: 5")
    assert split_thinking("[[a]] b", None, [("[[", "]]")]) == ("a", "b")
    assert split_thinking("just text", None) == ("", "just text")


def test_quality_drops_missing_answers_and_asy_outside_aime() -> None:
    from datasets_build.config import Quality
    from datasets_build.quality import reasons

    base = {"id": "1", "question": "Find x. [asy] draw((0,0)--(1,1)); [/asy]",
            "answer": "2", "source_type": "numina/olympiads", "t_thinking": "hm",
            "t_attempt": "2"}
    assert [r for r, _ in reasons(base, ["t"], Quality())] == ["asy_figure"]
    assert reasons({**base, "source_type": "qq8933/AIME_1983_2024"}, ["t"], Quality()) == []
    assert reasons({**base, "source_type": "x/aime"}, ["t"], Quality(drop_asy=False)) == []
    plain = {**base, "question": "Find x.", "answer": " "}
    assert [r for r, _ in reasons(plain, ["t"], Quality())] == ["missing_answer"]
    assert reasons(plain, ["t"], Quality(drop_missing_answer=False)) == []


def test_machine_grade_and_free_text() -> None:
    assert machine_grade("so \\boxed{\\frac{1}{2}}", "0.5").correct is True
    assert machine_grade("Answer: (C)", "C").correct is True
    assert machine_grade("\\boxed{24}", "23").correct is False
    assert machine_grade("no answer here", "23").correct is False
    assert machine_grade("Final Answer: wor 48 27es13 reas", "27").correct is False
    assert machine_grade("Answer: Alice", "Alice").correct is True
    assert machine_grade("I think Alice", "Alice") is None  # needs a judge
    assert machine_grade("\\boxed{3}", "").correct is None
    assert free_text("Tuesday") and free_text("no") and free_text("no such function exists")
    assert not free_text("\\frac{3}{4}") and not free_text("x^2 + 1") and not free_text("B")
    assert clean_math("\\frac{\\sqrt{3}}{2}") and clean_math("x = 5")
    assert clean_math("2 \\text{ cm}")
    assert not clean_math("4 2 8") and not clean_math("letters 12") and not clean_math("4\x02")
    assert parse_verdict("**YES**") is True and parse_verdict("Verdict: no.") is False
    assert parse_verdict("yes, because") is None


class _FakeJudge:
    """A ModelCaller stand-in that answers every chat with a fixed reply, keeping prompts."""

    def __init__(self, reply: str) -> None:
        self.reply, self.prompts = reply, []

    async def chat(self, gen, messages, seed=None):
        from datasets_build.calls import Reply

        self.prompts.append(messages[-1]["content"])
        return Reply(ok=True, answer=self.reply)


def test_judge_sees_the_full_solution_and_reasons_first() -> None:
    """s1's grading: the judge gets the whole reference solution (proofs included), reasons,
    and its verdict is the last line."""
    import asyncio

    from datasets_build import prompts
    from datasets_build.config import Generation, Judge
    from datasets_build.judging import grade_text

    judge = Judge(gen=Generation(endpoint="j", prompt=prompts.JUDGE), retries=0)
    proof = "Suppose sqrt 2 = p/q in lowest terms; then p and q are both even."
    fake = _FakeJudge("The attempt argues by parity like the reference.\n\n**Yes**")
    v = asyncio.run(grade_text(fake, judge, "r1", "Prove sqrt 2 is irrational.", "",
                               "Assume p/q ... contradiction.", solution=proof))
    assert v.correct is True and proof in fake.prompts[0] and "## Attempt" in fake.prompts[0]
    # a free-text answer: the judge's reference is the solution, not only the short answer
    fake = _FakeJudge("Different day.\nNo")
    v = asyncio.run(grade_text(fake, judge, "r2", "Which day?", "Tuesday", "I think Monday",
                               solution="Counting 9 days on from Sunday gives Tuesday."))
    assert v.correct is False and "Counting 9 days" in fake.prompts[0]
    # no judge: unknown, never "solved"
    v = asyncio.run(grade_text(None, None, "r3", "Prove it.", "", "Proof.", solution=proof))
    assert v.correct is None and "no reference answer" in v.reason
    # a machine "wrong" that only means "no clean final answer" goes to the judge
    fake = _FakeJudge("The attempt says 7 in words, which is right.\nYes")
    v = asyncio.run(grade_text(fake, judge, "r4", "3+4?", "7", "It is seven.", solution="7"))
    assert v.correct is True and len(fake.prompts) == 1
    v = asyncio.run(grade_text(fake, judge, "r5", "3+4?", "7", "\\boxed{8}", solution="7"))
    assert v.correct is False and len(fake.prompts) == 1  # a clean wrong answer: no judge
    all_judge = Judge(gen=Generation(endpoint="j", prompt=prompts.JUDGE), retries=0,
                      grade_all=True)
    v = asyncio.run(grade_text(fake, all_judge, "r6", "3+4?", "7", "\\boxed{8}", solution="7"))
    assert v.correct is True and len(fake.prompts) == 2  # s1: the judge grades everything
    assert parse_verdict("Reasoning here.\nYes") is True
    assert parse_verdict("Yes, I think so.\nBut no") is None


def test_ungraded_questions_do_not_survive_difficulty(tmp_path: Path) -> None:
    """Two base-model attempts per question: solved -> dropped as solved; wrong -> kept; a
    free-text answer without a verdict -> dropped as ungraded (s1), kept with ungraded: keep."""
    import asyncio

    from datasets_build.config import BaseModelSpec, Difficulty
    from datasets_build.difficulty import run_difficulty
    from training.tiny import build_tokenizer

    tok = tmp_path / "tok"
    build_tokenizer(tok)
    attempts = tmp_path / "attempts.jsonl"
    qs = {"q-solved": ("What is 2+2?", "4", "\\boxed{4}"),
          "q-wrong": ("What is 3+3?", "6", "\\boxed{7}"),
          "q-free": ("Which day follows Monday?", "Tuesday", "I believe Wednesday")}
    attempts.write_text("".join(json.dumps({"question": q, "attempt": a}) + "\n"
                                for q, _, a in qs.values()))
    rows = [{"id": question_id(q), "question": q, "answer": gold, "solution": gold,
             "source_type": "x", "t_thinking": "hm", "t_attempt": gold}
            for q, gold, _ in qs.values()]
    table = Table(rows, {"teachers": ["t"]})

    class NoCalls:
        async def map(self, items, work, label):
            return [await work(i) for i in items]

        def stats(self):
            return {}

    for policy, kept in (("drop", ["What is 3+3?"]),
                         ("keep", ["What is 3+3?", "Which day follows Monday?"])):
        cfg = Difficulty(tokenizer=str(tok), base_models=[BaseModelSpec(name="b", attempts=attempts)],
                         grade_teachers=False, ungraded=policy)
        out, stats, removed = asyncio.run(run_difficulty(table, cfg, NoCalls()))
        assert [r["question"] for r in out.rows] == kept, policy
        assert stats.dropped["solved:b"] == 1
        assert stats.dropped.get("ungraded:b", 0) == (1 if policy == "drop" else 0)


def test_msc_codes_and_parsing() -> None:
    codes = msc_codes()
    # s1's data/msc.json: 61 areas, 00 and 01 left out
    assert len(codes) == 61 and codes["11"] == "Number theory"
    assert "00" not in codes and "01" not in codes and codes["19"] == "$K$-theory"
    assert parse_code("11") == parse_code("MSC 11") == parse_code("11 - Number theory") == "11"
    assert parse_code("**60**.") == "60" and parse_code("Number theory") == "11"
    for bad in ("02", "00", "11 Geometry", "number 11", "", "12 78 48", "1"):
        assert parse_code(bad) is None, bad


def test_domain_reply_reasons_before_the_code() -> None:
    from datasets_build import prompts
    from datasets_build.domains import codes_text, parse_domain_reply

    reply = "It counts lattice paths, a counting problem.\nDomain: 05"
    assert parse_domain_reply(reply) == "05"
    assert parse_domain_reply("Primes mod 4 are number theory.\n**Domain: 11 Number theory**") \
        == "11"
    assert parse_domain_reply("11") == "11"  # a bare code still reads
    assert parse_domain_reply("Domain: 05\nActually I am unsure.") is None  # code not last
    assert parse_domain_reply("Domain: 02") is None  # not an MSC area
    assert "{codes}" in prompts.DOMAIN and "Domain:" in prompts.DOMAIN
    blocks = codes_text().split("\n\n")
    assert len(blocks) == 61
    assert blocks[1] == ("### Combinatorics\n* Code: 05\n* Description: Enumerative "
                         "combinatorics; Designs and configurations; Graph theory; Extremal "
                         "combinatorics; Algebraic combinatorics")

"""s1_common.grading: answer extraction and judge-free grading on a table of tricky answers."""

from __future__ import annotations

import threading

import pytest

from s1_common.grading import extract_answer, grade, infer_kind, normalize_choice

EXTRACT = [
    ("so the answer is \\boxed{42}.", "42"),
    ("\\boxed{\\frac{1}{2}}", "\\frac{1}{2}"),                      # braces nested in \boxed
    ("first \\boxed{1}, on reflection \\boxed{2}", "2"),             # the last box wins
    ("\\boxed{\\boxed{7}}", "7"),                                    # a box in a box
    ("$\\boxed{\\{1,2\\}}$", "\\{1,2\\}"),                           # escaped braces
    ("\\boxed{\\text{(B)}}", "\\text{(B)}"),
    ("\\boxed 5", "5"),
    ("\\fbox{8}", "8"),
    ("Answer: 23", "23"),
    ("answer: 12", "12"),
    ("Final Answer: $\\frac{3}{4}$", "\\frac{3}{4}"),
    ("**Answer:** C", "C"),
    ("**Answer**: C", "C"),
    ("Answer: (D)", "(D)"),
    ("Answer:\n  17", "17"),                                         # answer on the next line
    ("Final Answer: The final answer is $5$. I hope it is correct.", "5"),
    ("Final Answer: The final answer is $\\boxed{10}$. I hope it is correct.", "10"),
    ("Answer: \\boxed{9}", "9"),
    ("Answer: 1 then \\boxed{3}", "3"),                              # box after the marker
    ("\\boxed{3} ... on second thought\nAnswer: 4", "4"),            # marker after the box
    ("Answer: 10 \\text{ cm}", "10 \\text{ cm}"),
    ("I think it is 5", None),
    ("\\boxed{unbalanced", None),
    ("\\boxed{}", None),
    ("", None),
    (None, None),
]


@pytest.mark.parametrize(("text", "expected"), EXTRACT)
def test_extract_answer(text: str | None, expected: str | None) -> None:
    assert extract_answer(text) == expected


GRADE = [
    # integers (AIME): leading zeros, commas, decimals that are integers, "x =", expressions
    ("023", "23", "integer", True),
    ("23", "023", "integer", True),
    ("23.0", "23", "integer", True),
    ("1,000", "1000", "integer", True),
    ("x = 5", "5", "integer", True),
    ("\\frac{46}{2}", "23", "integer", True),
    ("\\sqrt{4}", "2", "integer", True),
    ("5.5", "5", "integer", False),
    ("24", "23", "integer", False),
    ("abc", "5", "integer", None),
    # math expressions (MATH500): fractions, \frac variants, radicals, units, degrees, tuples
    ("0.5", "\\frac{1}{2}", "math", True),
    ("\\dfrac{1}{2}", "1/2", "math", True),
    ("\\tfrac34", "\\frac{3}{4}", "math", True),
    ("\\frac{\\sqrt{3}}{2}", "\\frac{\\sqrt3}{2}", "math", True),
    ("10\\text{ cm}", "10", "math", True),
    ("10 cm", "10", "math", True),
    ("90^\\circ", "90", "math", True),
    ("\\$18.90", "18.90", "math", True),
    ("(3, \\pi/2)", "\\left( 3, \\frac{\\pi}{2} \\right)", "math", True),
    ("x=2", "2", "math", True),
    ("\\text{Evelyn}", "\\text{Evelyn}", "math", True),
    ("Evelyn", "\\text{Evelyn}", "math", True),
    ("0.3", "\\frac{1}{3}", "math", False),
    ("3", "2", "math", False),
    # multiple choice (GPQA): wrappers around the letter
    ("C", "C", "choice", True),
    ("(C)", "C", "choice", True),
    ("c", "C", "choice", True),
    ("\\text{(B)}", "B", "choice", True),
    ("**D**", "D", "choice", True),
    ("B) 42", "B", "choice", True),
    ("A", "C", "choice", False),
    ("42", "A", "choice", None),
    ("A cat", "A", "choice", None),
    # auto picks the kind from the gold answer
    ("(b)", "B", "auto", True),
    ("007", "7", "auto", True),
    ("\\frac{2}{4}", "\\frac12", "auto", True),
    # nothing extracted: ungradable, whatever the kind
    (None, "5", "integer", None),
    ("   ", "\\frac12", "math", None),
    (None, "A", "choice", None),
]


@pytest.mark.parametrize(("predicted", "gold", "kind", "expected"), GRADE)
def test_grade(predicted: str | None, gold: str, kind: str, expected: bool | None) -> None:
    assert grade(predicted, gold, kind) is expected  # type: ignore[arg-type]


def test_extract_then_grade() -> None:
    reply = "We get $\\frac{6}{8}$.\n\nFinal Answer: The final answer is $\\boxed{\\dfrac34}$."
    assert grade(extract_answer(reply), "\\frac{3}{4}", "math") is True
    assert grade(extract_answer("Answer: $\\textbf{(A)}$"), "A", "choice") is True


def test_infer_kind_and_choice() -> None:
    assert [infer_kind(g) for g in ("B", "042", "\\frac12", "x^2")] == \
        ["choice", "integer", "math", "math"]
    assert normalize_choice("$\\text{(c)}$") == "C"
    assert normalize_choice("none of these") is None


def test_unknown_kind() -> None:
    with pytest.raises(ValueError, match="unknown kind"):
        grade("1", "1", "fuzzy")  # type: ignore[arg-type]


def test_grade_in_a_thread() -> None:
    """math-verify's signal timeouts only work in the main thread; grading must not crash."""
    out: list[bool | None] = []
    worker = threading.Thread(target=lambda: out.append(grade("0.5", "\\frac{1}{2}", "math")))
    worker.start()
    worker.join()
    assert out == [True]

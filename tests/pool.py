"""The tests' small seeded question pool for the pipeline (``python -m tests.pool OUT_DIR``).

Why generated: the tests need a pool whose funnel is known in advance, with every kind of
problem the stages must catch, in every input format the collector reads. All questions
are written from templates with seeded numbers and have known answers. What is in it:

=====================  =======  =====================================================
file                   format   contents
=====================  =======  =====================================================
numina_like.jsonl      jsonl    math with integer/fraction answers, MSC labels, 8
                                duplicates, 6 copies of AIME-like eval questions,
                                4 ASCII-art, 4 missing-image, 4 broken-numbering and 4
                                over-long questions (longer than a 1,024-token context)
science_mcq.csv        csv      multiple choice (letter answers), 2 empty rows, 4 GPQA-
                                like copies, 2 broken option letters, 2 missing images,
                                2 over-long
proofs.parquet         parquet  free-text answers (judge path), 2 ASCII-art
puzzles/               datasets brain-teasers, 6 of source_type puzzles/hard
                                (pre-selection), 8 duplicates of other sources
eval/*.jsonl           jsonl    the evaluation sets to decontaminate against
base_attempts.jsonl    jsonl    precomputed base-model attempts: 24 correct (those
                                questions are "solved"), 8 wrong, 4 free-text
                                paraphrases that only a judge could accept
=====================  =======  =====================================================

:data:`EXPECTED` is the funnel this pool gives when no model solves or breaks anything
more (true for a random tiny model: its answers are never right). The shipped copy is
``tests/data/pool``; ``python -m tests.pool tests/data/pool`` writes it again (seed 0), and
test_datasets_build_config.py checks that the two agree.
"""

from __future__ import annotations

import argparse
import json
import math
import random
from collections.abc import Callable
from fractions import Fraction
from pathlib import Path
from typing import Any

Item = dict[str, Any]

EXPECTED = {
    "loaded": 252,
    "collect": {"empty_question": 2, "duplicate": 16, "contaminated:aime_like": 6,
                "contaminated:gpqa_like": 4, "out": 224},
    "quality": {"api_error": 6, "ascii_art": 6, "missing_image": 6, "broken_numbering": 6,
                "out": 200},
    "difficulty": {"solved:reference": 24, "out": 176},
    "domains": {"label": 84, "unknown": 92},
    "preselect": 6,
}

AIME_LIKE = [
    "Let S be the set of lattice points strictly inside the circle x^2 + y^2 = 100. "
    "Find the number of points of S that lie on the line y = 2x + 1.",
    "A frog begins at the origin and makes jumps of length exactly five units, landing "
    "only on lattice points. Find the least number of jumps needed to reach (1, 0).",
    "Find the remainder when the product of the first twenty odd positive integers is "
    "divided by one thousand.",
    "Triangle ABC has sides of length thirteen, fourteen and fifteen. A point P inside it "
    "has equal distances to all three sides. Find the square of the distance from P to A.",
    "The sequence of positive integers a_1, a_2, a_3 satisfies a_(n+2) = a_(n+1) + a_n "
    "and a_7 = 120. Find the value of a_8 under these conditions.",
    "A jar holds red marbles and blue marbles in the ratio three to five. After twelve "
    "red marbles are added the ratio becomes one to one. Find the number of blue marbles.",
    "Find the number of ordered pairs of positive integers whose least common multiple "
    "equals two hundred and whose greatest common divisor equals ten.",
    "Each vertex of a regular octagon is colored either crimson or teal at random. Find "
    "the probability that no two adjacent vertices share a color, as m over n.",
    "Call a positive integer balanced if the sum of its digits in base seven equals the "
    "sum of its digits in base nine. Find the smallest balanced integer above fifty.",
    "A cylindrical tank with radius three meters is filled by two pipes working together "
    "in forty minutes. Find the height of the water after twenty minutes in centimeters.",
]

GPQA_LIKE = [
    "A spin one half particle is prepared in the eigenstate of the x component of spin "
    "and then measured along z. Which statement about the outcomes is correct?",
    "An enzyme follows Michaelis Menten kinetics and a competitive inhibitor is added to "
    "the solution. Which kinetic parameter changes while the maximum velocity stays fixed?",
    "In a diploid population at Hardy Weinberg equilibrium the recessive phenotype "
    "appears in nine percent of individuals. What fraction of individuals are carriers?",
    "A star of two solar masses leaves the main sequence and expands into a red giant. "
    "Which nuclear process dominates energy generation in its helium burning core?",
    "A conjugated diene reacts with a substituted dienophile under thermal conditions. "
    "Which stereochemical outcome is predicted by the endo rule for the major product?",
    "A parallel plate capacitor is charged and disconnected, then a dielectric slab is "
    "inserted halfway. Which quantity stays constant during the insertion of the slab?",
    "A monochromatic beam passes through two narrow slits separated by a small distance "
    "onto a distant screen. Which change doubles the spacing of the bright fringes seen?",
    "A weak acid with a dissociation constant near ten to the minus five is titrated with "
    "strong base. At which point of the titration does the pH equal the pKa of the acid?",
]


# --------------------------------------------------------------- math (jsonl)
def _frac(q: Fraction) -> str:
    return str(q.numerator) if q.denominator == 1 else f"\\frac{{{q.numerator}}}{{{q.denominator}}}"


def _math_templates() -> list[tuple[str, Callable[[random.Random], tuple[str, str]]]]:
    def remainder(r: random.Random) -> tuple[str, str]:
        a, b, m = r.randint(120, 999), r.randint(120, 999), r.randint(23, 97)
        return (f"What is the remainder when {a} times {b} is divided by {m}?", str(a * b % m))

    def divisors(r: random.Random) -> tuple[str, str]:
        n = r.randint(200, 5000)
        return (f"How many positive divisors does the integer {n} have?",
                str(sum(1 for d in range(1, n + 1) if n % d == 0)))

    def committee(r: random.Random) -> tuple[str, str]:
        n, k = r.randint(9, 20), r.randint(3, 5)
        return (f"A club has {n} members. In how many ways can a committee of {k} members "
                "be formed?", str(math.comb(n, k)))

    def hypotenuse(r: random.Random) -> tuple[str, str]:
        a, b = r.randint(5, 60), r.randint(5, 60)
        return (f"A right triangle has legs of lengths {a} and {b}. What is the square of the "
                "length of its hypotenuse?", str(a * a + b * b))

    def dice(r: random.Random) -> tuple[str, str]:
        s, d = r.randint(3, 11), r.choice([6, 8])
        ways = sum(1 for i in range(1, d + 1) for j in range(1, d + 1) if i + j == s)
        return (f"Two fair {d}-sided dice numbered 1 to {d} are rolled. What is the probability "
                f"that the two numbers shown add up to {s}? Express it as a common fraction.",
                _frac(Fraction(ways, d * d)))

    def roots(r: random.Random) -> tuple[str, str]:
        a, b, c = r.randint(2, 9), r.randint(10, 90), r.randint(10, 90)
        return (f"Find the product of the roots of the equation {a}x^2 + {b}x - {c} = 0.",
                _frac(Fraction(-c, a)))

    def series(r: random.Random) -> tuple[str, str]:
        n, a, d = r.randint(12, 40), r.randint(2, 30), r.randint(2, 9)
        return (f"Compute the sum of the first {n} terms of the arithmetic progression "
                f"{a}, {a + d}, {a + 2 * d}, and so on.", str(n * (2 * a + (n - 1) * d) // 2))

    def compose(r: random.Random) -> tuple[str, str]:
        a, b, c = r.randint(2, 9), r.randint(-20, 20), r.randint(2, 30)
        return (f"Let f(x) = {a}x + ({b}). Evaluate f(f({c})).", str(a * (a * c + b) + b))

    return [("11", remainder), ("11", divisors), ("05", committee), ("51", hypotenuse),
            ("60", dice), ("12", roots), ("40", series), ("26", compose)]


# ------------------------------------------------------------- science (csv)
def _mcq(r: random.Random) -> tuple[str, str, str]:
    kind = r.randrange(3)
    if kind == 0:
        d, t = r.randint(60, 900), r.randint(2, 9)
        right, subject = Fraction(d, t), "physics"
        stem = f"A train covers {d} km in {t} hours at a steady pace. What is its speed in km/h?"
    elif kind == 1:
        m = r.randint(20, 400)
        right, subject = Fraction(m, 18), "chemistry"
        stem = (f"How many moles of water are contained in {m} grams of water, using a molar "
                "mass of 18 grams per mole?")
    else:
        n, p = r.randint(50, 900), r.randint(2, 9)
        right, subject = Fraction(n * p, 10), "biology"
        stem = (f"A culture starts with {n} cells and {p} tenths of them divide once. How "
                "many new cells appear?")
    options = {right}
    while len(options) < 4:
        options.add(right + Fraction(r.choice([-3, -2, -1, 1, 2, 3]) * r.randint(1, 5), 1))
    shown = sorted(options)
    r.shuffle(shown)
    letters = "ABCD"
    text = " ".join(f"({letters[i]}) {round(float(v), 2):g}" for i, v in enumerate(shown))
    return f"{stem} {text}", letters[shown.index(right)], subject


# ----------------------------------------------------------- free text (parquet)
_WEEKDAYS = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"]


def _free(r: random.Random) -> tuple[str, str]:
    kind = r.randrange(3)
    if kind == 0:
        n = r.randint(10, 99)
        return (f"Alice and Bob share a pile of {n} stones and take turns, Alice first. Each "
                "turn removes one, two or three stones, and whoever takes the last stone wins. "
                "Which player can force a win?", "Bob" if n % 4 == 0 else "Alice")
    if kind == 1:
        d = r.randint(20, 400)
        return (f"Today is a Monday. Which day of the week will it be exactly {d} days from "
                "today?", _WEEKDAYS[d % 7])
    a, b, c = (r.randint(2, 30) for _ in range(3))
    ok = a + b > c and a + c > b and b + c > a
    return (f"Can a triangle have sides of lengths {a}, {b} and {c}? Answer yes or no, with a "
            "reason.", "yes" if ok else "no")


# -------------------------------------------------------------- puzzles (dir)
def _puzzle(r: random.Random) -> tuple[str, str]:
    kind = r.randrange(3)
    if kind == 0:
        ball, more = r.randint(5, 60), r.randint(100, 400)
        return (f"A bat and a ball cost {2 * ball + more} cents together. The bat costs {more} "
                "cents more than the ball. How many cents does the ball cost?", str(ball))
    if kind == 1:
        n = r.randint(5, 40)
        return (f"In a round-robin chess tournament each of {n} players meets every other "
                "player exactly once. How many games are played in total?", str(n * (n - 1) // 2))
    w, d = r.randint(3, 12), r.randint(30, 90)
    return (f"A snail climbs {w} feet up a well each day and slips back one foot each night. "
            f"The well is {d} feet deep. On which day does the snail reach the top?",
            str(max(1, math.ceil((d - w) / (w - 1)) + 1)))


# ------------------------------------------------------------- defects
def _ascii_art(r: random.Random) -> str:
    w = r.randint(3, 6)
    box = "+" + "---+" * w
    rows = "\n".join([box, "|" + "   |" * w, box, "|" + "   |" * w, box])
    return (f"Grid {r.randint(100, 999)}: how many rectangles of any size can be found in the "
            f"grid below?\n{rows}")


def _missing_image(r: random.Random, i: int) -> str:
    forms = [f"As shown in the figure, a circle of radius {r.randint(2, 20)} touches two "
             "sides of the square. Find the side of the square.",
             f"<image{i}> What is the measure of angle ABC in degrees if arc AC is "
             f"{r.randint(20, 160)} degrees?",
             f"Refer to the diagram: the shaded region has area {r.randint(10, 99)}. "
             "Find the radius of the inner circle.",
             f"![plot](figures/graph_{i}.png) Using the graph, find the slope of the line "
             f"through the marked point with x-coordinate {r.randint(2, 9)}."]
    return forms[i % len(forms)]


def _broken_numbering(r: random.Random, i: int) -> str:
    a, b = r.randint(2, 50), r.randint(2, 50)
    if i % 2 == 0:
        return (f"Answer the parts for the numbers {a} and {b}.\n1. Find their sum.\n"
                "2. Find their product.\n4. Find their difference.")
    return (f"Let x = {a} and y = {b}.\n2. Compute x + y.\n3. Compute x - y.")


def _overlong(r: random.Random, i: int) -> str:
    words = ["apple", "river", "stone", "cloud", "garden", "lantern", "meadow", "pepper"]
    story = " ".join(r.choice(words) for _ in range(700))
    return f"Count the words in the following story, number {i}: {story}. How many are there?"


def _vary(text: str, r: random.Random) -> str:
    """The same question after exact normalisation: changed spacing and case."""
    return "  " + text.upper().replace(" ", "  ") + " \n" if r.random() < 0.5 else \
        text.lower() + "   "


# ------------------------------------------------------------- building
def build_pool(seed: int = 0) -> dict[str, list[Item]]:
    """Every file's rows (keys are file names relative to the pool directory)."""
    r = random.Random(seed)
    seen: set[str] = set()

    def unique(make: Callable[[], tuple[Any, ...]]) -> tuple[Any, ...]:
        while True:
            item = make()
            if item[0] not in seen:
                seen.add(item[0])
                return item

    templates = _math_templates()
    numina: list[Item] = []
    for i in range(100):
        msc, make = templates[i % len(templates)]
        q, ans = unique(lambda make=make: make(r))
        numina.append({"problem": q, "solution": f"Working it out gives \\boxed{{{ans}}}.",
                       "source": f"numina_like/{make.__name__}", "msc": msc,
                       "difficulty": "easy" if i % 6 == 0 and i < 96 else "hard"})
    mcq = [dict(zip(("question", "answer", "subject"), unique(lambda: _mcq(r)), strict=True))
           for _ in range(40)]
    for i, row in enumerate(mcq):
        row["difficulty"] = "easy" if i % 10 == 0 else "hard"
    proofs = [dict(zip(("question", "answer"), unique(lambda: _free(r)), strict=True))
              for _ in range(30)]
    for i, row in enumerate(proofs):
        row["type"] = "free_text"
        row["difficulty"] = "easy" if i % 7 == 1 and i < 28 else ("near" if i % 7 == 3 else "hard")
    puzzles = [dict(zip(("question", "answer"), unique(lambda: _puzzle(r)), strict=True))
               for _ in range(30)]
    for i, row in enumerate(puzzles):
        row["kind"] = "puzzles/hard" if i < 6 else "puzzles/brainteaser"

    attempts = _attempts(numina, mcq, proofs)

    def math_row(q: str, ans: str = "7") -> Item:
        return {"problem": q, "solution": f"\\boxed{{{ans}}}", "source": "numina_like/defect",
                "msc": "05", "difficulty": "hard"}

    numina += [math_row(_ascii_art(r)) for _ in range(4)]
    numina += [math_row(_missing_image(r, i)) for i in range(4)]
    numina += [math_row(_broken_numbering(r, i)) for i in range(4)]
    numina += [math_row(_overlong(r, i), "700") for i in range(4)]
    numina += [math_row(q.replace("100", "121").replace("five", "seven").replace("twenty",
                                                                                 "thirty"), "12")
               for q in AIME_LIKE[:6]]
    numina += [{**row, "problem": _vary(row["problem"], r)} for row in numina[1:16:2]]
    mcq += [{"question": "", "answer": "A", "subject": "physics", "difficulty": "hard"}] * 2
    mcq += [{"question": q.replace("Which", "Which one") + " (A) one (B) two (C) three (D) four",
             "answer": "B", "subject": "physics", "difficulty": "hard"} for q in GPQA_LIKE[:4]]
    mcq += [{"question": f"Which number is largest? (A) {a} (B) {a + 1} (D) {a + 2}",
             "answer": "D", "subject": "physics", "difficulty": "hard"} for a in (17, 41)]
    mcq += [{"question": _missing_image(r, i) + " (A) 1 (B) 2 (C) 3 (D) 4", "answer": "C",
             "subject": "physics", "difficulty": "hard"} for i in (1, 3)]
    mcq += [{"question": _overlong(r, 10 + i) + " (A) 1 (B) 2 (C) 3 (D) 4", "answer": "A",
             "subject": "physics", "difficulty": "hard"} for i in range(2)]
    proofs += [{"question": _ascii_art(r), "answer": "many", "type": "free_text",
                "difficulty": "hard"} for _ in range(2)]
    copies = [numina[3]["problem"], numina[20]["problem"], numina[40]["problem"],
              mcq[5]["question"], mcq[25]["question"], proofs[4]["question"],
              proofs[12]["question"], puzzles[10]["question"]]
    puzzles += [{"question": _vary(q, r), "answer": "see source", "kind": "puzzles/brainteaser"}
                for q in copies]
    return {"numina_like.jsonl": numina, "science_mcq.csv": mcq, "proofs.parquet": proofs,
            "puzzles": puzzles, "eval/aime_like.jsonl": [
                {"problem": q, "answer": str(i)} for i, q in enumerate(AIME_LIKE)],
            "eval/gpqa_like.jsonl": [{"question": q} for q in GPQA_LIKE],
            "base_attempts.jsonl": attempts}


def _attempts(numina: list[Item], mcq: list[Item], proofs: list[Item]) -> list[Item]:
    out: list[Item] = []
    for row in numina:
        ans = row["solution"][len("Working it out gives \\boxed{"):-2]
        if row["difficulty"] == "easy":
            out.append({"question": row["problem"],
                        "attempt": f"So the answer is \\boxed{{{ans}}}."})
    for row in numina[1:17:2]:  # wrong attempts
        out.append({"question": row["problem"], "attempt": "The answer is \\boxed{-1}."})
    for row in mcq:
        if row["difficulty"] == "easy":
            out.append({"question": row["question"], "attempt": f"Answer: ({row['answer']})"})
    for row in proofs:
        if row["difficulty"] == "easy":
            out.append({"question": row["question"], "attempt": f"Answer: {row['answer']}"})
        elif row["difficulty"] == "near":
            out.append({"question": row["question"],
                        "attempt": f"After some thought I am fairly sure it is {row['answer']}, "
                                   "though the argument is long."})
    return out


def write_pool(out: str | Path, seed: int = 0) -> dict[str, int]:
    """Write the pool files under ``out``; returns rows per file."""
    out = Path(out)
    written: dict[str, int] = {}
    for name, rows in build_pool(seed).items():
        path = out / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if name.endswith(".jsonl"):
            path.write_text("".join(json.dumps(r, ensure_ascii=False, sort_keys=True) + "\n"
                                    for r in rows))
        elif name.endswith(".csv"):
            import csv

            with path.open("w", newline="") as f:
                writer = csv.DictWriter(f, fieldnames=list(rows[0]))
                writer.writeheader()
                writer.writerows(rows)
        elif name.endswith(".parquet"):
            import pyarrow as pa
            import pyarrow.parquet as pq

            pq.write_table(pa.Table.from_pylist(rows), path)
        else:
            from datasets import Dataset

            Dataset.from_list(rows).save_to_disk(str(path))
        written[str(path)] = len(rows)
    return written


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Write the seeded test pool.")
    parser.add_argument("out", type=Path)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    for path, n in write_pool(args.out, args.seed).items():
        print(f"{n:5d} rows  {path}")


if __name__ == "__main__":
    main()
